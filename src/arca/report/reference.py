"""Reference results: check a finished run's tables against the tables kept in the repository.

``python -m arca save-reference`` copies a finished experiment's tables (CSV, and Markdown to
read) and key figures from ``results/<name>/`` into ``results/reference/<name>/``, the folder
the repository keeps under version control, with ``provenance.json`` saying where they came from.

``python -m arca compare-reference`` gives a verdict first. Numbers legitimately differ between
machines and seeds (docs/reproducibility.md), so what it checks is whether the
reference's *claims* hold in the user's tables. The claims are read off the reference's own
tables, none is written here:

- every paired difference (``paired.csv``'s ``diff``, and each ``<x>_diff`` of
  ``sample_efficiency.csv``: a cell minus the cell of its ``reference`` column, with ``_lo`` and
  ``_hi`` interval bounds). Where the reference's interval excludes 0 the claim is its sign; the
  user's interval then gives *reproduced* (excludes 0, same sign), *not reproduced* (excludes 0,
  opposite sign) or *inconclusive* (contains 0). Where the reference's interval contains 0 the
  claim is "no detectable difference": reproduced when the user's interval contains 0 too;
- the gain of each ``uniform`` cell over the base model (greedy accuracy). No table holds it, so
  it is the mean of the per-seed gains in ``runs.csv``, with ``stats.bootstrap_mean_ci`` over
  seeds (the tables keep no per-problem scores); verdicts as for a difference;
- the null control (label ``null``) staying flat: its greedy accuracy within ``NULL_FLAT_TOL`` of
  the base's; reproduced when the user's is too. A reference whose null moved further makes no
  claim about it (how far a null drifts is seed noise, not a finding);
- Table 3's pattern: ARCA's Gini across its ranks (``concentration.csv``), where the reference
  shows a clear order (adjacent intervals disjoint, all one way). Reproduced when the user's is
  clearly the same order, not reproduced when some adjacent pair is clearly the other way round,
  inconclusive otherwise. Where the reference shows no clear order, no claim, only a note.

A second table says, for each headline number (a cell's greedy accuracy and pass@k in
``performance.csv``), whether the user's value lies within the spread (min..max) of the
reference's per-seed runs in ``runs.csv``; it informs, it is not a claim. Both tables go to
``results/<name>/reference_claims.md`` and stdout, claims first, with one summary line ("7 of 9
claims reproduced, 2 inconclusive"); the step exits with status 1 unless every claim is
reproduced.

The number-by-number comparison is there too: ``--exact`` prints it and exits with
status 1 when any number differs; without ``--exact`` it is still written, to
``results/<name>/reference_comparison.md``, and counted in one line. Rows are matched by their
identity columns (``KEYS``); a row present on one side only, or a text cell that differs (a
label, a config hash), is always a difference. Numbers match when
``|ours - ref| <= atol + rtol * |ref|``; two empty cells match. Timing columns are not compared.
The default tolerance and why it is what it is: docs/reproducibility.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arca import PORTABLE_KERNELS
from arca.config import Config, InputError, MissingInputError, run_hash
from arca.io import atomic_path, write_json, write_text
from arca.paths import paths_of, table_file
from arca.stats import Estimate, bootstrap_mean_ci

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
    "outcomes": ("label", "rank"),
    "mc_agreement": ("label", "rank"),
    "tuning": ("label", "rank"),
}
MARKDOWN = (
    "performance",
    "concentration",
    "paired",
    "sample_efficiency",
    "credit_precision",
    "paper_comparison",
    "outcomes",
    "mc_agreement",
    "tuning",
)
FIGURES = ("learning_curves", "gini_bars", "accuracy", "performance_profile")
# wall-clock measurements: they differ between any two runs
IGNORED_COLUMNS = frozenset({"step_seconds", "gen_seconds", "update_seconds"})
# Defaults of --atol / --rtol, from measurements on the smoke config (docs/reproducibility.md):
# reruns, resumed runs and 1 or 2 threads gave byte-identical tables; torch's
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
        # what `import arca` pinned for every step of the DAG (arca.PORTABLE_KERNELS), as this process saw it
        "kernels": {key: os.environ.get(key) for key in PORTABLE_KERNELS},
        "train_threads": cfg.train.threads,
        "pretrain_threads": cfg.model.pretrain.threads,
        "run_hashes": {run: run_hash(cfg, run) for run in cfg.run_ids()},
    }


def save_reference(cfg: Config, dest: Path) -> list[str]:
    """Copy the finished tables and key figures of ``cfg`` into ``dest`` (replaced as a whole)."""
    tables, figures = paths_of(cfg).tables, paths_of(cfg).figures
    files = [tables / table_file(t, "csv") for t in KEYS] + [tables / table_file(t, "md") for t in MARKDOWN]
    files += [figures / f"{f}.png" for f in FIGURES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MissingInputError(
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
        raise MissingInputError(f"compare-reference: missing table {path}")
    return read_table(path)


def _row_name(table: str, key: tuple) -> str:
    return ", ".join(f"{k}={'' if pd.isna(v) else v}" for k, v in zip(KEYS[table], key))


def _key_text(v) -> str:
    """An identity cell as text: 4 and 4.0 must be the same rank; an empty rank (the base model) is ''."""
    return "" if pd.isna(v) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))


def _indexed(df: pd.DataFrame, table: str, path: Path) -> pd.DataFrame:
    keys = list(KEYS[table])
    absent = [k for k in keys if k not in df.columns]
    if absent:
        raise InputError(f"{path}: missing identity columns {absent}")
    df = df.copy()
    for k in keys:
        df[k] = df[k].map(_key_text)
    if df.duplicated(keys).any():
        raise InputError(f"{path}: rows repeat the identity {keys}")
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
        raise MissingInputError(
            f"compare-reference: no reference folder {ref_dir} (save one with python -m arca save-reference)"
        )
    diffs: list[Difference] = []
    for table in KEYS:
        ref_path, our_path = ref_dir / table_file(table, "csv"), paths_of(cfg).table(table, "csv")
        diffs += compare_table(table, _read(ref_path), _read(our_path), atol, rtol, ref_path, our_path)
    return diffs


def comparison_markdown(
    cfg: Config, ref_dir: Path, diffs: list[Difference], atol: float, rtol: float, limit: int = 200
) -> str:
    from arca.report.render import markdown_table

    prov_path = ref_dir / "provenance.json"
    prov = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {}
    head = [
        f"# `{paths_of(cfg).tables}` against `{ref_dir}`\n",
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
    """A finished run's tables differ from the reference beyond the tolerance (``--exact``)."""

    exit_status = 1  # what `python -m arca compare-reference --exact` exits with


