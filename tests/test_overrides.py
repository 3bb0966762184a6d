"""Overrides: what a run id fixes cannot be overridden, `snakemake --config set=...` reaches every
step like ``--set``, and runs trained with other settings are refused downstream (config hash).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from arca import cli, snakeconfig
from arca.cards import RUN_INFO, check_adapter_hash
from arca.config import ConfigError, check_run_overrides, load_config, run_hash
from arca.paths import paths_of

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
ABLATIONS = REPO / "configs" / "ablations.yaml"


@pytest.mark.parametrize(
    "override, key",
    [
        ("credit.method=surprisal", "credit.method"),
        ("lora.rank=16", "lora.rank"),
        ("train.seed=7", "train.seed"),
        ("lora={rank: 16}", "lora.rank"),  # a whole section holding a fixed key
    ],
)
def test_set_on_a_key_the_run_id_fixes_is_an_error(override, key, capsys):
    rc = cli.main(["show-config", "--config", str(DEFAULT), "--run", "arca_r8_s1", "--set", override])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"'{key}'" in err and "'arca_r8_s1'" in err, err


def test_set_on_a_cell_override_is_an_error(capsys):
    # ablations: the arca_s1 cell sets credit.sharpen=1.0 for its runs
    rc = cli.main(["train", "--config", str(ABLATIONS), "--run", "arca_s1_r8_s1", "--set", "credit.sharpen=2.0"])
    err = capsys.readouterr().err
    assert rc == 2 and "'credit.sharpen'" in err and "'arca_s1_r8_s1'" in err, err


def test_set_on_a_free_key_applies_to_the_run(capsys):
    rc = cli.main(["show-config", "--config", str(DEFAULT), "--run", "arca_r8_s1", "--set", "train.lr=1e-4"])
    out = capsys.readouterr().out
    assert rc == 0
    import yaml

    cfg = yaml.safe_load(out)
    assert (cfg["train"]["lr"], cfg["credit"]["method"], cfg["lora"]["rank"], cfg["train"]["seed"]) == (
        1e-4,
        "arca",
        8,
        1,
    )


def test_base_evaluation_takes_any_override():
    cfg = load_config(DEFAULT, ["credit.method=surprisal"])
    assert cfg.credit.method == "surprisal"  # no run id, nothing fixed


def test_snakemake_set_entries_parse_like_set():
    assert snakeconfig.set_entries({"set": "train.lr=1e-4"}) == ["train.lr=1e-4"]
    assert snakeconfig.set_entries({"set": ["train.lr=1e-4", "credit.sharpen=1.0"]}) == [
        "train.lr=1e-4",
        "credit.sharpen=1.0",
    ]
    assert snakeconfig.set_entries({"name": "x"}) == []
    with pytest.raises(ConfigError, match="key.path=value"):
        snakeconfig.set_entries({"set": "trainlr"})
    with pytest.raises(ConfigError, match="key.path=value"):
        snakeconfig.set_entries({"set": {"train": 1}})
    # Snakemake reads --config values with YAML's base loader (strings): 1e-4 must still be a number.
    config = {"name": "default", "train": {"lr": 5e-4, "steps": 50}, "set": ["train.lr=1e-4", "train.steps=3"]}
    assert snakeconfig.apply_set(config) == ["train.lr=1e-4", "train.steps=3"]
    assert config == {"name": "default", "train": {"lr": 1e-4, "steps": 3}}


def test_snakemake_set_entries_become_set_arguments():
    args = shlex.split(
        snakeconfig.config_args(["configs/default.yaml"], {"paths": {"results": "/r"}, "set": ["train.lr=1e-4"]})
    )
    assert args == ["--config", "configs/default.yaml", "--set", 'paths.results="/r"', "--set", "train.lr=1e-4"]
    cfg = load_config([DEFAULT], args[3::2])
    assert cfg.train.lr == 1e-4 and cfg.paths.results == "/r"


def test_snakemake_set_of_a_fixed_key_is_refused_for_the_sweep():
    cfg = load_config(DEFAULT)
    snakeconfig.check_overrides(cfg, ["train.lr=1e-4", "eval.pass_k=8"])
    with pytest.raises(ConfigError, match=r"'credit.method' is fixed by run id 'uniform_r8_s1'"):
        snakeconfig.check_overrides(cfg, ["credit.method=arca"])
    with pytest.raises(ConfigError, match="'train.seed'"):
        check_run_overrides(cfg, "arca_r2_s3", ["train={seed: 4}"])


def test_adapter_of_other_settings_is_refused(tmp_path):
    cfg = load_config(DEFAULT)
    run = "arca_r8_s1"
    adapter = tmp_path / "runs" / run / "adapter"
    adapter.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=RUN_INFO):
        check_adapter_hash(adapter, run, run_hash(cfg, run))
    (adapter / RUN_INFO).write_text(json.dumps({"run": run, "config_hash": run_hash(cfg, run)}))
    check_adapter_hash(adapter, run, run_hash(cfg, run))
    hand = load_config(DEFAULT, ["train.lr=1e-4"])  # what a hand run with --set train.lr=1e-4 trained
    (adapter / RUN_INFO).write_text(json.dumps({"run": run, "config_hash": run_hash(hand, run)}))
    with pytest.raises(ValueError, match=f"trained with config hash {run_hash(hand, run)}.*{run_hash(cfg, run)}"):
        check_adapter_hash(adapter, run, run_hash(cfg, run))


def test_tables_refuse_a_run_of_other_settings(tmp_path):
    from helpers import make_sweep

    from arca.report.tables import aggregate_main

    cfg = make_sweep(tmp_path)
    run = cfg.run_ids()[0]
    path = paths_of(cfg).eval(run).root / "summary.json"
    summary = json.loads(path.read_text())
    summary["config_hash"] = "0123456789abcdef"
    path.write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=f"{run}.*0123456789abcdef.*{run_hash(cfg, run)}"):
        aggregate_main(cfg, None)
    summary["config_hash"] = run_hash(cfg, run)
    path.write_text(json.dumps(summary))
    fw = paths_of(cfg).run(run).root / "final_weights.json"
    fw.write_text(json.dumps({**json.loads(fw.read_text()), "config_hash": "fedcba9876543210"}))
    with pytest.raises(ValueError, match="final_weights.json.*fedcba9876543210"):
        aggregate_main(cfg, None)
