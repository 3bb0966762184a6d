"""Tests of the planted-fork report: credit precision, learning curves, sample efficiency, heat-map marks.

A tiny sweep (uniform, arca, oracle and the null control, two seeds) of hand-made producer files
carries the new keys: credit precision per step in ``metrics.jsonl``, the held-out probe in
``summary.json`` and per-problem learning curves in ``curve.jsonl``. Every number the tests
expect is computed here by hand from the values written, not with the module's helpers.
"""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SMALL, make_sweep, write_eval

from arca.config import BASE, deep_merge, from_dict, run_hash, run_identity
from arca.heatmap_rollouts import fork_marks
from arca.paths import paths_of
from arca.report.heatmap import pick_shown, render_heatmap
from arca.report.sample_efficiency import curve_auc, first_step_reaching
from arca.report.tables import aggregate_main, read_table

SEEDS = [1, 2]
CELLS = [("uniform", "uniform"), ("arca", "arca"), ("oracle", "oracle"), ("null", "uniform")]
RANK = 8

# Training credit precision: per (label, seed) the decisive share of each step; uniform's share of
# the same rows per seed. The third step has no aligned rollout (both null).
UNIFORM_SHARE = {1: [0.1, 0.3, None], 2: [0.2, 0.2, None]}
DECISIVE_SHARE = {
    "uniform": UNIFORM_SHARE,
    "null": UNIFORM_SHARE,
    "arca": {1: [0.2, 0.3, None], 2: [0.4, 0.6, None]},
    "oracle": {1: [1.0, 1.0, None], 2: [1.0, 1.0, None]},
}
AUROC = {"uniform": 0.5, "null": 0.5, "arca": 0.7, "oracle": 1.0}

# The probe: decisive share of each method under one run's final model; uniform's share is 0.1.
PROBE_UNIFORM = 0.1
PROBE = {  # (label of the run, seed) -> method -> decisive share
    **{
        (lab, s): {
            "uniform": 0.1,
            "arca": 0.6,
            "oracle": 0.9,
            "decision_oracle": 1.0,
            "arca_permuted": 0.1,
            "entropy_top20": 0.2,
        }
        for lab in ("arca", "oracle", "null")
        for s in SEEDS
    },
    ("uniform", 1): {
        "uniform": 0.1,
        "arca": 0.3,
        "oracle": 0.5,
        "decision_oracle": 1.0,
        "arca_permuted": 0.1,
        "entropy_top20": 0.2,
    },
    ("uniform", 2): {
        "uniform": 0.1,
        "arca": 0.5,
        "oracle": 0.5,
        "decision_oracle": 0.8,
        "arca_permuted": 0.12,
        "entropy_top20": 0.2,
    },
}

# Learning curves: per (label, seed) the greedy verdicts on 4 problems at steps 0, 10 and 20.
CURVE_STEPS = [0, 10, 20]
STEP0 = [1, 0, 0, 0]  # the untrained adapter: the base model, the same for every run
GREEDY = {
    ("uniform", 1): [STEP0, [1, 1, 0, 0], [1, 1, 1, 0]],
    ("uniform", 2): [STEP0, [1, 0, 0, 0], [1, 1, 0, 0]],
    ("arca", 1): [STEP0, [1, 1, 1, 0], [1, 1, 1, 1]],
    ("arca", 2): [STEP0, [1, 1, 0, 0], [1, 1, 1, 0]],
    ("oracle", 1): [STEP0, [1, 1, 1, 1], [1, 1, 1, 1]],
    ("oracle", 2): [STEP0, [1, 1, 1, 1], [1, 1, 1, 1]],
    ("null", 1): [STEP0, STEP0, STEP0],
    ("null", 2): [STEP0, STEP0, STEP0],
}


def _sampled(label: str) -> list[int]:
    return [1, 1, 1, 1] if label == "arca" else [0, 0, 0, 0]


def _metrics_lines(run: str, label: str, method: str, seed: int) -> list[dict]:
    lines = []
    for step, (d, u) in enumerate(zip(DECISIVE_SHARE[label][seed], UNIFORM_SHARE[seed]), 1):
        known = d is not None
        lines.append(
            {
                "step": step,
                **run_identity(run, method),
                "loss": 0.1,
                "reward_mean": 0.3,
                "grad_norm": 0.5,
                "gini": 0.2,
                "eff_ratio": 0.8,
                "fallback_frac": 0.0,
                "labeled_frac": 0.8 if known else 0.0,
                "labeled_frac_forked": 0.9 if known else None,
                "decisive_share": d,
                "decisive_share_uniform": u,
                # positive-advantage rows: twice the share; negative: the share itself, on the same uniform share
                "decisive_share_pos": 2 * d if known else None,
                "decisive_share_pos_uniform": u,
                "decisive_share_neg": d,
                "decisive_share_neg_uniform": u,
                "decisive_auroc": AUROC[label] if known else None,
                "distractor_share": 0.05 if known else None,
                "distractor_share_uniform": 0.1 if known else None,
            }
        )
    return lines


