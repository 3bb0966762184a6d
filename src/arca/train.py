"""The GRPO training loop with LoRA and token-level credit (``python -m arca train --run R``).

One optimizer step (DESIGN.md "One training step"):
  1. sample K completions per prompt, adapter on, model in eval mode;
  2. grade them -> rewards -> group-normalized advantages;
  3. per micro-batch: at most ONE no-grad adapter-off pass (reference log-probs and base final
     hidden states; its prompt part once per distinct prompt, bit for bit the full pass), only if
     the credit method needs either; then the gradient pass, adapter on,
     giving log-probs (with grad) and, detached, entropies, the adapted final hidden states and
     (hooks) the summed LoRA residual deltas; a method that needs the entropies of the whole
     step (entropy_top20) with several micro-batches first gets them from one no-grad pass each;
  4. credit method -> token weights (-> ``mean_one`` scaling) -> loss -> backward; clip, AdamW
     step, LR schedule;
  5. diagnostics over the whole step, one JSON line in ``metrics.jsonl`` (with the seconds of
     sampling, the update and its phases: forward, backward, reference, optimizer).

A run folder ``runs/<run>/`` holds ``config.yaml`` (resolved), ``checkpoints/step_XXXXXX/``
(adapter, optimizer, scheduler, RNG states, data position, metrics so far) and ``live/`` (the
metrics and curve lines so far, one flushed line per step, to follow a running job) while training, and
at the end ``adapter/`` (loadable from anywhere, with tokenizer and model card: ``arca.cards``),
``metrics.jsonl`` and ``final_weights.json``, each renamed into place only when complete.
Started again on the same folder, training resumes from the last checkpoint and ends identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from arca import credit as credit_lib
from arca import grid
from arca.config import Config, ConfigError, dump_config, parse_run_id, training_hash
from arca.diagnostics import effective_token_ratio, gini, nanmean
from arca.grpo import group_advantages, weighted_pg_loss
from arca.io import JsonlAppender, atomic_path, progress_bar, write_json, write_jsonl, write_text
from arca.labels import label_metrics, rollout_labels
from arca.prompts import prompt_format
from arca.scoring import credit_inputs, policy_scores, reference_scores, step_entropies

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """A NaN or inf appeared in a training forward/backward pass."""


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


def save_checkpoint(
    run_dir: Path, model, opt, sched, state: RunState, data_gen: torch.Generator, run_hash: str, keep: int = 2
) -> None:
    """Adapter + trainer state in ``checkpoints/step_XXXXXX/``, renamed into place when complete."""
    with atomic_path(run_dir / "checkpoints" / f"step_{state.step:06d}") as tmp:
        model.save_pretrained(tmp / "adapter")
        torch.save(
            {
                "step": state.step,
                "metrics": state.metrics,
                "last_weights": state.last_weights,
                "curve": state.curve,
                "run_hash": run_hash,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "data_rng": data_gen.get_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            tmp / "trainer_state.pt",
        )
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
        log.warning(
            "checkpoint %s belongs to another config (hash %s != %s): starting fresh", last, st["run_hash"], run_hash
        )
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


def shuffled_rewards(rewards: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """The null control: the step's rewards permuted among its completions (seeded by run and step)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return rewards[torch.randperm(rewards.numel(), generator=gen)]


# ----------------------------------------------------------------------------- one step
class PhaseClock:
    """Seconds spent in named phases of the update (forward, backward, reference, optimizer).

    On CUDA each phase starts and ends with a synchronize, so it is timed by its own kernels and
    not by those queued before it.
    """

    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


UPDATE_PHASES = ("forward", "backward", "reference", "optimizer")


def _check_finite(t: torch.Tensor, mask: torch.Tensor, what: str, step: int) -> None:
    if not torch.isfinite(t[mask > 0]).all():
        raise NonFiniteError(
            f"step {step}: non-finite {what} in the training forward pass; stopping (last checkpoint kept)"
        )


