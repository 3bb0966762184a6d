"""``python -m arca aggregate``: gather every run and evaluation into ``<out_dir>/tables/``.

Inputs, per run of ``cfg.run_ids()`` (and ``eval/base`` for the base model):
``runs/<run>/metrics.jsonl``, ``runs/<run>/curve.jsonl`` (empty when ``eval.every`` is 0),
``eval/<run>/summary.json`` and ``eval/<run>/samples.jsonl``.
Outputs (each written atomically):

- ``runs.csv``           one row per run (and the base model): identity, accuracies, training averages
- ``curves.csv``         every metrics line of every run
- ``performance.*``      the paper's Table 2 layout per (label, rank), mean and 95% CI
- ``concentration.*``    the paper's Table 3 layout: Gini and EffN/T averaged over training
- ``paired.*``           each cell minus ``uniform`` (at uniform's top rank) on the same problems,
                         and minus every cell its sweep entry names in ``compare`` (ablations)
- ``paper_comparison.md`` our rows beside the paper's reported numbers, one line per claim
- ``credit_precision.*`` how much weight each method puts on the planted decisive fork tokens,
                         relative to uniform weights: during training and on the held-out probe
- ``learning_curves.csv`` held-out greedy and sampled accuracy at every curve step of every run
- ``sample_efficiency.*`` area under the held-out learning curve, final accuracy and steps to a
                         threshold, each paired against ``uniform`` with its minimum detectable difference
- ``cost.*``             wall time and peak memory of each run's jobs, from Snakemake's benchmark
                         records (``arca.report.cost``)

Accuracies come from the per-problem grades in ``samples.jsonl`` (the primary protocol is the
first of ``cfg.eval.protocols``, graded by its primary grader) so that intervals can resample
problems; the summary's own numbers are cross-checked against them.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from arca import grid
from arca.config import Config, parse_run_id
from arca.io import read_jsonl, write_text
from arca.report import cost
from arca.stats import (
    NAN_ESTIMATE, Estimate, bootstrap_mean_ci, bootstrap_ratio_ci, paired_bootstrap, paired_difference, pass_at_k,
)

log = logging.getLogger(__name__)

# The graders each protocol is judged by when a summary does not say (see arca.evaluate).
DEFAULT_PRIMARY_GRADER = {"generated": "paper", "paper200": "paper", "math500": "math_verify"}
BASE = "base"
REFERENCE_METHOD = "uniform"
# Concentration regimes of docs/method.md: the "middle regime" band and the spurious-sparsity bar.
MIDDLE_BAND = (0.25, 0.60)
CONCENTRATED_GINI = 0.60
# Claim (iii) accepts a greedy-accuracy deficit smaller than this when the CI excludes zero.
COMPETITIVE_MARGIN = 0.05
OUTPUT_BASELINES = ("surprisal", "entropy_reduction", "divergence")

# REFERENCE DATA: the numbers the paper reports (docs/method.md, Tables 2 and 3; first 200 MATH test
# problems, 100 steps, one seed). They are not computed here; they are compared against.
PAPER_REPORTED = {
    # (method, rank): greedy acc, pass@4 (T=1, top-p 0.95), avg train reward, Gini, EffN/T
    ("uniform", 64): dict(greedy=0.620, pass_at_k=0.675, train_reward=0.362, gini=0.000, eff_ratio=1.000),
    ("surprisal", 64): dict(greedy=0.520, pass_at_k=0.650, train_reward=0.326, gini=0.941, eff_ratio=0.052),
    ("entropy_reduction", 64): dict(greedy=0.600, pass_at_k=0.700, train_reward=0.367, gini=0.920, eff_ratio=0.073),
    ("divergence", 64): dict(greedy=0.565, pass_at_k=0.670, train_reward=0.351, gini=0.939, eff_ratio=0.055),
    ("arca", 4): dict(greedy=0.525, pass_at_k=0.640, train_reward=0.327, gini=0.353, eff_ratio=0.467),
    ("arca", 16): dict(greedy=0.510, pass_at_k=0.655, train_reward=0.336, gini=0.388, eff_ratio=0.460),
    ("arca", 64): dict(greedy=0.590, pass_at_k=0.680, train_reward=0.353, gini=0.490, eff_ratio=0.334),
}
PAPER_K = 4

METRIC_COLUMNS = [
    "step", "run", "label", "method", "rank", "seed", "loss", "reward_mean", "reward_std", "lr",
    "grad_norm", "gen_seconds", "update_seconds", "step_seconds", "completion_len_mean",
    "surprisal_mean", "gini", "eff_ratio", "fallback_frac", "residual_mean", "residual_max",
]


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
        raise FileNotFoundError(f"aggregate: missing input {path}")
    return path


def read_summary(path: Path) -> dict:
    try:
        return json.loads(_require(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e.msg}") from None


def read_metrics(path: Path) -> pd.DataFrame:
    rows = read_jsonl(_require(path))
    if not rows:
        raise ValueError(f"{path}: no metrics lines")
    df = pd.DataFrame(rows)
    # Keep the contract's column order first; extra keys a producer adds are kept after it.
    cols = [c for c in METRIC_COLUMNS if c in df.columns] + [c for c in df.columns if c not in METRIC_COLUMNS]
    return df[cols].sort_values("step", kind="stable").reset_index(drop=True)


def read_curve(path: Path) -> list[dict]:
    """The held-out learning curve of one run, sorted by step (empty when ``eval.every`` is 0)."""
    return sorted(read_jsonl(_require(path)), key=lambda r: r["step"])


def primary_protocol(cfg: Config, summary: dict) -> tuple[str, str]:
    """(protocol, grader): the first configured protocol, judged by its primary grader."""
    protocol = cfg.eval.protocols[0]
    info = summary.get("protocols", {}).get(protocol)
    if info is None:
        raise ValueError(f"summary of run {summary.get('run')!r} has no protocol {protocol!r} "
                         f"(has {sorted(summary.get('protocols', {}))})")
    return protocol, info.get("primary_grader", DEFAULT_PRIMARY_GRADER.get(protocol, "paper"))


def per_problem_scores(samples: list[dict], protocol: str, grader: str, k: int, source: Path) -> pd.DataFrame:
    """Per-problem greedy correctness and unbiased pass@k for one protocol and grader."""
    rows = [r for r in samples if r.get("protocol") == protocol]
    if not rows:
        raise ValueError(f"{source}: no graded completions for protocol {protocol!r}")
    df = pd.DataFrame(rows)
    df["problem_id"] = df["problem_id"].astype(str)
    df["correct"] = df[grader].astype(bool)
    greedy = df[df["mode"] == "greedy"].groupby("problem_id", sort=True)["correct"].mean()
    sampled = df[df["mode"] == "sample"].groupby("problem_id", sort=True)["correct"].agg(["size", "sum"])
    pak = {}
    for pid, (n, c) in sampled.iterrows():
        if n < k:
            raise ValueError(f"{source}: problem {pid} has {n} samples for pass@{k}")
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
            log.warning("run %s: %s from samples.jsonl is %.4f but summary.json says %.4f", rec.run, name, ours, reported)


def load_eval(cfg: Config, run: str) -> tuple[dict, pd.DataFrame, str, str]:
    """A run's summary and per-problem scores on the primary protocol, with that protocol and grader."""
    eval_dir = cfg.eval_dir(run)
    summary = read_summary(eval_dir / "summary.json")
    proto, grader = primary_protocol(cfg, summary)
    k = int(summary["protocols"][proto].get("pass_at_k", {}).get("k", cfg.eval.pass_k))
    samples_path = _require(eval_dir / "samples.jsonl")
    scores = per_problem_scores(read_jsonl(samples_path), proto, grader, k, samples_path)
    return summary, scores, proto, grader


