"""The training-step benchmark: every method interleaved, the TRL peer, sampling, the length sweep."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from arca import credit as credit_lib
from arca.bench.common import (
    DEFAULT_BLOCKS,
    DEFAULT_STEPS,
    DIFFERENCES_FROM_TRL,
    LENGTH_STEPS,
    OurRunner,
    bench_config,
    ensure_inputs,
    machine_info,
    parse_lengths,
    problems_per_step,
    ratio,
    summarize,
    top_rank,
)
from arca.bench.hardware import compare_decoders, hardware_summary
from arca.bench.tables import format_table
from arca.bench.trl_peer import run_trl
from arca.config import Config
from arca.paths import paths_of

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the step
def _interleaved(
    runners: dict[str, OurRunner], problems: list[list[dict]], steps: int, seed0: int
) -> dict[str, list[dict]]:
    """One warm-up then ``steps`` timed steps of every runner, round-robin."""
    raw: dict[str, list[dict]] = {name: [] for name in runners}
    for i in range(steps + 1):
        for name, runner in runners.items():
            row = runner.step(problems[i], seed0 + i)
            if i > 0:
                raw[name].append(row)
            log.info(
                "bench %s step %d%s: %.2f s (gen %.2f, update %.2f)",
                name,
                i,
                " (warm-up)" if i == 0 else "",
                row["step_seconds"],
                row["gen_seconds"],
                row["update_seconds"],
            )
    return raw


def _compare_methods(
    cfg: Config, device: torch.device, problems: list[list[dict]], steps: int, rank: int, L: int, methods
) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Every method, round-robin: the raw timed rows and the medians of each method."""
    runners = {m: OurRunner(bench_config(cfg, m, rank, L), device) for m in methods}
    raw = _interleaved(runners, problems, steps, seed0=cfg.train.seed)
    return raw, {m: summarize(rows) for m, rows in raw.items()}


def _ratios_vs_uniform(medians: dict[str, dict], key: str) -> dict[str, float | None]:
    """Each method's median ``key`` over uniform's."""
    base = medians.get("uniform", {})
    return {m: ratio(v[key], base.get(key)) for m, v in medians.items()}


def _trl_comparison(
    cfg: Config, device: torch.device, problems: list[list[dict]], steps: int, blocks: int, rank: int, L: int
) -> dict[str, Any]:
    """The TRL peer against our uniform, alternating step by step: medians, ratios and raw rows."""
    ours_rows: list[dict] = []
    uni = OurRunner(bench_config(cfg, "uniform", rank, L), device)
    uni.step(problems[0], cfg.train.seed)  # warm-up

    def our_step(b: int) -> None:
        i = 1 + b
        ours_rows.append(uni.step(problems[i], cfg.train.seed + i))

    # blocks of one step: ours and TRL alternate step by step, blocks * steps times
    trl_rows = run_trl(bench_config(cfg, "uniform", rank, L), device, problems, 1, blocks * steps, our_step)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    ours_m, trl_m = summarize(ours_rows), summarize(trl_rows)
    return {
        "ours_uniform": ours_m,
        "trl": trl_m,
        "ratio_vs_trl": ratio(ours_m["step_seconds"], trl_m["step_seconds"]),
        "gen_ratio_vs_trl": ratio(ours_m["gen_seconds"], trl_m["gen_seconds"]),
        "update_ratio_vs_trl": ratio(ours_m["update_seconds"], trl_m["update_seconds"]),
        "raw": {"ours_uniform": ours_rows, "trl": trl_rows},
    }


def _length_scaling(
    cfg: Config, device: torch.device, problems: list[list[dict]], rank: int, lengths: list[int], methods
) -> dict[str, dict[str, dict]]:
    """Uniform and arca (those of ``methods``) at each completion length: medians per length and method."""
    scaling: dict[str, dict[str, dict]] = {}
    for length in lengths:
        rs = {m: OurRunner(bench_config(cfg, m, rank, length), device) for m in ("uniform", "arca") if m in methods}
        raw_len = _interleaved(rs, problems, LENGTH_STEPS, seed0=cfg.train.seed)
        scaling[str(length)] = {m: summarize(rows) for m, rows in raw_len.items()}
        del rs
    return scaling


