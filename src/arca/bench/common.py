"""Shared pieces of the benchmarks: settings, the per-method runner of our trainer, peak memory."""

from __future__ import annotations

import logging
import os
import platform
import statistics
import threading
from typing import Any

import torch

from arca.config import Config, from_dict, to_dict
from arca.paths import paths_of
from arca.train import UPDATE_PHASES

log = logging.getLogger(__name__)


DEFAULT_STEPS = 5
PHASE_KEYS = tuple(f"{phase}_seconds" for phase in UPDATE_PHASES)  # the update's parts
DEFAULT_LENGTHS = "64,128,256"
DEFAULT_BLOCKS = 3  # R: ours-N / TRL-N blocks
LENGTH_STEPS = 2  # timed steps per method and length (after one warm-up)

# What TRL's GRPOTrainer does differently from our train_step (both directions); goes into the output.
DIFFERENCES_FROM_TRL = [
    "TRL computes per-token entropies in every loss pass (for its `entropy` metric); we compute them only "
    "for entropy_reduction.",
    "TRL's loss carries the PPO-style importance ratio exp(logp - old_logp) with clipping; with one "
    "generation per optimizer step and num_iterations = 1 old_logp is the detached logp, so TRL runs no "
    "extra old-log-prob pass here, but the ratio/clip arithmetic remains. Ours is plain on-policy REINFORCE.",
    "TRL's group advantage divides by (std + 1e-4) with the unbiased std; ours by max(std, 1e-8) "
    "(docs/method.md): same work, slightly different values.",
    "TRL generates with the model in train mode (LoRA dropout active while sampling); we sample in eval mode.",
    "TRL tokenizes prompts, pads/unpads completions to Python lists and rebuilds tensors each step, and "
    "gathers metrics (accelerate gather, reward/length statistics); we keep tensors from generate().",
    "TRL scores with its fused LM head (chunked log-prob + entropy, no full logits); we run the head on "
    "the completion positions only and take chunked log-probs with a custom backward.",
    "TRL passes no position_ids (they follow from the attention mask inside the model); we pass the "
    "positions generate() used, explicitly.",
    "Our gradient pass runs each distinct prompt once for its K completions (train.share_prompt), "
    "sharing its keys, values and LoRA-dropout draw; TRL runs the full prompt + completion per row. "
    "The log-probs are the same up to rounding; the work of the prompt part is 1/K.",
    "Our sampler (lean decoder) folds the LoRA adapter into the weights and runs the prompt once per "
    "group; TRL samples through peft's modules with generate().",
    "Both run fixed-length completions here (min_new_tokens = max_new_tokens, EOS suppressed).",
]


# ----------------------------------------------------------------------------- helpers
def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


def parse_lengths(text: str | None) -> list[int]:
    """``"64,128,256"`` -> [64, 128, 256]; each must be a positive integer."""
    out = []
    for part in (text or DEFAULT_LENGTHS).split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) <= 0:
            raise ValueError(f"--lengths: {part!r} is not a positive integer")
        out.append(int(part))
    if not out:
        raise ValueError("--lengths names no length")
    return out


def top_rank(cfg: Config) -> int:
    """The largest LoRA rank of the sweep (the rank of the baselines in the paper design)."""
    return max(r for cell in cfg.sweep.cells for r in cell.ranks)


def bench_config(cfg: Config, method: str, rank: int, length: int) -> Config:
    """``cfg`` with this method, LoRA rank and a forced completion length."""
    raw = to_dict(cfg)
    raw["credit"]["method"] = method
    raw["lora"]["rank"] = rank
    raw["rollout"]["max_new_tokens"] = length
    raw["rollout"]["min_new_tokens"] = length
    # Every forced token is computed, so every one counts: the author's mask would drop a generated
    # pad token (pad != EOS in the pretrained-here model) and undercount the work, as TRL does not.
    raw["rollout"]["completion_mask"] = "through_eos"
    return from_dict(raw, source="bench")