def _probe(label: str, seed: int) -> dict:
    methods = {}
    for m, share in PROBE[(label, seed)].items():
        methods[m] = {
            "decisive_share": share,
            "decisive_share_uniform": PROBE_UNIFORM,
            "decisive_share_pos": share,
            "decisive_share_pos_uniform": PROBE_UNIFORM,
            # no negative-advantage row in the probe of this method: null in the summary
            "decisive_share_neg": None if m == "entropy_top20" else share / 2,
            "decisive_share_neg_uniform": PROBE_UNIFORM,
            "decisive_auroc": 0.5 + share / 4,
            "distractor_share": 0.02,
            "distractor_share_uniform": 0.04,
        }
    return {"labeled_frac": 0.75, "n_rollouts": 128, "methods": methods}


def make_fork_sweep(root: Path):
    cfg = from_dict(
        deep_merge(
            SMALL,
            {
                "name": "forks",
                "paths": {"results": str(root)},
                "eval": {"protocols": ["generated"], "pass_k": 2, "every": 10, "curve_problems": 4},
                "sweep": {"cells": [{"method": m, "ranks": [RANK], "label": lab} for lab, m in CELLS], "seeds": SEEDS},
            },
        ),
        source="test",
    )
    greedy6, counts6 = [1, 0, 1, 0, 0, 0], [2, 1, 0, 0, 0, 1]  # the eval tables' inputs; not under test here
    for label, method in CELLS:
        for seed in SEEDS:
            run = f"{label}_r{RANK}_s{seed}"
            run_dir = paths_of(cfg).run(run).root
            run_dir.mkdir(parents=True)
            lines = _metrics_lines(run, label, method, seed)
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            weights = {"run": run, "method": method, "step": 3, "weights": [[0.5, 0.5]]}
            (run_dir / "final_weights.json").write_text(json.dumps(weights))
            identity = run_identity(run, method)
            curve = [
                {
                    "step": step,
                    "greedy": float(np.mean(g)),
                    "sampled": float(np.mean(_sampled(label))),
                    "n": 4,
                    "greedy_correct": g,
                    "sampled_correct": _sampled(label),
                    **identity,
                }
                for step, g in zip(CURVE_STEPS, GREEDY[(label, seed)])
            ]
            (run_dir / "curve.jsonl").write_text("".join(json.dumps(x) + "\n" for x in curve))
            write_eval(
                paths_of(cfg).eval(run).root, identity, greedy6, counts6, trainable=1000, config_hash=run_hash(cfg, run)
            )
            summary_path = paths_of(cfg).eval(run).root / "summary.json"
            summary = json.loads(summary_path.read_text())
            summary["credit_precision"] = _probe(label, seed)
            summary_path.write_text(json.dumps(summary))
    write_eval(
        paths_of(cfg).eval("base").root,
        run_identity(BASE),
        greedy6,
        counts6,
        trainable=None,
    )
    return cfg


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    cfg = make_fork_sweep(tmp_path_factory.mktemp("forks"))
    aggregate_main(cfg, None)
    return cfg


def _row(df: pd.DataFrame, label: str, block: str | None = None) -> pd.Series:
    hit = df[(df["label"] == label) & ((df["block"] == block) if block else True)]
    assert len(hit) == 1, (label, block)
    return hit.iloc[0]


def _steps_mean(values) -> float:
    return float(np.mean([v for v in values if v is not None]))


