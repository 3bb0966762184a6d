"""The config's value checks against hostile or mistaken input: the range table, the safe paths,
the cross-key checks, and the shell commands that carry the paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_workflow import run_snakemake

from arca import cli
from arca.config import ConfigError, from_dict, load_config
from arca.config.ranges import RANGES, numeric_keys

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"train": {"lr": float("inf")}}, "train.lr"),
        ({"train": {"lr": float("nan")}}, "train.lr"),
        ({"train": {"lr": 2.0}}, "train.lr"),
        ({"train": {"lr": 10**400}}, "train.lr"),
        ({"train": {"min_lr_ratio": 2}}, "train.min_lr_ratio"),
        ({"train": {"min_lr_ratio": -0.5}}, "train.min_lr_ratio"),
        ({"eval": {"temperature": -1}}, "eval.temperature"),
        ({"eval": {"temperature": 0}}, "eval.temperature"),
        ({"eval": {"max_new_tokens": 0}}, "eval.max_new_tokens"),
        ({"eval": {"grader_timeout": 6e8}}, "eval.grader_timeout"),
        ({"data": {"max_prompt_tokens": 0}}, "data.max_prompt_tokens"),
        ({"lora": {"rank": 1_000_000}}, "lora.rank"),
        ({"rollout": {"temperature": float("inf")}}, "rollout.temperature"),
        ({"credit": {"sharpen": float("inf")}}, "credit.sharpen"),
        ({"credit": {"eps": float("inf")}}, "credit.eps"),
        ({"sweep": {"seeds": [1, 2**70]}}, "sweep.seeds[1]"),
        ({"sweep": {"cells": [{"method": "uniform", "ranks": [8, 10**6]}]}}, "sweep.cells[0].ranks[1]"),
        ({"train": {"threads": 100000}}, "train.threads"),
    ],
)
def test_out_of_range_or_non_finite_values_are_refused_naming_the_key(raw, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")) as e:
        from_dict(raw, source="x.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith("x.yaml:")


def test_the_range_table_covers_every_numeric_key_and_nothing_else():
    assert sorted(numeric_keys()) == sorted(RANGES)


def test_the_defaults_are_inside_every_range():
    from_dict({})  # would raise on a default outside its range


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"paths": {"results": "results/x; touch /tmp/PWNED;"}}, "paths.results"),
        ({"paths": {"results": "my results"}}, "paths.results"),
        ({"paths": {"results": "results/../.."}}, "paths.results"),
        ({"paths": {"cache": "$(id)"}}, "paths.cache"),
        ({"name": ".."}, "name"),
        ({"name": "."}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "x`id`"}, "name"),
    ],
)
def test_unsafe_paths_and_names_are_refused(raw, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        from_dict(raw)


def test_safe_paths_are_accepted():
    cfg = from_dict({"name": "smoke.v2", "paths": {"results": "/scratch/me/results_1", "cache": ".cache/arca"}})
    assert cfg.paths.results == "/scratch/me/results_1"


def test_a_long_bad_value_is_cut_in_the_message():
    with pytest.raises(ConfigError) as e:
        from_dict({"paths": {"results": "x;" * 5000}})
    assert len(str(e.value)) < 300


def test_math500_needs_math_data_before_any_work():
    with pytest.raises(ConfigError, match="eval.protocols.*data.source"):
        from_dict({"eval": {"protocols": ["math500"]}})


@pytest.mark.parametrize("key", ["name", "paths.results", "sweep.seeds"])
def test_a_cell_may_not_override_the_sweeps_shared_keys(key):
    cell = {"method": "uniform", "ranks": [8], "overrides": {key: "x"}}
    with pytest.raises(ConfigError, match=r"sweep.cells\[0\].overrides"):
        from_dict({"sweep": {"cells": [cell]}})


def test_the_cli_refuses_an_injected_results_path_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"paths": {"results": "results/x; touch /tmp/PWNED;"}}))
    assert cli.main(["show-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "paths.results" in err and "\n" not in err


def test_load_config_names_the_file_of_a_bad_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: '..'\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        load_config([bad])


def test_snakemake_refuses_an_injected_results_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    marker = tmp_path / "PWNED"
    bad.write_text(yaml.safe_dump({"paths": {"results": f"results/x; touch {marker};"}}))
    proc = run_snakemake("-n", "--nolock", "--cores", "1", "--configfile", str(bad))
    assert proc.returncode != 0 and "paths.results" in proc.log
    assert not marker.exists()


def _shell_commands() -> list[tuple[str, str]]:
    out = []
    for smk in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = smk.read_text()
        for m in re.finditer(r"^\s+shell:\s*\n((?:\s+\"[^\n]*\"\n)+)", text, flags=re.M):
            out.append((smk.name, m.group(1)))
    return out


def test_every_shell_path_is_quoted():
    commands = _shell_commands()
    assert len(commands) >= 10
    for name, cmd in commands:
        for field in re.findall(r"\{([^{}]+)\}", cmd):
            # params.config is built with shlex.quote, word by word (snakeconfig.config_args)
            assert field == "params.config" or field.endswith(":q"), f"{name}: {{{field}}} is not quoted"
