"""Every output path of an experiment, named once: ``results/<name>/...`` as frozen dataclasses.

The Snakemake rules name their inputs and outputs through these objects (``P = paths_of(CFG)``),
and every step and report module takes the files it reads and writes from them, so a rule's
declared output and the file its step writes cannot drift apart. The layout::

    results/<name>/
      data/{train,test,math500,shots}.jsonl prepare-data
      base/                                 build-base (pretrain_loss.jsonl inside when pretrained here)
      runs/<run>/                           train: adapter/, metrics.jsonl, final_weights.json,
                                            curve.jsonl; beside them config.yaml, checkpoints/,
                                            live/ and tensorboard/ (never declared outputs)
      eval/<run or base>/                   evaluate: summary.json, samples.jsonl
      eval/probe_rollouts.jsonl             probe-rollouts
      eval/curve_start.json                 curve-start (step 0 of every run's learning curve)
      eval/mc_values.jsonl, mc_summary.json mc-values
      analysis/heatmap_rollouts.jsonl       heatmap-rollouts
      tables/, figures/, bench/             aggregate, figures and heatmap, bench
      logs/<rule>/, benchmarks/<rule>/      Snakemake's logs and job benchmarks

Config-level: it knows only ``arca.config``. A run id or target may be a Snakemake wildcard
(``"{run}"``); the paths are then patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arca.config import Config

PRETRAIN_LOSS = "pretrain_loss.jsonl"  # the pretraining curve, inside the base model's folder

# Every table ``aggregate`` writes, with its formats, and every figure ``figures`` draws.
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
FIGURES = (
    "gini_bars",
    "concentration_curves",
    "reward_curves",
    "accuracy",
    "lorenz",
    "accuracy_vs_params",
    "credit_precision",
    "learning_curves",
    "performance_profile",
)
FIGURE_FORMATS = ("png", "pdf")

# The jobs whose wall time and peak memory Snakemake records (their `benchmark:` files) for the cost table.
BENCHMARKED = ("build_base", "mc_values", "train", "evaluate")


def table_file(name: str, ext: str) -> str:
    """A table's file name, in ``tables/`` and in a reference folder that copies it."""
    return f"{name}.{ext}"


@dataclass(frozen=True)
class DataPaths:
    """``data/``: the problem sets ``prepare-data`` writes."""

    root: Path
    with_math500: bool = False  # MATH-500 is written only for MATH data evaluated on that protocol

    @property
    def train(self) -> Path:
        return self.root / "train.jsonl"

    @property
    def test(self) -> Path:
        return self.root / "test.jsonl"

    @property
    def math500(self) -> Path:
        return self.root / "math500.jsonl"

    @property
    def shots(self) -> Path:
        """The few-shot worked examples (``data.few_shot``), written beside the splits, never declared."""
        return self.root / "shots.jsonl"

    def declared(self) -> dict[str, Path]:
        """The prepare-data rule's outputs by name."""
        out = {"train": self.train, "test": self.test}
        return {**out, "math500": self.math500} if self.with_math500 else out


@dataclass(frozen=True)
class RunPaths:
    """``runs/<run>/``: one training run's folder."""

    root: Path

    # The declared outputs of the train rule, each renamed into place when complete.
    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def final_weights(self) -> Path:
        return self.root / "final_weights.json"

    @property
    def curve(self) -> Path:
        return self.root / "curve.jsonl"

    # Beside them, never declared: Snakemake deletes a failed job's declared outputs, and these
    # must survive for the rerun to resume (checkpoints) or stay readable while it trains (live).
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:06d}"

    def set_aside(self, run_hash: str) -> Path:
        """Where the checkpoints of another config of this run wait while this one trains."""
        return self.root / f"checkpoints.{run_hash}"

    @property
    def lock(self) -> Path:
        """Held (``flock``) by the one trainer writing this folder; removed when it ends."""
        return self.root / ".train.lock"

    @property
    def live(self) -> Path:
        """metrics.jsonl and curve.jsonl as they grow, a flushed line per step, while the run trains."""
        return self.root / "live"

    @property
    def live_metrics(self) -> Path:
        return self.live / "metrics.jsonl"

    @property
    def live_curve(self) -> Path:
        return self.live / "curve.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def declared(self) -> dict[str, Path]:
        """The train rule's outputs by name (``adapter`` is a folder)."""
        return {
            "adapter": self.adapter,
            "metrics": self.metrics,
            "final_weights": self.final_weights,
            "curve": self.curve,
        }


