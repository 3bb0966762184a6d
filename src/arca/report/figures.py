"""``python -m arca figures``: draw ``<out_dir>/figures/*.{png,pdf}`` from the tables.

Reads only what ``aggregate`` wrote (``tables/runs.csv``, ``tables/curves.csv``,
``tables/credit_precision.csv``, ``tables/learning_curves.csv`` and, for the confidence intervals,
``tables/performance.csv``) plus each run's ``final_weights.json``, so a
figure can be redrawn without touching the evaluations. Figures:

- ``gini_bars``             Gini per (label, rank), seeds as points, the middle band shaded
- ``concentration_curves``  Gini and EffN/T over training steps (mean over seeds)
- ``reward_curves``         smoothed train reward over steps (mean over seeds)
- ``accuracy``              greedy accuracy and pass@k with 95% CIs, base model dashed
- ``lorenz``                Lorenz curves of the last step's token weights
- ``accuracy_vs_params``    ARCA's greedy accuracy against trainable parameters (log x)
- ``credit_precision``      decisive-token share relative to uniform per cell (positive and negative
                            advantage), the oracle marked; and its trajectory over training steps
- ``learning_curves``       held-out greedy and sampled accuracy over training, band = min-max over seeds
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator

from arca.config import Config
from arca.report.paper import MIDDLE_BAND
from arca.report.records import BASE, REFERENCE_METHOD
from arca.report.style import (
    MIDDLE_BAND_COLOR,
    apply_style,
    cell_name,
    color_for,
    plt,
    rank_style,
    save_figure,
)
from arca.report.tables import read_table

log = logging.getLogger(__name__)

FIGURES = (
    "gini_bars",
    "concentration_curves",
    "reward_curves",
    "accuracy",
    "lorenz",
    "accuracy_vs_params",
    "credit_precision",
    "learning_curves",
)
LORENZ_GRID = np.linspace(0.0, 1.0, 201)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"figures: missing table {path} (run `python -m arca aggregate` first)")
    return read_table(path)


def _cells(df: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(label, method, rank) of the trained cells, in the order the table lists them."""
    df = df[df["label"] != BASE].dropna(subset=["rank"])
    seen = dict.fromkeys((r.label, r.method, int(r.rank)) for r in df.itertuples())
    return list(seen)


def _ranks_of(cells, label: str) -> list[int]:
    return sorted(r for lab, _, r in cells if lab == label)


def _cell_ticks(ax, labels: list[str]) -> None:
    """Cell names under the bars, slanted when they would otherwise run into each other."""
    crowded = len(labels) > 4 or max((len(x) for x in labels), default=0) > 10
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=35 if crowded else 0,
        ha="right" if crowded else "center",
        rotation_mode="anchor" if crowded else "default",
    )


def _integer_steps(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


FRACTION_MIN_SPAN = 0.1  # an accuracy or reward axis never spans less (all-equal data included)


def _fraction_axis(ax, values) -> None:
    """y limits for a fraction in [0, 1] (accuracy, reward) from the values drawn on ``ax``.

    The data range padded by 5%, but never narrower than ``FRACTION_MIN_SPAN`` and never far
    outside [0, 1]; tick labels plain. Without this, all-equal values (every accuracy 0 in a tiny
    run) leave matplotlib a zero-height range, drawn as a meaningless 1e-17 axis.
    """
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    if hi - lo < FRACTION_MIN_SPAN:
        mid = (lo + hi) / 2
        lo, hi = mid - FRACTION_MIN_SPAN / 2, mid + FRACTION_MIN_SPAN / 2
    floor, ceil = -0.02, 1.02
    if lo < floor:
        lo, hi = floor, max(hi, floor + FRACTION_MIN_SPAN)
    if hi > ceil:
        lo, hi = min(lo, ceil - FRACTION_MIN_SPAN), ceil
    ax.set_ylim(lo, hi)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)


