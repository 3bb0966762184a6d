# Tables, figures and the token-credit heat map; registered for `snakemake --report`. Which files
# the report shows, with which caption (under ../report/, relative to this file) and category, is
# listed once in arca.grid (REPORT_TABLES, FIGURE_GROUPS).


rule aggregate:
    input:
        **grid.aggregate_inputs(CFG),
    output:
        **grid.report_outputs(grid.table_outputs(CFG), report, "../report"),
    log:
        grid.log(CFG, "aggregate"),
    params:
        config=CONFIG,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca aggregate {params.config} > {log:q} 2>&1"


rule figures:
    input:
        **grid.figure_inputs(CFG),
    output:
        **grid.report_outputs(grid.figure_outputs(CFG), report, "../report"),
    log:
        grid.log(CFG, "figures"),
    params:
        config=CONFIG,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca figures {params.config} > {log:q} 2>&1"


rule heatmap:
    input:
        **grid.heatmap_inputs(CFG),
    output:
        report(
            grid.heatmap_output(CFG),
            caption="../report/figures/credit_heatmap.rst",
            category="Token credit",
        ),
    log:
        grid.log(CFG, "heatmap"),
    params:
        config=CONFIG,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../envs/arca.yaml"
    shell:
        "python -m arca heatmap {params.config} > {log:q} 2>&1"
