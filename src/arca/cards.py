"""What a trained adapter folder carries besides peft's weights, so it can be used anywhere.

``runs/<run>/adapter/`` holds peft's ``adapter_config.json`` and ``adapter_model.safetensors``,
the tokenizer, ``arca_run.json`` (run identity, config hash, final training metrics) and a filled
model card ``README.md`` (what was trained, how, what came out, how to load it).

``base_model_name_or_path`` in ``adapter_config.json`` is what peft's
``AutoPeftModelForCausalLM.from_pretrained(adapter_dir)`` loads as the base: it passes the string
to ``from_pretrained`` unchanged, so a relative path would resolve against the *caller's* working
directory, not the adapter folder. It is therefore the Hub id for ``model.source: hub`` and the
absolute path of ``results/<name>/base/`` otherwise (a pretrained-here, local or GGUF base is
materialized there, tokenizer included); the card says what to edit when that folder moves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from arca import __version__
from arca.config import Config, InputError

RUN_INFO = "arca_run.json"  # in the adapter folder: which run, which settings (config hash), how far

CARD_METRICS = ("reward_mean", "gini", "eff_ratio", "fallback_frac", "decisive_auroc")


def base_model_reference(cfg: Config) -> str:
    """The base model as an adapter should record it: a Hub id, or an absolute folder path."""
    if cfg.model.source == "hub":
        return cfg.model.name_or_path
    return str(Path(cfg.base_dir).resolve())


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return sum(vals) / len(vals) if vals else None


def final_metrics(metrics: list[dict], curve: list[dict]) -> dict[str, Any]:
    """Training's end state: the last step's and the run's mean metrics, and the last curve point."""
    out: dict[str, Any] = {}
    last = metrics[-1] if metrics else {}
    for key in CARD_METRICS:
        if key in last:
            out[f"last_{key}"] = last[key]
            out[f"mean_{key}"] = _mean(metrics, key)
    if curve:
        point = curve[-1]
        out.update(
            curve_step=point["step"],
            curve_greedy=point["greedy"],
            curve_sampled=point["sampled"],
            curve_problems=point["n"],
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _metadata(cfg: Config, base: str, hub: bool) -> list[str]:
    """The card's Hugging Face metadata block (between ``---`` lines), then an empty line."""
    meta = ["---", "library_name: peft", "pipeline_tag: text-generation"]
    if hub:
        meta.append(f"base_model: {base}")
    return meta + ["tags:", "- lora", "- grpo", "- token-credit-assignment", f"- credit-{cfg.credit.method}", "---", ""]


def _training_rows(cfg: Config, info: dict, base: str, hub: bool) -> list[tuple[str, str]]:
    """The "Training" table: what was trained, with which settings, from which base, by what."""
    t, r = cfg.train, cfg.rollout
    return [
        ("run id", f"`{info['run']}` (experiment `{cfg.name}`)"),
        (
            "credit method (`credit.method`)",
            f"`{cfg.credit.method}`, sharpen s = {cfg.credit.sharpen:g}, normalization `{cfg.credit.normalization}`",
        ),
        (
            "LoRA",
            f"rank {cfg.lora.rank}, alpha {cfg.lora.lora_alpha:g}, dropout {cfg.lora.dropout:g}, "
            f"modules {', '.join(cfg.lora.target_modules)}",
        ),
        ("seed (`train.seed`)", str(cfg.train.seed)),
        (
            "optimizer steps",
            f"{info['steps']} of {t.prompts_per_step} prompts x K = {r.k} completions, "
            f"lr {t.lr:g} (warm-up {t.warmup_steps}, cosine), AdamW",
        ),
        (
            "sampling while training",
            f"T = {r.temperature:g}, top-k {r.top_k}, top-p {r.top_p:g}, up to {r.max_new_tokens} new tokens",
        ),
        ("trainable parameters", f"{info.get('trainable_params', '-'):,}" if info.get("trainable_params") else "-"),
        ("config hash", f"`{info['config_hash']}` (training sections of `../config.yaml`)"),
        ("base model", f"`{base}`" + ("" if hub else " (built by `python -m arca build-base`)")),
        ("written by", f"arca-bench {__version__}, `python -m arca train --run {info['run']}`"),
    ]


def _metric_rows(info: dict) -> list[tuple[str, str]]:
    """The "Final training metrics" table: last step / mean of each card metric, and the last curve point."""
    fm = info.get("final_metrics", {})
    rows = [
        (f"{key} (last step / mean over training)", f"{_fmt(fm.get('last_' + key))} / {_fmt(fm.get('mean_' + key))}")
        for key in CARD_METRICS
        if "last_" + key in fm
    ]
    if "curve_greedy" in fm:
        rows.append(
            (
                f"held-out accuracy at step {fm['curve_step']} ({fm['curve_problems']} problems)",
                f"greedy {_fmt(fm['curve_greedy'])}, one sample {_fmt(fm['curve_sampled'])}",
            )
        )
    return rows


def _table(pairs: list[tuple[str, str]]) -> str:
    """A two-column markdown table without a header."""
    return "\n".join(["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in pairs)])


def _loading(hub: bool) -> list[str]:
    """The "Loading" section; for a base built here, what to edit when the results folder moves."""
    moved = (
        ""
        if hub
        else "\nThe base is recorded as an absolute path. If you move or copy the results folder, set "
        "`base_model_name_or_path` in `adapter_config.json` to the new location of `base/` "
        "(or load the base yourself and use `PeftModel.from_pretrained(base, adapter_dir)`).\n"
    )
    return [
        "## Loading",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        'model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/adapter")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/adapter")',
        "```",
        moved,
    ]


def model_card(cfg: Config, info: dict) -> str:
    """The adapter's ``README.md``: Hugging Face card metadata, then what the run was and how to load it.

    ``info`` is the content of ``arca_run.json`` (identity, config hash, steps, final metrics).
    """
    base = base_model_reference(cfg)
    hub = cfg.model.source == "hub"
    metric_rows = _metric_rows(info)
    return "\n".join(
        [
            *_metadata(cfg, base, hub),
            f"# {info['run']}: a LoRA adapter trained with GRPO and `{cfg.credit.method}` token credit",
            "",
            "Trained by arca-bench, a benchmark of token-level credit assignment in LoRA-GRPO that "
            "reproduces *ARCA: Adapter-Residual Credit Assignment When Token Signals Degenerate* "
            f"(arXiv 2606.00257). The held-out evaluation of this run: `{cfg.eval_dir(info['run']) / 'summary.json'}`; "
            f"the experiment's tables: `{cfg.out_dir / 'tables'}/`.",
            "",
            "## Training",
            "",
            _table(_training_rows(cfg, info, base, hub)),
            "",
            "## Final training metrics",
            "",
            _table(metric_rows) if metric_rows else "(no metrics recorded)",
            "",
            "`reward_mean`: share of correct completions (string-match grader); `gini` and `eff_ratio`: "
            "concentration of the token weights (0 and 1 for uniform credit); `fallback_frac`: share of "
            "sequences that fell back to uniform weights; `decisive_auroc`: how well the weights pick out "
            "the planted decisive tokens (0.5 = chance; planted-fork data only).",
            "",
            *_loading(hub),
        ]
    )


def adapter_run_info(adapter_dir: Path) -> dict:
    """The ``arca_run.json`` a finished run wrote into its adapter folder (its identity and config hash)."""
    path = Path(adapter_dir) / RUN_INFO
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {adapter_dir} is not a finished run of this version of arca; retrain it"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def check_adapter_hash(adapter_dir: Path, run_id: str, expected: str) -> None:
    """Refuse an adapter trained with other settings than the config now asks for.

    A hand run (``python -m arca train --run R --set train.lr=...``) writes into the run's own
    folder; evaluating or tabulating it under the sweep's settings would mix experiments silently.
    """
    got = adapter_run_info(adapter_dir).get("config_hash")
    if got != expected:
        raise InputError(
            f"{adapter_dir} was trained with config hash {got}, but this config gives run '{run_id}' the hash "
            f"{expected}: it was trained with other settings (by hand with --set?). Retrain it with this config "
            f"(snakemake --cores all --forcerun {adapter_dir}, with your --configfile, "
            f"or delete {Path(adapter_dir).parent}), "
            "or pass the settings it was trained with"
        )
