"""Tests of arca.report: aggregation into tables, figures and the heat-map page.

The aggregation tests write a tiny sweep of hand-made producer files (metrics.jsonl,
final_weights.json, summary.json, samples.jsonl) of exactly the contracted shape, and check
the tables against numbers computed here independently of the module.
"""

from __future__ import annotations

import math
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from helpers import N_SAMPLES, SEEDS, SPEC, STEPS, K, greedy_of, make_sweep, step_values

from arca.paths import paths_of
from arca.report.heatmap import NEWLINE_MARK, agreement, rank_correlation, render_heatmap
from arca.report.paper import PAPER_REPORTED, match_paper_ranks
from arca.report.tables import aggregate_main

# ----------------------------------------------------------------------------- a tiny sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cfg = make_sweep(tmp_path_factory.mktemp("results"))
    aggregate_main(cfg, None)
    return cfg


def _row(df, label, rank=None):
    hit = df[(df["label"] == label) & ((df["rank"] == rank) if rank is not None else df["rank"].isna())]
    assert len(hit) == 1, (label, rank)
    return hit.iloc[0]


def test_performance_numbers(sweep):
    perf = pd.read_csv(paths_of(sweep).root / "tables" / "performance.csv")
    assert len(perf) == len(SPEC) + 1
    for (label, _, rank), (greedy, counts, (_, _, reward)) in SPEC.items():
        row = _row(perf, label, rank)
        exp_greedy = np.mean([greedy_of(greedy, s) for s in SEEDS])
        exp_pak = np.mean([1 - math.comb(N_SAMPLES - c, K) / math.comb(N_SAMPLES, K) for c in counts])
        exp_reward = np.mean([np.mean(step_values(reward, s)) for s in SEEDS])
        assert row["greedy"] == pytest.approx(exp_greedy, abs=1e-6)
        assert row["pass_at_k"] == pytest.approx(exp_pak, abs=1e-6)
        assert row["train_reward"] == pytest.approx(exp_reward, abs=1e-6)
        assert row["greedy_lo"] <= row["greedy"] <= row["greedy_hi"]
        assert row["n_seeds"] == len(SEEDS) and row["trainable_params"] == 1000 * rank
    # Hand check of one cell: uniform greedy = (3 + 4) / 12, pass@2 = (1 + 5/6 + 1/2 + 0 + 0 + 1) / 6.
    uni = _row(perf, "uniform", 8)
    assert uni["greedy"] == pytest.approx(7 / 12, abs=1e-6)
    assert uni["pass_at_k"] == pytest.approx((1 + 5 / 6 + 0.5 + 1) / 6, abs=1e-6)
    base = _row(perf, "base")
    assert base["greedy"] == pytest.approx(1 / 6, abs=1e-6)
    md = (paths_of(sweep).root / "tables" / "performance.md").read_text()
    assert "| uniform | 8 | 0.583 [" in md and "pass@2" in md
    assert "greedy IQM over runs" in md
    tex = (paths_of(sweep).root / "tables" / "performance.tex").read_text()
    assert r"arca\_permuted" in tex and r"\toprule" in tex


def test_concentration_numbers(sweep):
    conc = pd.read_csv(paths_of(sweep).root / "tables" / "concentration.csv")
    assert len(conc) == len(SPEC)
    for (label, _, rank), (_, _, (gini, eff, _)) in SPEC.items():
        row = _row(conc, label, rank)
        assert row["gini"] == pytest.approx(np.mean([step_values(gini, s) for s in SEEDS]), abs=1e-6)
        assert row["eff_ratio"] == pytest.approx(np.mean([step_values(eff, s) for s in SEEDS]), abs=1e-6)
        # Two seeds 0.02 apart: the seed bootstrap interval spans exactly the two seed means.
        assert row["gini_hi"] - row["gini_lo"] == pytest.approx(0.02, abs=1e-6)
        # grad norms 0.9, 1.3, 1.7 against train.grad_clip 1.0: clipping acted on 2 of 3 steps
        assert row["clipped_frac"] == pytest.approx(2 / 3)


