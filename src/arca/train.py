"""The GRPO training loop with LoRA and token-level credit (``python -m arca train --run R``).

One optimizer step (DESIGN.md "One training step"):
  1. sample K completions per prompt, adapter on, model in eval mode;
  2. grade them -> rewards -> group-normalized advantages;
  3. per micro-batch: at most ONE no-grad adapter-off pass (reference log-probs and base final
     hidden states), only if the credit method needs either; then the gradient pass, adapter on,
     giving log-probs (with grad) and, detached, entropies, the adapted final hidden states and
     (hooks) the summed LoRA residual deltas; a method that needs the entropies of the whole
     step (entropy_top20) with several micro-batches first gets them from one no-grad pass each;
  4. credit method -> token weights (-> ``mean_one`` scaling) -> loss -> backward; clip, AdamW
     step, LR schedule;
  5. diagnostics over the whole step, one JSON line in ``metrics.jsonl``.

A run folder ``runs/<run>/`` holds ``config.yaml`` (resolved), ``checkpoints/step_XXXXXX/``
(adapter, optimizer, scheduler, RNG states, data position, metrics so far) and ``live/`` (the
metrics and curve lines so far, one flushed line per step, to follow a running job) while training, and
at the end ``adapter/`` (loadable from anywhere, with tokenizer and model card: ``arca.cards``),
``metrics.jsonl`` and ``final_weights.json``, each renamed into place only when complete. Started again on the same folder, training resumes from the last
checkpoint and ends identical to an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from arca import credit as credit_lib
from arca.config import Config, ConfigError, dump_config, parse_run_id, training_hash
from arca.diagnostics import credit_precision, effective_token_ratio, gini, nanmean
from arca.grpo import group_advantages, weighted_pg_loss
from arca.io import JsonlAppender, atomic_path, progress_bar, write_json, write_jsonl, write_text
from arca.labels import TokenLabels, label_batch
from arca.rollout import Rollouts

log = logging.getLogger(__name__)

# Counts extra forward passes (adapter-off reference passes; adapter-on no-grad entropy passes
# before the gradient passes); tests use it to check the one-pass and zero-pass guarantees.
PASS_COUNTER = {"reference": 0, "entropy": 0}


class NonFiniteError(FloatingPointError):
    """A NaN or inf appeared in a training forward/backward pass."""


# ----------------------------------------------------------------------------- scoring
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
    from arca.models import backbone, lm_head

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
    return h[:, P - 1:, :]  # position P-1+t-1 predicts y_t


@dataclass
class Scores:
    logprobs: torch.Tensor  # [B, T] with grad when computed in the gradient pass
    entropies: torch.Tensor | None = None  # [B, T]
    hidden: torch.Tensor | None = None  # [B, T, H] detached
    lora_delta: torch.Tensor | None = None  # [B, T, H] detached, summed LoRA residual deltas


def policy_scores(model, r: Rollouts, want_entropies: bool, want_hidden: bool, chunk: int = 1024,
                  want_lora_delta: bool = False) -> Scores:
    """Gradient pass, adapter on: log-probs (with grad) plus detached entropies / hidden states.

    ``want_lora_delta`` collects the summed LoRA residual deltas with hooks in this same pass.
    """
    from arca.models import LoraDeltaSum

    delta = None
    if want_lora_delta:
        with LoraDeltaSum(model) as deltas:
            h = _final_hidden(model, r)  # [B, T, H]
        P = r.prompt_ids.shape[1]
        # [B, P+T-1, H] -> [B, T, H], the positions of h; no hooked layer ran (none active) -> zeros
        delta = deltas.total[:, P - 1:, :] if deltas.total is not None else torch.zeros_like(h, dtype=torch.float32)
    else:
        h = _final_hidden(model, r)  # [B, T, H]
    _, head = _backbone_and_head(model)
    logits = head(h)  # [B, T, V]
    targets = r.completion_ids.to(logits.device)  # [B, T]
    lp = token_logprobs(logits, targets, chunk)  # [B, T]
    return Scores(lp, token_entropies(logits, chunk) if want_entropies else None, h.detach() if want_hidden else None, delta)


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
        PASS_COUNTER["entropy"] += 1
        ent = token_entropies(head(_final_hidden(model, part)), chunk)  # [b, T]
        out.append(ent[part.completion_mask.to(ent.device) > 0])
    return torch.cat(out)  # [M]


@torch.inference_mode()  # cheaper than no_grad; its outputs only feed detached credit signals
def reference_scores(model, r: Rollouts, want_logprobs: bool, chunk: int = 1024) -> Scores:
    """The single adapter-off pass: reference log-probs and base final hidden states."""
    PASS_COUNTER["reference"] += 1
    with model.disable_adapter():
        h = _final_hidden(model, r)  # [B, T, H]
        lp = None
        if want_logprobs:
            _, head = _backbone_and_head(model)
            lp = token_logprobs(head(h), r.completion_ids.to(h.device), chunk)  # [B, T]
    return Scores(lp, None, h)


ALL_NEEDS = frozenset({credit_lib.ENTROPIES, credit_lib.STEP_ENTROPIES, credit_lib.REF_LOGPROBS,
                       credit_lib.HIDDEN, credit_lib.LORA_DELTA})


def credit_inputs_for_rollouts(model, rollouts: Rollouts, needs: frozenset[str] | None = None, seed: int = 0) -> credit_lib.CreditInputs:
    """Every per-token input a credit method may need, without gradient (heat maps, analysis).

    The rollouts count as one step: step-wide statistics are taken over all of them.
    """
    needs = ALL_NEEDS if needs is None else needs
    with torch.no_grad():
        ref = reference_scores(model, rollouts, credit_lib.REF_LOGPROBS in needs) if needs & credit_lib.NEEDS_REFERENCE_PASS else None
        pol = policy_scores(model, rollouts, bool(needs & credit_lib.NEEDS_ENTROPIES),
                            credit_lib.HIDDEN in needs, want_lora_delta=credit_lib.LORA_DELTA in needs)
    return _inputs(rollouts, pol, ref, seed)


def _inputs(r: Rollouts, pol: Scores, ref: Scores | None, seed: int, step_ents: torch.Tensor | None = None,
            decisive: torch.Tensor | None = None) -> credit_lib.CreditInputs:
    return credit_lib.CreditInputs(
        mask=r.completion_mask.to(pol.logprobs.device),
        logprobs=pol.logprobs.detach(),
        entropies=pol.entropies,
        ref_logprobs=ref.logprobs if ref is not None else None,
        hidden=pol.hidden,
        base_hidden=ref.hidden if ref is not None else None,
        lora_delta=pol.lora_delta,
        step_entropies=step_ents,
        decisive=decisive.to(pol.logprobs.device) if decisive is not None else None,
        seed=seed,
    )


# ----------------------------------------------------------------------------- schedule & state
def lr_scheduler(cfg: Config, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The library's cosine schedule with linear warm-up (transformers), as in the author's code.

    Learning-rate multiplier at optimizer step s = 0, 1, ... (W = ``train.warmup_steps``,
    S = ``train.steps``, f = ``train.min_lr_ratio``):

        s / W                                                  for s < W  (the first step has lr 0)
        f + (1 - f) * 0.5 * (1 + cos(pi * (s - W) / (S - W)))  for s >= W

    f = 0 is ``get_cosine_schedule_with_warmup`` (the paper's "cosine to 0"); f > 0 the library's
    min-lr variant. Both are a ``LambdaLR`` over a ``functools.partial``, whose state dict
    (checkpoints) holds only the step counters.
    """
    from transformers import get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

    t = cfg.train
    if t.min_lr_ratio == 0:
        return get_cosine_schedule_with_warmup(opt, t.warmup_steps, t.steps)
    return get_cosine_with_min_lr_schedule_with_warmup(opt, t.warmup_steps, t.steps, min_lr_rate=t.min_lr_ratio)


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    metrics: list[dict] = field(default_factory=list)
    last_weights: list[list[float]] = field(default_factory=list)  # masked weights of the last step
    curve: list[dict] = field(default_factory=list)  # held-out accuracy at step 0 and every eval.every steps


