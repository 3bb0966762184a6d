"""Reading a sweep's result files into records: one ``RunRecord`` per run (metrics, curve, evaluation
summary and per-problem scores), checked against its summary and its config hash, and grouped
into sweep cells (label x rank, over seeds). Every table and figure starts from these.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from arca.config import (
    STEP_COLUMNS,
    Config,
    InputError,
    MissingInputError,
    for_run,
    run_hash,
    run_identity,
)
from arca.io import read_jsonl
from arca.paths import paths_of
from arca.report.branch_scores import outcome_scores
from arca.stats import (
    pass_at_k,
)

log = logging.getLogger(__name__)


def train_mean(metrics: pd.DataFrame, col: str) -> float:
    """Average of one metric over the training steps (null entries skipped)."""
    if col not in metrics.columns:
        return math.nan
    vals = pd.to_numeric(metrics[col], errors="coerce")
    return float(vals.mean()) if vals.notna().any() else math.nan


# The graders each protocol is judged by when a summary does not say (see arca.evaluate).
DEFAULT_PRIMARY_GRADER = {"generated": "paper", "paper200": "paper", "math500": "math_verify"}
BASE = "base"
REFERENCE_METHOD = "uniform"


# ----------------------------------------------------------------------------- loading
@dataclass
class RunRecord:
    """What the report needs of one run (or of the base model)."""

    run: str
    label: str
    method: str
    rank: int | None
    seed: int | None
    summary: dict
    scores: pd.DataFrame  # index problem_id (str); columns greedy, pass_at_k (primary protocol)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)  # empty for the base model
    grad_clip: float | None = None  # the run's train.grad_clip (None for the base model)
    curve: list[dict] = field(default_factory=list)  # curve.jsonl rows, by step (empty for the base model)

    def clipped_frac(self) -> float:
        """Fraction of optimizer steps whose gradient norm (before clipping) exceeded ``grad_clip``."""
        if self.grad_clip is None or "grad_norm" not in self.metrics.columns:
            return math.nan
        g = pd.to_numeric(self.metrics["grad_norm"], errors="coerce").dropna()
        return float((g > self.grad_clip).mean()) if len(g) else math.nan


def _require(path: Path) -> Path:
    if not path.is_file():
        raise MissingInputError(f"aggregate: missing input {path}")
    return path


def read_summary(path: Path) -> dict:
    try:
        return json.loads(_require(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON: {e.msg}") from None


def read_metrics(path: Path) -> pd.DataFrame:
    rows = read_jsonl(_require(path))
    if not rows:
        raise InputError(f"{path}: no metrics lines")
    df = pd.DataFrame(rows)
    # Keep the contract's column order first; extra keys a producer adds are kept after it.
    cols = [c for c in STEP_COLUMNS if c in df.columns] + [c for c in df.columns if c not in STEP_COLUMNS]
    return df[cols].sort_values("step", kind="stable").reset_index(drop=True)


def read_curve(path: Path) -> list[dict]:
    """The held-out learning curve of one run, sorted by step (empty when ``eval.every`` is 0)."""
    return sorted(read_jsonl(_require(path)), key=lambda r: r["step"])


def primary_protocol(cfg: Config, summary: dict) -> tuple[str, str]:
    """(protocol, grader): the first configured protocol, judged by its primary grader."""
    protocol = cfg.eval.protocols[0]
    info = summary.get("protocols", {}).get(protocol)
    if info is None:
        raise InputError(
            f"summary of run {summary.get('run')!r} has no protocol {protocol!r} "
            f"(has {sorted(summary.get('protocols', {}))})"
        )
    return protocol, info.get("primary_grader", DEFAULT_PRIMARY_GRADER.get(protocol, "paper"))


def per_problem_scores(samples: list[dict], protocol: str, grader: str, k: int, source: Path) -> pd.DataFrame:
    """Per-problem greedy correctness and unbiased pass@k for one protocol and grader."""
    rows = [r for r in samples if r.get("protocol") == protocol]
    if not rows:
        raise InputError(f"{source}: no graded completions for protocol {protocol!r}")
    df = pd.DataFrame(rows)
    df["problem_id"] = df["problem_id"].astype(str)
    df["correct"] = df[grader].astype(bool)
    greedy = df[df["mode"] == "greedy"].groupby("problem_id", sort=True)["correct"].mean()
    sampled = df[df["mode"] == "sample"].groupby("problem_id", sort=True)["correct"].agg(["size", "sum"])
    pak = {}
    for pid, (n, c) in sampled.iterrows():
        if n < k:
            raise InputError(f"{source}: problem {pid} has {n} samples for pass@{k}")
        pak[pid] = pass_at_k(int(n), int(c), k)
    out = pd.DataFrame({"greedy": greedy, "pass_at_k": pd.Series(pak, dtype=float)})
    out.index.name = "problem_id"
    return out.sort_index()


def _check_against_summary(rec: RunRecord, protocol: str, grader: str) -> None:
    """Warn when the per-problem grades do not reproduce the evaluator's own summary."""
    info = rec.summary["protocols"][protocol]
    for name, key in (("greedy", "greedy"), ("pass_at_k", "pass_at_k")):
        reported = info.get(key, {}).get(grader)
        ours = float(rec.scores[name].mean()) if rec.scores[name].notna().any() else math.nan
        if reported is not None and np.isfinite(ours) and abs(reported - ours) > 1e-6:
            log.warning(
                "run %s: %s from samples.jsonl is %.4f but summary.json says %.4f", rec.run, name, ours, reported
            )


