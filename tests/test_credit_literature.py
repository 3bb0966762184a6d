"""The literature's credit methods on hand-computed cases (arca.credit_literature, arca.credit)."""

from __future__ import annotations

import math

import pytest
import torch

from arca import credit
from arca import credit_literature as lit


# ----------------------------------------------------------------------------- KTAE
def test_fisher_exact_p_by_hand():
    # margins 2/2, 2/2: P(a=0) = P(a=2) = 1/6, P(a=1) = 4/6; the extreme table has p = 2/6
    assert lit.fisher_exact_p(2, 0, 0, 2) == pytest.approx(1 / 3)
    assert lit.fisher_exact_p(1, 1, 1, 1) == pytest.approx(1.0)
    # margins 3/3: P(a=3) = P(a=0) = 1/20
    assert lit.fisher_exact_p(3, 0, 0, 3) == pytest.approx(0.1)


def test_key_token_score_by_hand():
    # v in both correct rollouts and no incorrect one (2 vs 2): IG = H(R) = 1 bit, p = 1/3
    assert lit.key_token_score(2, 0, 2, 2) == pytest.approx(2 / 3)
    assert lit.key_token_score(0, 2, 2, 2) == pytest.approx(-2 / 3)
    assert lit.key_token_score(2, 2, 2, 2) == 0.0  # everywhere: no information
    assert lit.key_token_score(1, 0, 1, 0) == 0.0  # no incorrect rollout: no contrast
    # a = 1, b = 0 of 2/2: contains -> {1 correct}, lacks -> {1 correct, 2 incorrect}
    ig = 1.0 - 3 / 4 * lit.binary_entropy(1 / 3)
    assert lit.key_token_score(1, 0, 2, 2) == pytest.approx(ig * (1 - 1.0))  # Fisher p = 1 here


def test_ktae_signal_by_hand():
    # one group of 4: rows 0, 1 correct, rows 2, 3 incorrect; token 5 only in correct ones,
    # token 9 only in incorrect ones, token 7 everywhere; row 3 has a masked 5 (padding)
    ids = torch.tensor([[5, 7, 0], [7, 5, 0], [9, 7, 0], [7, 9, 5]])
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]])
    adv = torch.tensor([0.87, 0.87, -0.87, -0.87])
    x = credit.CreditInputs(
        mask=mask,
        logprobs=torch.zeros(4, 3),
        token_ids=ids,
        rewards=torch.tensor([1.0, 1.0, 0.0, 0.0]),
        advantages=adv,
        groups=torch.zeros(4, dtype=torch.long),
    )
    alpha = credit.ktae_signal(x)
    k = 2 / 3
    expected = torch.tensor(
        [[1 + k, 1, 0], [1, 1 + k, 0], [1 + k, 1, 0], [1, 1 + k, 0]],
    )  # in the policy dtype
    torch.testing.assert_close(alpha, expected)
    # a correct row that contained the failure token would get 1 - 2/3 there
    assert float(lit.ktae_alpha(torch.tensor([[-k]]), torch.ones(1, 1), torch.tensor([1.0]))) == pytest.approx(1 / 3)


def test_ktae_groups_are_separate():
    # the same ids in two groups with opposite outcomes: each group's table is its own
    ids = torch.tensor([[5], [6], [5], [6]])
    x = credit.CreditInputs(
        mask=torch.ones(4, 1),
        logprobs=torch.zeros(4, 1),
        token_ids=ids,
        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0]),
        advantages=torch.tensor([0.7, -0.7, -0.7, 0.7]),
        groups=torch.tensor([0, 0, 1, 1]),
    )
    scores = lit.ktae_scores(x.token_ids, x.mask, x.rewards, x.groups)  # Fisher p = 1 at n = 2
    assert torch.all(scores == 0)
    assert torch.all(credit.ktae_signal(x) == 1)


