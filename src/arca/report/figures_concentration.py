"""Figures of token-weight concentration: Gini bars per cell, Gini and EffN/T over training, and
Lorenz curves of the last step's weights (read from each run's ``final_weights.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from arca.config import Config, MissingInputError
from arca.paths import paths_of
from arca.report.figures_common import cell_ticks, integer_steps, legend_right, mean_curve, ranks_of, trained_cells
from arca.report.paper import MIDDLE_BAND
from arca.report.style import MIDDLE_BAND_COLOR, cell_name, color_for, plt, rank_style, save_figure

LORENZ_GRID = np.linspace(0.0, 1.0, 201)


def gini_bars(runs: pd.DataFrame, out: Path) -> list[Path]:
    cells = trained_cells(runs)
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
    cell_ticks(ax, [f"{lab} r{rk}" for lab, _, rk in cells])
    ax.set_ylim(0, 1.05)
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.set_ylabel("Gini of token weights\n(0 = uniform, 1 = one token)")
    ax.set_title("Token-weight concentration, averaged over training")
    ax.grid(axis="x", visible=False)
    legend_right(fig, ax)
    return save_figure(fig, out, "gini_bars")


def concentration_curves(curves: pd.DataFrame, out: Path) -> list[Path]:
    cells = trained_cells(curves)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), sharex=True, layout="constrained")
    panels = (
        ("gini", "Gini of token weights", (0, 1.02)),
        ("eff_ratio", "EffN/T (effective tokens / tokens)", (0, 1.05)),
    )
    for ax, (col, ylabel, ylim) in zip(axes, panels):
        for label, method, rank in cells:
            ls, _ = rank_style(rank, ranks_of(cells, label))
            s = mean_curve(curves, label, rank, col)
            ax.plot(s.index, s.values, ls=ls, lw=1.5, color=color_for(label, method), label=cell_name(label, rank))
        ax.set_ylim(*ylim)
        integer_steps(ax)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
    if "gini" in curves:
        lo, hi = MIDDLE_BAND
        axes[0].axhspan(lo, hi, color=MIDDLE_BAND_COLOR, alpha=0.5, zorder=0)
    fig.suptitle("Concentration over training (mean over seeds)")
    legend_right(fig, axes[0])
    return save_figure(fig, out, "concentration_curves")


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
        raise MissingInputError(f"figures: missing {path} (written by `python -m arca train`)")
    return json.loads(path.read_text(encoding="utf-8"))["weights"]


def lorenz(runs: pd.DataFrame, cfg: Config, out: Path) -> list[Path]:
    cells = trained_cells(runs)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    ax.plot([0, 1], [0, 1], color="black", lw=0.9, ls=":", zorder=5, label="equality (uniform)")
    for label, method, rank in cells:
        seqs = []
        for run in runs[(runs["label"] == label) & (runs["rank"] == rank)]["run"]:
            seqs += [w for w in read_final_weights(paths_of(cfg).run(run).final_weights) if len(w) > 1]
        if not seqs:
            continue
        ls, _ = rank_style(rank, ranks_of(cells, label))
        curve = np.mean([lorenz_curve(w) for w in seqs], axis=0)
        ax.plot(LORENZ_GRID, curve, ls=ls, lw=1.6, color=color_for(label, method), label=cell_name(label, rank))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("fraction of completion tokens\n(sorted by weight, ascending)")
    ax.set_ylabel("cumulative share of credit")
    ax.set_title("Lorenz curves of the last step's token weights")
    legend_right(fig, ax)
    return save_figure(fig, out, "lorenz")
