"""The credit-precision tables: how much weight each method puts on the planted decisive fork
tokens, relative to uniform weights, during training and on the fixed held-out probe.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from arca.report.records import Cell, RunRecord, reference_cell, train_mean
from arca.report.render import ci_columns, est, fmt_num, fmt_rank, markdown_table
from arca.stats import (
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- credit precision
# Ratio column -> (a share of the weight on labelled tokens, the same rows' share under uniform
# weights), as logged in metrics.jsonl and in summary.json's credit_precision. A ratio of 1 is
# what uniform weights give; the decision oracle's ratio is the most a method can reach.
PRECISION_RATIOS = {
    "decisive_ratio": ("decisive_share", "decisive_share_uniform"),
    "decisive_ratio_pos": ("decisive_share_pos", "decisive_share_pos_uniform"),
    "decisive_ratio_neg": ("decisive_share_neg", "decisive_share_neg_uniform"),
    "distractor_ratio": ("distractor_share", "distractor_share_uniform"),
}
PRECISION_SOURCES = ("train", "probe")
ORACLE_METHOD = "decision_oracle"  # all weight on the decisive tokens: the most decisive share a method can reach


def _num(value) -> float:
    """A JSON number or null as a float (NaN for null)."""
    return math.nan if value is None else float(value)


def _nanmean(values) -> float:
    a = np.asarray(values, dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def _joint_step_means(metrics: pd.DataFrame, num: str, den: str) -> tuple[float, float]:
    """Means of two metrics over the steps where both are logged (they are computed on the same rows)."""
    if num not in metrics.columns or den not in metrics.columns:
        return math.nan, math.nan
    a, b = pd.to_numeric(metrics[num], errors="coerce"), pd.to_numeric(metrics[den], errors="coerce")
    ok = a.notna() & b.notna()
    return (float(a[ok].mean()), float(b[ok].mean())) if ok.any() else (math.nan, math.nan)


def precision_values(rec: RunRecord, source: str, method: str) -> dict[str, float]:
    """One run's credit-precision numbers: ``source`` "train" = means over its training steps (its own
    method); "probe" = ``method``'s weights under the run's final model on the held-out probe."""
    if source == "train":
        out = {}
        for num, den in PRECISION_RATIOS.values():
            out[num], out[den] = _joint_step_means(rec.metrics, num, den)
        return {
            **out,
            "decisive_auroc": train_mean(rec.metrics, "decisive_auroc"),
            "labeled_frac": train_mean(rec.metrics, "labeled_frac"),
        }
    probe = rec.summary.get("credit_precision") or {}
    values = (probe.get("methods") or {}).get(method) or {}
    keys = [k for pair in PRECISION_RATIOS.values() for k in pair] + ["decisive_auroc"]
    labeled = _num(probe.get("labeled_frac")) if values else math.nan
    return {**{k: _num(values.get(k)) for k in keys}, "labeled_frac": labeled}


def _per_seed(runs: list[RunRecord], source: str, method: str, key: str) -> np.ndarray:
    """[S] one precision number per seed, seeds in sorted order."""
    return np.array([precision_values(r, source, method)[key] for r in sorted(runs, key=lambda r: r.seed)], dtype=float)


def precision_columns(runs: list[RunRecord], source: str, method: str) -> dict:
    """The ``<source>_*`` columns of one cell: each ratio = mean over seeds of the share / mean over
    seeds of uniform's share on the same rows (bootstrap over seeds), the within-row AUROC (mean,
    bootstrap over seeds), the decisive shares themselves and the fraction of rollouts aligned."""

    def col(key):
        return _per_seed(runs, source, method, key)

    out = {
        f"{source}_decisive_share": _nanmean(col("decisive_share")),
        f"{source}_decisive_share_uniform": _nanmean(col("decisive_share_uniform")),
    }
    for name, (num, den) in PRECISION_RATIOS.items():
        out.update(ci_columns(f"{source}_{name}", bootstrap_ratio_ci(col(num), col(den))))
    out.update(ci_columns(f"{source}_decisive_auroc", bootstrap_mean_ci(col("decisive_auroc")[:, None])))
    out[f"{source}_labeled_frac"] = _nanmean(col("labeled_frac"))
    return out


def probe_methods(runs: list[RunRecord]) -> list[str]:
    """Every credit method the runs' probes scored, in the order the evaluator wrote them (the registry's)."""
    names = {}
    for r in runs:
        names.update(dict.fromkeys(((r.summary.get("credit_precision") or {}).get("methods") or {})))
    return list(names)


def _precision_names() -> list[str]:
    names = []
    for src in PRECISION_SOURCES:
        names += [f"{src}_decisive_share", f"{src}_decisive_share_uniform"]
        for metric in [*PRECISION_RATIOS, "decisive_auroc"]:
            names += [f"{src}_{metric}", f"{src}_{metric}_lo", f"{src}_{metric}_hi"]
        names.append(f"{src}_labeled_frac")
    return names


PRECISION_COLUMNS = [
    "block",
    "label",
    "method",
    "rank",
    "n_seeds",
    "models",
    *_precision_names(),
    "probe_vs_oracle",
    "probe_vs_oracle_lo",
    "probe_vs_oracle_hi",
]


def credit_precision_table(cells: list[Cell]) -> pd.DataFrame:
    """Block ``sweep``: one row per cell, its own method, in training and on the probe under its final
    models. Block ``probe_all``: every method the probe scored, under the final models of the uniform
    cell, with its decisive share relative to the decision oracle's on the same seeds."""
    rows = []
    for cell in cells:
        rows.append(
            {
                "block": "sweep",
                "label": cell.label,
                "method": cell.method,
                "rank": cell.rank,
                "n_seeds": len(cell.runs),
                "models": f"{cell.label}_r{cell.rank}",
                **precision_columns(cell.runs, "train", cell.method),
                **precision_columns(cell.runs, "probe", cell.method),
            }
        )
    ref = reference_cell(cells)
    methods = probe_methods(ref.runs) if ref is not None else []
    if ref is not None and methods:
        oracle = _per_seed(ref.runs, "probe", ORACLE_METHOD, "decisive_share")  # [S]
        for method in methods:
            share = _per_seed(ref.runs, "probe", method, "decisive_share")  # [S]
            rows.append(
                {
                    "block": "probe_all",
                    "label": method,
                    "method": method,
                    "rank": ref.rank,
                    "n_seeds": len(ref.runs),
                    "models": f"{ref.label}_r{ref.rank}",
                    **precision_columns(ref.runs, "probe", method),
                    **ci_columns("probe_vs_oracle", bootstrap_ratio_ci(share, oracle)),
                }
            )
    df = pd.DataFrame(rows, columns=PRECISION_COLUMNS)
    df["rank"] = df["rank"].astype("Int64")
    return df


