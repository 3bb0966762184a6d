"""GRPO pieces of the author's code: group-normalized advantages and the token-weighted loss.

On-policy REINFORCE with group-normalized advantages: no importance ratio, no clipping, no KL.
"""

from __future__ import annotations

import torch

STD_FLOOR = 1e-8


def group_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """A_i = (R_i - mean(R)) / max(std(R), 1e-8) within each group of K completions.

    ``rewards`` is [N] in prompt-major order (the K samples of a prompt are adjacent); std is the
    unbiased (n - 1) one, so a group whose rewards are all equal gets A = 0. Returns [N].
    """
    if rewards.numel() % k != 0:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of K={k}")
    r = rewards.to(torch.float32).view(-1, k)  # [G, K]
    mean = r.mean(dim=1, keepdim=True)  # [G, 1]
    std = r.std(dim=1, unbiased=True, keepdim=True).clamp(min=STD_FLOOR)  # [G, 1]
    return ((r - mean) / std).view(-1)  # [N]


def weighted_pg_loss(
    logprobs: torch.Tensor,
    weights: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    n_total: int | None = None,
) -> torch.Tensor:
    """Loss = -(1/N) sum_i A_i * sum_t w_it * log pi_theta(y_it) * m_it.

    ``logprobs`` [B, T] carries the gradient; ``weights`` [B, T] and ``advantages`` [B] are
    detached. ``n_total`` is N, the number of completions in the whole optimizer step, so that
    micro-batch losses add up to the step's mean (gradient accumulation).
    """
    n = n_total if n_total is not None else logprobs.shape[0]
    # where() rather than a product: a non-finite log-prob on a masked-out position must not
    # turn the loss into NaN (0 * inf = NaN).
    lp = torch.where(mask > 0, logprobs, torch.zeros_like(logprobs))  # [B, T]
    per_seq = (weights.detach() * lp * mask).sum(dim=1)  # [B]
    return -(advantages.detach() * per_seq).sum() / n
