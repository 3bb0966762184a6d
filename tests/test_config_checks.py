"""The config's value checks against hostile or mistaken input: the range table, the safe paths,
the cross-key checks, and the shell commands that carry the paths."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml
from helpers import run_snakemake

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


@pytest.mark.parametrize("door", ["--configfile", "--config set="])
def test_snakemake_refuses_an_injected_results_path(tmp_path, door):
    marker = tmp_path / "PWNED"
    value = f"results/x; touch {marker};"
    if door == "--configfile":
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"paths": {"results": value}}))
        args = ["--configfile", str(bad)]
    else:
        args = ["--config", f"set=paths.results={value}"]
    proc = run_snakemake("-n", "--nolock", "--cores", "1", *args)
    assert proc.returncode != 0 and "paths.results" in proc.log
    # named as python -m arca names it: the files, and the --config on top
    named = "bad.yaml: key 'paths.results'" if door == "--configfile" else '--config set="paths.results='
    assert named in proc.log, proc.log[-2000:]
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


# ----------------------------------------------------------------------------- YAML
@pytest.mark.parametrize(
    "text, problem",
    [
        ("train:\n  steps: 3:00\n", "base-60"),
        ("train:\n  steps: 010\n", "octal"),
        ("train:\n  lr: 1:30.5\n", "base-60"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
        ("train:\n  steps: 3\n  steps: 4\n", "duplicate key 'steps'"),
        ("a: &x 1\n", "anchors and aliases"),
        ("__use_yte__: true\nname: a\n", "__use_yte__"),
    ],
)
def test_yaml_surprises_are_refused_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(problem)) as e:
        load_config([path])
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_an_anchor_bomb_is_refused_at_once_with_a_short_message(tmp_path):
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 12)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="anchors and aliases") as e:
        load_config([path])
    assert time.perf_counter() - t0 < 1.0 and len(str(e.value)) < 400


@pytest.mark.parametrize("entry, problem", [("train.steps=3:00", "base-60"), ("train.steps=0755", "octal")])
def test_set_refuses_yaml_11_numbers(entry, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(overrides=[entry])


def test_a_mapping_valued_set_changes_only_the_keys_it_names():
    cfg = load_config(overrides=["train.steps=7", "train={}", "credit={sharpen: 1.5}"])
    assert cfg.train.steps == 7 and cfg.train.lr == 1e-3  # train={} reset nothing (1e-3: the default)
    assert cfg.credit.sharpen == 1.5 and cfg.credit.eps == 1e-8


def test_snakemakes_config_of_a_date_is_a_config_error():
    import datetime

    from arca import snakerules

    with pytest.raises(ConfigError, match="not plain data"):
        snakerules.as_config({"name": datetime.date(2024, 1, 1)})


def test_snakemake_refuses_a_duplicate_key_like_the_cli(tmp_path):
    bad = tmp_path / "dup.yaml"
    bad.write_text("train:\n  steps: 3\n  steps: 4\n")
    proc = run_snakemake("-n", "--nolock", "--cores", "1", "--configfile", str(bad))
    assert proc.returncode != 0 and "duplicate key 'steps'" in proc.log


def test_a_control_character_in_a_string_is_refused():
    with pytest.raises(ConfigError, match="'model.attn_implementation' holds a control character"):
        from_dict({"model": {"attn_implementation": "sdpa\x1b[2J"}})


@pytest.mark.parametrize(
    "raw",
    [
        {"sweep": {"seeds": [1] * 5000}},  # a long list in a value check
        {"train": {"steps": "x" * 5000}},  # a long value of the wrong type
    ],
)
def test_every_message_cuts_a_long_value(raw):
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    assert len(str(e.value)) < 300


def test_lora_targets_of_the_pretrained_model_are_checked_before_any_work():
    with pytest.raises(ConfigError, match=r"'lora.target_modules'.*'qkv_proj'"):
        from_dict({"lora": {"target_modules": ["q_proj", "qkv_proj"]}})
    assert from_dict({"lora": {"target_modules": ["model.layers.0.self_attn.q_proj"]}})  # peft's dotted form
    # other sources are checked against the model itself when it is loaded (arca.models.wrap_lora)
