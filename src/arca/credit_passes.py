"""The extra passes some credit methods need, beyond the gradient and reference passes.

``complete`` fills the fields of ``CreditInputs`` that a method's ``needs`` name in
``arca.credit.EXTRA_NEEDS``: the group's structure (no pass), the input-embedding gradient of the
answer (one extra forward and backward), the answer's log-prob with each span masked (one no-grad
forward per span) and Monte Carlo values at segment boundaries (extra policy rollouts). The
training step, the credit-precision probe and the heat map call it with what they know of the
batch (``Batch``); the model passes run in eval mode (no dropout) and leave the parameters'
gradients untouched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from arca import credit as credit_lib
from arca import grading
from arca.config import Config
from arca.rollout import Rollouts
from arca.sampling import Sampling
from arca.scoring import backbone, lm_head, token_logprobs, unwrap

VINE_SEED = 20261207  # the value rollouts' random stream, apart from the training rollouts'


@dataclass
class Batch:
    """What the extra passes know of a batch of rollouts besides its tokens (rows in prompt-major order)."""

    rewards: torch.Tensor  # [B]
    advantages: torch.Tensor  # [B]
    k: int  # rollouts per group (adjacent rows)
    prompts: list[str] | None = None  # [B] the formatted prompts (Monte Carlo values)
    golds: list[str] | None = None  # [B] the gold answers (Monte Carlo values)
    generator: Any = None  # the policy's ``arca.rollout.Generator`` (Monte Carlo values)

    def select(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` (one micro-batch of the step)."""
        cut = slice(start, stop)
        return Batch(
            self.rewards[cut],
            self.advantages[cut],
            self.k,
            None if self.prompts is None else self.prompts[cut],
            None if self.golds is None else self.golds[cut],
            self.generator,
        )


def can_complete(needs: frozenset[str], batch: Batch | None) -> bool:
    """Whether ``complete`` can compute every extra input of ``needs`` from ``batch``."""
    extra = needs & credit_lib.EXTRA_NEEDS
    if not extra:
        return True
    if batch is None:
        return False
    return credit_lib.MC_VALUES not in extra or (batch.generator is not None and batch.golds is not None)


def complete(
    cfg: Config, needs: frozenset[str], model, r: Rollouts, x: credit_lib.CreditInputs, batch: Batch
) -> credit_lib.CreditInputs:
    """``x`` with the extra inputs that ``needs`` names (the others unchanged)."""
    extra: dict[str, Any] = {}
    dev = x.mask.device
    if needs & {credit_lib.GROUPS, credit_lib.MC_VALUES}:
        extra.update(
            token_ids=r.completion_ids.to(dev),
            rewards=batch.rewards.to(dev),
            advantages=batch.advantages.to(dev),
            groups=torch.arange(len(r), device=dev) // batch.k,  # [B]
        )
    if needs & {credit_lib.INPUT_GRAD, credit_lib.SPAN_DROP}:
        with eval_mode(model):
            if credit_lib.INPUT_GRAD in needs:
                extra["saliency"] = input_saliency(model, r, cfg.credit.answer_tokens).to(dev)
            if credit_lib.SPAN_DROP in needs:
                extra["span_drop"] = span_drops(model, r, cfg.credit.span_length, cfg.credit.answer_tokens).to(dev)
    if credit_lib.MC_VALUES in needs:
        extra["step_values"] = segment_value_steps(cfg, batch, r).to(dev)
    return dataclasses.replace(x, **extra)


class eval_mode:
    """The model in eval mode (no LoRA dropout) inside the block, its previous mode after."""

    def __init__(self, model):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


# ----------------------------------------------------------------------------- shared pieces
def answer_mask(mask: torch.Tensor, answer_tokens: int) -> torch.Tensor:
    """1.0 on the last ``answer_tokens`` real tokens of each row (the answer), else 0; [B, T]."""
    m = mask > 0  # [B, T]
    n = m.sum(dim=1, keepdim=True)  # [B, 1]
    t = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)  # [1, T]
    return (m & (t >= n - answer_tokens)).to(torch.float32)  # [B, T]


