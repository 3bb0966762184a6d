# Performance benchmark of one training step per credit method (and TRL); not part of `all`:
#   snakemake --cores all bench


rule bench:
    input:
        **grid.bench_inputs(CFG),
    output:
        **grid.bench_outputs(CFG),
    log:
        grid.log(CFG, "bench"),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    shell:
        "python -m arca bench {CONFIG_ARGS} > {log} 2>&1"
