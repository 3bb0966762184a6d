"""Scoring: every forward pass that yields per-token quantities of sampled completions.

Log-probs of the sampled tokens (with a memory-lean autograd function that never keeps a
full-vocabulary float32 tensor), predictive entropies, final hidden states (the input of the LM
head), the single adapter-off pass that gives reference log-probs and base hidden states, and the
hooks that sum the LoRA deltas written into the residual stream. ``credit_inputs`` assembles
them into the ``CreditInputs`` a credit method reads. The training step and the analysis steps
(heat map, credit-precision probe) call these functions; nothing here samples or steps an
optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from arca import credit as credit_lib
from arca.config import ConfigError
from arca.credit import RESIDUAL_WRITERS
from arca.labels import BatchLabels
from arca.rollout import Rollouts


# ----------------------------------------------------------------------------- the model's parts
def unwrap(model):
    """The transformers causal LM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def backbone(model):
    """The decoder stack whose output ``last_hidden_state`` is h, the input of the LM head.

    For a peft model the LoRA layers sit inside this module, so calling it under
    ``model.disable_adapter()`` gives the base h, and otherwise the adapted h.
    """
    return unwrap(model).get_decoder()


def lm_head(model):
    """The output projection mapping h [B, T, H] to logits [B, T, V]."""
    return unwrap(model).get_output_embeddings()


class LoraDeltaSum:
    """Forward hooks that sum the LoRA outputs written into the residual stream, during a pass.

    For every LoRA layer named by ``RESIDUAL_WRITERS`` (in every decoder layer), a hook on its
    ``lora_B`` module adds ``scaling * B(A(dropout(x)))`` (exactly the term peft adds to the base
    output) into ``total`` [B, L, H], detached: the gradient pass gives the adapted log-probs and
    this sum with no extra forward. Use as a context manager; hooks are removed on exit.
    """

    def __init__(self, model):
        self.total: torch.Tensor | None = None
        self._handles = []
        self._layers = []
        for name, mod in model.named_modules():
            if isinstance(mod, LoraLayer) and name.rsplit(".", 1)[-1] in RESIDUAL_WRITERS:
                self._layers.append((name, mod))
        if not self._layers:
            raise ConfigError(
                f"arca_layers: the model has no LoRA layer on a residual-stream writer {list(RESIDUAL_WRITERS)}; "
                "add one of them to lora.target_modules"
            )

    def _hook(self, scaling: float):
        def add(_module, _inputs, out):
            d = out.detach().float() * scaling  # [B, L, H]
            self.total = d if self.total is None else self.total + d

        return add

    def __enter__(self) -> "LoraDeltaSum":
        self.total = None
        for name, layer in self._layers:
            for adapter in layer.active_adapters:
                if adapter not in layer.lora_B:
                    continue
                if adapter in getattr(layer, "lora_variant", {}):  # DoRA etc. do not add B A x alone
                    raise ValueError(f"arca_layers: {name} uses a LoRA variant; only plain LoRA is supported")
                self._handles.append(
                    layer.lora_B[adapter].register_forward_hook(self._hook(float(layer.scaling[adapter])))
                )
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


# ----------------------------------------------------------------------------- passes
class _TokenLogProb(torch.autograd.Function):
    """log softmax(logits)[target] without keeping a full-vocabulary fp32 tensor.

    Forward keeps only the logits (already alive as lm_head's output) and the log-sum-exp [N];
    backward recomputes the softmax chunk by chunk: d/dlogits = g * (onehot(y) - softmax).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        lse = torch.cat([torch.logsumexp(c.float(), dim=-1) for c in logits.split(chunk)])  # [N]
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()  # [N]
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk = chunk
        return picked - lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        for s in range(0, logits.shape[0], ctx.chunk):
            e = s + ctx.chunk
            g = -torch.exp(logits[s:e].float() - lse[s:e, None]) * grad[s:e, None]  # [c, V]
            g.scatter_add_(1, targets[s:e, None], grad[s:e, None].float())
            out[s:e] = g.to(logits.dtype)
        return out, None, None


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """log pi(targets) from logits [B, T, V] and targets [B, T] -> [B, T] float32 (differentiable)."""
    B, T, V = logits.shape
    return _TokenLogProb.apply(logits.reshape(B * T, V), targets.reshape(B * T), chunk).view(B, T)


@torch.no_grad()
def token_entropies(logits: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Entropy of each predictive distribution, [B, T, V] -> [B, T] float32, chunked, no grad."""
    B, T, V = logits.shape
    flat = logits.detach().reshape(B * T, V)
    out = []
    for c in flat.split(chunk):
        lp = torch.log_softmax(c.float(), dim=-1)  # [c, V]
        out.append(-(lp.exp() * lp).sum(dim=-1))
    return torch.cat(out).view(B, T)


