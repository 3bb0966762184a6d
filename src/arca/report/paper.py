"""The paper's reported numbers beside ours (``paper_comparison.md``) and its claims, checked."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from arca.report.records import BASE, REFERENCE_METHOD
from arca.report.render import (
    est,
    fmt_rank,
    markdown_table,
    paired_rows,
    performance_rows,
)

log = logging.getLogger(__name__)

# Concentration regimes of docs/method.md: the "middle regime" band and the spurious-sparsity bar.
MIDDLE_BAND = (0.25, 0.60)
CONCENTRATED_GINI = 0.60
# Claim (iii) accepts a greedy-accuracy deficit smaller than this when the CI excludes zero.
COMPETITIVE_MARGIN = 0.05
OUTPUT_BASELINES = ("surprisal", "entropy_reduction", "divergence")

# REFERENCE DATA: the numbers the paper reports (docs/method.md, Tables 2 and 3; first 200 MATH test
# problems, 100 steps, one seed). They are not computed here; they are compared against.
PAPER_REPORTED = {
    # (method, rank): greedy acc, pass@4 (T=1, top-p 0.95), avg train reward, Gini, EffN/T
    ("uniform", 64): dict(greedy=0.620, pass_at_k=0.675, train_reward=0.362, gini=0.000, eff_ratio=1.000),
    ("surprisal", 64): dict(greedy=0.520, pass_at_k=0.650, train_reward=0.326, gini=0.941, eff_ratio=0.052),
    ("entropy_reduction", 64): dict(greedy=0.600, pass_at_k=0.700, train_reward=0.367, gini=0.920, eff_ratio=0.073),
    ("divergence", 64): dict(greedy=0.565, pass_at_k=0.670, train_reward=0.351, gini=0.939, eff_ratio=0.055),
    ("arca", 4): dict(greedy=0.525, pass_at_k=0.640, train_reward=0.327, gini=0.353, eff_ratio=0.467),
    ("arca", 16): dict(greedy=0.510, pass_at_k=0.655, train_reward=0.336, gini=0.388, eff_ratio=0.460),
    ("arca", 64): dict(greedy=0.590, pass_at_k=0.680, train_reward=0.353, gini=0.490, eff_ratio=0.334),
}
PAPER_K = 4


# ----------------------------------------------------------------------------- paper comparison
def match_paper_ranks(our_ranks: list[int], paper_ranks: list[int]) -> dict[int, int]:
    """paper rank -> our rank, matching sorted positions from the top (largest to largest).

    The paper ran baselines at r=64 and ARCA at r=4/16/64; a smaller sweep (e.g. 2/4/8) maps
    position by position, and a sweep with fewer ranks keeps the paper's largest ones.
    """
    ours, paper = sorted(our_ranks), sorted(paper_ranks)
    return {p: o for p, o in zip(reversed(paper), reversed(ours))}


def _lookup(df: pd.DataFrame, label: str, rank: int) -> pd.Series | None:
    hit = df[(df["label"] == label) & (df["rank"] == rank)]
    if "vs_uniform" in hit.columns:  # the paired table: the row against uniform
        hit = hit[hit["vs_uniform"].astype(bool)]
    return None if hit.empty else hit.iloc[0]


def _with_signal(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The cells whose weights carried a signal, and a note naming those that fell back to uniform
    weights on every step (their Gini of 0 says nothing about the method's concentration)."""
    fell = rows["fallback_frac"] >= 1.0 if "fallback_frac" in rows else pd.Series(False, index=rows.index)
    note = ", ".join(f"{r['label']} r{r['rank']}" for _, r in rows[fell].iterrows())
    return rows[~fell], (f"; left out, fell back to uniform weights on every step: {note}" if note else "")


def _claim_baselines_concentrated(conc: pd.DataFrame) -> str:
    """Claim (i): every output-distribution baseline has a Gini above ``CONCENTRATED_GINI``."""
    base = conc[conc["label"].isin(OUTPUT_BASELINES)]
    head = f"(i) Output-distribution baselines concentrated (Gini > {CONCENTRATED_GINI:.2f})"
    if base.empty:
        return f"{head}: not tested (no such cells)."
    informative, note = _with_signal(base)
    if informative.empty:
        return f"{head}: not testable (every baseline fell back to uniform weights on every step)."
    parts = [f"{r['label']} r{r['rank']} {r['gini']:.3f}" for _, r in informative.iterrows()]
    ok = bool((informative["gini"] > CONCENTRATED_GINI).all())
    return f"{head}: {'holds' if ok else 'does not hold'} ({', '.join(parts)}{note})."