def test_runs_and_curves(sweep):
    tables = paths_of(sweep).root / "tables"
    runs = pd.read_csv(tables / "runs.csv")
    assert set(runs["run"]) == set(sweep.run_ids()) | {"base"}
    r = runs[runs["run"] == "surprisal_r8_s2"].iloc[0]
    assert r["greedy"] == pytest.approx(2 / 6) and r["gini"] == pytest.approx(np.mean(step_values(0.9, 2)))
    assert r["trainable_params"] == 8000 and r["steps"] == STEPS
    curves = pd.read_csv(tables / "curves.csv")
    assert len(curves) == len(sweep.run_ids()) * STEPS
    assert list(curves.columns[:6]) == ["step", "run", "label", "method", "rank", "seed"]


def test_paired_and_comparison(sweep):
    tables = paths_of(sweep).root / "tables"
    paired = pd.read_csv(tables / "paired.csv")
    assert set(paired["label"]) == {"surprisal", "arca", "arca_permuted"}
    vs_uni = paired[paired["vs_uniform"]]
    assert len(vs_uni) == 4 and (vs_uni["reference"] == "uniform_r8").all()
    # the ablation pair from the cell's `compare`: arca_permuted r8 minus arca r8, on the same problems
    abl = paired[~paired["vs_uniform"]]
    assert len(abl) == 1 and abl.iloc[0]["label"] == "arca_permuted" and abl.iloc[0]["reference"] == "arca_r8"
    perm_mean = np.mean([greedy_of(SPEC[("arca_permuted", "arca_permuted", 8)][0], s) for s in SEEDS])
    arca_mean = np.mean([greedy_of(SPEC[("arca", "arca", 8)][0], s) for s in SEEDS])
    assert abl.iloc[0]["diff"] == pytest.approx(perm_mean - arca_mean, abs=1e-6)
    assert "Ablation pairs" in (tables / "paper_comparison.md").read_text()
    sur = _row(paired, "surprisal", 8)
    assert sur["diff"] == pytest.approx(
        np.mean([greedy_of(SPEC[("surprisal", "surprisal", 8)][0], s) for s in SEEDS]) - 7 / 12, abs=1e-6
    )
    assert sur["diff"] < 0 and sur["diff_lo"] <= sur["diff"] <= sur["diff_hi"]
    text = (tables / "paper_comparison.md").read_text()
    # The paper's numbers appear, our arca ranks 2/8 map onto the paper's 16/64.
    assert "0.620" in text and "0.941" in text
    assert "| arca | 64 | 8 |" in text and "| arca | 16 | 2 |" in text and "| arca | 4 | - |" in text
    assert "(i) Output-distribution baselines concentrated (Gini > 0.60): holds" in text
    assert "(ii) ARCA in the middle regime (Gini in 0.25-0.60): holds" in text
    assert "(iii) ARCA's accuracy competitive with uniform" in text and "holds (best ARCA r8" in text
    assert "arca_permuted" in text  # cells beyond the paper's are listed


def test_match_paper_ranks():
    assert match_paper_ranks([2, 4, 8], [4, 16, 64]) == {4: 2, 16: 4, 64: 8}
    assert match_paper_ranks([8], [4, 16, 64]) == {64: 8}
    assert match_paper_ranks([4, 8], [64]) == {64: 8}
    assert ("arca", 64) in PAPER_REPORTED and PAPER_REPORTED[("uniform", 64)]["greedy"] == 0.620


def test_missing_input_names_the_path(tmp_path):
    cfg = make_sweep(tmp_path)
    missing = paths_of(cfg).eval("arca_r2_s1").root / "samples.jsonl"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="arca_r2_s1/samples.jsonl"):
        aggregate_main(cfg, None)