# ----------------------------------------------------------------------------- credit precision
def test_credit_precision_training_ratios(forks):
    df = read_table(paths_of(forks).root / "tables" / "credit_precision.csv")
    assert list(df["block"]).count("sweep") == len(CELLS)
    arca = _row(df, "arca", "sweep")
    # ratio of means (steps, then seeds), not a mean of ratios: (0.25 + 0.5) / 2 over (0.2 + 0.2) / 2
    assert arca["train_decisive_ratio"] == pytest.approx(0.375 / 0.2)
    assert arca["train_decisive_ratio_pos"] == pytest.approx(2 * 0.375 / 0.2)
    assert arca["train_decisive_ratio_neg"] == pytest.approx(0.375 / 0.2)
    assert arca["train_distractor_ratio"] == pytest.approx(0.5)
    assert arca["train_decisive_auroc"] == pytest.approx(0.7)
    assert arca["train_labeled_frac"] == pytest.approx((0.8 + 0.8 + 0.0) / 3)
    assert arca["train_decisive_share"] == pytest.approx(0.375)
    # per seed 1.25 and 2.5: the seed bootstrap interval lies between (and reaches) them
    assert arca["train_decisive_ratio_lo"] == pytest.approx(0.25 / 0.2)
    assert arca["train_decisive_ratio_hi"] == pytest.approx(0.5 / 0.2)
    assert _row(df, "uniform", "sweep")["train_decisive_ratio"] == pytest.approx(1.0)
    assert _row(df, "null", "sweep")["method"] == "uniform"
    assert _row(df, "oracle", "sweep")["train_decisive_ratio"] == pytest.approx(1.0 / 0.2)


def test_credit_precision_probe_blocks(forks):
    df = read_table(paths_of(forks).root / "tables" / "credit_precision.csv")
    # the sweep block: each cell's own method under its own final models
    assert _row(df, "arca", "sweep")["probe_decisive_ratio"] == pytest.approx(0.6 / PROBE_UNIFORM)
    assert _row(df, "oracle", "sweep")["probe_decisive_ratio"] == pytest.approx(0.9 / PROBE_UNIFORM)
    assert _row(df, "null", "sweep")["probe_decisive_ratio"] == pytest.approx(1.0)
    assert _row(df, "arca", "sweep")["probe_labeled_frac"] == pytest.approx(0.75)
    # every method the probe scored, under the uniform cell's models (seeds 1 and 2 averaged)
    every = df[df["block"] == "probe_all"]
    assert list(every["method"]) == ["uniform", "arca", "oracle", "decision_oracle", "arca_permuted", "entropy_top20"]
    assert set(every["models"]) == {"uniform_r8"}
    arca = _row(df, "arca", "probe_all")
    assert arca["probe_decisive_ratio"] == pytest.approx(0.4 / PROBE_UNIFORM)
    assert arca["probe_vs_oracle"] == pytest.approx(0.4 / 0.9)
    perm = _row(df, "arca_permuted", "probe_all")
    assert perm["probe_decisive_ratio"] == pytest.approx(0.11 / PROBE_UNIFORM)
    # "x oracle" is relative to the decision oracle (all weight on the decisive tokens)
    assert _row(df, "decision_oracle", "probe_all")["probe_vs_oracle"] == pytest.approx(1.0)
    assert _row(df, "oracle", "probe_all")["probe_vs_oracle"] == pytest.approx(0.5 / 0.9)
    top20 = _row(df, "entropy_top20", "probe_all")
    assert math.isnan(top20["probe_decisive_ratio_neg"]) and top20["probe_decisive_auroc"] == pytest.approx(0.55)
    md = (paths_of(forks).root / "tables" / "credit_precision.md").read_text()
    assert "under the final models of uniform_r8 (2 seeds)" in md
    assert "| arca | 0.400 | 4.00 [" in md and "No planted-fork labels" not in md


def test_credit_precision_without_forks(tmp_path):
    """A clean corpus (no branches, no precision keys, no probe): the table exists, its numbers are empty."""
    cfg = make_sweep(tmp_path)
    aggregate_main(cfg, None)
    df = read_table(paths_of(cfg).root / "tables" / "credit_precision.csv")
    assert len(df) == len(cfg.sweep.cells) + 1  # arca has two ranks
    assert (df["block"] == "sweep").all()
    assert df["train_decisive_ratio"].isna().all() and df["probe_decisive_auroc"].isna().all()
    assert "No planted-fork labels" in (paths_of(cfg).root / "tables" / "credit_precision.md").read_text()
    eff = read_table(paths_of(cfg).root / "tables" / "sample_efficiency.csv")
    assert len(eff) == len(df) and eff["auc_greedy"].isna().all()
    assert "No learning curves" in (paths_of(cfg).root / "tables" / "sample_efficiency.md").read_text()
    assert read_table(paths_of(cfg).root / "tables" / "learning_curves.csv").empty


