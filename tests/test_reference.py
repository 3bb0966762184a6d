"""Reference results (arca.report.reference): saving a finished run's tables, the verdict on the
reference's claims (paired differences, uniform's gain, the flat null, ARCA's Gini order, and the
headline numbers against the reference's seed spread), and the number-by-number list (``--exact``)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from arca import cli
from arca.paths import paths_of
from arca.report.reference import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    INCONCLUSIVE,
    KEYS,
    NOT_REPRODUCED,
    NULL_FLAT_TOL,
    REPRODUCED,
    Claim,
    Verdict,
    compare_reference,
    compare_table,
    reference_verdict,
    save_reference,
)
from arca.stats import bootstrap_mean_ci

REPO = Path(__file__).resolve().parents[1]


def _perf(changes: dict | None = None) -> pd.DataFrame:
    df = pd.DataFrame(
        [
            {
                "label": "base",
                "method": "base",
                "rank": math.nan,
                "greedy": 0.2,
                "greedy_lo": 0.15,
                "step_seconds": 1.0,
            },
            {
                "label": "uniform",
                "method": "uniform",
                "rank": 8.0,
                "greedy": 0.5,
                "greedy_lo": 0.45,
                "step_seconds": 2.0,
            },
            {"label": "arca", "method": "arca", "rank": 8.0, "greedy": 0.4, "greedy_lo": math.nan, "step_seconds": 3.0},
        ]
    )
    for (row, col), value in (changes or {}).items():
        df.loc[row, col] = value
    return df


def test_identical_tables_match_and_timings_are_ignored():
    assert compare_table("performance", _perf(), _perf({(1, "step_seconds"): 99.0}), DEFAULT_ATOL, 0.0) == []


def test_numbers_beyond_the_tolerance_are_listed():
    ours = _perf({(1, "greedy"): 0.5 + 1e-9, (2, "greedy"): 0.41})
    diffs = compare_table("performance", _perf(), ours, atol=1e-6, rtol=0.0)
    assert [(d.row, d.column, d.reference, d.ours) for d in diffs] == [("label=arca, rank=8", "greedy", "0.4", "0.41")]
    assert diffs[0].delta == pytest.approx(0.01)
    assert compare_table("performance", _perf(), ours, atol=0.02, rtol=0.0) == []
    assert compare_table("performance", _perf(), ours, atol=0.0, rtol=0.05) == []


def test_empty_against_a_number_text_and_rows_are_differences():
    ours = _perf({(2, "greedy_lo"): 0.3, (0, "method"): "other"})
    ours = pd.concat([ours, pd.DataFrame([{"label": "oracle", "method": "oracle", "rank": 8.0, "greedy": 0.9}])])
    diffs = compare_table("performance", _perf(), ours.iloc[1:], DEFAULT_ATOL, 0.0)
    found = {(d.row, d.column, d.reference, d.ours) for d in diffs}
    assert ("label=base, rank=", "(row)", "present", "missing") in found
    assert ("label=oracle, rank=8", "(row)", "missing", "present") in found
    assert ("label=arca, rank=8", "greedy_lo", "", "0.3") in found
    assert len(found) == 3


def test_keys_name_every_compared_table():
    assert set(KEYS) == {
        "performance",
        "concentration",
        "paired",
        "sample_efficiency",
        "credit_precision",
        "runs",
        "learning_curves",
        "outcomes",
        "mc_agreement",
        "tuning",
    }


def test_save_then_compare_round_trip_and_cli_status(tmp_path, monkeypatch, capsys):
    from helpers import make_sweep

    from arca.report.figures import figures_main
    from arca.report.tables import aggregate_main

    cfg = make_sweep(tmp_path / "results")
    with pytest.raises(FileNotFoundError, match="not finished"):
        save_reference(cfg, tmp_path / "ref")
    aggregate_main(cfg, None)
    figures_main(cfg, None)
    names = save_reference(cfg, tmp_path / "ref")
    assert "performance.csv" in names and "learning_curves.png" in names and "provenance.json" in names
    assert compare_reference(cfg, tmp_path / "ref") == []

    monkeypatch.chdir(tmp_path)
    cfg_file = tmp_path / "tiny.yaml"
    from arca.config import to_dict

    cfg_file.write_text(yaml.safe_dump(to_dict(cfg)))
    argv = ["compare-reference", "--config", str(cfg_file), "--reference", str(tmp_path / "ref")]
    assert cli.main(argv) == 0
    assert "matches the reference" in paths_of(cfg).reference_comparison.read_text()
    verdict = reference_verdict(tmp_path / "ref", paths_of(cfg).root / "tables")
    assert verdict.claims and verdict.reproduced
    assert any("gini rises with rank: r2 < r8" in c.claim for c in verdict.claims)  # SPEC's Gini 0.35 < 0.45
    assert "claims reproduced" in paths_of(cfg).reference_claims.read_text()
    # one changed number in a copy of the reference: --exact lists it and exits with status 1
    changed = tmp_path / "ref2"
    shutil.copytree(tmp_path / "ref", changed)
    perf = pd.read_csv(changed / "performance.csv", keep_default_na=False, na_values=[""])
    perf.loc[perf["label"] == "uniform", "greedy"] += 0.125
    perf.to_csv(changed / "performance.csv", index=False)
    exact = [*argv[:-1], str(changed), "--exact"]
    capsys.readouterr()
    assert cli.main(exact) == 1
    out = capsys.readouterr()
    assert "1 numbers differ" in out.out and "label=uniform, rank=8" in out.out and "ReferenceMismatch" in out.err
    assert "claim" not in out.out
    assert cli.main([*exact, "--atol", "0.2"]) == 0
    # without --exact the same change claims nothing new: every claim holds, status 0, the number counted
    capsys.readouterr()
    assert cli.main([*argv[:-1], str(changed)]) == 0
    out = capsys.readouterr().out
    assert "claims reproduced." in out and "1 numbers differ" in out and "label=uniform, rank=8" not in out
    assert "label=uniform, rank=8" in paths_of(cfg).reference_comparison.read_text()


def test_cli_defaults_are_the_modules():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "step").choices["compare-reference"]
    defaults = {a.dest: a.default for a in sub._actions}
    assert (defaults["atol"], defaults["rtol"]) == (DEFAULT_ATOL, DEFAULT_RTOL)
    assert defaults["exact"] is False  # the verdict is the default, the number-by-number list asked for


def test_default_tolerance_passes_the_measured_kernel_noise_only():
    # the largest difference measured between torch's AVX-512 and AVX2 kernels on the smoke config
    ref = pd.DataFrame([{"block": "sweep", "label": "entropy_reduction", "rank": 4, "train_decisive_ratio": 9.2789562}])
    noise = ref.assign(train_decisive_ratio=9.2789362)
    assert compare_table("credit_precision", ref, noise, DEFAULT_ATOL, DEFAULT_RTOL) == []
    real = ref.assign(train_decisive_ratio=9.29)  # a change in the third decimal is a difference
    assert len(compare_table("credit_precision", ref, real, DEFAULT_ATOL, DEFAULT_RTOL)) == 1


# ----------------------------------------------------------------------------- the verdict
# A small experiment's tables: the base, uniform r8 (two seeds), the null control, ARCA's paired
# differences from uniform and ARCA's Gini at ranks 2 and 8.
PAIRED = {("arca", 2): (-0.2, -0.3, -0.1), ("arca", 8): (0.01, -0.05, 0.07)}
GINI = {2: (0.35, 0.34, 0.36), 8: (0.45, 0.44, 0.46)}


def _fake_tables(folder: Path, uniform=(0.58, 0.62), null=0.22, paired=None, gini=None, base=0.2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    seeds = (1, 2)
    perf = [
        {"label": "base", "method": "base", "rank": math.nan, "greedy": base, "pass_at_k": 0.5},
        {"label": "uniform", "method": "uniform", "rank": 8, "greedy": sum(uniform) / 2, "pass_at_k": 0.8},
        {"label": "null", "method": "uniform", "rank": 8, "greedy": null, "pass_at_k": 0.5},
    ]
    runs = [{"run": "base", "label": "base", "method": "base", "rank": math.nan, "greedy": base, "pass_at_k": 0.5}]
    for seed, g, pk in zip(seeds, uniform, (0.79, 0.81)):
        runs.append({"run": f"uniform_r8_s{seed}", "label": "uniform", "rank": 8, "greedy": g, "pass_at_k": pk})
    for seed, shift in zip(seeds, (-0.005, 0.005)):
        runs.append({"run": f"null_r8_s{seed}", "label": "null", "rank": 8, "greedy": null + shift, "pass_at_k": 0.5})
    pairs = [
        {"label": lab, "method": lab, "rank": r, "reference": "uniform_r8", "diff": d, "diff_lo": lo, "diff_hi": hi}
        for (lab, r), (d, lo, hi) in (PAIRED if paired is None else paired).items()
    ]
    conc = [{"label": "uniform", "method": "uniform", "rank": 8, "gini": 0.0, "gini_lo": 0.0, "gini_hi": 0.0}]
    conc += [
        {"label": "arca", "method": "arca", "rank": r, "gini": g, "gini_lo": lo, "gini_hi": hi}
        for r, (g, lo, hi) in (GINI if gini is None else gini).items()
    ]
    for name, rows in (("performance", perf), ("runs", runs), ("paired", pairs), ("concentration", conc)):
        pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)
    return folder


def _claim(verdict: Verdict, starts: str) -> Claim:
    (found,) = [c for c in verdict.claims if c.claim.startswith(starts)]
    return found


@pytest.mark.parametrize(
    "ref, ours, words, expected",
    [
        ((-0.2, -0.3, -0.1), (-0.15, -0.25, -0.05), "negative", REPRODUCED),
        ((-0.2, -0.3, -0.1), (0.1, 0.05, 0.2), "negative", NOT_REPRODUCED),
        ((-0.2, -0.3, -0.1), (-0.05, -0.1, 0.02), "negative", INCONCLUSIVE),
        ((0.1, 0.02, 0.2), (0.08, 0.01, 0.15), "positive", REPRODUCED),
        ((0.1, 0.02, 0.2), (-0.1, -0.2, -0.02), "positive", NOT_REPRODUCED),
        # an interval that touches 0 contains it: no detectable difference
        ((-0.06, -0.14, 0.0), (0.0, -0.04, 0.04), "no detectable difference", REPRODUCED),
        ((0.01, -0.05, 0.07), (0.1, 0.05, 0.15), "no detectable difference", NOT_REPRODUCED),
        ((0.01, -0.05, 0.07), (-0.1, -0.15, -0.05), "no detectable difference", NOT_REPRODUCED),
    ],
)
def test_a_paired_difference_is_claimed_by_the_reference_and_judged_by_our_interval(
    tmp_path, ref, ours, words, expected
):
    ref_dir = _fake_tables(tmp_path / "ref", paired={("arca", 2): ref})
    our_dir = _fake_tables(tmp_path / "ours", paired={("arca", 2): ours})
    claim = _claim(reference_verdict(ref_dir, our_dir), "arca r2 minus uniform_r8")
    assert claim.claim == f"arca r2 minus uniform_r8, greedy accuracy: {words}"
    assert (claim.table, claim.verdict) == ("paired.csv", expected)
    assert claim.reference.startswith(f"{ref[0]:.3f} [")


def test_a_row_missing_from_our_tables_is_not_reproduced(tmp_path):
    ref_dir = _fake_tables(tmp_path / "ref")
    our_dir = _fake_tables(tmp_path / "ours", paired={("arca", 2): PAIRED[("arca", 2)]})
    claim = _claim(reference_verdict(ref_dir, our_dir), "arca r8 minus uniform_r8")
    assert (claim.ours, claim.verdict) == ("missing", NOT_REPRODUCED)


def test_the_auc_difference_of_sample_efficiency_is_a_claim(tmp_path):
    ref_dir, our_dir = _fake_tables(tmp_path / "ref"), _fake_tables(tmp_path / "ours")
    row = {"label": "arca", "method": "arca", "rank": 8, "reference": "uniform_r8", "p_improve": 0.2}
    row.update(auc_greedy_diff=-0.1, auc_greedy_diff_lo=-0.15, auc_greedy_diff_hi=-0.05)
    row.update(steps_to_threshold_diff=5.0, steps_to_threshold_diff_lo=0.0, steps_to_threshold_diff_hi=10.0)
    uniform = {"label": "uniform", "method": "uniform", "rank": 8, "reference": "uniform_r8"}  # no difference
    pd.DataFrame([uniform, row]).to_csv(ref_dir / "sample_efficiency.csv", index=False)
    ours = dict(row, auc_greedy_diff_hi=0.01)
    pd.DataFrame([uniform, ours]).to_csv(our_dir / "sample_efficiency.csv", index=False)
    found = {
        c.claim: c.verdict for c in reference_verdict(ref_dir, our_dir).claims if c.table == "sample_efficiency.csv"
    }
    assert found == {  # steps to threshold is not a headline claim
        "arca r8 minus uniform_r8, area under the greedy learning curve: negative": INCONCLUSIVE,
    }
    # a table the reference has must be among ours
    (our_dir / "sample_efficiency.csv").unlink()
    with pytest.raises(FileNotFoundError, match="sample_efficiency.csv"):
        reference_verdict(ref_dir, our_dir)


@pytest.mark.parametrize(
    "ours, expected",
    [((0.58, 0.62), REPRODUCED), ((0.2, 0.22), INCONCLUSIVE), ((0.1, 0.15), NOT_REPRODUCED)],
)
def test_uniform_gain_over_base_from_the_per_seed_runs(tmp_path, ours, expected):
    ref_dir = _fake_tables(tmp_path / "ref")
    our_dir = _fake_tables(tmp_path / "ours", uniform=ours)
    claim = _claim(reference_verdict(ref_dir, our_dir), "uniform r8 minus base")
    assert claim.claim.endswith(": positive") and claim.table == "runs.csv"
    assert claim.verdict == expected
    # the mean of the seeds' gains with the package's bootstrap over seeds, not a new one
    gains = [[g - 0.2] for g in ours]
    assert claim.ours == bootstrap_mean_ci(gains).fmt(3)


def test_a_reference_whose_null_drifted_claims_nothing_about_it(tmp_path):
    ref_dir = _fake_tables(tmp_path / "ref", null=0.4)
    our_dir = _fake_tables(tmp_path / "ours", null=0.21)
    assert not [c for c in reference_verdict(ref_dir, our_dir).claims if c.claim.startswith("null r8 minus base")]


@pytest.mark.parametrize(
    "ref_null, our_null, ref_words, expected",
    [
        (0.22, 0.18, "flat (within ±0.1)", REPRODUCED),
        (0.26, 0.2 + NULL_FLAT_TOL - 0.001, "flat (within ±0.1)", REPRODUCED),
        (0.22, 0.35, "flat (within ±0.1)", NOT_REPRODUCED),
        (0.22, 0.05, "flat (within ±0.1)", NOT_REPRODUCED),
    ],
)
def test_the_null_control_is_flat(tmp_path, ref_null, our_null, ref_words, expected):
    ref_dir = _fake_tables(tmp_path / "ref", null=ref_null)
    our_dir = _fake_tables(tmp_path / "ours", null=our_null)
    claim = _claim(reference_verdict(ref_dir, our_dir), "null r8 minus base")
    assert claim.claim == f"null r8 minus base, greedy accuracy: {ref_words}"
    assert (claim.table, claim.reference, claim.verdict) == ("performance.csv", f"{ref_null - 0.2:+.3f}", expected)


@pytest.mark.parametrize(
    "ours, expected",
    [
        ({2: (0.30, 0.29, 0.31), 8: (0.50, 0.49, 0.51)}, REPRODUCED),
        ({2: (0.45, 0.44, 0.46), 8: (0.35, 0.34, 0.36)}, NOT_REPRODUCED),  # clearly the other way round
        ({2: (0.40, 0.35, 0.45), 8: (0.42, 0.38, 0.46)}, INCONCLUSIVE),  # intervals overlap
        ({2: (0.35, 0.34, 0.36)}, NOT_REPRODUCED),  # r8 missing
    ],
)
def test_arca_gini_order_across_ranks(tmp_path, ours, expected):
    ref_dir = _fake_tables(tmp_path / "ref")
    our_dir = _fake_tables(tmp_path / "ours", gini=ours)
    verdict = reference_verdict(ref_dir, our_dir)
    claim = _claim(verdict, "arca's gini")
    assert claim.claim == "arca's gini rises with rank: r2 < r8"
    assert (claim.table, claim.reference, claim.verdict) == ("concentration.csv", "r2 0.350 < r8 0.450", expected)
    assert not verdict.notes


def test_no_clear_gini_order_in_the_reference_is_a_note_not_a_claim(tmp_path):
    turning = {2: (0.50, 0.47, 0.53), 4: (0.515, 0.505, 0.526), 8: (0.497, 0.46, 0.52)}  # the default reference's
    ref_dir = _fake_tables(tmp_path / "ref", gini=turning)
    verdict = reference_verdict(ref_dir, _fake_tables(tmp_path / "ours"))
    assert not [c for c in verdict.claims if c.table == "concentration.csv"]
    assert len(verdict.notes) == 1 and "no clear order" in verdict.notes[0] and "r4 0.515" in verdict.notes[0]


def test_headline_numbers_against_the_reference_seed_spread(tmp_path):
    ref_dir = _fake_tables(tmp_path / "ref")
    our_dir = _fake_tables(tmp_path / "ours", uniform=(0.62, 0.66))  # mean 0.64, above the seeds' 0.58..0.62
    verdict = reference_verdict(ref_dir, our_dir)
    within = {(s.cell, s.quantity): (s.lo, s.hi, s.within) for s in verdict.spread}
    assert within[("uniform r8", "greedy")] == (0.58, 0.62, False)
    assert within[("uniform r8", "pass_at_k")] == (0.79, 0.81, True)
    assert within[("base", "greedy")] == (0.2, 0.2, True)
    assert within[("null r8", "greedy")][2]
    # for reading only: the claims still all hold
    assert verdict.reproduced


def test_summary_line_counts_each_verdict():
    claims = [Claim("c", "t", "r", "o", v) for v in [REPRODUCED] * 7 + [INCONCLUSIVE] * 2]
    assert Verdict(claims, [], []).summary() == "7 of 9 claims reproduced, 2 inconclusive"
    claims.append(Claim("c", "t", "r", "o", NOT_REPRODUCED))
    assert Verdict(claims, [], []).summary() == "7 of 10 claims reproduced, 1 not reproduced, 2 inconclusive"
    assert not Verdict(claims, [], []).reproduced
    assert Verdict(claims[:7], [], []).reproduced


def _fake_config(tmp_path: Path) -> tuple[Path, Path]:
    """A config file whose results land in tmp_path/results/fake/, and that folder's tables."""
    cfg_file = tmp_path / "fake.yaml"
    cfg_file.write_text(yaml.safe_dump({"name": "fake", "paths": {"results": str(tmp_path / "results")}}))
    return cfg_file, tmp_path / "results" / "fake" / "tables"


