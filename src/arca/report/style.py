"""One look for every figure: a fixed colour per credit method, font sizes, the Agg backend.

Colours are fixed per method so that ``arca`` is the same colour in every figure and every
paper-scale or laptop-scale run; labels the palette does not know (ablations, controls added
later) get a colour derived from a checksum of the label, which is stable across runs and
processes (Python's ``hash`` is salted per process).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib

# A file-writing step must not need a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from arca.io import atomic_path  # noqa: E402

METHOD_COLORS = {
    "base": "#555555",
    "uniform": "#4d4d4d",
    "surprisal": "#1f77b4",
    "entropy_reduction": "#2ca02c",
    "divergence": "#9467bd",
    "arca": "#d62728",
    "arca_permuted": "#ff7f0e",
}
# Colour-blind-friendly extras (Okabe-Ito without the ones close to the fixed colours above).
_EXTRA_COLORS = ["#e69f00", "#56b4e9", "#009e73", "#cc79a7", "#0072b2", "#d55e00", "#8c564b", "#17becf", "#bcbd22"]
RANK_LINESTYLES = ["-", "--", ":", "-."]
RANK_MARKERS = ["o", "s", "^", "D", "v", "P"]
MIDDLE_BAND_COLOR = "#f2d9a0"

FONT_SIZES = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
}


def apply_style() -> None:
    """Set the shared rcParams (idempotent)."""
    plt.rcParams.update(FONT_SIZES)
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.frameon": False,
            "pdf.fonttype": 42,  # embed TrueType so the PDF text stays editable and searchable
        }
    )


def color_for(label: str, method: str | None = None) -> str:
    """The fixed colour of a label; unknown labels get a stable colour of their own.

    A relabelled cell of a known method (e.g. ``arca_s1``) does not borrow that method's
    colour: it would be indistinguishable from the method's own cell in the same figure.
    """
    if label in METHOD_COLORS:
        return METHOD_COLORS[label]
    return _EXTRA_COLORS[zlib.crc32(label.encode("utf-8")) % len(_EXTRA_COLORS)]


def rank_style(rank: int, ranks: list[int]) -> tuple[str, str]:
    """(linestyle, marker) of a rank by its position among the label's sorted ranks."""
    i = sorted(ranks).index(rank) if rank in ranks else 0
    return RANK_LINESTYLES[i % len(RANK_LINESTYLES)], RANK_MARKERS[i % len(RANK_MARKERS)]


def cell_name(label: str, rank) -> str:
    return f"{label} r{int(rank)}"


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` atomically, close the figure, return the paths."""
    paths = []
    for ext in ("png", "pdf"):
        path = Path(out_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            # The temporary name has no image suffix, so the format is given explicitly.
            fig.savefig(tmp, format=ext, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths
