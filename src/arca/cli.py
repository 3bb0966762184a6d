"""Command line: ``python -m arca <step>``; the only thing the Snakemake rules call.

Every step takes ``--config FILE`` (repeatable, deep-merged in order like Snakemake's
``--configfile``) and ``--set key.path=value`` overrides. The config is validated before any
work; the project's own errors (``ArcaError``: bad config, bad or missing input) end the step
with exit code 2 and one line; anything else (a bug, a full disk) keeps its traceback.
Step implementations live in their modules and are imported lazily so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from arca.config import ArcaError, ConfigError, apply_overrides, check_run_overrides, for_run, load_config, read_yaml
from arca.credit import check_config, check_methods_named

log = logging.getLogger("arca")

# step -> (module:function, help, extra arguments as (flags, kwargs))
STEPS: dict[str, tuple[str, str, list[tuple[tuple[str, ...], dict]]]] = {
    "show-config": (
        "arca.cli:show_config",
        "print the resolved config (optionally of one run)",
        [
            (("--run",), dict(default=None, help="run id <method>_r<rank>_s<seed>")),
        ],
    ),
    "prepare-data": ("arca.data:prepare_data", "write results/<name>/data/{train,test}.jsonl", []),
    "build-base": ("arca.models:build_base", "write the base model to results/<name>/base/", []),
    "train": (
        "arca.train:train_main",
        "GRPO-train one run (resumes from its last checkpoint)",
        [
            (("--run",), dict(required=True, help="run id <method>_r<rank>_s<seed>")),
            (
                ("--force",),
                dict(action="store_true", help="train a finished run again from scratch (default: do nothing)"),
            ),
        ],
    ),
    "evaluate": (
        "arca.evaluate:evaluate_main",
        "evaluate the base model or runs' adapters",
        [
            (("--run",), dict(required=True, nargs="+", help="run ids, or 'base' for the base model")),
        ],
    ),
    "probe-rollouts": (
        "arca.probe:probe_main",
        "sample the fixed held-out rollouts of the credit-precision probe",
        [
            (
                ("--out",),
                dict(default=None, metavar="FILE", help="where to write it (default: its path under results/<name>/)"),
            ),
        ],
    ),
    "curve-start": (
        "arca.learning_curve:curve_start_main",
        "the base model's held-out point: step 0 of every run's learning curve",
        [
            (
                ("--out",),
                dict(default=None, metavar="FILE", help="where to write it (default: its path under results/<name>/)"),
            ),
        ],
    ),
    "mc-values": (
        "arca.mc_values:mc_values_main",
        "estimate the base model's value of every prefix of the probe rollouts (Monte Carlo)",
        [
            (
                ("--out",),
                dict(default=None, metavar="FILE", help="where to write it (default: its path under results/<name>/)"),
            ),
        ],
    ),
    "scorecard": (
        "arca.scorecard:scorecard_main",
        "score an external credit method beside uniform and the oracle (one Markdown page)",
        [
            (
                ("--method",),
                dict(required=True, help="module:signal, or a name in entry-point group arca.credit_methods"),
            ),
            (
                ("--out",),
                dict(default=None, metavar="FILE", help="where to write the page (default: beside its tables)"),
            ),
        ],
    ),
    "aggregate": ("arca.report.tables:aggregate_main", "gather runs and evals into results/<name>/tables/", []),
    "figures": ("arca.report.figures:figures_main", "draw results/<name>/figures/ from the tables", []),
    "heatmap-rollouts": (
        "arca.heatmap_rollouts:heatmap_rollouts_main",
        "score the heat map's held-out rollouts under every credit method",
        [
            (
                ("--out",),
                dict(default=None, metavar="FILE", help="where to write it (default: its path under results/<name>/)"),
            ),
        ],
    ),
    "heatmap": ("arca.report.heatmap:heatmap_main", "write the token-credit heat map HTML page", []),
    "compare-reference": (
        "arca.report.reference:compare_reference_main",
        "check the finished tables against the claims of results/reference/<name>/ "
        "(exit status 1 unless every claim is reproduced)",
        [
            (
                ("--reference",),
                dict(default=None, metavar="DIR", help="reference folder (default: results/reference/<name>)"),
            ),
            (
                ("--exact",),
                dict(
                    action="store_true",
                    help="instead list every number that differs from the reference beyond the tolerance "
                    "(exit status 1 when any does)",
                ),
            ),
            # the defaults of arca.report.reference (DEFAULT_ATOL, DEFAULT_RTOL; a test checks they agree)
            (
                ("--atol",),
                dict(type=float, default=1e-6, help="absolute tolerance of the number-by-number list (default 1e-6)"),
            ),
            (
                ("--rtol",),
                dict(type=float, default=1e-5, help="relative tolerance of the number-by-number list (default 1e-5)"),
            ),
        ],
    ),
    "save-reference": (
        "arca.report.reference:save_reference_main",
        "copy the finished tables and key figures to results/reference/<name>/",
        [
            (
                ("--reference",),
                dict(default=None, metavar="DIR", help="destination (default: results/reference/<name>)"),
            ),
        ],
    ),
    "card": (
        "arca.cards:card_main",
        "rewrite a finished run's model card with its held-out evaluation",
        [
            (("--run",), dict(required=True, help="run id <method>_r<rank>_s<seed>")),
        ],
    ),
    "push": (
        "arca.cards:push_main",
        "upload a finished run's adapter and model card to the Hugging Face Hub (a Hub base model only)",
        [
            (("--run",), dict(required=True, help="run id <method>_r<rank>_s<seed>")),
            (("--repo-id",), dict(required=True, help="the Hub model repository, e.g. you/arca-r8")),
            (("--private",), dict(action="store_true", help="create the repository as private")),
        ],
    ),
    "docs": (
        "arca.report.docs:docs_main",
        "rewrite the generated regions of README.md and docs/*.md from results/reference/",
        [
            (("--root",), dict(default=".", metavar="DIR", help="repository root (default: the working directory)")),
            (
                ("--check",),
                dict(action="store_true", help="change nothing; exit status 1 when a region is out of date"),
            ),
        ],
    ),
    "grade": ("arca.grading:grade_main", "grade JSONL {gold, completion} lines from stdin", []),
    "bench": (
        "arca.bench:bench_main",
        "benchmark the training step of each credit method (and TRL)",
        [
            (("--steps",), dict(type=int, default=None, help="timed steps per method")),
            (("--no-trl",), dict(action="store_true", help="skip the TRL peer")),
            (
                ("--kernels",),
                dict(action="store_true", help="instead: portable (AVX2) against native kernels, side by side"),
            ),
            (("--lengths",), dict(default=None, help="comma-separated completion lengths to scale over")),
            (
                ("--methods",),
                dict(default=None, help="comma-separated credit methods, or 'literature' (default: the paper's five)"),
            ),
            (
                ("--backends",),
                dict(
                    default=None,
                    help="instead: generation tokens/s of these rollout backends, "
                    "side by side (e.g. transformers,vllm)",
                ),
            ),
        ],
    ),
    "gpu-smoke": (
        "arca.smoke:smoke_main",
        "a few steps of every credit method on the small model; prints timings",
        [
            (("--steps",), dict(type=int, default=3, help="training steps per method (default 3)")),
        ],
    ),
}


# What `python -m arca --help` prints: plain text (the module docstring is for developers).
DESCRIPTION = """\
The steps of the ARCA credit-assignment benchmark. Snakemake runs them for you
(snakemake --cores all); run one by hand with the same config to debug or redo it.
Every step reads its config from --config files (default: configs/default.yaml
in the working directory; an error where there is none) plus --set overrides, and
checks it before doing anything."""

EPILOG = """\
examples:
  python -m arca show-config --config configs/smoke.yaml --run arca_r4_s1
  python -m arca train --config configs/smoke.yaml --run arca_r4_s1
  python -m arca evaluate --config configs/smoke.yaml --run base --set eval.n_problems=5
  python -m arca <step> --help