def _claim_arca_middle(conc: pd.DataFrame) -> str:
    """Claim (ii): ARCA's Gini lies in ``MIDDLE_BAND`` (at every rank, or at some)."""
    arca = conc[conc["label"] == "arca"]
    lo, hi = MIDDLE_BAND
    head = f"(ii) ARCA in the middle regime (Gini in {lo:.2f}-{hi:.2f})"
    if arca.empty:
        return "(ii) ARCA in the middle regime: not tested (no arca cells)."
    informative, note = _with_signal(arca)
    if informative.empty:
        return (
            f"{head}: not testable (ARCA fell back to uniform weights on every step: its adapter "
            "residual was zero throughout)."
        )
    inside = informative["gini"].between(lo, hi)
    parts = [f"r{r['rank']} {r['gini']:.3f}" for _, r in informative.iterrows()]
    verdict = "holds" if inside.all() else ("holds at some ranks" if inside.any() else "does not hold")
    return f"{head}: {verdict} ({', '.join(parts)}{note})."


def _claim_arca_competitive(perf: pd.DataFrame, paired: pd.DataFrame) -> str:
    """Claim (iii): ARCA's best rank is within ``COMPETITIVE_MARGIN`` of uniform's greedy accuracy."""
    arca_perf = perf[perf["label"] == "arca"]
    head = (
        f"(iii) ARCA's accuracy competitive with uniform (0 in the paired CI, or difference > "
        f"-{COMPETITIVE_MARGIN:.2f})"
    )
    if arca_perf.empty or paired.empty:
        return "(iii) ARCA's accuracy competitive with uniform: not tested (needs arca and uniform cells)."
    best = arca_perf.loc[arca_perf["greedy"].idxmax()]
    row = _lookup(paired, "arca", int(best["rank"]))
    if row is None:
        return "(iii) ARCA's accuracy competitive with uniform: not tested (no paired row)."
    ref = perf[perf["label"] == REFERENCE_METHOD]
    involved = pd.concat([arca_perf, ref])[["greedy", "greedy_lo", "greedy_hi"]].to_numpy(dtype=float).ravel()
    involved = involved[np.isfinite(involved)]
    d = est(row, "diff")
    if involved.size and involved.min() == involved.max():
        return (
            f"{head}: not testable (every greedy accuracy of ARCA and {REFERENCE_METHOD} is "
            f"{involved[0]:.3f} on every problem: no variation to compare)."
        )
    ok = d.contains(0.0) or d.mean > -COMPETITIVE_MARGIN
    return (
        f"{head}: {'holds' if ok else 'does not hold'} (best ARCA r{int(best['rank'])} "
        f"greedy {best['greedy']:.3f}; minus {row['reference']}: {d.fmt()})."
    )


def claims(perf: pd.DataFrame, conc: pd.DataFrame, paired: pd.DataFrame) -> list[str]:
    """One line per claim of the paper, judged from our numbers.

    "not tested": the sweep lacks the cells. "not testable": the cells exist but the numbers
    cannot tell (weights that fell back to uniform on every step, or accuracies without any
    variation, e.g. all 0); a verdict on them would be empty.
    """
    return [
        _claim_baselines_concentrated(conc),
        _claim_arca_middle(conc),
        _claim_arca_competitive(perf, paired),
    ]


def _ours(row: pd.Series | None, key: str) -> str:
    return est(row, key).fmt() if row is not None else "-"


