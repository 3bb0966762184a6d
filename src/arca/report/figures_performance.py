"""Figures of performance: train reward over steps, test accuracy with confidence intervals,
ARCA's accuracy against adapter size, held-out learning curves, and the performance profile of the
runs' final greedy accuracies (Agarwal et al., 2021)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from arca.report.figures_common import (
    cell_ticks,
    fraction_axis,
    integer_steps,
    legend_right,
    mean_curve,
    no_data,
    ranks_of,
    trained_cells,
)
from arca.report.records import BASE, REFERENCE_METHOD
from arca.report.style import cell_name, color_for, plt, rank_style, save_figure
from arca.stats import performance_profile as run_score_profile


def reward_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    cells = trained_cells(curves)
    n_steps = int(curves["step"].max()) if len(curves) else 1
    window = max(1, round(n_steps / 10))
    fig, ax = plt.subplots(figsize=(7.0, 3.6), layout="constrained")
    drawn: list[float] = []
    for label, method, rank in cells:
        ls, _ = rank_style(rank, ranks_of(cells, label))
        s = mean_curve(curves, label, rank, "reward_mean")
        smooth = s.rolling(window, min_periods=1).mean()
        ax.plot(
            smooth.index, smooth.values, ls=ls, lw=1.6, color=color_for(label, method), label=cell_name(label, rank)
        )
        drawn += list(smooth.values)
    fraction_axis(ax, drawn)
    integer_steps(ax)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train reward (fraction correct)")
    ax.set_title(f"Train reward, mean over seeds, trailing mean of {window} step{'s' if window > 1 else ''}")
    legend_right(fig, ax)
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
        cell_ticks(ax, [f"{r.label} r{int(r.rank)}" for r in cells.itertuples()])
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
        ax.set_xlim(-0.6, len(cells) - 0.4)
    axes[0].set_ylabel("accuracy (fraction of problems)")
    axes[0].set_ylim(0, 1.05)
    fig.suptitle(f"Test accuracy, protocol {protocol}, grader {grader}")
    legend_right(fig, axes[0])
    return save_figure(fig, out, "accuracy")


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
        fraction_axis(ax, shown[["greedy", "greedy_lo", "greedy_hi"]].to_numpy().ravel())
    ax.set_xlabel("trainable parameters (count, log scale)")
    ax.set_ylabel("greedy accuracy (fraction of problems)")
    ax.set_title("Accuracy against adapter size")
    legend_right(fig, ax)
    return save_figure(fig, out, "accuracy_vs_params")


def learning_curves(lc: pd.DataFrame, out: Path) -> list[Path]:
    cells = trained_cells(lc)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8), sharey=True, layout="constrained")
    drawn: list[float] = []
    for ax, (col, title) in zip(axes, (("greedy", "greedy"), ("sampled", "one sample at T=1"))):
        for label, method, rank in cells:
            sub = lc[(lc["label"] == label) & (lc["rank"] == rank)]
            acc = pd.to_numeric(sub[col], errors="coerce")
            by_step = acc.groupby(sub["step"]).agg(["mean", "min", "max"]).sort_index()
            ls, _ = rank_style(rank, ranks_of(cells, label))
            color = color_for(label, method)
            ax.fill_between(by_step.index, by_step["min"], by_step["max"], color=color, alpha=0.15, lw=0)
            ax.plot(
                by_step.index, by_step["mean"], ls=ls, lw=1.6, marker=".", color=color, label=cell_name(label, rank)
            )
            drawn += list(by_step["min"]) + list(by_step["max"])
        if not cells:
            no_data(ax, "no learning curves in this experiment (eval.every = 0)")
            continue
        steps = sorted(lc["step"].unique())
        if len(steps) <= 12:  # one tick per evaluation point when they fit
            ax.set_xticks(steps)
        else:
            integer_steps(ax)
        ax.set_xlabel("optimizer step (0 = base model)")
        ax.set_title(f"held-out accuracy, {title}")
    if drawn:
        fraction_axis(axes[0], drawn)  # shared y
    axes[0].set_ylabel("accuracy (fraction of problems)")
    n = int(lc["n"].dropna().iloc[0]) if "n" in lc and lc["n"].notna().any() else 0
    fig.suptitle(f"Learning curves on {n} held-out problems: mean over seeds, band = min-max over seeds")
    legend_right(fig, axes[0])
    return save_figure(fig, out, "learning_curves")


PROFILE_GRID = np.linspace(0.0, 1.0, 101)  # thresholds between the run scores, which are added exactly


def performance_profile(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Fraction of a cell's runs whose final greedy accuracy exceeds tau, against tau (one step line per cell).

    Reads ``runs.csv``: one score per run, so the curve of N seeds steps down by 1/N at each run's
    accuracy. The thresholds hold every run score, and the lines are drawn as steps from each
    threshold on, so each drop sits exactly at a score.
    """
    cells = trained_cells(runs)
    greedy = pd.to_numeric(runs["greedy"], errors="coerce")
    scores = {
        cell: greedy[(runs["label"] == cell[0]) & (runs["rank"] == cell[2])].dropna().to_numpy() for cell in cells
    }
    scores = {cell: s for cell, s in scores.items() if s.size}
    taus = np.unique(np.concatenate([PROFILE_GRID, *scores.values()]))  # [T], sorted
    profiles = run_score_profile(scores, taus) if scores else {}
    fig, ax = plt.subplots(figsize=(7.0, 3.8), layout="constrained")
    for (label, method, rank), frac in profiles.items():
        ls, _ = rank_style(rank, ranks_of(cells, label))
        n = scores[(label, method, rank)].size
        ax.step(
            taus,
            frac,
            where="post",
            ls=ls,
            lw=1.6,
            color=color_for(label, method),
            label=f"{cell_name(label, rank)} ({n} runs)",
        )
    base = greedy[runs["label"] == BASE].dropna()
    if len(base):
        ax.axvline(base.iloc[0], color=color_for(BASE), ls="--", lw=1.2, label="base model")
    if not profiles:
        no_data(ax, "no trained runs in runs.csv")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("threshold τ on final greedy accuracy")
    ax.set_ylabel("fraction of runs with accuracy > τ")
    ax.set_title("Performance profile: the distribution of run scores per cell")
    legend_right(fig, ax)
    return save_figure(fig, out, "performance_profile")