exit status: 0 on success, 2 on a bad config or a bad or missing input (one line on stderr),
1 when compare-reference finds a claim of the reference not reproduced (with --exact: any number
that differs beyond the tolerance)."""


def build_parser() -> argparse.ArgumentParser:
    from arca import __version__

    parser = argparse.ArgumentParser(
        prog="python -m arca",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"arca-bench {__version__}")
    sub = parser.add_subparsers(dest="step", metavar="<step>", required=True, title="steps")
    for name, (_, help_text, extra) in STEPS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        p.add_argument(
            "--config",
            action="append",
            default=None,
            metavar="FILE",
            help="config YAML; repeatable, later files override earlier ones (default: configs/default.yaml "
            "of the working directory, which must exist)",
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            dest="overrides",
            help="override one config key, e.g. --set train.lr=1e-4 (repeatable; the keys a "
            "run id fixes, method, rank, seed and its cell's overrides, cannot be set)",
        )
        for flags, kwargs in extra:
            p.add_argument(*flags, **kwargs)
    return parser


def show_config(cfg, args) -> None:
    from arca.config import dump_config

    print(dump_config(for_run(cfg, args.run) if args.run else cfg), end="")


# Steps that read no config: they run without --config anywhere.
NO_CONFIG = frozenset({"docs"})


def default_config_files() -> list[str]:
    """Without ``--config``: ``configs/default.yaml`` of the working directory; an error when there is none.

    Falling back to the dataclass defaults would run another experiment under the name ``default``.
    """
    from pathlib import Path

    default = Path("configs") / "default.yaml"
    if not default.is_file():
        raise ConfigError(
            f"no --config given and no {default} in {Path.cwd()}: pass the experiment's config, "
            "e.g. --config configs/default.yaml from the repository root "
            "(or --config /path/to/the/repository/configs/default.yaml)"
        )
    return [str(default)]


def one_line(e: ArcaError) -> str:
    """The message of the project's own error as one line."""
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from arca.io import setup_logging

    setup_logging(args.verbose)
    target, _, _ = STEPS[args.step]
    module_name, func_name = target.split(":")
    try:
        if args.step in NO_CONFIG:
            cfg = None
        else:
            files = args.config or default_config_files()
            cfg = load_config(files, args.overrides)
            for path in files:  # an unknown credit method, named with its file or --set value
                check_methods_named(read_yaml(path), path)
            for entry in args.overrides:
                check_methods_named(apply_overrides({}, [entry]), f"--set {entry}")
            check_config(cfg, " + ".join(files))
        run = getattr(args, "run", None)
        if run and run != "base" and args.overrides:
            check_run_overrides(cfg, run, args.overrides)
        func = getattr(importlib.import_module(module_name), func_name)
        func(cfg, args)
    except ArcaError as e:
        if args.verbose:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a step's own verdict (e.g. compare-reference found differences) carries its status
        status = getattr(e, "exit_status", None)
        if status is None or args.verbose:
            raise
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return int(status)
    return 0
