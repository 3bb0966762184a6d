"""The lean decoder's sampling: ``generate``'s logits processors and its next-token draw, in its order.

Every step applies EOS suppression while fewer than ``min_new_tokens`` tokens exist, then (sampling
only) temperature, top-k and top-p, then ``argmax`` or one multinomial draw per row, as
``model.generate`` does, so that the same scores give the same tokens under the same seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from arca.config import NonFiniteError


def check_logits(logits: torch.Tensor, token: int) -> None:
    """A model's raw next-token logits must be finite: a NaN would otherwise surface as torch's
    raw multinomial error, or as garbage tokens under greedy decoding."""
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteError(f"sampling: non-finite logits from the model at completion token {token}")


def check_scores(scores: torch.Tensor, token: int) -> None:
    """``generate``'s processed scores: -inf marks filtered tokens; NaN, +inf or a row with no
    token left means the model's logits were not finite."""
    if bool(torch.isnan(scores).any() | torch.isposinf(scores).any() | torch.isneginf(scores).all(dim=-1).any()):
        raise NonFiniteError(f"sampling: non-finite logits from the model at completion token {token}")


def process_scores(
    logits: torch.Tensor,
    n_generated: int,
    greedy: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    min_new_tokens: int,
    eos_mask: torch.Tensor,
) -> torch.Tensor:
    """``generate``'s logits processors, in its order, on next-token logits [B, V] (float32).

    EOS suppression while ``n_generated < min_new_tokens`` (also when greedy); then, for sampling
    only, temperature (when != 1), top-k (when > 0) and top-p (when < 1), each masking with -inf
    and keeping at least one token. ``eos_mask`` [V] is True on the EOS ids.
    """
    scores = logits
    if n_generated < min_new_tokens:
        scores = torch.where(eos_mask, -math.inf, scores)  # [B, V]
    if greedy:
        return scores
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        k = min(top_k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]  # [B, 1] the k-th largest score
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)  # [B, V] ascending
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # [B, V]
        drop = cum <= (1 - top_p)  # the least likely tokens whose mass stays within 1 - top_p
        drop[..., -1:] = 0  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(1, order, drop), -math.inf)
    return scores


def next_tokens(scores: torch.Tensor, greedy: bool) -> torch.Tensor:
    """Argmax, or one multinomial draw per row of softmax(scores): [B, V] -> [B]."""
    if greedy:
        return torch.argmax(scores, dim=-1)
    return torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
