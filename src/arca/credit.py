"""Token-credit methods: one signature, one registry.

A credit method is a *signal* function ``CreditInputs -> alpha [B, T]`` (raw, non-negative
salience of each completion token, read at the position whose output predicts y_t) registered in
``REGISTRY`` with the per-token quantities it needs. ``token_weights`` turns any signal into the
weights the loss uses, exactly as the author's code (PAPER.md, "From signal to token weights"):

    score_t = (alpha_t + eps) ** s                         (s = ``credit.sharpen``, default 2.0)
    w_t     = score_t * m_t / sum_k score_k * m_k          (uniform over the mask if the sum <= eps)

so every row of weights sums to 1 over its mask (0 for an empty mask) and is detached.

To add a method, write one function and register it::

    def my_signal(x: CreditInputs) -> torch.Tensor:          # [B, T]
        return x.logprobs.exp()
    REGISTRY["my_method"] = CreditMethod(my_signal, needs=frozenset(), doc="p(y_t)")

``needs`` may hold ``"entropies"``, ``"ref_logprobs"`` and ``"hidden"`` (adapted and base final
hidden states); the training loop computes only what the method asks for, and runs the single
adapter-off pass only when ``ref_logprobs`` or ``hidden`` is needed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

ENTROPIES = "entropies"
REF_LOGPROBS = "ref_logprobs"
HIDDEN = "hidden"
# What needs the adapter-off (reference) forward pass.
NEEDS_REFERENCE_PASS = frozenset({REF_LOGPROBS, HIDDEN})


@dataclass
class CreditInputs:
    """Per-token inputs of a credit signal, aligned with the completion tokens y_1..y_T.

    Index t of every tensor refers to token y_t and holds the quantity read at the position that
    predicts y_t (the position of y_{t-1}; the last prompt token for t = 1). All are detached.
    """

    mask: torch.Tensor  # [B, T] 1.0 on real completion tokens, 0.0 on padding / after EOS
    logprobs: torch.Tensor  # [B, T] log pi_theta(y_t), adapter on
    entropies: torch.Tensor | None = None  # [B, T] H_t of pi_theta(. | y_<t)
    ref_logprobs: torch.Tensor | None = None  # [B, T] log pi_ref(y_t), adapter off
    hidden: torch.Tensor | None = None  # [B, T, H] final hidden state (input to lm_head), adapter on
    base_hidden: torch.Tensor | None = None  # [B, T, H] the same, adapter off
    seed: int = 0  # for methods with randomness (the permutation control)


def _require(x: torch.Tensor | None, name: str, method: str) -> torch.Tensor:
    if x is None:
        raise ValueError(f"credit method '{method}' needs '{name}' but it was not computed")
    return x


def uniform_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = 1: every completion token gets w_t = 1 / T (T = masked length)."""
    return torch.ones_like(x.mask)  # [B, T]


def surprisal_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = -log pi_theta(y_t | y_<t), under the current (adapted) policy."""
    return -x.logprobs  # [B, T]


def entropy_reduction_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = max(0, H_t - H_{t+1}); 0 for the last completion token.

    H_t is the entropy of the distribution that predicts y_t. "Last" is the last token inside
    the mask, so a padded row's last real token also gets 0.
    """
    h = _require(x.entropies, ENTROPIES, "entropy_reduction")  # [B, T]
    h_next = torch.zeros_like(h)
    h_next[:, :-1] = h[:, 1:]  # [B, T] H_{t+1}
    has_next = torch.zeros_like(x.mask)
    has_next[:, :-1] = x.mask[:, 1:]  # [B, T] 1 where y_{t+1} is a real token
    return torch.clamp(h - h_next, min=0.0) * has_next  # [B, T]


def divergence_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = | log pi_theta(y_t) - log pi_ref(y_t) |, pi_ref = the model with the adapter off."""
    ref = _require(x.ref_logprobs, REF_LOGPROBS, "divergence")
    return (x.logprobs - ref).abs()  # [B, T]


def arca_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = || h_adapted_t - h_base_t ||_2, final hidden states (after the last norm).

    Both are read at the position that predicts y_t; adapted = adapter on, base = adapter off.
    """
    h = _require(x.hidden, HIDDEN, "arca")  # [B, T, H]
    hb = _require(x.base_hidden, HIDDEN, "arca")  # [B, T, H]
    return torch.linalg.vector_norm((h - hb).float(), dim=-1)  # [B, T]


