# Tables, figures and the token-credit heat map; registered for `snakemake --report`. Which files
# the report shows, with which caption (under ../report/, relative to this file) and category, is
# listed once in arca.snakerules (REPORT_TABLES, FIGURE_GROUPS).


rule aggregate:
    input:
        **snakerules.aggregate_inputs(CFG),
    output:
        **snakerules.report_outputs(P.table_files(), report, "../report"),
    log:
        P.log("aggregate"),
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
        **snakerules.figure_inputs(CFG),
    output:
        **snakerules.report_outputs(P.figure_files(), report, "../report"),
    log:
        P.log("figures"),
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
        rollouts=P.heatmap_rollouts,
    output:
        report(
            P.heatmap,
            caption="../report/figures/credit_heatmap.rst",
            category="Token credit",
        ),
    log:
        P.log("heatmap"),
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
