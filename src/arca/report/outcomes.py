"""Outcomes decomposed on the planted forks: which part of greedy accuracy a method moved.

Greedy accuracy mixes "took the right decision" with "did not damage everything else". Each
held-out greedy completion of a planted-fork problem is aligned with its problem's branches
(``arca.labels.align``) and scored per problem (``arca.report.branch_scores``) on:

- ``aligned``     1 if the completion follows one of the problem's branches (it wrote a known procedure)
- ``decision``    1 if an aligned completion of a forked problem took every decision correctly, 0 if not
                  (NaN: unaligned, or the problem has no decision)
- ``execution``   1 if an aligned completion's answer is the one its own branch reaches (the arithmetic
                  given the decision, on the right and on the bug branch alike), else 0 (NaN: unaligned)
- ``collateral``  greedy correctness on problems whose decision pretraining never planted: the ``none``
                  family and the twins, whose correct operation is another family's bug (NaN elsewhere).
                  No method's credit aims at them, so a drop here is damage spilled from the update.

Per cell, each score is a mean over seeds and problems with the hierarchical bootstrap interval of
``arca.stats``; decision accuracy also per family. The report reads the completions and the test
split only.
"""

from __future__ import annotations

import math

import pandas as pd

from arca.report.branch_scores import DECISION_PREFIX, OUTCOMES
from arca.report.records import Cell, RunRecord
from arca.report.render import ci_columns, est, fmt_rank, markdown_table
from arca.stats import bootstrap_mean_ci

OUTCOME_NAMES = {
    "aligned": "aligned with a branch",
    "decision": "decision correct | aligned",
    "execution": "execution | branch",
    "collateral": "collateral accuracy",
}
OUTCOME_COLUMNS = ["label", "method", "rank", "n_seeds"] + [
    c for o in OUTCOMES for c in (o, f"{o}_lo", f"{o}_hi", f"{o}_n")
]


def _row(label: str, method: str, rank, runs: list[RunRecord]) -> dict:
    row = {"label": label, "method": method, "rank": rank, "n_seeds": len(runs)}
    for o in OUTCOMES:
        frame = pd.DataFrame({r.seed or 0: r.scores[o] for r in runs if o in r.scores}).T  # [S, P]
        e = bootstrap_mean_ci(frame.to_numpy(dtype=float)) if frame.size else None
        row.update(ci_columns(o, e) if e is not None else {o: math.nan, f"{o}_lo": math.nan, f"{o}_hi": math.nan})
        row[f"{o}_n"] = int(frame.notna().any(axis=0).sum()) if frame.size else 0  # problems it is defined on
    return row


def outcomes_table(cells: list[Cell], base: RunRecord) -> pd.DataFrame:
    """The base model, then one row per cell; empty when no problem has branches."""
    if "aligned" not in base.scores or base.scores["aligned"].isna().all():
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    rows = [_row(base.label, base.method, None, [base])] + [_row(c.label, c.method, c.rank, c.runs) for c in cells]
    df = pd.DataFrame(rows, columns=OUTCOME_COLUMNS)
    df["rank"] = df["rank"].astype("Int64")
    return df


def family_decisions(cells: list[Cell], base: RunRecord, problems: dict[str, dict]) -> pd.DataFrame:
    """[cell, family] mean decision accuracy (and collateral accuracy for the unplanted families);
    with several named decisions per problem (``arca.data.chains``), also one column per decision."""
    out = {}
    for name, runs in [(base.label, [base])] + [(f"{c.label}_r{c.rank}", c.runs) for c in cells]:
        have = [r.scores for r in runs if "decision" in r.scores]
        if not have:
            continue
        scores = pd.concat(have)
        family = scores.index.map(lambda pid: problems.get(pid, {}).get("subject", "?"))
        planted = scores.index.map(lambda pid: bool(problems.get(pid, {}).get("fork")))
        value = scores["decision"].where(planted, scores["collateral"])  # unplanted: plain correctness
        row = value.groupby(family).mean()
        for col in scores.columns:  # problems with several decisions: each named decision on its own
            if col.startswith(DECISION_PREFIX) and col != f"{DECISION_PREFIX}decision":
                row[f"{col[len(DECISION_PREFIX) :]} (decision)"] = scores[col].mean()
        out[name] = row
    return pd.DataFrame(out).T


def outcomes_markdown(df: pd.DataFrame, families: pd.DataFrame) -> str:
    if df.empty:
        return "# Outcomes on the planted forks\n\nNo planted-fork problems in this experiment: nothing to decompose.\n"
    rows = [
        [r["label"], fmt_rank(r["rank"]), str(r["n_seeds"]), *(est(r, o).fmt() for o in OUTCOMES)]
        for _, r in df.iterrows()
    ]
    fam_rows = [[idx, *(f"{v:.2f}" if pd.notna(v) else "-" for v in row)] for idx, row in families.iterrows()]
    n = {o: int(df[f"{o}_n"].max()) for o in OUTCOMES}
    return "\n".join(
        [
            "# Outcomes on the planted forks\n",
            "Held-out greedy completions, decomposed. Aligned: follows one of its problem's branches "
            f"({n['aligned']} problems). Decision: an aligned completion of a forked problem took every decision "
            f"correctly ({n['decision']} problems at most). Execution: an aligned completion's answer is the one its "
            f"own branch reaches ({n['execution']} problems at most). Collateral: greedy accuracy on the "
            f"{n['collateral']} problems no credit aims at (the `none` family and the twins, whose decision "
            "pretraining never planted). Mean [95% bootstrap interval over seeds and problems].\n",
            markdown_table(["method", "r", "seeds", *(OUTCOME_NAMES[o] for o in OUTCOMES)], rows),
            "## Per family\n",
            "Decision accuracy of aligned completions for the planted families (every decision right); greedy "
            "accuracy for the unplanted ones (`none`, `chain_none` and the twins); `<word> (decision)`: that one "
            "decision taken correctly, over the aligned completions of problems holding it. Mean over seeds and "
            "problems.\n",
            markdown_table(["cell", *families.columns], fam_rows),
        ]
    )
