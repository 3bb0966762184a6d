"""Concentration diagnostics of token weights: Gini and the effective-token ratio (PAPER.md).

Both are per sequence over the masked tokens, vectorized; rows they are undefined for come back
as NaN so that averages skip them (``nanmean``).
"""
from __future__ import annotations

import torch


def gini(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gini coefficient per row: G = sum_j (2j - n - 1) w_(j) / (n * sum_j w_(j)).

    w_(1..n) are the masked weights sorted ascending. Uniform weights give 0; all mass on one of
    n tokens gives (n - 1) / n. Rows with n <= 1 or zero total weight are NaN (skipped).
    Returns [B] float64.
    """
    m = mask > 0  # [B, T]
    w = torch.where(m, weights.detach().to(torch.float64), torch.full_like(weights, -1.0, dtype=torch.float64))
    w_sorted, _ = torch.sort(w, dim=1)  # [B, T] masked-out (-1) entries first
    T = w.shape[1]
    n = m.sum(dim=1, keepdim=True).to(torch.float64)  # [B, 1]
    pos = torch.arange(1, T + 1, dtype=torch.float64, device=w.device).expand_as(w_sorted)  # [B, T]
    j = pos - (T - n)  # [B, T] rank among the masked entries (<= 0 for masked-out ones)
    valid = j >= 1
    vals = torch.where(valid, w_sorted, torch.zeros_like(w_sorted))  # [B, T]
    coef = torch.where(valid, 2 * j - n - 1, torch.zeros_like(j))  # [B, T]
    total = vals.sum(dim=1)  # [B]
    g = (coef * vals).sum(dim=1) / (n.squeeze(1) * total)  # [B]
    ok = (n.squeeze(1) > 1) & (total > 0)
    return torch.where(ok, g, torch.full_like(g, float("nan")))


def effective_token_ratio(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """EffN/T = 1 / (T * sum_t w_t^2) per row, T the masked length (weights sum to 1 per row).

    Uniform gives 1, one-hot gives 1/T. Rows with an empty mask are NaN. Returns [B] float64.
    """
    m = (mask > 0).to(torch.float64)  # [B, T]
    w = weights.detach().to(torch.float64) * m  # [B, T]
    T = m.sum(dim=1)  # [B]
    sq = (w * w).sum(dim=1)  # [B]
    ok = (T > 0) & (sq > 0)
    return torch.where(ok, 1.0 / (T * sq.clamp(min=1e-300)), torch.full_like(sq, float("nan")))


def nanmean(x: torch.Tensor) -> float | None:
    """Mean over the finite entries, or None when there are none (JSON null)."""
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else None
