"""What a trained adapter folder carries besides peft's weights, so it can be used anywhere.

``runs/<run>/adapter/`` holds peft's ``adapter_config.json`` and ``adapter_model.safetensors``,
the tokenizer, ``arca_run.json`` (run identity, config hash, final training metrics) and a filled
model card ``README.md`` written with ``huggingface_hub``'s ``ModelCard`` (metadata with a
model-index, the exact prompt, held-out results, training, how to load it, limitations).

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

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from arca import __version__
from arca.config import Config, InputError, MissingInputError, for_run
from arca.paths import paths_of
from arca.prompts import PROMPT_TEMPLATE

RUN_INFO = "arca_run.json"  # in the adapter folder: which run, which settings (config hash), how far

CARD_METRICS = ("reward_mean", "gini", "eff_ratio", "fallback_frac", "decisive_auroc")
LICENSE = "mit"  # the benchmark's (pyproject.toml); the base model's own license also applies
ADAPTER_PLACEHOLDER = "path/to/this/adapter"


def base_model_reference(cfg: Config) -> str:
    """The base model as an adapter should record it: a Hub id, or an absolute folder path."""
    if cfg.model.source == "hub":
        return cfg.model.name_or_path
    return str(paths_of(cfg).base.resolve())


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


def _tags(cfg: Config) -> list[str]:
    return ["lora", "grpo", "token-credit-assignment", f"credit-{cfg.credit.method}", "arca-bench"]


def base_model_name(cfg: Config) -> str:
    """The base model as a reader knows it: the Hub id, the GGUF package, or what was built here (no path)."""
    m = cfg.model
    if m.source == "hub":
        return m.name_or_path
    if m.source == "gguf":
        return f"the GGUF model of {m.gguf_package}"
    if m.source == "local":
        return Path(m.name_or_path).name or m.name_or_path
    size = f"{m.pretrain.num_layers} layers, width {m.pretrain.hidden_size}"
    return f"a Qwen3-architecture model pretrained by arca-bench ({size})"


def _dataset(cfg: Config, protocol: str) -> tuple[str, str]:
    """(name, type) of the held-out problems of ``protocol``, for the model-index."""
    if protocol == "math500":
        return "MATH-500", cfg.data.math500
    if cfg.data.source == "math":
        return f"{Path(cfg.data.test).name} (first {cfg.eval.n_problems} test rows)", Path(cfg.data.test).name
    return f"held-out generated problems of experiment {cfg.name}", "arca-bench/generated"


def read_summary(cfg: Config, run: str) -> dict | None:
    """The run's ``eval/<run>/summary.json`` when the evaluation has been written, else None."""
    from arca.paths import paths_of

    path = paths_of(cfg).eval(run).summary
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def eval_results(cfg: Config, info: dict, summary: dict | None) -> list[EvalResult]:
    """The held-out results for the model-index: every protocol of ``summary`` (greedy accuracy and
    pass@k, string-match grader), else the last point of the run's held-out learning curve."""
    results = []
    for protocol, s in (summary or {}).get("protocols", {}).items():
        name, kind = _dataset(cfg, protocol)
        grader = s.get("primary_grader", "paper")
        pass_k = s.get("pass_at_k", {})
        for metric, value, label in (
            ("accuracy", s.get("greedy", {}).get(grader), "greedy accuracy"),
            (f"pass@{pass_k.get('k')}", pass_k.get(grader), f"pass@{pass_k.get('k')}"),
        ):
            if isinstance(value, (int, float)):
                results.append(_result(name, kind, metric, float(value), label))
    fm = info.get("final_metrics", {})
    if not results and "curve_greedy" in fm:
        name, kind = _dataset(cfg, "generated")
        label = f"greedy accuracy at step {fm['curve_step']} ({fm['curve_problems']} problems)"
        results.append(_result(name, kind, "accuracy", float(fm["curve_greedy"]), label))
    return results


def _result(name: str, kind: str, metric: str, value: float, label: str) -> EvalResult:
    return EvalResult(
        task_type="text-generation",
        dataset_type=kind,
        dataset_name=name,
        metric_type=metric,
        metric_value=value,
        metric_name=label,
    )