def test_cli_prints_the_claim_table_first_and_exits_1_unless_every_claim_holds(tmp_path, capsys):
    cfg_file, tables = _fake_config(tmp_path)
    ref_dir = _fake_tables(tmp_path / "ref")
    argv = ["compare-reference", "--config", str(cfg_file), "--reference", str(ref_dir)]
    _fake_tables(tables)
    capsys.readouterr()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "**Verdict: 5 of 5 claims reproduced.**" in out  # gain, null, two differences, Gini order
    # ARCA r2 no longer below uniform, the null learned
    _fake_tables(tables, paired={**PAIRED, ("arca", 2): (-0.05, -0.1, 0.01)}, null=0.35)
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    out = captured.out
    summary = "3 of 5 claims reproduced, 1 not reproduced, 1 inconclusive"
    assert f"**Verdict: {summary}.**" in out
    assert f"ClaimsNotReproduced: {summary}" in captured.err
    verdict_at, table_at, spread_at = out.index("**Verdict"), out.index("| # | claim"), out.index("## Headline numbers")
    assert verdict_at < table_at < spread_at  # the verdict and claims before any per-number list
    assert "| null r8 minus base, greedy accuracy: flat (within ±0.1) | performance.csv | +0.020 | +0.150 |" in out
    # the tables of this fake lack what the number-by-number list needs: said, and the verdict stands
    assert "Number by number: not compared" in out
    assert (tables.parent / "reference_claims.md").read_text() == out
    # --exact is the number-by-number list, which needs every table
    assert cli.main([*argv, "--exact"]) == 2
    assert "missing table" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "results" / "reference").iterdir() if p.is_dir()))
