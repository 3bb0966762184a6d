"""GRPO advantages and the token-weighted policy-gradient loss (arca.grpo)."""

from __future__ import annotations

import pytest
import torch

from arca.credit import CreditInputs, token_weights
from arca.grpo import group_advantages, weighted_pg_loss


# ----------------------------------------------------------------------------- advantages
def test_advantage_hand_case():
    # rewards (1, 0, 0, 0): mean 0.25; deviations (0.75, -0.25, -0.25, -0.25);
    # unbiased var = (0.5625 + 3 * 0.0625) / 3 = 0.25 -> std 0.5 -> A = (1.5, -0.5, -0.5, -0.5)
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    torch.testing.assert_close(a, torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_advantage_two_correct():
    # (1, 1, 0, 0): mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.57735 -> +-0.866025
    a = group_advantages(torch.tensor([1.0, 1.0, 0.0, 0.0]), 4)
    s = (1 / 3) ** 0.5
    torch.testing.assert_close(a, torch.tensor([0.5 / s, 0.5 / s, -0.5 / s, -0.5 / s]))


@pytest.mark.parametrize("value", [0.0, 1.0, 0.3])
def test_all_equal_group_gives_zero(value):
    a = group_advantages(torch.full((4,), value), 4)
    assert torch.equal(a, torch.zeros(4))


def test_groups_independent_and_prompt_major():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    a = group_advantages(r, 4)
    torch.testing.assert_close(a[:4], torch.tensor([1.5, -0.5, -0.5, -0.5]))
    assert torch.equal(a[4:8], torch.zeros(4))
    torch.testing.assert_close(a[8:], torch.tensor([-0.5, -0.5, -0.5, 1.5]))
    # changing one group leaves the others alone
    r2 = r.clone()
    r2[4] = 0.0
    a2 = group_advantages(r2, 4)
    assert torch.equal(a2[:4], a[:4]) and torch.equal(a2[8:], a[8:])
    assert not torch.equal(a2[4:8], a[4:8])


def test_group_of_two():
    # (3, 1): mean 2, unbiased std = sqrt(2) -> (1/sqrt2, -1/sqrt2)
    a = group_advantages(torch.tensor([3.0, 1.0]), 2)
    torch.testing.assert_close(a, torch.tensor([2**-0.5, -(2**-0.5)]))


@pytest.mark.parametrize("n,k", [(5, 4), (3, 2), (7, 4)])
def test_not_divisible_raises(n, k):
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(n), k)


def test_advantage_std_floor():
    # A_i = (R_i - mean) / max(std, 1e-8). Rewards (0, 0, 0, 1e-8): mean 2.5e-9, unbiased std
    # sqrt((3 * 2.5e-9^2 + 7.5e-9^2) / 3) = 5e-9 < 1e-8, so the divisor is 1e-8:
    # A = (-0.25, -0.25, -0.25, 0.75). Dividing by the tiny std itself would give (-0.5, ..., 1.5),
    # by std + 1e-8 = 1.5e-8 it would give (-1/6, ..., 0.5).
    a = group_advantages(torch.tensor([0.0, 0.0, 0.0, 1e-8]), 4)
    torch.testing.assert_close(a, torch.tensor([-0.25, -0.25, -0.25, 0.75]), rtol=1e-5, atol=0)
    # Above the floor the std itself is used: (0, 0, 0, 4e-8) has std 2e-8 -> (-0.5, -0.5, -0.5, 1.5).
    b = group_advantages(torch.tensor([0.0, 0.0, 0.0, 4e-8]), 4)
    torch.testing.assert_close(b, torch.tensor([-0.5, -0.5, -0.5, 1.5]), rtol=1e-5, atol=0)
    # A far smaller spread stays finite (it is divided by 1e-8, not by ~5e-13).
    c = group_advantages(torch.tensor([0.0, 0.0, 0.0, 1e-12], dtype=torch.float64), 4)
    torch.testing.assert_close(c, torch.tensor([-2.5e-5, -2.5e-5, -2.5e-5, 7.5e-5]), rtol=1e-4, atol=0)


# ----------------------------------------------------------------------------- loss
def slow_loss(logprobs, weights, mask, adv, n_total=None):
    """-(1/N) sum_i A_i * sum_t w_it * lp_it * m_it with explicit Python loops."""
    B, T = logprobs.shape
    n = B if n_total is None else n_total
    total = torch.zeros((), dtype=logprobs.dtype)
    for i in range(B):
        s = torch.zeros((), dtype=logprobs.dtype)
        for j in range(T):
            s = s + weights[i, j] * logprobs[i, j] * mask[i, j]
        total = total + adv[i] * s
    return -total / n