def _settings(
    cfg: Config, steps: int, blocks: int, lengths: list[int], rank: int, methods: tuple[str, ...], trl: bool
) -> dict[str, Any]:
    """What the benchmark ran with, for the summary."""
    L = cfg.rollout.max_new_tokens
    return {
        "config": cfg.name,
        "steps": steps,
        "warmup_steps": 1,
        "trl_blocks": blocks,
        "lengths": lengths,
        "prompts_per_step": cfg.train.prompts_per_step,
        "k": cfg.rollout.k,
        "completions_per_step": cfg.train.prompts_per_step * cfg.rollout.k,
        "max_new_tokens": L,
        "min_new_tokens": L,
        "micro_batch_prompts": cfg.train.micro_batch_prompts,
        "lora_rank": rank,
        "dtype": cfg.model.dtype,
        "threads": cfg.train.threads,
        "methods": list(methods),
        "trl": trl,
    }


def bench(
    cfg: Config,
    steps: int = DEFAULT_STEPS,
    lengths: list[int] | None = None,
    trl: bool = True,
    blocks: int = DEFAULT_BLOCKS,
    methods: tuple[str, ...] = credit_lib.PAPER_METHODS,
) -> dict:
    """Run the whole benchmark; returns the summary (also written to ``<out_dir>/bench/``)."""
    from arca.io import write_json, write_text
    from arca.models import resolve_device

    if steps < 1 or blocks < 1:
        raise ValueError("--steps and the number of TRL blocks must be >= 1")
    lengths = lengths or parse_lengths(None)
    ensure_inputs(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    rank, L = top_rank(cfg), cfg.rollout.max_new_tokens
    n_needed = max(steps + 1, 1 + blocks * steps, LENGTH_STEPS + 1)
    problems = problems_per_step(cfg, n_needed)
    t_start = time.perf_counter()

    # 1. every method, round-robin
    raw_methods, medians = _compare_methods(cfg, device, problems, steps, rank, L, methods)
    # sampling, lean against generate; where the time goes
    uni_cfg = bench_config(cfg, "uniform", rank, L)
    decoders = compare_decoders(uni_cfg, device, problems, steps) if cfg.rollout.backend == "transformers" else None
    hardware = hardware_summary(
        uni_cfg, device, medians, problems[1 : steps + 1], decoders["seconds"]["lean"] if decoders else None
    )
    # 2. TRL peer, in blocks interleaved with our uniform
    trl_out = _trl_comparison(cfg, device, problems, steps, blocks, rank, L) if trl else None
    # 3. length scaling
    scaling = _length_scaling(cfg, device, problems, rank, lengths, methods)

    summary = {
        "ratio_vs_uniform": _ratios_vs_uniform(medians, "step_seconds"),
        "update_ratio_vs_uniform": _ratios_vs_uniform(medians, "update_seconds"),
        "ratio_vs_trl": trl_out["ratio_vs_trl"] if trl_out else None,
        "medians": medians,
        "trl": {k: v for k, v in trl_out.items() if k != "raw"} if trl_out else None,
        "length_scaling": scaling,
        "sampling": {k: v for k, v in decoders.items() if k != "raw"} if decoders else None,
        "hardware": hardware,
        "raw": {
            "methods": raw_methods,
            "trl": trl_out["raw"] if trl_out else None,
            "sampling": decoders["raw"] if decoders else None,
        },
        "machine": machine_info(device),
        "settings": _settings(cfg, steps, blocks, lengths, rank, methods, trl),
        "differences_from_trl": DIFFERENCES_FROM_TRL,
        "seconds": time.perf_counter() - t_start,
    }
    write_json(paths_of(cfg).bench_summary("json"), summary)
    write_text(paths_of(cfg).bench_summary("md"), format_table(summary))
    return summary