def check_run_hash(cfg: Config, run: str, summary: dict) -> None:
    """Refuse a run whose evaluation (and training) used other settings than this sweep's.

    ``summary.json`` records the config hash of the adapter it evaluated, ``final_weights.json``
    the one the run trained with (older outputs lack it); both must equal ``cfg.run_hash(run)``.
    """
    expected = cfg.run_hash(run)
    sources = [(cfg.eval_dir(run) / "summary.json", summary.get("config_hash"))]
    fw = cfg.run_dir(run) / "final_weights.json"
    if fw.is_file():
        sources.append((fw, json.loads(fw.read_text(encoding="utf-8")).get("config_hash", expected)))
    for path, got in sources:
        if got != expected:
            raise ValueError(f"{path}: run '{run}' has config hash {got}, but this sweep's settings give {expected}: "
                             "it was trained or evaluated with other settings (by hand with --set?); rerun it "
                             f"with this config (snakemake --cores all --forcerun {cfg.run_dir(run) / 'adapter'}, with your --configfile)")


def load_records(cfg: Config) -> tuple[list[RunRecord], RunRecord, str, str, int]:
    """Every run of the sweep and the base model; returns (runs, base, protocol, grader, k)."""
    runs = []
    for run in cfg.run_ids():
        label, rank, seed = parse_run_id(run)
        metrics = read_metrics(cfg.run_dir(run) / "metrics.jsonl")
        summary, scores, proto, grader = load_eval(cfg, run)
        check_run_hash(cfg, run, summary)
        method = summary.get("method") or str(metrics["method"].iloc[0])
        curve = read_curve(cfg.run_dir(run) / "curve.jsonl")
        runs.append(RunRecord(run, label, method, rank, seed, summary, scores, metrics,
                              cfg.for_run(run).train.grad_clip, curve))
    summary, scores, proto, grader = load_eval(cfg, BASE)
    base = RunRecord(BASE, BASE, BASE, None, None, summary, scores)
    k = int(summary["protocols"][proto].get("pass_at_k", {}).get("k", cfg.eval.pass_k))
    for rec in runs + [base]:
        _check_against_summary(rec, proto, grader)
    return runs, base, proto, grader, k


# ----------------------------------------------------------------------------- per-run table
def _train_mean(metrics: pd.DataFrame, col: str) -> float:
    """Average of one metric over the training steps (null entries skipped)."""
    if col not in metrics.columns:
        return math.nan
    vals = pd.to_numeric(metrics[col], errors="coerce")
    return float(vals.mean()) if vals.notna().any() else math.nan


def runs_table(runs: list[RunRecord], base: RunRecord, protocol: str, grader: str, k: int) -> pd.DataFrame:
    rows = []
    for rec in [base] + runs:
        row = {
            "run": rec.run, "label": rec.label, "method": rec.method, "rank": rec.rank, "seed": rec.seed,
            "config_hash": rec.summary.get("config_hash"), "trainable_params": rec.summary.get("trainable_params"),
            "protocol": protocol, "grader": grader, "k": k, "n_problems": len(rec.scores),
            "greedy": float(rec.scores["greedy"].mean()), "pass_at_k": float(rec.scores["pass_at_k"].mean()),
            "steps": int(rec.metrics["step"].max()) if len(rec.metrics) else None,
        }
        for col in ("reward_mean", "gini", "eff_ratio", "fallback_frac", "residual_mean", "step_seconds"):
            name = "train_reward" if col == "reward_mean" else col
            row[name] = _train_mean(rec.metrics, col)
        # Every protocol and grader the evaluator reported, for readers of other protocols.
        for proto, info in rec.summary.get("protocols", {}).items():
            for g in ("paper", "math_verify"):
                row[f"greedy_{proto}_{g}"] = info.get("greedy", {}).get(g)
                row[f"pass_at_k_{proto}_{g}"] = info.get("pass_at_k", {}).get(g)
            row[f"agreement_{proto}"] = info.get("agreement")
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("rank", "seed", "trainable_params", "steps"):
        df[col] = df[col].astype("Int64")
    return df


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

    def per_seed(self, column: str) -> np.ndarray:
        """[seeds, 1] training averages, for a bootstrap over seeds only."""
        return np.array([[_train_mean(r.metrics, column)] for r in sorted(self.runs, key=lambda r: r.seed)])

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


def _ci_columns(prefix: str, est: Estimate) -> dict:
    return {prefix: est.mean, f"{prefix}_lo": est.lo, f"{prefix}_hi": est.hi}


def performance_table(cells: list[Cell], base: RunRecord, protocol: str, grader: str, k: int) -> pd.DataFrame:
    rows = []
    base_scores = base.scores[["greedy", "pass_at_k"]].to_numpy(dtype=float).T  # [2, P]
    rows.append({
        "label": BASE, "method": BASE, "rank": None, "n_seeds": 0, "n_problems": len(base.scores),
        "trainable_params": None,
        **_ci_columns("greedy", bootstrap_mean_ci(base_scores[0])),
        **_ci_columns("pass_at_k", bootstrap_mean_ci(base_scores[1])),
        **_ci_columns("train_reward", NAN_ESTIMATE),
    })
    for cell in cells:
        greedy = bootstrap_mean_ci(cell.matrix("greedy"))
        rows.append({
            "label": cell.label, "method": cell.method, "rank": cell.rank, "n_seeds": len(cell.runs),
            "n_problems": greedy.n_problems, "trainable_params": cell.trainable_params,
            **_ci_columns("greedy", greedy),
            **_ci_columns("pass_at_k", bootstrap_mean_ci(cell.matrix("pass_at_k"))),
            **_ci_columns("train_reward", bootstrap_mean_ci(cell.per_seed("reward_mean"))),
        })
    df = pd.DataFrame(rows)
    df["protocol"], df["grader"], df["k"] = protocol, grader, k
    for col in ("rank", "trainable_params"):
        df[col] = df[col].astype("Int64")
    return df


