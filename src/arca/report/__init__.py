"""The report: tables (CSV, Markdown, LaTeX), figures (PNG and PDF) and token-credit heat maps.

It reads result files only, never a model: ``tables.aggregate_main`` reads runs and evaluations
and writes ``results/<name>/tables/``; ``figures.figures_main`` reads those tables and
``heatmap.heatmap_main`` the analysis step's scored rollouts (``arca.heatmap_rollouts``). The estimators
live one layer down in ``arca.stats``; ``style`` holds the shared look of the figures.
"""
