# Greedy accuracy and pass@k of the base model ("base") and of every run's adapter.


rule evaluate:
    input:
        unpack(lambda wildcards: grid.eval_inputs(CFG, wildcards.target)),
    output:
        **grid.eval_outputs(CFG),
    log:
        grid.log(CFG, "evaluate", "{target}"),
    benchmark:
        grid.benchmark(CFG, "evaluate", "{target}")
    params:
        config=CONFIG,
        # Evaluation settings that are not input files: changing them reruns every evaluation.
        eval_hash=grid.eval_hash(CFG),
    wildcard_constraints:
        target=grid.eval_regex(CFG),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.eval_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca evaluate {params.config} --run {wildcards.target:q} > {log:q} 2>&1"


# The fixed held-out rollouts of the credit-precision probe: the base model's samples, once.
rule probe_rollouts:
    input:
        **grid.probe_inputs(CFG),
    output:
        grid.probe_output(CFG),
    log:
        grid.log(CFG, "probe_rollouts"),
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
        **grid.mc_inputs(CFG),
    output:
        **grid.mc_outputs(CFG),
    log:
        grid.log(CFG, "mc_values"),
    benchmark:
        grid.benchmark(CFG, "mc_values")
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
