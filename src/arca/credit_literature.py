"""Token statistics of credit methods from the literature, as pure functions on tensors.

``arca.credit`` wraps each in a signal function and registers it; this module knows nothing of the
registry. Every function returns a non-negative per-token signal alpha [B, T] (or the statistic it
is built from), so that the registry's normalization turns it into weights that multiply the
sequence advantage (docs/method.md, "Methods from the literature").
"""

from __future__ import annotations

import math

import torch


# ----------------------------------------------------------------------------- KTAE
def binary_entropy(p: float) -> float:
    """H(p) = -p log2 p - (1-p) log2 (1-p), in bits; H(0) = H(1) = 0."""
    return -sum(q * math.log2(q) for q in (p, 1.0 - p) if q > 0.0)


def fisher_exact_p(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test for the 2x2 table [[a, b], [c, d]].

    Under fixed margins the top-left cell is hypergeometric; p sums the probabilities of every
    table no more probable than the observed one (with a relative tolerance for rounding).
    """
    row1, col1, n = a + b, a + c, a + b + c + d

    def prob(x: int) -> float:
        return math.comb(col1, x) * math.comb(n - col1, row1 - x) / math.comb(n, row1)

    observed = prob(a)
    lo, hi = max(0, row1 + col1 - n), min(row1, col1)
    return min(1.0, sum(p for p in map(prob, range(lo, hi + 1)) if p <= observed * (1 + 1e-9)))


def key_token_score(a: int, b: int, n_pos: int, n_neg: int) -> float:
    """k(v) = dir(v) * IG(v) / H(R) * (1 - p_Fisher(v)) in [-1, 1] for a token id v of one group.

    a (b) = correct (incorrect) rollouts of the group that contain v, n_pos (n_neg) = correct
    (incorrect) rollouts. IG(v) = H(R) - sum over {contains v, lacks v} of P(part) H(R | part) is the
    information that v's presence carries about correctness R; dir(v) = sign(a / n_pos - b / n_neg)
    says which outcome v goes with; Fisher's exact test on the table [[a, b], [n_pos - a, n_neg - b]]
    discounts associations a group this small can show by chance. 0 when the group has no contrast.
    """
    n = n_pos + n_neg
    if n_pos == 0 or n_neg == 0:
        return 0.0
    h_r = binary_entropy(n_pos / n)
    with_v, without_v = a + b, n - a - b
    h_cond = sum(
        part / n * binary_entropy(pos / part) for part, pos in ((with_v, a), (without_v, n_pos - a)) if part > 0
    )
    ig = max(0.0, h_r - h_cond)
    direction = math.copysign(1.0, a / n_pos - b / n_neg) if a / n_pos != b / n_neg else 0.0
    return direction * ig / h_r * (1.0 - fisher_exact_p(a, b, n_pos - a, n_neg - b))


def ktae_scores(
    token_ids: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    """k(y_t) [B, T] of every real token from the 2x2 tables of its group (``key_token_score``).

    A rollout counts as correct when its reward > 0.5 (the graders give 0 or 1); a token id
    "occurs" in a rollout when it is among the rollout's real tokens. Masked positions get 0.
    """
    out = torch.zeros(mask.shape, dtype=torch.float64)  # [B, T]
    ids, m = token_ids.cpu(), mask.cpu() > 0
    correct = (rewards.cpu() > 0.5).tolist()
    g = groups.cpu().tolist()
    for group in sorted(set(g)):
        rows = [i for i in range(len(g)) if g[i] == group]
        present = {i: set(ids[i][m[i]].tolist()) for i in rows}
        n_pos = sum(correct[i] for i in rows)
        n_neg = len(rows) - n_pos
        vocab = set().union(*present.values())
        score = {
            v: key_token_score(
                sum(v in present[i] for i in rows if correct[i]),
                sum(v in present[i] for i in rows if not correct[i]),
                n_pos,
                n_neg,
            )
            for v in vocab
        }
        for i in rows:
            for t in torch.nonzero(m[i]).flatten().tolist():
                out[i, t] = score[int(ids[i, t])]
    return out.to(mask.device)


def ktae_alpha(scores: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """alpha_t = max(0, 1 + sign(A_i) k(y_t)): the token-level advantage A_i (1 + sign(A_i) k) as a weight.

    Tokens that go with the rollout's own outcome carry up to twice the uniform share of A_i,
    tokens that go with the other outcome down to none; A_i = 0 leaves the row uniform.
    """
    sign = torch.sign(advantages.to(scores.dtype)).unsqueeze(1)  # [B, 1]
    return (1.0 + sign * scores).clamp(min=0.0) * (mask > 0)  # [B, T]


# ----------------------------------------------------------------------------- Clip-Cov
def token_covariance(logprobs: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Cov_t = (log pi(y_t) - mean log pi) (A_i - mean A), means over the batch's real tokens; [B, T].

    The per-token term whose batch mean is the covariance between log-probability and advantage,
    which drives the policy entropy down (Cui et al. 2025). Masked positions get 0.
    """
    m = (mask > 0).to(torch.float64)  # [B, T]
    lp = logprobs.to(torch.float64)
    adv = advantages.to(torch.float64).unsqueeze(1).expand_as(lp)  # [B, T]
    n = m.sum().clamp(min=1.0)
    lp_mean = (lp * m).sum() / n
    adv_mean = (adv * m).sum() / n
    return (lp - lp_mean) * (adv - adv_mean) * m  # [B, T]


def clip_cov_alpha(cov: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """alpha_t = 0 on the ceil(fraction * M) real tokens of highest Cov_t (M = real tokens), else 1.

    Ties at the threshold are broken by position (row-major), so exactly that many are cut.
    """
    real = mask > 0  # [B, T]
    alpha = real.to(torch.float64)  # [B, T]
    n_cut = min(int(real.sum()), math.ceil(fraction * int(real.sum())))
    if n_cut == 0:
        return alpha
    flat = torch.where(real, cov.to(torch.float64), torch.full_like(alpha, -math.inf)).flatten()  # [B*T]
    order = sorted(range(flat.numel()), key=lambda k: (-float(flat[k]), k))[:n_cut]
    alpha.view(-1)[torch.tensor(order, dtype=torch.long)] = 0.0
    return alpha  # [B, T]


# ----------------------------------------------------------------------------- spans and values
def span_alpha(drop: torch.Tensor, mask: torch.Tensor, inverted: bool = False) -> torch.Tensor:
    """alpha_t = 1 + d_t / mean(d) over the row's real tokens, d_t = max(0, drop of y_t's span).

    ``drop`` [B, T] is, for each token, how much masking its span lowers the answer's log-prob. A
    row with no positive drop is uniform. ``inverted`` (the control) uses d'_t = max d + min d - d_t,
    the same spread with the order of importance reversed.
    """
    m = mask > 0  # [B, T]
    d = drop.to(torch.float64).clamp(min=0.0) * m  # [B, T]
    if inverted:
        big = torch.where(m, d, torch.full_like(d, -math.inf)).amax(dim=1, keepdim=True)  # [B, 1]
        small = torch.where(m, d, torch.full_like(d, math.inf)).amin(dim=1, keepdim=True)  # [B, 1]
        d = torch.where(m, big + small - d, torch.zeros_like(d))
    mean = d.sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1]
    return torch.where(mean > 0, 1.0 + d / mean.clamp(min=1e-300), torch.ones_like(d)) * m  # [B, T]


def value_step_alpha(step_values: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """alpha_t = max(0, sign(A_i) (V_after - V_before)) of y_t's segment (VinePPO's step advantage).

    Segments whose Monte Carlo value change agrees with the rollout's outcome carry A_i in
    proportion to that change; segments that moved the other way get none.
    """
    sign = torch.sign(advantages.to(torch.float64)).unsqueeze(1)  # [B, 1]
    return (sign * step_values.to(torch.float64)).clamp(min=0.0) * (mask > 0)  # [B, T]
