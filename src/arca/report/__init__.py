"""The report: tables (CSV, Markdown, LaTeX), figures (PNG and PDF) and token-credit heat maps.

``tables.aggregate_main`` reads runs and evaluations and writes ``<out_dir>/tables/``;
``figures.figures_main`` and ``heatmap.heatmap_main`` read from there (and the model, for the
heat map). ``stats`` holds the estimators; ``style`` the shared look of the figures. Submodules
are imported by the CLI on demand, so this package imports nothing heavy itself.
"""
