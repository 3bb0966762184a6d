"""Building blocks shared by the figure modules: which trained cells a table holds, per-step means
over seeds, and the axis, tick and legend conventions every figure follows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from arca.report.records import BASE


def trained_cells(df: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(label, method, rank) of the trained cells, in the order the table lists them."""
    df = df[df["label"] != BASE].dropna(subset=["rank"])
    seen = dict.fromkeys((r.label, r.method, int(r.rank)) for r in df.itertuples())
    return list(seen)


def ranks_of(cells, label: str) -> list[int]:
    return sorted(r for lab, _, r in cells if lab == label)


def mean_curve(curves: pd.DataFrame, label: str, rank: int, col: str) -> pd.Series:
    sub = curves[(curves["label"] == label) & (curves["rank"] == rank)]
    return pd.to_numeric(sub[col], errors="coerce").groupby(sub["step"]).mean().sort_index()


def cell_ticks(ax, labels: list[str]) -> None:
    """Cell names under the bars, slanted when they would otherwise run into each other."""
    crowded = len(labels) > 4 or max((len(x) for x in labels), default=0) > 10
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=35 if crowded else 0,
        ha="right" if crowded else "center",
        rotation_mode="anchor" if crowded else "default",
    )


def integer_steps(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


FRACTION_MIN_SPAN = 0.1  # an accuracy or reward axis never spans less (all-equal data included)


def fraction_axis(ax, values) -> None:
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


def legend_right(fig, ax) -> None:
    """Legend outside the axes on the right, so it can never cover data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper")


def no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
