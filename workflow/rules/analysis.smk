# Model runs whose per-token results the report shows: the heat map's scored rollouts.


rule heatmap_rollouts:
    input:
        **grid.heatmap_rollouts_inputs(CFG),
    output:
        grid.heatmap_rollouts_output(CFG),
    log:
        grid.log(CFG, "heatmap_rollouts"),
    params:
        config=CONFIG,
        # The run shown; the step picks the same one with arca.grid.heatmap_run.
        run=grid.heatmap_run(CFG),
    threads: 1
    resources:
        mem_mb=CFG.resources.eval_mem_mb,
        runtime=30,
        **GPU,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca heatmap-rollouts {params.config} --out {output:q} > {log:q} 2>&1"
