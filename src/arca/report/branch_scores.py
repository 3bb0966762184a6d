"""Per-problem outcome scores of held-out completions against their problems' planted-fork branches.

What ``arca.report.outcomes`` tabulates (its docstring defines each score); computed while the
report loads each run's graded completions (``arca.report.records``).
"""

from __future__ import annotations

import pandas as pd

from arca.labels import DECISION_PREFIX, OUTCOMES, decision_names, problem_outcome


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


__all__ = ["DECISION_PREFIX", "OUTCOMES", "decision_names", "outcome_scores", "problem_outcome"]
