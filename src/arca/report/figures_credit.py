"""The credit-precision figure: each cell's share of token weight on the decisive fork tokens
relative to uniform weights (bars by advantage sign, the decision oracle marked) and its trajectory over training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from arca.report.figures_common import (
    cell_ticks,
    integer_steps,
    legend_right,
    mean_curve,
    no_data,
    ranks_of,
    trained_cells,
)
from arca.report.style import cell_name, color_for, plt, rank_style, save_figure


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
            label=f"decision oracle, all completions ({oracle:.2f})",
        )
        shown.append(oracle)
    cell_ticks(ax, [f"{r.label} r{int(r.rank)}" for r in sweep.itertuples()])
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
        num = mean_curve(curves, label, rank, "decisive_share")
        den = mean_curve(curves, label, rank, "decisive_share_uniform")
        ratio = (num / den).replace([np.inf, -np.inf], np.nan).rolling(window, min_periods=1).mean().dropna()
        if ratio.empty:
            continue
        ls, _ = rank_style(rank, ranks_of(cells, label))
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
        integer_steps(ax)
    ax.set_xlabel("optimizer step")
    ax.set_title(f"Decisive ratio over training (trailing mean of {window} step{'s' if window > 1 else ''})")
    return shown


def credit_precision(precision: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    sweep = precision[precision["block"] == "sweep"].reset_index(drop=True)
    # the most decisive weight a method can carry: the decision oracle (all weight on the decisive tokens)
    oracle_rows = sweep[sweep["method"] == "decision_oracle"]
    if oracle_rows.empty:  # no such cell: its value on the probe, under the uniform cell's models
        oracle_rows = precision[(precision["block"] == "probe_all") & (precision["method"] == "decision_oracle")]
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
    trajectory = _precision_trajectory(axes[1], curves, trained_cells(curves))
    if not np.isfinite(np.asarray(shown + trajectory, dtype=float)).any():
        for ax in axes:
            ax.clear()
            no_data(ax, "no planted-fork labels in this experiment")
    else:
        for ax, values in ((axes[0], shown), (axes[1], trajectory)):
            _ratio_axis(ax, values + [1.0])
    fig.suptitle("Credit precision: weight on the decisive tokens relative to uniform weights (mean over seeds)")
    legend_right(fig, axes[0])
    handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, loc="best", fontsize=7)
    return save_figure(fig, out, "credit_precision")