@dataclass(frozen=True)
class EvalPaths:
    """``eval/<run or base>/``: one evaluation's files."""

    root: Path

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    def declared(self) -> dict[str, Path]:
        return {"summary": self.summary, "samples": self.samples}


@dataclass(frozen=True)
class Paths:
    """``results/<name>/`` of one experiment (``paths_of(cfg)``)."""

    root: Path
    with_math500: bool = False

    @property
    def data(self) -> DataPaths:
        return DataPaths(self.root / "data", self.with_math500)

    @property
    def base(self) -> Path:
        return self.root / "base"

    def run(self, run_id: str) -> RunPaths:
        return RunPaths(self.root / "runs" / run_id)

    def eval(self, target: str) -> EvalPaths:
        """``target`` is a run id or ``base``."""
        return EvalPaths(self.root / "eval" / target)

    @property
    def probe_rollouts(self) -> Path:
        """The credit-precision probe's fixed held-out rollouts (the base model's samples)."""
        return self.root / "eval" / "probe_rollouts.jsonl"

    @property
    def curve_start(self) -> Path:
        """The base model's held-out point, step 0 of every run's learning curve (``arca.learning_curve``)."""
        return self.root / "eval" / "curve_start.json"

    @property
    def mc_values(self) -> Path:
        """V_t of the probe rollouts' prefixes under the base model (``arca.mc_values``)."""
        return self.root / "eval" / "mc_values.jsonl"

    @property
    def mc_summary(self) -> Path:
        """The Monte Carlo step's cost and its check of the first-error labels."""
        return self.root / "eval" / "mc_summary.json"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def heatmap_rollouts(self) -> Path:
        return self.analysis / "heatmap_rollouts.jsonl"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str, ext: str) -> Path:
        return self.tables / table_file(name, ext)

    def table_files(self) -> dict[str, Path]:
        """Every table of ``TABLES``: ``{"performance_csv": .../tables/performance.csv, ...}``."""
        return {f"{name}_{ext}": self.table(name, ext) for name, exts in TABLES.items() for ext in exts}

    @property
    def report(self) -> Path:
        """Snakemake's HTML report of the experiment, written when a run of the DAG succeeds."""
        return self.root / "report.html"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def figure(self, name: str, ext: str) -> Path:
        return self.figures / f"{name}.{ext}"

    def figure_files(self) -> dict[str, Path]:
        """Every figure of ``FIGURES`` in every format: ``{"gini_bars_png": ..., ...}``."""
        return {f"{name}_{ext}": self.figure(name, ext) for name in FIGURES for ext in FIGURE_FORMATS}

    @property
    def heatmap(self) -> Path:
        return self.figure("credit_heatmap", "html")

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    def bench_summary(self, ext: str) -> Path:
        """``bench/summary.json`` and ``summary.md``: the training-step benchmark."""
        return self.bench / f"summary.{ext}"

    @property
    def reference_claims(self) -> Path:
        """``compare-reference``'s verdict on the reference's claims."""
        return self.root / "reference_claims.md"

    @property
    def reference_comparison(self) -> Path:
        """``compare-reference --exact``: every number that differs from the reference."""
        return self.root / "reference_comparison.md"

    def log(self, rule: str, name: str = "") -> Path:
        """``logs/<rule>/<name or rule>.log``; ``name`` may hold a wildcard."""
        return self.root / "logs" / rule / f"{name or rule}.log"

    def benchmark(self, rule: str, name: str = "") -> Path:
        """``benchmarks/<rule>/<name or rule>.tsv``: Snakemake's wall time and peak memory of a job."""
        return self.root / "benchmarks" / rule / f"{name or rule}.tsv"


def paths_of(cfg: Config) -> Paths:
    """The output folders of ``cfg``'s experiment: ``<paths.results>/<name>/``."""
    with_math500 = "math500" in cfg.eval.protocols and cfg.data.source == "math"
    return Paths(Path(cfg.paths.results) / cfg.name, with_math500)
