"""The GRPO training loop with LoRA and token-level credit (``python -m arca train --run R``).

One optimizer step (docs/architecture.md "One training step"):
  1. sample K completions per prompt, adapter on, model in eval mode;
  2. grade them -> rewards -> group-normalized advantages;
  3. per micro-batch: at most ONE no-grad adapter-off pass (reference log-probs and base final
     hidden states; its prompt part once per distinct prompt, bit for bit the full pass), only if
     the credit method needs either; then the gradient pass, adapter on (its prompt part once per
     distinct prompt with ``train.share_prompt``, else once per row), giving log-probs (with grad)
     and, detached, entropies, the adapted final hidden states and (hooks, full pass) the summed
     LoRA residual deltas; a method that needs the entropies of the whole step (entropy_top20)
     with several micro-batches first gets them from one no-grad pass each;
  4. credit method -> token weights (-> ``mean_one`` scaling) -> loss -> backward; clip, AdamW
     step, LR schedule;
  5. diagnostics over the whole step, one JSON line in ``metrics.jsonl`` (with the seconds of
     sampling, the update and its phases: forward, backward, reference, optimizer).

A run folder ``runs/<run>/`` (``arca.paths.RunPaths``) holds ``config.yaml`` (resolved),
``checkpoints/`` and ``live/`` (the metrics and curve lines so far, one flushed line per step, to
follow a running job) while training, and at the end ``adapter/``, ``metrics.jsonl``,
``curve.jsonl`` and ``final_weights.json``, each renamed into place only when complete
(``arca.run_files``). Started again on the same folder, training resumes from the last checkpoint
and ends identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from arca import credit as credit_lib
from arca import credit_passes
from arca.backends import make_generator
from arca.cards import adapter_run_info
from arca.config import (
    STEP_COLUMNS,
    Config,
    ConfigError,
    NonFiniteError,
    dump_config,
    for_run,
    parse_run_id,
    run_identity,
    training_hash,
)
from arca.data import read_records
from arca.diagnostics import effective_token_ratio, gini, nanmean
from arca.grading import gold_answer, grade_paper
from arca.grpo import group_advantages, weighted_pg_loss
from arca.io import JsonlAppender, folder_lock, progress_bar, read_jsonl, write_text
from arca.labels import label_metrics, rollout_labels
from arca.learning_curve import curve_problems, heldout_point, start_point
from arca.models import count_trainable, load_policy, resolve_device
from arca.optimizer import grpo_adamw
from arca.paths import RunPaths, paths_of
from arca.probe import probe_problems
from arca.prompts import prompt_format
from arca.run_files import RunState, finish_run, load_checkpoint, log_scalars, save_checkpoint, tensorboard_writer
from arca.sampling import Sampling
from arca.scoring import credit_inputs, policy_scores, reference_scores, step_entropies

log = logging.getLogger(__name__)


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


def _check_adapter_finite(params: list[torch.Tensor], step: int) -> None:
    if not all(bool(torch.isfinite(p.detach()).all()) for p in params):
        raise NonFiniteError(
            f"step {step}: non-finite adapter weights after the optimizer step; stopping "
            "(no checkpoint written, the last one kept)"
        )


Reward = Callable[[str, str], bool]  # (completion, gold answer) -> solved


def sample_rollouts(cfg: Config, generator, problems: list[dict]):
    """K completions per problem with the adapter on, under the rollout settings."""
    fmt = prompt_format(cfg, generator.tokenizer)  # once per step (it reads shots.jsonl), not once per prompt
    return generator.generate([fmt(p["problem"]) for p in problems], Sampling.from_rollout(cfg.rollout))


def grade_rollouts(texts: list[str], problems: list[dict], k: int, reward: Reward) -> torch.Tensor:
    """The reward of every completion (``k`` per problem, problem-major), as floats. Returns ``[N]``."""
    golds = [gold_answer(p["answer"]) for p in problems for _ in range(k)]
    return torch.tensor([float(reward(c, g)) for c, g in zip(texts, golds)])


def step_labels(cfg: Config, method, tokenizer, r, problems: list[dict]):
    """The planted forks' labels of the rollouts (None when the problems have no forks)."""
    labels = rollout_labels(tokenizer, r, problems, cfg.rollout.k) if any(p.get("branches") for p in problems) else None
    if credit_lib.LABELS in method.needs and labels is None:
        raise ConfigError(
            f"credit method '{cfg.credit.method}' needs the planted forks' labels, but these problems "
            "have none: set data.forks.p_bug > 0 (generated data)"
        )
    return labels