def _legend_right(fig, ax) -> None:
    """Legend outside the axes on the right, so it can never cover data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper")


# ----------------------------------------------------------------------------- figures
def gini_bars(runs: pd.DataFrame, out: Path) -> list[Path]:
    cells = _cells(runs)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * len(cells) + 2.5), 3.6), layout="constrained")
    lo, hi = MIDDLE_BAND
    ax.axhspan(lo, hi, color=MIDDLE_BAND_COLOR, alpha=0.6, zorder=0, label=f"middle regime ({lo:.2f}-{hi:.2f})")
    rng = np.random.default_rng(0)  # jitter of the seed points only; fixed so redraws are identical
    for i, (label, method, rank) in enumerate(cells):
        g = runs[(runs["label"] == label) & (runs["rank"] == rank)]["gini"].dropna()
        ax.bar(i, g.mean() if len(g) else 0.0, width=0.7, color=color_for(label, method), alpha=0.85, zorder=2)
        ax.scatter(
            i + rng.uniform(-0.15, 0.15, len(g)), g, s=14, color="black", zorder=3, label="one seed" if i == 0 else None
        )
    _cell_ticks(ax, [f"{lab} r{rk}" for lab, _, rk in cells])
    ax.set_ylim(0, 1.05)
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.set_ylabel("Gini of token weights\n(0 = uniform, 1 = one token)")
    ax.set_title("Token-weight concentration, averaged over training")
    ax.grid(axis="x", visible=False)
    _legend_right(fig, ax)
    return save_figure(fig, out, "gini_bars")


def _mean_curve(curves: pd.DataFrame, label: str, rank: int, col: str) -> pd.Series:
    sub = curves[(curves["label"] == label) & (curves["rank"] == rank)]
    return pd.to_numeric(sub[col], errors="coerce").groupby(sub["step"]).mean().sort_index()


def concentration_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    cells = _cells(curves)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), sharex=True, layout="constrained")
    panels = (
        ("gini", "Gini of token weights", (0, 1.02)),
        ("eff_ratio", "EffN/T (effective tokens / tokens)", (0, 1.05)),
    )
    for ax, (col, ylabel, ylim) in zip(axes, panels):
        for label, method, rank in cells:
            ls, _ = rank_style(rank, _ranks_of(cells, label))
            s = _mean_curve(curves, label, rank, col)
            ax.plot(s.index, s.values, ls=ls, lw=1.5, color=color_for(label, method), label=cell_name(label, rank))
        ax.set_ylim(*ylim)
        _integer_steps(ax)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
    if "gini" in curves:
        lo, hi = MIDDLE_BAND
        axes[0].axhspan(lo, hi, color=MIDDLE_BAND_COLOR, alpha=0.5, zorder=0)
    fig.suptitle("Concentration over training (mean over seeds)")
    _legend_right(fig, axes[0])
    return save_figure(fig, out, "concentration_curves")


def reward_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    cells = _cells(curves)
    n_steps = int(curves["step"].max()) if len(curves) else 1
    window = max(1, round(n_steps / 10))
    fig, ax = plt.subplots(figsize=(7.0, 3.6), layout="constrained")
    drawn: list[float] = []
    for label, method, rank in cells:
        ls, _ = rank_style(rank, _ranks_of(cells, label))
        s = _mean_curve(curves, label, rank, "reward_mean")
        smooth = s.rolling(window, min_periods=1).mean()
        ax.plot(
            smooth.index, smooth.values, ls=ls, lw=1.6, color=color_for(label, method), label=cell_name(label, rank)
        )
        drawn += list(smooth.values)
    _fraction_axis(ax, drawn)
    _integer_steps(ax)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train reward (fraction correct)")
    ax.set_title(f"Train reward, mean over seeds, trailing mean of {window} step{'s' if window > 1 else ''}")
    _legend_right(fig, ax)
    return save_figure(fig, out, "reward_curves")


def accuracy(perf: pd.DataFrame, out: Path) -> list[Path]:
    k = int(perf["k"].iloc[0]) if "k" in perf and len(perf) else 1
    protocol = perf["protocol"].iloc[0] if "protocol" in perf and len(perf) else ""
    grader = perf["grader"].iloc[0] if "grader" in perf and len(perf) else ""
    cells = perf[perf["label"] != BASE].reset_index(drop=True)
    base = perf[perf["label"] == BASE]
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 0.9 * len(cells) + 3.0), 3.8), sharey=True, layout="constrained")
    for ax, (col, title) in zip(axes, (("greedy", "greedy accuracy"), ("pass_at_k", f"pass@{k} (T=1, top-p 0.95)"))):
        x = np.arange(len(cells))
        err = np.vstack([cells[col] - cells[f"{col}_lo"], cells[f"{col}_hi"] - cells[col]]).clip(min=0)
        colors = [color_for(r.label, r.method) for r in cells.itertuples()]
        ax.bar(x, cells[col], width=0.7, color=colors, alpha=0.85, zorder=2)
        ax.errorbar(x, cells[col], yerr=err, fmt="none", ecolor="black", capsize=3, lw=1, zorder=3, label="95% CI")
        if len(base) and np.isfinite(base[col].iloc[0]):
            ax.axhline(base[col].iloc[0], color=color_for(BASE), ls="--", lw=1.2, zorder=4, label="base model")
        _cell_ticks(ax, [f"{r.label} r{int(r.rank)}" for r in cells.itertuples()])
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
        ax.set_xlim(-0.6, len(cells) - 0.4)
    axes[0].set_ylabel("accuracy (fraction of problems)")
    axes[0].set_ylim(0, 1.05)
    fig.suptitle(f"Test accuracy, protocol {protocol}, grader {grader}")
    _legend_right(fig, axes[0])
    return save_figure(fig, out, "accuracy")


def lorenz_curve(weights) -> np.ndarray:
    """Lorenz curve of one sequence's weights on ``LORENZ_GRID``: share of credit held by the
    lowest-weighted fraction x of its tokens (the diagonal for uniform weights)."""
    w = np.sort(np.asarray(weights, dtype=float))
    total = w.sum()
    if w.size == 0 or total <= 0:
        return LORENZ_GRID.copy()
    x = np.arange(w.size + 1) / w.size
    y = np.concatenate([[0.0], np.cumsum(w) / total])
    return np.interp(LORENZ_GRID, x, y)


def read_final_weights(path: Path) -> list[list[float]]:
    if not path.is_file():
        raise FileNotFoundError(f"figures: missing {path} (written by `python -m arca train`)")
    return json.loads(path.read_text(encoding="utf-8"))["weights"]


def lorenz(runs: pd.DataFrame, cfg: Config, out: Path) -> list[Path]:
    cells = _cells(runs)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    ax.plot([0, 1], [0, 1], color="black", lw=0.9, ls=":", zorder=5, label="equality (uniform)")
    for label, method, rank in cells:
        seqs = []
        for run in runs[(runs["label"] == label) & (runs["rank"] == rank)]["run"]:
            seqs += [w for w in read_final_weights(cfg.run_dir(run) / "final_weights.json") if len(w) > 1]
        if not seqs:
            continue
        ls, _ = rank_style(rank, _ranks_of(cells, label))
        curve = np.mean([lorenz_curve(w) for w in seqs], axis=0)
        ax.plot(LORENZ_GRID, curve, ls=ls, lw=1.6, color=color_for(label, method), label=cell_name(label, rank))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("fraction of completion tokens\n(sorted by weight, ascending)")
    ax.set_ylabel("cumulative share of credit")
    ax.set_title("Lorenz curves of the last step's token weights")
    _legend_right(fig, ax)
    return save_figure(fig, out, "lorenz")


def accuracy_vs_params(perf: pd.DataFrame, out: Path) -> list[Path]:
    cells = perf[perf["label"] != BASE]
    arca = cells[cells["label"] == "arca"]
    if arca.empty:
        arca = cells[cells["method"] == "arca"]
    arca = arca.dropna(subset=["trainable_params"]).sort_values("rank")
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")

    def point(rows, marker, label, ls):
        x = rows["trainable_params"].astype(float).to_numpy()
        y = rows["greedy"].to_numpy(dtype=float)
        err = np.vstack([y - rows["greedy_lo"], rows["greedy_hi"] - y]).clip(min=0)
        color = color_for(rows["label"].iloc[0], rows["method"].iloc[0])
        ax.errorbar(x, y, yerr=err, fmt=marker, ls=ls, color=color, capsize=3, ms=7, label=label)
        for xi, yi, rk in zip(x, y, rows["rank"]):
            # A white box keeps the rank readable where it crosses the reference line or band.
            ax.annotate(
                f"r={int(rk)}",
                (xi, yi),
                textcoords="offset points",
                xytext=(7, 6),
                fontsize=8,
                color=color,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
            )

    if not arca.empty:
        point(arca, "o", "ARCA (95% CI)", "-")
    ref = cells[cells["method"] == REFERENCE_METHOD].dropna(subset=["trainable_params"])
    if not ref.empty:
        top = ref.sort_values(["rank"]).iloc[-1]
        color = color_for(top["label"], top["method"])
        name = f"{top['label']} r{int(top['rank'])} (reference)"
        # A band across the plot: it shares its x with ARCA at the same rank, where a second
        # error bar would sit on top of ARCA's.
        ax.axhspan(top["greedy_lo"], top["greedy_hi"], color=color, alpha=0.12, lw=0, label=f"{name}, 95% CI")
        ax.axhline(top["greedy"], color=color, ls=":", lw=1.2)
        ax.plot(
            [float(top["trainable_params"])], [top["greedy"]], marker="*", ms=12, ls="none", color=color, label=name
        )
    if arca.empty and ref.empty:
        ax.text(0.5, 0.5, "no trainable-parameter counts in the tables", transform=ax.transAxes, ha="center")
    else:
        ax.set_xscale("log")
        ax.margins(x=0.25)
        shown = pd.concat([arca, ref.sort_values(["rank"]).iloc[-1:]])
        _fraction_axis(ax, shown[["greedy", "greedy_lo", "greedy_hi"]].to_numpy().ravel())
    ax.set_xlabel("trainable parameters (count, log scale)")
    ax.set_ylabel("greedy accuracy (fraction of problems)")
    ax.set_title("Accuracy against adapter size")
    _legend_right(fig, ax)
    return save_figure(fig, out, "accuracy_vs_params")


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _ratio_axis(ax, values) -> None:
    """Log scale when every ratio is positive: x2 and x0.5 are the same distance from uniform's 1."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all():
        ax.set_yscale("log")
        # Plain numbers (0.5, 1, 2, 5, 10), not powers of ten: a ratio reads as "x times uniform".
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}" if f"{y:.0e}"[0] in "25" else ""))


