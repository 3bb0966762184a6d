# Model runs whose per-token results the report shows: the heat map's scored rollouts.


rule heatmap_rollouts:
    input:
        **snakerules.heatmap_rollouts_inputs(CFG),
    output:
        P.heatmap_rollouts,
    log:
        P.log("heatmap_rollouts"),
    params:
        config=CONFIG,
        # The run shown; the step picks the same one with arca.config.heatmap_run.
        run=heatmap_run(CFG),
    threads: 1
    resources:
        mem_mb=CFG.resources.eval_mem_mb,
        runtime=30,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca heatmap-rollouts {params.config} --out {output:q} > {log:q} 2>&1"
