"""Rendering tables as Markdown and LaTeX, and the number formats they share."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from arca.stats import (
    Estimate,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- rendering
def est(row, prefix: str) -> Estimate:
    return Estimate(row[prefix], row[f"{prefix}_lo"], row[f"{prefix}_hi"])


def fmt_rank(rank) -> str:
    return "-" if rank is None or pd.isna(rank) else str(int(rank))


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def clean(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(clean(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(s))


def latex_table(headers: list[str], rows: list[list[str]], caption: str, label: str) -> str:
    """A booktabs table; cells are escaped, so pass plain text."""
    spec = "l" + "r" + "l" * (len(headers) - 2)
    body = [" & ".join(tex_escape(c) for c in row) + r" \\" for row in rows]
    return (
        "\n".join(
            [
                r"\begin{table}[t]",
                r"\centering",
                rf"\caption{{{tex_escape(caption)}}}",
                rf"\label{{{label}}}",
                rf"\begin{{tabular}}{{{spec}}}",
                r"\toprule",
                " & ".join(tex_escape(h) for h in headers) + r" \\",
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
                r"\end{table}",
            ]
        )
        + "\n"
    )


def ci_columns(prefix: str, est: Estimate) -> dict:
    return {prefix: est.mean, f"{prefix}_lo": est.lo, f"{prefix}_hi": est.hi}


def fmt_num(value, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def performance_rows(perf: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    k = int(perf["k"].iloc[0])
    headers = ["method", "r", "greedy acc", "greedy IQM over runs", f"pass@{k} (T=1, top-p 0.95)", "avg train reward"]
    rows = [
        [
            r["label"],
            fmt_rank(r["rank"]),
            est(r, "greedy").fmt(),
            est(r, "greedy_iqm").fmt(),
            est(r, "pass_at_k").fmt(),
            est(r, "train_reward").fmt(),
        ]
        for _, r in perf.iterrows()
    ]
    return headers, rows


def concentration_rows(conc: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "r", "Gini", "EffN/T"]
    rows = [
        [r["label"], fmt_rank(r["rank"]), est(r, "gini").fmt(), est(r, "eff_ratio").fmt()] for _, r in conc.iterrows()
    ]
    return headers, rows


def paired_rows(paired: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = [
        "method",
        "r",
        "reference",
        "greedy acc difference [95% CI]",
        "P(improvement over reference) [95% CI]",
        "seeds",
        "problems",
    ]
    rows = [
        [
            r["label"],
            fmt_rank(r["rank"]),
            r["reference"],
            est(r, "diff").fmt(),
            est(r, "p_improve").fmt(),
            str(r["n_seeds"]),
            str(r["n_problems"]),
        ]
        for _, r in paired.iterrows()
    ]
    return headers, rows