def _card_data(cfg: Config, info: dict, results: list[EvalResult]) -> ModelCardData:
    return ModelCardData(
        base_model=cfg.model.name_or_path if cfg.model.source == "hub" else None,
        library_name="peft",
        license=LICENSE,
        pipeline_tag="text-generation",
        tags=_tags(cfg),
        model_name=info["run"],
        eval_results=results or None,
    )


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
        (
            "base model",
            f"`{base}`" if hub else f"{base} (`base/` of the experiment, built by `python -m arca build-base`)",
        ),
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


def _prompt(cfg: Config) -> list[str]:
    """The "Prompt format" section: the exact training and evaluation prompt."""
    text = PROMPT_TEMPLATE.format(problem="{problem}")
    extra = []
    if cfg.data.few_shot:
        extra.append(f"{cfg.data.few_shot} worked example(s) (`data/shots.jsonl`) come first, as earlier turns")
    if cfg.model.chat_template:
        extra.append("the whole is sent through the tokenizer's chat template")
    note = (
        f" In this experiment {' and '.join(extra)} (`arca.prompts`); the example below leaves that out."
        if extra
        else ""
    )
    return [
        "## Prompt format",
        "",
        "Trained and evaluated on exactly this prompt, `{problem}` replaced by the problem's text and no "
        "special tokens added; the adapter answers with a worked solution that ends in `\\boxed{answer}`. "
        "Other wordings (a bare problem, for instance) are out of distribution." + note,
        "",
        "```text",
        text.rstrip("\n"),
        "```",
        "",
    ]


def _loading(cfg: Config, hub: bool) -> list[str]:
    """The "Loading and generating" section; for a base built here, what to edit when the results folder moves."""
    moved = (
        ""
        if hub
        else "\nThe base is recorded in `adapter_config.json` as the absolute path of the experiment's `base/` "
        "folder. If you move or copy the results folder, set `base_model_name_or_path` there to the new location "
        "of `base/` (or load the base yourself and use `PeftModel.from_pretrained(base, adapter_dir)`).\n"
    )
    return [
        "## Loading and generating",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        f"ADAPTER, PROMPT = {ADAPTER_PLACEHOLDER!r}, {PROMPT_TEMPLATE!r}",
        "model, tok = AutoPeftModelForCausalLM.from_pretrained(ADAPTER), AutoTokenizer.from_pretrained(ADAPTER)",
        'ids = tok(PROMPT.format(problem="What is 7 + 5?"), return_tensors="pt", add_special_tokens=False)',
        f"print(tok.decode(model.generate(**ids, max_new_tokens={cfg.eval.max_new_tokens}, do_sample=False)"
        '[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        moved,
    ]


def _limitations(cfg: Config) -> list[str]:
    return [
        "## Limitations",
        "",
        f"- A benchmark artefact: one cell of a sweep that compares token-credit methods, trained on "
        f"{_data_words(cfg)} from {base_model_name(cfg)}. It is not a general-purpose math model.",
        "- Accuracy is measured on held-out problems of the same source with a string match of the last "
        "`\\boxed{}` (and Math-Verify beside it); other problem formats and answer styles are untested.",
        f"- {cfg.train.steps} GRPO steps with seed {cfg.train.seed}: the spread between seeds is in the "
        "experiment's tables, not on this card.",
        "",
    ]


def _data_words(cfg: Config) -> str:
    if cfg.data.source == "math":
        return f"MATH-format problems ({Path(cfg.data.train).name})"
    return "generated arithmetic word problems" + (" with planted forks" if cfg.data.forks.p_bug > 0 else "")


def _results_rows(results: list[EvalResult]) -> list[tuple[str, str]]:
    return [(f"{r.metric_name}, {r.dataset_name}", f"{r.metric_value:.4g}") for r in results]