def _precision_bars(ax, sweep: pd.DataFrame, oracle: float) -> list[float]:
    """Per cell: the decisive ratio of positive- (solid) and negative-advantage (hatched) completions,
    and of all completions (a diamond; the only mark where no aligned completion had a nonzero advantage)."""
    shown = []
    width = 0.38
    for i, r in enumerate(sweep.itertuples()):
        color = color_for(r.label, r.method)
        y, lo, hi = r.train_decisive_ratio, r.train_decisive_ratio_lo, r.train_decisive_ratio_hi
        if np.isfinite(y):
            err = [[max(0.0, y - lo)], [max(0.0, hi - y)]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar(i, y, yerr=err, fmt="D", ms=5, color="black", mfc="white", capsize=2, lw=0.8, zorder=5)
            shown += [y, lo, hi]
        for dx, side, hatch in ((-width / 2, "pos", None), (width / 2, "neg", "///")):
            y, lo, hi = (getattr(r, f"train_decisive_ratio_{side}{s}") for s in ("", "_lo", "_hi"))
            if not np.isfinite(y):
                continue
            ax.bar(
                i + dx,
                y,
                width=width,
                color=color,
                alpha=0.85 if side == "pos" else 0.45,
                hatch=hatch,
                edgecolor="black" if hatch else color,
                lw=0.5,
                zorder=2,
            )
            if np.isfinite(lo) and np.isfinite(hi):
                ax.errorbar(
                    i + dx,
                    y,
                    yerr=[[max(0.0, y - lo)], [max(0.0, hi - y)]],
                    fmt="none",
                    ecolor="black",
                    capsize=2,
                    lw=0.8,
                    zorder=3,
                )
            shown += [y, lo, hi]
    # Proxy artists: one legend entry per side, not one per bar.
    ax.bar([np.nan], [np.nan], color="#999999", alpha=0.85, label="advantage > 0")
    ax.bar(
        [np.nan], [np.nan], color="#999999", alpha=0.45, hatch="///", edgecolor="black", lw=0.5, label="advantage < 0"
    )
    ax.plot([np.nan], [np.nan], "D", ms=5, color="black", mfc="white", label="all completions")
    ax.axhline(1.0, color="black", ls="-", lw=0.9, zorder=4, label="uniform (1)")
    if np.isfinite(oracle):
        ax.axhline(
            oracle,
            color=color_for("oracle"),
            ls="--",
            lw=1.2,
            zorder=4,
            label=f"oracle, all completions ({oracle:.2f})",
        )
        shown.append(oracle)
    _cell_ticks(ax, [f"{r.label} r{int(r.rank)}" for r in sweep.itertuples()])
    ax.set_xlim(-0.6, len(sweep) - 0.4)
    ax.grid(axis="x", visible=False)
    return shown


def _precision_trajectory(ax, curves: pd.DataFrame, cells) -> list[float]:
    """Decisive ratio per step (mean share over seeds / mean uniform share), trailing mean over a tenth of training."""
    shown = []
    if "decisive_share" not in curves or "decisive_share_uniform" not in curves:
        return shown
    n_steps = int(curves["step"].max()) if len(curves) else 1
    window = max(1, round(n_steps / 10))
    for label, method, rank in cells:
        num = _mean_curve(curves, label, rank, "decisive_share")
        den = _mean_curve(curves, label, rank, "decisive_share_uniform")
        ratio = (num / den).replace([np.inf, -np.inf], np.nan).rolling(window, min_periods=1).mean().dropna()
        if ratio.empty:
            continue
        ls, _ = rank_style(rank, _ranks_of(cells, label))
        # Markers only on short series: a lone step would otherwise draw nothing.
        ax.plot(
            ratio.index,
            ratio.values,
            ls=ls,
            lw=1.5,
            marker="." if len(ratio) <= 12 else None,
            color=color_for(label, method),
            label=cell_name(label, rank),
        )
        shown += list(ratio.values)
    ax.axhline(1.0, color="black", lw=0.9)
    steps = sorted(curves["step"].unique()) if len(curves) else []
    if len(steps) <= 12:
        ax.set_xticks(steps)
    else:
        _integer_steps(ax)
    ax.set_xlabel("optimizer step")
    ax.set_title(f"Decisive ratio over training (trailing mean of {window} step{'s' if window > 1 else ''})")
    return shown


def credit_precision(precision: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    sweep = precision[precision["block"] == "sweep"].reset_index(drop=True)
    oracle_rows = sweep[sweep["method"] == "oracle"]
    if oracle_rows.empty:  # no oracle cell: its value on the probe, under the uniform cell's models
        oracle_rows = precision[(precision["block"] == "probe_all") & (precision["method"] == "oracle")]
        col = "probe_decisive_ratio"
    else:
        col = "train_decisive_ratio"
    oracle = float(oracle_rows[col].iloc[0]) if len(oracle_rows) else np.nan
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(max(10.0, 0.8 * len(sweep) + 6.0), 3.9),
        layout="constrained",
        gridspec_kw={"width_ratios": [max(1.0, len(sweep) / 6), 1.0]},
    )
    shown = _precision_bars(axes[0], sweep, oracle)
    axes[0].set_ylabel("share on decisive tokens\n/ uniform's share (x uniform)")
    axes[0].set_title("Credit on the decisive fork tokens during training")
    trajectory = _precision_trajectory(axes[1], curves, _cells(curves))
    if not np.isfinite(np.asarray(shown + trajectory, dtype=float)).any():
        for ax in axes:
            ax.clear()
            _no_data(ax, "no planted-fork labels in this experiment")
    else:
        for ax, values in ((axes[0], shown), (axes[1], trajectory)):
            _ratio_axis(ax, values + [1.0])
    fig.suptitle("Credit precision: weight on the decisive tokens relative to uniform weights (mean over seeds)")
    _legend_right(fig, axes[0])
    handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, loc="best", fontsize=7)
    return save_figure(fig, out, "credit_precision")