def _inputs(r: Rollouts, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Prompt+completion ids without the last token, attention mask, position ids, and P (as scoring)."""
    ids = torch.cat([r.prompt_ids, r.completion_ids], dim=1)[:, :-1].to(device)  # [B, P+T-1]
    am = torch.cat([r.prompt_mask.float(), r.completion_mask.float()], dim=1)[:, :-1].to(device)  # [B, P+T-1]
    pos = (am.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, P+T-1] real tokens only, as generate()
    return ids, am.long(), pos, r.prompt_ids.shape[1]


# ----------------------------------------------------------------------------- OAR-G
def input_saliency(model, r: Rollouts, answer_tokens: int) -> torch.Tensor:
    """s_t = |<d log pi(answer) / d e_t, e_t>| for the input embedding e_t of each completion token; [B, T].

    One forward and one backward pass to the embeddings only (``torch.autograd.grad``), so the
    parameters' gradients are not touched. y_t is an input at position P + t - 1 (1-based t); the
    last column is never an input and gets 0.
    """
    device = next(model.parameters()).device
    ids, am, pos, P = _inputs(r, device)
    emb = unwrap(model).get_input_embeddings()(ids).detach().requires_grad_(True)  # [B, P+T-1, H]
    with torch.enable_grad():
        h = backbone(model)(inputs_embeds=emb, attention_mask=am, position_ids=pos, use_cache=False).last_hidden_state
        lp = token_logprobs(lm_head(model)(h[:, P - 1 :, :]), r.completion_ids.to(device))  # [B, T]
        target = (lp * answer_mask(r.completion_mask.to(device), answer_tokens)).sum()
        (grad,) = torch.autograd.grad(target, emb)  # [B, P+T-1, H]
    gxi = (grad * emb.detach()).sum(dim=-1).abs()  # [B, P+T-1]
    out = torch.zeros_like(r.completion_mask, dtype=torch.float32)  # [B, T]
    out[:, :-1] = gxi[:, P:].float().cpu()  # y_1..y_{T-1} are the inputs at P..P+T-2
    return out * (r.completion_mask > 0)  # [B, T]


# ----------------------------------------------------------------------------- causal spans
def spans(n: int, span_length: int, answer_tokens: int) -> list[tuple[int, int]]:
    """The [start, end) spans of ``span_length`` tokens before the answer (the last ``answer_tokens``)."""
    stop = max(0, n - answer_tokens)
    return [(s, min(s + span_length, stop)) for s in range(0, stop, span_length)]


@torch.no_grad()
def span_drops(model, r: Rollouts, span_length: int, answer_tokens: int) -> torch.Tensor:
    """d_t = log pi(answer) - log pi(answer | y_t's span masked out of the attention); [B, T].

    Masking keeps every position id, so only the span's content disappears. One no-grad pass per
    span (rows batched together); the answer's own tokens get 0.
    """
    device = next(model.parameters()).device
    ids, am, pos, P = _inputs(r, device)
    body, head = backbone(model), lm_head(model)
    amask = answer_mask(r.completion_mask, answer_tokens).to(device)  # [B, T]
    targets = r.completion_ids.to(device)  # [B, T]

    def answer_lp(rows: list[int], attn: torch.Tensor) -> torch.Tensor:  # [len(rows)]
        h = body(input_ids=ids[rows], attention_mask=attn, position_ids=pos[rows], use_cache=False).last_hidden_state
        return (token_logprobs(head(h[:, P - 1 :, :]), targets[rows]) * amask[rows]).sum(dim=1)

    base = answer_lp(list(range(len(r))), am)  # [B]
    out = torch.zeros(r.completion_mask.shape, dtype=torch.float32)  # [B, T]
    jobs = [
        (b, s, e)
        for b in range(len(r))
        for s, e in spans(int((r.completion_mask[b] > 0).sum()), span_length, answer_tokens)
    ]
    for c in range(0, len(jobs), len(r)):  # as many masked copies per pass as the batch has rows
        chunk = jobs[c : c + len(r)]
        rows = [b for b, _, _ in chunk]
        attn = am[rows].clone()  # [n, P+T-1]
        for j, (_, s, e) in enumerate(chunk):
            attn[j, P + s : P + e] = 0  # y_{s+1}..y_e (1-based) are the inputs at P+s..P+e-1
        drop = base[rows] - answer_lp(rows, attn)  # [n]
        for j, (b, s, e) in enumerate(chunk):
            out[b, s:e] = float(drop[j])
    return out


# ----------------------------------------------------------------------------- VinePPO
def segment_value_steps(cfg: Config, batch: Batch, r: Rollouts) -> torch.Tensor:
    """V(s_{j+1}) - V(s_j) of the segment holding y_t; [B, T].

    Segment j holds the real tokens [j L, (j+1) L), L = ``credit.vine_segment``. V(s_0) (the
    prompt alone) and V after every proper segment prefix are the mean reward of
    ``credit.vine_rollouts`` policy continuations, each with the token budget left at that point;
    V after the last segment is the rollout's own reward.
    """
    tok, gen = batch.generator.tokenizer, batch.generator
    L, M, ro = cfg.credit.vine_segment, cfg.credit.vine_rollouts, cfg.rollout
    out = torch.zeros(r.completion_mask.shape, dtype=torch.float32)  # [B, T]
    n_real = [int((r.completion_mask[b] > 0).sum()) for b in range(len(r))]
    bounds = [list(range(0, n, L)) for n in n_real]  # start of each segment = the states valued
    values = [[0.0] * len(b) + [float(batch.rewards[i])] for i, b in enumerate(bounds)]
    for j in range(max((len(b) for b in bounds), default=0)):
        rows = [i for i, b in enumerate(bounds) if len(b) > j]
        prefixes = [tok.decode(r.completion_ids[i, : bounds[i][j]].tolist()) for i in rows]
        # a continuation has the budget the completion had left from its state, and no forced length
        sampling = Sampling.from_rollout(
            ro, n=M, seed=VINE_SEED + j, max_new_tokens=max(1, ro.max_new_tokens - j * L), min_new_tokens=0
        )
        out_r = gen.generate([batch.prompts[i] + p for i, p in zip(rows, prefixes)], sampling)
        for q, i in enumerate(rows):
            texts = out_r.texts[q * M : (q + 1) * M]
            values[i][j] = sum(grading.grade_paper(prefixes[q] + t, batch.golds[i]) for t in texts) / M
    for i, b in enumerate(bounds):
        for j, s in enumerate(b):
            out[i, s : s + L] = values[i][j + 1] - values[i][j]
    return out * (r.completion_mask > 0)


def complete_for_registry(
    cfg: Config, model, r: Rollouts, x: credit_lib.CreditInputs, batch: Batch | None, wanted=None
):
    """``x`` with every extra input that some registered method needs and ``batch`` allows (analysis steps).

    ``wanted`` (names) limits the methods completed for; the others count as lacking. Returns the
    completed inputs and the names of the methods that still lack an input.
    """
    methods = [(n, spec) for n, spec in credit_lib.REGISTRY.items() if wanted is None or n in wanted]
    lacking = set(credit_lib.REGISTRY) - {n for n, spec in methods if can_complete(spec.needs, batch)}
    needs = frozenset().union(*(spec.needs for name, spec in methods if name not in lacking))
    if batch is None or not needs & credit_lib.EXTRA_NEEDS:
        return x, lacking
    return complete(cfg, needs, model, r, x, batch), lacking


def probe_methods(cfg: Config) -> set[str]:
    """The methods a credit-precision probe scores: every one without an extra model pass (at most
    the group's counts), plus the sweep's own (a pass per span or an input gradient is paid only by
    the experiments that train the method)."""
    costly = credit_lib.EXTRA_NEEDS - {credit_lib.GROUPS}
    free = {n for n, spec in credit_lib.REGISTRY.items() if not spec.needs & costly}
    return free | {c.method for c in cfg.sweep.cells}
