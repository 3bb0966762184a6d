"""Reference results: check a finished run's tables against numbers kept in the repository.

``python -m arca save-reference`` copies a finished experiment's tables (CSV, and Markdown to
read) and key figures from ``results/<name>/`` into ``results/reference/<name>/``, the folder
the repository keeps under version control, with ``provenance.json`` saying where they came from.
``python -m arca compare-reference`` reads the same CSV tables of a finished run and lists every
number that differs from the reference by more than the tolerance, in
``results/<name>/reference_comparison.md`` and on stdout; it exits with status 1 when any does.

Rows are matched by their identity columns (``KEYS``); a row present on one side only, or a text
cell that differs (a label, a config hash), is always a difference. Numbers match when
``|ours - ref| <= atol + rtol * |ref|``; two empty cells match. Timing columns are not compared.
The default tolerance and why it is what it is: README, "Checking a reproduction".
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from arca import grid
from arca.config import Config
from arca.io import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

# table -> the columns that identify a row in it
KEYS = {
    "performance": ("label", "rank"),
    "concentration": ("label", "rank"),
    "paired": ("label", "rank", "reference"),
    "sample_efficiency": ("label", "rank", "reference"),
    "credit_precision": ("block", "label", "rank"),
    "runs": ("run",),
    "learning_curves": ("run", "step"),
}
MARKDOWN = ("performance", "concentration", "paired", "sample_efficiency", "credit_precision", "paper_comparison")
FIGURES = ("learning_curves", "gini_bars", "accuracy")
# wall-clock measurements: they differ between any two runs
IGNORED_COLUMNS = frozenset({"step_seconds", "gen_seconds", "update_seconds"})
# Defaults of --atol / --rtol, from measurements on the smoke config (README "Checking a
# reproduction"): reruns, resumed runs and 1 or 2 threads gave byte-identical tables; torch's
# AVX-512 against its AVX2 kernels moved table numbers by at most 2.2e-6 relative (2e-5 on a ratio
# near 9) and 2e-7 absolute elsewhere. The defaults pass that float-level noise with a margin of
# about 5 and flag everything larger; CSV cells carry 8 significant digits.
DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-5


def reference_dir(cfg: Config, root: str | Path = Path("results") / "reference") -> Path:
    """``results/reference/<name>/`` relative to the working directory (the repository root)."""
    return Path(root) / cfg.name


# ----------------------------------------------------------------------------- save
def _provenance(cfg: Config) -> dict:
    import torch

    from arca import __version__

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "config": cfg.name,
        "arca_version": __version__,
        "torch": torch.__version__,
        "cpu": cpu,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "train_threads": cfg.train.threads,
        "pretrain_threads": cfg.model.pretrain.threads,
        "run_hashes": {run: grid.run_hash(cfg, run) for run in cfg.run_ids()},
    }


def save_reference(cfg: Config, dest: Path) -> list[str]:
    """Copy the finished tables and key figures of ``cfg`` into ``dest`` (replaced as a whole)."""
    tables, figures = cfg.out_dir / "tables", cfg.out_dir / "figures"
    files = [tables / f"{t}.csv" for t in KEYS] + [tables / f"{t}.md" for t in MARKDOWN]
    files += [figures / f"{f}.png" for f in FIGURES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"save-reference: the experiment is not finished, missing {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''} (run snakemake for config '{cfg.name}' first)"
        )
    with atomic_path(dest) as tmp:
        tmp.mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, tmp / f.name)
        write_json(tmp / "provenance.json", _provenance(cfg))
    return sorted(f.name for f in files) + ["provenance.json"]


# ----------------------------------------------------------------------------- compare
@dataclass
class Difference:
    table: str
    row: str
    column: str
    reference: str
    ours: str
    delta: float  # |ours - reference| for numbers, inf for text or missing rows


def _read(path: Path) -> pd.DataFrame:
    from arca.report.tables import read_table

    if not path.is_file():
        raise FileNotFoundError(f"compare-reference: missing table {path}")
    return read_table(path)


def _row_name(table: str, key: tuple) -> str:
    return ", ".join(f"{k}={'' if pd.isna(v) else v}" for k, v in zip(KEYS[table], key))


def _indexed(df: pd.DataFrame, table: str, path: Path) -> pd.DataFrame:
    keys = list(KEYS[table])
    absent = [k for k in keys if k not in df.columns]
    if absent:
        raise ValueError(f"{path}: missing identity columns {absent}")
    df = df.copy()
    for k in keys:  # 4 and 4.0 must be the same rank; NaN ranks (the base model) stay NaN
        df[k] = df[k].map(
            lambda v: "" if pd.isna(v) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
        )
    if df.duplicated(keys).any():
        raise ValueError(f"{path}: rows repeat the identity {keys}")
    return df.set_index(keys)


def _fmt(v) -> str:
    return "" if pd.isna(v) else (f"{v:.8g}" if isinstance(v, float) else str(v))


def compare_table(
    table: str,
    ref: pd.DataFrame,
    ours: pd.DataFrame,
    atol: float,
    rtol: float,
    ref_path: Path = Path("reference"),
    our_path: Path = Path("ours"),
) -> list[Difference]:
    """Every cell of ``ours`` that differs from ``ref`` beyond the tolerance, plus missing rows and columns."""
    r, o = _indexed(ref, table, ref_path), _indexed(ours, table, our_path)
    diffs: list[Difference] = []
    for key in r.index.difference(o.index, sort=False):
        diffs.append(
            Difference(
                table,
                _row_name(table, key if isinstance(key, tuple) else (key,)),
                "(row)",
                "present",
                "missing",
                math.inf,
            )
        )
    for key in o.index.difference(r.index, sort=False):
        diffs.append(
            Difference(
                table,
                _row_name(table, key if isinstance(key, tuple) else (key,)),
                "(row)",
                "missing",
                "present",
                math.inf,
            )
        )
    columns = [c for c in r.columns if c not in IGNORED_COLUMNS]
    for col in columns:
        if col not in o.columns:
            diffs.append(Difference(table, "(all rows)", col, "present", "missing", math.inf))
    for key in r.index.intersection(o.index, sort=False):
        name = _row_name(table, key if isinstance(key, tuple) else (key,))
        for col in columns:
            if col not in o.columns:
                continue
            a, b = r.at[key, col], o.at[key, col]
            if pd.isna(a) and pd.isna(b):
                continue
            num_a, num_b = pd.api.types.is_number(a), pd.api.types.is_number(b)
            if num_a and num_b and not isinstance(a, bool) and not isinstance(b, bool):
                a, b = float(a), float(b)
                if math.isnan(a) or math.isnan(b):
                    diffs.append(Difference(table, name, col, _fmt(a), _fmt(b), math.inf))
                elif abs(b - a) > atol + rtol * abs(a):
                    diffs.append(Difference(table, name, col, _fmt(a), _fmt(b), abs(b - a)))
            elif str(a) != str(b):
                diffs.append(Difference(table, name, col, _fmt(a), _fmt(b), math.inf))
    return diffs


def compare_reference(
    cfg: Config, ref_dir: Path, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL
) -> list[Difference]:
    """All differences between ``cfg``'s finished tables and the reference folder."""
    if not ref_dir.is_dir():
        raise FileNotFoundError(
            f"compare-reference: no reference folder {ref_dir} (save one with python -m arca save-reference)"
        )
    diffs: list[Difference] = []
    for table in KEYS:
        ref_path, our_path = ref_dir / f"{table}.csv", cfg.out_dir / "tables" / f"{table}.csv"
        diffs += compare_table(table, _read(ref_path), _read(our_path), atol, rtol, ref_path, our_path)
    return diffs


