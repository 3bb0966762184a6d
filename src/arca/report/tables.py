"""``python -m arca aggregate``: gather every run and evaluation into ``results/<name>/tables/``.

Inputs, per run of ``cfg.run_ids()`` (and ``eval/base`` for the base model):
``runs/<run>/metrics.jsonl``, ``runs/<run>/curve.jsonl`` (empty when ``eval.every`` is 0),
``eval/<run>/summary.json`` and ``eval/<run>/samples.jsonl``.
Outputs (each written atomically):

- ``runs.csv``           one row per run (and the base model): identity, accuracies, training averages
- ``curves.csv``         every metrics line of every run
- ``performance.*``      the paper's Table 2 layout per (label, rank), mean and 95% CI, and the
                         interquartile mean of the runs' greedy accuracies (``greedy_iqm``) with
                         a bootstrap CI over runs
- ``concentration.*``    the paper's Table 3 layout: Gini and EffN/T averaged over training
- ``paired.*``           each cell minus ``uniform`` (at uniform's top rank) on the same problems,
                         and minus every cell its sweep entry names in ``compare`` (ablations);
                         with the probability that a run of the cell beats a run of the reference
                         (``p_improve``, stratified bootstrap CI over runs)
- ``paper_comparison.md`` our rows beside the paper's reported numbers, one line per claim
- ``credit_precision.*`` how much weight each method puts on the planted decisive fork tokens,
                         relative to uniform weights: during training and on the held-out probe
- ``learning_curves.csv`` held-out greedy and sampled accuracy at every curve step of every run
- ``sample_efficiency.*`` area under the held-out learning curve, final accuracy and steps to a
                         threshold, each paired against ``uniform`` with its minimum detectable difference
- ``outcomes.*``         held-out greedy completions decomposed on the planted forks: aligned share,
                         decision accuracy, execution given the branch, collateral accuracy
                         (``arca.report.outcomes``), per cell and per family
- ``tuning.*``           each setting's AUC and final accuracy at every lr the sweep runs it at,
                         and its best lr (``arca.report.tuning``; configs/tune.yaml)
- ``cost.*``             wall time and peak memory of each run's jobs, from Snakemake's benchmark
                         records (``arca.report.cost``)

Accuracies come from the per-problem grades in ``samples.jsonl`` (the primary protocol is the
first of ``cfg.eval.protocols``, graded by its primary grader) so that intervals can resample
problems; the summary's own numbers are cross-checked against them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from arca.config import RUN_IDENTITY, Config
from arca.io import write_text
from arca.paths import Paths, paths_of
from arca.report import cost
from arca.report.credit_precision import credit_precision_markdown, credit_precision_table
from arca.report.mc_agreement import mc_agreement_markdown, mc_agreement_table, read_mc_summary
from arca.report.outcomes import family_decisions, outcomes_markdown, outcomes_table
from arca.report.paper import our_setting, paper_comparison
from arca.report.records import (
    BASE,
    Cell,
    RunRecord,
    compare_cell,
    group_cells,
    load_records,
    reference_cell,
    test_problems,
    train_mean,
)
from arca.report.render import (
    ci_columns,
    concentration_rows,
    latex_table,
    markdown_table,
    paired_rows,
    performance_rows,
)
from arca.report.sample_efficiency import (
    learning_curves_table,
    sample_efficiency_markdown,
    sample_efficiency_table,
)
from arca.report.tuning import tuning_markdown, tuning_table
from arca.stats import (
    NAN_ESTIMATE,
    bootstrap_iqm_ci,
    bootstrap_mean_ci,
    paired_difference,
    probability_of_improvement_ci,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- per-run table
def runs_table(runs: list[RunRecord], base: RunRecord, protocol: str, grader: str, k: int) -> pd.DataFrame:
    rows = []
    for rec in [base] + runs:
        row = {
            **{k: getattr(rec, k) for k in RUN_IDENTITY},
            "config_hash": rec.summary.get("config_hash"),
            "trainable_params": rec.summary.get("trainable_params"),
            "protocol": protocol,
            "grader": grader,
            "k": k,
            "n_problems": len(rec.scores),
            "greedy": float(rec.scores["greedy"].mean()),
            "pass_at_k": float(rec.scores["pass_at_k"].mean()),
            "steps": int(rec.metrics["step"].max()) if len(rec.metrics) else None,
        }
        for col in ("reward_mean", "gini", "eff_ratio", "fallback_frac", "residual_mean", "step_seconds"):
            name = "train_reward" if col == "reward_mean" else col
            row[name] = train_mean(rec.metrics, col)
        # Every protocol and grader the evaluator reported, for readers of other protocols.
        for proto, info in rec.summary.get("protocols", {}).items():
            for g in ("paper", "math_verify"):
                row[f"greedy_{proto}_{g}"] = info.get("greedy", {}).get(g)
                row[f"pass_at_k_{proto}_{g}"] = info.get("pass_at_k", {}).get(g)
            row[f"agreement_{proto}"] = info.get("agreement")
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("rank", "seed", "trainable_params", "steps"):
        df[col] = df[col].astype("Int64")
    return df


def performance_table(cells: list[Cell], base: RunRecord, protocol: str, grader: str, k: int) -> pd.DataFrame:
    rows = []
    base_scores = base.scores[["greedy", "pass_at_k"]].to_numpy(dtype=float).T  # [2, P]
    rows.append(
        {
            "label": BASE,
            "method": BASE,
            "rank": None,
            "n_seeds": 0,
            "n_problems": len(base.scores),
            "trainable_params": None,
            **ci_columns("greedy", bootstrap_mean_ci(base_scores[0])),
            **ci_columns("greedy_iqm", NAN_ESTIMATE),  # one model, no runs to summarize
            **ci_columns("pass_at_k", bootstrap_mean_ci(base_scores[1])),
            **ci_columns("train_reward", NAN_ESTIMATE),
        }
    )
    for cell in cells:
        greedy = bootstrap_mean_ci(cell.matrix("greedy"))
        rows.append(
            {
                "label": cell.label,
                "method": cell.method,
                "rank": cell.rank,
                "n_seeds": len(cell.runs),
                "n_problems": greedy.n_problems,
                "trainable_params": cell.trainable_params,
                **ci_columns("greedy", greedy),
                **ci_columns("greedy_iqm", bootstrap_iqm_ci(cell.per_run("greedy"))),
                **ci_columns("pass_at_k", bootstrap_mean_ci(cell.matrix("pass_at_k"))),
                **ci_columns("train_reward", bootstrap_mean_ci(cell.per_seed("reward_mean"))),
            }
        )
    df = pd.DataFrame(rows)
    df["protocol"], df["grader"], df["k"] = protocol, grader, k
    for col in ("rank", "trainable_params"):
        df[col] = df[col].astype("Int64")
    return df


def concentration_table(cells: list[Cell]) -> pd.DataFrame:
    rows = []
    for cell in cells:
        rows.append(
            {
                "label": cell.label,
                "method": cell.method,
                "rank": cell.rank,
                "n_seeds": len(cell.runs),
                **ci_columns("gini", bootstrap_mean_ci(cell.per_seed("gini"))),
                **ci_columns("eff_ratio", bootstrap_mean_ci(cell.per_seed("eff_ratio"))),
                "fallback_frac": float(pd.Series(cell.per_seed("fallback_frac").ravel()).mean()),
                # how often gradient clipping acted (it matters for the mean_one normalization ablation)
                "clipped_frac": float(np.nanmean([r.clipped_frac() for r in cell.runs])) if cell.runs else math.nan,
            }
        )
    return pd.DataFrame(rows)


def paired_table(cells: list[Cell], protocol: str, grader: str) -> pd.DataFrame:
    """Greedy-accuracy difference of every cell minus uniform, and minus each cell in its ``compare``, paired.

    Rows against uniform come first for every cell (``vs_uniform`` True), then the ablation pairs.
    ``p_improve`` is the probability that a run of the cell scores a higher greedy accuracy than a
    run of the reference (ties count half), on the same problems as the difference.
    """
    ref = reference_cell(cells)
    cols = [
        "label",
        "method",
        "rank",
        "reference",
        "vs_uniform",
        "protocol",
        "grader",
        "n_seeds",
        "n_problems",
        "diff",
        "diff_lo",
        "diff_hi",
        "p_improve",
        "p_improve_lo",
        "p_improve_hi",
    ]
    pairs = [(cell, ref, True) for cell in cells if ref is not None and cell is not ref]
    for cell in cells:
        for label in cell.compare:
            other = compare_cell(cells, label, cell.rank)
            if other is None:
                log.warning("%s_r%d: no runs of the cell %r to compare with", cell.label, cell.rank, label)
            elif other is not ref:
                pairs.append((cell, other, False))
    rows = []
    for cell, other, vs_uniform in pairs:
        problems = sorted(set.intersection(*(set(r.scores.index) for r in cell.runs + other.runs)))
        if not problems:
            log.warning("no common problems between %s_r%d and %s_r%d", cell.label, cell.rank, other.label, other.rank)
            continue
        est = paired_difference(cell.matrix("greedy", problems), other.matrix("greedy", problems))
        improve = probability_of_improvement_ci(cell.per_run("greedy", problems), other.per_run("greedy", problems))
        rows.append(
            {
                "label": cell.label,
                "method": cell.method,
                "rank": cell.rank,
                "reference": f"{other.label}_r{other.rank}",
                "vs_uniform": vs_uniform,
                "protocol": protocol,
                "grader": grader,
                "n_seeds": est.n_seeds,
                "n_problems": est.n_problems,
                **ci_columns("diff", est),
                **ci_columns("p_improve", improve),
            }
        )
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- the step
def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.8g", lineterminator="\n")


def read_table(path: Path) -> pd.DataFrame:
    """A table this step wrote. Only empty cells are missing values: pandas would otherwise read the
    label of the null-control cell, ``null`` (and ``NA``, ``None``, ...), as NaN and lose the cell."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _write_paper_tables(out: Paths, perf: pd.DataFrame, conc: pd.DataFrame, protocol: str, grader: str) -> None:
    """The paper's Table 2 (performance) and Table 3 (concentration) as CSV, Markdown and LaTeX."""
    caption = (
        f"Performance on protocol {protocol} (grader {grader}); mean and 95% bootstrap CI over seeds and problems. "
        "Greedy IQM: interquartile mean of the runs' greedy accuracies (the plain mean below 4 runs), "
        "95% bootstrap CI over runs."
    )
    headers, rows = performance_rows(perf)
    write_text(out.table("performance", "csv"), _csv(perf))
    write_text(out.table("performance", "md"), markdown_table(headers, rows))
    write_text(out.table("performance", "tex"), latex_table(headers, rows, caption, "tab:performance"))
    headers, rows = concentration_rows(conc)
    write_text(out.table("concentration", "csv"), _csv(conc))
    write_text(out.table("concentration", "md"), markdown_table(headers, rows))
    write_text(
        out.table("concentration", "tex"),
        latex_table(
            headers,
            rows,
            "Token-weight concentration averaged over training; mean and 95% bootstrap CI over seeds.",
            "tab:concentration",
        ),
    )