def model_card(cfg: Config, info: dict, summary: dict | None = None) -> str:
    """The adapter's ``README.md``: Hugging Face card metadata (``huggingface_hub``'s ``ModelCardData``),
    then what the run was, its prompt, its held-out results and how to load it.

    ``info`` is the content of ``arca_run.json`` (identity, config hash, steps, final metrics);
    ``summary`` the run's ``eval/<run>/summary.json`` (default: read when it exists).
    """
    if summary is None:
        summary = read_summary(cfg, info["run"])
    base = base_model_name(cfg)
    hub = cfg.model.source == "hub"
    results = eval_results(cfg, info, summary)
    metric_rows = _metric_rows(info)
    source = "`eval/{run}/summary.json`".format(run=info["run"]) if summary else "the held-out learning curve"
    body = "\n".join(
        [
            f"# {info['run']}: a LoRA adapter trained with GRPO and `{cfg.credit.method}` token credit",
            "",
            "Trained by arca-bench, a benchmark of token-level credit assignment in LoRA-GRPO that "
            "reproduces *ARCA: Adapter-Residual Credit Assignment When Token Signals Degenerate* "
            f"(arXiv 2606.00257), experiment `{cfg.name}`.",
            "",
            *_prompt(cfg),
            "## Held-out results",
            "",
            (_table(_results_rows(results)) + f"\n\nFrom {source}.") if results else "(not evaluated yet)",
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
            *_loading(cfg, hub),
            *_limitations(cfg),
        ]
    )
    card = ModelCard(f"---\n{_card_data(cfg, info, results).to_yaml()}\n---\n\n{body}")
    return str(card)


def adapter_run_info(adapter_dir: Path) -> dict:
    """The ``arca_run.json`` a finished run wrote into its adapter folder (its identity and config hash)."""
    path = Path(adapter_dir) / RUN_INFO
    if not path.is_file():
        raise MissingInputError(
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


def refresh_card(cfg: Config, run_id: str) -> Path:
    """Rewrite a finished run's card with its evaluation (``eval/<run>/summary.json``).

    The card and its folder keep their modification times, so Snakemake sees no newer adapter and
    reruns nothing because of it.
    """
    import os

    from arca.io import write_text
    from arca.paths import paths_of

    run_cfg = for_run(cfg, run_id)
    adapter = paths_of(run_cfg).run(run_id).adapter
    info = adapter_run_info(adapter)
    summary = read_summary(run_cfg, run_id)
    if summary is None:
        raise MissingInputError(
            f"{paths_of(run_cfg).eval(run_id).summary} not found: evaluate {run_id} first "
            f"(python -m arca evaluate --run {run_id} with the same --config)"
        )
    card = adapter / "README.md"
    times = [(p, p.stat()) for p in (card, adapter) if p.exists()]
    write_text(card, model_card(run_cfg, info, summary))
    for path, st in times:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return card


def card_main(cfg: Config, args) -> None:
    print(refresh_card(cfg, args.run))


def push_adapter(cfg: Config, run_id: str, repo_id: str, private: bool = False, api: Any = None) -> str:
    """Upload a finished run's adapter folder (weights, tokenizer, card) to the Hub repo ``repo_id``.

    Only for a base model on the Hub: any other base is recorded as a local path, so the uploaded
    adapter would not load. ``api`` stands in for ``huggingface_hub.HfApi()`` (tests).
    """
    from arca.paths import paths_of

    run_cfg = for_run(cfg, run_id)
    adapter = paths_of(run_cfg).run(run_id).adapter
    adapter_run_info(adapter)  # a finished run, or an error saying so
    if run_cfg.model.source != "hub":
        raise ValueError(
            f"{run_id}: its base model ({base_model_name(run_cfg)}) is not on the Hub, so the uploaded adapter "
            "would not load; push runs of a config with model.source: hub"
        )
    ModelCard.load(adapter / "README.md")  # the card must be one the Hub reads
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    return str(api.upload_folder(folder_path=str(adapter), repo_id=repo_id, commit_message=f"arca-bench {run_id}"))


def push_main(cfg: Config, args) -> None:
    print(push_adapter(cfg, args.run, args.repo_id, private=args.private))