# ----------------------------------------------------------------------------- verdict
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
# the tables the verdict reads, in both folders
VERDICT_TABLES = ("performance", "runs", "paired", "sample_efficiency", "concentration")
# Tables of paired differences (a cell minus the cell its row names in `reference`): every column
# `diff` or `<x>_diff` with `<column>_lo` and `<column>_hi` beside it gives one claim per row.
DIFFERENCE_TABLES = ("paired", "sample_efficiency")
# what each difference column measures, for the claim's wording (any other goes by its name)
# The differences the README's findings rest on, and so the claims: final greedy accuracy (paired)
# and the area under the greedy learning curve (sample_efficiency). The other difference columns
# (sampled AUC, the curve's last step, steps to threshold) restate these on fewer problems or a
# coarse grid; as claims they would only add chances to fail by chance.
DIFFERENCE_NAMES = {
    "diff": "greedy accuracy",
    "auc_greedy_diff": "area under the greedy learning curve",
}
BASE_LABEL, UNIFORM_LABEL, NULL_LABEL = "base", "uniform", "null"
# The null control (rewards shuffled within each step) carries no information: its expected
# update is zero. Its accuracy still drifts: with Adam each step has about the lr's size whatever
# the gradient, and a random walk of 50 such steps flips some of the base model's 70/30 decisions,
# more often towards the correct minority branch (docs/protocol.md). Measured on the default (5
# seeds): +0.060 on average, four seeds within +0.035 and one at +0.195. 0.10 passes that floor
# and is still about a sixth of uniform's gain there (+0.575): a null that learns from its
# rewards, or one that breaks the model, falls outside it.
NULL_FLAT_TOL = 0.10
# Table 3's pattern: how ARCA's weight concentration moves with the adapter's rank, in the
# quantity the README orders the regimes by (the Gini of the token weights)
ORDER_LABEL, ORDER_QUANTITY = "arca", "gini"
# each cell's headline numbers, checked against the reference's seed spread
HEADLINE = ("greedy", "pass_at_k")

_SIGN_WORDS = {1: "positive", -1: "negative", 0: "no detectable difference"}
_ORDER_SYMBOLS = {1: "<", -1: ">", 0: "~"}