def _paper_rows(perf: pd.DataFrame, conc: pd.DataFrame) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """The methods the paper reports, and the rows of Tables 2 and 3: the paper's number beside ours
    at the matched rank ("-" where our sweep has no cell at that position)."""
    by_method: dict[str, list[int]] = {}
    for method, rank in PAPER_REPORTED:
        by_method.setdefault(method, []).append(rank)
    perf_rows, conc_rows = [], []
    for method, paper_ranks in by_method.items():
        ours = sorted(int(r) for r in perf.loc[perf["label"] == method, "rank"].dropna())
        mapping = match_paper_ranks(ours, paper_ranks)
        for pr in sorted(paper_ranks):
            ref = PAPER_REPORTED[(method, pr)]
            orank = mapping.get(pr)
            p = _lookup(perf, method, orank) if orank is not None else None
            c = _lookup(conc, method, orank) if orank is not None else None
            perf_rows.append(
                [
                    method,
                    str(pr),
                    fmt_rank(orank),
                    f"{ref['greedy']:.3f}",
                    _ours(p, "greedy"),
                    f"{ref['pass_at_k']:.3f}",
                    _ours(p, "pass_at_k"),
                    f"{ref['train_reward']:.3f}",
                    _ours(p, "train_reward"),
                ]
            )
            conc_rows.append(
                [
                    method,
                    str(pr),
                    fmt_rank(orank),
                    f"{ref['gini']:.3f}",
                    _ours(c, "gini"),
                    f"{ref['eff_ratio']:.3f}",
                    _ours(c, "eff_ratio"),
                ]
            )
    return list(by_method), perf_rows, conc_rows


PAPER_SETTING = "Qwen3-1.7B-Base on MATH (first 200 test problems), 100 GRPO steps of 8 prompts x K=4, one seed"


def our_setting(cfg) -> str:
    """Our model, data and scale in words, for the comparison's header."""
    m = cfg.model
    if m.source == "pretrain":
        p = m.pretrain
        model = f"a Qwen3-architecture model pretrained here ({p.num_layers} layers, width {p.hidden_size})"
    elif m.source == "gguf":
        model = f"the GGUF model of the package {m.gguf_package}"
    else:
        model = m.name_or_path.rstrip("/").rsplit("/", 1)[-1] if m.source == "local" else m.name_or_path
    d = cfg.data
    if d.source == "generated":
        data = "generated arithmetic problems" + (" with planted forks" if d.forks.p_bug > 0 else "")
    else:
        data = f"MATH-format problems ({d.train.rstrip('/').rsplit('/', 1)[-1]})"
    scale = f"{cfg.train.steps} GRPO steps of {cfg.train.prompts_per_step} prompts x K={cfg.rollout.k}"
    return f"{model} on {data}, {scale}"


def paper_comparison(
    perf: pd.DataFrame,
    conc: pd.DataFrame,
    paired: pd.DataFrame,
    protocol: str,
    grader: str,
    k: int,
    n_seeds: int,
    setting: str = "the sweep of this config",
) -> str:
    methods, perf_rows, conc_rows = _paper_rows(perf, conc)
    extra = perf[~perf["label"].isin(methods + [BASE])]
    parts = [
        "# Our results beside the paper's\n",
        f"**Paper**: {PAPER_SETTING}; string-match grader, pass@{PAPER_K}.\n",
        f"**Ours**: {setting}; protocol `{protocol}`, grader `{grader}`, pass@{k}, up to {n_seeds} seeds; "
        "mean [95% bootstrap CI].\n",
        "The two settings differ in model, data and scale, so each claim below is judged at this scale "
        "only; it says nothing about the paper's setting. Our ranks are matched to the paper's by sorted "
        "position from the largest.\n",
        "## Table 2, performance\n",
        markdown_table(
            [
                "method",
                "paper r",
                "our r",
                "paper greedy",
                "our greedy",
                f"paper pass@{PAPER_K}",
                f"our pass@{k}",
                "paper train reward",
                "our train reward",
            ],
            perf_rows,
        ),
        "## Table 3, concentration (averaged over training)\n",
        markdown_table(
            ["method", "paper r", "our r", "paper Gini", "our Gini", "paper EffN/T", "our EffN/T"], conc_rows
        ),
        "## The paper's claims, judged at this scale from our numbers\n",
        "\n".join(f"- {line}" for line in claims(perf, conc, paired)) + "\n",
    ]
    if not extra.empty:
        headers, rows = performance_rows(extra)
        parts += ["## Cells the paper does not have\n", markdown_table(headers, rows)]
    ablation = paired[~paired["vs_uniform"].astype(bool)] if not paired.empty else paired
    if not ablation.empty:
        headers, rows = paired_rows(ablation)
        parts += ["## Ablation pairs (each cell minus the cell it is compared with)\n", markdown_table(headers, rows)]
    return "\n".join(parts)