def aggregate_main(cfg: Config, args=None) -> None:
    """Read every run and evaluation of the sweep; write ``tables/``."""
    runs, base, protocol, grader, k = load_records(cfg)
    cells = group_cells(cfg, runs)
    out = paths_of(cfg)
    perf = performance_table(cells, base, protocol, grader, k)
    conc = concentration_table(cells)
    paired = paired_table(cells, protocol, grader)
    curves = pd.concat([r.metrics for r in runs], ignore_index=True)

    write_text(out.table("runs", "csv"), _csv(runs_table(runs, base, protocol, grader, k)))
    write_text(out.table("curves", "csv"), _csv(curves))
    _write_paper_tables(out, perf, conc, protocol, grader)
    headers, rows = paired_rows(paired)
    write_text(out.table("paired", "csv"), _csv(paired))
    note = "" if not paired.empty else "No uniform cell in the sweep: nothing to pair against.\n"
    write_text(out.table("paired", "md"), note + markdown_table(headers, rows))
    write_text(
        out.table("paper_comparison", "md"),
        paper_comparison(perf, conc, paired, protocol, grader, k, len(cfg.sweep.seeds), our_setting(cfg)),
    )
    precision = credit_precision_table(cells)
    write_text(out.table("credit_precision", "csv"), _csv(precision))
    write_text(out.table("credit_precision", "md"), credit_precision_markdown(precision))
    write_text(out.table("learning_curves", "csv"), _csv(learning_curves_table(runs)))
    efficiency = sample_efficiency_table(cells)
    write_text(out.table("sample_efficiency", "csv"), _csv(efficiency))
    write_text(out.table("sample_efficiency", "md"), sample_efficiency_markdown(efficiency))
    outcomes = outcomes_table(cells, base)
    write_text(out.table("outcomes", "csv"), _csv(outcomes))
    write_text(
        out.table("outcomes", "md"), outcomes_markdown(outcomes, family_decisions(cells, base, test_problems(cfg)))
    )
    agreement = mc_agreement_table(cells)
    write_text(out.table("mc_agreement", "csv"), _csv(agreement))
    write_text(out.table("mc_agreement", "md"), mc_agreement_markdown(agreement, read_mc_summary(out.mc_summary)))
    tuning = tuning_table(cfg, efficiency)
    write_text(out.table("tuning", "csv"), _csv(tuning))
    write_text(out.table("tuning", "md"), tuning_markdown(tuning))
    costs = cost.cost_table(cfg)
    write_text(out.table("cost", "csv"), _csv(costs))
    write_text(out.table("cost", "md"), cost.NOTE + markdown_table(*cost.cost_rows(cfg, costs)))
    log.info("wrote %d cells (%d runs) to %s", len(cells), len(runs), out.tables)