def _run_greedy(label, rank):
    """The per-run greedy accuracies of a cell of SPEC, by seed."""
    greedy = SPEC[next(key for key in SPEC if key[0] == label and key[2] == rank)][0]
    return [float(np.mean(greedy_of(greedy, s))) for s in SEEDS]


def test_performance_iqm_over_runs(sweep):
    perf = pd.read_csv(paths_of(sweep).root / "tables" / "performance.csv")
    cols = list(perf.columns)
    assert cols[cols.index("greedy_hi") + 1 : cols.index("greedy_hi") + 4] == [
        "greedy_iqm",
        "greedy_iqm_lo",
        "greedy_iqm_hi",
    ]
    runs = pd.read_csv(paths_of(sweep).root / "tables" / "runs.csv")
    for label, _, rank in SPEC:
        row = _row(perf, label, rank)
        # Two runs: nothing is trimmed, the IQM is the mean of the runs' accuracies (runs.csv's `greedy`).
        assert row["greedy_iqm"] == pytest.approx(np.mean(_run_greedy(label, rank)), abs=1e-6)
        per_run = runs[(runs["label"] == label) & (runs["rank"] == rank)]["greedy"]
        assert row["greedy_iqm"] == pytest.approx(per_run.mean(), abs=1e-6)
        # Resampling two runs: the interval runs from the lower run to the higher one.
        assert row["greedy_iqm_lo"] == pytest.approx(per_run.min(), abs=1e-6)
        assert row["greedy_iqm_hi"] == pytest.approx(per_run.max(), abs=1e-6)
    assert _row(perf, "base")[["greedy_iqm", "greedy_iqm_lo", "greedy_iqm_hi"]].isna().all()  # no runs


def test_paired_probability_of_improvement(sweep):
    tables = paths_of(sweep).root / "tables"
    paired = pd.read_csv(tables / "paired.csv")
    assert list(paired.columns[-6:]) == ["diff", "diff_lo", "diff_hi", "p_improve", "p_improve_lo", "p_improve_hi"]
    # By hand, over all pairs of runs (uniform's runs score 3/6 and 4/6):
    # surprisal (1/6, 2/6) loses every pair; arca r2 (2/6, 3/6) only ties 3/6 once: 0.5 / 4;
    # arca r8 (4/6, 4/6) beats 3/6 twice and ties 4/6 twice: 3 / 4; arca_permuted (3/6, 4/6)
    # against uniform is uniform itself: 1/2, and against arca r8 ties twice: 1 / 4.
    expected = {
        ("surprisal", "uniform_r8"): (0.0, 0.0, 0.0),
        ("arca", "uniform_r8", 2): (0.125, 0.0, 0.5),
        ("arca", "uniform_r8", 8): (0.75, 0.5, 1.0),
        ("arca_permuted", "uniform_r8"): (0.5, 0.0, 1.0),
        ("arca_permuted", "arca_r8"): (0.25, 0.0, 0.5),
    }
    for key, (p, lo, hi) in expected.items():
        label, ref = key[:2]
        hit = paired[(paired["label"] == label) & (paired["reference"] == ref)]
        if len(key) == 3:
            hit = hit[hit["rank"] == key[2]]
        assert len(hit) == 1, key
        row = hit.iloc[0]
        assert row["p_improve"] == pytest.approx(p, abs=1e-9), key
        assert row["p_improve_lo"] <= row["p_improve"] <= row["p_improve_hi"], key
        assert (row["p_improve_lo"], row["p_improve_hi"]) == pytest.approx((lo, hi), abs=1e-9), key
    md = (tables / "paired.md").read_text()
    assert "P(improvement over reference) [95% CI]" in md
    assert "| arca | 8 | uniform_r8 | " in md and "| 0.750 [0.500, 1.000] |" in md


def test_tables_are_byte_reproducible(sweep, tmp_path):
    again = make_sweep(tmp_path)
    aggregate_main(again, None)
    for name in ("performance.csv", "performance.md", "paired.csv", "paired.md"):
        ours = (paths_of(again).root / "tables" / name).read_text().replace(str(paths_of(again).root), "")
        first = (paths_of(sweep).root / "tables" / name).read_text().replace(str(paths_of(sweep).root), "")
        assert ours == first, name


