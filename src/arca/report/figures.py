"""``python -m arca figures``: draw ``results/<name>/figures/*.{png,pdf}`` from the tables.

Reads only what ``aggregate`` wrote (``tables/runs.csv``, ``tables/curves.csv``,
``tables/credit_precision.csv``, ``tables/learning_curves.csv`` and, for the confidence intervals,
``tables/performance.csv``) plus each run's ``final_weights.json``, so a
figure can be redrawn without touching the evaluations. Figures:

- ``gini_bars``             Gini per (label, rank), seeds as points, the middle band shaded
- ``concentration_curves``  Gini and EffN/T over training steps (mean over seeds)
- ``reward_curves``         smoothed train reward over steps (mean over seeds)
- ``accuracy``              greedy accuracy and pass@k with 95% CIs, base model dashed
- ``lorenz``                Lorenz curves of the last step's token weights
- ``accuracy_vs_params``    ARCA's greedy accuracy against trainable parameters (log x)
- ``credit_precision``      decisive-token share relative to uniform per cell (positive and negative
                            advantage), the oracle marked; and its trajectory over training steps
- ``learning_curves``       held-out greedy and sampled accuracy over training, band = min-max over seeds
- ``performance_profile``   fraction of each cell's runs whose final greedy accuracy exceeds a threshold
                            tau, against tau (the run-score distribution of Agarwal et al., 2021)

The figures are drawn by one module per family, as ``snakemake --report`` groups them:
``figures_concentration`` (weight concentration), ``figures_performance`` (performance) and
``figures_credit`` (token credit), on the shared parts of ``figures_common``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from arca.config import Config, MissingInputError
from arca.paths import paths_of
from arca.report.figures_concentration import concentration_curves, gini_bars, lorenz
from arca.report.figures_credit import credit_precision
from arca.report.figures_performance import (
    accuracy,
    accuracy_vs_params,
    learning_curves,
    performance_profile,
    reward_curves,
)
from arca.report.style import apply_style
from arca.report.tables import read_table

log = logging.getLogger(__name__)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MissingInputError(f"figures: missing table {path} (run `python -m arca aggregate` first)")
    return read_table(path)


# ----------------------------------------------------------------------------- the step
def figures_main(cfg: Config, args=None) -> list[Path]:
    """Draw every figure of ``arca.paths.FIGURES`` into ``figures/``; returns the files written."""
    apply_style()
    p = paths_of(cfg)
    runs = _read_csv(p.table("runs", "csv"))
    curves = _read_csv(p.table("curves", "csv"))
    perf = _read_csv(p.table("performance", "csv"))
    out = p.figures
    paths = []
    paths += gini_bars(runs, out)
    paths += concentration_curves(curves, out)
    paths += reward_curves(curves, out)
    paths += accuracy(perf, out)
    paths += lorenz(runs, cfg, out)
    paths += accuracy_vs_params(perf, out)
    paths += credit_precision(_read_csv(p.table("credit_precision", "csv")), curves, out)
    paths += learning_curves(_read_csv(p.table("learning_curves", "csv")), out)
    paths += performance_profile(runs, out)
    log.info("wrote %d figure files to %s", len(paths), out)
    return paths