def _checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*"))


def save_checkpoint(run_dir: Path, model, opt, sched, state: RunState, data_gen: torch.Generator, run_hash: str, keep: int = 2) -> None:
    """Adapter + trainer state in ``checkpoints/step_XXXXXX/``, renamed into place when complete."""
    with atomic_path(run_dir / "checkpoints" / f"step_{state.step:06d}") as tmp:
        model.save_pretrained(tmp / "adapter")
        torch.save({
            "step": state.step, "metrics": state.metrics, "last_weights": state.last_weights, "curve": state.curve,
            "run_hash": run_hash,
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(), "data_rng": data_gen.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }, tmp / "trainer_state.pt")
    for old in _checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run_dir: Path, model, opt, sched, data_gen: torch.Generator, run_hash: str) -> RunState | None:
    """Restore the last checkpoint of this exact run config, or None to start fresh."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpts = _checkpoint_dirs(run_dir)
    if not ckpts:
        return None
    last = ckpts[-1]
    st = torch.load(last / "trainer_state.pt", weights_only=False)
    if st["run_hash"] != run_hash:
        log.warning("checkpoint %s belongs to another config (hash %s != %s): starting fresh", last, st["run_hash"], run_hash)
        shutil.rmtree(run_dir / "checkpoints")
        return None
    set_peft_model_state_dict(model, load_file(str(last / "adapter" / "adapter_model.safetensors")))
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    torch.set_rng_state(st["torch_rng"])
    data_gen.set_state(st["data_rng"])
    if st["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda_rng"])
    log.info("resuming from %s (step %d)", last, st["step"])
    return RunState(step=st["step"], metrics=st["metrics"], last_weights=st["last_weights"], curve=st.get("curve", []))


# ----------------------------------------------------------------------------- labels
def completion_pieces(tokenizer, r: Rollouts) -> list[list[str]]:
    """The decoded text of every real completion token of each row (special tokens decode to "").

    One token at a time, which is exact for the character-level tokenizer; where the pieces do not
    add up to the row's text (a subword tokenizer merging across tokens), each token's piece is
    taken as the growth of the decoded prefix instead.
    """
    out = []
    for ids, m, text in zip(r.completion_ids.tolist(), r.completion_mask.tolist(), r.texts):
        real = [i for i, keep in zip(ids, m) if keep > 0]
        pieces = [tokenizer.decode([i], skip_special_tokens=True) for i in real]
        if "".join(pieces) != text:
            prefixes = [tokenizer.decode(real[: t + 1], skip_special_tokens=True) for t in range(len(real))]
            pieces = [p[len(q):] for p, q in zip(prefixes, [""] + prefixes[:-1])]
        out.append(pieces)
    return out


@dataclass
class BatchLabels:
    """Token labels of a batch of rollouts as tensors (rows without labels are all 0)."""

    decisive: torch.Tensor  # [N, T]
    distractor: torch.Tensor  # [N, T]
    aligned: torch.Tensor  # [N] bool
    forked: torch.Tensor  # [N] bool

    def select(self, sl: slice) -> "BatchLabels":
        return BatchLabels(self.decisive[sl], self.distractor[sl], self.aligned[sl], self.forked[sl])


def rollout_labels(tokenizer, r: Rollouts, problems: list[dict], k: int) -> BatchLabels | None:
    """Labels of the planted forks for rollouts of ``problems`` (K rows each), or None without forks."""
    if not any(p.get("branches") for p in problems):
        return None
    rows = [p for p in problems for _ in range(k)]
    lab: TokenLabels = label_batch(completion_pieces(tokenizer, r), r.texts, rows, r.completion_ids.shape[1])
    return BatchLabels(torch.tensor(lab.decisive, dtype=torch.float32), torch.tensor(lab.distractor, dtype=torch.float32),
                       torch.tensor(lab.aligned), torch.tensor(lab.forked))


def label_metrics(labels: BatchLabels | None, W: torch.Tensor, M: torch.Tensor, adv: torch.Tensor) -> dict:
    """Alignment rates and credit precision of a step's weights (empty without labels)."""
    if labels is None:
        return {}
    forked = labels.forked
    return {
        "labeled_frac": float(labels.aligned.float().mean()),
        "labeled_frac_forked": float(labels.aligned[forked].float().mean()) if forked.any() else None,
        **credit_precision(W, M, labels.decisive[:, : W.shape[1]], labels.distractor[:, : W.shape[1]], adv, labels.aligned),
    }


