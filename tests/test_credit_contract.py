"""The gradient-effect contract of every registered credit method (parametrized over the registry).

A method's weights must reach the gradient: for the policy-gradient loss the derivative with
respect to log pi(y_t) is -A_i w_it / N on real tokens, exactly 0 where the weight is 0 and on
masked-out tokens, and the weights obey the normalization rule. A new registry entry is covered
without touching this file.
"""

from __future__ import annotations

import pytest
import torch

from arca import credit
from arca.grpo import weighted_pg_loss

B, T, H = 6, 9, 5


def _inputs(seed: int = 0) -> credit.CreditInputs:
    g = torch.Generator().manual_seed(seed)
    lengths = [9, 7, 5, 9, 3, 6]
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])  # [B, T]
    decisive = torch.zeros(B, T)
    decisive[0, 2] = decisive[1, 4] = decisive[3, 1] = 1.0
    first_error = torch.zeros(B, T)
    first_error[1, 3] = first_error[2, 1] = 1.0
    hidden = torch.randn(B, T, H, generator=g)
    return credit.CreditInputs(
        mask=mask,
        logprobs=-torch.rand(B, T, generator=g) * 3,
        entropies=torch.rand(B, T, generator=g) * 2,
        ref_logprobs=-torch.rand(B, T, generator=g) * 3,
        hidden=hidden,
        base_hidden=hidden + 0.3 * torch.randn(B, T, H, generator=g),
        lora_delta=0.3 * torch.randn(B, T, H, generator=g),
        step_entropies=torch.rand(40, generator=g) * 2,
        decisive=decisive,
        first_error=first_error,
        seed=seed,
        # the group structure and the extra passes' outputs (arca.credit_passes): groups of 3 rows
        token_ids=torch.randint(0, 6, (B, T), generator=g),
        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]),
        advantages=torch.tensor([1.15, -0.58, -0.58, 0.58, 0.58, -1.15]),
        groups=torch.tensor([0, 0, 0, 1, 1, 1]),
        saliency=torch.rand(B, T, generator=g),
        span_drop=torch.randn(B, T, generator=g),
        step_values=torch.randn(B, T, generator=g) * 0.3,
    )


def _reference_grad(w: torch.Tensor, mask: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """d loss / d log pi(y_it), written as a slow loop from the formula."""
    out = torch.zeros(B, T, dtype=torch.float64)
    for i in range(B):
        for t in range(T):
            if mask[i, t] > 0:
                out[i, t] = -float(adv[i]) * float(w[i, t]) / B
    return out


def _check_contract(method: str, loss_fn) -> None:
    x = _inputs()
    w, _ = credit.token_weights(method, x)  # [B, T]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    lp = x.logprobs.clone().to(torch.float64).requires_grad_(True)  # [B, T] the policy's log-probs
    loss_fn(lp, w.to(torch.float64), x.mask, adv).backward()
    grad = lp.grad  # [B, T]
    assert torch.allclose(grad, _reference_grad(w, x.mask, adv), atol=1e-12, rtol=0), method
    assert torch.all(grad[x.mask == 0] == 0), "masked tokens must get no gradient"
    assert torch.all(grad[(w == 0) & (x.mask > 0)] == 0), "a token of weight 0 must get no gradient"
    assert torch.all(w[x.mask == 0] == 0)
    sums = w.sum(dim=1)  # [B] sum_to_one: each row's weights sum to 1 over its real tokens
    assert torch.allclose(sums, torch.ones(B, dtype=sums.dtype), atol=1e-9), (method, sums)


@pytest.mark.parametrize("method", sorted(credit.REGISTRY))
def test_every_registered_method_reaches_the_gradient(method):
    _check_contract(method, weighted_pg_loss)


def test_the_contract_catches_weights_that_never_reach_the_gradient():
    def detached_loss(lp, w, mask, adv):  # a bug: the weights are applied to a detached copy
        per_seq = (w * lp.detach() * mask).sum(dim=1) + 0.0 * lp.sum(dim=1)
        plain = (lp * mask).sum(dim=1) / mask.sum(dim=1)  # the gradient is uniform's
        return -(adv * (per_seq + plain)).sum() / lp.shape[0]

    with pytest.raises(AssertionError):
        _check_contract("surprisal", detached_loss)
