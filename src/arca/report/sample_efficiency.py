"""Learning curves and sample efficiency: held-out accuracy along training, its area, final value
and steps to a threshold, each paired against ``uniform`` with a minimum detectable difference.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from arca.config import InputError
from arca.report.records import Cell, RunRecord, reference_cell
from arca.report.render import ci_columns, est, fmt_num, fmt_rank, markdown_table
from arca.stats import (
    NAN_ESTIMATE,
    bootstrap_mean_ci,
    paired_bootstrap,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- learning curves
CURVE_OUTCOME_COLUMNS = ["greedy_aligned", "greedy_decision", "greedy_execution", "greedy_collateral"]
LEARNING_CURVE_COLUMNS = [
    "label",
    "method",
    "rank",
    "seed",
    "run",
    "step",
    "greedy",
    "sampled",
    "n",
    *CURVE_OUTCOME_COLUMNS,
]
# Steps to threshold: the first curve step where greedy accuracy reaches the base model's plus this
# fraction of uniform's mean final gain.
THRESHOLD_FRACTION = 0.5
_TOL = 1e-9  # accuracies are k / n; the threshold may equal one exactly


def learning_curves_table(runs: list[RunRecord]) -> pd.DataFrame:
    """Long format: one row per (run, curve step), the held-out greedy and sampled accuracy and the
    greedy completions' planted-fork outcomes (``arca.labels.outcome_means``)."""
    rows = [
        {
            "label": r.label,
            "method": r.method,
            "rank": r.rank,
            "seed": r.seed,
            "run": r.run,
            "step": p["step"],
            "greedy": p["greedy"],
            "sampled": p["sampled"],
            "n": p.get("n"),
            **{c: p.get(c) for c in CURVE_OUTCOME_COLUMNS},  # planted-fork outcomes (absent without forks)
        }
        for r in runs
        for p in r.curve
    ]
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
            raise InputError(
                f"curves of {cell.label}_r{cell.rank}: {key!r} must be one list of the same length "
                f"at every step of every seed (found lengths {sorted(sizes)})"
            )
        return np.asarray(lists, dtype=float).transpose(0, 2, 1)  # [S, N, P] -> [S, P, N]

    return CellCurves(
        [r.seed for r in runs], np.asarray(steps, dtype=float), verdicts("greedy_correct"), verdicts("sampled_correct")
    )


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
        return {**ci_columns(f"{prefix}_diff", NAN_ESTIMATE), f"{prefix}_mdd": math.nan}
    return {**ci_columns(f"{prefix}_diff", pb.estimate), f"{prefix}_mdd": pb.mdd}


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
    "label",
    "method",
    "rank",
    "reference",
    "n_seeds",
    "n_paired_seeds",
    "n_problems",
    "first_step",
    "last_step",
    *[c for m in ("auc_greedy", "auc_sampled", "final_greedy") for c in (m, f"{m}_lo", f"{m}_hi")],
    "auc_greedy_seed_sd",
    "auc_greedy_seed_min",
    "auc_greedy_seed_max",
    "base_greedy",
    "threshold",
    "steps_to_threshold",
    *[
        c
        for m in ("auc_greedy", "auc_sampled", "final_greedy", "steps_to_threshold")
        for c in (f"{m}_diff", f"{m}_diff_lo", f"{m}_diff_hi", f"{m}_mdd")
    ],
    "steps_to_threshold_boot_frac",
]


def _efficiency_columns(c: CellCurves, threshold: float) -> dict:
    """One cell's AUCs and final accuracy (bootstrap over seeds and problems), its seed spread and its
    steps to threshold (on the mean curve over seeds and problems)."""
    auc = curve_auc(c.greedy, c.steps)  # [S, P]
    seed_auc = auc.mean(axis=1)  # [S]
    mean_curve = c.greedy.mean(axis=(0, 1))  # [N]
    return {
        "n_problems": c.greedy.shape[1],
        "first_step": c.steps[0],
        "last_step": c.steps[-1],
        **ci_columns("auc_greedy", bootstrap_mean_ci(auc)),
        **ci_columns("auc_sampled", bootstrap_mean_ci(curve_auc(c.sampled, c.steps))),
        **ci_columns("final_greedy", bootstrap_mean_ci(c.greedy[..., -1])),
        "auc_greedy_seed_sd": float(seed_auc.std(ddof=1)) if len(seed_auc) > 1 else math.nan,
        "auc_greedy_seed_min": float(seed_auc.min()),
        "auc_greedy_seed_max": float(seed_auc.max()),
        "steps_to_threshold": float(first_step_reaching(mean_curve[None], c.steps, threshold)[0]),
    }