def shuffled_rewards(rewards: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """The null control: the step's rewards permuted among its completions (seeded by run and step)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return rewards[torch.randperm(rewards.numel(), generator=gen)]


# ----------------------------------------------------------------------------- one step
def _check_finite(t: torch.Tensor, mask: torch.Tensor, what: str, step: int) -> None:
    if not torch.isfinite(t[mask > 0]).all():
        raise NonFiniteError(f"step {step}: non-finite {what} in the training forward pass; stopping (last checkpoint kept)")


def train_step(cfg: Config, model, generator, opt, sched, problems: list[dict], step: int, seed: int) -> tuple[dict, list[list[float]]]:
    """One optimizer step on ``problems`` (prompts_per_step records).

    Returns the step's metrics and the masked token weights of every sequence.
    """
    from arca.grading import gold_answer, grade_paper
    from arca.prompts import build_prompt

    method = credit_lib.REGISTRY[cfg.credit.method]
    K = cfg.rollout.k
    t0 = time.perf_counter()
    fixed = {"min_new_tokens": cfg.rollout.min_new_tokens} if cfg.rollout.min_new_tokens > 0 else {}
    r = generator.generate([build_prompt(p["problem"]) for p in problems], K, cfg.rollout.temperature,
                           cfg.rollout.top_p, cfg.rollout.max_new_tokens, top_k=cfg.rollout.top_k, **fixed)
    t_gen = time.perf_counter() - t0
    golds = [gold_answer(p["answer"]) for p in problems for _ in range(K)]
    rewards = torch.tensor([float(grade_paper(c, g)) for c, g in zip(r.texts, golds)])  # [N]
    # the null control trains on shuffled rewards; metrics report the true ones
    adv = group_advantages(shuffled_rewards(rewards, seed, step) if cfg.train.shuffle_rewards else rewards, K)  # [N]
    labels = rollout_labels(generator.tokenizer, r, problems, K) if any(p.get("branches") for p in problems) else None
    if credit_lib.LABELS in method.needs and labels is None:
        raise ValueError(f"credit method '{cfg.credit.method}' needs the planted forks' labels, but these problems "
                         "have none: set data.forks.p_bug > 0 (generated data)")

    if torch.cuda.is_available():  # hand the generation's KV cache back before the update
        torch.cuda.empty_cache()
    t1 = time.perf_counter()
    model.train()  # scoring passes in train mode: LoRA dropout active, as in the author's code
    opt.zero_grad(set_to_none=True)
    N, mb = len(r), cfg.train.micro_batch_prompts * K
    need_ref = method.needs_reference_pass
    need_ent = bool(method.needs & credit_lib.NEEDS_ENTROPIES)
    # A step-wide statistic over several micro-batches needs every entropy before the first loss.
    step_ents = step_entropies(model, r, mb) if credit_lib.STEP_ENTROPIES in method.needs and N > mb else None
    loss_total, all_w, all_m, fallbacks, surprisal, residual = 0.0, [], [], [], [], []
    for s in range(0, N, mb):
        part = r.select(slice(s, s + mb))
        ref = reference_scores(model, part, credit_lib.REF_LOGPROBS in method.needs) if need_ref else None
        pol = policy_scores(model, part, need_ent, credit_lib.HIDDEN in method.needs,
                            want_lora_delta=credit_lib.LORA_DELTA in method.needs)
        mask = part.completion_mask.to(pol.logprobs.device)  # [b, T]
        _check_finite(pol.logprobs.detach(), mask, "log-probs", step + 1)
        dec = labels.decisive[s:s + mb] if labels is not None and credit_lib.LABELS in method.needs else None
        inputs = _inputs(part, pol, ref, seed=seed * 1_000_003 + step * 1009 + s, step_ents=step_ents, decisive=dec)
        w, fb = credit_lib.token_weights(cfg.credit.method, inputs, cfg.credit.sharpen, cfg.credit.eps)  # [b, T], [b]
        w_loss = credit_lib.loss_weights(w, mask, cfg.credit.normalization)  # [b, T]
        loss = weighted_pg_loss(pol.logprobs, w_loss, mask, adv[s:s + mb].to(w.device), n_total=N)
        if not torch.isfinite(loss.detach()):
            raise NonFiniteError(f"step {step + 1}: non-finite loss; stopping (last checkpoint kept)")
        loss.backward()
        loss_total += float(loss.detach())
        all_w.append(w.detach().cpu()); all_m.append(mask.cpu()); fallbacks.append(fb.cpu())
        surprisal.append((-pol.logprobs.detach() * mask).sum().cpu() / mask.sum().clamp(min=1).cpu())
        if credit_lib.HIDDEN in method.needs:
            res = credit_lib.arca_signal(inputs)[mask > 0]  # residual norms of real tokens
            residual.append(res.cpu())
        elif credit_lib.LORA_DELTA in method.needs:
            residual.append(credit_lib.arca_layers_signal(inputs)[mask > 0].cpu())
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.train.grad_clip)
    if not torch.isfinite(grad_norm):
        raise NonFiniteError(f"step {step + 1}: non-finite gradient norm; stopping (last checkpoint kept)")
    lr = sched.get_last_lr()[0]
    opt.step()
    sched.step()
    t_upd = time.perf_counter() - t1

    W = _pad_cat(all_w); M = _pad_cat(all_m)  # [N, T]
    res = torch.cat(residual) if residual else None
    metrics = {
        "step": step + 1,
        "loss": loss_total,
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=True)) if N > 1 else 0.0,
        "lr": lr,
        "grad_norm": float(grad_norm),
        "gen_seconds": t_gen,
        "update_seconds": t_upd,
        "step_seconds": time.perf_counter() - t0,
        "completion_len_mean": float(M.sum(dim=1).mean()),
        "surprisal_mean": float(torch.stack(surprisal).mean()),
        "gini": nanmean(gini(W, M)),
        "eff_ratio": nanmean(effective_token_ratio(W, M)),
        "fallback_frac": float(torch.cat(fallbacks).float().mean()),
        "residual_mean": float(res.mean()) if res is not None and res.numel() else None,
        "residual_max": float(res.max()) if res is not None and res.numel() else None,
        **label_metrics(labels, W, M, adv),
    }
    return metrics, [[float(x) for x in w[m > 0]] for w, m in zip(W, M)]


def _pad_cat(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1])) for r in rows])


# ----------------------------------------------------------------------------- the loop
TIMING_KEYS = ("gen_seconds", "update_seconds", "step_seconds")
# runs/<run>/live/: metrics.jsonl and curve.jsonl as they grow, a line per step, while the run
# trains. Not the declared outputs: Snakemake must never see a declared output that is still
# being written (a killed Snakemake would then refuse the same command with "incomplete files").
LIVE = "live"


def train_run(cfg: Config, run_id: str, run_dir: Path | None = None, stop_after: int | None = None) -> RunState:
    """Train one run (``cfg`` already resolved for it); ``stop_after`` ends early (tests)."""
    from arca.data import read_records
    from arca.evaluate import curve_point
    from arca.models import count_trainable, load_policy, resolve_device
    from arca.rollout import make_generator

    run_dir = Path(run_dir or cfg.run_dir(run_id))
    label, rank, seed = parse_run_id(run_id)
    run_hash = training_hash(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    records = read_records(cfg.data_dir / "train.jsonl")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", dump_config(cfg))

    torch.manual_seed(cfg.train.seed)
    model, tok = load_policy(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = lr_scheduler(cfg, opt)
    data_gen = torch.Generator().manual_seed(cfg.train.seed)
    state = load_checkpoint(run_dir, model, opt, sched, data_gen, run_hash) or RunState()
    generator = make_generator(cfg, model, tok)
    identity = {"run": run_id, "label": label, "method": cfg.credit.method, "rank": cfg.lora.rank, "seed": cfg.train.seed}
    every = cfg.eval.every
    curve_set = read_records(cfg.data_dir / "test.jsonl")[: cfg.eval.curve_problems] if every > 0 else []
    # Live progress: live/metrics.jsonl and live/curve.jsonl get one flushed line per step (curve
    # point), starting from what the checkpoint holds; TensorBoard events when monitor.tensorboard is on.
    tb = tensorboard_writer(run_dir / "tensorboard", purge_step=state.step + 1) if cfg.monitor.tensorboard else None
    with JsonlAppender(run_dir / LIVE / "metrics.jsonl", state.metrics) as live_metrics, \
            JsonlAppender(run_dir / LIVE / "curve.jsonl", state.curve) as live_curve:
        if every > 0 and state.step == 0:
            state.curve = [{**curve_point(cfg, generator, curve_set, 0), **identity}]
            live_curve.append(state.curve[-1])
            log_scalars(tb, state.curve[-1], 0, "heldout/")

        bar = progress_bar(cfg.train.steps, run_id, unit="step", initial=state.step)
        while state.step < cfg.train.steps:
            # prompts drawn with replacement from a seeded generator whose state is checkpointed
            idx = torch.randint(len(records), (cfg.train.prompts_per_step,), generator=data_gen).tolist()
            m, state.last_weights = train_step(cfg, model, generator, opt, sched, [records[i] for i in idx], state.step, cfg.train.seed)
            state.metrics.append({**m, **identity})
            state.step += 1
            live_metrics.append(state.metrics[-1])
            log_scalars(tb, m, state.step, "train/")
            if every > 0 and (state.step % every == 0 or state.step == cfg.train.steps):
                state.curve.append({**curve_point(cfg, generator, curve_set, state.step), **identity})
                live_curve.append(state.curve[-1])
                log_scalars(tb, state.curve[-1], state.step, "heldout/")
            bar.update(1)
            bar.set_postfix(reward=f"{m['reward_mean']:.3f}", gini=f"{m['gini'] or 0:.2f}", s_per_step=f"{m['step_seconds']:.2f}")
            if state.step % cfg.train.checkpoint_every == 0 or state.step == cfg.train.steps:
                save_checkpoint(run_dir, model, opt, sched, state, data_gen, run_hash)
            if stop_after is not None and state.step >= stop_after:
                break
        bar.close()
    if tb is not None:
        tb.close()
    if state.step >= cfg.train.steps:
        _finish(cfg, run_dir, model, tok, state, {**identity, "config_hash": run_hash}, count_trainable(model))
    return state


def tensorboard_writer(log_dir: Path, purge_step: int):
    """A ``torch.utils.tensorboard.SummaryWriter`` (``monitor.tensorboard``); ``purge_step`` drops
    events a killed run logged after the checkpoint it resumes from."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        raise ConfigError("key 'monitor.tensorboard' is true but the tensorboard package is not installed: "
                          "pip install 'arca-bench[tensorboard]' (or set monitor.tensorboard: false)") from None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def log_scalars(writer, row: dict, step: int, prefix: str) -> None:
    """Every finite number of a metrics or curve row as a TensorBoard scalar (nothing without a writer)."""
    if writer is None:
        return
    for key, value in row.items():
        if key in ("step", "rank", "seed") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            writer.add_scalar(prefix + key, value, step)
    writer.flush()