def train_step(
    cfg: Config, model, generator, opt, sched, problems: list[dict], step: int, seed: int
) -> tuple[dict, list[list[float]]]:
    """One optimizer step on ``problems`` (prompts_per_step records).

    Returns the step's metrics and the masked token weights of every sequence.
    """
    from arca.grading import gold_answer, grade_paper

    method = credit_lib.REGISTRY[cfg.credit.method]
    K = cfg.rollout.k
    t0 = time.perf_counter()
    fixed = {"min_new_tokens": cfg.rollout.min_new_tokens} if cfg.rollout.min_new_tokens > 0 else {}
    r = generator.generate(
        [prompt_format(cfg, generator.tokenizer)(p["problem"]) for p in problems],
        K,
        cfg.rollout.temperature,
        cfg.rollout.top_p,
        cfg.rollout.max_new_tokens,
        top_k=cfg.rollout.top_k,
        **fixed,
    )
    t_gen = time.perf_counter() - t0
    golds = [gold_answer(p["answer"]) for p in problems for _ in range(K)]
    rewards = torch.tensor([float(grade_paper(c, g)) for c, g in zip(r.texts, golds)])  # [N]
    # the null control trains on shuffled rewards; metrics report the true ones
    adv = group_advantages(shuffled_rewards(rewards, seed, step) if cfg.train.shuffle_rewards else rewards, K)  # [N]
    labels = rollout_labels(generator.tokenizer, r, problems, K) if any(p.get("branches") for p in problems) else None
    if credit_lib.LABELS in method.needs and labels is None:
        raise ValueError(
            f"credit method '{cfg.credit.method}' needs the planted forks' labels, but these problems "
            "have none: set data.forks.p_bug > 0 (generated data)"
        )

    if torch.cuda.is_available():  # hand the generation's KV cache back before the update
        torch.cuda.empty_cache()
    t1 = time.perf_counter()
    clock = PhaseClock(next(model.parameters()).device)
    model.train()  # scoring passes in train mode: LoRA dropout active, as in the author's code
    opt.zero_grad(set_to_none=True)
    N, mb = len(r), cfg.train.micro_batch_prompts * K
    need_ref = method.needs_reference_pass
    need_ent = bool(method.needs & credit_lib.NEEDS_ENTROPIES)
    # A step-wide statistic over several micro-batches needs every entropy before the first loss.
    step_ents = None
    if credit_lib.STEP_ENTROPIES in method.needs and N > mb:
        with clock.phase("forward"):
            step_ents = step_entropies(model, r, mb)
    loss_total, all_w, all_m, fallbacks, surprisal, residual = 0.0, [], [], [], [], []
    for s in range(0, N, mb):
        part = r.select(slice(s, s + mb))
        ref = None
        if need_ref:
            with clock.phase("reference"):
                ref = reference_scores(model, part, credit_lib.REF_LOGPROBS in method.needs)
        with clock.phase("forward"):
            pol = policy_scores(
                model,
                part,
                need_ent,
                credit_lib.HIDDEN in method.needs,
                want_lora_delta=credit_lib.LORA_DELTA in method.needs,
            )
            mask = part.completion_mask.to(pol.logprobs.device)  # [b, T]
            _check_finite(pol.logprobs.detach(), mask, "log-probs", step + 1)
            dec = labels.decisive[s : s + mb] if labels is not None and credit_lib.LABELS in method.needs else None
            inputs = credit_inputs(
                part, pol, ref, seed=seed * 1_000_003 + step * 1009 + s, step_ents=step_ents, decisive=dec
            )
            w, fb = credit_lib.token_weights(
                cfg.credit.method, inputs, cfg.credit.sharpen, cfg.credit.eps
            )  # [b, T], [b]
            w_loss = credit_lib.loss_weights(w, mask, cfg.credit.normalization)  # [b, T]
            loss = weighted_pg_loss(pol.logprobs, w_loss, mask, adv[s : s + mb].to(w.device), n_total=N)
        if not torch.isfinite(loss.detach()):
            raise NonFiniteError(f"step {step + 1}: non-finite loss; stopping (last checkpoint kept)")
        with clock.phase("backward"):
            loss.backward()
        loss_total += float(loss.detach())
        all_w.append(w.detach().cpu())
        all_m.append(mask.cpu())
        fallbacks.append(fb.cpu())
        surprisal.append((-pol.logprobs.detach() * mask).sum().cpu() / mask.sum().clamp(min=1).cpu())
        if credit_lib.HIDDEN in method.needs:
            res = credit_lib.arca_signal(inputs)[mask > 0]  # residual norms of real tokens
            residual.append(res.cpu())
        elif credit_lib.LORA_DELTA in method.needs:
            residual.append(credit_lib.arca_layers_signal(inputs)[mask > 0].cpu())
    with clock.phase("optimizer"):
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], cfg.train.grad_clip
        )
        if not torch.isfinite(grad_norm):
            raise NonFiniteError(f"step {step + 1}: non-finite gradient norm; stopping (last checkpoint kept)")
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
    t_upd = time.perf_counter() - t1

    W = _pad_cat(all_w)
    M = _pad_cat(all_m)  # [N, T]
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
        **{f"{phase}_seconds": clock.seconds.get(phase, 0.0) for phase in UPDATE_PHASES},
        "completion_len_mean": float(M.sum(dim=1).mean()),
        "surprisal_mean": float(torch.stack(surprisal).mean()),
        "gini": nanmean(gini(W, M)),
        "eff_ratio": nanmean(effective_token_ratio(W, M)),
        "fallback_frac": float(torch.cat(fallbacks).float().mean()),
        "residual_mean": float(res.mean()) if res is not None and res.numel() else None,
        "residual_max": float(res.max()) if res is not None and res.numel() else None,
        # Extra forward passes beyond the gradient passes: the one-pass and zero-pass guarantees.
        "reference_passes": -(-N // mb) if need_ref else 0,
        "entropy_passes": -(-N // mb) if step_ents is not None else 0,
        **label_metrics(labels, W, M, adv),
    }
    return metrics, [[float(x) for x in w[m > 0]] for w, m in zip(W, M)]


def _pad_cat(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1])) for r in rows])