def comparison_markdown(
    cfg: Config, ref_dir: Path, diffs: list[Difference], atol: float, rtol: float, limit: int = 200
) -> str:
    from arca.report.render import markdown_table

    prov_path = ref_dir / "provenance.json"
    prov = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {}
    head = [
        f"# `{cfg.out_dir / 'tables'}` against `{ref_dir}`\n",
        f"Tolerance: |ours - reference| <= {atol:g} + {rtol:g} x |reference|; timing columns not compared. "
        f"Reference made with arca {prov.get('arca_version', '?')}, torch {prov.get('torch', '?')} on "
        f"{prov.get('cpu', '?')} (kernels {prov.get('torch_cpu_capability', '?')}).\n",
    ]
    if not diffs:
        return "\n".join(head + [f"Every number of the {len(KEYS)} tables matches the reference.\n"])
    by_table: dict[str, int] = {}
    for d in diffs:
        by_table[d.table] = by_table.get(d.table, 0) + 1
    rows = [
        [d.table, d.row, d.column, d.reference, d.ours, "-" if math.isinf(d.delta) else f"{d.delta:.3g}"]
        for d in sorted(diffs, key=lambda d: (-d.delta, d.table, d.row, d.column))[:limit]
    ]
    return "\n".join(
        head
        + [
            f"**{len(diffs)} numbers differ** ({', '.join(f'{t}: {n}' for t, n in by_table.items())}); "
            f"largest first{f', the first {limit} shown' if len(diffs) > limit else ''}.\n",
            markdown_table(["table", "row", "column", "reference", "ours", "abs. difference"], rows),
        ]
    )


class ReferenceMismatch(Exception):
    """A finished run's tables differ from the reference beyond the tolerance."""

    exit_status = 1  # what `python -m arca compare-reference` exits with


# ----------------------------------------------------------------------------- CLI steps
def save_reference_main(cfg: Config, args) -> None:
    dest = Path(args.reference) if args.reference else reference_dir(cfg)
    names = save_reference(cfg, dest)
    log.info("wrote %d files to %s", len(names), dest)


def compare_reference_main(cfg: Config, args) -> None:
    ref = Path(args.reference) if args.reference else reference_dir(cfg)
    diffs = compare_reference(cfg, ref, args.atol, args.rtol)
    text = comparison_markdown(cfg, ref, diffs, args.atol, args.rtol)
    out = cfg.out_dir / "reference_comparison.md"
    write_text(out, text)
    print(text, end="")
    log.info("wrote %s", out)
    if diffs:
        raise ReferenceMismatch(f"{len(diffs)} numbers differ from {ref} beyond the tolerance (see {out})")