RUN_INFO = "arca_run.json"  # in the adapter folder: which run, which settings (config hash), how far


def _finish(cfg: Config, run_dir: Path, model, tok, state: RunState, identity: dict, n_trainable: int) -> None:
    """Final outputs, each renamed into place when complete; then the checkpoints go.

    The adapter folder is self-contained (``arca.cards``): the base recorded so that peft finds it
    from any working directory, the tokenizer, ``arca_run.json`` and a filled model card.
    """
    from arca.cards import base_model_reference, final_metrics, model_card

    write_json(run_dir / "final_weights.json",
               {**identity, "step": state.step, "trainable_params": n_trainable, "weights": state.last_weights})
    write_jsonl(run_dir / "metrics.jsonl", state.metrics)
    write_jsonl(run_dir / "curve.jsonl", state.curve)
    info = {**identity, "steps": state.step, "trainable_params": n_trainable,
            "final_metrics": final_metrics(state.metrics, state.curve)}
    for peft_cfg in model.peft_config.values():
        peft_cfg.base_model_name_or_path = base_model_reference(cfg)
    with atomic_path(run_dir / "adapter") as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / RUN_INFO, info)
        write_text(tmp / "README.md", model_card(cfg, info))  # replaces peft's blank template
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / LIVE, ignore_errors=True)  # the finished metrics.jsonl and curve.jsonl hold it all


