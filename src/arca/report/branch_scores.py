"""Per-problem outcome scores of a held-out completion against its problem's planted-fork branches.

What ``arca.report.outcomes`` tabulates (its docstring defines each score); computed while the
report loads each run's graded completions (``arca.report.records``).
"""

from __future__ import annotations

import math

import pandas as pd

from arca.grading import grade_paper
from arca.labels import align

OUTCOMES = ("aligned", "decision", "execution", "collateral")


def problem_outcome(completion: str, record: dict, correct: bool) -> dict[str, float]:
    """The four outcome scores of one greedy completion of ``record`` (all NaN without branches), plus
    ``decision:<fork>`` for each named decision of an aligned completion."""
    branches = record.get("branches") or []
    out = dict.fromkeys(OUTCOMES, math.nan)
    if not branches:
        return out
    forked = any(b["decisive"] for b in branches)
    if not record.get("fork"):
        out["collateral"] = float(correct)
    a = align(completion, branches)
    out["aligned"] = float(a is not None)
    if a is not None:
        out["decision"] = float(a.correct) if forked else math.nan
        out["execution"] = float(a.answer is not None and bool(grade_paper(completion, a.answer)))
        if a.bugs is not None:  # each named decision on its own: 1 taken correctly, 0 taken wrongly
            for name in decision_names(branches):
                out[f"{DECISION_PREFIX}{name}"] = float(name not in a.bugs)
    return out


DECISION_PREFIX = "decision:"


def decision_names(branches: list[dict]) -> list[str]:
    """The problem's decisive forks by name: those some branch takes wrongly."""
    return sorted({name for b in branches for name in b.get("bugs", ())})


def outcome_scores(samples: list[dict], problems: dict[str, dict], protocol: str, grader: str) -> pd.DataFrame:
    """Per problem (index problem_id): the outcome scores of its greedy completion; empty without forks."""
    rows = {}
    for r in samples:
        if r.get("protocol") != protocol or r.get("mode") != "greedy":
            continue
        rec = problems.get(str(r["problem_id"]))
        if rec is not None and rec.get("branches"):
            rows[str(r["problem_id"])] = problem_outcome(r["completion"], rec, bool(r[grader]))
    named = sorted({k for row in rows.values() for k in row if k.startswith(DECISION_PREFIX)})
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[*OUTCOMES, *named], dtype=float)
    df.index.name = "problem_id"
    return df.sort_index()
