"""Token-credit methods: one signature, one registry.

A credit method is a *signal* function ``CreditInputs -> alpha [B, T]`` (raw, non-negative
salience of each completion token, read at the position whose output predicts y_t) registered in
``REGISTRY`` with the per-token quantities it needs. ``token_weights`` turns any signal into the
weights the loss uses, exactly as the author's code (docs/method.md, "From signal to token weights"):

    score_t = (alpha_t + eps) ** s                         (s = ``credit.sharpen``, default 2.0)
    w_t     = score_t * m_t / sum_k score_k * m_k          (uniform over the mask if the sum <= eps)

so every row of weights sums to 1 over its mask (0 for an empty mask) and is detached.

To add a method, write one function and register it::

    def my_signal(x: CreditInputs) -> torch.Tensor:          # [B, T]
        return x.logprobs.exp()
    REGISTRY["my_method"] = CreditMethod(my_signal, needs=frozenset(), doc="p(y_t)")

``needs`` may hold ``"labels"`` (the planted forks' decisive tokens, for the oracle),
``"entropies"``, ``"step_entropies"`` (the entropies of every real token of the optimizer step, for
batch-level thresholds), ``"ref_logprobs"``, ``"hidden"`` (adapted and base final hidden states) and
``"lora_delta"`` (the summed LoRA outputs into the residual stream, collected by hooks in the
gradient pass); the training loop computes only what the method asks for, and runs the single
adapter-off pass only when ``ref_logprobs`` or ``hidden`` is needed.

The loss may use the weights as they are (``sum_to_one``, the paper) or scaled by the masked
length so that they average 1 over the mask (``mean_one``, see ``loss_weights``); diagnostics
always read the sum-to-one weights.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from arca.config import Config, ConfigError, Normalization, did_you_mean, for_run, make_run_id

ENTROPIES = "entropies"
STEP_ENTROPIES = "step_entropies"
REF_LOGPROBS = "ref_logprobs"
HIDDEN = "hidden"
LORA_DELTA = "lora_delta"
# LoRA target modules whose output is added to the residual stream (Qwen/Llama naming): the
# attention output projection and the MLP down projection. arca_layers sums their LoRA deltas,
# so it requires at least one of them in lora.target_modules.
RESIDUAL_WRITERS = ("o_proj", "down_proj")
LABELS = "labels"  # the planted forks' labels (arca.labels); only the oracles and their controls read them
# What needs the adapter-off (reference) forward pass.
NEEDS_REFERENCE_PASS = frozenset({REF_LOGPROBS, HIDDEN})
# What needs the policy entropies of the gradient pass.
NEEDS_ENTROPIES = frozenset({ENTROPIES, STEP_ENTROPIES})


@dataclass
class CreditInputs:
    """Per-token inputs of a credit signal, aligned with the completion tokens y_1..y_T.

    Index t of every tensor refers to token y_t and holds the quantity read at the position that
    predicts y_t (the position of y_{t-1}; the last prompt token for t = 1). All are detached.
    """

    mask: torch.Tensor  # [B, T] 1.0 on real completion tokens (arca.rollout.completion_mask), else 0.0
    logprobs: torch.Tensor  # [B, T] log pi_theta(y_t), adapter on
    entropies: torch.Tensor | None = None  # [B, T] H_t of pi_theta(. | y_<t)
    ref_logprobs: torch.Tensor | None = None  # [B, T] log pi_ref(y_t), adapter off
    hidden: torch.Tensor | None = None  # [B, T, H] final hidden state (input to lm_head), adapter on
    base_hidden: torch.Tensor | None = None  # [B, T, H] the same, adapter off
    # [B, T, H] sum over layers of the LoRA outputs added to the residual stream (o_proj, down_proj)
    lora_delta: torch.Tensor | None = None
    # [M] entropies of every real token of the optimizer step (all micro-batches); None = this batch's
    step_entropies: torch.Tensor | None = None
    # [B, T] 1.0 on the labelled decisive fork tokens of aligned completions (planted-fork corpus)
    decisive: torch.Tensor | None = None
    # [B, T] 1.0 on the token where the row first leaves every correct solution (planted-fork corpus;
    # an all-zero row wrote a correct solution)
    first_error: torch.Tensor | None = None
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
    """alpha_t = max(0, H_t - H_{t+1}); 0 only in the last column of the padded batch.

    H_t is the entropy of the distribution that predicts y_t. The last real token y_T keeps
    max(0, H_T - H_{T+1}) as in the author's code (docs/method.md, Notation): H_{T+1} belongs to the
    masked column after it (the EOS the author's mask leaves out, or padding) and is read at the
    position of y_T, a real token, so it is well defined. Masked columns get values too; the mask
    removes them in ``token_weights``.
    """
    h = _require(x.entropies, ENTROPIES, "entropy_reduction")  # [B, T]
    alpha = torch.zeros_like(h)
    alpha[:, :-1] = torch.clamp(h[:, :-1] - h[:, 1:], min=0.0)  # [B, T-1] max(0, H_t - H_{t+1})
    return alpha  # [B, T]


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


# Fraction of the step's tokens that entropy_top20 keeps (the "forking tokens" of the 80/20 rule).
TOP_ENTROPY_FRACTION = 0.2


def entropy_top20_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = 1[H_t >= tau], tau = the 80th percentile of H over the real tokens of the step.

    The "forking tokens" baseline: within the optimizer step's whole batch (``step_entropies``,
    or this batch's masked entropies when that is not given), the tokens whose policy entropy is
    in the top 20% get weight and the rest none; after normalization the selected tokens of a
    sequence share its weight equally, and a sequence with none of them falls back to uniform.
    tau is ``torch.quantile`` (linear interpolation), so of n distinct entropies the
    1 + floor(0.2 * (n - 1)) highest are selected (2 of 10; ties at tau are all kept).
    """
    h = _require(x.entropies, ENTROPIES, "entropy_top20")  # [B, T]
    pool = x.step_entropies if x.step_entropies is not None else h[x.mask > 0]  # [M]
    if pool.numel() == 0:
        return torch.zeros_like(h)
    tau = torch.quantile(pool.detach().double().cpu(), 1.0 - TOP_ENTROPY_FRACTION)
    return ((h.double() >= tau.to(h.device)) & (x.mask > 0)).to(h.dtype)  # [B, T]


def arca_layers_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = || sum_l Delta_l(x_t) ||_2, Delta_l = (lora_alpha / r) B_l A_l x_l: zero extra passes.

    The sum runs over the LoRA modules that write into the residual stream (every layer's
    attention output projection and MLP down projection), read at the position that predicts y_t
    from forward hooks in the gradient pass itself. It is ARCA's residual to first order: the
    adapted minus base final hidden state, without propagating each delta through later layers
    and the final norm.
    """
    d = _require(x.lora_delta, LORA_DELTA, "arca_layers")  # [B, T, H]
    return torch.linalg.vector_norm(d.float(), dim=-1)  # [B, T]


def oracle_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = 1[y_t is the row's first error]: the first-error oracle, the ceiling of token credit.

    A failed completion gets all its weight on the first token where it leaves every correct
    solution (the generator knows every branch of a planted-fork problem; a completion that stops
    too early is blamed at its last token, ``arca.labels.first_error``). A completion that wrote a
    correct solution has no such token: its signal sums to 0 and it falls back to uniform weights,
    so a success pushes up its whole text, as under uniform credit. Unlike ``decision_oracle`` it
    never pushes down a correct decision taken before the error.
    """
    e = _require(x.first_error, LABELS, "oracle")  # [B, T]
    return e.to(x.mask.dtype) * (x.mask > 0)  # [B, T]


def oracle_decisive_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = 1[first error] on failed rows, 1[decisive fork token] on rows without an error.

    The first-error oracle with the other choice for successes: a correct completion pushes up only
    its decisions instead of its whole text. Rows with neither label (a success on a problem without
    a decision) fall back to uniform.
    """
    e = _require(x.first_error, LABELS, "oracle_decisive")  # [B, T]
    d = _require(x.decisive, LABELS, "oracle_decisive")  # [B, T]
    failed = e.sum(dim=1, keepdim=True) > 0  # [B, 1]
    return torch.where(failed, e, d).to(x.mask.dtype) * (x.mask > 0)  # [B, T]


def decision_oracle_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = 1 on the labelled decisive fork tokens, 0 elsewhere: all credit on the decisions.

    A control: the whole update lands on the operator tokens of every row, successes and failures
    alike, which shows what maximally concentrated credit does to everything else the shared
    adapter computes. A row with no labelled token (unforked problem, or a completion that cannot be
    aligned) has a signal sum of ~0 and falls back to uniform.
    """
    d = _require(x.decisive, LABELS, "decision_oracle")  # [B, T]
    return d.to(x.mask.dtype) * (x.mask > 0)  # [B, T]


def anti_oracle_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = 1 on every real token except the labelled decisive ones (0 there): the oracle's complement.

    A control: uniform credit with the decisive tokens left out. If learning runs through the
    decision, this should learn far more slowly than uniform. Unlabelled rows are plain uniform.
    """
    d = _require(x.decisive, LABELS, "anti_oracle")  # [B, T]
    return (1.0 - d.to(x.mask.dtype)) * (x.mask > 0)  # [B, T]


def needs_residual_writer(cfg: Config) -> tuple[str, str] | None:
    """arca_layers reads the LoRA outputs of the residual-stream writers: one must be adapted."""
    if set(cfg.lora.target_modules) & set(RESIDUAL_WRITERS):
        return None
    return "lora.target_modules", (
        f"must include a residual-stream writer {list(RESIDUAL_WRITERS)} for credit method "
        f"{cfg.credit.method!r} (it sums their LoRA outputs), got {cfg.lora.target_modules}"
    )


@dataclass(frozen=True)
class CreditMethod:
    """A registered credit method: its signal function, the inputs it needs, and what it requires
    of the config (``requires(cfg)`` gives ``(key, problem)`` or None)."""

    signal: Callable[[CreditInputs], torch.Tensor]
    needs: frozenset[str] = field(default_factory=frozenset)
    doc: str = ""
    requires: Callable[[Config], tuple[str, str] | None] | None = None

    @property
    def needs_reference_pass(self) -> bool:
        return bool(self.needs & NEEDS_REFERENCE_PASS)


REGISTRY: dict[str, CreditMethod] = {
    "uniform": CreditMethod(uniform_signal, frozenset(), "w_t = 1/T"),
    "surprisal": CreditMethod(surprisal_signal, frozenset(), "-log pi(y_t)"),
    "entropy_reduction": CreditMethod(entropy_reduction_signal, frozenset({ENTROPIES}), "max(0, H_t - H_{t+1})"),
    "divergence": CreditMethod(divergence_signal, frozenset({REF_LOGPROBS}), "|log pi(y_t) - log pi_ref(y_t)|"),
    "arca": CreditMethod(arca_signal, frozenset({HIDDEN}), "||h_adapted_t - h_base_t||_2"),
    "arca_permuted": CreditMethod(
        arca_permuted_signal, frozenset({HIDDEN}), "ARCA's alpha permuted within each sequence"
    ),
    "entropy_top20": CreditMethod(
        entropy_top20_signal, frozenset({ENTROPIES, STEP_ENTROPIES}), "1[H_t in the step's top 20%]"
    ),
    "arca_layers": CreditMethod(
        arca_layers_signal,
        frozenset({LORA_DELTA}),
        "||sum_l (alpha/r) B_l A_l x_l||_2 over residual writers",
        needs_residual_writer,
    ),
    "oracle": CreditMethod(oracle_signal, frozenset({LABELS}), "1[y_t is the first token off every correct solution]"),
    "oracle_decisive": CreditMethod(
        oracle_decisive_signal, frozenset({LABELS}), "first error on failures, decisive tokens on successes"
    ),
    "decision_oracle": CreditMethod(
        decision_oracle_signal, frozenset({LABELS}), "1[y_t is a labelled decisive fork token]"
    ),
    "anti_oracle": CreditMethod(anti_oracle_signal, frozenset({LABELS}), "1[y_t is not a labelled decisive token]"),
}

# The methods of the paper (the rest are controls this project adds).
PAPER_METHODS = ("uniform", "surprisal", "entropy_reduction", "divergence", "arca")


def check_methods_named(raw: Mapping[str, Any], source: str) -> None:
    """The credit methods one layer of config (a file, or ``--config`` values) names exist; the
    error names that layer and the closest method. Raises ``ConfigError``."""
    named = [("credit.method", (raw.get("credit") or {}).get("method"))]
    cells = (raw.get("sweep") or {}).get("cells") or []
    named += [(f"sweep.cells[{i}].method", c.get("method")) for i, c in enumerate(cells) if isinstance(c, Mapping)]
    for key, method in named:
        if isinstance(method, str) and method not in REGISTRY:
            raise ConfigError(
                f"{source}: key '{key}' names an unknown credit method {method!r}{did_you_mean(method, REGISTRY)}; "
                f"known: {', '.join(sorted(REGISTRY))}"
            )


def check_config(cfg: Config, source: str = "<config>") -> None:
    """What only the registry can check: every method the config names exists, and each run's
    config meets its method's requirements. Raises ``ConfigError`` naming the key."""

    def check(method: str, key: str, run_cfg: Config | None) -> None:
        if method not in REGISTRY:
            raise ConfigError(
                f"{source}: key '{key}' names an unknown credit method {method!r}{did_you_mean(method, REGISTRY)}; "
                f"known: {', '.join(sorted(REGISTRY))}"
            )
        problem = REGISTRY[method].requires(run_cfg) if REGISTRY[method].requires and run_cfg is not None else None
        if problem:
            raise ConfigError(f"{source}: key '{problem[0]}' {problem[1]}")

    check(cfg.credit.method, "credit.method", cfg)
    for i, cell in enumerate(cfg.sweep.cells):
        check(cell.method, f"sweep.cells[{i}].method", None)
        if cell.ranks and cfg.sweep.seeds:  # the cell's resolved config (its overrides applied)
            check(
                cell.method,
                f"sweep.cells[{i}].method",
                for_run(cfg, make_run_id(cell.name, cell.ranks[0], cfg.sweep.seeds[0])),
            )


def normalize(
    alpha: torch.Tensor, mask: torch.Tensor, sharpen: float = 2.0, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
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


NORMALIZATIONS = typing.get_args(Normalization)  # ("sum_to_one", "mean_one")


def loss_weights(weights: torch.Tensor, mask: torch.Tensor, normalization: str = "sum_to_one") -> torch.Tensor:
    """The weights the loss multiplies log-probs by, from sum-to-one weights [B, T].

    ``sum_to_one`` (the paper): unchanged, so every sequence's token weights sum to 1 and the
    update is length-normalized. ``mean_one``: times the masked length T_i, so the weights average
    1 over the mask and the loss keeps the token-sum scale of the usual GRPO objective
    (uniform then gives w_t = 1). Returns [B, T].
    """
    if normalization == "sum_to_one":
        return weights
    if normalization == "mean_one":
        n = (mask > 0).sum(dim=1, keepdim=True).to(weights.dtype)  # [B, 1]
        return weights * n  # [B, T]
    raise ValueError(f"unknown credit normalization {normalization!r} (known: {list(NORMALIZATIONS)})")


def token_weights(
    method: str, inputs: CreditInputs, sharpen: float = 2.0, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [B, T] (detached, rows sum to 1 over the mask) and the fall-back flags [B]."""
    if method not in REGISTRY:
        raise ValueError(f"unknown credit method {method!r} (known: {sorted(REGISTRY)})")
    with torch.no_grad():
        alpha = REGISTRY[method].signal(inputs)  # [B, T]
        return normalize(alpha, inputs.mask, sharpen, eps)
