"""Gini and EffN/T (arca.diagnostics) against a slow pure-Python reference and closed forms."""

from __future__ import annotations

import math
import random

import pytest
import torch

from arca.diagnostics import effective_token_ratio, gini, nanmean


def slow_gini(weights: list[float], mask: list[float]) -> float:
    """G = sum_j (2j - n - 1) w_(j) / (n * sum_j w_(j)), w sorted ascending, j = 1..n."""
    w = sorted(x for x, m in zip(weights, mask) if m > 0)
    n = len(w)
    if n <= 1:
        return math.nan
    total = sum(w)
    if total <= 0:
        return math.nan
    num = 0.0
    for j, x in enumerate(w, start=1):
        num += (2 * j - n - 1) * x
    return num / (n * total)


def slow_eff(weights: list[float], mask: list[float]) -> float:
    """1 / (T * sum_t w_t^2), T = number of masked tokens."""
    w = [x for x, m in zip(weights, mask) if m > 0]
    if not w:
        return math.nan
    sq = sum(x * x for x in w)
    if sq == 0:
        return math.nan
    return 1.0 / (len(w) * sq)


def _random_batch(rng: random.Random, B: int, T: int, normalized: bool):
    weights, masks = [], []
    for _ in range(B):
        kind = rng.random()
        if kind < 0.15:
            m = [0.0] * T  # empty mask
        elif kind < 0.5:
            n = rng.randint(1, T)  # right padding
            m = [1.0] * n + [0.0] * (T - n)
        else:
            m = [float(rng.random() < 0.6) for _ in range(T)]  # arbitrary holes
        w = [rng.random() ** 3 for _ in range(T)]  # skewed
        if rng.random() < 0.2:
            w = [0.0 if rng.random() < 0.7 else x for x in w]  # many exact zeros / ties
        if normalized:
            s = sum(x for x, k in zip(w, m) if k > 0)
            w = [x / s if (k > 0 and s > 0) else 0.0 for x, k in zip(w, m)]
        weights.append(w)
        masks.append(m)
    return weights, masks


@pytest.mark.parametrize("B,T", [(1, 1), (1, 2), (3, 5), (8, 17), (5, 64), (2, 200)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_slow_reference(B, T, seed):
    rng = random.Random(1000 * B + T + seed)
    weights, masks = _random_batch(rng, B, T, normalized=True)
    W = torch.tensor(weights, dtype=torch.float32)
    M = torch.tensor(masks, dtype=torch.float32)
    g = gini(W, M)
    e = effective_token_ratio(W, M)
    assert g.shape == (B,) and e.shape == (B,)
    assert g.dtype == torch.float64 and e.dtype == torch.float64
    for b in range(B):
        # reference on the same float32-rounded values
        wf = [float(x) for x in W[b]]
        rg, re_ = slow_gini(wf, masks[b]), slow_eff(wf, masks[b])
        if math.isnan(rg):
            assert math.isnan(float(g[b])), (b, weights[b], masks[b])
        else:
            assert float(g[b]) == pytest.approx(rg, abs=1e-12, rel=1e-9)
        if math.isnan(re_):
            assert math.isnan(float(e[b]))
        else:
            assert float(e[b]) == pytest.approx(re_, rel=1e-9)


def test_unnormalized_weights_gini_is_scale_free():
    rng = random.Random(5)
    weights, masks = _random_batch(rng, 6, 9, normalized=False)
    W = torch.tensor(weights, dtype=torch.float64)
    M = torch.tensor(masks, dtype=torch.float64)
    g1, g2 = gini(W, M), gini(W * 37.0, M)
    torch.testing.assert_close(g1, g2, equal_nan=True)
    for b in range(6):
        rg = slow_gini(weights[b], masks[b])
        if math.isnan(rg):
            assert math.isnan(float(g1[b]))
        else:
            assert float(g1[b]) == pytest.approx(rg, abs=1e-12)


def test_masked_out_values_ignored():
    # garbage (even negative / huge) at masked-out positions must not change anything
    W = torch.tensor([[0.1, 0.2, 0.7, 5.0, -3.0]])
    M = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    W2 = torch.tensor([[0.1, 0.2, 0.7, 0.0, 0.0]])
    assert torch.equal(gini(W, M), gini(W2, M))
    assert torch.equal(effective_token_ratio(W, M), effective_token_ratio(W2, M))
    # hand value: sorted (0.1, 0.2, 0.7), n = 3: (-2*0.1 + 0*0.2 + 2*0.7) / (3 * 1) = 1.2 / 3 = 0.4
    assert float(gini(W, M)[0]) == pytest.approx(0.4, abs=1e-7)
    # EffN/T = 1 / (3 * (0.01 + 0.04 + 0.49)) = 1 / 1.62
    assert float(effective_token_ratio(W, M)[0]) == pytest.approx(1 / 1.62, rel=1e-6)


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_closed_forms(n):
    T = n + 3
    M = torch.zeros(2, T)
    M[:, :n] = 1
    uni = M / n
    torch.testing.assert_close(gini(uni, M), torch.zeros(2, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(effective_token_ratio(uni, M), torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)
    onehot = torch.zeros(2, T)
    onehot[0, 0] = 1.0
    onehot[1, n - 1] = 1.0
    torch.testing.assert_close(gini(onehot, M), torch.full((2,), (n - 1) / n, dtype=torch.float64))
    torch.testing.assert_close(effective_token_ratio(onehot, M), torch.full((2,), 1 / n, dtype=torch.float64))


def test_undefined_rows_are_nan():
    W = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    M = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    g = gini(W, M)
    e = effective_token_ratio(W, M)
    assert math.isnan(g[0]) and math.isnan(g[1])  # n = 1, n = 0 -> skipped
    assert float(g[2]) == pytest.approx(0.0)
    assert math.isnan(g[3])  # zero total weight
    assert float(e[0]) == pytest.approx(1.0)  # one token, all mass on it: 1 / (1 * 1)
    assert math.isnan(e[1])  # empty mask
    assert float(e[2]) == pytest.approx(1.0)
    assert math.isnan(e[3])


def test_nanmean():
    assert nanmean(torch.tensor([1.0, float("nan"), 3.0])) == pytest.approx(2.0)
    assert nanmean(torch.tensor([float("nan"), float("inf"), 4.0])) == pytest.approx(4.0)
    assert nanmean(torch.tensor([float("nan"), float("nan")])) is None
    assert nanmean(torch.tensor([])) is None
    out = nanmean(torch.tensor([0.25], dtype=torch.float64))
    assert isinstance(out, float) and out == 0.25


def test_detached_and_no_grad_needed():
    W = torch.tensor([[0.2, 0.3, 0.5]], requires_grad=True)
    M = torch.ones(1, 3)
    assert not gini(W, M).requires_grad
    assert not effective_token_ratio(W, M).requires_grad