# ----------------------------------------------------------------------------- figures
def test_figures_written(sweep):
    from arca.paths import FIGURES
    from arca.report.figures import figures_main

    paths = figures_main(sweep, None)
    for name in FIGURES:
        for ext in ("png", "pdf"):
            p = paths_of(sweep).root / "figures" / f"{name}.{ext}"
            assert p in paths and p.is_file() and p.stat().st_size > 1000, p
    assert (paths_of(sweep).root / "figures" / "gini_bars.png").read_bytes()[:4] == b"\x89PNG"
    assert "performance_profile" in FIGURES
    for ext in ("png", "pdf"):
        assert paths_of(sweep).root / "figures" / f"performance_profile.{ext}" in paths
    assert (paths_of(sweep).root / "figures" / "performance_profile.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((paths_of(sweep).root / "figures").glob(".*tmp*"))  # no temporaries left behind


def test_lorenz_curve_shape():
    from arca.report.figures_concentration import LORENZ_GRID, lorenz_curve

    flat = lorenz_curve([0.25] * 4)
    assert np.allclose(flat, LORENZ_GRID)
    peaked = lorenz_curve([0.97, 0.01, 0.01, 0.01])
    assert peaked[-1] == pytest.approx(1.0) and peaked[0] == 0.0
    assert np.all(peaked <= LORENZ_GRID + 1e-12) and peaked[len(peaked) // 2] < 0.1


# ----------------------------------------------------------------------------- heat map
class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.tokens, self.legend, self.scripts, self.sections = [], [], False, 0, 0
        self._in_tok, self._text = False, ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class", "")
        if tag == "tr" and cls == "method-row":
            self.rows.append(a["data-method"])
        if tag == "section":
            self.sections += 1
        if tag == "div" and cls == "legend":
            self.legend = True
        if tag in ("script", "link", "img"):
            self.scripts += 1
        if tag == "span" and cls == "tok":
            self._in_tok, self._text = True, ""
            self.tokens.append({"title": a["title"], "style": a["style"], "text": None})

    def handle_data(self, data):
        if self._in_tok:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "span" and self._in_tok:
            self.tokens[-1]["text"] = self._text
            self._in_tok = False


def _rollout(tokens, prompt="What is 1 < 2 & 3?"):
    n = len(tokens)
    return {
        "prompt": prompt,
        "tokens": tokens,
        "weights": {
            "uniform": [1 / n] * n,
            "arca": [0.7] + [0.3 / (n - 1)] * (n - 1),
            "surprisal": [0.0] * (n - 1) + [1.0],
        },
        "gini": {"uniform": 0.0, "arca": 0.5, "surprisal": 0.75},
        "reward": 1.0,
    }


def test_render_heatmap_structure_and_escaping():
    tokens = ["<b>", " &", "x\ny", "  ", "</td>"]
    page = render_heatmap([_rollout(tokens), _rollout(["a", "b"], prompt="second")])
    p = _Collector()
    p.feed(page)
    assert p.sections == 2
    assert p.rows == ["uniform", "arca", "surprisal"] * 2
    assert p.legend and p.scripts == 0
    # Tokens come back as text, never as markup: 5 + 2 tokens for each of 3 methods.
    assert len(p.tokens) == 3 * (5 + 2)
    texts = [t["text"] for t in p.tokens[:5]]
    assert texts == ["<b>", " &", f"x{NEWLINE_MARK}y", "  ", "</td>"]
    assert "<b>" not in page and "&lt;b&gt;" in page and "1 &lt; 2 &amp; 3" in page
    # Exact weight in the title; shading relative to the row max (arca's first token is darkest).
    arca_first = p.tokens[5]
    assert "w = 0.7" in arca_first["title"] and "rgba(214, 39, 40, 1.000)" in arca_first["style"]
    assert "rgba(214, 39, 40, 0.000)" in p.tokens[10]["style"]  # surprisal's zero weight is unshaded
    assert "Gini 0.500" in page


def test_render_heatmap_rejects_length_mismatch():
    bad = _rollout(["a", "b", "c"])
    bad["weights"]["arca"] = [1.0]
    with pytest.raises(ValueError, match="arca"):
        render_heatmap([bad])


def test_rank_correlation_hand_cases():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: a = ranks (1, 2.5, 2.5, 4), b = (1, 2, 3, 4); rho = cov / (sd sd)
    a, b = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    assert rank_correlation([0.1, 0.5, 0.5, 0.9], [1, 2, 3, 4]) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert math.isnan(rank_correlation([0.25] * 4, [1, 2, 3, 4]))  # uniform weights: undefined
    with pytest.raises(ValueError, match="lengths differ"):
        rank_correlation([1, 2], [1, 2, 3])


def test_heatmap_agreement_with_arca():
    r1 = {
        "weights": {
            "arca": [0.1, 0.2, 0.7],
            "uniform": [1 / 3] * 3,
            "surprisal": [0.7, 0.2, 0.1],
            "arca_layers": [0.2, 0.3, 0.5],
        }
    }
    r2 = {
        "weights": {
            "arca": [0.5, 0.3, 0.2],
            "uniform": [1 / 3] * 3,
            "surprisal": [0.2, 0.3, 0.5],
            "arca_layers": [0.6, 0.1, 0.3],
        }
    }
    agree = agreement([r1, r2])
    assert agree["surprisal"] == (pytest.approx(-1.0), 2)
    assert agree["arca_layers"][0] == pytest.approx((1.0 + 0.5) / 2) and agree["arca_layers"][1] == 2
    assert math.isnan(agree["uniform"][0]) and agree["uniform"][1] == 0
    page = render_heatmap([{**_rollout(["a", "b", "c"]), "weights": r1["weights"]}])
    assert 'class="agreement"' in page and 'data-method="surprisal"' in page and "-1.00" in page


# ----------------------------------------------------------------------------- degenerate data
def _claim_tables(greedy: dict, gini: dict, fallback: dict):
    from arca.report.paper import claims

    cells = [("uniform", 8), ("surprisal", 8), ("divergence", 8), ("arca", 4), ("arca", 8)]
    perf = pd.DataFrame(
        [
            {
                "label": lab,
                "rank": rk,
                "greedy": greedy[lab],
                "greedy_lo": greedy[lab] * 0.9,
                "greedy_hi": min(1.0, greedy[lab] * 1.1),
            }
            for lab, rk in cells
        ]
    )
    conc = pd.DataFrame(
        [{"label": lab, "rank": rk, "gini": gini[lab], "fallback_frac": fallback.get(lab, 0.0)} for lab, rk in cells]
    )
    d = greedy["arca"] - greedy["uniform"]
    paired = pd.DataFrame(
        [
            {
                "label": lab,
                "rank": rk,
                "vs_uniform": True,
                "reference": "uniform_r8",
                "diff": d,
                "diff_lo": d - 0.02,
                "diff_hi": d + 0.02,
            }
            for lab, rk in cells
            if lab != "uniform"
        ]
    )
    return claims(perf, conc, paired)


def test_claims_without_variation_are_not_testable():
    zero = {"uniform": 0.0, "surprisal": 0.0, "divergence": 0.0, "arca": 0.0}
    lines = _claim_tables(
        zero, {"uniform": 0.0, "surprisal": 0.9, "divergence": 0.0, "arca": 0.0}, {"divergence": 1.0, "arca": 1.0}
    )
    assert lines[0].startswith("(i)") and ": holds (surprisal r8 0.900; left out, fell back" in lines[0]
    assert lines[1].startswith("(ii)") and "not testable" in lines[1] and "holds" not in lines[1]
    assert lines[2].startswith("(iii)") and "not testable" in lines[2] and "holds" not in lines[2]
    # the same claims with variation get a verdict
    lines = _claim_tables(
        {"uniform": 0.5, "surprisal": 0.4, "divergence": 0.45, "arca": 0.49},
        {"uniform": 0.0, "surprisal": 0.9, "divergence": 0.92, "arca": 0.4},
        {},
    )
    assert [" holds (" in x for x in lines] == [True, True, True], lines


def test_accuracy_figure_of_all_zero_accuracies_has_a_sane_axis(tmp_path, monkeypatch):
    from arca.report import figures_performance as performance
    from arca.report.figures_common import FRACTION_MIN_SPAN
    from arca.report.style import apply_style

    kept = {}
    monkeypatch.setattr(performance, "save_figure", lambda fig, out, name: kept.setdefault(name, fig) and [])
    perf = pd.DataFrame(
        [
            {
                "label": lab,
                "method": m,
                "rank": rk,
                "trainable_params": 1000.0 * rk,
                "greedy": 0.0,
                "greedy_lo": 0.0,
                "greedy_hi": 1e-17,
            }
            for lab, m, rk in (("uniform", "uniform", 4), ("arca", "arca", 2), ("arca", "arca", 4))
        ]
    )
    apply_style()
    performance.accuracy_vs_params(perf, tmp_path)
    ax = kept["accuracy_vs_params"].axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= FRACTION_MIN_SPAN - 1e-9 and lo <= 0.0 <= hi
    kept["accuracy_vs_params"].canvas.draw()
    assert ax.yaxis.get_offset_text().get_text() == ""  # no "1e-17" above the axis
    curves = pd.DataFrame(
        [{"label": "uniform", "method": "uniform", "rank": 4, "step": s, "reward_mean": 0.0} for s in (1, 2, 3)]
    )
    performance.reward_curves(curves, tmp_path)
    lo, hi = kept["reward_curves"].axes[0].get_ylim()
    assert hi - lo >= FRACTION_MIN_SPAN - 1e-9


def test_performance_profile_figure_values(sweep, tmp_path, monkeypatch):
    """The figure's lines are the fractions of each cell's runs above tau, read from runs.csv."""
    from arca.report import figures_performance as performance
    from arca.report.style import apply_style
    from arca.report.tables import read_table

    kept = {}
    monkeypatch.setattr(performance, "save_figure", lambda fig, out, name: kept.setdefault(name, fig) and [])
    apply_style()
    runs = read_table(paths_of(sweep).root / "tables" / "runs.csv")
    performance.performance_profile(runs, tmp_path)
    ax = kept["performance_profile"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {f"{label} r{rank} (2 runs)" for label, _, rank in SPEC} | {"base model"}
    assert lines["base model"].get_xdata()[0] == pytest.approx(1 / 6)
    for label, _, rank in SPEC:
        line = lines[f"{label} r{rank} (2 runs)"]
        taus, frac = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert line.get_drawstyle() == "steps-post" and taus[0] == 0.0 and taus[-1] == 1.0
        for tau in (0.0, 0.5, 1 / 3, 0.9):
            i = int(np.argmin(np.abs(taus - tau)))
            # the scores as runs.csv holds them (8 digits), which is what the figure reads
            scores = runs[(runs["label"] == label) & (runs["rank"] == rank)]["greedy"]
            assert scores.to_numpy() == pytest.approx(_run_greedy(label, rank))
            expected = np.mean(scores.to_numpy() > taus[i])
            assert frac[i] == pytest.approx(expected), (label, rank, tau)
    # uniform's runs score 3/6 and 4/6: half of them lie above 0.5 (strictly), none above 0.9
    uni = lines["uniform r8 (2 runs)"]
    i = int(np.flatnonzero(np.isclose(uni.get_xdata(), 0.5))[0])
    assert uni.get_ydata()[i] == pytest.approx(0.5)
