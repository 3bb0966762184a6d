"""``python -m arca bench --kernels``: what the portable kernels cost, measured side by side.

Kernels are fixed when a process starts (``src/arca/__init__.py``), so every measurement runs in a
fresh process: one warm-up and ``steps`` timed uniform training steps (the step benchmark's
``OurRunner`` on the same prompts and seeds), with ``ARCA_KERNELS=portable`` (AVX2, the default)
and ``native`` (each library's own choice) alternating, ``ROUNDS`` processes each. The result is
each mode's median step time, the kernels it ran with, and portable / native. On a CPU without
AVX-512 both modes run the same kernels and the ratio is noise around 1.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from arca import KERNELS_ENV, PORTABLE_KERNELS
from arca.config import Config, dump_config

ROUNDS = 3
MODES = ("portable", "native")


def child_env(mode: str) -> dict[str, str]:
    """The environment of a measuring process: the user's, without any kernel setting, plus the mode."""
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_KERNELS}
    return {**env, KERNELS_ENV: mode}


def time_uniform_steps(config_path: str, steps: int) -> dict:
    """In the measuring process: one warm-up, then ``steps`` timed uniform steps (seconds each)."""
    import torch

    from arca.bench.common import OurRunner, bench_config, ensure_inputs, problems_per_step, top_rank
    from arca.config import load_config
    from arca.models import resolve_device

    cfg = load_config(config_path)
    ensure_inputs(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    runner = OurRunner(bench_config(cfg, "uniform", top_rank(cfg), cfg.rollout.max_new_tokens), device)
    problems = problems_per_step(cfg, steps + 1)
    times = [runner.step(problems[i], cfg.train.seed + i)["step_seconds"] for i in range(steps + 1)][1:]
    return {"capability": torch.backends.cpu.get_cpu_capability(), "seconds": times}


def compare_kernels(cfg: Config, steps: int, rounds: int = ROUNDS) -> dict:
    """Portable against native kernels, alternating fresh processes; medians and their ratio."""
    if steps < 1 or rounds < 1:
        raise ValueError("--steps and the number of rounds must be >= 1")
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    capability: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(dump_config(cfg))
        for _ in range(rounds):
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, "-m", "arca.bench.kernels", str(path), str(steps)],
                    env=child_env(mode),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"bench --kernels: the {mode} process failed:\n{out.stderr[-2000:]}")
                got = json.loads(out.stdout.strip().splitlines()[-1])
                seconds[mode] += got["seconds"]
                capability[mode] = got["capability"]
    med = {m: statistics.median(v) for m, v in seconds.items()}
    return {
        "steps_per_process": steps,
        "rounds": rounds,
        "capability": capability,
        "median_step_seconds": med,
        "portable_over_native": med["portable"] / med["native"],
        "raw_seconds": seconds,
    }


def format_kernels(summary: dict) -> str:
    cap, med = summary["capability"], summary["median_step_seconds"]
    lines = [
        "| kernels | torch CPU capability | median step (s) |",
        "|---|---|---|",
        *(f"| {m} | {cap[m]} | {med[m]:.3f} |" for m in MODES),
        "",
        f"portable / native: {summary['portable_over_native']:.3f} "
        f"({summary['rounds']} processes x {summary['steps_per_process']} steps each, alternating)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # a measuring process: python -m arca.bench.kernels <config.yaml> <steps>
    print(json.dumps(time_uniform_steps(sys.argv[1], int(sys.argv[2]))))
