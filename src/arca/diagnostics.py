"""Concentration diagnostics of token weights: Gini and the effective-token ratio (docs/method.md).

Both are per sequence over the masked tokens, vectorized; rows they are undefined for come back
as NaN so that averages skip them (``nanmean``).
"""

from __future__ import annotations

import math

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


# ----------------------------------------------------------------------------- credit precision
# Against the planted forks' labels (``arca.labels``): how much of a sequence's credit lands on
# the tokens that decided its outcome. ``labels`` is a [B, T] 0/1 mask of decisive (or distractor)
# tokens; rows are the aligned completions of a step, the weights sum to 1 over each row's mask.
def label_share(weights: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of a row's weight on its labelled tokens: sum_t w_t l_t m_t / sum_t w_t m_t. [B] float64.

    Rows with no labelled token or no weight are NaN (skipped by ``nanmean``).
    """
    m = (mask > 0).to(torch.float64)  # [B, T]
    lab = (labels > 0).to(torch.float64) * m  # [B, T]
    w = weights.detach().to(torch.float64) * m  # [B, T]
    total = w.sum(dim=1)  # [B]
    share = (w * lab).sum(dim=1) / total.clamp(min=1e-300)  # [B]
    ok = (lab.sum(dim=1) > 0) & (total > 0)
    return torch.where(ok, share, torch.full_like(share, float("nan")))


def uniform_label_share(mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What uniform weights give: (number of labelled tokens) / T per row. [B] float64, NaN as above."""
    return label_share(torch.ones_like(mask, dtype=torch.float64), mask, labels)


def label_auroc(weights: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the probability that a labelled token outweighs an unlabelled one (ties count 1/2).

    AUROC of the weights as a score separating the labelled from the other real tokens of the
    same sequence (within a row, so that sequence length does not enter): uniform gives 0.5,
    all weight on the labelled tokens 1.0. Rows without both kinds of token are NaN. [B] float64.
    """
    m = mask > 0  # [B, T]
    pos = (labels > 0) & m  # [B, T]
    neg = ~(labels > 0) & m  # [B, T]
    w = weights.detach().to(torch.float64)  # [B, T]
    diff = w[:, :, None] - w[:, None, :]  # [B, T, T]: w_i - w_j
    score = (diff > 0).to(torch.float64) + 0.5 * (diff == 0).to(torch.float64)  # [B, T, T]
    pair = pos[:, :, None] & neg[:, None, :]  # [B, T, T]: i labelled, j not
    n_pairs = pair.sum(dim=(1, 2)).to(torch.float64)  # [B]
    auc = (score * pair).sum(dim=(1, 2)) / n_pairs.clamp(min=1)  # [B]
    return torch.where(n_pairs > 0, auc, torch.full_like(auc, float("nan")))


def credit_precision(
    weights: torch.Tensor,
    mask: torch.Tensor,
    decisive: torch.Tensor,
    distractor: torch.Tensor,
    advantages: torch.Tensor,
    aligned: torch.Tensor,
) -> dict[str, float | None]:
    """The credit-precision metrics of one batch of aligned completions (means over rows, None if none).

    ``decisive_share`` / ``distractor_share``: weight on the decisive / distractor fork tokens;
    ``*_uniform``: the same rows under uniform weights (the reference the report divides by);
    ``_pos`` / ``_neg``: rows with positive / negative advantage; ``decisive_auroc``: within-row
    AUROC of the weights for decisive against all other tokens.
    """
    keep = aligned.bool()  # [B]
    W, M, D, X, A = weights[keep], mask[keep], decisive[keep], distractor[keep], advantages[keep].to(torch.float64)
    dec, dec_u = label_share(W, M, D), uniform_label_share(M, D)  # [b]
    dis, dis_u = label_share(W, M, X), uniform_label_share(M, X)  # [b]
    pos, neg = A > 0, A < 0
    return {
        "decisive_share": nanmean(dec),
        "decisive_share_uniform": nanmean(dec_u),
        "decisive_share_pos": nanmean(dec[pos]),
        "decisive_share_pos_uniform": nanmean(dec_u[pos]),
        "decisive_share_neg": nanmean(dec[neg]),
        "decisive_share_neg_uniform": nanmean(dec_u[neg]),
        "decisive_auroc": nanmean(label_auroc(W, M, D)),
        "distractor_share": nanmean(dis),
        "distractor_share_uniform": nanmean(dis_u),
    }


# ----------------------------------------------------------------------------- Monte Carlo agreement
# Against the Monte Carlo token advantages of ``arca.mc_values``: |A_t| = |V_t - V_{t-1}| is how much
# writing token t changed the base model's chance of success; a precise credit method follows it.
def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), 1-based; x is 1-D."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for v in torch.unique(x):
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors; 0 when either is constant (no ranking at all)."""
    ra, rb = _ranks(a.to(torch.float64)), _ranks(b.to(torch.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else 0.0


def mc_agreement(weights: torch.Tensor, mask: torch.Tensor, abs_adv: torch.Tensor, top_frac: float = 0.1) -> dict:
    """How a method's weights follow |A_t| (means over rows that have Monte Carlo values).

    ``mc_spearman``: rank correlation of w_t with |A_t| over a row's real tokens; ``mc_top_share``:
    weight on the row's ceil(top_frac * n) tokens of largest |A_t|; ``mc_top_share_uniform``: what
    uniform weights put there. ``abs_adv`` is [B, T] with NaN on rows without values.
    """
    rho, top, top_u = [], [], []
    for w, m, a in zip(weights.to(torch.float64), mask > 0, abs_adv.to(torch.float64)):  # [T] each
        n, w, a = int(m.sum()), w[m], a[m]  # the row's real tokens
        if n < 2 or not torch.isfinite(a).all() or bool(a.max() == a.min()):
            continue  # no values, or no token changed the chance of success more than another
        k = max(1, math.ceil(top_frac * n))
        best = torch.argsort(a, descending=True, stable=True)[:k]
        rho.append(spearman(w, a))
        top.append(float(w[best].sum() / w.sum()) if w.sum() > 0 else math.nan)
        top_u.append(k / n)
    return {
        "mc_spearman": _mean_or_none(rho),
        "mc_top_share": _mean_or_none(top),
        "mc_top_share_uniform": _mean_or_none(top_u),
        "mc_rows": len(rho),
    }


def _mean_or_none(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