def test_every_committed_reference_reproduces_its_own_claims(name):
    ref = REPO / "results" / "reference" / name
    verdict = reference_verdict(ref, ref)
    assert verdict.claims and verdict.reproduced, [c for c in verdict.claims if c.verdict != REPRODUCED]
    assert all(s.within for s in verdict.spread)


def test_the_default_reference_compared_with_itself_through_the_cli(tmp_path, capsys, monkeypatch):
    tables = tmp_path / "results" / "default" / "tables"
    tables.mkdir(parents=True)
    for f in (REPO / "results" / "reference" / "default").glob("*.csv"):
        shutil.copyfile(f, tables / f.name)
    monkeypatch.chdir(REPO)  # the default reference folder is relative to the repository root
    argv = ["compare-reference", "--config", "configs/default.yaml", "--set", f"paths.results={tmp_path / 'results'}"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    n = re.search(r"\*\*Verdict: (\d+) of (\d+) claims reproduced\.\*\*", out)
    assert n and n[1] == n[2] and int(n[1]) > 10
    for claim in (
        "uniform r8 minus base, greedy accuracy (mean of the seeds' gains): positive",
        "null r8 minus base, greedy accuracy: flat (within ±0.1)",
        "arca r2 minus uniform_r8, greedy accuracy: negative",
        "divergence r8 minus uniform_r8, greedy accuracy: negative",
        "oracle_decisive r8 minus uniform_r8, area under the greedy learning curve: positive",
        "oracle_decisive r8 minus uniform_r8, greedy accuracy: positive",
    ):
        assert f"| {claim} |" in out
    assert "No ordering claim" in out  # ARCA's Gini by rank: intervals overlap in this reference
    assert "every number of the 10 tables matches" in out
    assert cli.main([*argv, "--exact"]) == 0
