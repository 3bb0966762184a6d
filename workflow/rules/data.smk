# Training and test problems (generated, or MATH from the Hub / local files).


rule prepare_data:
    output:
        **P.data.declared(),
    log:
        P.log("prepare_data"),
    params:
        config=CONFIG,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca prepare-data {params.config} > {log:q} 2>&1"
