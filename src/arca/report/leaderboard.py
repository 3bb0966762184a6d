"""One row per credit method from an experiment's tables: the leaderboard and the scorecard pages.

Reads the CSV tables ``aggregate`` writes (or a saved reference of them): ``credit_precision``,
``sample_efficiency``, ``performance``, ``paired``, ``concentration``, ``mc_agreement`` and
``runs``. A missing table or column leaves its cells empty ("-"), so a partial experiment still
gives a page. Every difference is against uniform, paired on the same seeds and problems.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from arca.credit import CEILING
from arca.report.render import fmt_num, markdown_table

TABLES = ("credit_precision", "sample_efficiency", "performance", "paired", "concentration", "mc_agreement", "runs")


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """The tables found in ``folder`` (``<name>.csv``), by name; absent ones are left out."""
    # only empty cells are missing: a cell may be labelled "null" (the shuffled-reward control)
    return {
        name: pd.read_csv(folder / f"{name}.csv", keep_default_na=False, na_values=[""])
        for name in TABLES
        if (folder / f"{name}.csv").is_file()
    }


def _row(df: pd.DataFrame | None, label: str, rank, **match) -> dict:
    """The first row of ``df`` for the cell (label, rank) and the extra column matches; {} if none."""
    if df is None or "label" not in df:
        return {}
    sel = df[df["label"].astype(str) == label]
    if rank is not None and "rank" in sel:
        sel = sel[pd.to_numeric(sel["rank"], errors="coerce") == rank]
    for key, value in match.items():
        if key in sel:
            sel = sel[sel[key] == value]
    return sel.iloc[0].to_dict() if len(sel) else {}


def _num(row: dict, key: str) -> float:
    try:
        v = float(row.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan
    return v


def cells(tables: dict[str, pd.DataFrame]) -> list[tuple[str, str, int | None]]:
    """(label, method, rank) of every trained cell, in the order of the performance table (else runs)."""
    for name in ("performance", "runs", "concentration"):
        df = tables.get(name)
        if df is not None and "label" in df:
            df = df[df["label"].notna() & (df["label"].astype(str) != "base")]
            out = []
            for _, r in df.drop_duplicates(["label", "rank"]).iterrows():
                rank = pd.to_numeric(r.get("rank"), errors="coerce")
                out.append((str(r["label"]), str(r.get("method", r["label"])), None if pd.isna(rank) else int(rank)))
            return out
    return []


def method_summary(tables: dict[str, pd.DataFrame]) -> list[dict]:
    """One dict per cell: the numbers of the leaderboard and the scorecard."""
    prec = tables.get("credit_precision")
    if prec is not None and "block" in prec:
        prec = prec[prec["block"] == "sweep"]
    paired = tables.get("paired")
    if paired is not None and "vs_uniform" in paired:
        paired = paired[paired["vs_uniform"].astype(str) == "True"]
    runs = tables.get("runs")
    steps = (
        runs.groupby(["label", "rank"])["step_seconds"].mean() if runs is not None and "step_seconds" in runs else None
    )
    uniform_step = math.nan
    if steps is not None:
        u = [v for (lab, _), v in steps.items() if lab == "uniform"]
        uniform_step = float(u[0]) if u else math.nan
    out = []
    for label, method, rank in cells(tables):
        p = _row(prec, label, rank)
        e = _row(tables.get("sample_efficiency"), label, rank)
        perf = _row(tables.get("performance"), label, rank)
        d = _row(paired, label, rank)
        c = _row(tables.get("concentration"), label, rank)
        mc = _row(tables.get("mc_agreement"), label, rank)
        step = float(steps.get((label, rank), math.nan)) if steps is not None and rank is not None else math.nan
        auroc = _num(p, "probe_decisive_auroc")
        ratio = _num(p, "probe_decisive_ratio")
        out.append(
            {
                "label": label,
                "method": method,
                "rank": rank,
                "auroc": auroc if math.isfinite(auroc) else _num(p, "train_decisive_auroc"),
                "precision_ratio": ratio if math.isfinite(ratio) else _num(p, "train_decisive_ratio"),
                "mc_spearman": _num(mc, "own_mc_spearman"),
                "mc_top_share": _num(mc, "own_mc_top_share"),
                "mc_top_share_uniform": _num(mc, "mc_top_share_uniform"),
                "greedy": _num(perf, "greedy"),
                "greedy_diff": (_num(d, "diff"), _num(d, "diff_lo"), _num(d, "diff_hi")),
                "auc": _num(e, "auc_greedy"),
                "auc_diff": (_num(e, "auc_greedy_diff"), _num(e, "auc_greedy_diff_lo"), _num(e, "auc_greedy_diff_hi")),
                "final": _num(e, "final_greedy"),
                "final_diff": (
                    _num(e, "final_greedy_diff"),
                    _num(e, "final_greedy_diff_lo"),
                    _num(e, "final_greedy_diff_hi"),
                ),
                "gini": _num(c, "gini"),
                "eff_ratio": _num(c, "eff_ratio"),
                "step_seconds": step,
                "step_ratio": step / uniform_step if uniform_step > 0 else math.nan,
            }
        )
    return out


def fmt_diff(value: float, diff: tuple[float, float, float], digits: int = 3) -> str:
    """``value (diff [lo, hi])``; the difference left out where there is none (uniform itself)."""
    d, lo, hi = diff
    if not math.isfinite(d):
        return fmt_num(value, digits)
    return f"{fmt_num(value, digits)} ({d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}])"


def _cell_name(r: dict) -> str:
    return r["label"] if r["rank"] is None else f"{r['label']} r{r['rank']}"


def leaderboard_markdown(rows: list[dict]) -> str:
    """The leaderboard table: one row per method, best decisive AUROC first (uniform's 0.5 is chance)."""
    headers = [
        "method",
        "decisive AUROC",
        "precision x uniform",
        "AUC greedy (diff vs uniform [95% CI])",
        "final greedy (diff vs uniform [95% CI])",
        "step cost x uniform",
    ]
    ordered = sorted(rows, key=lambda r: -r["auroc"] if math.isfinite(r["auroc"]) else math.inf)
    body = [
        [
            _cell_name(r),
            fmt_num(r["auroc"]),
            fmt_num(r["precision_ratio"], 2),
            fmt_diff(r["auc"], r["auc_diff"]),
            fmt_diff(r["final"], r["final_diff"]),
            fmt_num(r["step_ratio"], 2),
        ]
        for r in ordered
    ]
    return markdown_table(headers, body)


def scorecard_markdown(method: str, rows: list[dict], note: str = "") -> str:
    """The scorecard page of the cell labelled ``method`` beside uniform and the oracle: credit, accuracy,
    concentration, cost."""
    pick = [r for r in rows if r["label"] in ("uniform", CEILING)] + [r for r in rows if r["label"] == method]
    precision = [
        [
            _cell_name(r),
            fmt_num(r["auroc"]),
            fmt_num(r["precision_ratio"], 2),
            fmt_num(r["mc_spearman"]),
            fmt_num(r["mc_top_share"]),
            fmt_num(r["mc_top_share_uniform"]),
        ]
        for r in pick
    ]
    accuracy = [
        [_cell_name(r), fmt_diff(r["greedy"], r["greedy_diff"]), fmt_diff(r["auc"], r["auc_diff"])] for r in pick
    ]
    shape = [
        [
            _cell_name(r),
            fmt_num(r["gini"]),
            fmt_num(r["eff_ratio"]),
            fmt_num(r["step_seconds"], 2),
            fmt_num(r["step_ratio"], 2),
        ]
        for r in pick
    ]
    parts = [
        f"# Scorecard: `{method}`\n",
        "Beside uniform credit and the first-error oracle, on the same seeds and problems. " + note + "\n",
        "## Credit precision\n",
        "Against the labelled decisive tokens of the probe's rollouts (AUROC: 0.5 = chance; precision: the "
        "decisive tokens' weight share over uniform's) and against the Monte Carlo ground truth (Spearman "
        "correlation of the weights with |V_t - V_{t-1}|, and the weight share on the top-|A| token).\n",
        markdown_table(
            ["method", "decisive AUROC", "precision x uniform", "MC Spearman", "MC top share", "uniform MC top share"],
            precision,
        ),
        "## Held-out accuracy\n",
        "Greedy accuracy after training and the area under the greedy learning curve, each with its paired "
        "difference against uniform [95% CI].\n",
        markdown_table(["method", "greedy accuracy (diff)", "AUC greedy (diff)"], accuracy),
        "## Concentration and cost\n",
        "Gini and EffN/T of the token weights over training; the mean seconds of a training step and their "
        "ratio to uniform's.\n",
        markdown_table(["method", "Gini", "EffN/T", "step seconds", "step cost x uniform"], shape),
    ]
    return "\n".join(parts)


LEADERBOARD_NOTE = (
    "One row per method of `configs/leaderboard.yaml` (the default task), best decisive AUROC first: "
    "AUROC of the weights for the labelled decisive tokens of the held-out probe (0.5 = chance; of the "
    "training rollouts for a method the probe cannot score, vineppo, whose values need rollouts), their "
    "weight share over uniform's, the area under the greedy learning curve and the final greedy accuracy "
    "with their paired differences against uniform [95% CI over seeds and problems], and the mean "
    "training-step seconds over uniform's.\n\n"
)


def leaderboard_region(folder: Path, shown: str = "") -> str:
    """The generated region of docs/leaderboard.md from a saved reference folder (a note while there is none)."""
    if not folder.is_dir():
        return (
            f"No reference yet: `{shown or folder.as_posix()}` is written by running `configs/leaderboard.yaml` and "
            "saving its tables there (docs/leaderboard.md says how)."
        )
    return LEADERBOARD_NOTE + leaderboard_markdown(method_summary(read_tables(folder))).rstrip("\n")


def leaderboard_top(folder: Path, n: int = 3) -> str:
    """The README's excerpt: the ``n`` cells with the largest gain in learning-curve area over
    uniform (controls and oracles included, as in the full table), with their final-accuracy difference."""
    if not folder.is_dir():
        return "No leaderboard reference yet (docs/leaderboard.md says how to make one)."
    rows = [r for r in method_summary(read_tables(folder)) if math.isfinite(r["auc_diff"][0])]
    best = sorted(rows, key=lambda r: -r["auc_diff"][0])[:n]
    body = [[_cell_name(r), fmt_diff(r["auc"], r["auc_diff"]), fmt_diff(r["final"], r["final_diff"])] for r in best]
    headers = ["method", "AUC greedy (diff vs uniform [95% CI])", "final greedy (diff vs uniform [95% CI])"]
    return markdown_table(headers, body).rstrip("\n")
