"""The Snakemake adapter: what the rules need beyond file names, in plain tested Python.

The rules name their files through ``P = paths_of(CFG)`` (``arca.paths``); this module holds only
what takes a decision: the config as Snakemake merged it, the inputs that depend on the config or
on a wildcard, the wildcard constraints, GPU resources and which outputs ``snakemake --report``
shows. Nothing in the package imports it; the Snakefile and ``arca.snakeconfig`` do.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from arca.config import (
    BASE,
    BASE_KEY,
    Config,
    ConfigError,
    cell_runs,
    eval_targets,
    from_dict,
    heatmap_run,
    shares_curve_start,
)
from arca.config.ranges import short
from arca.paths import paths_of

# Every figure's subcategory in `snakemake --report` (it shows each figure's PNG; the PDF is not shown).
FIGURE_GROUPS = {
    "gini_bars": "Weight concentration",
    "concentration_curves": "Weight concentration",
    "reward_curves": "Performance",
    "accuracy": "Performance",
    "lorenz": "Weight concentration",
    "accuracy_vs_params": "Performance",
    "credit_precision": "Token credit",
    "learning_curves": "Performance",
    "performance_profile": "Performance",
}
# The tables `snakemake --report` shows (their CSV and Markdown); the LaTeX copies are written
# beside them but not shown. Captions: workflow/report/<folder>/<name>.rst.
REPORT_TABLES = (
    "performance",
    "concentration",
    "paired",
    "runs",
    "credit_precision",
    "sample_efficiency",
    "learning_curves",
    "cost",
)
# The Markdown files the report shows as the claims: the paper's, judged at this scale.
REPORT_CLAIMS = ("paper_comparison",)


def as_config(config: Mapping[str, Any] | Config, source: str = "snakemake config") -> Config:
    """A validated ``Config`` from Snakemake's merged ``config`` dict (or a ``Config`` as is).

    Keys the YAML files leave out take the dataclass defaults, as in ``load_config``.
    """
    if isinstance(config, Config):
        return config
    try:
        plain = json.loads(json.dumps({k: v for k, v in dict(config).items() if k != BASE_KEY}))
    except (TypeError, ValueError) as e:  # a date, a set, a Python object: not plain config data
        raise ConfigError(f"{source}: holds a value that is not plain data ({short(str(e))})") from None
    return from_dict(plain, source=source)


# ----------------------------------------------------------------------------- wildcards and resources
def _alternation(names: Iterable[str]) -> str:
    # An explicit list, not a generic pattern: a path like runs/x/adapter can only match a real run.
    return "|".join(re.escape(n) for n in names)


def run_regex(cfg: Config) -> str:
    """Wildcard constraint of ``{run}`` in training rules."""
    return _alternation(cfg.run_ids())


def cell_regex(cfg: Config) -> str:
    """Wildcard constraint of ``{cell}`` (``<label>_r<rank>``) in the evaluation rule."""
    return _alternation(cell_runs(cfg))


def evaluated_runs(cfg: Config, cell: str) -> list[str]:
    """The run ids one evaluation job scores: every seed of ``cell`` (``{params.runs:q}`` quotes each)."""
    return cell_runs(cfg)[cell]


def gpu(cfg: Config) -> dict[str, int]:
    """``{"gpu": 1}`` for jobs that run a model when the config targets a GPU, else nothing.

    ``gpu`` is the resource name the SLURM executor plugin (v2) turns into ``--gpus=1``; locally it
    lets ``--resources gpu=N`` cap how many model jobs share the GPUs.
    """
    return {"gpu": 1} if cfg.resources.gpu or cfg.device == "cuda" else {}


def base_gpu(cfg: Config) -> dict[str, int]:
    """Only pretraining uses the GPU in ``build-base``; downloading or converting a model does not."""
    return gpu(cfg) if cfg.model.source == "pretrain" else {}


# ----------------------------------------------------------------------------- inputs that depend on the config
def base_inputs(cfg: Config) -> dict[str, Path]:
    """A pretrained-here model learns from the training problems; downloaded ones need nothing."""
    return {"train": paths_of(cfg).data.train} if cfg.model.source == "pretrain" else {}


def train_inputs(cfg: Config) -> dict[str, Path]:
    """Base model and data, plus the probe rollouts when the curve points score the probe's
    decisions, and the shared step-0 point where runs take it from ``curve-start``."""
    p = paths_of(cfg)
    out = {"base": p.base, "train": p.data.train, "test": p.data.test}
    if cfg.eval.every > 0 and cfg.eval.probe_problems > 0:
        out["probe"] = p.probe_rollouts
    if shares_curve_start(cfg):
        out["curve_start"] = p.curve_start
    return out


def curve_start_inputs(cfg: Config) -> dict[str, Path]:
    """Base model and test data, plus the probe rollouts when the curve points score the probe's decisions."""
    p = paths_of(cfg)
    return {"base": p.base, "test": p.data.test, **({"probe": p.probe_rollouts} if cfg.eval.probe_problems > 0 else {})}


