"""Tests of arca.snakeconfig: Snakemake's ``--config`` values turned into the steps' ``--set`` overrides.

The merge order of the config files, ``config_args``/``config_param`` and the ``set`` entry are
tested with the workflow (test_workflow.py) and the overrides (test_overrides.py); these tests
cover the flattening rules, which entry wins when both forms name one key, and path shortening.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arca import snakeconfig
from arca.config import ConfigError, load_config, read_yaml

DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def test_cli_overrides_flatten_nested_values_to_json_leaves():
    assert snakeconfig.cli_overrides(None) == [] and snakeconfig.cli_overrides({}) == []
    got = snakeconfig.cli_overrides(
        {"train": {"lr": 0.001, "schedule": {"warmup": 2}}, "lora": {}, "name": "x", "eval": {"every": None}}
    )
    # an empty mapping is a value of its own, not a prefix; None is JSON null
    assert got == ["train.lr=0.001", "train.schedule.warmup=2", "lora={}", 'name="x"', "eval.every=null"]


def test_set_entries_come_last_and_win_over_plain_values():
    overrides = {"set": ["train.lr=2.5e-4"], "train": {"lr": 0.5, "steps": 3}}
    entries = snakeconfig.cli_overrides(overrides)
    assert entries == ["train.lr=0.5", "train.steps=3", "train.lr=2.5e-4"]
    cfg = load_config([DEFAULT], entries)
    assert cfg.train.lr == 2.5e-4 and cfg.train.steps == 3


def test_apply_set_without_a_set_entry_changes_nothing():
    config = {"name": "default", "train": {"lr": 5e-4}}
    assert snakeconfig.apply_set(config) == []
    assert config == {"name": "default", "train": {"lr": 5e-4}}


def test_short_path_is_relative_only_inside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert snakeconfig._short_path(str(tmp_path / "configs" / "a.yaml")) == "configs/a.yaml"
    assert snakeconfig._short_path("../b.yaml") == "../b.yaml"
    outside = str(tmp_path.parent / "elsewhere.yaml")
    assert snakeconfig._short_path(outside) == outside


def test_check_overrides_reads_snakemakes_plain_dict():
    raw = read_yaml(DEFAULT)  # what the Snakefile holds: a dict, not a Config
    snakeconfig.check_overrides(raw, [])  # nothing overridden: nothing to refuse
    snakeconfig.check_overrides(raw, ["train.lr=1e-4"])
    with pytest.raises(ConfigError, match="'credit.method' is fixed by run id"):
        snakeconfig.check_overrides(raw, ["credit.method=arca"])


def test_nested_config_values_get_their_yaml_types_in_both_dicts():
    cli = {"train": {"steps": "2", "lr": "1.0e-4", "shuffle_rewards": "true"}, "name": "x", "set": "a.b=1"}
    config = {"train": dict(cli["train"]), "name": "x"}
    snakeconfig.type_nested_values(config, cli)
    assert cli["train"] == {"steps": 2, "lr": 1.0e-4, "shuffle_rewards": True} == config["train"]
    assert cli["name"] == "x" and cli["set"] == "a.b=1"  # top-level values are Snakemake's own, as typed