def adapter_run_info(adapter_dir: Path) -> dict:
    """The ``arca_run.json`` a finished run wrote into its adapter folder (its identity and config hash)."""
    path = Path(adapter_dir) / RUN_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {adapter_dir} is not a finished run of this version of arca; retrain it")
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def check_adapter_hash(adapter_dir: Path, run_id: str, expected: str) -> None:
    """Refuse an adapter trained with other settings than the config now asks for.

    A hand run (``python -m arca train --run R --set train.lr=...``) writes into the run's own
    folder; evaluating or tabulating it under the sweep's settings would mix experiments silently.
    """
    got = adapter_run_info(adapter_dir).get("config_hash")
    if got != expected:
        raise ValueError(
            f"{adapter_dir} was trained with config hash {got}, but this config gives run '{run_id}' the hash "
            f"{expected}: it was trained with other settings (by hand with --set?). Retrain it with this config "
            f"(snakemake --cores all --forcerun {adapter_dir}, with your --configfile, or delete {Path(adapter_dir).parent}), "
            "or pass the settings it was trained with")


def train_main(cfg: Config, args) -> None:
    """CLI step: train (or resume) the run ``args.run`` of the sweep."""
    run_cfg = cfg.for_run(args.run)
    train_run(run_cfg, args.run)