@dataclass
class UpdateParts:
    """What the micro-batches of one update leave for the step's metrics."""

    loss: float = 0.0
    weights: list[torch.Tensor] = field(default_factory=list)  # [b, T] each
    masks: list[torch.Tensor] = field(default_factory=list)  # [b, T] each
    fallbacks: list[torch.Tensor] = field(default_factory=list)  # [b] each
    surprisal: list[torch.Tensor] = field(default_factory=list)  # scalar each
    residual: list[torch.Tensor] = field(default_factory=list)  # residual norms of real tokens
    entropy_passes: int = 0


def _micro_batch(
    cfg, method, model, part, adv, lab, inputs_seed: int, step_ents, step: int, n_total: int, clock, extra=None
):
    """Credit weights, loss and backward of one micro-batch (``extra``: its ``credit_passes.Batch``
    when the method needs the literature's extra passes). Returns ``(loss, weights, mask, fallback,
    policy scores, credit inputs)``."""
    ref = None
    if method.needs_reference_pass:
        with clock.phase("reference"):
            ref = reference_scores(model, part, credit_lib.REF_LOGPROBS in method.needs, cfg.train.share_prompt)
    with clock.phase("forward"):
        pol = policy_scores(
            model,
            part,
            bool(method.needs & credit_lib.NEEDS_ENTROPIES),
            credit_lib.HIDDEN in method.needs,
            want_lora_delta=credit_lib.LORA_DELTA in method.needs,
            share_prompt=cfg.train.share_prompt,
        )
        mask = part.completion_mask.to(pol.logprobs.device)  # [b, T]
        _check_finite(pol.logprobs.detach(), mask, "log-probs", step + 1)
        inputs = credit_inputs(part, pol, ref, seed=inputs_seed, step_ents=step_ents, labels=lab)
        if extra is not None:
            inputs = credit_passes.complete(cfg, method.needs, model, part, inputs, extra)
        w, fb = credit_lib.token_weights(cfg.credit.method, inputs, cfg.credit.sharpen, cfg.credit.eps)  # [b, T], [b]
        w_loss = credit_lib.loss_weights(w, mask, cfg.credit.normalization)  # [b, T]
        loss = weighted_pg_loss(pol.logprobs, w_loss, mask, adv.to(w.device), n_total=n_total)
    if not torch.isfinite(loss.detach()):
        raise NonFiniteError(f"step {step + 1}: non-finite loss; stopping (last checkpoint kept)")
    with clock.phase("backward"):
        loss.backward()
    return float(loss.detach()), w, mask, fb, pol, inputs


def _update(
    cfg: Config, method, model, r, adv: torch.Tensor, labels, step: int, seed: int, clock, extra=None
) -> UpdateParts:
    """Losses and gradients of every micro-batch of the step's rollouts (the gradient accumulates);
    ``extra`` is the step's ``credit_passes.Batch`` (None: the method needs no extra pass)."""
    N, mb = len(r), cfg.train.micro_batch_prompts * cfg.rollout.k
    out = UpdateParts()
    # A step-wide statistic over several micro-batches needs every entropy before the first loss.
    step_ents = None
    if credit_lib.STEP_ENTROPIES in method.needs and N > mb:
        with clock.phase("forward"):
            step_ents = step_entropies(model, r, mb)
        out.entropy_passes = -(-N // mb)
    for s in range(0, N, mb):
        lab = labels.select(slice(s, s + mb)) if labels is not None and credit_lib.LABELS in method.needs else None
        part, inputs_seed = r.select(slice(s, s + mb)), seed * 1_000_003 + step * 1009 + s
        loss, w, mask, fb, pol, inputs = _micro_batch(
            cfg,
            method,
            model,
            part,
            adv[s : s + mb],
            lab,
            inputs_seed,
            step_ents,
            step,
            N,
            clock,
            extra and extra.select(s, s + mb),
        )
        out.loss += loss
        out.weights.append(w.detach().cpu())
        out.masks.append(mask.cpu())
        out.fallbacks.append(fb.cpu())
        out.surprisal.append((-pol.logprobs.detach() * mask).sum().cpu() / mask.sum().clamp(min=1).cpu())
        if credit_lib.HIDDEN in method.needs:
            out.residual.append(credit_lib.arca_signal(inputs)[mask > 0].cpu())
        elif credit_lib.LORA_DELTA in method.needs:
            out.residual.append(credit_lib.arca_layers_signal(inputs)[mask > 0].cpu())
    return out


def _extra_batch(cfg: Config, problems: list[dict], trained: torch.Tensor, adv: torch.Tensor, generator):
    """The step's ``credit_passes.Batch``: the rewards the advantages come from, the prompts and golds."""
    K, fmt = cfg.rollout.k, prompt_format(cfg, generator.tokenizer)
    prompts = [fmt(p["problem"]) for p in problems for _ in range(K)]
    golds = [gold_answer(p["answer"]) for p in problems for _ in range(K)]
    return credit_passes.Batch(trained, adv, K, prompts, golds, generator)


def _optimizer_step(cfg: Config, model, opt, sched, step: int) -> tuple[float, float, float]:
    """Clip, AdamW step, schedule step. Returns ``(lr, grad_norm, update_norm)``."""
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
    if not torch.isfinite(grad_norm):
        raise NonFiniteError(f"step {step + 1}: non-finite gradient norm; stopping (last checkpoint kept)")
    lr = sched.get_last_lr()[0]
    before = [p.detach().clone() for p in params]
    opt.step()
    _check_adapter_finite(params, step + 1)  # before anything can write these weights
    sched.step()
    # the step actually taken (Adam rescales the gradient): ||theta_after - theta_before||_2
    update_norm = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(params, before))))
    return lr, float(grad_norm), update_norm