@dataclass(frozen=True)
class Claim:
    """One thing the reference's tables show, and whether the user's tables show it too."""

    claim: str  # in words, e.g. "arca r2 minus uniform_r8, greedy accuracy: negative"
    table: str  # the table it is read from
    reference: str  # the reference's number(s)
    ours: str  # the user's, "missing" when their tables lack the row
    verdict: str  # REPRODUCED, NOT_REPRODUCED or INCONCLUSIVE


@dataclass(frozen=True)
class SpreadCheck:
    """One headline number of the user's against the min..max of the reference's per-seed runs."""

    cell: str
    quantity: str
    lo: float
    hi: float
    ours: float  # NaN when the user's tables lack the cell

    @property
    def within(self) -> bool:
        return bool(self.lo <= self.ours <= self.hi)


@dataclass(frozen=True)
class Verdict:
    claims: list[Claim]
    notes: list[str]  # what was looked for in the reference and gave no claim
    spread: list[SpreadCheck]

    @property
    def reproduced(self) -> bool:
        return all(c.verdict == REPRODUCED for c in self.claims)

    def summary(self) -> str:
        """``7 of 9 claims reproduced, 2 inconclusive``."""
        n = {v: sum(c.verdict == v for c in self.claims) for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)}
        rest = "".join(f", {n[v]} {v}" for v in (NOT_REPRODUCED, INCONCLUSIVE) if n[v])
        return f"{n[REPRODUCED]} of {len(self.claims)} claims reproduced{rest}"


class ClaimsNotReproduced(Exception):
    """Some claim of the reference is not reproduced, or inconclusive, in a finished run's tables."""

    exit_status = 1  # what `python -m arca compare-reference` exits with


