"""Reference results (arca.report.reference): saving a finished run's tables and checking another
run against them, number by number."""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest

from arca import cli
from arca.report.reference import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    KEYS,
    compare_reference,
    compare_table,
    save_reference,
)


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
    }


def test_save_then_compare_round_trip_and_cli_status(tmp_path, monkeypatch, capsys):
    from test_report import make_sweep

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
    import yaml

    from arca.config import to_dict

    cfg_file.write_text(yaml.safe_dump(to_dict(cfg)))
    argv = ["compare-reference", "--config", str(cfg_file), "--reference", str(tmp_path / "ref")]
    assert cli.main(argv) == 0
    assert "matches the reference" in (cfg.out_dir / "reference_comparison.md").read_text()
    # one changed number in a copy of the reference: listed, and the step exits with status 1
    changed = tmp_path / "ref2"
    shutil.copytree(tmp_path / "ref", changed)
    perf = pd.read_csv(changed / "performance.csv", keep_default_na=False, na_values=[""])
    perf.loc[perf["label"] == "uniform", "greedy"] += 0.125
    perf.to_csv(changed / "performance.csv", index=False)
    capsys.readouterr()
    assert cli.main([*argv[:-1], str(changed)]) == 1
    out = capsys.readouterr()
    assert "1 numbers differ" in out.out and "label=uniform, rank=8" in out.out and "ReferenceMismatch" in out.err
    assert cli.main([*argv[:-1], str(changed), "--atol", "0.2"]) == 0


def test_cli_defaults_are_the_modules():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "step").choices["compare-reference"]
    defaults = {a.dest: a.default for a in sub._actions}
    assert (defaults["atol"], defaults["rtol"]) == (DEFAULT_ATOL, DEFAULT_RTOL)


def test_default_tolerance_passes_the_measured_kernel_noise_only():
    # the largest difference measured between torch's AVX-512 and AVX2 kernels on the smoke config
    ref = pd.DataFrame([{"block": "sweep", "label": "entropy_reduction", "rank": 4, "train_decisive_ratio": 9.2789562}])
    noise = ref.assign(train_decisive_ratio=9.2789362)
    assert compare_table("credit_precision", ref, noise, DEFAULT_ATOL, DEFAULT_RTOL) == []
    real = ref.assign(train_decisive_ratio=9.29)  # a change in the third decimal is a difference
    assert len(compare_table("credit_precision", ref, real, DEFAULT_ATOL, DEFAULT_RTOL)) == 1