def train_step(
    cfg: Config,
    model,
    generator,
    opt,
    sched,
    problems: list[dict],
    step: int,
    seed: int,
    reward: Reward = grade_paper,
) -> tuple[dict, list[list[float]]]:
    """One optimizer step on ``problems`` (prompts_per_step records), as docs/architecture.md
    "One training step" lists it. Returns the step's metrics and the masked token weights of every
    sequence."""
    method = credit_lib.REGISTRY[cfg.credit.method]
    K = cfg.rollout.k
    t0 = time.perf_counter()
    r = sample_rollouts(cfg, generator, problems)
    t_gen = time.perf_counter() - t0
    rewards = grade_rollouts(r.texts, problems, K, reward)  # [N]
    # the null control trains on shuffled rewards; metrics report the true ones
    trained = shuffled_rewards(rewards, seed, step) if cfg.train.shuffle_rewards else rewards  # [N]
    adv = group_advantages(trained, K)  # [N]
    labels = step_labels(cfg, method, generator.tokenizer, r, problems)
    if torch.cuda.is_available():  # hand the generation's KV cache back before the update
        torch.cuda.empty_cache()
    t1 = time.perf_counter()
    clock = PhaseClock(next(model.parameters()).device)
    model.train()  # scoring passes in train mode: LoRA dropout active, as in the author's code
    opt.zero_grad(set_to_none=True)
    extra = _extra_batch(cfg, problems, trained, adv, generator) if method.needs & credit_lib.EXTRA_NEEDS else None
    parts = _update(cfg, method, model, r, adv, labels, step, seed, clock, extra)
    with clock.phase("optimizer"):
        lr, grad_norm, update_norm = _optimizer_step(cfg, model, opt, sched, step)
    t_upd = time.perf_counter() - t1
    W, M = _pad_cat(parts.weights), _pad_cat(parts.masks)  # [N, T]
    passes = -(-len(r) // (cfg.train.micro_batch_prompts * K))
    metrics = {
        "step": step + 1,
        "loss": parts.loss,
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=True)) if len(r) > 1 else 0.0,
        "lr": lr,
        "grad_norm": grad_norm,
        "update_norm": update_norm,
        "gen_seconds": t_gen,
        "update_seconds": t_upd,
        "step_seconds": time.perf_counter() - t0,
        **{f"{phase}_seconds": clock.seconds.get(phase, 0.0) for phase in UPDATE_PHASES},
        **_weight_metrics(parts, W, M),
        # Extra forward passes beyond the gradient passes: the one-pass and zero-pass guarantees.
        "reference_passes": passes if method.needs_reference_pass else 0,
        "entropy_passes": parts.entropy_passes,
        **label_metrics(labels, W, M, adv),
    }
    return metrics, [[float(x) for x in w[m > 0]] for w, m in zip(W, M)]


def _weight_metrics(parts: UpdateParts, W: torch.Tensor, M: torch.Tensor) -> dict:
    """Completion length, surprisal, concentration of the weights, fall-backs and residual norms."""
    res = torch.cat(parts.residual) if parts.residual else None
    return {
        "completion_len_mean": float(M.sum(dim=1).mean()),
        "surprisal_mean": float(torch.stack(parts.surprisal).mean()),
        "gini": nanmean(gini(W, M)),
        "eff_ratio": nanmean(effective_token_ratio(W, M)),
        "fallback_frac": float(torch.cat(parts.fallbacks).float().mean()),
        "residual_mean": float(res.mean()) if res is not None and res.numel() else None,
        "residual_max": float(res.max()) if res is not None and res.numel() else None,
    }