def _backbone_and_head(model):
    """The decoder stack (returns normed final hidden states) and the lm_head of a causal LM."""
    return backbone(model), lm_head(model)


def _sequence(r: Rollouts, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Prompt+completion ids without the last token, attention mask, position ids; and P."""
    ids = torch.cat([r.prompt_ids, r.completion_ids], dim=1)[:, :-1].to(device)  # [B, P+T-1]
    am = torch.cat([r.prompt_mask.float(), r.completion_mask], dim=1)[:, :-1].to(device)  # [B, P+T-1]
    # Left padding: positions count real tokens only, exactly as generate() numbered them.
    pos = (am.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, P+T-1]
    return ids, am.long(), pos, r.prompt_ids.shape[1]


def _final_hidden(model, r: Rollouts) -> torch.Tensor:
    """Final hidden states (after the last norm) at the positions predicting y_1..y_T: [B, T, H]."""
    device = next(model.parameters()).device
    ids, am, pos, P = _sequence(r, device)
    body, _ = _backbone_and_head(model)
    h = body(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=False).last_hidden_state  # [B, P+T-1, H]
    return h[:, P - 1 :, :]  # position P-1+t-1 predicts y_t


@dataclass
class Scores:
    logprobs: torch.Tensor  # [B, T] with grad when computed in the gradient pass
    entropies: torch.Tensor | None = None  # [B, T]
    hidden: torch.Tensor | None = None  # [B, T, H] detached
    lora_delta: torch.Tensor | None = None  # [B, T, H] detached, summed LoRA residual deltas


def policy_scores(
    model,
    r: Rollouts,
    want_entropies: bool,
    want_hidden: bool,
    chunk: int = 1024,
    want_lora_delta: bool = False,
    share_prompt: bool = False,
) -> Scores:
    """Gradient pass, adapter on: log-probs (with grad) plus detached entropies / hidden states.

    ``want_lora_delta`` collects the summed LoRA residual deltas with hooks in this same pass.
    ``share_prompt`` runs each distinct prompt once for the K rows sharing it (docs/performance.md,
    "The gradient pass"; ``LeanDecoder.final_hidden(exact=False)``), where the lean decoder supports
    the model and no hook needs peft's modules; else (and by default) the full pass runs.
    """
    delta = None
    h = _shared_prompt_hidden(model, r, exact=False) if share_prompt and not want_lora_delta else None
    if want_lora_delta:
        with LoraDeltaSum(model) as deltas:
            h = _final_hidden(model, r)  # [B, T, H]
        P = r.prompt_ids.shape[1]
        # [B, P+T-1, H] -> [B, T, H], the positions of h; no hooked layer ran (none active) -> zeros
        delta = deltas.total[:, P - 1 :, :] if deltas.total is not None else torch.zeros_like(h, dtype=torch.float32)
    elif h is None:
        h = _final_hidden(model, r)  # [B, T, H]
    _, head = _backbone_and_head(model)
    logits = head(h)  # [B, T, V]
    targets = r.completion_ids.to(logits.device)  # [B, T]
    lp = token_logprobs(logits, targets, chunk)  # [B, T]
    return Scores(
        lp, token_entropies(logits, chunk) if want_entropies else None, h.detach() if want_hidden else None, delta
    )


@torch.no_grad()
def step_entropies(model, r: Rollouts, mb: int, chunk: int = 1024) -> torch.Tensor:
    """Entropies of every real completion token of the step [M], adapter on, one no-grad pass per micro-batch.

    Only for methods with a step-wide statistic when the step has several micro-batches (with
    one, the gradient pass's own entropies are the same set and no extra pass runs). It runs in
    the model's current (train) mode, so with LoRA dropout > 0 its entropies are a different
    dropout draw from the gradient pass's; the threshold they give is still the step's.
    """
    _, head = _backbone_and_head(model)
    out = []
    for s in range(0, len(r), mb):
        part = r.select(slice(s, s + mb))
        ent = token_entropies(head(_final_hidden(model, part)), chunk)  # [b, T]
        out.append(ent[part.completion_mask.to(ent.device) > 0])
    return torch.cat(out)  # [M]


def _shared_prompt_hidden(model, r: Rollouts, exact: bool = True) -> torch.Tensor | None:
    """``_final_hidden`` with the prompt run once per distinct prompt (None if not possible).

    ``arca.decode.LeanDecoder.final_hidden`` does about 40% less work when K completions share
    each prompt. ``exact``: the same values bit for bit on CPU (tested; no gradient); else
    differentiable and equal up to rounding and LoRA-dropout draws. It declines other models and
    shapes, and the caller runs the full pass instead.
    """
    from arca.decode import LeanDecoder, UnsupportedModelError

    try:
        lean = LeanDecoder(model)
    except UnsupportedModelError:
        return None
    device = next(model.parameters()).device
    return lean.final_hidden(
        r.prompt_ids.to(device),
        r.prompt_mask.to(device),
        r.completion_ids.to(device),
        r.completion_mask.to(device),
        exact=exact,
    )


@torch.inference_mode()  # cheaper than no_grad; its outputs only feed detached credit signals
def reference_scores(model, r: Rollouts, want_logprobs: bool, share_prompt: bool = False, chunk: int = 1024) -> Scores:
    """The single adapter-off pass: reference log-probs and base final hidden states.

    It runs as the gradient pass it is compared with runs, so that with the adapter at zero (B = 0,
    the first step) both give the same numbers bit for bit and ARCA's residual and divergence's
    log-ratio are exactly 0, not rounding noise: with ``share_prompt`` as the shared-prompt
    gradient pass (``exact=False``); else the prompt part once per distinct prompt where
    ``arca.decode`` can do that bit for bit like the full pass (``exact``), or the full pass.
    """
    with model.disable_adapter():
        h = _shared_prompt_hidden(model, r, exact=not share_prompt)
        if h is None:
            h = _final_hidden(model, r)  # [B, T, H]
        lp = None
        if want_logprobs:
            _, head = _backbone_and_head(model)
            lp = token_logprobs(head(h), r.completion_ids.to(h.device), chunk)  # [B, T]
    return Scores(lp, None, h)


ALL_NEEDS = frozenset(
    {credit_lib.ENTROPIES, credit_lib.STEP_ENTROPIES, credit_lib.REF_LOGPROBS, credit_lib.HIDDEN, credit_lib.LORA_DELTA}
)


def credit_inputs_for_rollouts(
    model, rollouts: Rollouts, needs: frozenset[str] | None = None, seed: int = 0
) -> credit_lib.CreditInputs:
    """Every per-token input a credit method may need, without gradient (heat maps, analysis).

    The rollouts count as one step: step-wide statistics are taken over all of them.
    """
    needs = ALL_NEEDS if needs is None else needs
    with torch.no_grad():
        ref = (
            reference_scores(model, rollouts, credit_lib.REF_LOGPROBS in needs)
            if needs & credit_lib.NEEDS_REFERENCE_PASS
            else None
        )
        pol = policy_scores(
            model,
            rollouts,
            bool(needs & credit_lib.NEEDS_ENTROPIES),
            credit_lib.HIDDEN in needs,
            want_lora_delta=credit_lib.LORA_DELTA in needs,
        )
    return credit_inputs(rollouts, pol, ref, seed)


def credit_inputs(
    r: Rollouts,
    pol: Scores,
    ref: Scores | None,
    seed: int,
    step_ents: torch.Tensor | None = None,
    labels: BatchLabels | None = None,
) -> credit_lib.CreditInputs:
    """The credit methods' inputs for rollouts ``r``; ``labels`` (the planted forks') for the oracles."""
    dev = pol.logprobs.device
    return credit_lib.CreditInputs(
        mask=r.completion_mask.to(pol.logprobs.device),
        logprobs=pol.logprobs.detach(),
        entropies=pol.entropies,
        ref_logprobs=ref.logprobs if ref is not None else None,
        hidden=pol.hidden,
        base_hidden=ref.hidden if ref is not None else None,
        lora_delta=pol.lora_delta,
        step_entropies=step_ents,
        decisive=labels.decisive.to(dev) if labels is not None else None,
        first_error=labels.first_error.to(dev) if labels is not None else None,
        seed=seed,
    )