def learning_curves(lc: pd.DataFrame, out: Path) -> list[Path]:
    cells = _cells(lc)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8), sharey=True, layout="constrained")
    drawn: list[float] = []
    for ax, (col, title) in zip(axes, (("greedy", "greedy"), ("sampled", "one sample at T=1"))):
        for label, method, rank in cells:
            sub = lc[(lc["label"] == label) & (lc["rank"] == rank)]
            acc = pd.to_numeric(sub[col], errors="coerce")
            by_step = acc.groupby(sub["step"]).agg(["mean", "min", "max"]).sort_index()
            ls, _ = rank_style(rank, _ranks_of(cells, label))
            color = color_for(label, method)
            ax.fill_between(by_step.index, by_step["min"], by_step["max"], color=color, alpha=0.15, lw=0)
            ax.plot(
                by_step.index, by_step["mean"], ls=ls, lw=1.6, marker=".", color=color, label=cell_name(label, rank)
            )
            drawn += list(by_step["min"]) + list(by_step["max"])
        if not cells:
            _no_data(ax, "no learning curves in this experiment (eval.every = 0)")
            continue
        steps = sorted(lc["step"].unique())
        if len(steps) <= 12:  # one tick per evaluation point when they fit
            ax.set_xticks(steps)
        else:
            _integer_steps(ax)
        ax.set_xlabel("optimizer step (0 = base model)")
        ax.set_title(f"held-out accuracy, {title}")
    if drawn:
        _fraction_axis(axes[0], drawn)  # shared y
    axes[0].set_ylabel("accuracy (fraction of problems)")
    n = int(lc["n"].dropna().iloc[0]) if "n" in lc and lc["n"].notna().any() else 0
    fig.suptitle(f"Learning curves on {n} held-out problems: mean over seeds, band = min-max over seeds")
    _legend_right(fig, axes[0])
    return save_figure(fig, out, "learning_curves")


# ----------------------------------------------------------------------------- the step
def figures_main(cfg: Config, args=None) -> list[Path]:
    """Draw every figure of ``FIGURES`` into ``<out_dir>/figures/``; returns the files written."""
    apply_style()
    tables = cfg.out_dir / "tables"
    runs = _read_csv(tables / "runs.csv")
    curves = _read_csv(tables / "curves.csv")
    perf = _read_csv(tables / "performance.csv")
    out = cfg.out_dir / "figures"
    paths = []
    paths += gini_bars(runs, out)
    paths += concentration_curves(curves, out)
    paths += reward_curves(curves, out)
    paths += accuracy(perf, out)
    paths += lorenz(runs, cfg, out)
    paths += accuracy_vs_params(perf, out)
    paths += credit_precision(_read_csv(tables / "credit_precision.csv"), curves, out)
    paths += learning_curves(_read_csv(tables / "learning_curves.csv"), out)
    log.info("wrote %d figure files to %s", len(paths), out)
    return paths
