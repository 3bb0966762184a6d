"""The experiment grid as the Snakefile sees it: run ids, wildcard patterns and target paths.

The Snakefile and ``workflow/rules/*.smk`` only declare rules; every decision they need (which
runs exist, which files a step writes, which config files to hand to ``python -m arca``, whether a
job asks for a GPU) is made here, in plain tested Python, from Snakemake's merged ``config`` dict
or from a ``Config``. Every path comes from ``arca.paths``, the one place that names them (the
steps write the same objects' paths), as a string relative to the working directory unless
``paths.results`` is absolute.

How the config reaches the Python steps is ``arca.snakeconfig``'s part.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from arca.config import (
    Config,
    ConfigError,
    from_dict,
    parse_override,
    parse_run_id,
    set_dotted,
    to_dict,
    training_hash,
)
from arca.config.ranges import short
from arca.paths import paths_of

BASE = "base"  # the evaluation target that means "the base model, no adapter"

TABLES = {
    "performance": ("csv", "md", "tex"),
    "concentration": ("csv", "md", "tex"),
    "paired": ("csv", "md"),
    "paper_comparison": ("md",),
    "runs": ("csv",),
    "curves": ("csv",),
    "credit_precision": ("csv", "md"),
    "learning_curves": ("csv",),
    "sample_efficiency": ("csv", "md"),
    "outcomes": ("csv", "md"),
    "mc_agreement": ("csv", "md"),
    "tuning": ("csv", "md"),
    "cost": ("csv", "md"),
}
# Every figure, in PNG and PDF, with the subcategory `snakemake --report` files it under.
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
FIGURES = tuple(FIGURE_GROUPS)
FIGURE_FORMATS = ("png", "pdf")
# The tables `snakemake --report` shows (their CSV and Markdown). It shows every figure's PNG too;
# the LaTeX and PDF copies are written beside them but not shown. Captions: workflow/report/<folder>/<name>.rst.
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
# The jobs whose wall time and peak memory Snakemake records (its `benchmark:` files) for the cost table.
BENCHMARKED = ("build_base", "mc_values", "train", "evaluate")


# ----------------------------------------------------------------------------- config
def as_config(config: Mapping[str, Any] | Config, source: str = "snakemake config") -> Config:
    """A validated ``Config`` from Snakemake's merged ``config`` dict (or a ``Config`` as is).

    Keys the YAML files leave out take the dataclass defaults, as in ``load_config``.
    """
    if isinstance(config, Config):
        return config
    try:
        plain = json.loads(json.dumps(dict(config)))
    except (TypeError, ValueError) as e:  # a date, a set, a Python object: not plain config data
        raise ConfigError(f"{source}: holds a value that is not plain data ({short(str(e))})") from None
    return from_dict(plain, source=source)


# ----------------------------------------------------------------------------- the grid
def run_ids(config: Mapping[str, Any] | Config) -> list[str]:
    return as_config(config).run_ids()


def eval_targets(config: Mapping[str, Any] | Config) -> list[str]:
    """What ``evaluate`` runs on: the base model and every training run."""
    return [BASE, *run_ids(config)]


def _alternation(names: Iterable[str]) -> str:
    # An explicit list, not a generic pattern: a path like runs/x/adapter can only match a real run.
    return "|".join(re.escape(n) for n in names)


def run_regex(config: Mapping[str, Any] | Config) -> str:
    """Wildcard constraint of ``{run}`` in training rules."""
    return _alternation(run_ids(config))


def eval_regex(config: Mapping[str, Any] | Config) -> str:
    """Wildcard constraint of ``{target}`` in evaluation rules (``base`` or a run id)."""
    return _alternation(eval_targets(config))


def for_run(config: Mapping[str, Any] | Config, run_id: str) -> Config:
    """The resolved config of one training cell (method, rank, seed and the cell's overrides set)."""
    cfg = as_config(config)
    label, rank, seed = parse_run_id(run_id)
    for cell in cfg.sweep.cells:
        if cell.name == label and rank in cell.ranks and seed in cfg.sweep.seeds:
            raw = to_dict(cfg)
            raw["credit"]["method"] = cell.method
            raw["lora"]["rank"] = rank
            raw["train"]["seed"] = seed
            for key, value in cell.overrides.items():
                set_dotted(raw, key, value, source=f"sweep cell '{cell.name}'")
            return from_dict(raw, source=f"run {run_id}")
    raise ConfigError(f"run id '{run_id}' is not in the sweep of config '{cfg.name}' (known: {cfg.run_ids()})")


def run_fixed_keys(cfg: Config, run_id: str) -> dict[str, str]:
    """The keys a run id decides, each with what decides it: ``{"credit.method": "method 'arca'", ...}``.

    ``for_run`` sets them after every config file and ``--set``, so an override of one of them
    would be silently replaced; ``check_run_overrides`` turns that into an error.
    """
    label, rank, seed = parse_run_id(run_id)
    for_run(cfg, run_id)  # an unknown run id fails here, naming the sweep
    cell = next(c for c in cfg.sweep.cells if c.name == label)
    fixed = {"credit.method": f"method {cell.method!r}", "lora.rank": f"rank {rank}", "train.seed": f"seed {seed}"}
    for key, value in cell.overrides.items():
        fixed[key] = f"sweep cell {cell.name!r} override {key}={value!r}"
    return fixed


def check_run_overrides(cfg: Config, run_id: str, overrides: list[str], source: str = "--set") -> None:
    """Refuse an override of a key the run id fixes (method, rank, seed, the cell's overrides).

    Also catches a whole section set at once (``--set credit={method: x}``) that contains one.
    """
    fixed = run_fixed_keys(cfg, run_id)
    ids = cfg.run_ids()
    hint = (
        f"pick the run id of the cell you want (runs: {', '.join(ids[:6])}{', ...' if len(ids) > 6 else ''})"
        if source == "--set"
        else "the sweep sets it per run: edit the sweep's cells (their overrides) instead"
    )
    for entry in overrides:
        key, _ = parse_override(entry, source)
        for fixed_key, why in fixed.items():
            if key == fixed_key or fixed_key.startswith(key + ".") or key.startswith(fixed_key + "."):
                raise ConfigError(
                    f"{source} {entry}: key '{fixed_key}' is fixed by run id '{run_id}' ({why}) "
                    f"and cannot be overridden; {hint}"
                )


def run_hash(config: Mapping[str, Any] | Config, run_id: str) -> str:
    """The training fingerprint of one run; a train param so that only changed cells rerun."""
    return training_hash(for_run(config, run_id))


def eval_hash(config: Mapping[str, Any] | Config) -> str:
    """Fingerprint of the settings every evaluation depends on beyond its input files."""
    cfg = as_config(config)
    raw = to_dict(cfg)
    relevant = {
        "eval": raw["eval"],
        "device": raw["device"],
        "chat_template": raw["model"]["chat_template"],
        "max_prompt_tokens": raw["data"]["max_prompt_tokens"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def heatmap_run(config: Mapping[str, Any] | Config) -> str:
    """The run whose rollouts the credit heat map shows: ``sweep.heatmap_run``, else the first
    ARCA run, else the first run."""
    cfg = as_config(config)
    ids = cfg.run_ids()
    if cfg.sweep.heatmap_run:
        if cfg.sweep.heatmap_run not in ids:
            raise ConfigError(
                f"key 'sweep.heatmap_run' names {cfg.sweep.heatmap_run!r}, which is not in the sweep {ids}"
            )
        return cfg.sweep.heatmap_run
    for run in ids:
        if for_run(cfg, run).credit.method == "arca":
            return run
    return ids[0]


def uses_gpu(config: Mapping[str, Any] | Config) -> bool:
    cfg = as_config(config)
    return cfg.resources.gpu or cfg.device == "cuda"


def gpu(config: Mapping[str, Any] | Config) -> dict[str, int]:
    """``{"gpu": 1}`` for jobs that run a model when the config targets a GPU, else nothing.

    ``gpu`` is the resource name the SLURM executor plugin (v2) turns into ``--gpus=1``; locally it
    lets ``--resources gpu=N`` cap how many model jobs share the GPUs.
    """
    return {"gpu": 1} if uses_gpu(config) else {}


def base_gpu(config: Mapping[str, Any] | Config) -> dict[str, int]:
    """Only pretraining uses the GPU in ``build-base``; downloading or converting a model does not."""
    cfg = as_config(config)
    return gpu(cfg) if cfg.model.source == "pretrain" else {}


# ----------------------------------------------------------------------------- paths
# Every path comes from arca.paths (the steps write the same objects' paths), as a string.
def data_outputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    cfg = as_config(config)
    data = paths_of(cfg).data
    out = {"train": str(data.train), "test": str(data.test)}
    if "math500" in cfg.eval.protocols and cfg.data.source == "math":
        out["math500"] = str(data.math500)
    return out


def base_inputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    """A pretrained-here model learns from the training problems; downloaded ones need nothing."""
    cfg = as_config(config)
    return {"train": data_outputs(cfg)["train"]} if cfg.model.source == "pretrain" else {}


def base_output(config: Mapping[str, Any] | Config) -> str:
    return str(paths_of(as_config(config)).base)


def train_inputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    cfg = as_config(config)
    data = data_outputs(cfg)
    out = {"base": base_output(cfg), "train": data["train"], "test": data["test"]}
    if cfg.eval.every > 0 and cfg.eval.probe_problems > 0:  # the curve points score the probe's decisions
        out["probe"] = probe_output(cfg)
    return out


def train_outputs(
    config: Mapping[str, Any] | Config, run: str = "{run}", wrap_dir: Callable[[str], Any] = str
) -> dict[str, Any]:
    """Declared outputs of one run; the adapter folder passed through ``wrap_dir`` (the rule gives
    Snakemake's ``directory``). ``config.yaml`` and ``checkpoints/`` beside them are left
    undeclared on purpose: Snakemake deletes declared outputs of a failed job, and the
    checkpoints must survive it so the rerun resumes."""
    out = {key: str(path) for key, path in paths_of(as_config(config)).run(run).declared().items()}
    return {**out, "adapter": wrap_dir(out["adapter"])}


def eval_outputs(config: Mapping[str, Any] | Config, target: str = "{target}") -> dict[str, str]:
    return {key: str(path) for key, path in paths_of(as_config(config)).eval(target).declared().items()}


def eval_inputs(config: Mapping[str, Any] | Config, target: str) -> dict[str, str]:
    """Base model and test data, plus the run's adapter unless ``target`` is ``base``."""
    cfg = as_config(config)
    data = data_outputs(cfg)
    out = {"base": base_output(cfg), "test": data["test"]}
    if "math500" in data:
        out["math500"] = data["math500"]
    if target != BASE:
        out["adapter"] = train_outputs(cfg, target)["adapter"]
        if cfg.eval.probe_problems > 0:
            out["probe"] = probe_output(cfg)
        if cfg.eval.mc_problems > 0:  # the probe scores every method against the Monte Carlo values
            out["mc"] = mc_outputs(cfg)["values"]
    return out


def probe_output(config: Mapping[str, Any] | Config) -> str:
    """The fixed held-out rollouts every run's credit precision is measured on (base model samples)."""
    return str(paths_of(as_config(config)).probe_rollouts)


def mc_outputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    """The Monte Carlo values of the probe rollouts' prefixes and the step's summary."""
    p = paths_of(as_config(config))
    return {"values": str(p.mc_values), "summary": str(p.mc_summary)}


def mc_inputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    return {**probe_inputs(config), "probe": probe_output(config)}


def probe_inputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    cfg = as_config(config)
    return {"base": base_output(cfg), "test": data_outputs(cfg)["test"]}


def aggregate_inputs(config: Mapping[str, Any] | Config) -> dict[str, list[str]]:
    cfg = as_config(config)
    runs = cfg.run_ids()
    return {
        "metrics": [train_outputs(cfg, r)["metrics"] for r in runs],
        "final_weights": [train_outputs(cfg, r)["final_weights"] for r in runs],
        "curves": [train_outputs(cfg, r)["curve"] for r in runs],
        "summaries": [eval_outputs(cfg, t)["summary"] for t in eval_targets(cfg)],
        "samples": [eval_outputs(cfg, t)["samples"] for t in eval_targets(cfg)],
        "benchmarks": benchmarks(cfg),
    }


def table_outputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    """``{"performance_csv": ".../tables/performance.csv", ...}``."""
    out = paths_of(as_config(config))
    return {f"{name}_{ext}": str(out.table(name, ext)) for name, exts in TABLES.items() for ext in exts}


def figure_outputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    """``{"gini_bars_png": ".../figures/gini_bars.png", ...}``."""
    out = paths_of(as_config(config))
    return {f"{name}_{ext}": str(out.figure(name, ext)) for name in FIGURES for ext in FIGURE_FORMATS}


def report_outputs(outputs: Mapping[str, str], wrap: Callable[..., Any], captions: str) -> dict[str, Any]:
    """``table_outputs`` or ``figure_outputs`` as a rule's ``output:``, the files the HTML report shows
    passed through ``wrap`` (Snakemake's ``report``) with their caption and category.

    Shown: the CSV and Markdown of every table in ``REPORT_TABLES``, the claims (``REPORT_CLAIMS``)
    and the PNG of every figure, captioned by
    ``<captions>/tables/<name>.rst`` and ``<captions>/figures/<name>.rst`` (``captions`` is relative
    to the rule's file, as Snakemake reads it).
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


def figure_inputs(config: Mapping[str, Any] | Config) -> dict[str, Any]:
    """Tables, plus each run's final weights (the Lorenz curves need whole weight vectors)."""
    cfg = as_config(config)
    return {**table_outputs(cfg), "final_weights": aggregate_inputs(cfg)["final_weights"]}


def heatmap_rollouts_inputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    cfg = as_config(config)
    return {
        "base": base_output(cfg),
        "adapter": train_outputs(cfg, heatmap_run(cfg))["adapter"],
        "test": data_outputs(cfg)["test"],
    }


def heatmap_rollouts_output(config: Mapping[str, Any] | Config) -> str:
    """The heat-map run's held-out rollouts, scored under every credit method (the analysis step)."""
    return str(paths_of(as_config(config)).heatmap_rollouts)


def heatmap_inputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    return {"rollouts": heatmap_rollouts_output(config)}


def heatmap_output(config: Mapping[str, Any] | Config) -> str:
    return str(paths_of(as_config(config)).heatmap)


def bench_inputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    return train_inputs(config)


def bench_outputs(config: Mapping[str, Any] | Config) -> dict[str, str]:
    out = paths_of(as_config(config))
    return {ext: str(out.bench_summary(ext)) for ext in ("json", "md")}


def log(config: Mapping[str, Any] | Config, rule: str, name: str = "") -> str:
    """``results/<name>/logs/<rule>/<name or rule>.log``; ``name`` may hold a wildcard."""
    return str(paths_of(as_config(config)).log(rule, name))


def benchmark(config: Mapping[str, Any] | Config, rule: str, name: str = "") -> str:
    """``results/<name>/benchmarks/<rule>/<name or rule>.tsv``: Snakemake's record of one job's wall
    time and peak memory (rules in ``BENCHMARKED``); ``name`` may hold a wildcard."""
    return str(paths_of(as_config(config)).benchmark(rule, name))


def benchmarks(config: Mapping[str, Any] | Config) -> list[str]:
    """Every benchmark file of the sweep: the base model's build (and Monte Carlo values), each
    run's training, each evaluation."""
    cfg = as_config(config)
    return [
        benchmark(cfg, "build_base"),
        *([benchmark(cfg, "mc_values")] if cfg.eval.mc_problems > 0 else []),
        *(benchmark(cfg, "train", r) for r in cfg.run_ids()),
        *(benchmark(cfg, "evaluate", t) for t in eval_targets(cfg)),
    ]


def all_targets(config: Mapping[str, Any] | Config) -> list[str]:
    """What ``rule all`` asks for: every table, every figure and the credit heat map."""
    cfg = as_config(config)
    return [*table_outputs(cfg).values(), *figure_outputs(cfg).values(), heatmap_output(cfg)]


def complete(config: Mapping[str, Any] | Config) -> bool:
    """Whether every file ``rule all`` asks for exists (a run of part of the DAG may leave some out)."""
    return all(Path(p).exists() for p in all_targets(config))
