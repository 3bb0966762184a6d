"""The Monte Carlo agreement table: how each cell's credit follows the measured token advantages.

``arca.mc_values`` estimates, under the base model, the value V_t of every prefix of the probe
rollouts; |A_t| = |V_t - V_{t-1}| is how much token t changed the chance of success. Each run's
evaluation scores every registered method's weights (under the run's final model) against it
(``arca.diagnostics.mc_agreement``). Per cell, for the cell's own method and, beside it, for the
uniform and first-error-oracle weights under the same models: the rank correlation with |A_t| and
the share of weight on the top 10% tokens by |A_t|, mean over seeds with a bootstrap interval.
Where the evaluation also estimated the values under the run's own final model
(``eval.mc_final_seeds``), the cell's method is scored against those too, and the first-error
labels are checked against the final model's largest value drop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from arca.credit import CEILING
from arca.report.records import Cell
from arca.report.render import ci_columns, est, fmt_num, fmt_rank, markdown_table
from arca.stats import NAN_ESTIMATE, bootstrap_mean_ci

METRICS = ("mc_spearman", "mc_top_share")
BESIDE = ("uniform", CEILING)  # scored under each cell's models too, for scale
FINAL_METRICS = ("mc_final_spearman", "mc_final_top_share")  # against V_t under the run's final model
MC_COLUMNS = ["label", "method", "rank", "n_seeds", "mc_rows", "mc_top_share_uniform"]
MC_COLUMNS += [f"{who}_{m}{s}" for who in ("own", *BESIDE) for m in METRICS for s in ("", "_lo", "_hi")]
MC_COLUMNS += ["n_final_seeds", "final_first_error_is_largest_drop"]
MC_COLUMNS += [f"own_{m}{s}" for m in FINAL_METRICS for s in ("", "_lo", "_hi")]


def _per_seed(cell: Cell, method: str, key: str) -> np.ndarray:
    """[S] one value per seed (NaN where the evaluation has none)."""
    out = []
    for r in sorted(cell.runs, key=lambda r: r.seed):
        v = (((r.summary.get("credit_precision") or {}).get("methods") or {}).get(method) or {}).get(key)
        out.append(math.nan if v is None else float(v))
    return np.array(out, dtype=float)


def mc_agreement_table(cells: list[Cell]) -> pd.DataFrame:
    """One row per cell; empty when no evaluation holds Monte Carlo agreement."""
    rows = []
    for c in cells:
        if not np.isfinite(_per_seed(c, c.method, "mc_spearman")).any():
            continue
        row = {
            "label": c.label,
            "method": c.method,
            "rank": c.rank,
            "n_seeds": len(c.runs),
            "mc_rows": float(np.nanmean(_per_seed(c, c.method, "mc_rows"))),
            "mc_top_share_uniform": float(np.nanmean(_per_seed(c, c.method, "mc_top_share_uniform"))),
        }
        for who, method in (("own", c.method), *((b, b) for b in BESIDE)):
            for m in METRICS:
                row.update(ci_columns(f"{who}_{m}", bootstrap_mean_ci(_per_seed(c, method, m)[:, None])))
        finals = [r.summary["mc_final"] for r in c.runs if r.summary.get("mc_final")]
        checks = [f["first_error_is_largest_drop"] for f in finals if f.get("first_error_is_largest_drop") is not None]
        row["n_final_seeds"] = len(finals)
        row["final_first_error_is_largest_drop"] = float(np.mean(checks)) if checks else math.nan
        for m in FINAL_METRICS:
            x = _per_seed(c, c.method, m)
            x = x[np.isfinite(x)]  # the seeds whose evaluation estimated them
            row.update(ci_columns(f"own_{m}", bootstrap_mean_ci(x[:, None]) if x.size else NAN_ESTIMATE))
        rows.append(row)
    df = pd.DataFrame(rows, columns=MC_COLUMNS)
    df["rank"] = df["rank"].astype("Int64")
    return df


def read_mc_summary(path: Path) -> dict:
    """The Monte Carlo step's summary (cost, label check); empty when the step did not run."""
    return json.loads(path.read_text()) if path.is_file() else {}


def mc_agreement_markdown(df: pd.DataFrame, summary: dict) -> str:
    if df.empty:
        return "No Monte Carlo agreement: eval.mc_problems is 0, or no token of the rollouts changed their value.\n"
    rows = [
        [
            r["label"],
            fmt_rank(r["rank"]),
            str(r["n_seeds"]),
            *(est(r, f"own_{m}").fmt() for m in METRICS),
            fmt_num(r["mc_top_share_uniform"]),
            *(est(r, f"{b}_{m}").fmt() for b in BESIDE for m in METRICS),
        ]
        for _, r in df.iterrows()
    ]
    check = summary.get("first_error_is_largest_drop")
    header = (
        f"Monte Carlo values: {summary.get('rows', '?')} probe rollouts under the base model, "
        f"M = {summary.get('samples_per_prefix', '?')} continuations per prefix "
        f"({summary.get('continuations', '?')} in all, {fmt_num(summary.get('seconds'), 0)} s), mean standard "
        f"error of V_t {fmt_num(summary.get('mean_se'))}. In {summary.get('failed_rows_labelled', '?')} failed "
        f"completions the first-error label is the token of largest value drop in "
        f"{fmt_num(100 * check if check is not None else None, 0)}% (a check of the labels).\n\n"
        "Agreement of token weights with |A_t| = |V_t - V_(t-1)|: rank correlation (rho) and the weight on "
        "each rollout's top 10% tokens by |A_t| (top share; uniform weights put `uniform top` there). "
        "`own`: the cell's method under its final models; `uniform` and `oracle`: those weights under the "
        "same models. Mean over seeds, 95% bootstrap interval.\n\n"
    )
    headers = ["cell", "rank", "seeds", "rho", "top share", "uniform top", "uniform rho", "uniform top share"]
    headers += ["oracle rho", "oracle top share"]
    return header + markdown_table(headers, rows) + _final_markdown(df)


def _final_markdown(df: pd.DataFrame) -> str:
    """The cells' methods against the values under their own final models (none: empty)."""
    final = df[df["n_final_seeds"] > 0]
    if final.empty:
        return ""
    rows = [
        [
            r["label"],
            fmt_rank(r["rank"]),
            str(int(r["n_final_seeds"])),
            *(est(r, f"own_{m}").fmt() for m in FINAL_METRICS),
            fmt_num(100 * r["final_first_error_is_largest_drop"], 0),
        ]
        for _, r in final.iterrows()
    ]
    return (
        "\nUnder each cell's final models (values re-estimated with the same rollouts, prefixes and M "
        "under the trained policy, on the cell's first seeds): the cell's method against those |A_t|, and "
        "how often a failed completion's first-error label is the final model's largest value drop.\n\n"
        + markdown_table(["cell", "rank", "seeds", "rho", "top share", "first error = largest drop %"], rows)
    )