def arca_permuted_signal(x: CreditInputs) -> torch.Tensor:
    """Control: ARCA's alpha randomly permuted among the masked positions of each sequence.

    Same weight distribution (Gini, EffN/T) as ARCA, no positional information. The permutation
    is drawn from ``torch.Generator`` seeded with ``x.seed``.
    """
    alpha = arca_signal(x)  # [B, T]
    gen = torch.Generator().manual_seed(int(x.seed))
    out = alpha.clone()
    for b in range(alpha.shape[0]):
        idx = torch.nonzero(x.mask[b] > 0, as_tuple=False).flatten()  # [n_b]
        perm = idx[torch.randperm(idx.numel(), generator=gen)]
        out[b, idx] = alpha[b, perm.to(alpha.device)]
    return out


@dataclass(frozen=True)
class CreditMethod:
    """A registered credit method: its signal function and the inputs it needs."""

    signal: Callable[[CreditInputs], torch.Tensor]
    needs: frozenset[str] = field(default_factory=frozenset)
    doc: str = ""

    @property
    def needs_reference_pass(self) -> bool:
        return bool(self.needs & NEEDS_REFERENCE_PASS)


REGISTRY: dict[str, CreditMethod] = {
    "uniform": CreditMethod(uniform_signal, frozenset(), "w_t = 1/T"),
    "surprisal": CreditMethod(surprisal_signal, frozenset(), "-log pi(y_t)"),
    "entropy_reduction": CreditMethod(entropy_reduction_signal, frozenset({ENTROPIES}), "max(0, H_t - H_{t+1})"),
    "divergence": CreditMethod(divergence_signal, frozenset({REF_LOGPROBS}), "|log pi(y_t) - log pi_ref(y_t)|"),
    "arca": CreditMethod(arca_signal, frozenset({HIDDEN}), "||h_adapted_t - h_base_t||_2"),
    "arca_permuted": CreditMethod(arca_permuted_signal, frozenset({HIDDEN}), "ARCA's alpha permuted within each sequence"),
}

# The methods of the paper (the rest are controls this project adds).
PAPER_METHODS = ("uniform", "surprisal", "entropy_reduction", "divergence", "arca")


def normalize(alpha: torch.Tensor, mask: torch.Tensor, sharpen: float = 2.0, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha + eps)^s, masked and normalized per row; uniform fall-back when the sum <= eps.

    Returns ``(weights [B, T], fallback [B] bool)``. Non-finite signals are made finite first
    (NaN -> 0, +inf -> a large finite value) so that weights are always finite; computed in
    float64 so squaring large signals cannot overflow.
    """
    m = (mask > 0).to(torch.float64)  # [B, T]
    a = torch.nan_to_num(alpha.detach().to(torch.float64), nan=0.0, posinf=1e100, neginf=0.0).clamp(min=0.0, max=1e100)
    score = torch.nan_to_num((a + eps) ** sharpen, nan=0.0, posinf=1e300) * m  # [B, T]
    total = score.sum(dim=1, keepdim=True)  # [B, 1]
    n = m.sum(dim=1, keepdim=True)  # [B, 1]
    fallback = (total <= eps).squeeze(1) & (n.squeeze(1) > 0)  # [B]
    w = torch.where(total > eps, score / total.clamp(min=eps), m / n.clamp(min=1.0))  # [B, T]
    return w.to(alpha.dtype if alpha.is_floating_point() else torch.float32), fallback


def token_weights(method: str, inputs: CreditInputs, sharpen: float = 2.0, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [B, T] (detached, rows sum to 1 over the mask) and the fall-back flags [B]."""
    if method not in REGISTRY:
        raise ValueError(f"unknown credit method {method!r} (known: {sorted(REGISTRY)})")
    with torch.no_grad():
        alpha = REGISTRY[method].signal(inputs)  # [B, T]
        return normalize(alpha, inputs.mask, sharpen, eps)
