# One GRPO training run per sweep cell (method x rank x seed). runs/<run>/checkpoints/ and
# runs/<run>/config.yaml are written beside the outputs but not declared: Snakemake deletes the
# declared outputs of a failed job, and the checkpoints must survive for the rerun to resume.


rule train:
    input:
        **snakerules.train_inputs(CFG),
    output:
        adapter=directory(P.run("{run}").adapter),
        metrics=P.run("{run}").metrics,
        final_weights=P.run("{run}").final_weights,
        curve=P.run("{run}").curve,
    log:
        P.log("train", "{run}"),
    benchmark:
        P.benchmark("train", "{run}")
    params:
        config=CONFIG,
        # Fingerprint of this run's resolved settings: editing one cell reruns only that cell.
        run_hash=lambda wildcards: run_hash(CFG, wildcards.run),
    wildcard_constraints:
        run=snakerules.run_regex(CFG),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca train {params.config} --run {wildcards.run:q} > {log:q} 2>&1"
