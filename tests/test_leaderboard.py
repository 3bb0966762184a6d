"""The leaderboard: its config covers the registry, and docs/leaderboard.md is generated from a reference."""

from __future__ import annotations

import math
from pathlib import Path

from arca import credit
from arca.config import load_config, read_yaml
from arca.report.docs import rewrite
from arca.report.leaderboard import leaderboard_markdown, method_summary, read_tables, scorecard_markdown

REPO = Path(__file__).resolve().parents[1]


def test_leaderboard_config_is_the_default_task_with_every_registered_method():
    default = read_yaml(REPO / "configs" / "default.yaml")
    board = read_yaml(REPO / "configs" / "leaderboard.yaml")
    assert {k: v for k, v in board.items() if k not in ("name", "sweep")} == {
        k: v for k, v in default.items() if k not in ("name", "sweep")
    }
    assert board["sweep"]["cells"][: len(default["sweep"]["cells"])] == default["sweep"]["cells"]
    assert board["sweep"]["seeds"] == default["sweep"]["seeds"]
    cfg = load_config(REPO / "configs" / "leaderboard.yaml")
    assert cfg.name == "leaderboard"
    assert {c.method for c in cfg.sweep.cells} == set(credit.REGISTRY)
    credit.check_config(cfg)


def _write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.csv").write_text(text.strip() + "\n")


def fake_reference(folder: Path) -> Path:
    """A reference with three cells (uniform, ktae, null: a label pandas would read as NaN) and made-up numbers."""
    folder.mkdir(parents=True)
    _write(
        folder,
        "performance",
        """
label,method,rank,n_seeds,greedy
base,base,,0,0.1
uniform,uniform,8,2,0.5
ktae,ktae,8,2,0.6
null,uniform,8,2,0.2
""",
    )
    _write(
        folder,
        "credit_precision",
        """
block,label,method,rank,probe_decisive_auroc,probe_decisive_ratio,train_decisive_auroc,train_decisive_ratio
sweep,uniform,uniform,8,0.5,1.0,0.5,1.0
sweep,ktae,ktae,8,0.8,3.25,0.7,2.0
sweep,null,uniform,8,,,0.5,1.0
probe_all,ktae,ktae,8,0.1,0.1,,
""",
    )
    _write(
        folder,
        "sample_efficiency",
        """
label,method,rank,auc_greedy,auc_greedy_diff,auc_greedy_diff_lo,auc_greedy_diff_hi,final_greedy,final_greedy_diff,final_greedy_diff_lo,final_greedy_diff_hi
uniform,uniform,8,0.4,,,,0.5,,,
ktae,ktae,8,0.45,0.05,0.01,0.09,0.6,0.1,-0.02,0.2
null,uniform,8,0.1,-0.3,-0.4,-0.2,0.2,-0.3,-0.35,-0.25
""",
    )
    _write(
        folder,
        "runs",
        """
run,label,method,rank,seed,step_seconds
uniform_r8_s1,uniform,uniform,8,1,1.0
uniform_r8_s2,uniform,uniform,8,2,3.0
ktae_r8_s1,ktae,ktae,8,1,2.5
ktae_r8_s2,ktae,ktae,8,2,3.5
null_r8_s1,null,uniform,8,1,2.0
""",
    )
    return folder


def test_summary_and_leaderboard_table_by_hand(tmp_path):
    rows = {r["label"]: r for r in method_summary(read_tables(fake_reference(tmp_path / "ref")))}
    assert list(rows) == ["uniform", "ktae", "null"]
    k = rows["ktae"]
    assert (k["auroc"], k["precision_ratio"], k["step_ratio"]) == (0.8, 3.25, 1.5)  # (2.5 + 3.5) / (1 + 3)
    assert rows["null"]["auroc"] == 0.5  # no probe number: the training one
    assert math.isnan(k["gini"])  # no concentration table: an empty cell
    md = leaderboard_markdown(list(rows.values()))
    lines = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[0] for line in lines] == ["| ktae r8", "| uniform r8", "| null r8"]  # AUROC order
    assert "| ktae r8 | 0.800 | 3.25 | 0.450 (+0.050 [+0.010, +0.090]) | 0.600 (+0.100 [-0.020, +0.200]) | 1.50 |" in md
    assert "| uniform r8 | 0.500 | 1.00 | 0.400 | 0.500 | 1.00 |" in md
    page = scorecard_markdown("ktae", list(rows.values()))
    assert page.startswith("# Scorecard: `ktae`") and "| ktae r8 | - | - | 3.00 | 1.50 |" in page
    assert "| ktae r8 | 0.800 | 3.25 | - | - | - |" in page and "null" not in page


def test_docs_generates_the_leaderboard_region_from_the_reference(tmp_path):
    text = (
        "# Leaderboard\n\n<!-- BEGIN arca:leaderboard/leaderboard -->\nold\n<!-- END arca:leaderboard/leaderboard -->\n"
    )
    empty = rewrite(text, tmp_path)
    assert "No reference yet: `results/reference/leaderboard`" in empty
    fake_reference(tmp_path / "results" / "reference" / "leaderboard")
    out = rewrite(text, tmp_path)
    assert "| ktae r8 | 0.800 | 3.25 |" in out and "old" not in out
    assert rewrite(out, tmp_path) == out  # regenerating changes nothing


def test_the_repositorys_leaderboard_page_has_the_region():
    text = (REPO / "docs" / "leaderboard.md").read_text()
    assert "<!-- BEGIN arca:leaderboard/leaderboard -->" in text
    assert rewrite(text, REPO) == text  # python -m arca docs --check holds for it
