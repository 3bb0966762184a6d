"""``python -m arca bench``: the step benchmark, or the backends' generation benchmark."""

from __future__ import annotations

import logging

from arca import credit as credit_lib
from arca.bench.common import DEFAULT_STEPS, parse_lengths
from arca.bench.generation import bench_generation, parse_backends
from arca.bench.kernels import compare_kernels, format_kernels
from arca.bench.step import bench
from arca.bench.tables import format_generation_table, format_table
from arca.config import Config

log = logging.getLogger(__name__)


def parse_methods(text: str | None) -> tuple[str, ...]:
    """``--methods a,b`` (or ``literature``) -> registry names (``uniform`` first, the reference of every ratio)."""
    if not text:
        return credit_lib.PAPER_METHODS
    if text.strip() == "literature":  # the methods from the literature (docs/method.md)
        return tuple(dict.fromkeys(["uniform", *credit_lib.LITERATURE_METHODS]))
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in credit_lib.REGISTRY]
    if unknown or not names:
        raise ValueError(f"--methods: unknown credit method(s) {unknown} (known: {sorted(credit_lib.REGISTRY)})")
    return tuple(dict.fromkeys(["uniform", *names]))


def bench_main(cfg: Config, args) -> dict:
    """CLI step ``bench`` (``--steps``, ``--no-trl``, ``--lengths``, ``--methods``; ``--backends``: generation
    only; ``--kernels``: portable against native kernels only)."""
    steps = getattr(args, "steps", None) or DEFAULT_STEPS
    if getattr(args, "kernels", False):
        summary = compare_kernels(cfg, steps)
        print(format_kernels(summary), end="")
        return summary
    if getattr(args, "backends", None):
        summary = bench_generation(cfg, parse_backends(args.backends), steps=steps)
        print(format_generation_table(summary), end="")
        return summary
    lengths = parse_lengths(getattr(args, "lengths", None))
    methods = parse_methods(getattr(args, "methods", None))
    summary = bench(cfg, steps=steps, lengths=lengths, trl=not getattr(args, "no_trl", False), methods=methods)
    print(format_table(summary), end="")
    return summary
