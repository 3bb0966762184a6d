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
gradient pass), and for the methods from the literature ``"groups"`` (token ids, rewards,
advantages, group ids), ``"input_grad"``, ``"span_drop"`` and ``"mc_values"`` (the extra passes and
rollouts of ``arca.credit_passes``); the training loop computes only what the method asks for, and
runs the single adapter-off pass only when ``ref_logprobs`` or ``hidden`` is needed.

The loss may use the weights as they are (``sum_to_one``, the paper) or scaled by the masked
length so that they average 1 over the mask (``mean_one``, see ``loss_weights``); diagnostics
always read the sum-to-one weights.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from arca import credit_literature as lit
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
# The group's structure (completion token ids, rewards, advantages, group ids): no extra pass.
GROUPS = "groups"
# One extra forward and backward pass: the gradient of the answer's log-prob w.r.t. input embeddings.
INPUT_GRAD = "input_grad"
# One no-grad forward pass per masked span: the drop of the answer's log-prob.
SPAN_DROP = "span_drop"
# Extra rollouts: Monte Carlo values at segment boundaries, sampled from the policy.
MC_VALUES = "mc_values"
# What the passes in ``arca.credit_passes`` compute (beyond the gradient and reference passes).
EXTRA_NEEDS = frozenset({GROUPS, INPUT_GRAD, SPAN_DROP, MC_VALUES})
# The ceiling the reports set beside every method: the first-error oracle whose successes credit their
# decisive tokens (on the default chains it beats the variant with uniform successes; docs/headroom.md).
CEILING = "oracle_decisive"
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
    # ``groups`` (arca.credit_passes): [B, T] completion token ids, [B] rewards, advantages, group ids
    token_ids: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    # [B, T] |<d log pi(answer) / d e_t, e_t>| of y_t's input embedding (``input_grad``)
    saliency: torch.Tensor | None = None
    # [B, T] log pi(answer) minus the same with y_t's span masked out (``span_drop``; 0 on the answer)
    span_drop: torch.Tensor | None = None
    # [B, T] V_after - V_before of y_t's segment, Monte Carlo values from policy rollouts (``mc_values``)
    step_values: torch.Tensor | None = None


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

    Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective
    Reinforcement Learning for LLM Reasoning" (arXiv 2506.01939): the policy gradient restricted to
    the top 20% highest-entropy tokens.
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


# Fraction of the batch's real tokens whose gradient clip_cov removes (Cui et al. use 2e-4 to 2e-3).
CLIP_COV_FRACTION = 0.002


def ktae_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = max(0, 1 + sign(A_i) k(y_t)), k = the key-token score of y_t's id in its group.

    KTAE, Sun et al. 2025, "KTAE: A Model-Free Algorithm to Key-Tokens Advantage Estimation in
    Mathematical Reasoning" (arXiv 2505.16826): no model pass; for every token id of a group, the
    2x2 table (correct / incorrect rollouts) x (contains it / not) gives
    k(v) = dir(v) IG(v) / H(R) (1 - p_Fisher(v)) in [-1, 1] (``arca.credit_literature.key_token_score``),
    and the token's advantage A_i + |A_i| sign(A_i) k = A_i (1 + sign(A_i) k) becomes a weight.
    """
    ids = _require(x.token_ids, GROUPS, "ktae")  # [B, T]
    rewards = _require(x.rewards, GROUPS, "ktae")  # [B]
    groups = _require(x.groups, GROUPS, "ktae")  # [B]
    adv = _require(x.advantages, GROUPS, "ktae")  # [B]
    return lit.ktae_alpha(lit.ktae_scores(ids, x.mask, rewards, groups), x.mask, adv).to(x.logprobs.dtype)  # [B, T]


def clip_cov_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = 0 on the ceil(0.002 M) tokens of largest Cov_t, 1 elsewhere (M = real tokens of the batch).

    Clip-Cov, Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning
    Language Models" (arXiv 2505.22617): Cov_t = (log pi(y_t) - mean log pi)(A_i - mean A) over the
    batch's real tokens; the tokens of highest covariance, which drive the entropy collapse, are
    detached from the gradient. Here the top ones by covariance (KL-Cov's selection) rather than a
    random draw within a covariance band, so the weights are deterministic.
    """
    adv = _require(x.advantages, GROUPS, "clip_cov")  # [B]
    cov = lit.token_covariance(x.logprobs, x.mask, adv)  # [B, T]
    return lit.clip_cov_alpha(cov, x.mask, CLIP_COV_FRACTION).to(x.logprobs.dtype)  # [B, T]