# ----------------------------------------------------------------------------- Clip-Cov
def test_clip_cov_by_hand():
    lp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    # mean log pi = -2.5, mean A = 0: Cov = [[1.5, 0.5], [0.5, 1.5]]
    cov = lit.token_covariance(lp, mask, adv)
    torch.testing.assert_close(cov, torch.tensor([[1.5, 0.5], [0.5, 1.5]], dtype=torch.float64))
    # ceil(0.002 * 4) = 1 token cut: the tie at 1.5 goes to the first in row-major order
    x = credit.CreditInputs(mask=mask, logprobs=lp, advantages=adv)
    torch.testing.assert_close(credit.clip_cov_signal(x), torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    assert lit.clip_cov_alpha(cov, mask, 0.5).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    # a masked token never counts, in the means or the cut
    m2 = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    cov2 = lit.token_covariance(lp, m2, adv)  # mean log pi = -2, mean A = 1/3
    assert float(cov2[0, 0]) == pytest.approx(2 / 3) and float(cov2[1, 0]) == pytest.approx(4 / 3)
    assert float(cov2[1, 1]) == 0.0
    assert lit.clip_cov_alpha(cov2, m2, 0.2).tolist() == [[1.0, 1.0], [0.0, 0.0]]  # ceil(0.6) = 1 cut


# ----------------------------------------------------------------------------- spans, values, saliency
def test_span_alpha_and_its_inversion_by_hand():
    drop = torch.tensor([[2.0, 2.0, -1.0, 0.0, 9.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])
    # d = [2, 2, 0, 0], mean 1 -> 1 + d
    assert credit.causal_span_signal(
        credit.CreditInputs(mask=mask, logprobs=torch.zeros(1, 5), span_drop=drop)
    ).tolist() == [[3.0, 3.0, 1.0, 1.0, 0.0]]
    inv = credit.causal_span_inverted_signal(credit.CreditInputs(mask=mask, logprobs=torch.zeros(1, 5), span_drop=drop))
    assert inv.tolist() == [[1.0, 1.0, 3.0, 3.0, 0.0]]
    flat = lit.span_alpha(torch.tensor([[-1.0, 0.0]]), torch.ones(1, 2))
    assert flat.tolist() == [[1.0, 1.0]]  # nothing mattered: uniform


def test_vineppo_alpha_by_hand():
    v = torch.tensor([[0.5, 0.5, -0.25, 0.0], [0.5, 0.5, -0.25, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 0]])
    x = credit.CreditInputs(mask=mask, logprobs=torch.zeros(2, 4), step_values=v, advantages=torch.tensor([1.0, -1.0]))
    assert credit.vineppo_signal(x).tolist() == [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.0]]


def test_oar_g_reads_the_saliency():
    s = torch.tensor([[0.2, 0.0, 0.6]])
    w, _ = credit.token_weights(
        "oar_g",
        credit.CreditInputs(mask=torch.ones(1, 3), logprobs=torch.zeros(1, 3), saliency=s),
        sharpen=1.0,
        eps=0.0,
    )
    torch.testing.assert_close(w, torch.tensor([[0.25, 0.0, 0.75]]))


def test_every_literature_method_is_registered_with_its_needs():
    assert set(credit.LITERATURE_METHODS) <= set(credit.REGISTRY)
    needs = {m: credit.REGISTRY[m].needs for m in credit.LITERATURE_METHODS}
    assert needs["ktae"] == {credit.GROUPS} and needs["clip_cov"] == {credit.GROUPS}
    assert needs["oar_g"] == {credit.INPUT_GRAD} and needs["causal_span"] == {credit.SPAN_DROP}
    assert credit.MC_VALUES in needs["vineppo"]
    for m in credit.LITERATURE_METHODS:  # the docstring names the paper
        assert "arXiv" in credit.REGISTRY[m].signal.__doc__, m
    assert math.isclose(credit.CLIP_COV_FRACTION, 0.002)


def test_the_bench_measures_the_literature_methods_by_one_name():
    from arca.bench.main import parse_methods

    assert parse_methods("literature") == ("uniform", *credit.LITERATURE_METHODS)
