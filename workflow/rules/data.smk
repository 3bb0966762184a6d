# Training and test problems (generated, or MATH from the Hub / local files).


rule prepare_data:
    output:
        **grid.data_outputs(CFG),
    log:
        grid.log(CFG, "prepare_data"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m arca prepare-data {CONFIG_ARGS} > {log} 2>&1"