# ----------------------------------------------------------------------------- learning curves
def test_learning_curves_table(forks):
    lc = read_table(paths_of(forks).root / "tables" / "learning_curves.csv")
    assert list(lc.columns[:6]) == ["label", "method", "rank", "seed", "run", "step"]
    assert len(lc) == len(CELLS) * len(SEEDS) * len(CURVE_STEPS)
    assert "null" in set(lc["label"])  # the null control's label is not read as a missing value
    hit = lc[(lc["run"] == "uniform_r8_s1") & (lc["step"] == 20)].iloc[0]
    assert hit["greedy"] == pytest.approx(0.75) and hit["sampled"] == 0.0 and hit["n"] == 4


def test_sample_efficiency_by_hand(forks):
    eff = read_table(paths_of(forks).root / "tables" / "sample_efficiency.csv")
    uni, arca, null = (_row(eff, lab) for lab in ("uniform", "arca", "null"))
    # uniform: seed 1 curve 0.25, 0.5, 0.75 -> (0.375 * 10 + 0.625 * 10) / 20 = 0.5; seed 2 0.25, 0.25, 0.5 -> 0.3125
    assert uni["auc_greedy"] == pytest.approx((0.5 + 0.3125) / 2)
    assert uni["auc_greedy_seed_min"] == pytest.approx(0.3125) and uni["auc_greedy_seed_max"] == pytest.approx(0.5)
    assert uni["auc_greedy_seed_sd"] == pytest.approx(np.std([0.5, 0.3125], ddof=1))
    assert uni["final_greedy"] == pytest.approx(0.625)
    # threshold = base 0.25 + 0.5 x (0.625 - 0.25); uniform's mean curve 0.25, 0.375, 0.625 reaches it at 20
    assert uni["base_greedy"] == pytest.approx(0.25) and uni["threshold"] == pytest.approx(0.4375)
    assert uni["steps_to_threshold"] == 20 and math.isnan(uni["auc_greedy_diff"])
    # arca: seeds 0.6875 and 0.5; mean curve 0.25, 0.625, 0.875 reaches the threshold at step 10
    assert arca["auc_greedy"] == pytest.approx((0.6875 + 0.5) / 2)
    assert arca["auc_greedy_diff"] == pytest.approx((0.6875 + 0.5) / 2 - (0.5 + 0.3125) / 2)
    assert arca["final_greedy_diff"] == pytest.approx(0.875 - 0.625)
    assert arca["steps_to_threshold"] == 10 and arca["steps_to_threshold_diff"] == pytest.approx(-10)
    assert arca["auc_sampled"] == pytest.approx(1.0) and arca["auc_sampled_diff"] == pytest.approx(1.0)
    assert arca["n_paired_seeds"] == 2 and arca["n_problems"] == 4 and arca["reference"] == "uniform_r8"
    for prefix in ("auc_greedy", "final_greedy", "steps_to_threshold"):
        assert arca[f"{prefix}_diff_lo"] <= arca[f"{prefix}_diff"] <= arca[f"{prefix}_diff_hi"]
        assert arca[f"{prefix}_mdd"] > 0
    # a constant difference has no sampling error: sampled AUC is 1 vs 0 on every seed and problem
    assert arca["auc_sampled_diff_lo"] == arca["auc_sampled_diff_hi"] == pytest.approx(1.0)
    assert arca["auc_sampled_mdd"] == pytest.approx(0.0)
    # the null control never moves: never reaches the threshold
    assert math.isnan(null["steps_to_threshold"]) and null["auc_greedy"] == pytest.approx(0.25)
    md = (paths_of(forks).root / "tables" / "sample_efficiency.md").read_text()
    assert "not reached" in md and "Threshold: 0.438" in md
    assert "Seed-to-seed spread of uniform_r8's greedy AUC: sd 0.133, min 0.312, max 0.500 over 2 seeds" in md


