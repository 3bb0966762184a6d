"""Chain problems (arca.data.chains): several planted decisions per solution, every branch exact."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from arca.data.chains import chain_task
from arca.data.fork_tree import branches
from arca.data.forks import generate_forked
from arca.labels import align, first_error

STEP = re.compile(r"(-?\d+)([-+*/])(-?\d+)=(-?\d+)")


def _steps(text: str) -> list[tuple[int, str, int, int]]:
    body = re.split(r"\. |, so | thus ", text)[0]
    return [tuple(int(g) if i != 1 else g for i, g in enumerate(m.groups())) for m in STEP.finditer(body)]


def test_a_hand_made_chain_has_every_branch_with_its_arithmetic():
    rng = random.Random(0)
    task = chain_task("chain2", ["half", "lose"], rng)
    bs = branches(task)
    start = int(re.search(r"has (\d+)", task.problem).group(1))
    b = int(re.search(r"loses (\d+)", task.problem).group(1))
    ok = {br["answer"] for br in bs if br["correct"]}
    assert ok == {str(start // 2 - b)}
    # 2 decisions x 3 connectors; the buggy answers are v*2-b, v/2+b, v*2+b
    assert len(bs) == 4 * 3
    assert {br["answer"] for br in bs if not br["correct"]} == {
        str(start * 2 - b),
        str(start // 2 + b),
        str(start * 2 + b),
    }
    for br in bs:
        for x, op, y, r in _steps(br["text"]):
            assert {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op] == r


@pytest.mark.parametrize("words", [["split", "lose"], ["lose", "half"], ["half", "split", "lose"]])
def test_decisive_tokens_are_the_operators_of_the_decisions(words):
    rng = random.Random(3)
    task = chain_task("chain3" if len(words) == 3 else "chain2", words, rng)
    bs = branches(task)
    assert len(bs) == 2 ** len(words) * 3  # every decision x every connector
    for br in bs:
        ops = [m.start(2) for m in STEP.finditer(br["text"])]
        assert br["decisive"] == ops  # one decisive token per step, at its operator
        assert "".join(br["text"][i] for i in br["decisive"]) in {
            "".join(o) for o in itertools.product(*(("/*" if w != "lose" else "-+") for w in words))
        }


def test_first_error_blames_the_second_decision_when_only_it_is_wrong():
    rng = random.Random(5)
    task = chain_task("chain2", ["lose", "half"], rng)
    bs = branches(task)
    good = next(br for br in bs if br["correct"] and br["text"].endswith(". \\boxed{" + br["answer"] + "}"))
    # the branch that takes the first decision right and the second wrong, with the same connector
    second_wrong = next(
        br
        for br in bs
        if not br["correct"]
        and br["decisive"][0] == good["decisive"][0]
        and br["text"][: good["decisive"][1]] == good["text"][: good["decisive"][1]]
    )
    pos = first_error(second_wrong["text"], bs)
    assert pos == good["decisive"][1]
    a = align(second_wrong["text"], bs)
    assert a is not None and not a.correct and a.decisive == tuple(second_wrong["decisive"])


def test_every_branch_of_a_generated_corpus_stays_integral_and_small():
    recs = generate_forked(300, 7, 0.5, ["chain2", "chain3", "chain_none"])
    for r in recs:
        for br in r["branches"]:
            for x, op, y, res in _steps(br["text"]):
                assert abs(res) <= 99
                if op == "/":
                    assert x % y == 0
    n_dec = {len(r["branches"][0]["decisive"]) for r in recs if r["subject"] == "chain3"}
    assert 3 in n_dec
    assert all(not r["fork"] for r in recs if r["subject"] == "chain_none")
    assert all(not br["decisive"] for r in recs if r["subject"] == "chain_none" for br in r["branches"])


@pytest.mark.parametrize("p_bug", [0.2, 0.5])
def test_each_decision_takes_its_bug_with_probability_p_bug(p_bug):
    recs = generate_forked(1500, 11, p_bug, ["chain2"])
    taken = total = 0
    for r in recs:
        ok = next(br for br in r["branches"] if br["correct"])
        for pos in ok["decisive"]:
            total += 1
            taken += r["solution"][: pos + 1] != ok["text"][: pos + 1] and r["solution"][:pos] == ok["text"][:pos]
    # a decision after an earlier bug sits on another prefix: count only decisions reached on the right path
    reached = sum(
        r["solution"][:pos] == next(br for br in r["branches"] if br["correct"])["text"][:pos]
        for r in recs
        for pos in next(br for br in r["branches"] if br["correct"])["decisive"]
    )
    assert total > 2000
    assert abs(taken / reached - p_bug) < 0.04


def test_test_split_is_correct_and_absent_from_train():
    train = generate_forked(500, 1, 0.5, ["chain2", "chain_none"])
    test = generate_forked(100, "1:test", 0.0, ["chain2", "chain_none"], exclude={r["problem"] for r in train})
    assert not {r["problem"] for r in test} & {r["problem"] for r in train}
    for r in test:
        assert any(br["correct"] and br["text"] == r["solution"] for br in r["branches"])


def test_outcomes_score_each_named_decision_of_a_chain():
    from arca.report.branch_scores import problem_outcome

    rng = random.Random(5)
    task = chain_task("chain2", ["lose", "half"], rng)
    bs = branches(task)
    record = {"branches": bs, "fork": "chain2"}
    wrong_half = next(br for br in bs if br["bugs"] == ["half"])
    out = problem_outcome(wrong_half["text"], record, correct=False)
    assert out["decision"] == 0.0 and out["execution"] == 1.0
    assert out["decision:lose"] == 1.0 and out["decision:half"] == 0.0
    right = next(br for br in bs if br["correct"])
    assert problem_outcome(right["text"], record, correct=True)["decision:half"] == 1.0


def test_curve_outcomes_split_decisions_execution_and_collateral():
    from arca.labels import outcome_means

    rng = random.Random(9)
    chain = chain_task("chain2", ["half", "lose"], rng)
    none = chain_task("chain_none", ["add", "add"], rng)
    pc = {"branches": branches(chain), "fork": "chain2"}
    pn = {"branches": branches(none), "fork": ""}
    right = next(b for b in pc["branches"] if b["correct"])
    wrong = next(b for b in pc["branches"] if b["bugs"] == ["half"])
    texts = [right["text"], wrong["text"], "garbage", pn["branches"][0]["text"]]
    out = outcome_means(texts, [pc, pc, pc, pn], [1, 0, 0, 1])
    assert out["aligned"] == 0.75  # "garbage" follows no branch
    assert out["decision"] == 0.5  # of the two aligned forked completions, one took both decisions right
    assert out["execution"] == 1.0 and out["collateral"] == 1.0
    assert outcome_means(["x"], [{"problem": "p"}], [0]) == {}
