# Tables, figures and the token-credit heat map; registered for `snakemake --report`.
# Caption paths are relative to this file.


rule aggregate:
    input:
        **grid.aggregate_inputs(CFG),
    output:
        performance_csv=report(
            grid.table_outputs(CFG)["performance_csv"],
            caption="../report/performance.rst",
            category="Tables",
        ),
        concentration_csv=report(
            grid.table_outputs(CFG)["concentration_csv"],
            caption="../report/concentration.rst",
            category="Tables",
        ),
        paired_csv=report(
            grid.table_outputs(CFG)["paired_csv"],
            caption="../report/paired.rst",
            category="Tables",
        ),
        runs_csv=report(
            grid.table_outputs(CFG)["runs_csv"],
            caption="../report/runs.rst",
            category="Tables",
        ),
        credit_precision_csv=report(
            grid.table_outputs(CFG)["credit_precision_csv"],
            caption="../report/credit_precision_table.rst",
            category="Tables",
        ),
        sample_efficiency_csv=report(
            grid.table_outputs(CFG)["sample_efficiency_csv"],
            caption="../report/sample_efficiency.rst",
            category="Tables",
        ),
        learning_curves_csv=report(
            grid.table_outputs(CFG)["learning_curves_csv"],
            caption="../report/learning_curves_table.rst",
            category="Tables",
        ),
        curves_csv=grid.table_outputs(CFG)["curves_csv"],
        performance_md=grid.table_outputs(CFG)["performance_md"],
        performance_tex=grid.table_outputs(CFG)["performance_tex"],
        concentration_md=grid.table_outputs(CFG)["concentration_md"],
        concentration_tex=grid.table_outputs(CFG)["concentration_tex"],
        paired_md=grid.table_outputs(CFG)["paired_md"],
        paper_comparison_md=grid.table_outputs(CFG)["paper_comparison_md"],
        credit_precision_md=grid.table_outputs(CFG)["credit_precision_md"],
        sample_efficiency_md=grid.table_outputs(CFG)["sample_efficiency_md"],
    log:
        grid.log(CFG, "aggregate"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "python -m arca aggregate {CONFIG_ARGS} > {log} 2>&1"


rule figures:
    input:
        **grid.figure_inputs(CFG),
    output:
        gini_bars_png=report(
            grid.figure_outputs(CFG)["gini_bars_png"],
            caption="../report/gini_bars.rst",
            category="Figures",
            subcategory="Weight concentration",
        ),
        concentration_curves_png=report(
            grid.figure_outputs(CFG)["concentration_curves_png"],
            caption="../report/concentration_curves.rst",
            category="Figures",
            subcategory="Weight concentration",
        ),
        lorenz_png=report(
            grid.figure_outputs(CFG)["lorenz_png"],
            caption="../report/lorenz.rst",
            category="Figures",
            subcategory="Weight concentration",
        ),
        reward_curves_png=report(
            grid.figure_outputs(CFG)["reward_curves_png"],
            caption="../report/reward_curves.rst",
            category="Figures",
            subcategory="Performance",
        ),
        accuracy_png=report(
            grid.figure_outputs(CFG)["accuracy_png"],
            caption="../report/accuracy.rst",
            category="Figures",
            subcategory="Performance",
        ),
        accuracy_vs_params_png=report(
            grid.figure_outputs(CFG)["accuracy_vs_params_png"],
            caption="../report/accuracy_vs_params.rst",
            category="Figures",
            subcategory="Performance",
        ),
        credit_precision_png=report(
            grid.figure_outputs(CFG)["credit_precision_png"],
            caption="../report/credit_precision.rst",
            category="Figures",
            subcategory="Token credit",
        ),
        learning_curves_png=report(
            grid.figure_outputs(CFG)["learning_curves_png"],
            caption="../report/learning_curves.rst",
            category="Figures",
            subcategory="Performance",
        ),
        # The PDFs are the same figures for papers; the report shows the PNGs.
        gini_bars_pdf=grid.figure_outputs(CFG)["gini_bars_pdf"],
        concentration_curves_pdf=grid.figure_outputs(CFG)["concentration_curves_pdf"],
        lorenz_pdf=grid.figure_outputs(CFG)["lorenz_pdf"],
        reward_curves_pdf=grid.figure_outputs(CFG)["reward_curves_pdf"],
        accuracy_pdf=grid.figure_outputs(CFG)["accuracy_pdf"],
        accuracy_vs_params_pdf=grid.figure_outputs(CFG)["accuracy_vs_params_pdf"],
        credit_precision_pdf=grid.figure_outputs(CFG)["credit_precision_pdf"],
        learning_curves_pdf=grid.figure_outputs(CFG)["learning_curves_pdf"],
    log:
        grid.log(CFG, "figures"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "python -m arca figures {CONFIG_ARGS} > {log} 2>&1"


rule heatmap:
    input:
        **grid.heatmap_inputs(CFG),
    output:
        report(
            grid.heatmap_output(CFG),
            caption="../report/credit_heatmap.rst",
            category="Token credit",
        ),
    log:
        grid.log(CFG, "heatmap"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "python -m arca heatmap {CONFIG_ARGS} > {log} 2>&1"
