"""What a successful run prints at its end (arca.report.summary), and the comparison's header."""

from __future__ import annotations

from pathlib import Path

from helpers import SMALL

from arca.config import deep_merge, from_dict
from arca.paths import paths_of
from arca.report.paper import our_setting, paper_comparison
from arca.report.summary import run_summary

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, **model):
    raw = deep_merge(SMALL, {"name": "exp", "paths": {"results": str(tmp_path / "results")}})
    if model:
        raw["model"] = model
    return from_dict(raw)


def test_summary_prints_the_main_table_the_claims_and_the_report(tmp_path):
    cfg = _cfg(tmp_path)
    out = paths_of(cfg)
    out.tables.mkdir(parents=True)
    out.table("performance", "md").write_text("| method | greedy |\n|---|---|\n| uniform | 0.5 |\n")
    reference = (ROOT / "results" / "reference" / "smoke" / "paper_comparison.md").read_text()
    out.table("paper_comparison", "md").write_text(reference)
    out.report.write_text("<html></html>")
    text = run_summary(cfg, out.report)
    assert "| uniform | 0.5 |" in text
    assert "judged at this scale" in text and "(i) Output-distribution baselines" in text
    assert "## Cells the paper does not have" not in text  # only the claims section
    assert f"Report with every table, figure and the claims: {out.report}" in text
    assert text.index("| uniform |") < text.index("(i)") < text.index("Report with")


def test_summary_without_a_report_says_how_to_make_one(tmp_path):
    cfg = _cfg(tmp_path)
    text = run_summary(cfg, None)
    assert "snakemake --report" in text and str(paths_of(cfg).report) in text
    assert "compare-reference" in text


def test_comparison_header_names_both_settings_and_judges_at_this_scale():
    import pandas as pd

    empty = pd.DataFrame(columns=["label", "rank", "greedy", "greedy_lo", "greedy_hi", "gini", "eff_ratio"])
    paired = pd.DataFrame(columns=["label", "rank", "reference", "vs_uniform"])
    text = paper_comparison(empty, empty, paired, "generated", "paper", 4, 5, "MY SETTING")
    head = text.split("## Table 2")[0]
    assert "Qwen3-1.7B-Base on MATH" in head and "**Ours**: MY SETTING" in head
    assert "judged at this scale" in head and "differ in model, data and scale" in head
    assert "## The paper's claims, judged at this scale" in text


def test_our_setting_names_model_data_and_scale(tmp_path):
    pretrained = our_setting(_cfg(tmp_path))
    assert "pretrained here" in pretrained and "GRPO steps" in pretrained and "generated" in pretrained
    hub = our_setting(_cfg(tmp_path, source="hub", name_or_path="Qwen/Qwen3-0.6B-Base"))
    assert hub.startswith("Qwen/Qwen3-0.6B-Base on ")
    folder = tmp_path / "models" / "my-model"
    folder.mkdir(parents=True)
    local = our_setting(_cfg(tmp_path, source="local", name_or_path=f"{folder}/"))
    assert local.startswith("my-model on ") and str(tmp_path) not in local
