"""The planted-fork corpus: branches, fork tokens, corpus rates (their alignment: test_labels.py)."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import pytest
from helpers import fork_task

from arca.config import Config
from arca.data.fork_tree import branches
from arca.data.forks import FAMILIES, SINGLE_DECISION, generate_forked
from arca.data.generated import make_splits


# ----------------------------------------------------------------------------- branches
def test_branches_of_a_hand_made_more_diff_problem():
    task = fork_task("more_diff")
    got = {b["text"]: b for b in branches(task)}
    # "How many more": a-b is right, a+b the bug; the operator is the first character that differs.
    a, b = (int(x) for x in re.findall(r"has (\d+) ", task.problem))
    right = f"{a}-{b}={a - b}. \\boxed{{{a - b}}}"
    wrong = f"{a}+{b}={a + b}. \\boxed{{{a + b}}}"
    op = len(str(a))
    assert got[right]["correct"] and not got[wrong]["correct"]
    assert got[right]["decisive"] == [op] and got[wrong]["decisive"] == [op]
    assert right[op] == "-" and wrong[op] == "+"
    # the connector is a harmless fork: right after the result
    assert got[right]["distractor"] == [right.index(". ")]
    assert len(got) == 6  # 2 decisions x 3 connectors


def test_fork_tokens_with_a_harmless_operand_order():
    task = fork_task("each", seed=3)
    for b in branches(task):
        # operand order at 0 (harmless), operator at 1 (decisive), connector after the result
        assert b["decisive"] == [1]
        assert b["distractor"][0] == 0
        assert b["text"][1] in "*+"
        assert b["correct"] == (b["text"][1] == "*")


def test_decisive_and_distractor_tokens_never_coincide():
    rng = random.Random(7)
    for family, (make, _) in FAMILIES.items():
        for _ in range(200):
            for b in branches(make(rng)):
                assert not set(b["decisive"]) & set(b["distractor"]), (family, b)
                # unforked families (none, chain_none and the twins) have no decisive token, forked ones
                # one per decision (at most: a decision can change nothing on some branch)
                n_decisions = sum(f.decisive for f in make(random.Random(0)).forks)
                assert len(b["decisive"]) <= n_decisions and (len(b["decisive"]) > 0) == (n_decisions > 0), (family, b)
                if n_decisions == 1:
                    assert len(b["decisive"]) == 1, (family, b)
                # the correct branch's answer is what its box says
                assert b["text"].endswith(f"\\boxed{{{b['answer']}}}")


def test_every_correct_branch_answers_the_record_answer():
    for rec in generate_forked(300, seed=11, p_bug=0.6):
        correct = [b for b in rec["branches"] if b["correct"]]
        assert correct and all(b["answer"] == rec["answer"] for b in correct)
        assert all(b["answer"] != rec["answer"] for b in rec["branches"] if not b["correct"])
        assert rec["solution"] in {b["text"] for b in rec["branches"]}


# ----------------------------------------------------------------------------- corpus rates
def test_pretraining_bug_rate_matches_p_bug():
    p_bug = 0.6
    recs = generate_forked(6000, seed=5, p_bug=p_bug)
    forked = [r for r in recs if r["fork"]]
    wrong = sum(next(b for b in r["branches"] if b["text"] == r["solution"])["correct"] is False for r in forked)
    rate, n = wrong / len(forked), len(forked)
    assert abs(rate - p_bug) < 4 * math.sqrt(p_bug * (1 - p_bug) / n)
    # the harmless connector: its rare option shows up about 6% of the time
    rare = sum(" thus " in r["solution"] for r in recs) / len(recs)
    assert abs(rare - 0.06) < 4 * math.sqrt(0.06 * 0.94 / len(recs))


def test_test_split_is_correct_and_no_family_holds_more_than_15_percent():
    cfg = Config()
    cfg.data.forks.p_bug, cfg.data.forks.families = 0.6, list(SINGLE_DECISION)
    cfg.data.n_train, cfg.data.n_test = 3000, 400
    train, test = make_splits(cfg.data)
    assert not {r["problem"] for r in test} & {r["problem"] for r in train}
    for r in test:  # held-out solutions and golds are always the correct branch
        assert next(b for b in r["branches"] if b["text"] == r["solution"])["correct"]
    shares = Counter(r["fork"] for r in test if r["fork"])
    assert max(shares.values()) / len(test) <= 0.15
    assert sum(shares.values()) / len(test) > 0.75  # most problems are forked


def test_p_bug_zero_is_the_clean_corpus():
    cfg = Config()
    cfg.data.forks.p_bug = 0.0
    from arca.data.generated import generate_disjoint, generate_problems

    train, test = make_splits(cfg.data)
    ref_train = generate_problems(cfg.data.n_train, cfg.data.seed, cfg.data.levels, id_prefix="train")
    ref_test = generate_disjoint(
        cfg.data.n_test,
        f"{cfg.data.seed}:test",
        cfg.data.levels,
        exclude={r["problem"] for r in ref_train},
        id_prefix="test",
    )
    assert train == ref_train and test == ref_test
    assert all("branches" not in r for r in train + test)
    # the clean corpus' first problems, pinned: a change to the generator shows here
    assert [r["solution"] for r in train[:2]] == [ref_train[0]["solution"], ref_train[1]["solution"]]


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="data.forks.families"):
        generate_forked(3, seed=0, p_bug=0.5, families=["none", "nope"])
