"""Outcomes decomposed on the planted forks (arca.report.branch_scores, arca.report.outcomes)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from arca.report.branch_scores import outcome_scores, problem_outcome
from arca.report.outcomes import family_decisions, outcomes_markdown, outcomes_table
from arca.report.records import Cell, RunRecord

BRANCHES = [  # "how many more": 9-4 right, 9+4 the bug
    {"text": "9-4=5. \\boxed{5}", "answer": "5", "correct": True, "decisive": [1], "distractor": [5]},
    {"text": "9+4=13. \\boxed{13}", "answer": "13", "correct": False, "decisive": [1], "distractor": [6]},
]
FORKED = {"id": "p1", "subject": "more_diff", "fork": "more_diff", "branches": BRANCHES}
TWIN = {  # "in all": 9+4 right, 9-4 the bug pretraining never planted
    "id": "p2",
    "subject": "in_all",
    "fork": "",
    "branches": [dict(BRANCHES[0], correct=False), dict(BRANCHES[1], correct=True)],
}
NONE = {
    "id": "p3",
    "subject": "none",
    "fork": "",
    "branches": [{"text": "2+3=5. \\boxed{5}", "answer": "5", "correct": True, "decisive": [], "distractor": [5]}],
}


def nan_equal(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(
        (math.isnan(got[k]) and math.isnan(want[k])) or got[k] == want[k] for k in want
    )


@pytest.mark.parametrize(
    "completion, record, correct, want",
    [
        # right decision, right arithmetic
        ("9-4=5. \\boxed{5}", FORKED, True, dict(aligned=1.0, decision=1.0, execution=1.0, collateral=math.nan)),
        # the bug, executed right: the decision is wrong, the execution is not
        ("9+4=13. \\boxed{13}", FORKED, False, dict(aligned=1.0, decision=0.0, execution=1.0, collateral=math.nan)),
        # right decision, then a slip
        ("9-4=6. \\boxed{6}", FORKED, False, dict(aligned=1.0, decision=1.0, execution=0.0, collateral=math.nan)),
        # leaves every branch before the decision: only "aligned" is defined
        ("7*", FORKED, False, dict(aligned=0.0, decision=math.nan, execution=math.nan, collateral=math.nan)),
        # a twin: its decision counts as collateral (greedy correctness), and as a decision too
        ("9+4=13. \\boxed{13}", TWIN, True, dict(aligned=1.0, decision=1.0, execution=1.0, collateral=1.0)),
        # no decision at all: no decision score
        ("2+3=5. \\boxed{5}", NONE, True, dict(aligned=1.0, decision=math.nan, execution=1.0, collateral=1.0)),
        ("2+3=6. \\boxed{6}", NONE, False, dict(aligned=1.0, decision=math.nan, execution=0.0, collateral=0.0)),
    ],
)
def test_problem_outcome_hand_cases(completion, record, correct, want):
    assert nan_equal(problem_outcome(completion, record, correct), want)


def test_a_problem_without_branches_has_no_outcome():
    got = problem_outcome("anything", {"id": "m", "subject": "algebra"}, True)
    assert all(math.isnan(v) for v in got.values())


def _record(seed: int, completions: dict[str, tuple[str, bool]]) -> RunRecord:
    problems = {p["id"]: p for p in (FORKED, TWIN, NONE)}
    samples = [
        {"protocol": "generated", "mode": "greedy", "problem_id": pid, "completion": c, "paper": ok}
        for pid, (c, ok) in completions.items()
    ]
    scores = outcome_scores(samples, problems, "generated", "paper")
    label = "base" if seed == 0 else "uniform"
    return RunRecord(label if seed == 0 else f"uniform_r8_s{seed}", label, label, None, seed or None, {}, scores)


def test_outcomes_table_means_over_seeds_and_problems():
    right, bug = ("9-4=5. \\boxed{5}", True), ("9+4=13. \\boxed{13}", False)
    twin_ok, none_bad = ("9+4=13. \\boxed{13}", True), ("2+3=6. \\boxed{6}", False)
    base = _record(0, {"p1": bug, "p2": twin_ok, "p3": none_bad})
    runs = [_record(1, {"p1": right, "p2": twin_ok, "p3": none_bad}), _record(2, {"p1": bug, "p2": twin_ok})]
    df = outcomes_table([Cell("uniform", "uniform", 8, runs)], base)
    b, u = df.iloc[0], df.iloc[1]
    assert (b["label"], u["label"]) == ("base", "uniform")
    assert b["decision"] == pytest.approx(0.5) and b["collateral"] == pytest.approx(0.5)
    # uniform: decisions p1 (1, 0) and p2 (1, 1) -> 3/4; collateral p2 (1, 1), p3 (0, missing) -> 2/3
    assert u["decision"] == pytest.approx(0.75) and u["collateral"] == pytest.approx(2 / 3)
    assert u["execution"] == pytest.approx(4 / 5) and u["aligned"] == pytest.approx(1.0)
    assert u["decision_lo"] <= u["decision"] <= u["decision_hi"] and u["n_seeds"] == 2
    fam = family_decisions([Cell("uniform", "uniform", 8, runs)], base, {p["id"]: p for p in (FORKED, TWIN, NONE)})
    assert fam.loc["uniform_r8", "more_diff"] == pytest.approx(0.5)  # a decision: right once, bug once
    assert fam.loc["uniform_r8", "none"] == pytest.approx(0.0)  # unplanted: greedy correctness
    md = outcomes_markdown(df, fam)
    assert "| uniform | 8 | 2 | 1.000 [" in md and "## Per family" in md


def test_no_forks_no_table():
    base = RunRecord("base", "base", "base", None, None, {}, pd.DataFrame({"greedy": [1.0]}))
    df = outcomes_table([], base)
    assert df.empty and "nothing to decompose" in outcomes_markdown(df, pd.DataFrame())