def concentration_table(cells: list[Cell]) -> pd.DataFrame:
    rows = []
    for cell in cells:
        rows.append({
            "label": cell.label, "method": cell.method, "rank": cell.rank, "n_seeds": len(cell.runs),
            **_ci_columns("gini", bootstrap_mean_ci(cell.per_seed("gini"))),
            **_ci_columns("eff_ratio", bootstrap_mean_ci(cell.per_seed("eff_ratio"))),
            "fallback_frac": float(pd.Series(cell.per_seed("fallback_frac").ravel()).mean()),
            # how often gradient clipping acted (it matters for the mean_one normalization ablation)
            "clipped_frac": float(np.nanmean([r.clipped_frac() for r in cell.runs])) if cell.runs else math.nan,
        })
    return pd.DataFrame(rows)


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


def paired_table(cells: list[Cell], protocol: str, grader: str) -> pd.DataFrame:
    """Greedy-accuracy difference of every cell minus uniform, and minus each cell in its ``compare``, paired.

    Rows against uniform come first for every cell (``vs_uniform`` True), then the ablation pairs.
    """
    ref = reference_cell(cells)
    cols = ["label", "method", "rank", "reference", "vs_uniform", "protocol", "grader", "n_seeds", "n_problems",
            "diff", "diff_lo", "diff_hi"]
    pairs = [(cell, ref, True) for cell in cells if ref is not None and cell is not ref]
    for cell in cells:
        for label in cell.compare:
            other = compare_cell(cells, label, cell.rank)
            if other is None:
                log.warning("%s_r%d: no runs of the cell %r to compare with", cell.label, cell.rank, label)
            elif other is not ref:
                pairs.append((cell, other, False))
    rows = []
    for cell, other, vs_uniform in pairs:
        problems = sorted(set.intersection(*(set(r.scores.index) for r in cell.runs + other.runs)))
        if not problems:
            log.warning("no common problems between %s_r%d and %s_r%d", cell.label, cell.rank, other.label, other.rank)
            continue
        est = paired_difference(cell.matrix("greedy", problems), other.matrix("greedy", problems))
        rows.append({
            "label": cell.label, "method": cell.method, "rank": cell.rank, "reference": f"{other.label}_r{other.rank}",
            "vs_uniform": vs_uniform, "protocol": protocol, "grader": grader, "n_seeds": est.n_seeds,
            "n_problems": est.n_problems, **_ci_columns("diff", est),
        })
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- rendering
def _est(row, prefix: str) -> Estimate:
    return Estimate(row[prefix], row[f"{prefix}_lo"], row[f"{prefix}_hi"])


def _fmt_rank(rank) -> str:
    return "-" if rank is None or pd.isna(rank) else str(int(rank))


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def clean(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(clean(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(s))


def latex_table(headers: list[str], rows: list[list[str]], caption: str, label: str) -> str:
    """A booktabs table; cells are escaped, so pass plain text."""
    spec = "l" + "r" + "l" * (len(headers) - 2)
    body = [" & ".join(tex_escape(c) for c in row) + r" \\" for row in rows]
    return "\n".join([
        r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(caption)}}}", rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(tex_escape(h) for h in headers) + r" \\", r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}", r"\end{table}",
    ]) + "\n"