def _paired_efficiency(a: CellCurves, b: CellCurves, threshold: float) -> dict:
    """Cell ``a`` minus reference ``b`` on the same seeds and problems: per (seed, problem) AUCs and
    final verdicts, and steps to threshold recomputed on every replicate's mean curves."""
    steps_pb = paired_bootstrap(a.greedy, b.greedy, _steps_statistic(a.steps, threshold))
    return {
        "n_paired_seeds": len(a.seeds),
        **_paired_columns("auc_greedy", paired_bootstrap(curve_auc(a.greedy, a.steps), curve_auc(b.greedy, b.steps))),
        **_paired_columns(
            "auc_sampled", paired_bootstrap(curve_auc(a.sampled, a.steps), curve_auc(b.sampled, b.steps))
        ),
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
        row = {
            "label": cell.label,
            "method": cell.method,
            "rank": cell.rank,
            "n_seeds": len(cell.runs),
            "reference": f"{ref.label}_r{ref.rank}" if ref is not None else None,
            "base_greedy": base,
            "threshold": threshold,
        }
        c = curves[id(cell)]
        if c is not None:
            row.update(_efficiency_columns(c, threshold))
        if c is not None and ref_curves is not None and cell is not ref:
            pair = _pair_arrays(c, ref_curves)
            if pair is None:
                log.warning(
                    "%s_r%d: its curves cannot be paired with %s (seeds, steps or problems differ)",
                    cell.label,
                    cell.rank,
                    row["reference"],
                )
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
    return est(row, f"{prefix}_diff").fmt(digits=digits)


def _efficiency_intro(first: pd.Series, ref: str | None) -> str:
    """What the tables measure, on how many problems and steps, and what the differences are."""
    return (
        f"Held-out greedy accuracy and one T=1 sample per problem on {int(first['n_problems'])} test problems, "
        f"at curve steps {first['first_step']:g} to {first['last_step']:g}. AUC = trapezoid area under the curve "
        "divided by the step span (the mean accuracy over training). Final = greedy accuracy at the last curve step. "
        "Mean [95% bootstrap interval over seeds and problems]. "
        + (
            f"minus {ref}: the cell minus {ref} on the same seeds and problems (paired bootstrap over seeds and "
            "problems); MDD = (1.96 + 0.84) x the bootstrap standard error of that difference, the smallest true "
            "difference found with 80% power by a two-sided 5% test.\n"
            if ref
            else "No uniform cell: no differences.\n"
        )
    )


def _efficiency_tables(df: pd.DataFrame, minus: str) -> list[str]:
    """The AUC table and the final-accuracy / steps-to-threshold table, each under its heading."""
    rows = [
        [
            r["label"],
            fmt_rank(r["rank"]),
            str(r["n_seeds"]),
            est(r, "auc_greedy").fmt(),
            _fmt_diff(r, "auc_greedy"),
            fmt_num(r["auc_greedy_mdd"]),
            est(r, "auc_sampled").fmt(),
            _fmt_diff(r, "auc_sampled"),
            fmt_num(r["auc_sampled_mdd"]),
        ]
        for _, r in df.iterrows()
    ]
    parts = [
        "## Area under the held-out learning curve\n",
        markdown_table(["method", "r", "seeds", "AUC greedy", minus, "MDD", "AUC sampled", minus, "MDD"], rows),
    ]
    rows = [
        [
            r["label"],
            fmt_rank(r["rank"]),
            est(r, "final_greedy").fmt(),
            _fmt_diff(r, "final_greedy"),
            fmt_num(r["final_greedy_mdd"]),
            _fmt_steps(r["steps_to_threshold"]),
            _fmt_diff(r, "steps_to_threshold", 1),
            fmt_num(r["steps_to_threshold_mdd"], 1),
        ]
        for _, r in df.iterrows()
    ]
    return parts + [
        "## Final accuracy and steps to threshold\n",
        markdown_table(["method", "r", "final greedy", minus, "MDD", "steps to threshold", minus, "MDD"], rows),
    ]


def _efficiency_notes(df: pd.DataFrame, first: pd.Series, ref: str | None) -> str:
    """The base model's accuracy, how the threshold was set, and the reference's seed-to-seed spread."""
    thr = first["threshold"]
    notes = [f"Base model (curve step 0): greedy accuracy {fmt_num(first['base_greedy'])}."]
    if np.isfinite(thr):
        notes.append(
            f"Threshold: {thr:.3f} = base + {THRESHOLD_FRACTION:g} x {ref}'s mean final gain. The steps "
            "difference and its interval use the bootstrap replicates where both cells reach the threshold "
            "(their share is `steps_to_threshold_boot_frac` in the CSV)."
        )
    else:
        notes.append(
            f"No threshold: {ref or 'uniform'} did not gain accuracy over the base model by its last curve step."
        )
    uni = df[df["reference"].notna() & (df["label"] + "_r" + df["rank"].astype(str) == df["reference"])]
    if not uni.empty and np.isfinite(uni.iloc[0]["auc_greedy"]):
        u = uni.iloc[0]
        notes.append(
            f"Seed-to-seed spread of {ref}'s greedy AUC: sd {fmt_num(u['auc_greedy_seed_sd'])}, "
            f"min {fmt_num(u['auc_greedy_seed_min'])}, max {fmt_num(u['auc_greedy_seed_max'])} "
            f"over {u['n_seeds']} seed{'s' if u['n_seeds'] != 1 else ''}."
        )
    return "\n".join(notes) + "\n"


def sample_efficiency_markdown(df: pd.DataFrame) -> str:
    parts = ["# Sample efficiency on held-out problems\n"]
    have = df.dropna(subset=["auc_greedy"])
    if have.empty:
        return "\n".join(parts + ["No learning curves in this experiment (`eval.every` is 0): nothing to report.\n"])
    first = have.iloc[0]
    ref = df["reference"].dropna().iloc[0] if df["reference"].notna().any() else None
    parts.append(_efficiency_intro(first, ref))
    parts += _efficiency_tables(df, f"minus {ref}" if ref else "minus uniform")
    return "\n".join(parts + [_efficiency_notes(df, first, ref)])
