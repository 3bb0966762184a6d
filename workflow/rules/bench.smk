# Performance benchmark of one training step per credit method (and TRL); not part of `all`:
#   snakemake --cores all bench


rule bench:
    input:
        **snakerules.train_inputs(CFG),
    output:
        json=P.bench_summary("json"),
        md=P.bench_summary("md"),
    log:
        P.log("bench"),
    params:
        config=CONFIG,
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.runtime_min,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca bench {params.config} > {log:q} 2>&1"
