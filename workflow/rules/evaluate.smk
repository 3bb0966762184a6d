# Greedy accuracy and pass@k of the base model ("base") and of every run's adapter.


rule evaluate_base:
    input:
        **snakerules.eval_inputs(CFG, "base"),
    output:
        summary=P.eval("base").summary,
        samples=P.eval("base").samples,
    log:
        P.log("evaluate", "base"),
    benchmark:
        P.benchmark("evaluate", "base")
    params:
        config=CONFIG,
        # Evaluation settings that are not input files: changing them reruns every evaluation.
        eval_hash=eval_hash(CFG),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.eval_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca evaluate {params.config} --run base > {log:q} 2>&1"


# One job per cell evaluates every seed's adapter in turn: the libraries load once for the cell
# (about 8 s of a 15 s evaluation here), not once per run.
rule evaluate:
    input:
        unpack(lambda wildcards: snakerules.eval_inputs(CFG, wildcards.cell)),
    output:
        summaries=[P.eval(f"{{cell}}_s{seed}").summary for seed in CFG.sweep.seeds],
        samples=[P.eval(f"{{cell}}_s{seed}").samples for seed in CFG.sweep.seeds],
    log:
        P.log("evaluate", "{cell}"),
    benchmark:
        P.benchmark("evaluate", "{cell}")
    params:
        config=CONFIG,
        eval_hash=eval_hash(CFG),
        runs=lambda wildcards: snakerules.evaluated_runs(CFG, wildcards.cell),
    wildcard_constraints:
        cell=snakerules.cell_regex(CFG),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.eval_mem_mb,
        runtime=lambda wildcards: CFG.resources.runtime_min * len(CFG.sweep.seeds),
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca evaluate {params.config} --run {params.runs:q} > {log:q} 2>&1"


# The fixed held-out rollouts of the credit-precision probe: the base model's samples, once.
rule probe_rollouts:
    input:
        base=P.base,
        test=P.data.test,
    output:
        P.probe_rollouts,
    log:
        P.log("probe_rollouts"),
    params:
        config=CONFIG,
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.eval_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca probe-rollouts {params.config} --out {output:q} > {log:q} 2>&1"


# Monte Carlo ground truth: the base model's chance of success from every prefix of the probe
# rollouts of the first eval.mc_problems problems (every evaluation scores credit against it).
rule mc_values:
    input:
        base=P.base,
        test=P.data.test,
        probe=P.probe_rollouts,
    output:
        values=P.mc_values,
        summary=P.mc_summary,
    log:
        P.log("mc_values"),
    benchmark:
        P.benchmark("mc_values")
    params:
        config=CONFIG,
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.eval_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca mc-values {params.config} --out {output.values:q} > {log:q} 2>&1"


# Step 0 of every run's learning curve: the base model's held-out point, once for the sweep (the
# adapter starts at B = 0, so every run would compute the same numbers).
rule curve_start:
    input:
        **snakerules.curve_start_inputs(CFG),
    output:
        P.curve_start,
    log:
        P.log("curve_start"),
    params:
        config=CONFIG,
        # Evaluation and sampler settings that are not input files: changing them reruns it.
        fingerprint=curve_start_hash(CFG),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.eval_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca curve-start {params.config} --out {output:q} > {log:q} 2>&1"