def _tables(folder: Path, required: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The ``VERDICT_TABLES`` present in ``folder``; a missing ``required`` one is an error."""
    out = {}
    for table in VERDICT_TABLES:
        path = folder / table_file(table, "csv")
        if path.is_file():
            out[table] = _read(path)
        elif table in required:
            raise MissingInputError(f"compare-reference: missing table {path}")
    return out


def _num(row: pd.Series, column: str) -> float:
    value = pd.to_numeric(row.get(column, math.nan), errors="coerce")
    return math.nan if pd.isna(value) else float(value)


def _estimate(row: pd.Series, column: str) -> Estimate:
    return Estimate(_num(row, column), _num(row, f"{column}_lo"), _num(row, f"{column}_hi"))


def _cell(label: str, rank: str) -> str:
    return f"{label} r{rank}" if rank else label


def _rank_order(rank: str) -> tuple[float, str]:
    try:
        return float(rank), rank
    except ValueError:
        return math.inf, rank


def _sign(est: Estimate) -> int | None:
    """+1 / -1 when the interval lies above / below 0, 0 when it contains 0, None without one."""
    if not (math.isfinite(est.lo) and math.isfinite(est.hi)):
        return None
    return 1 if est.lo > 0 else -1 if est.hi < 0 else 0


def _difference_verdict(ref_sign: int, ours: Estimate | None) -> str:
    """The user's interval against the reference's: same side of 0, other side, or containing 0."""
    if ours is None:
        return NOT_REPRODUCED
    sign = _sign(ours)
    if sign is None:
        return INCONCLUSIVE
    if ref_sign == 0:  # "no detectable difference"
        return REPRODUCED if sign == 0 else NOT_REPRODUCED
    return REPRODUCED if sign == ref_sign else INCONCLUSIVE if sign == 0 else NOT_REPRODUCED


def _difference_claims(table: str, ref: pd.DataFrame, ours: pd.DataFrame, ref_dir: Path, our_dir: Path) -> list[Claim]:
    columns = [
        c for c in ref.columns if c in DIFFERENCE_NAMES and f"{c}_lo" in ref.columns and f"{c}_hi" in ref.columns
    ]
    r = _indexed(ref, table, ref_dir / table_file(table, "csv"))
    o = _indexed(ours, table, our_dir / table_file(table, "csv"))
    claims = []
    for key, row in r.iterrows():
        label, rank, other = key
        for column in columns:
            est = _estimate(row, column)
            ref_sign = _sign(est)
            if ref_sign is None or not math.isfinite(est.mean):
                continue  # the reference row itself (e.g. uniform against uniform), or no interval
            mine = _estimate(o.loc[key], column) if key in o.index else None
            claims.append(
                Claim(
                    f"{_cell(label, rank)} minus {other}, {DIFFERENCE_NAMES[column]}: {_SIGN_WORDS[ref_sign]}",
                    f"{table}.csv",
                    est.fmt(3),
                    "missing" if mine is None else mine.fmt(3),
                    _difference_verdict(ref_sign, mine),
                )
            )
    return claims


def _with_keys(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for k in ("label", "rank"):
        df[k] = df[k].map(_key_text) if k in df.columns else ""
    return df


def _uniform_gains(runs: pd.DataFrame) -> dict[str, Estimate]:
    """rank -> uniform's greedy accuracy minus the base's, mean over seeds with a bootstrap over seeds."""
    runs = _with_keys(runs)
    base = pd.to_numeric(runs.loc[runs["label"] == BASE_LABEL, "greedy"], errors="coerce").dropna()
    if base.empty:
        return {}
    gains = {}
    uniform = runs[runs["label"] == UNIFORM_LABEL]
    for rank in sorted(uniform["rank"].unique(), key=_rank_order):
        seeds = pd.to_numeric(uniform.loc[uniform["rank"] == rank, "greedy"], errors="coerce").dropna()
        if not seeds.empty:
            per_seed = seeds.to_numpy(dtype=np.float64) - float(base.iloc[0])
            gains[rank] = bootstrap_mean_ci(per_seed[:, None])  # [S, 1]: resample seeds only
    return gains


def _gain_claims(ref_runs: pd.DataFrame, our_runs: pd.DataFrame) -> list[Claim]:
    ours = _uniform_gains(our_runs)
    claims = []
    for rank, est in _uniform_gains(ref_runs).items():
        ref_sign = _sign(est)
        mine = ours.get(rank)
        claims.append(
            Claim(
                f"{_cell(UNIFORM_LABEL, rank)} minus {BASE_LABEL}, greedy accuracy (mean of the seeds' gains): "
                f"{_SIGN_WORDS[ref_sign]}",
                "runs.csv",
                est.fmt(3),
                "missing" if mine is None else mine.fmt(3),
                _difference_verdict(ref_sign, mine),
            )
        )
    return claims


def _null_claims(ref_perf: pd.DataFrame, our_perf: pd.DataFrame, ref_dir: Path, our_dir: Path) -> list[Claim]:
    r = _indexed(ref_perf, "performance", ref_dir / table_file("performance", "csv"))
    o = _indexed(our_perf, "performance", our_dir / table_file("performance", "csv"))

    def base_greedy(df: pd.DataFrame) -> float:
        keys = [k for k in df.index if k[0] == BASE_LABEL]
        return _num(df.loc[keys[0]], "greedy") if keys else math.nan

    ref_base, our_base = base_greedy(r), base_greedy(o)
    claims = []
    for key in r.index:
        if key[0] != NULL_LABEL:
            continue
        moved = _num(r.loc[key], "greedy") - ref_base
        if not math.isfinite(moved):
            continue
        if abs(moved) > NULL_FLAT_TOL:
            continue  # the reference's own null drifted: nothing to claim
        ours = _num(o.loc[key], "greedy") - our_base if key in o.index else math.nan
        verdict = REPRODUCED if math.isfinite(ours) and abs(ours) <= NULL_FLAT_TOL else NOT_REPRODUCED
        claims.append(
            Claim(
                f"{_cell(*key)} minus {BASE_LABEL}, greedy accuracy: flat (within ±{NULL_FLAT_TOL:g})",
                "performance.csv",
                f"{moved:+.3f}",
                f"{ours:+.3f}" if math.isfinite(ours) else "missing",
                verdict,
            )
        )
    return claims


def _interval_order(a: Estimate, b: Estimate) -> int:
    """+1 when b lies clearly above a (disjoint intervals), -1 clearly below, 0 when they overlap.

    Without an interval a value stands for itself (one seed: the interval is the point anyway)."""
    a_lo, a_hi = (a.lo, a.hi) if math.isfinite(a.lo) and math.isfinite(a.hi) else (a.mean, a.mean)
    b_lo, b_hi = (b.lo, b.hi) if math.isfinite(b.lo) and math.isfinite(b.hi) else (b.mean, b.mean)
    return 1 if a_hi < b_lo else -1 if a_lo > b_hi else 0


def _ordering_claims(
    ref_conc: pd.DataFrame | None, our_conc: pd.DataFrame | None, ref_dir: Path, our_dir: Path
) -> tuple[list[Claim], list[str]]:
    q = ORDER_QUANTITY
    if ref_conc is None or q not in ref_conc.columns:
        return [], []
    r = _indexed(ref_conc, "concentration", ref_dir / table_file("concentration", "csv"))
    ranks = sorted((k[1] for k in r.index if k[0] == ORDER_LABEL), key=_rank_order)
    if len(ranks) < 2:
        return [], []
    ests = [_estimate(r.loc[(ORDER_LABEL, k)], q) for k in ranks]
    steps = [_interval_order(a, b) for a, b in zip(ests, ests[1:])]

    def shown(values: list[Estimate], order: list[int]) -> str:
        text = f"r{ranks[0]} {values[0].mean:.3f}"
        for rank, est, step in zip(ranks[1:], values[1:], order):
            text += f" {_ORDER_SYMBOLS[step]} r{rank} {est.mean:.3f}"
        return text

    if steps[0] == 0 or len(set(steps)) > 1:
        by_rank = ", ".join(f"r{k} {e.fmt(3)}" for k, e in zip(ranks, ests))
        return [], [
            f"No ordering claim from concentration.csv: {ORDER_LABEL}'s {q} by rank ({by_rank}) has no clear "
            "order in the reference (adjacent intervals overlap, or the order turns)."
        ]
    direction = steps[0]
    chain = f" {_ORDER_SYMBOLS[direction]} ".join(f"r{k}" for k in ranks)
    claim = f"{ORDER_LABEL}'s {q} {'rises' if direction > 0 else 'falls'} with rank: {chain}"
    o = None if our_conc is None else _indexed(our_conc, "concentration", our_dir / table_file("concentration", "csv"))
    missing = [k for k in ranks if o is None or (ORDER_LABEL, k) not in o.index or q not in o.columns]
    if missing:
        ours, verdict = "missing " + ", ".join(f"r{k}" for k in missing), NOT_REPRODUCED
    else:
        mine = [_estimate(o.loc[(ORDER_LABEL, k)], q) for k in ranks]
        our_steps = [_interval_order(a, b) for a, b in zip(mine, mine[1:])]
        ours = shown(mine, our_steps)
        if all(s == direction for s in our_steps):
            verdict = REPRODUCED
        elif any(s == -direction for s in our_steps):
            verdict = NOT_REPRODUCED
        else:
            verdict = INCONCLUSIVE
    return [Claim(claim, "concentration.csv", shown(ests, steps), ours, verdict)], []


def _spread_checks(
    ref_perf: pd.DataFrame, ref_runs: pd.DataFrame, our_perf: pd.DataFrame, our_dir: Path
) -> list[SpreadCheck]:
    cells = _with_keys(ref_perf)[["label", "rank"]].drop_duplicates()
    runs = _with_keys(ref_runs)
    o = _indexed(our_perf, "performance", our_dir / table_file("performance", "csv"))
    checks = []
    for label, rank in cells.itertuples(index=False):
        seeds = runs[(runs["label"] == label) & (runs["rank"] == rank)]
        for q in HEADLINE:
            if q not in seeds.columns:
                continue
            values = pd.to_numeric(seeds[q], errors="coerce").dropna()
            if values.empty:
                continue
            ours = _num(o.loc[(label, rank)], q) if (label, rank) in o.index else math.nan
            checks.append(SpreadCheck(_cell(label, rank), q, float(values.min()), float(values.max()), ours))
    return checks


def reference_verdict(ref_dir: Path, our_dir: Path) -> Verdict:
    """The claims of the reference folder's tables checked on the tables in ``our_dir``, and the
    headline numbers of ``our_dir`` against the reference's seed spread."""
    if not ref_dir.is_dir():
        raise MissingInputError(
            f"compare-reference: no reference folder {ref_dir} (save one with python -m arca save-reference)"
        )
    ref = _tables(ref_dir, required=("performance", "runs"))
    ours = _tables(our_dir, required=tuple(ref))
    claims = _gain_claims(ref["runs"], ours["runs"])
    claims += _null_claims(ref["performance"], ours["performance"], ref_dir, our_dir)
    for table in DIFFERENCE_TABLES:
        if table in ref:
            claims += _difference_claims(table, ref[table], ours[table], ref_dir, our_dir)
    order, notes = _ordering_claims(ref.get("concentration"), ours.get("concentration"), ref_dir, our_dir)
    spread = _spread_checks(ref["performance"], ref["runs"], ours["performance"], our_dir)
    return Verdict(claims + order, notes, spread)


def verdict_markdown(ref_dir: Path, our_dir: Path, verdict: Verdict, exact: str = "") -> str:
    """The claim table (first), notes, the seed-spread table, and ``exact``: a line on the
    number-by-number comparison."""
    from arca.report.render import markdown_table

    parts = [
        f"# `{our_dir}` against `{ref_dir}`\n",
        f"**Verdict: {verdict.summary()}.**\n",
        "Each claim is read off the reference's own tables; an interval that excludes 0 claims its sign, "
        "one that contains 0 claims no detectable difference. Verdict from our interval: reproduced (the "
        "same), not reproduced (excludes 0 with the other sign, or excludes 0 where the reference found "
        "no difference), inconclusive (contains 0 where the reference found a sign).\n",
    ]
    if verdict.claims:
        rows = [[str(i), c.claim, c.table, c.reference, c.ours, c.verdict] for i, c in enumerate(verdict.claims, 1)]
        parts.append(markdown_table(["#", "claim (the reference's)", "from", "reference", "ours", "verdict"], rows))
    else:
        parts.append("The reference's tables make no claim.\n")
    parts += [f"{note}\n" for note in verdict.notes]
    n_within = sum(s.within for s in verdict.spread)
    parts += [
        "## Headline numbers within the reference's seed spread\n",
        "Each cell's greedy accuracy and pass@k against the lowest and highest of the reference's "
        "per-seed runs (`runs.csv`), not widened; for reading, not a claim.\n",
        markdown_table(
            ["cell", "quantity", "reference seeds (min..max)", "ours", "within reference seed spread"],
            [
                [
                    s.cell,
                    s.quantity,
                    f"{s.lo:.3f}..{s.hi:.3f}",
                    f"{s.ours:.3f}" if math.isfinite(s.ours) else "missing",
                    "yes" if s.within else "no",
                ]
                for s in verdict.spread
            ],
        ),
        f"{n_within} of {len(verdict.spread)} within.\n",
    ]
    if exact:
        parts.append(exact)
    return "\n".join(parts)


# ----------------------------------------------------------------------------- CLI steps
def save_reference_main(cfg: Config, args) -> None:
    dest = Path(args.reference) if args.reference else reference_dir(cfg)
    names = save_reference(cfg, dest)
    log.info("wrote %d files to %s", len(names), dest)


def compare_reference_main(cfg: Config, args) -> None:
    """The verdict (exit status 1 unless every claim is reproduced); with ``--exact`` instead the
    number-by-number list (exit status 1 when any number differs)."""
    ref = Path(args.reference) if args.reference else reference_dir(cfg)
    out = paths_of(cfg).reference_comparison
    if getattr(args, "exact", False):
        diffs = compare_reference(cfg, ref, args.atol, args.rtol)
        text = comparison_markdown(cfg, ref, diffs, args.atol, args.rtol)
        write_text(out, text)
        print(text, end="")
        log.info("wrote %s", out)
        if diffs:
            raise ReferenceMismatch(f"{len(diffs)} numbers differ from {ref} beyond the tolerance (see {out})")
        return

    verdict = reference_verdict(ref, paths_of(cfg).tables)
    tolerance = f"|ours - reference| <= {args.atol:g} + {args.rtol:g} x |reference|"
    try:  # the number-by-number list is still written, for reading; it does not decide the status
        diffs = compare_reference(cfg, ref, args.atol, args.rtol)
    except FileNotFoundError as e:
        exact = f"Number by number: not compared ({e}).\n"
    else:
        write_text(out, comparison_markdown(cfg, ref, diffs, args.atol, args.rtol))
        exact = f"Number by number ({tolerance}): " + (
            f"{len(diffs)} numbers differ, listed in `{out}` (`--exact` prints them and fails on them).\n"
            if diffs
            else f"every number of the {len(KEYS)} tables matches (`{out}`).\n"
        )
    text = verdict_markdown(ref, paths_of(cfg).tables, verdict, exact)
    claims_out = paths_of(cfg).reference_claims
    write_text(claims_out, text)
    print(text, end="")
    log.info("wrote %s", claims_out)
    if not verdict.reproduced:
        raise ClaimsNotReproduced(f"{verdict.summary()} (see {claims_out})")