def performance_rows(perf: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    k = int(perf["k"].iloc[0])
    headers = ["method", "r", "greedy acc", f"pass@{k} (T=1, top-p 0.95)", "avg train reward"]
    rows = [[r["label"], _fmt_rank(r["rank"]), _est(r, "greedy").fmt(), _est(r, "pass_at_k").fmt(),
             _est(r, "train_reward").fmt()] for _, r in perf.iterrows()]
    return headers, rows


def concentration_rows(conc: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "r", "Gini", "EffN/T"]
    rows = [[r["label"], _fmt_rank(r["rank"]), _est(r, "gini").fmt(), _est(r, "eff_ratio").fmt()] for _, r in conc.iterrows()]
    return headers, rows


def paired_rows(paired: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "r", "reference", "greedy acc difference [95% CI]", "seeds", "problems"]
    rows = [[r["label"], _fmt_rank(r["rank"]), r["reference"], _est(r, "diff").fmt(), str(r["n_seeds"]), str(r["n_problems"])]
            for _, r in paired.iterrows()]
    return headers, rows


# ----------------------------------------------------------------------------- paper comparison
def match_paper_ranks(our_ranks: list[int], paper_ranks: list[int]) -> dict[int, int]:
    """paper rank -> our rank, matching sorted positions from the top (largest to largest).

    The paper ran baselines at r=64 and ARCA at r=4/16/64; a smaller sweep (e.g. 2/4/8) maps
    position by position, and a sweep with fewer ranks keeps the paper's largest ones.
    """
    ours, paper = sorted(our_ranks), sorted(paper_ranks)
    return {p: o for p, o in zip(reversed(paper), reversed(ours))}


def _lookup(df: pd.DataFrame, label: str, rank: int) -> pd.Series | None:
    hit = df[(df["label"] == label) & (df["rank"] == rank)]
    if "vs_uniform" in hit.columns:  # the paired table: the row against uniform
        hit = hit[hit["vs_uniform"].astype(bool)]
    return None if hit.empty else hit.iloc[0]


def _with_signal(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The cells whose weights carried a signal, and a note naming those that fell back to uniform
    weights on every step (their Gini of 0 says nothing about the method's concentration)."""
    fell = rows["fallback_frac"] >= 1.0 if "fallback_frac" in rows else pd.Series(False, index=rows.index)
    note = ", ".join(f"{r['label']} r{r['rank']}" for _, r in rows[fell].iterrows())
    return rows[~fell], (f"; left out, fell back to uniform weights on every step: {note}" if note else "")


def claims(perf: pd.DataFrame, conc: pd.DataFrame, paired: pd.DataFrame) -> list[str]:
    """One line per claim of the paper, judged from our numbers.

    "not tested": the sweep lacks the cells. "not testable": the cells exist but the numbers
    cannot tell (weights that fell back to uniform on every step, or accuracies without any
    variation, e.g. all 0); a verdict on them would be empty.
    """
    lines = []
    base = conc[conc["label"].isin(OUTPUT_BASELINES)]
    head = f"(i) Output-distribution baselines concentrated (Gini > {CONCENTRATED_GINI:.2f})"
    if base.empty:
        lines.append(f"{head}: not tested (no such cells).")
    else:
        informative, note = _with_signal(base)
        if informative.empty:
            lines.append(f"{head}: not testable (every baseline fell back to uniform weights on every step).")
        else:
            parts = [f"{r['label']} r{r['rank']} {r['gini']:.3f}" for _, r in informative.iterrows()]
            ok = bool((informative["gini"] > CONCENTRATED_GINI).all())
            lines.append(f"{head}: {'holds' if ok else 'does not hold'} ({', '.join(parts)}{note}).")
    arca = conc[conc["label"] == "arca"]
    lo, hi = MIDDLE_BAND
    head = f"(ii) ARCA in the middle regime (Gini in {lo:.2f}-{hi:.2f})"
    if arca.empty:
        lines.append("(ii) ARCA in the middle regime: not tested (no arca cells).")
    else:
        informative, note = _with_signal(arca)
        if informative.empty:
            lines.append(f"{head}: not testable (ARCA fell back to uniform weights on every step: its adapter "
                         "residual was zero throughout).")
        else:
            inside = informative["gini"].between(lo, hi)
            parts = [f"r{r['rank']} {r['gini']:.3f}" for _, r in informative.iterrows()]
            verdict = "holds" if inside.all() else ("holds at some ranks" if inside.any() else "does not hold")
            lines.append(f"{head}: {verdict} ({', '.join(parts)}{note}).")
    arca_perf = perf[perf["label"] == "arca"]
    head = (f"(iii) ARCA's accuracy competitive with uniform (0 in the paired CI, or difference > "
            f"-{COMPETITIVE_MARGIN:.2f})")
    if arca_perf.empty or paired.empty:
        lines.append("(iii) ARCA's accuracy competitive with uniform: not tested (needs arca and uniform cells).")
    else:
        best = arca_perf.loc[arca_perf["greedy"].idxmax()]
        row = _lookup(paired, "arca", int(best["rank"]))
        if row is None:
            lines.append("(iii) ARCA's accuracy competitive with uniform: not tested (no paired row).")
        else:
            ref = perf[perf["label"] == REFERENCE_METHOD]
            involved = pd.concat([arca_perf, ref])[["greedy", "greedy_lo", "greedy_hi"]].to_numpy(dtype=float).ravel()
            involved = involved[np.isfinite(involved)]
            d = _est(row, "diff")
            if involved.size and involved.min() == involved.max():
                lines.append(f"{head}: not testable (every greedy accuracy of ARCA and {REFERENCE_METHOD} is "
                             f"{involved[0]:.3f} on every problem: no variation to compare).")
            else:
                ok = d.contains(0.0) or d.mean > -COMPETITIVE_MARGIN
                lines.append(f"{head}: {'holds' if ok else 'does not hold'} (best ARCA r{int(best['rank'])} "
                             f"greedy {best['greedy']:.3f}; minus {row['reference']}: {d.fmt()}).")
    return lines


def paper_comparison(perf: pd.DataFrame, conc: pd.DataFrame, paired: pd.DataFrame, protocol: str, grader: str, k: int,
                     n_seeds: int) -> str:
    by_method: dict[str, list[int]] = {}
    for method, rank in PAPER_REPORTED:
        by_method.setdefault(method, []).append(rank)
    perf_rows, conc_rows = [], []
    for method, paper_ranks in by_method.items():
        ours = sorted(int(r) for r in perf.loc[perf["label"] == method, "rank"].dropna())
        mapping = match_paper_ranks(ours, paper_ranks)
        for pr in sorted(paper_ranks):
            ref = PAPER_REPORTED[(method, pr)]
            orank = mapping.get(pr)
            p = _lookup(perf, method, orank) if orank is not None else None
            c = _lookup(conc, method, orank) if orank is not None else None
            ofmt = lambda row, key: _est(row, key).fmt() if row is not None else "-"  # noqa: E731
            perf_rows.append([method, str(pr), _fmt_rank(orank), f"{ref['greedy']:.3f}", ofmt(p, "greedy"),
                              f"{ref['pass_at_k']:.3f}", ofmt(p, "pass_at_k"), f"{ref['train_reward']:.3f}", ofmt(p, "train_reward")])
            conc_rows.append([method, str(pr), _fmt_rank(orank), f"{ref['gini']:.3f}", ofmt(c, "gini"),
                              f"{ref['eff_ratio']:.3f}", ofmt(c, "eff_ratio")])
    extra = perf[~perf["label"].isin(list(by_method) + [BASE])]
    parts = [
        "# Our results beside the paper's\n",
        f"Paper: first 200 MATH test problems, one seed, string-match grader, pass@{PAPER_K}. "
        f"Ours: protocol `{protocol}`, grader `{grader}`, pass@{k}, up to {n_seeds} seeds; mean [95% bootstrap CI]. "
        "Our ranks are matched to the paper's by sorted position from the largest.\n",
        "## Table 2, performance\n",
        markdown_table(["method", "paper r", "our r", "paper greedy", "our greedy", f"paper pass@{PAPER_K}",
                        f"our pass@{k}", "paper train reward", "our train reward"], perf_rows),
        "## Table 3, concentration (averaged over training)\n",
        markdown_table(["method", "paper r", "our r", "paper Gini", "our Gini", "paper EffN/T", "our EffN/T"], conc_rows),
        "## Claims, judged from our numbers\n",
        "\n".join(f"- {line}" for line in claims(perf, conc, paired)) + "\n",
    ]
    if not extra.empty:
        headers, rows = performance_rows(extra)
        parts += ["## Cells the paper does not have\n", markdown_table(headers, rows)]
    ablation = paired[~paired["vs_uniform"].astype(bool)] if not paired.empty else paired
    if not ablation.empty:
        headers, rows = paired_rows(ablation)
        parts += ["## Ablation pairs (each cell minus the cell it is compared with)\n", markdown_table(headers, rows)]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- credit precision
# Ratio column -> (a share of the weight on labelled tokens, the same rows' share under uniform
# weights), as logged in metrics.jsonl and in summary.json's credit_precision. A ratio of 1 is
# what uniform weights give; the oracle's ratio is the most a method can reach.
PRECISION_RATIOS = {
    "decisive_ratio": ("decisive_share", "decisive_share_uniform"),
    "decisive_ratio_pos": ("decisive_share_pos", "decisive_share_pos_uniform"),
    "decisive_ratio_neg": ("decisive_share_neg", "decisive_share_neg_uniform"),
    "distractor_ratio": ("distractor_share", "distractor_share_uniform"),
}
PRECISION_SOURCES = ("train", "probe")
ORACLE_METHOD = "oracle"


def _num(value) -> float:
    """A JSON number or null as a float (NaN for null)."""
    return math.nan if value is None else float(value)


def _nanmean(values) -> float:
    a = np.asarray(values, dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def _joint_step_means(metrics: pd.DataFrame, num: str, den: str) -> tuple[float, float]:
    """Means of two metrics over the steps where both are logged (they are computed on the same rows)."""
    if num not in metrics.columns or den not in metrics.columns:
        return math.nan, math.nan
    a, b = pd.to_numeric(metrics[num], errors="coerce"), pd.to_numeric(metrics[den], errors="coerce")
    ok = a.notna() & b.notna()
    return (float(a[ok].mean()), float(b[ok].mean())) if ok.any() else (math.nan, math.nan)


def precision_values(rec: RunRecord, source: str, method: str) -> dict[str, float]:
    """One run's credit-precision numbers: ``source`` "train" = means over its training steps (its own
    method); "probe" = ``method``'s weights under the run's final model on the held-out probe."""
    if source == "train":
        out = {}
        for num, den in PRECISION_RATIOS.values():
            out[num], out[den] = _joint_step_means(rec.metrics, num, den)
        return {**out, "decisive_auroc": _train_mean(rec.metrics, "decisive_auroc"),
                "labeled_frac": _train_mean(rec.metrics, "labeled_frac")}
    probe = rec.summary.get("credit_precision") or {}
    values = (probe.get("methods") or {}).get(method) or {}
    keys = [k for pair in PRECISION_RATIOS.values() for k in pair] + ["decisive_auroc"]
    labeled = _num(probe.get("labeled_frac")) if values else math.nan
    return {**{k: _num(values.get(k)) for k in keys}, "labeled_frac": labeled}


def _per_seed(runs: list[RunRecord], source: str, method: str, key: str) -> np.ndarray:
    """[S] one precision number per seed, seeds in sorted order."""
    return np.array([precision_values(r, source, method)[key] for r in sorted(runs, key=lambda r: r.seed)], dtype=float)


def precision_columns(runs: list[RunRecord], source: str, method: str) -> dict:
    """The ``<source>_*`` columns of one cell: each ratio = mean over seeds of the share / mean over
    seeds of uniform's share on the same rows (bootstrap over seeds), the within-row AUROC (mean,
    bootstrap over seeds), the decisive shares themselves and the fraction of rollouts aligned."""
    def col(key):
        return _per_seed(runs, source, method, key)

    out = {f"{source}_decisive_share": _nanmean(col("decisive_share")),
           f"{source}_decisive_share_uniform": _nanmean(col("decisive_share_uniform"))}
    for name, (num, den) in PRECISION_RATIOS.items():
        out.update(_ci_columns(f"{source}_{name}", bootstrap_ratio_ci(col(num), col(den))))
    out.update(_ci_columns(f"{source}_decisive_auroc", bootstrap_mean_ci(col("decisive_auroc")[:, None])))
    out[f"{source}_labeled_frac"] = _nanmean(col("labeled_frac"))
    return out


def probe_methods(runs: list[RunRecord]) -> list[str]:
    """Every credit method the runs' probes scored, in the order the evaluator wrote them (the registry's)."""
    names = {}
    for r in runs:
        names.update(dict.fromkeys(((r.summary.get("credit_precision") or {}).get("methods") or {})))
    return list(names)


def _precision_names() -> list[str]:
    names = []
    for src in PRECISION_SOURCES:
        names += [f"{src}_decisive_share", f"{src}_decisive_share_uniform"]
        for metric in [*PRECISION_RATIOS, "decisive_auroc"]:
            names += [f"{src}_{metric}", f"{src}_{metric}_lo", f"{src}_{metric}_hi"]
        names.append(f"{src}_labeled_frac")
    return names


PRECISION_COLUMNS = ["block", "label", "method", "rank", "n_seeds", "models", *_precision_names(),
                     "probe_vs_oracle", "probe_vs_oracle_lo", "probe_vs_oracle_hi"]


def credit_precision_table(cells: list[Cell]) -> pd.DataFrame:
    """Block ``sweep``: one row per cell, its own method, in training and on the probe under its final
    models. Block ``probe_all``: every method the probe scored, under the final models of the uniform
    cell, with its decisive share relative to the oracle's on the same seeds."""
    rows = []
    for cell in cells:
        rows.append({"block": "sweep", "label": cell.label, "method": cell.method, "rank": cell.rank,
                     "n_seeds": len(cell.runs), "models": f"{cell.label}_r{cell.rank}",
                     **precision_columns(cell.runs, "train", cell.method),
                     **precision_columns(cell.runs, "probe", cell.method)})
    ref = reference_cell(cells)
    methods = probe_methods(ref.runs) if ref is not None else []
    if ref is not None and methods:
        oracle = _per_seed(ref.runs, "probe", ORACLE_METHOD, "decisive_share")  # [S]
        for method in methods:
            share = _per_seed(ref.runs, "probe", method, "decisive_share")  # [S]
            rows.append({"block": "probe_all", "label": method, "method": method, "rank": ref.rank,
                         "n_seeds": len(ref.runs), "models": f"{ref.label}_r{ref.rank}",
                         **precision_columns(ref.runs, "probe", method),
                         **_ci_columns("probe_vs_oracle", bootstrap_ratio_ci(share, oracle))})
    df = pd.DataFrame(rows, columns=PRECISION_COLUMNS)
    df["rank"] = df["rank"].astype("Int64")
    return df


def _fmt_ratio(row, prefix: str) -> str:
    return _est(row, prefix).fmt(digits=2, ci_digits=2)


def _fmt_num(value, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _precision_cells(row, src: str) -> list[str]:
    return [_fmt_ratio(row, f"{src}_decisive_ratio"), _fmt_ratio(row, f"{src}_decisive_ratio_pos"),
            _fmt_ratio(row, f"{src}_decisive_ratio_neg"), _est(row, f"{src}_decisive_auroc").fmt(),
            _fmt_ratio(row, f"{src}_distractor_ratio"), _fmt_num(row[f"{src}_labeled_frac"], 2)]


PRECISION_HEADERS = ["decisive x uniform", "advantage > 0", "advantage < 0", "decisive AUROC", "distractor x uniform",
                     "labelled"]


def credit_precision_markdown(df: pd.DataFrame) -> str:
    sweep, every = df[df["block"] == "sweep"], df[df["block"] == "probe_all"]
    parts = [
        "# Credit precision on the planted forks\n",
        "x uniform: the mean share of a completion's token weight on its decisive (or distractor) fork tokens, "
        "divided by the mean share uniform weights give the same completions (number of labelled tokens / T); "
        "1 = no better than uniform. advantage > 0 / < 0: only completions with that sign of advantage. "
        "Decisive AUROC: probability that a decisive token outweighs another token of the same completion "
        "(0.5 = uniform). Labelled: fraction of rollouts aligned with a branch of their problem. "
        "Mean over seeds [95% bootstrap interval over seeds].\n",
    ]
    numbers = df[[c for c in df.columns if c.endswith(("_ratio", "_auroc"))]].to_numpy(dtype=float)
    if not np.isfinite(numbers).any():
        parts.append("No planted-fork labels in this experiment (no `branches` in the test records, or no "
                     "aligned rollouts), so there is nothing to measure: every column is empty.\n")
    rows = [[r["label"], _fmt_rank(r["rank"]), str(r["n_seeds"]), *_precision_cells(r, "train")]
            for _, r in sweep.iterrows()]
    parts += ["## During training (each cell's own method, means over its training steps)\n",
              markdown_table(["method", "r", "seeds", *PRECISION_HEADERS], rows)]
    rows = [[r["label"], _fmt_rank(r["rank"]), str(r["n_seeds"]), *_precision_cells(r, "probe")]
            for _, r in sweep.iterrows()]
    parts += ["## Held-out probe (each cell's own method under the cell's final models, the same rollouts for all)\n",
              markdown_table(["method", "r", "seeds", *PRECISION_HEADERS], rows)]
    if not every.empty:
        models, n = every["models"].iloc[0], int(every["n_seeds"].iloc[0])
        rows = [[r["method"], _fmt_num(r["probe_decisive_share"]), *_precision_cells(r, "probe")[:5],
                 _fmt_ratio(r, "probe_vs_oracle")] for _, r in every.iterrows()]
        parts += [f"## Every credit method on the held-out probe, under the final models of {models} "
                  f"({n} seed{'s' if n != 1 else ''})\n",
                  "x oracle: the method's decisive share divided by the oracle's (all weight on the decisive "
                  "tokens).\n",
                  markdown_table(["method", "decisive share", *PRECISION_HEADERS[:5], "x oracle"], rows)]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- learning curves
LEARNING_CURVE_COLUMNS = ["label", "method", "rank", "seed", "run", "step", "greedy", "sampled", "n"]
# Steps to threshold: the first curve step where greedy accuracy reaches the base model's plus this
# fraction of uniform's mean final gain.
THRESHOLD_FRACTION = 0.5
_TOL = 1e-9  # accuracies are k / n; the threshold may equal one exactly


def learning_curves_table(runs: list[RunRecord]) -> pd.DataFrame:
    """Long format: one row per (run, curve step), the held-out greedy and sampled accuracy."""
    rows = [{"label": r.label, "method": r.method, "rank": r.rank, "seed": r.seed, "run": r.run, "step": p["step"],
             "greedy": p["greedy"], "sampled": p["sampled"], "n": p.get("n")} for r in runs for p in r.curve]
    return pd.DataFrame(rows, columns=LEARNING_CURVE_COLUMNS)


@dataclass
class CellCurves:
    """Per-problem held-out verdicts of one cell's seeds at the curve steps they all have."""

    seeds: list[int]
    steps: np.ndarray  # [N]
    greedy: np.ndarray  # [S, P, N] 0/1
    sampled: np.ndarray  # [S, P, N] 0/1


def cell_curves(cell: Cell) -> CellCurves | None:
    """The cell's curves as arrays, or None when a seed has no curve (``eval.every`` 0)."""
    runs = sorted(cell.runs, key=lambda r: r.seed)
    if not all(r.curve for r in runs):
        return None
    by_step = [{p["step"]: p for p in r.curve} for r in runs]
    steps = sorted(set.intersection(*(set(b) for b in by_step)))
    if not steps:
        return None

    def verdicts(key: str) -> np.ndarray:
        lists = [[b[s].get(key) for s in steps] for b in by_step]  # [S][N] lists of P verdicts
        sizes = {len(v) if isinstance(v, list) else -1 for seed in lists for v in seed}
        if len(sizes) != 1 or -1 in sizes:
            raise ValueError(f"curves of {cell.label}_r{cell.rank}: {key!r} must be one list of the same length "
                             f"at every step of every seed (found lengths {sorted(sizes)})")
        return np.asarray(lists, dtype=float).transpose(0, 2, 1)  # [S, N, P] -> [S, P, N]

    return CellCurves([r.seed for r in runs], np.asarray(steps, dtype=float), verdicts("greedy_correct"),
                      verdicts("sampled_correct"))


def curve_auc(y: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """[..., N] -> [...]: trapezoid area under y over ``steps`` divided by the step span, i.e. the
    mean accuracy over training (the value itself for a one-point curve)."""
    if len(steps) == 1:
        return y[..., 0]
    return ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(steps)).sum(axis=-1) / (steps[-1] - steps[0])


def first_step_reaching(curves: np.ndarray, steps: np.ndarray, threshold: float) -> np.ndarray:
    """[B, N] accuracy curves -> [B]: the first step whose accuracy reaches ``threshold`` (NaN: never)."""
    reached = curves >= threshold - _TOL  # [B, N]; a NaN threshold is never reached
    return np.where(reached.any(axis=-1), steps[reached.argmax(axis=-1)], np.nan)


def _steps_statistic(steps: np.ndarray, threshold: float):
    """The bootstrap statistic of steps to threshold: [B, S, P, N] verdicts -> [B] first step."""
    def stat(block: np.ndarray) -> np.ndarray:
        curve = block.reshape(block.shape[0], -1, block.shape[-1]).mean(axis=1)  # [B, N]
        return first_step_reaching(curve, steps, threshold)
    return stat


def _paired_columns(prefix: str, pb) -> dict:
    """Difference, interval and MDD; all empty when the difference itself is undefined (a curve that
    never reaches the threshold), where the replicates that happen to reach it would mislead."""
    if not np.isfinite(pb.estimate.mean):
        return {**_ci_columns(f"{prefix}_diff", NAN_ESTIMATE), f"{prefix}_mdd": math.nan}
    return {**_ci_columns(f"{prefix}_diff", pb.estimate), f"{prefix}_mdd": pb.mdd}


def _threshold(cells: list[Cell], curves: dict, ref: Cell | None) -> tuple[float, float]:
    """(base accuracy at step 0 over every run, threshold = base + THRESHOLD_FRACTION x uniform's mean
    final gain); the threshold is NaN when uniform gained nothing (any step would "reach" it)."""
    step0 = [p["greedy"] for c in cells for r in c.runs for p in r.curve if p["step"] == 0]
    base = float(np.mean(step0)) if step0 else math.nan
    ref_curves = curves.get(id(ref)) if ref is not None else None
    if ref_curves is None or not np.isfinite(base):
        return base, math.nan
    gain = float(ref_curves.greedy[..., -1].mean()) - base
    return base, base + THRESHOLD_FRACTION * gain if gain > 0 else math.nan


def _pair_arrays(c: CellCurves, r: CellCurves) -> tuple[CellCurves, CellCurves] | None:
    """Both cells restricted to their common seeds, in the same order; None when they cannot be paired."""
    common = [s for s in c.seeds if s in r.seeds]
    if not common or not np.array_equal(c.steps, r.steps) or c.greedy.shape[1] != r.greedy.shape[1]:
        return None

    def pick(x: CellCurves) -> CellCurves:
        rows = [x.seeds.index(s) for s in common]
        return CellCurves(common, x.steps, x.greedy[rows], x.sampled[rows])

    return pick(c), pick(r)


SAMPLE_EFFICIENCY_COLUMNS = [
    "label", "method", "rank", "reference", "n_seeds", "n_paired_seeds", "n_problems", "first_step", "last_step",
    *[c for m in ("auc_greedy", "auc_sampled", "final_greedy") for c in (m, f"{m}_lo", f"{m}_hi")],
    "auc_greedy_seed_sd", "auc_greedy_seed_min", "auc_greedy_seed_max", "base_greedy", "threshold",
    "steps_to_threshold",
    *[c for m in ("auc_greedy", "auc_sampled", "final_greedy", "steps_to_threshold")
      for c in (f"{m}_diff", f"{m}_diff_lo", f"{m}_diff_hi", f"{m}_mdd")],
    "steps_to_threshold_boot_frac",
]


def _efficiency_columns(c: CellCurves, threshold: float) -> dict:
    """One cell's AUCs and final accuracy (bootstrap over seeds and problems), its seed spread and its
    steps to threshold (on the mean curve over seeds and problems)."""
    auc = curve_auc(c.greedy, c.steps)  # [S, P]
    seed_auc = auc.mean(axis=1)  # [S]
    mean_curve = c.greedy.mean(axis=(0, 1))  # [N]
    return {
        "n_problems": c.greedy.shape[1], "first_step": c.steps[0], "last_step": c.steps[-1],
        **_ci_columns("auc_greedy", bootstrap_mean_ci(auc)),
        **_ci_columns("auc_sampled", bootstrap_mean_ci(curve_auc(c.sampled, c.steps))),
        **_ci_columns("final_greedy", bootstrap_mean_ci(c.greedy[..., -1])),
        "auc_greedy_seed_sd": float(seed_auc.std(ddof=1)) if len(seed_auc) > 1 else math.nan,
        "auc_greedy_seed_min": float(seed_auc.min()), "auc_greedy_seed_max": float(seed_auc.max()),
        "steps_to_threshold": float(first_step_reaching(mean_curve[None], c.steps, threshold)[0]),
    }


def _paired_efficiency(a: CellCurves, b: CellCurves, threshold: float) -> dict:
    """Cell ``a`` minus reference ``b`` on the same seeds and problems: per (seed, problem) AUCs and
    final verdicts, and steps to threshold recomputed on every replicate's mean curves."""
    steps_pb = paired_bootstrap(a.greedy, b.greedy, _steps_statistic(a.steps, threshold))
    return {
        "n_paired_seeds": len(a.seeds),
        **_paired_columns("auc_greedy", paired_bootstrap(curve_auc(a.greedy, a.steps), curve_auc(b.greedy, b.steps))),
        **_paired_columns("auc_sampled",
                          paired_bootstrap(curve_auc(a.sampled, a.steps), curve_auc(b.sampled, b.steps))),
        **_paired_columns("final_greedy", paired_bootstrap(a.greedy[..., -1], b.greedy[..., -1])),
        **_paired_columns("steps_to_threshold", steps_pb),
        "steps_to_threshold_boot_frac": steps_pb.finite_frac,
    }


def sample_efficiency_table(cells: list[Cell]) -> pd.DataFrame:
    """Per cell: held-out curve AUC, final accuracy and steps to threshold, each paired against uniform."""
    ref = reference_cell(cells)
    curves = {id(c): cell_curves(c) for c in cells}
    base, threshold = _threshold(cells, curves, ref)
    ref_curves = curves.get(id(ref)) if ref is not None else None
    rows = []
    for cell in cells:
        row = {"label": cell.label, "method": cell.method, "rank": cell.rank, "n_seeds": len(cell.runs),
               "reference": f"{ref.label}_r{ref.rank}" if ref is not None else None,
               "base_greedy": base, "threshold": threshold}
        c = curves[id(cell)]
        if c is not None:
            row.update(_efficiency_columns(c, threshold))
        if c is not None and ref_curves is not None and cell is not ref:
            pair = _pair_arrays(c, ref_curves)
            if pair is None:
                log.warning("%s_r%d: its curves cannot be paired with %s (seeds, steps or problems differ)",
                            cell.label, cell.rank, row["reference"])
            else:
                row.update(_paired_efficiency(*pair, threshold))
        rows.append(row)
    df = pd.DataFrame(rows, columns=SAMPLE_EFFICIENCY_COLUMNS)
    for col in ("rank", "n_paired_seeds", "n_problems"):
        df[col] = df[col].astype("Int64")
    return df


def _fmt_steps(value) -> str:
    return "not reached" if value is None or not np.isfinite(value) else f"{value:g}"


def _fmt_diff(row, prefix: str, digits: int = 3) -> str:
    return _est(row, f"{prefix}_diff").fmt(digits=digits)


def sample_efficiency_markdown(df: pd.DataFrame) -> str:
    parts = ["# Sample efficiency on held-out problems\n"]
    have = df.dropna(subset=["auc_greedy"])
    if have.empty:
        return "\n".join(parts + ["No learning curves in this experiment (`eval.every` is 0): nothing to report.\n"])
    first = have.iloc[0]
    ref = df["reference"].dropna().iloc[0] if df["reference"].notna().any() else None
    parts.append(
        f"Held-out greedy accuracy and one T=1 sample per problem on {int(first['n_problems'])} test problems, "
        f"at curve steps {first['first_step']:g} to {first['last_step']:g}. AUC = trapezoid area under the curve "
        "divided by the step span (the mean accuracy over training). Final = greedy accuracy at the last curve step. "
        "Mean [95% bootstrap interval over seeds and problems]. "
        + (f"minus {ref}: the cell minus {ref} on the same seeds and problems (paired bootstrap over seeds and "
           "problems); MDD = (1.96 + 0.84) x the bootstrap standard error of that difference, the smallest true "
           "difference found with 80% power by a two-sided 5% test.\n"
           if ref else "No uniform cell: no differences.\n"))
    rows = [[r["label"], _fmt_rank(r["rank"]), str(r["n_seeds"]), _est(r, "auc_greedy").fmt(),
             _fmt_diff(r, "auc_greedy"), _fmt_num(r["auc_greedy_mdd"]), _est(r, "auc_sampled").fmt(),
             _fmt_diff(r, "auc_sampled"), _fmt_num(r["auc_sampled_mdd"])] for _, r in df.iterrows()]
    minus = f"minus {ref}" if ref else "minus uniform"
    parts += ["## Area under the held-out learning curve\n",
              markdown_table(["method", "r", "seeds", "AUC greedy", minus, "MDD", "AUC sampled", minus, "MDD"], rows)]
    rows = [[r["label"], _fmt_rank(r["rank"]), _est(r, "final_greedy").fmt(), _fmt_diff(r, "final_greedy"),
             _fmt_num(r["final_greedy_mdd"]), _fmt_steps(r["steps_to_threshold"]),
             _fmt_diff(r, "steps_to_threshold", 1),
             _fmt_num(r["steps_to_threshold_mdd"], 1)] for _, r in df.iterrows()]
    parts += ["## Final accuracy and steps to threshold\n",
              markdown_table(["method", "r", "final greedy", minus, "MDD", "steps to threshold", minus, "MDD"], rows)]
    thr = first["threshold"]
    notes = [f"Base model (curve step 0): greedy accuracy {_fmt_num(first['base_greedy'])}."]
    if np.isfinite(thr):
        notes.append(f"Threshold: {thr:.3f} = base + {THRESHOLD_FRACTION:g} x {ref}'s mean final gain. The steps "
                     "difference and its interval use the bootstrap replicates where both cells reach the threshold "
                     "(their share is `steps_to_threshold_boot_frac` in the CSV).")
    else:
        notes.append(f"No threshold: {ref or 'uniform'} did not gain accuracy over the base model by its last "
                     "curve step.")
    uni = df[df["reference"].notna() & (df["label"] + "_r" + df["rank"].astype(str) == df["reference"])]
    if not uni.empty and np.isfinite(uni.iloc[0]["auc_greedy"]):
        u = uni.iloc[0]
        notes.append(f"Seed-to-seed spread of {ref}'s greedy AUC: sd {_fmt_num(u['auc_greedy_seed_sd'])}, "
                     f"min {_fmt_num(u['auc_greedy_seed_min'])}, max {_fmt_num(u['auc_greedy_seed_max'])} "
                     f"over {u['n_seeds']} seed{'s' if u['n_seeds'] != 1 else ''}.")
    return "\n".join(parts + ["\n".join(notes) + "\n"])


# ----------------------------------------------------------------------------- the step
def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.8g", lineterminator="\n")


def read_table(path: Path) -> pd.DataFrame:
    """A table this step wrote. Only empty cells are missing values: pandas would otherwise read the
    label of the null-control cell, ``null`` (and ``NA``, ``None``, ...), as NaN and lose the cell."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def aggregate_main(cfg: Config, args=None) -> None:
    """Read every run and evaluation of the sweep; write ``<out_dir>/tables/``."""
    runs, base, protocol, grader, k = load_records(cfg)
    cells = group_cells(cfg, runs)
    out = cfg.out_dir / "tables"
    perf = performance_table(cells, base, protocol, grader, k)
    conc = concentration_table(cells)
    paired = paired_table(cells, protocol, grader)
    curves = pd.concat([r.metrics for r in runs], ignore_index=True)

    write_text(out / "runs.csv", _csv(runs_table(runs, base, protocol, grader, k)))
    write_text(out / "curves.csv", _csv(curves))
    caption = f"Performance on protocol {protocol} (grader {grader}); mean and 95% bootstrap CI over seeds and problems."
    headers, rows = performance_rows(perf)
    write_text(out / "performance.csv", _csv(perf))
    write_text(out / "performance.md", markdown_table(headers, rows))
    write_text(out / "performance.tex", latex_table(headers, rows, caption, "tab:performance"))
    headers, rows = concentration_rows(conc)
    write_text(out / "concentration.csv", _csv(conc))
    write_text(out / "concentration.md", markdown_table(headers, rows))
    write_text(out / "concentration.tex", latex_table(
        headers, rows, "Token-weight concentration averaged over training; mean and 95% bootstrap CI over seeds.",
        "tab:concentration"))
    headers, rows = paired_rows(paired)
    write_text(out / "paired.csv", _csv(paired))
    note = "" if not paired.empty else "No uniform cell in the sweep: nothing to pair against.\n"
    write_text(out / "paired.md", note + markdown_table(headers, rows))
    write_text(out / "paper_comparison.md", paper_comparison(perf, conc, paired, protocol, grader, k, len(cfg.sweep.seeds)))
    precision = credit_precision_table(cells)
    write_text(out / "credit_precision.csv", _csv(precision))
    write_text(out / "credit_precision.md", credit_precision_markdown(precision))
    write_text(out / "learning_curves.csv", _csv(learning_curves_table(runs)))
    efficiency = sample_efficiency_table(cells)
    write_text(out / "sample_efficiency.csv", _csv(efficiency))
    write_text(out / "sample_efficiency.md", sample_efficiency_markdown(efficiency))
    costs = cost.cost_table(cfg)
    paths = grid.table_outputs(cfg)
    write_text(paths["cost_csv"], _csv(costs))
    write_text(paths["cost_md"], cost.NOTE + markdown_table(*cost.cost_rows(cfg, costs)))
    log.info("wrote %d cells (%d runs) to %s", len(cells), len(runs), out)
