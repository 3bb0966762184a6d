# The base model as an HF folder: pretrained here, downloaded from the Hub, or converted from GGUF.


rule build_base:
    input:
        **grid.base_inputs(CFG),
    output:
        directory(grid.base_output(CFG)),
    log:
        grid.log(CFG, "build_base"),
    benchmark:
        grid.benchmark(CFG, "build_base")
    params:
        config=CONFIG,
    threads: CFG.model.pretrain.threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.runtime_min,
        **grid.base_gpu(CFG),
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca build-base {params.config} > {log:q} 2>&1"
