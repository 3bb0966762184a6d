# One GRPO training run per sweep cell (method x rank x seed). runs/<run>/checkpoints/ and
# runs/<run>/config.yaml are written beside the outputs but not declared: Snakemake deletes the
# declared outputs of a failed job, and the checkpoints must survive for the rerun to resume.


rule train:
    input:
        **grid.train_inputs(CFG),
    output:
        **grid.train_outputs(CFG, wrap_dir=directory),
    log:
        grid.log(CFG, "train", "{run}"),
    benchmark:
        grid.benchmark(CFG, "train", "{run}")
    params:
        config=CONFIG,
        # Fingerprint of this run's resolved settings: editing one cell reruns only that cell.
        run_hash=lambda wildcards: grid.run_hash(CFG, wildcards.run),
    wildcard_constraints:
        run=grid.run_regex(CFG),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca train {params.config} --run {wildcards.run:q} > {log:q} 2>&1"
