"""The sweep's meaning: which runs and evaluation targets exist, a run's resolved config, fingerprints.

A run id ``<label>_r<rank>_s<seed>`` names one training cell; ``for_run`` gives its config (the
cell's method, rank, seed and overrides set last), ``run_hash`` fingerprints it so that editing one
cell reruns only that cell.
"""

from __future__ import annotations

import hashlib
import json

from arca.config.loading import from_dict, parse_override, set_dotted
from arca.config.sections import Config, ConfigError, parse_run_id, to_dict, training_hash

BASE = "base"  # the evaluation target that means "the base model, no adapter"


def eval_targets(cfg: Config) -> list[str]:
    """What ``evaluate`` runs on: the base model and every training run."""
    return [BASE, *cfg.run_ids()]


# What every record of a run carries, in this order (``run_identity``).
RUN_IDENTITY = ("run", "label", "method", "rank", "seed")

# The columns of one training step in a run's ``metrics.jsonl`` (the report's order): every step of
# every method writes them. After them a step writes the seconds of each update phase, its extra
# passes and, on a corpus with planted forks, the fork-label metrics; the report keeps those too.
STEP_COLUMNS = (
    "step",
    *RUN_IDENTITY,
    "loss",
    "reward_mean",
    "reward_std",
    "lr",
    "grad_norm",
    "gen_seconds",
    "update_seconds",
    "step_seconds",
    "completion_len_mean",
    "surprisal_mean",
    "gini",
    "eff_ratio",
    "fallback_frac",
    "residual_mean",
    "residual_max",
)


def cell_of(run_id: str) -> str:
    """The cell id ``<label>_r<rank>`` of a run id: every seed of one (label, rank) line of the sweep."""
    label, rank, _ = parse_run_id(run_id)
    return f"{label}_r{rank}"


def cell_runs(cfg: Config) -> dict[str, list[str]]:
    """Cell id -> its run ids (one per seed, in the sweep's seed order), cells in sweep order."""
    out: dict[str, list[str]] = {}
    for run in cfg.run_ids():
        out.setdefault(cell_of(run), []).append(run)
    return out


def run_identity(run_id: str, method: str = BASE) -> dict:
    """What every record of a run carries: ``RUN_IDENTITY`` of ``run_id`` trained with ``method``.

    The base model (``run_id`` ``BASE``) is named ``BASE`` in every field and has no rank or seed.
    """
    if run_id == BASE:
        return dict(zip(RUN_IDENTITY, (BASE, BASE, BASE, None, None)))
    label, rank, seed = parse_run_id(run_id)
    return dict(zip(RUN_IDENTITY, (run_id, label, method, rank, seed)))


def for_run(cfg: Config, run_id: str) -> Config:
    """The resolved config of one training cell (method, rank, seed and the cell's overrides set)."""
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


def run_hash(cfg: Config, run_id: str) -> str:
    """The training fingerprint of one run; a train param so that only changed cells rerun."""
    return training_hash(for_run(cfg, run_id))


def eval_hash(cfg: Config) -> str:
    """Fingerprint of the settings every evaluation depends on beyond its input files."""
    raw = to_dict(cfg)
    relevant = {
        "eval": raw["eval"],
        "device": raw["device"],
        "chat_template": raw["model"]["chat_template"],
        "max_prompt_tokens": raw["data"]["max_prompt_tokens"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def curve_start_hash(cfg: Config) -> str:
    """Fingerprint of what the shared step-0 curve point depends on beyond the base model and the
    data: the evaluation settings and the sampler (backend, decoder, batch size, precision)."""
    r, m = cfg.rollout, cfg.model
    relevant = [eval_hash(cfg), r.backend, r.decoder, r.batch_size, r.k, m.dtype, m.attn_implementation]
    return hashlib.sha256(json.dumps(relevant).encode()).hexdigest()[:16]


def shares_curve_start(cfg: Config) -> bool:
    """Whether runs take their step-0 curve point from ``curve-start`` (computed once on the base
    model): with curve points, on the transformers backend, whose adapter at B = 0 computes the
    base model's numbers exactly."""
    return cfg.eval.every > 0 and cfg.rollout.backend == "transformers"


def heatmap_run(cfg: Config) -> str:
    """The run whose rollouts the credit heat map shows: ``sweep.heatmap_run``, else the first
    ARCA run, else the first run."""
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