def _pad_cat(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1])) for r in rows])


# ----------------------------------------------------------------------------- the loop
TIMING_KEYS = ("gen_seconds", "update_seconds", "step_seconds", *(f"{phase}_seconds" for phase in UPDATE_PHASES))


@dataclass
class Trainer:
    """What one run's loop steps through: the policy, its optimizer, schedule and data stream."""

    model: Any
    tok: Any
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    data_gen: torch.Generator
    generator: Any
    state: RunState


def _start(cfg: Config, run: RunPaths, run_hash: str) -> Trainer:
    """Load the policy and build the optimizer, schedule and data stream; resume from a checkpoint.

    The order of the seeded calls is the run's random stream: it must not change.
    """
    torch.manual_seed(cfg.train.seed)
    model, tok = load_policy(cfg)
    opt = grpo_adamw(model, cfg)
    sched = lr_scheduler(cfg, opt)
    data_gen = torch.Generator().manual_seed(cfg.train.seed)
    state = load_checkpoint(run, model, opt, sched, data_gen, run_hash) or RunState()
    generator = make_generator(cfg, model, tok)
    return Trainer(model, tok, opt, sched, data_gen, generator, state)


@dataclass
class Progress:
    """Where a run's progress goes as it trains: the state's lists, the ``live/`` lines (one flushed
    line per step or curve point) and TensorBoard events (``monitor.tensorboard``)."""

    cfg: Config
    state: RunState
    identity: dict
    curve_set: list[dict]
    live_metrics: JsonlAppender
    live_curve: JsonlAppender
    tb: Any = None
    probe_rows: list[dict] = field(default_factory=list)  # the credit-precision probe's rollouts (or none)
    probe_set: list[dict] = field(default_factory=list)  # ... and their problems
    reward: Reward = grade_paper  # the run's grader, for the held-out curve points too

    def step_done(self, m: dict) -> None:
        line = {**m, **self.identity}
        missing = [c for c in STEP_COLUMNS if c not in line]
        if missing:  # the report reads every one of them from every line
            raise KeyError(f"a training step's metrics lack {missing} (arca.config.STEP_COLUMNS)")
        self.state.metrics.append(line)
        self.live_metrics.append(self.state.metrics[-1])
        log_scalars(self.tb, m, self.state.step, "train/")

    def curve(self, generator, step: int) -> None:
        # step 0 is the base model in every run: shared from `curve-start` where it can be
        shared = start_point(self.cfg, self.reward, bool(self.probe_rows)) if step == 0 else None
        point = shared or heldout_point(
            self.cfg, generator, self.curve_set, step, self.reward, self.probe_rows, self.probe_set
        )
        self.state.curve.append({**point, **self.identity})
        self.live_curve.append(self.state.curve[-1])
        log_scalars(self.tb, self.state.curve[-1], step, "heldout/")


def training_probe(cfg: Config) -> tuple[list[dict], list[dict]]:
    """The probe rollouts and problems the curve points score (none without curve points or probe).

    The DAG makes the probe before any run (a declared input of ``train``); a run started by hand
    without it trains the same, and its curve points leave out the decisions' log-probs."""
    if cfg.eval.every <= 0 or cfg.eval.probe_problems <= 0:
        return [], []
    path = paths_of(cfg).probe_rollouts
    if not path.is_file():
        log.warning("%s is missing: the curve points leave out the decisions' log-probs", path)
        return [], []
    return read_jsonl(path), probe_problems(cfg)


def train_run(
    cfg: Config,
    run_id: str,
    run_dir: Path | None = None,
    stop_after: int | None = None,
    reward: Reward = grade_paper,
) -> RunState:
    """Train one run (``cfg`` already resolved for it) in ``run_dir`` (default: its folder from
    ``arca.paths``) on ``reward`` (the paper's grader); ``stop_after`` ends early (tests)."""
    run = RunPaths(Path(run_dir)) if run_dir is not None else paths_of(cfg).run(run_id)
    parse_run_id(run_id)  # a malformed run id fails before any work
    run_hash = training_hash(cfg)
    if resolve_device(cfg.device).type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    records = read_records(paths_of(cfg).data.train)
    with folder_lock(run.lock, f"run folder {run.root}"):  # one trainer per run folder
        return _train_locked(cfg, run, run_id, records, run_hash, stop_after, reward)


