"""``python -m arca gpu-smoke``: a few GRPO steps of every credit method on the config's small model.

A self-contained check that a (GPU) machine runs the training step end to end, and a first look at
its cost: in a temporary folder it generates the arithmetic train set in memory, pretrains the
small Qwen3 model of ``model.pretrain`` (``build-base``), then for EVERY method of
``arca.credit.REGISTRY`` runs ``--steps`` GRPO steps with a fresh LoRA adapter through
``arca.train.train_step`` (rollouts with ``rollout.backend``, paper-grader rewards, scoring passes,
weights, loss, optimizer step), and prints one table row per method: median generation and update
seconds per step, mean reward, Gini, EffN/T, and peak memory (``torch.cuda.max_memory_allocated``
on CUDA, reset per method; the process's peak RSS so far on CPU).

It needs only torch, transformers and peft (no network, no datasets, math-verify, snakemake,
pandas or matplotlib), so it runs on a bare GPU machine with this package installed ``--no-deps``.
The exit code is 0 when every method ran and produced finite numbers; a method that fails is
shown as FAILED in the table and the step then raises.
"""

from __future__ import annotations

import gc
import logging
import math
import resource
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

import torch

from arca.config import Config, InputError, from_dict, to_dict
from arca.optimizer import grpo_adamw
from arca.paths import paths_of

log = logging.getLogger(__name__)

COLUMNS = ("method", "gen_s", "update_s", "reward", "gini", "effn_t", "peak_mem_mb")


@dataclass
class SmokeRow:
    method: str
    gen_s: float = math.nan  # median over steps
    update_s: float = math.nan  # median over steps
    reward: float = math.nan  # mean over steps
    gini: float = math.nan  # mean over steps
    effn_t: float = math.nan  # mean over steps
    peak_mem_mb: float = math.nan
    error: str = ""

    def cells(self) -> list[str]:
        if self.error:
            return [self.method] + ["FAILED"] + [""] * (len(COLUMNS) - 2)
        return [
            self.method,
            f"{self.gen_s:.3f}",
            f"{self.update_s:.3f}",
            f"{self.reward:.3f}",
            f"{self.gini:.3f}",
            f"{self.effn_t:.3f}",
            f"{self.peak_mem_mb:.0f}",
        ]

    @property
    def finite(self) -> bool:
        return not self.error and all(
            math.isfinite(v) for v in (self.gen_s, self.update_s, self.reward, self.gini, self.effn_t, self.peak_mem_mb)
        )


def with_keys(cfg: Config, **dotted) -> Config:
    """A validated copy of ``cfg`` with ``section__key=value`` replaced (``paths__results=...``)."""
    raw = to_dict(cfg)
    for key, value in dotted.items():
        section, name = key.split("__")
        raw[section][name] = value
    return from_dict(raw, source="gpu-smoke")


def _mean(values) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def prepare_base(cfg: Config) -> float:
    """Generated train set (written where ``build-base`` reads it) and the pretrained base; seconds."""
    from arca.data import make_splits
    from arca.io import write_jsonl
    from arca.models import build_base

    start = time.perf_counter()
    train, _ = make_splits(cfg.data)
    write_jsonl(paths_of(cfg).data.train, train)
    build_base(cfg)
    return time.perf_counter() - start


def run_method(
    cfg: Config, method: str, records: list[dict], steps: int, device: torch.device, shared: dict
) -> SmokeRow:
    """``steps`` GRPO steps of ``method`` with a fresh adapter; its table row."""
    from arca.backends import make_generator
    from arca.models import load_policy
    from arca.train import lr_scheduler, train_step

    cfg = with_keys(cfg, credit__method=method)
    torch.manual_seed(cfg.train.seed)
    model, tok = load_policy(cfg)
    opt = grpo_adamw(model, cfg)
    sched = lr_scheduler(cfg, opt)
    generator = shared.get("generator")
    if generator is not None and hasattr(generator, "use_model"):  # one vLLM engine for every method
        generator.use_model(model)
    else:
        generator = make_generator(cfg, model, tok)
        if hasattr(generator, "use_model"):
            shared["generator"] = generator
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    data_gen = torch.Generator().manual_seed(cfg.train.seed)
    metrics = []
    for step in range(steps):
        idx = torch.randint(len(records), (cfg.train.prompts_per_step,), generator=data_gen).tolist()
        m, _ = train_step(cfg, model, generator, opt, sched, [records[i] for i in idx], step, cfg.train.seed)
        metrics.append(m)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row = SmokeRow(
        method,
        gen_s=statistics.median(m["gen_seconds"] for m in metrics),
        update_s=statistics.median(m["update_seconds"] for m in metrics),
        reward=_mean(m["reward_mean"] for m in metrics),
        gini=_mean(m["gini"] for m in metrics),
        effn_t=_mean(m["eff_ratio"] for m in metrics),
        peak_mem_mb=peak_memory_mb(device),
    )
    del model, opt, sched
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def format_table(rows: list[SmokeRow]) -> str:
    cells = [list(COLUMNS)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in cells
    ]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def run_smoke(cfg: Config, steps: int, workdir: str | None = None) -> tuple[list[SmokeRow], dict]:
    """Base model, then every registry method; returns the rows and run information."""
    from arca.credit import REGISTRY
    from arca.data import read_records
    from arca.models import resolve_device

    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="arca-smoke-", dir=workdir) as tmp:
        cfg = with_keys(cfg, paths__results=tmp)
        base_s = prepare_base(cfg)
        records = read_records(paths_of(cfg).data.train)
        rows, shared = [], {}
        for method in REGISTRY:
            t0 = time.perf_counter()
            try:
                row = run_method(cfg, method, records, steps, device, shared)
            except Exception as e:  # noqa: BLE001  (report every method, then fail)
                traceback.print_exc(file=sys.stderr)
                row = SmokeRow(method, error=f"{type(e).__name__}: {e}")
            log.info("%s: %d steps in %.1f s", method, steps, time.perf_counter() - t0)
            rows.append(row)
        if hasattr(shared.get("generator"), "close"):
            shared["generator"].close()
    info = {
        "device": str(device),
        "dtype": cfg.model.dtype,
        "backend": cfg.rollout.backend,
        "steps": steps,
        "base_seconds": base_s,
        "total_seconds": time.perf_counter() - start,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return rows, info


def smoke_main(cfg: Config, args) -> None:
    """CLI step ``gpu-smoke``: print the table; raise if any method failed or gave a non-finite number."""
    rows, info = run_smoke(cfg, args.steps)
    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()))
    print(format_table(rows))
    bad = [r.method + (f" ({r.error})" if r.error else " (non-finite)") for r in rows if not r.finite]
    if bad:
        raise RuntimeError(f"gpu-smoke failed for: {', '.join(bad)}")