def _fmt_ratio(row, prefix: str) -> str:
    return est(row, prefix).fmt(digits=2, ci_digits=2)


def _precision_cells(row, src: str) -> list[str]:
    return [
        _fmt_ratio(row, f"{src}_decisive_ratio"),
        _fmt_ratio(row, f"{src}_decisive_ratio_pos"),
        _fmt_ratio(row, f"{src}_decisive_ratio_neg"),
        est(row, f"{src}_decisive_auroc").fmt(),
        _fmt_ratio(row, f"{src}_distractor_ratio"),
        fmt_num(row[f"{src}_labeled_frac"], 2),
    ]


PRECISION_HEADERS = [
    "decisive x uniform",
    "advantage > 0",
    "advantage < 0",
    "decisive AUROC",
    "distractor x uniform",
    "labelled",
]


def credit_precision_markdown(df: pd.DataFrame) -> str:
    sweep, every = df[df["block"] == "sweep"], df[df["block"] == "probe_all"]
    parts = [
        "# Credit precision on the planted forks\n",
        "x uniform: the mean share of a completion's token weight on its decisive (or distractor) fork tokens, "
        "divided by the mean share uniform weights give the same completions (number of labelled tokens / T); "
        "1 = no better than uniform. advantage > 0 / < 0: only completions with that sign of advantage. "
        "Decisive AUROC: probability that a decisive token outweighs another token of the same completion "
        "(0.5 = uniform). Labelled: fraction of rollouts aligned with a branch of their problem. "
        "Mean over seeds [95% bootstrap interval over seeds].\n",
    ]
    numbers = df[[c for c in df.columns if c.endswith(("_ratio", "_auroc"))]].to_numpy(dtype=float)
    if not np.isfinite(numbers).any():
        parts.append(
            "No planted-fork labels in this experiment (no `branches` in the test records, or no "
            "aligned rollouts), so there is nothing to measure: every column is empty.\n"
        )
    rows = [
        [r["label"], fmt_rank(r["rank"]), str(r["n_seeds"]), *_precision_cells(r, "train")] for _, r in sweep.iterrows()
    ]
    parts += [
        "## During training (each cell's own method, means over its training steps)\n",
        markdown_table(["method", "r", "seeds", *PRECISION_HEADERS], rows),
    ]
    rows = [
        [r["label"], fmt_rank(r["rank"]), str(r["n_seeds"]), *_precision_cells(r, "probe")] for _, r in sweep.iterrows()
    ]
    parts += [
        "## Held-out probe (each cell's own method under the cell's final models, the same rollouts for all)\n",
        markdown_table(["method", "r", "seeds", *PRECISION_HEADERS], rows),
    ]
    if not every.empty:
        models, n = every["models"].iloc[0], int(every["n_seeds"].iloc[0])
        rows = [
            [
                r["method"],
                fmt_num(r["probe_decisive_share"]),
                *_precision_cells(r, "probe")[:5],
                _fmt_ratio(r, "probe_vs_oracle"),
            ]
            for _, r in every.iterrows()
        ]
        parts += [
            f"## Every credit method on the held-out probe, under the final models of {models} "
            f"({n} seed{'s' if n != 1 else ''})\n",
            "x decision oracle: the method's decisive share divided by the decision oracle's (all weight on "
            "the decisive tokens).\n",
            markdown_table(["method", "decisive share", *PRECISION_HEADERS[:5], "x decision oracle"], rows),
        ]
    return "\n".join(parts)