def _train_locked(
    cfg: Config,
    run: RunPaths,
    run_id: str,
    records: list[dict],
    run_hash: str,
    stop_after: int | None,
    reward: Reward,
) -> RunState:
    write_text(run.config, dump_config(cfg))
    t = _start(cfg, run, run_hash)
    identity = run_identity(run_id, cfg.credit.method)
    curve_set = curve_problems(cfg)
    probe_rows, probe_set = training_probe(cfg)
    # The live/ files start from what the checkpoint holds. They are not the declared outputs:
    # Snakemake must never see a declared output that is still being written (a killed Snakemake
    # would then refuse the same command with "incomplete files").
    tb = tensorboard_writer(run, purge_step=t.state.step + 1) if cfg.monitor.tensorboard else None
    with (
        JsonlAppender(run.live_metrics, t.state.metrics) as live_metrics,
        JsonlAppender(run.live_curve, t.state.curve) as live_curve,
    ):
        _loop(
            cfg,
            run,
            t,
            records,
            Progress(cfg, t.state, identity, curve_set, live_metrics, live_curve, tb, probe_rows, probe_set, reward),
            run_hash,
            stop_after,
            reward,
        )
    if tb is not None:
        tb.close()
    if t.state.step >= cfg.train.steps:
        finish_run(cfg, run, t.model, t.tok, t.state, {**identity, "config_hash": run_hash}, count_trainable(t.model))
    return t.state


def _loop(
    cfg: Config,
    run: RunPaths,
    t: Trainer,
    records: list[dict],
    progress: Progress,
    run_hash: str,
    stop_after: int | None,
    reward: Reward,
) -> None:
    """Optimizer steps from ``t.state.step`` to ``train.steps`` (or ``stop_after``), with the
    held-out curve points and checkpoints."""
    state, every = t.state, cfg.eval.every
    if every > 0 and state.step == 0:
        progress.curve(t.generator, 0)
    bar = progress_bar(cfg.train.steps, progress.identity["run"], unit="step", initial=state.step)
    while state.step < cfg.train.steps:
        # prompts drawn with replacement from a seeded generator whose state is checkpointed
        idx = torch.randint(len(records), (cfg.train.prompts_per_step,), generator=t.data_gen).tolist()
        try:
            m, state.last_weights = train_step(
                cfg, t.model, t.generator, t.opt, t.sched, [records[i] for i in idx], state.step, cfg.train.seed, reward
            )
        except NonFiniteError as e:  # name the run (a sweep's logs interleave many) and the step
            where = "" if str(e).startswith("step ") else f"step {state.step + 1}: "
            raise NonFiniteError(f"run {progress.identity['run']}: {where}{e}") from None
        state.step += 1
        progress.step_done(m)
        if every > 0 and (state.step % every == 0 or state.step == cfg.train.steps):
            progress.curve(t.generator, state.step)
        bar.update(1)
        bar.set_postfix(
            reward=f"{m['reward_mean']:.3f}", gini=f"{m['gini'] or 0:.2f}", s_per_step=f"{m['step_seconds']:.2f}"
        )
        if state.step % cfg.train.checkpoint_every == 0 or state.step == cfg.train.steps:
            save_checkpoint(run, t.model, t.opt, t.sched, state, t.data_gen, run_hash)
        if stop_after is not None and state.step >= stop_after:
            break
    bar.close()


def train_main(cfg: Config, args) -> None:
    """CLI step: train (or resume) the run ``args.run`` of the sweep."""
    run_cfg = for_run(cfg, args.run)
    run = paths_of(run_cfg).run(args.run)
    if finished_run(run) and not getattr(args, "force", False):
        info = adapter_run_info(run.adapter)
        run_hash = training_hash(run_cfg)
        if info.get("config_hash") == run_hash:
            log.warning("%s is finished (%s); nothing to do. --force trains it again from scratch", args.run, run.root)
            return
        raise ConfigError(
            f"{args.run} is finished with other settings (config hash {info.get('config_hash')}, "
            f"these are {run_hash}) in {run.root}; pass --force to train it again from scratch"
        )
    if getattr(args, "force", False):
        clear_run(run)
    train_run(run_cfg, args.run)


def finished_run(run: RunPaths) -> bool:
    """Whether every declared output of the run is in place."""
    return all(p.exists() for p in (run.adapter, run.metrics, run.final_weights, run.curve))


def clear_run(run: RunPaths) -> None:
    """Remove a run's outputs, checkpoints and live files, so that it trains from scratch."""
    for p in (run.adapter, run.metrics, run.final_weights, run.curve, run.checkpoints, run.live):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
