"""The cost table: wall time and peak memory of every job Snakemake benchmarked, per run and per cell.

One ``evaluate`` job scores every seed of a cell; each of its runs is given an equal share of the
job's wall time and the job's peak memory.

Reads the ``benchmark:`` records of ``build_base``, ``mc_values``, ``train`` and ``evaluate`` (paths from
``arca.paths.Paths.benchmark``). Snakemake writes each as a tab-separated file with one line per repeat;
``s`` is the wall time in seconds and ``max_rss`` the peak resident memory in MB, summed over the
job's processes (``NA`` when the job ended before the first sample). A job run by hand, outside
Snakemake, has no record: its cells stay empty rather than failing the report.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from arca.config import BASE, Config, InputError, cell_of, cell_runs, for_run, run_identity
from arca.paths import BENCHMARKED, paths_of

IDENTITY = ["run", "label", "method", "rank", "seed"]
COLUMNS = IDENTITY + [f"{rule}_{what}" for rule in BENCHMARKED for what in ("s", "max_rss_mb")]


def read_benchmark(path: str | Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one job: the mean wall time and the largest peak over its
    repeats; NaN for what was not recorded (no file, or ``NA``)."""
    path = Path(path)
    if not path.is_file():
        return math.nan, math.nan
    df = pd.read_csv(path, sep="\t", na_values=["NA"])
    missing = {"s", "max_rss"} - set(df.columns)
    if missing:
        raise InputError(f"{path}: not a Snakemake benchmark file (no column {', '.join(sorted(missing))})")
    wall = pd.to_numeric(df["s"], errors="coerce").mean()
    rss = pd.to_numeric(df["max_rss"], errors="coerce").max()
    return float(wall), float(rss)


def _costs(row: dict, rule: str, path: str | None, share: int = 1) -> None:
    """The job's seconds (divided among the ``share`` runs one job served) and peak memory."""
    wall, rss = read_benchmark(path) if path else (math.nan, math.nan)
    row[f"{rule}_s"], row[f"{rule}_max_rss_mb"] = wall / share, rss


def cost_table(cfg: Config) -> pd.DataFrame:
    """One row for the base model (its build and evaluation), then one per run (training and
    evaluation), in sweep order; columns ``COLUMNS``."""
    base = run_identity(BASE)
    _costs(base, "build_base", paths_of(cfg).benchmark("build_base"))
    _costs(base, "mc_values", paths_of(cfg).benchmark("mc_values") if cfg.eval.mc_problems > 0 else None)
    _costs(base, "train", None)
    _costs(base, "evaluate", paths_of(cfg).benchmark("evaluate", BASE))
    rows = [base]
    cells = cell_runs(cfg)
    for run in cfg.run_ids():
        row = run_identity(run, for_run(cfg, run).credit.method)
        _costs(row, "build_base", None)
        _costs(row, "mc_values", None)
        _costs(row, "train", paths_of(cfg).benchmark("train", run))
        # one evaluation job per cell: each run gets its share of the job's time
        cell = cell_of(run)
        _costs(row, "evaluate", paths_of(cfg).benchmark("evaluate", cell), len(cells[cell]))
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("rank", "seed"):
        df[col] = df[col].astype("Int64")
    return df


def _fmt(value: float, digits: int) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


def _cells(df: pd.DataFrame, rule: str, how: str) -> list[str]:
    """The seconds and MB columns of one rule: ``how`` of the seconds (mean or sum), largest peak."""
    wall = df[f"{rule}_s"].dropna()
    rss = df[f"{rule}_max_rss_mb"].dropna()
    seconds = math.nan if wall.empty else float(wall.sum() if how == "sum" else wall.mean())
    return [_fmt(seconds, 1), _fmt(float(rss.max()) if len(rss) else math.nan, 0)]


def cost_rows(cfg: Config, df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The Markdown layout: the base model, one line per (label, rank) cell in sweep order with the
    mean seconds and largest peak over its seeds, and a total line (seconds summed over every job)."""
    headers = ["cell", "jobs"] + [f"{rule} {unit}" for rule in BENCHMARKED for unit in ("s", "max RSS MB")]
    groups = [("base model", df[df["run"] == BASE])]
    runs = df[df["run"] != BASE]
    for cell in cfg.sweep.cells:
        for rank in cell.ranks:
            group = runs[(runs["label"] == cell.name) & (runs["rank"] == rank)]
            if len(group):
                groups.append((f"{cell.name} r{rank}", group))
    rows = [
        [name, str(len(group))] + [c for rule in BENCHMARKED for c in _cells(group, rule, "mean")]
        for name, group in groups
    ]
    rows.append(["total", str(len(df))] + [c for rule in BENCHMARKED for c in _cells(df, rule, "sum")])
    return headers, rows


NOTE = (
    "Wall time and peak resident memory of each job, from Snakemake's benchmark records: per cell the mean "
    "seconds and the largest peak over its seeds (one evaluation job serves every seed of a cell: each run "
    "is given its share of that job's seconds); the total line sums the seconds. Empty: not recorded (a job "
    "run outside Snakemake).\n\n"
)
