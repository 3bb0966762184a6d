"""``python -m arca scorecard``: an external method from a temporary package, scored on the smoke task."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from arca import credit, scorecard
from arca.cli import main
from arca.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = '''
"""A credit method living outside arca."""
import torch


def confidence(x):
    """alpha_t = pi(y_t): the probability of the sampled token."""
    return x.logprobs.exp()  # [B, T]


def needs_entropy(x):
    """alpha_t = H_t."""
    return x.entropies


needs_entropy.needs = frozenset({"entropies"})
'''


@pytest.fixture
def package(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgs" / "mycredit"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    yield "mycredit"
    for name in ("confidence", "needs_entropy", "plugged"):
        credit.REGISTRY.pop(name, None)


def test_resolve_module_attribute_and_its_needs(package):
    name, method = scorecard.resolve(f"{package}:needs_entropy")
    assert name == "needs_entropy" and method.needs == {"entropies"} and method.doc == "alpha_t = H_t."
    name, method = scorecard.resolve(f"{package}:confidence")
    assert name == "confidence" and method.needs == frozenset()
    with pytest.raises(ConfigError, match="cannot load"):
        scorecard.resolve(f"{package}:missing")
    with pytest.raises(ConfigError, match="arca.credit_methods"):
        scorecard.resolve("no_such_method")


def test_an_installed_packages_method_is_found_by_its_entry_point(package, monkeypatch):
    import mycredit

    ep = SimpleNamespace(name="plugged", load=lambda: mycredit.confidence)
    monkeypatch.setattr(scorecard, "entry_points", lambda group: [ep] if group == scorecard.ENTRY_POINT_GROUP else [])
    name, method = scorecard.resolve("plugged")
    assert name == "plugged" and method.signal is mycredit.confidence
    scorecard.register(name, method)
    assert credit.REGISTRY["plugged"].signal is mycredit.confidence
    with pytest.raises(ConfigError, match="already"):
        scorecard.register("uniform", method)


def test_scorecard_config_has_the_three_cells_under_its_own_name():
    cfg = load_config([str(ROOT / "configs" / "smoke.yaml")], [])
    sc = scorecard.scorecard_config(cfg, "confidence")
    assert [(c.method, c.ranks) for c in sc.sweep.cells] == [
        ("uniform", [4]),
        ("oracle_decisive", [4]),
        ("confidence", [4]),
    ]
    assert sc.name == "smoke-scorecard-confidence" and sc.sweep.seeds == cfg.sweep.seeds
    assert sc.train == cfg.train and sc.data == cfg.data  # the same task and training


@pytest.mark.slow
def test_scorecard_end_to_end_on_the_smoke_task(package, tmp_path):
    code = main(
        [
            "scorecard",
            "--config",
            str(ROOT / "configs" / "smoke.yaml"),
            "--set",
            f"paths.results={tmp_path / 'results'}",
            "--set",
            "train.steps=2",
            "--set",
            "eval.n_problems=4",
            "--method",
            f"{package}:confidence",
        ]
    )
    assert code == 0
    page = (tmp_path / "results" / "smoke-scorecard-confidence" / "scorecard.md").read_text()
    assert page.startswith("# Scorecard: `confidence`")
    for section in ("Credit precision", "Held-out accuracy", "Concentration and cost"):
        assert f"## {section}" in page
    rows = {line.split(" | ")[0].strip("| "): line for line in page.splitlines() if line.startswith("| ")}
    assert {"uniform r4", "oracle_decisive r4", "confidence r4"} <= set(rows)
    # the smoke model aligns no completion with a fork, so precision stays empty ("-") at this size;
    # the numbers the page does show: concentration and cost, and paired differences against uniform
    mine = [line for line in page.splitlines() if line.startswith("| confidence r4 |")]  # one per table
    cells = [c.strip() for c in mine[0].strip("|").split("|")]
    shape = mine[-1]
    gini, eff = (float(v) for v in shape.strip("|").split("|")[1:3])
    assert 0.0 < gini < 1.0 and 0.0 < eff < 1.0  # pi(y_t) weights are neither uniform nor one-hot
    assert "| uniform r4 | 0.000 | 1.000 |" in page and "1.00 |" in page  # uniform: its own cost reference
    assert "(+0.000 [+0.000, +0.000])" in page or "(-" in page or "(+" in page
    assert len(mine) == 3 and len(cells) == 6
