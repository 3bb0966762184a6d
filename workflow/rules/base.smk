# The base model as an HF folder: pretrained here, downloaded from the Hub, or converted from GGUF.


rule build_base:
    input:
        **snakerules.base_inputs(CFG),
    output:
        directory(P.base),
    log:
        P.log("build_base"),
    benchmark:
        P.benchmark("build_base")
    params:
        config=CONFIG,
    threads: CFG.model.pretrain.threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.runtime_min,
        **snakerules.base_gpu(CFG),
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca build-base {params.config} > {log:q} 2>&1"