def test_problems(cfg: Config) -> dict[str, dict]:
    """The test split by problem id (its planted-fork branches score the outcomes); empty if absent."""
    path = paths_of(cfg).data.test
    return {str(r["id"]): r for r in read_jsonl(path)} if path.is_file() else {}


def load_eval(cfg: Config, run: str, problems: dict[str, dict] | None = None) -> tuple[dict, pd.DataFrame, str, str]:
    """A run's summary and per-problem scores on the primary protocol, with that protocol and grader.

    With ``problems`` (``test_problems``) that carry branches, the scores also hold the outcome
    columns of ``arca.report.branch_scores``."""
    evaluation = paths_of(cfg).eval(run)
    summary = read_summary(evaluation.summary)
    proto, grader = primary_protocol(cfg, summary)
    k = int(summary["protocols"][proto].get("pass_at_k", {}).get("k", cfg.eval.pass_k))
    samples_path = _require(evaluation.samples)
    samples = read_jsonl(samples_path)
    scores = per_problem_scores(samples, proto, grader, k, samples_path)
    if problems and any(p.get("branches") for p in problems.values()):
        scores = scores.join(outcome_scores(samples, problems, proto, grader))
    return summary, scores, proto, grader


def check_run_hash(cfg: Config, run: str, summary: dict) -> None:
    """Refuse a run whose evaluation (and training) used other settings than this sweep's.

    ``summary.json`` records the config hash of the adapter it evaluated, ``final_weights.json``
    the one the run trained with (older outputs lack it); both must equal ``run_hash(cfg, run)``.
    """
    expected = run_hash(cfg, run)
    sources = [(paths_of(cfg).eval(run).summary, summary.get("config_hash"))]
    fw = paths_of(cfg).run(run).final_weights
    if fw.is_file():
        sources.append((fw, json.loads(fw.read_text(encoding="utf-8")).get("config_hash", expected)))
    for path, got in sources:
        if got != expected:
            raise InputError(
                f"{path}: run '{run}' has config hash {got}, but this sweep's settings give {expected}: "
                "it was trained or evaluated with other settings (by hand with --set?); rerun it "
                f"with this config (snakemake --cores all --forcerun {paths_of(cfg).run(run).adapter}, "
                "with your --configfile)"
            )