def test_curve_auc_and_threshold_helpers():
    steps = np.array([0.0, 10.0, 30.0])
    # trapezoids: 10 x (0 + 1) / 2 + 20 x (1 + 1) / 2 = 25, over a span of 30
    assert curve_auc(np.array([0.0, 1.0, 1.0]), steps) == pytest.approx(25 / 30)
    assert curve_auc(np.array([[0.4]]), np.array([5.0]))[0] == pytest.approx(0.4)
    curves = np.array([[0.1, 0.5, 0.6], [0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    got = first_step_reaching(curves, steps, 0.5)
    assert got[0] == 10 and math.isnan(got[1]) and got[2] == 0
    assert np.isnan(first_step_reaching(curves, steps, float("nan"))).all()


# ----------------------------------------------------------------------------- outputs
def test_aggregate_writes_every_declared_table(forks):
    for path in paths_of(forks).table_files().values():
        assert path.is_file(), path


# ----------------------------------------------------------------------------- figures
def test_fork_figures_written(forks):
    from arca.report.figures import figures_main

    paths = figures_main(forks, None)
    for name in ("credit_precision", "learning_curves"):
        for ext in ("png", "pdf"):
            p = paths_of(forks).root / "figures" / f"{name}.{ext}"
            assert p in paths and p.stat().st_size > 1000, p


# ----------------------------------------------------------------------------- heat map marks
BRANCHES = [
    {"text": "x=6+2=8", "answer": "8", "correct": True, "decisive": [3], "distractor": [5]},
    {"text": "x=6-2=4", "answer": "4", "correct": False, "decisive": [3], "distractor": [5]},
]


class _Marks(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []  # per method row: (class, text) of each token
        self.notes, self._tok = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "method-row":
            self.rows.append([])
        if tag == "span" and (a.get("class") or "").startswith("tok") and self.rows:
            self._tok = [a["class"], ""]
        if tag == "p" and a.get("class") == "forks":
            self.notes.append("")

    def handle_data(self, data):
        if self._tok is not None:
            self._tok[1] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._tok is not None:
            self.rows[-1].append(tuple(self._tok))
            self._tok = None


def _weights(n: int) -> dict:
    return {"uniform": [1 / n] * n, "arca": [0.5] + [0.5 / (n - 1)] * (n - 1)}


def test_fork_marks_map_characters_to_tokens():
    chars = list("x=6+2=8")
    m = fork_marks(chars, "x=6+2=8", BRANCHES)
    assert m["decisive"] == [0, 0, 0, 1, 0, 0, 0] and m["distractor"] == [0, 0, 0, 0, 0, 1, 0] and m["correct"]
    sub = fork_marks(["x=", "6-", "2=4"], "x=6-2=4", BRANCHES)  # subword pieces: char 3 is in piece 1
    assert sub["decisive"] == [0, 1, 0] and sub["distractor"] == [0, 0, 1] and not sub["correct"]
    assert fork_marks(list("y=1"), "y=1", BRANCHES) is None  # leaves every branch before the decision
    assert fork_marks(list("x=6"), "x=6", []) is None


def test_heatmap_frames_decisive_and_distractor_tokens():
    tokens = list("x=6+2=8")
    shown = {
        "prompt": "p",
        "tokens": tokens,
        "weights": _weights(7),
        "gini": {},
        "reward": 1.0,
        "marks": fork_marks(tokens, "x=6+2=8", BRANCHES),
    }
    lost = {
        "prompt": "q",
        "tokens": list("y=1"),
        "weights": _weights(3),
        "gini": {},
        "reward": 0.0,
        "marks": fork_marks(list("y=1"), "y=1", BRANCHES),
    }
    page = render_heatmap([shown, lost])
    p = _Marks()
    p.feed(page)
    assert len(p.rows) == 4
    for row in p.rows[:2]:  # every method row of the aligned rollout carries the same frames
        assert [c for c, _ in row] == ["tok"] * 3 + ["tok decisive", "tok", "tok distractor", "tok"]
        assert row[3][1] == "+"
    for row in p.rows[2:]:
        assert all(c == "tok" for c, _ in row)
    assert len(p.notes) == 2 and "could not be aligned" in page and "follows the correct branch" in page
    assert 'class="tok decisive"' in page.split("<section", 1)[0]  # the legend shows both frames
    assert 'class="tok distractor"' in page.split("<section", 1)[0]
    bad = {**shown, "marks": {"decisive": [1], "distractor": [0], "correct": True}}
    with pytest.raises(ValueError, match="fork marks"):
        render_heatmap([bad])


def test_heatmap_shows_rollouts_with_a_decisive_token_first():
    plain = [{"id": i} for i in range(3)]
    lost = {"id": "lost", "marks": None}
    framed = {"id": "framed", "marks": {"decisive": [0, 1], "distractor": [0, 0], "correct": True}}
    unforked = {"id": "unforked", "marks": {"decisive": [0, 0], "distractor": [1, 0], "correct": True}}
    shown = pick_shown([*plain, lost, unforked, framed], 3)
    assert [r["id"] for r in shown] == ["framed", 0, 1]