def eval_inputs(cfg: Config, target: str) -> dict[str, Any]:
    """Base model and test data; for a cell (not ``base``) also every seed's adapter, the probe and
    the Monte Carlo values."""
    p = paths_of(cfg)
    data = p.data.declared()
    out: dict[str, Any] = {"base": p.base, "test": data["test"]}
    out.update({"math500": data["math500"]} if "math500" in data else {})
    if target != BASE:
        out["adapters"] = [p.run(r).adapter for r in cell_runs(cfg)[target]]
        if cfg.eval.probe_problems > 0:
            out["probe"] = p.probe_rollouts
        if cfg.eval.mc_problems > 0:  # the probe scores every method against the Monte Carlo values
            out["mc"] = p.mc_values
    return out


def benchmarks(cfg: Config) -> list[Path]:
    """Every benchmark file of the sweep: the base model's build (and Monte Carlo values), each
    run's training, each evaluation job (the base model's, one per cell)."""
    p = paths_of(cfg)
    return [
        p.benchmark("build_base"),
        *([p.benchmark("mc_values")] if cfg.eval.mc_problems > 0 else []),
        *(p.benchmark("train", r) for r in cfg.run_ids()),
        *(p.benchmark("evaluate", t) for t in [BASE, *cell_runs(cfg)]),
    ]


def aggregate_inputs(cfg: Config) -> dict[str, list[Path]]:
    """Every run's training outputs, every evaluation's files and every job's benchmark record."""
    p = paths_of(cfg)
    runs, targets = [p.run(r) for r in cfg.run_ids()], [p.eval(t) for t in eval_targets(cfg)]
    return {
        "metrics": [r.metrics for r in runs],
        "final_weights": [r.final_weights for r in runs],
        "curves": [r.curve for r in runs],
        "summaries": [t.summary for t in targets],
        "samples": [t.samples for t in targets],
        "benchmarks": benchmarks(cfg),
    }


def figure_inputs(cfg: Config) -> dict[str, Any]:
    """Tables, plus each run's final weights (the Lorenz curves need whole weight vectors)."""
    return {**paths_of(cfg).table_files(), "final_weights": aggregate_inputs(cfg)["final_weights"]}


def heatmap_rollouts_inputs(cfg: Config) -> dict[str, Path]:
    """Base model, test data and the adapter of the run the heat map shows."""
    p = paths_of(cfg)
    return {"base": p.base, "adapter": p.run(heatmap_run(cfg)).adapter, "test": p.data.test}


# ----------------------------------------------------------------------------- the report and `rule all`
def report_outputs(outputs: Mapping[str, Path], wrap: Callable[..., Any], captions: str) -> dict[str, Any]:
    """``P.table_files()`` or ``P.figure_files()`` as a rule's ``output:``, the files the HTML report
    shows passed through ``wrap`` (Snakemake's ``report``) with their caption and category.

    Shown: the CSV and Markdown of every table in ``REPORT_TABLES``, the claims (``REPORT_CLAIMS``)
    and the PNG of every figure, captioned by ``<captions>/tables/<name>.rst`` and
    ``<captions>/figures/<name>.rst`` (``captions`` is relative to the rule's file, as Snakemake
    reads it).
    """
    out: dict[str, Any] = {}
    for key, path in outputs.items():
        name, ext = key.rsplit("_", 1)
        if ext == "csv" and name in REPORT_TABLES:
            out[key] = wrap(path, caption=f"{captions}/tables/{name}.rst", category="Tables", subcategory="CSV")
        elif ext == "md" and name in REPORT_TABLES:
            out[key] = wrap(path, caption=f"{captions}/tables/{name}.rst", category="Tables", subcategory="Markdown")
        elif ext == "md" and name in REPORT_CLAIMS:
            out[key] = wrap(path, caption=f"{captions}/tables/{name}.rst", category="Claims")
        elif ext == "png" and name in FIGURE_GROUPS:
            out[key] = wrap(
                path, caption=f"{captions}/figures/{name}.rst", category="Figures", subcategory=FIGURE_GROUPS[name]
            )
        else:
            out[key] = path
    return out


def all_targets(cfg: Config) -> list[Path]:
    """What ``rule all`` asks for: every table, every figure and the credit heat map."""
    p = paths_of(cfg)
    return [*p.table_files().values(), *p.figure_files().values(), p.heatmap]


def complete(cfg: Config) -> bool:
    """Whether every file ``rule all`` asks for exists (a run of part of the DAG may leave some out)."""
    return all(Path(p).exists() for p in all_targets(cfg))