def _case(seed=0, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    lp = (-torch.rand(B, T, generator=g) * 4).requires_grad_(True)
    mask = torch.stack([(torch.arange(T) < n).float() for n in torch.randint(0, T + 1, (B,), generator=g)])
    w = torch.rand(B, T, generator=g) * mask
    w = w / w.sum(1, keepdim=True).clamp(min=1e-9)
    adv = torch.randn(B, generator=g)
    return lp, w, mask, adv


def test_loss_hand_value():
    # one sequence: A = 2, w = (0.25, 0.75), lp = (-1, -2) -> sum = -0.25 - 1.5 = -1.75;
    # loss = -(2 * -1.75) / 1 = 3.5. Second sequence masked at t=1 (lp there ignored).
    lp = torch.tensor([[-1.0, -2.0], [-4.0, -100.0]])
    w = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    m = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([2.0, -0.5])
    # row 2: A = -0.5, sum = -4 -> contributes -(-0.5 * -4) = -2; mean over N = 2: (3.5 - 2) / 2
    loss = weighted_pg_loss(lp, w, m, adv)
    assert float(loss) == pytest.approx(0.75)
    assert float(weighted_pg_loss(lp, w, m, adv, n_total=5)) == pytest.approx(1.5 / 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_slow_loop_value_and_grad(seed):
    lp, w, mask, adv = _case(seed)
    fast = weighted_pg_loss(lp, w, mask, adv)
    (g_fast,) = torch.autograd.grad(fast, lp)
    slow = slow_loss(lp, w, mask, adv)
    (g_slow,) = torch.autograd.grad(slow, lp)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(g_fast, g_slow)
    # d loss / d lp_it = -A_i * w_it * m_it / N
    torch.testing.assert_close(g_fast, -(adv[:, None] * w * mask) / lp.shape[0])


def test_micro_batch_accumulation_equals_full_batch():
    lp, w, mask, adv = _case(seed=3, B=8, T=5)
    full = weighted_pg_loss(lp, w, mask, adv)
    (g_full,) = torch.autograd.grad(full, lp)
    total = torch.zeros(())
    for s in range(0, 8, 3):  # micro-batches of 3, 3, 2
        total = total + weighted_pg_loss(lp[s : s + 3], w[s : s + 3], mask[s : s + 3], adv[s : s + 3], n_total=8)
    (g_acc,) = torch.autograd.grad(total, lp)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(g_acc, g_full)
    # the same with backward() accumulation into .grad, as the training loop does
    lp2 = lp.detach().clone().requires_grad_(True)
    for s in range(0, 8, 3):
        weighted_pg_loss(lp2[s : s + 3], w[s : s + 3], mask[s : s + 3], adv[s : s + 3], n_total=8).backward()
    torch.testing.assert_close(lp2.grad, g_full)


def test_gradient_only_through_logprobs():
    lp, w, mask, adv = _case(seed=4)
    w = w.clone().requires_grad_(True)
    adv = adv.clone().requires_grad_(True)
    loss = weighted_pg_loss(lp, w, mask, adv)
    loss.backward()
    assert lp.grad is not None and lp.grad.abs().sum() > 0
    assert w.grad is None
    assert adv.grad is None


def test_loss_with_credit_weights_end_to_end():
    # weights from token_weights of inputs that require grad: still no gradient into them
    B, T = 4, 5
    lp = (-torch.rand(B, T) * 2 - 0.1).requires_grad_(True)
    mask = torch.ones(B, T)
    w, _ = token_weights("surprisal", CreditInputs(mask=mask, logprobs=lp))
    assert not w.requires_grad
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    loss = weighted_pg_loss(lp, w, mask, adv)
    (g,) = torch.autograd.grad(loss, lp)
    torch.testing.assert_close(g, -(adv[:, None] * w) / B)


def test_zero_advantages_zero_loss_and_grad():
    lp, w, mask, _ = _case(seed=5)
    loss = weighted_pg_loss(lp, w, mask, torch.zeros(lp.shape[0]))
    (g,) = torch.autograd.grad(loss, lp)
    assert float(loss.detach()) == 0.0
    assert torch.all(g == 0)
