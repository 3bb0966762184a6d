"""The planted-fork corpus and its labels: branches, fork tokens, alignment, corpus rates."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import pytest

from arca.config import Config
from arca.data.fork_tree import branches, sample_choices
from arca.data.forks import FAMILIES, generate_forked
from arca.data.generated import make_splits
from arca.labels import align, label_batch, token_flags


def _task(family: str, seed: int = 0):
    return FAMILIES[family][0](random.Random(seed))


# ----------------------------------------------------------------------------- branches
def test_branches_of_a_hand_made_more_diff_problem():
    task = _task("more_diff")
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
    task = _task("each", seed=3)
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
                # unforked families (none and the twins) have no decisive token, forked ones exactly one
                forked = any(f.decisive for f in make(random.Random(0)).forks)
                assert len(b["decisive"]) == (1 if forked else 0), (family, b)
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
    cfg.data.forks.p_bug = 0.6
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
    assert cfg.data.forks.p_bug == 0
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


# ----------------------------------------------------------------------------- alignment
BRANCHES = [  # "How many more": 9-4 right, 9+4 the bug; two connectors
    {"text": "9-4=5. \\boxed{5}", "answer": "5", "correct": True, "decisive": [1], "distractor": [5]},
    {"text": "9-4=5, so \\boxed{5}", "answer": "5", "correct": True, "decisive": [1], "distractor": [5]},
    {"text": "9+4=13. \\boxed{13}", "answer": "13", "correct": False, "decisive": [1], "distractor": [6]},
    {"text": "9+4=13, so \\boxed{13}", "answer": "13", "correct": False, "decisive": [1], "distractor": [6]},
]


def test_align_a_completion_that_takes_the_bug():
    a = align("9+4=13, so \\boxed{13}", BRANCHES)
    assert a is not None and not a.correct
    assert a.decisive == (1,) and a.distractor == (6,)


def test_align_a_completion_that_takes_the_correct_branch_then_slips():
    # right decision, wrong arithmetic: labelled at the decision, no distractor label (never reached)
    a = align("9-4=6. \\boxed{6}", BRANCHES)
    assert a is not None and a.correct
    assert a.decisive == (1,) and a.distractor == ()


def test_a_completion_that_fits_no_branch_gets_no_label():
    assert align("9*4=36. \\boxed{36}", BRANCHES) is None  # a third procedure at the fork
    assert align("8-4=4. \\boxed{4}", BRANCHES) is None  # a slip before the decision
    assert align("", BRANCHES) is None
    assert align("9-4=5. \\boxed{5}", []) is None  # no branches: clean corpus


def test_unforked_problem_aligns_with_distractors_only():
    task = _task("none", seed=2)
    bs = branches(task)
    a = align(bs[0]["text"], bs)
    assert a is not None and a.correct and a.answer == bs[0]["answer"]
    assert a.decisive == () and a.distractor == tuple(bs[0]["distractor"])


def test_token_flags_map_characters_to_tokens():
    # a phrase token covers 7 characters: positions inside it flag that one token
    pieces = ["9", "+", "4", "=", "1", "3", ".", " ", "\\boxed{", "1", "3", "}"]
    assert token_flags(pieces, [1, 6]) == [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert token_flags(pieces, [10])[8] == 1  # inside \boxed{
    lab = label_batch([pieces, list("8-4=4")], ["9+4=13. \\boxed{13}", "8-4=4"], [{"branches": BRANCHES}] * 2, 14)
    assert lab.aligned == [True, False] and lab.forked == [True, True]
    assert lab.decisive[0] == [0, 1] + [0] * 12 and lab.distractor[0][6] == 1 and len(lab.decisive[0]) == 14
    assert lab.decisive[1] == [0] * 14 and lab.correct_branch == [False, None]


def test_sampled_bug_choices_align_with_their_own_labels():
    rng = random.Random(0)
    for family, (make, _) in FAMILIES.items():
        task = make(rng)
        bs = {b["text"]: b for b in branches(task)}
        for _ in range(5):
            text, _ = task.text(sample_choices(task, rng, 0.5))
            a = align(text, list(bs.values()))
            assert a is not None, (family, text)
            assert list(a.decisive) == bs[text]["decisive"] and list(a.distractor) == bs[text]["distractor"]
