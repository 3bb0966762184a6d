"""Tests of arca.labels: aligning sampled completions with the planted-fork branches, token flags,
and the labels of a batch of rollouts with the metrics a training step logs from them.

The hand-made branches are one "how many more" problem (9-4 right, 9+4 the bug) with two
connectors; the batch tests use tiny fake tokenizers whose decoded pieces are known by hand.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from helpers import fork_task

from arca.data.fork_tree import branches, sample_choices
from arca.data.forks import FAMILIES
from arca.labels import (
    align,
    completion_pieces,
    first_error,
    label_batch,
    label_metrics,
    rollout_labels,
    token_flags,
)

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
    task = fork_task("none", seed=2)
    bs = branches(task)
    a = align(bs[0]["text"], bs)
    assert a is not None and a.correct and a.answer == bs[0]["answer"]
    assert a.decisive == () and a.distractor == tuple(bs[0]["distractor"])


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("9-4=5. \\boxed{5}", None),  # a correct branch, exactly: no error
        ("9-4=5, so \\boxed{5}", None),
        ("9+4=13. \\boxed{13}", 1),  # the bug: at the operator, the decisive token
        ("9-4=6. \\boxed{6}", 4),  # right decision, then a slip in the result
        ("9-4=5. \\boxed{7}", 14),  # ... or in the box
        ("9-4=5. \\boxed{5}}", 16),  # wrote a correct branch, then went on
        ("9-4=5", 4),  # stopped inside a correct branch: blamed at its last character
        ("", None),
    ],
)
def test_first_error_is_where_a_completion_leaves_every_correct_branch(completion, expected):
    assert first_error(completion, BRANCHES) == expected


def test_first_error_slow_reference():
    # against a loop over characters: the first position where no correct branch continues
    rng = random.Random(0)
    correct = [b["text"] for b in BRANCHES if b["correct"]]
    alphabet = sorted(set("".join(b["text"] for b in BRANCHES)))
    for _ in range(300):
        text = rng.choice([b["text"] for b in BRANCHES])
        text = "".join(c if rng.random() > 0.1 else rng.choice(alphabet) for c in text)[: rng.randint(1, len(text))]
        if text in correct:
            assert first_error(text, BRANCHES) is None
            continue
        pos = next(
            (i for i in range(len(text)) if not any(t.startswith(text[: i + 1]) for t in correct)), len(text) - 1
        )
        assert first_error(text, BRANCHES) == pos


def test_first_error_without_a_correct_branch_is_none():
    assert first_error("9+4", [b for b in BRANCHES if not b["correct"]]) is None
    assert first_error("9+4", []) is None


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


# ----------------------------------------------------------------------------- labels of a batch of rollouts
class CharTokenizer:
    """One character per token; id 0 is a special token (decodes to "" with skip_special_tokens)."""

    def __init__(self, alphabet: str):
        self.chars = ["<eos>"] + list(alphabet)

    def ids(self, text: str) -> list[int]:
        return [self.chars.index(c) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join("" if i == 0 and skip_special_tokens else self.chars[i] for i in ids)


class SpaceMarkerTokenizer:
    """Subword pieces with a leading-space marker that decoding drops at the start of the text,
    as SentencePiece does: one token alone decodes without its space."""

    pieces = ["<eos>", "9", "\u2581+", "\u25814", "=13"]

    def decode(self, ids, skip_special_tokens=False):
        text = "".join("" if i == 0 and skip_special_tokens else self.pieces[i] for i in ids)
        return text.replace("\u2581", " ").lstrip(" ")


def _rollouts(rows: list[list[int]], mask: list[list[int]], texts: list[str]):
    return SimpleNamespace(completion_ids=torch.tensor(rows), completion_mask=torch.tensor(mask), texts=texts)


def test_completion_pieces_one_token_at_a_time_skips_masked_and_special_tokens():
    tok = CharTokenizer("0123456789+-=")
    ids = tok.ids("9-4=5") + [0, 0]  # eos kept by the mask, then padding
    r = _rollouts([ids], [[1, 1, 1, 1, 1, 1, 0]], ["9-4=5"])
    assert completion_pieces(tok, r) == [["9", "-", "4", "=", "5", ""]]


def test_completion_pieces_of_a_subword_tokenizer_are_the_growth_of_the_decoded_prefix():
    tok = SpaceMarkerTokenizer()
    # alone, "\u2581+" decodes to "+", so one piece at a time gives "9+4=13", not the text "9 + 4=13"
    r = _rollouts([[1, 2, 3, 4, 0]], [[1, 1, 1, 1, 0]], ["9 + 4=13"])
    pieces = completion_pieces(tok, r)
    assert pieces == [["9", " +", " 4", "=13"]]
    assert "".join(pieces[0]) == r.texts[0]


def test_rollout_labels_repeat_each_problem_k_times_and_are_none_without_forks():
    tok = CharTokenizer("0123456789+-=. \\boxed{}")
    texts = ["9+4=13. \\boxed{13}", "8-4=4"]  # the bug branch, then a slip before the decision
    width = max(len(t) for t in texts) + 1
    rows = [tok.ids(t) + [0] * (width - len(t)) for t in texts]
    mask = [[1] * len(t) + [0] * (width - len(t)) for t in texts]
    r = _rollouts(rows, mask, texts)
    assert rollout_labels(tok, r, [{"answer": "5"}], k=2) is None  # a clean corpus: no branches

    lab = rollout_labels(tok, r, [{"branches": BRANCHES}], k=2)  # one problem, K = 2 rows
    assert lab.decisive.shape == (2, width) and lab.decisive.dtype == torch.float32
    assert lab.aligned.tolist() == [True, False] and lab.forked.tolist() == [True, True]
    # row 0: the decisive "+" at character 1, the distractor "." at character 6 (one token per character)
    assert lab.decisive[0].nonzero().flatten().tolist() == [1]
    assert lab.distractor[0].nonzero().flatten().tolist() == [6]
    assert lab.decisive[1].sum() == 0 and lab.distractor[1].sum() == 0
    # first errors: row 0 at the bug's "+" (character 1); row 1, unaligned, at its first character
    assert lab.first_error[0].nonzero().flatten().tolist() == [1]
    assert lab.first_error[1].nonzero().flatten().tolist() == [0]
    half = lab.select(slice(1, 2))
    assert half.aligned.tolist() == [False] and half.decisive.shape == (1, width)
    assert torch.equal(half.first_error, lab.first_error[1:2])


def test_label_metrics_hand_case():
    assert label_metrics(None, torch.ones(1, 3), torch.ones(1, 3), torch.ones(1)) == {}
    # three rows, labels one column wider than the weights (the extra column is cut off);
    # row 2 is not aligned and counts only in the alignment rates
    labels = SimpleNamespace(
        decisive=torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]),
        distractor=torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
        aligned=torch.tensor([True, True, False]),
        forked=torch.tensor([True, True, False]),
    )
    W = torch.tensor([[0.5, 0.25, 0.25], [3.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # [N, T]
    M = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -1.0, 1.0])
    got = label_metrics(labels, W, M, adv)
    assert got["labeled_frac"] == pytest.approx(2 / 3)
    assert got["labeled_frac_forked"] == pytest.approx(1.0)
    # decisive share: row 0 0.25 / 1.0, row 1 3 / 4; uniform: 1/3 and 1/2
    assert got["decisive_share"] == pytest.approx((0.25 + 0.75) / 2)
    assert got["decisive_share_uniform"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert got["decisive_share_pos"] == pytest.approx(0.25) and got["decisive_share_neg"] == pytest.approx(0.75)
    assert got["distractor_share"] == pytest.approx(0.25)  # row 1 has no distractor token: skipped
    unforked = SimpleNamespace(**{**vars(labels), "forked": torch.tensor([False, False, False])})
    assert label_metrics(unforked, W, M, adv)["labeled_frac_forked"] is None