def load_records(cfg: Config) -> tuple[list[RunRecord], RunRecord, str, str, int]:
    """Every run of the sweep and the base model; returns (runs, base, protocol, grader, k)."""
    runs, problems = [], test_problems(cfg)
    for run in cfg.run_ids():
        metrics = read_metrics(paths_of(cfg).run(run).metrics)
        summary, scores, proto, grader = load_eval(cfg, run, problems)
        check_run_hash(cfg, run, summary)
        method = summary.get("method") or str(metrics["method"].iloc[0])
        curve = read_curve(paths_of(cfg).run(run).curve)
        runs.append(
            RunRecord(
                **run_identity(run, method),
                summary=summary,
                scores=scores,
                metrics=metrics,
                grad_clip=for_run(cfg, run).train.grad_clip,
                curve=curve,
            )
        )
    summary, scores, proto, grader = load_eval(cfg, BASE, problems)
    base = RunRecord(**run_identity(BASE), summary=summary, scores=scores)
    k = int(summary["protocols"][proto].get("pass_at_k", {}).get("k", cfg.eval.pass_k))
    for rec in runs + [base]:
        _check_against_summary(rec, proto, grader)
    return runs, base, proto, grader, k


# ----------------------------------------------------------------------------- cells
@dataclass
class Cell:
    """All seeds of one (label, rank) line of the sweep."""

    label: str
    method: str
    rank: int
    runs: list[RunRecord]
    compare: list[str] = field(default_factory=list)  # labels to pair against besides uniform

    def matrix(self, column: str, problems: list[str] | None = None) -> np.ndarray:
        """[seeds, problems] scores, seeds in sorted order, NaN where a problem is missing."""
        frame = pd.DataFrame({r.seed: r.scores[column] for r in sorted(self.runs, key=lambda r: r.seed)}).T
        if problems is not None:
            frame = frame.reindex(columns=problems)
        return frame.to_numpy(dtype=float)

    def per_run(self, column: str, problems: list[str] | None = None) -> np.ndarray:
        """[seeds] each run's mean score over problems (runs.csv's ``greedy``), seeds in sorted order.

        The unit of the robust summaries over runs (IQM, probability of improvement); with
        ``problems``, the mean over those problems only, so that two cells are scored alike.
        """
        with warnings.catch_warnings():
            # A run without any of the problems is NaN here, and the statistics refuse it by name.
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.matrix(column, problems), axis=1)

    def per_seed(self, column: str) -> np.ndarray:
        """[seeds, 1] training averages, for a bootstrap over seeds only."""
        return np.array([[train_mean(r.metrics, column)] for r in sorted(self.runs, key=lambda r: r.seed)])

    @property
    def trainable_params(self):
        vals = [r.summary.get("trainable_params") for r in self.runs if r.summary.get("trainable_params") is not None]
        return int(vals[0]) if vals else None


def group_cells(cfg: Config, runs: list[RunRecord]) -> list[Cell]:
    """Cells in sweep order (cell by cell, ranks as configured)."""
    by_key: dict[tuple[str, int], list[RunRecord]] = {}
    for rec in runs:
        by_key.setdefault((rec.label, rec.rank), []).append(rec)
    cells = []
    for c in cfg.sweep.cells:
        for rank in c.ranks:
            recs = by_key.get((c.name, rank), [])
            if recs:
                cells.append(Cell(c.name, c.method, rank, recs, list(c.compare)))
    return cells


def reference_cell(cells: list[Cell]) -> Cell | None:
    """``uniform`` at its top rank (the label ``uniform`` preferred over relabelled uniform cells)."""
    ref = [c for c in cells if c.method == REFERENCE_METHOD]
    if not ref:
        return None
    return max(ref, key=lambda c: (c.label == REFERENCE_METHOD, c.rank))


def compare_cell(cells: list[Cell], label: str, rank: int) -> Cell | None:
    """The cell ``label`` at ``rank``, or at its top rank when it was not run at ``rank``."""
    same = [c for c in cells if c.label == label]
    exact = [c for c in same if c.rank == rank]
    return (exact or sorted(same, key=lambda c: c.rank)[-1:] or [None])[0]
