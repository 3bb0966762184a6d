"""Value checks of a loaded config that types alone cannot express (ranges, divisibility,
existing paths, the sweep's labels); each failure names the key and the source."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from pathlib import Path

from arca.config.ranges import check_paths, check_ranges, short
from arca.config.sections import Config, ConfigError, PretrainConfig

# The modules of the Qwen3 model that ``build-base`` pretrains which a LoRA adapter can wrap.
PRETRAIN_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "lm_head",
    "embed_tokens",
)


# ----------------------------------------------------------------------------- validation
def _check(cond: bool, source: str, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{source}: key '{key}' {msg}")


def is_local_path(s: str) -> bool:
    """A data/model reference is a local path (not a Hub id) if it looks like a file or exists."""
    return s.startswith((".", "/", "~")) or s.endswith((".jsonl", ".json", ".parquet")) or Path(s).exists()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def require_hub(ref: str, key: str) -> None:
    """Fail early, naming the key, when a step needs the Hub but the session is offline."""
    if hub_offline():
        raise ConfigError(f"key '{key}' names the Hub id {ref!r} but HF_HUB_OFFLINE=1; use a local path or go online")


def validate(cfg: Config, source: str = "<config>") -> None:
    """Value checks that types alone cannot express. Raises ``ConfigError``.

    What a credit method requires (that it exists, the LoRA modules it reads) is checked where the
    methods live, by ``arca.credit.check_config``.
    """
    check_paths(cfg, source)
    for check in (_check_model, _check_data, _check_rollout, _check_train_and_credit, _check_eval, _check_sweep):
        check(cfg, source)
    check_ranges(cfg, source)


def _check_model(cfg: Config, source: str) -> None:
    m = cfg.model
    if m.source in ("hub", "local"):
        _check(bool(m.name_or_path), source, "model.name_or_path", f"is required when model.source is {m.source}")
    if m.source == "local" or (m.source == "gguf" and m.name_or_path):
        _check(
            Path(m.name_or_path).exists(),
            source,
            "model.name_or_path",
            f"names a path that does not exist: {m.name_or_path}",
        )
    if m.source == "hub":
        _check(
            not Path(m.name_or_path).exists() and not m.name_or_path.startswith((".", "/")),
            source,
            "model.name_or_path",
            f"is a local path ({m.name_or_path}); use model.source: local",
        )
    _check_pretrain(m.pretrain, source)
    _check_lora(cfg, source)


def _check_pretrain(p: PretrainConfig, source: str) -> None:
    for k in (
        "hidden_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "intermediate_size",
        "steps",
        "batch_size",
        "seq_len",
        "threads",
    ):
        _check(getattr(p, k) > 0, source, f"model.pretrain.{k}", f"must be > 0, got {short(getattr(p, k))}")
    _check(
        p.hidden_size % p.num_heads == 0,
        source,
        "model.pretrain.hidden_size",
        "must be divisible by model.pretrain.num_heads",
    )
    _check(
        p.num_heads % p.num_kv_heads == 0,
        source,
        "model.pretrain.num_heads",
        "must be divisible by model.pretrain.num_kv_heads",
    )


def _check_lora(cfg: Config, source: str) -> None:
    _check(cfg.lora.rank > 0, source, "lora.rank", f"must be > 0, got {short(cfg.lora.rank)}")
    _check(
        cfg.lora.alpha is None or cfg.lora.alpha > 0,
        source,
        "lora.alpha",
        f"must be > 0 or null, got {short(cfg.lora.alpha)}",
    )
    _check(0.0 <= cfg.lora.dropout < 1.0, source, "lora.dropout", f"must be in [0, 1), got {short(cfg.lora.dropout)}")
    _check(len(cfg.lora.target_modules) > 0, source, "lora.target_modules", "must not be empty")
    if cfg.model.source == "pretrain":  # the model is known before it exists: refuse a typo before any work
        unknown = [t for t in cfg.lora.target_modules if t.rsplit(".", 1)[-1] not in PRETRAIN_MODULES]
        _check(
            not unknown,
            source,
            "lora.target_modules",
            f"names modules the pretrained Qwen3 model lacks: {short(unknown)} (it has {list(PRETRAIN_MODULES)})",
        )


def _check_data(cfg: Config, source: str) -> None:
    d = cfg.data
    _check(d.few_shot >= 0, source, "data.few_shot", f"must be >= 0 (0 = zero-shot), got {short(d.few_shot)}")
    if d.source == "generated":
        _check(d.n_train > 0 and d.n_test > 0, source, "data.n_train", "and data.n_test must be > 0")
        _check(
            d.few_shot < d.n_train,
            source,
            "data.few_shot",
            f"must leave training problems: {d.few_shot} shots of data.n_train {d.n_train}",
        )
        _check(
            bool(d.levels) and all(1 <= lv <= 5 for lv in d.levels),
            source,
            "data.levels",
            f"must be levels in 1..5, got {short(d.levels)}",
        )
        _check(
            0.0 <= d.forks.p_bug <= 1.0, source, "data.forks.p_bug", f"must be in [0, 1], got {short(d.forks.p_bug)}"
        )
        _check(bool(d.forks.families), source, "data.forks.families", "must not be empty")
    else:
        for k in ("train", "test"):
            v = getattr(d, k)
            if is_local_path(v):
                _check(Path(v).exists(), source, f"data.{k}", f"names a file that does not exist: {v}")


def _check_rollout(cfg: Config, source: str) -> None:
    r = cfg.rollout
    _check(
        r.k >= 2, source, "rollout.k", f"(group size K) must be >= 2 for group-normalized advantages, got {short(r.k)}"
    )
    _check(r.temperature > 0, source, "rollout.temperature", f"must be > 0, got {short(r.temperature)}")
    _check(0 < r.top_p <= 1, source, "rollout.top_p", f"must be in (0, 1], got {short(r.top_p)}")
    _check(r.top_k >= 0, source, "rollout.top_k", f"must be >= 0 (0 = off), got {short(r.top_k)}")
    _check(r.max_new_tokens > 0, source, "rollout.max_new_tokens", f"must be > 0, got {short(r.max_new_tokens)}")
    _check(
        0 <= r.min_new_tokens <= r.max_new_tokens,
        source,
        "rollout.min_new_tokens",
        f"must be in [0, rollout.max_new_tokens ({r.max_new_tokens})], got {short(r.min_new_tokens)}",
    )
    _check(r.batch_size > 0, source, "rollout.batch_size", f"must be > 0, got {short(r.batch_size)}")


def _check_train_and_credit(cfg: Config, source: str) -> None:
    t = cfg.train
    _check(t.steps > 0, source, "train.steps", f"must be > 0, got {short(t.steps)}")
    _check(t.prompts_per_step > 0, source, "train.prompts_per_step", f"must be > 0, got {short(t.prompts_per_step)}")
    _check(
        t.micro_batch_prompts > 0 and t.prompts_per_step % t.micro_batch_prompts == 0,
        source,
        "train.micro_batch_prompts",
        f"must be > 0 and divide train.prompts_per_step ({t.prompts_per_step}), got {short(t.micro_batch_prompts)}",
    )
    _check(t.lr > 0, source, "train.lr", f"must be > 0, got {short(t.lr)}")
    _check(t.warmup_steps >= 0, source, "train.warmup_steps", f"must be >= 0, got {short(t.warmup_steps)}")
    _check(t.grad_clip > 0, source, "train.grad_clip", f"must be > 0, got {short(t.grad_clip)}")
    _check(t.checkpoint_every > 0, source, "train.checkpoint_every", f"must be > 0, got {short(t.checkpoint_every)}")
    _check(t.threads > 0, source, "train.threads", f"must be > 0, got {short(t.threads)}")

    _check(cfg.credit.sharpen > 0, source, "credit.sharpen", f"must be > 0, got {short(cfg.credit.sharpen)}")
    _check(cfg.credit.eps > 0, source, "credit.eps", f"must be > 0, got {short(cfg.credit.eps)}")


def _check_eval(cfg: Config, source: str) -> None:
    e = cfg.eval
    _check(e.n_problems > 0, source, "eval.n_problems", f"must be > 0, got {short(e.n_problems)}")
    _check(e.pass_k >= 1, source, "eval.pass_k", f"must be >= 1, got {short(e.pass_k)}")
    _check(e.top_k >= 0, source, "eval.top_k", f"must be >= 0 (0 = off), got {short(e.top_k)}")
    _check(e.grader_timeout > 0, source, "eval.grader_timeout", f"must be > 0, got {short(e.grader_timeout)}")
    _check(e.every >= 0, source, "eval.every", f"must be >= 0 (0 = no learning curve), got {short(e.every)}")
    _check(e.curve_problems > 0, source, "eval.curve_problems", f"must be > 0, got {short(e.curve_problems)}")
    _check(
        e.probe_problems >= 0, source, "eval.probe_problems", f"must be >= 0 (0 = off), got {short(e.probe_problems)}"
    )
    _check(
        "math500" not in e.protocols or cfg.data.source == "math",
        source,
        "eval.protocols",
        f"includes math500, which needs data.source: math (got data.source: {cfg.data.source})",
    )
    _check(
        0 <= e.mc_problems <= e.probe_problems,
        source,
        "eval.mc_problems",
        f"must be between 0 (off) and eval.probe_problems ({e.probe_problems}), got {short(e.mc_problems)}",
    )
    _check(e.mc_samples >= 1, source, "eval.mc_samples", f"must be >= 1, got {short(e.mc_samples)}")

    if cfg.monitor.tensorboard:
        _check(
            importlib.util.find_spec("tensorboard") is not None,
            source,
            "monitor.tensorboard",
            "is true but the tensorboard package is not installed: pip install 'arca-bench[tensorboard]'",
        )


def _check_sweep(cfg: Config, source: str) -> None:
    s = cfg.sweep
    _check(len(s.cells) > 0, source, "sweep.cells", "must not be empty")
    _check(
        len(s.seeds) > 0 and len(set(s.seeds)) == len(s.seeds),
        source,
        "sweep.seeds",
        f"must be a non-empty list of distinct seeds, got {short(s.seeds)}",
    )
    labels = set()
    for i, cell in enumerate(s.cells):
        _check(
            bool(cell.ranks) and all(rk > 0 for rk in cell.ranks),
            source,
            f"sweep.cells[{i}].ranks",
            f"must be positive ranks, got {short(cell.ranks)}",
        )
        _check(
            re.fullmatch(r"[A-Za-z0-9\-]+(_[A-Za-z0-9\-]+)*", cell.name) is not None,
            source,
            f"sweep.cells[{i}].label",
            f"must be letters, digits, '-' and '_', got {short(cell.name)}",
        )
        _check(
            cell.name not in labels,
            source,
            f"sweep.cells[{i}].label",
            f"repeats the label {cell.name!r}; give ablations a distinct label",
        )
        labels.add(cell.name)
        for key in cell.overrides:
            _check(
                key.split(".")[0] in {f.name for f in dataclasses.fields(Config)},
                source,
                f"sweep.cells[{i}].overrides",
                f"has an unknown key {key!r}",
            )
            # every run of the sweep writes under one results/<name>/ folder
            _check(
                key.split(".")[0] not in ("name", "paths", "sweep"),
                source,
                f"sweep.cells[{i}].overrides",
                f"may not set {key!r}: all runs of a sweep share name, paths and sweep",
            )
    for i, cell in enumerate(s.cells):
        for j, other in enumerate(cell.compare):
            _check(
                other in labels and other != cell.name,
                source,
                f"sweep.cells[{i}].compare[{j}]",
                f"must name another cell of the sweep (labels: {sorted(labels)}), got {short(other)}",
            )
