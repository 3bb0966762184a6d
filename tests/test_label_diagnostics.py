"""Credit precision against the planted forks' labels, and the oracle credit method."""

from __future__ import annotations

import math

import pytest
import torch

from arca import credit
from arca.diagnostics import credit_precision, label_auroc, label_share, uniform_label_share
from arca.train import shuffled_rewards


def _slow_auroc(w: list[float], lab: list[int]) -> float:
    pos = [x for x, is_decisive in zip(w, lab) if is_decisive]
    neg = [x for x, is_decisive in zip(w, lab) if not is_decisive]
    if not pos or not neg:
        return float("nan")
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def test_label_share_and_auroc_hand_case():
    w = torch.tensor([[0.1, 0.6, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25, 0.0]])
    m = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]], dtype=torch.float32)
    d = torch.tensor([[0, 1, 0, 0, 1], [0, 0, 1, 0, 0]], dtype=torch.float32)  # the padded 1 must not count
    assert torch.allclose(label_share(w, m, d), torch.tensor([0.6, 0.25], dtype=torch.float64))
    assert torch.allclose(uniform_label_share(m, d), torch.tensor([0.25, 0.25], dtype=torch.float64))
    # row 0: 0.6 beats 0.1, 0.2, 0.1 -> 1.0; row 1: all ties -> 0.5
    assert torch.allclose(label_auroc(w, m, d), torch.tensor([1.0, 0.5], dtype=torch.float64))


def test_label_auroc_matches_a_slow_reference():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(20, 12, generator=g).round(decimals=1)  # ties on purpose
    m = (torch.rand(20, 12, generator=g) > 0.2).float()
    d = (torch.rand(20, 12, generator=g) > 0.7).float()
    fast = label_auroc(w, m, d)
    for i in range(20):
        keep = [t for t in range(12) if m[i, t] > 0]
        ref = _slow_auroc([float(w[i, t]) for t in keep], [int(d[i, t]) for t in keep])
        assert (math.isnan(ref) and math.isnan(float(fast[i]))) or abs(ref - float(fast[i])) < 1e-12


def test_credit_precision_splits_by_advantage_and_skips_unaligned_rows():
    w = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    m = torch.ones(3, 4)
    d = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.float32)
    x = torch.tensor([[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]], dtype=torch.float32)
    adv = torch.tensor([1.0, -1.0, 1.0])
    out = credit_precision(w, m, d, x, adv, aligned=torch.tensor([True, True, False]))
    assert math.isclose(out["decisive_share_pos"], 0.7) and math.isclose(out["decisive_share_neg"], 0.1)
    assert math.isclose(out["decisive_share"], 0.4) and math.isclose(out["decisive_share_uniform"], 0.25)
    assert math.isclose(out["distractor_share"], 0.4)
    assert math.isclose(out["decisive_auroc"], (1.0 + 1 / 3) / 2)  # row 0: 1; row 1: a tie, a tie, a loss
    empty = credit_precision(w, m, d, x, adv, aligned=torch.tensor([False, False, False]))
    assert empty["decisive_share"] is None


def test_decision_oracle_weights_hand_case():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.float32)
    dec = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)  # row 1: unlabelled
    x = credit.CreditInputs(mask=mask, logprobs=torch.zeros(2, 5), decisive=dec)
    w, fallback = credit.token_weights("decision_oracle", x)
    assert torch.allclose(w[0], torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]), atol=1e-12)
    assert torch.allclose(w[1], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0]))  # uniform fall-back
    assert fallback.tolist() == [False, True]
    assert credit.REGISTRY["decision_oracle"].needs == frozenset({credit.LABELS})


def test_first_error_oracle_weights_hand_case():
    # row 0 failed at its third token; row 1 wrote a correct solution (no error): uniform, as
    # uniform credit would push it up; the decisive labels are not read
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.float32)
    err = torch.tensor([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)
    dec = torch.tensor([[0, 1, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.float32)
    x = credit.CreditInputs(mask=mask, logprobs=torch.zeros(2, 5), decisive=dec, first_error=err)
    w, fallback = credit.token_weights("oracle", x)
    assert torch.allclose(w[0], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]), atol=1e-12)
    assert torch.allclose(w[1], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0]))
    assert fallback.tolist() == [False, True]
    assert credit.REGISTRY["oracle"].needs == frozenset({credit.LABELS})


def test_oracle_decisive_puts_a_successs_weight_on_its_decisions_hand_case():
    # row 0 failed at its third token; row 1 succeeded with decisions at tokens 1 and 2; row 2
    # succeeded on a problem without a decision: uniform
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.float32)
    err = torch.tensor([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)
    dec = torch.tensor([[0, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)
    x = credit.CreditInputs(mask=mask, logprobs=torch.zeros(3, 5), decisive=dec, first_error=err)
    w, fallback = credit.token_weights("oracle_decisive", x)
    assert torch.allclose(w[0], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]), atol=1e-12)
    assert torch.allclose(w[1], torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0]), atol=1e-12)
    assert torch.allclose(w[2], torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0]))
    assert fallback.tolist() == [False, False, True]


def test_anti_oracle_leaves_out_exactly_the_decisive_tokens():
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.float32)
    dec = torch.tensor([[0, 1, 0, 0, 0]], dtype=torch.float32)
    w, _ = credit.token_weights("anti_oracle", credit.CreditInputs(mask=mask, logprobs=torch.zeros(1, 5), decisive=dec))
    assert torch.allclose(w[0], torch.tensor([1 / 3, 0.0, 1 / 3, 1 / 3, 0.0]), atol=1e-12)


@pytest.mark.parametrize("method", ["oracle", "oracle_decisive", "decision_oracle", "anti_oracle"])
def test_oracle_without_labels_is_a_clear_error(method):
    x = credit.CreditInputs(mask=torch.ones(1, 3), logprobs=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=f"'{method}' needs 'labels'"):
        credit.token_weights(method, x)


def test_shuffled_rewards_is_a_seeded_permutation():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    a, b = shuffled_rewards(r, 1, 3), shuffled_rewards(r, 1, 3)
    assert torch.equal(a, b) and sorted(a.tolist()) == sorted(r.tolist())
    assert any(not torch.equal(shuffled_rewards(r, 1, s), r) for s in range(5))