def ensure_inputs(cfg: Config) -> None:
    """Build the data and the base model first when they are missing."""
    from arca.data import prepare_data
    from arca.models import build_base

    if not (paths_of(cfg).data.train).is_file():
        log.info("bench: %s is missing; running prepare-data first", paths_of(cfg).data.train)
        prepare_data(cfg)
    if not (paths_of(cfg).base / "config.json").is_file():
        log.info("bench: no base model in %s; running build-base first (this may take minutes)", paths_of(cfg).base)
        build_base(cfg)


class PeakMemory:
    """Peak memory of a block in MB: CUDA ``max_memory_allocated``, or on CPU the process's peak RSS
    sampled every ``interval`` seconds by a background thread (psutil)."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.peak_mb: float | None = None
        self.start_mb: float | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        import psutil

        self._proc = psutil.Process(os.getpid())
        self._peak = self._proc.memory_info().rss
        self.start_mb = self._peak / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self._peak, self._proc.memory_info().rss) / 2**20


# ----------------------------------------------------------------------------- our trainer
class OurRunner:
    """One method's fresh policy, optimizer and schedule, stepping through ``train_step``."""

    def __init__(self, cfg: Config, device: torch.device):
        from arca.backends import make_generator
        from arca.models import load_policy
        from arca.optimizer import grpo_adamw
        from arca.train import lr_scheduler

        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.train.seed)
        self.model, self.tok = load_policy(cfg)
        self.opt = grpo_adamw(self.model, cfg)
        self.sched = lr_scheduler(cfg, self.opt)
        self.generator = make_generator(cfg, self.model, self.tok)
        self.steps_done = 0

    def step(self, problems: list[dict], seed: int) -> dict:
        from arca.train import train_step

        torch.manual_seed(seed)  # every method samples from the same RNG state at the same step
        with PeakMemory(self.device) as mem:
            m, _ = train_step(
                self.cfg,
                self.model,
                self.generator,
                self.opt,
                self.sched,
                problems,
                self.steps_done,
                self.cfg.train.seed,
            )
        self.steps_done += 1
        tokens = m["completion_len_mean"] * len(problems) * self.cfg.rollout.k
        return {
            "gen_seconds": m["gen_seconds"],
            "update_seconds": m["update_seconds"],
            "step_seconds": m["step_seconds"],
            **{k: m[k] for k in PHASE_KEYS},
            "tokens": tokens,
            "tokens_per_second": tokens / m["step_seconds"],
            "peak_mem_mb": mem.peak_mb,
            "mem_start_mb": mem.start_mb,
            "reference_passes": m["reference_passes"],
            "threads": torch.get_num_threads(),
        }


def summarize(rows: list[dict]) -> dict:
    keys = (
        "gen_seconds",
        "update_seconds",
        "step_seconds",
        *PHASE_KEYS,
        "tokens_per_second",
        "peak_mem_mb",
        "reference_passes",
    )
    out = {k: median([r.get(k) for r in rows]) for k in keys} | {"n": len(rows)}
    # growth over the memory in use when the step began (on CPU the process RSS also holds the other
    # methods' models and the allocator's cache, so the growth is the more telling number there)
    out["peak_mem_growth_mb"] = median(
        [
            r["peak_mem_mb"] - r["mem_start_mb"]
            for r in rows
            if r.get("peak_mem_mb") is not None and r.get("mem_start_mb") is not None
        ]
    )
    return out


def machine_info(device: torch.device) -> dict:
    import importlib.metadata as md

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for pkg in ("torch", "transformers", "peft", "trl"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    return info


def problems_per_step(cfg: Config, n_steps: int) -> list[list[dict]]:
    from arca.data import read_records

    records = read_records(paths_of(cfg).data.train)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    return [
        [records[i] for i in torch.randint(len(records), (cfg.train.prompts_per_step,), generator=gen).tolist()]
        for _ in range(n_steps)
    ]