# ----------------------------------------------------------------------------- the loop
TIMING_KEYS = ("gen_seconds", "update_seconds", "step_seconds", *(f"{phase}_seconds" for phase in UPDATE_PHASES))
# runs/<run>/live/: metrics.jsonl and curve.jsonl as they grow, a line per step, while the run
# trains. Not the declared outputs: Snakemake must never see a declared output that is still
# being written (a killed Snakemake would then refuse the same command with "incomplete files").
LIVE = "live"


def train_run(cfg: Config, run_id: str, run_dir: Path | None = None, stop_after: int | None = None) -> RunState:
    """Train one run (``cfg`` already resolved for it); ``stop_after`` ends early (tests)."""
    from arca.backends import make_generator
    from arca.data import read_records
    from arca.evaluate import curve_point
    from arca.models import count_trainable, load_policy, resolve_device

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
    identity = {
        "run": run_id,
        "label": label,
        "method": cfg.credit.method,
        "rank": cfg.lora.rank,
        "seed": cfg.train.seed,
    }
    every = cfg.eval.every
    curve_set = read_records(cfg.data_dir / "test.jsonl")[: cfg.eval.curve_problems] if every > 0 else []
    # Live progress: live/metrics.jsonl and live/curve.jsonl get one flushed line per step (curve
    # point), starting from what the checkpoint holds; TensorBoard events when monitor.tensorboard is on.
    tb = tensorboard_writer(run_dir / "tensorboard", purge_step=state.step + 1) if cfg.monitor.tensorboard else None
    with (
        JsonlAppender(run_dir / LIVE / "metrics.jsonl", state.metrics) as live_metrics,
        JsonlAppender(run_dir / LIVE / "curve.jsonl", state.curve) as live_curve,
    ):
        if every > 0 and state.step == 0:
            state.curve = [{**curve_point(cfg, generator, curve_set, 0), **identity}]
            live_curve.append(state.curve[-1])
            log_scalars(tb, state.curve[-1], 0, "heldout/")

        bar = progress_bar(cfg.train.steps, run_id, unit="step", initial=state.step)
        while state.step < cfg.train.steps:
            # prompts drawn with replacement from a seeded generator whose state is checkpointed
            idx = torch.randint(len(records), (cfg.train.prompts_per_step,), generator=data_gen).tolist()
            m, state.last_weights = train_step(
                cfg, model, generator, opt, sched, [records[i] for i in idx], state.step, cfg.train.seed
            )
            state.metrics.append({**m, **identity})
            state.step += 1
            live_metrics.append(state.metrics[-1])
            log_scalars(tb, m, state.step, "train/")
            if every > 0 and (state.step % every == 0 or state.step == cfg.train.steps):
                state.curve.append({**curve_point(cfg, generator, curve_set, state.step), **identity})
                live_curve.append(state.curve[-1])
                log_scalars(tb, state.curve[-1], state.step, "heldout/")
            bar.update(1)
            bar.set_postfix(
                reward=f"{m['reward_mean']:.3f}", gini=f"{m['gini'] or 0:.2f}", s_per_step=f"{m['step_seconds']:.2f}"
            )
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
        raise ConfigError(
            "key 'monitor.tensorboard' is true but the tensorboard package is not installed: "
            "pip install 'arca-bench[tensorboard]' (or set monitor.tensorboard: false)"
        ) from None
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


def _finish(cfg: Config, run_dir: Path, model, tok, state: RunState, identity: dict, n_trainable: int) -> None:
    """Final outputs, each renamed into place when complete; then the checkpoints go.

    The adapter folder is self-contained (``arca.cards``): the base recorded so that peft finds it
    from any working directory, the tokenizer, ``arca_run.json`` and a filled model card.
    """
    from arca.cards import RUN_INFO, base_model_reference, final_metrics, model_card

    write_json(
        run_dir / "final_weights.json",
        {**identity, "step": state.step, "trainable_params": n_trainable, "weights": state.last_weights},
    )
    write_jsonl(run_dir / "metrics.jsonl", state.metrics)
    write_jsonl(run_dir / "curve.jsonl", state.curve)
    info = {
        **identity,
        "steps": state.step,
        "trainable_params": n_trainable,
        "final_metrics": final_metrics(state.metrics, state.curve),
    }
    for peft_cfg in model.peft_config.values():
        peft_cfg.base_model_name_or_path = base_model_reference(cfg)
    with atomic_path(run_dir / "adapter") as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / RUN_INFO, info)
        write_text(tmp / "README.md", model_card(cfg, info))  # replaces peft's blank template
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / LIVE, ignore_errors=True)  # the finished metrics.jsonl and curve.jsonl hold it all


def train_main(cfg: Config, args) -> None:
    """CLI step: train (or resume) the run ``args.run`` of the sweep."""
    run_cfg = grid.for_run(cfg, args.run)
    train_run(run_cfg, args.run)