def oar_g_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = |<d log pi(answer) / d e_t, e_t>|: gradient x input of y_t's embedding (one extra backward).

    OAR-G, Li et al. 2026 (arXiv 2601.07408): how strongly the answer depends on each earlier token,
    to first order, from one backward pass to the input embeddings (``arca.credit_passes``); the
    normalization keeps each sequence's advantage mass (sum_t A_i w_t = A_i). The answer's own tokens
    and the last token influence no later answer token and get 0.
    """
    return _require(x.saliency, INPUT_GRAD, "oar_g").clamp(min=0.0).to(x.logprobs.dtype)  # [B, T]


def causal_span_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = 1 + d_t / mean_row(d), d_t = max(0, log pi(answer) - log pi(answer | y_t's span masked)).

    Causal span credit, Khandoga et al. 2026 (arXiv 2602.09331): spans whose removal lowers the
    answer's probability are causally important and get up-weighted; a row where no span matters
    stays uniform. Spans of ``credit.span_length`` tokens, answer = the last ``credit.answer_tokens``.
    """
    return lit.span_alpha(_require(x.span_drop, SPAN_DROP, "causal_span"), x.mask).to(x.logprobs.dtype)  # [B, T]


def causal_span_inverted_signal(x: CreditInputs) -> torch.Tensor:
    """Control: causal_span with d'_t = max d + min d - d_t, the least important spans up-weighted."""
    return lit.span_alpha(_require(x.span_drop, SPAN_DROP, "causal_span_inverted"), x.mask, inverted=True).to(
        x.logprobs.dtype
    )


def vineppo_signal(x: CreditInputs) -> torch.Tensor:
    """alpha_t = max(0, sign(A_i) (V(s_{j+1}) - V(s_j))) for y_t in segment j: VinePPO's step advantage.

    VinePPO, Kazemnejad et al. 2024, "VinePPO: Unlocking RL Potential For LLM Reasoning Through
    Refined Credit Assignment" (arXiv 2410.01679): V(s_j) = mean reward of ``credit.vine_rollouts``
    policy continuations from the state after segment j-1 (``credit.vine_segment`` tokens each;
    V after the last segment = the rollout's reward). As a weight of A_i, segments whose value
    moved with the outcome carry it in proportion; a row where none did stays uniform.
    """
    v = _require(x.step_values, MC_VALUES, "vineppo")  # [B, T]
    adv = _require(x.advantages, GROUPS, "vineppo")  # [B]
    return lit.value_step_alpha(v, x.mask, adv).to(x.logprobs.dtype)  # [B, T]


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
    # Methods from the literature (docs/method.md, "Methods from the literature").
    "ktae": CreditMethod(ktae_signal, frozenset({GROUPS}), "max(0, 1 + sign(A) k(y_t)), k from the group's 2x2 tables"),
    "clip_cov": CreditMethod(clip_cov_signal, frozenset({GROUPS}), "0 on the top 0.2% of Cov(log pi, A), else 1"),
    "oar_g": CreditMethod(oar_g_signal, frozenset({INPUT_GRAD}), "|<d log pi(answer)/d e_t, e_t>|"),
    "causal_span": CreditMethod(causal_span_signal, frozenset({SPAN_DROP}), "1 + drop of log pi(answer) / mean"),
    "causal_span_inverted": CreditMethod(
        causal_span_inverted_signal, frozenset({SPAN_DROP}), "causal_span with the span order reversed"
    ),
    "vineppo": CreditMethod(vineppo_signal, frozenset({MC_VALUES, GROUPS}), "max(0, sign(A) (V_after - V_before))"),
}

# The literature's methods (``entropy_top20`` is Wang et al.'s forking tokens).
LITERATURE_METHODS = ("entropy_top20", "ktae", "clip_cov", "oar_g", "causal_span", "vineppo")

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
