"""Tests of the arca.config package: loading (types, overrides, files), the sections' run ids and
hash, and the value checks.

Every error must name where the problem is (the file or ``--set``, the key, the bad value); the
tests match those names. Whole-workflow config behaviour (Snakemake's merge order,
sweeps) is tested in test_workflow.py and test_overrides.py.
"""

from __future__ import annotations

import pytest
from helpers import REPO, bench_cfg

from arca.config import (
    Config,
    ConfigError,
    dump_config,
    from_dict,
    load_config,
    parse_override,
    run_identity,
    to_dict,
    training_hash,
)
from arca.config.loading import apply_overrides, deep_merge, read_yaml
from arca.config.sections import make_run_id, parse_run_id
from arca.pretrain import char_tokenizer
from arca.rollout import TransformersGenerator

# ----------------------------------------------------------------------------- checks


def test_min_new_tokens_is_validated():
    assert bench_cfg("uniform", 2, 2, rollout__min_new_tokens=5).rollout.min_new_tokens == 5
    with pytest.raises(ConfigError, match="rollout.min_new_tokens"):
        bench_cfg("uniform", 2, 2, rollout__min_new_tokens=6)
    with pytest.raises(ConfigError, match="rollout.min_new_tokens"):
        bench_cfg("uniform", 2, 2, rollout__min_new_tokens=-1)


def test_compare_must_name_another_cell(tmp_path):
    cells = [{"method": "uniform", "ranks": [8]}, {"method": "arca_permuted", "ranks": [8], "compare": ["arcaa"]}]
    with pytest.raises(ConfigError, match=r"sweep\.cells\[1\]\.compare\[0\].*'arcaa'"):
        from_dict({"paths": {"results": str(tmp_path)}, "sweep": {"cells": cells, "seeds": [1]}}, source="test")
    cells[1]["compare"] = ["arca_permuted"]  # itself
    with pytest.raises(ConfigError, match=r"sweep\.cells\[1\]\.compare\[0\]"):
        from_dict({"paths": {"results": str(tmp_path)}, "sweep": {"cells": cells, "seeds": [1]}}, source="test")


def test_config_rejects_an_unknown_decoder(tmp_path):
    with pytest.raises(ConfigError, match="rollout.decoder"):
        load_config("configs/smoke.yaml", [f"paths.results={tmp_path}", "rollout.decoder=vllm"])
    with pytest.raises(ValueError, match="rollout.decoder"):
        TransformersGenerator(None, char_tokenizer(["1"]), decoder="fast")


def test_checks_name_the_source_and_the_key():
    with pytest.raises(ConfigError, match=r"^my\.yaml: .*'rollout\.min_new_tokens'.*got 9"):
        from_dict({"rollout": {"max_new_tokens": 8, "min_new_tokens": 9}}, source="my.yaml")
    from_dict({"rollout": {"max_new_tokens": 8, "min_new_tokens": 8}}, source="my.yaml")  # the bound itself is fine


# ----------------------------------------------------------------------------- loading: types
def test_values_are_checked_against_the_field_types():
    cases = [
        ({"train": {"lr": "fast"}}, r"'train\.lr' must be a number, got str 'fast'"),
        ({"train": {"lr": True}}, r"'train\.lr' must be a number, got bool"),  # a bool is no number here
        ({"train": {"steps": 2.0}}, r"'train\.steps' must be int, got float"),
        ({"credit": {"method": 3}}, r"'credit\.method'"),
        ({"rollout": {"decoder": "fast"}}, r"'rollout\.decoder' must be one of \['lean', 'generate'\], got 'fast'"),
        ({"lora": {"target_modules": "q_proj"}}, r"'lora\.target_modules' must be a list, got str"),
        ({"lora": {"target_modules": ["q_proj", 1]}}, r"'lora\.target_modules\[1\]' must be str"),
        ({"train": {"lrr": 1.0}}, r"unknown key 'train\.lrr' \(did you mean 'lr'\?\); allowed here: checkpoint_every"),
        ({"rollout": {"decoder": "laen"}}, r"got 'laen' \(did you mean 'lean'\?\)"),
        ({"train": 3}, r"key 'train' must be a mapping, got int"),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError, match=r"^src\.yaml: .*" + message):
            from_dict(raw, source="src.yaml")


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(ConfigError) as e:
        from_dict({"train": {"zzzz": 1.0}}, source="src.yaml")
    assert "did you mean" not in str(e.value) and "allowed here: checkpoint_every" in str(e.value)


def test_floats_accept_ints_and_yaml_1_1_exponent_strings():
    cfg = from_dict({"train": {"lr": "1e-4", "warmup_steps": 0}, "credit": {"sharpen": 2}})
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.credit.sharpen == 2.0 and isinstance(cfg.credit.sharpen, float)
    with pytest.raises(ConfigError, match="must be a number"):
        from_dict({"train": {"lr": "1e"}})  # not an exponent number


def test_to_dict_from_dict_round_trip_and_dump():
    cfg = Config()
    assert from_dict(to_dict(cfg)) == cfg
    assert to_dict(cfg) is not to_dict(cfg) and to_dict(cfg)["lora"]["target_modules"] is not cfg.lora.target_modules
    text = dump_config(cfg)
    assert text.startswith("name:")  # the dataclass order, not sorted
    assert text.index("\nmodel:") < text.index("\nlora:") < text.index("\ndata:")


# ----------------------------------------------------------------------------- loading: overrides
def test_parse_override_reads_the_value_as_yaml():
    assert parse_override("train.lr=1e-4") == ("train.lr", 1e-4)  # a string to YAML 1.1, a number here
    assert parse_override(" eval.protocols = [generated, math500]") == ("eval.protocols", ["generated", "math500"])
    assert parse_override("name=a=b") == ("name", "a=b")  # the first "=" splits
    assert parse_override("train.steps=3") == ("train.steps", 3)
    assert parse_override("model.name_or_path=") == ("model.name_or_path", None)
    assert parse_override("name=[unclosed") == ("name", "[unclosed")  # not YAML: kept as text
    with pytest.raises(ConfigError, match=r"^--set 'train\.lr': expected key\.path=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match=r"'train\.\.lr' is not a dotted key path"):
        parse_override("train..lr=1")


def test_apply_overrides_copies_creates_sections_and_refuses_a_scalar_parent():
    raw = {"train": {"lr": 0.1, "steps": 5}}
    out = apply_overrides(raw, ["train.lr=0.2", "lora.rank=4", "train.lr=0.3"])
    assert out == {"train": {"lr": 0.3, "steps": 5}, "lora": {"rank": 4}}  # the last one wins
    assert raw == {"train": {"lr": 0.1, "steps": 5}}  # the input is left as it was
    with pytest.raises(ConfigError, match=r"key 'train\.lr' is not a section"):
        apply_overrides(raw, ["train.lr.x=1"])


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    update = {"a": {"y": [3], "z": {"k": 2}}, "b": {"now": "a section"}}
    assert deep_merge(base, update) == {"a": {"x": 1, "y": [3], "z": {"k": 2}}, "b": {"now": "a section"}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}


# ----------------------------------------------------------------------------- loading: files
def test_read_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        read_yaml(bad)
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text"):
        read_yaml(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: the top level must be a mapping"):
        read_yaml(bad)
    bad.write_text("")
    assert read_yaml(bad) == {}


def test_load_config_merges_files_in_order_and_names_the_file_of_an_error(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("name: first\ntrain:\n  lr: 0.5\n  steps: 7\n")
    b.write_text("name: second\ntrain:\n  lr: 0.25\n")
    cfg = load_config([a, b], ["train.steps=9"])
    assert (cfg.name, cfg.train.lr, cfg.train.steps) == ("second", 0.25, 9)
    assert load_config(a).train.steps == 7 and load_config().name == Config().name
    b.write_text("train:\n  stepz: 1\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: unknown key 'train\.stepz'"):
        load_config([a, b])
    with pytest.raises(ConfigError, match=r"a\.yaml \(with --set\): .*'train\.steps' must be int"):
        load_config(a, ["train.steps=many"])


# ----------------------------------------------------------------------------- sections
def test_run_ids_round_trip_and_bad_ids_are_named():
    assert make_run_id("arca_permuted", 8, 3) == "arca_permuted_r8_s3"
    assert parse_run_id("arca_permuted_r8_s3") == ("arca_permuted", 8, 3)
    assert parse_run_id("a_r1_s2_r16_s4") == ("a_r1_s2", 16, 4)  # the last _r<rank>_s<seed> is the suffix
    for bad in ("arca_r8", "arca_rx_s1", "_r8_s1", "arca r8_s1"):
        with pytest.raises(ConfigError, match=f"run id '{bad}' is not of the form"):
            parse_run_id(bad)


def _leaves(d: dict, prefix: str = "") -> dict:
    """``{dotted key: value}`` of every leaf of a nested mapping (lists are leaves)."""
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_dataclass_defaults_are_default_yaml_key_by_key():
    # configs/default.yaml documents the defaults: it writes every key, each with the dataclass's value
    written = _leaves(read_yaml(REPO / "configs" / "default.yaml"))
    defaults = _leaves(to_dict(Config()))
    assert sorted(written) == sorted(defaults)
    assert {k: (v, written[k]) for k, v in defaults.items() if written[k] != v} == {}


def test_run_identity_of_a_run_and_of_the_base_model():
    assert run_identity("arca_permuted_r8_s3", "arca") == {
        "run": "arca_permuted_r8_s3",
        "label": "arca_permuted",
        "method": "arca",
        "rank": 8,
        "seed": 3,
    }
    base = run_identity("base")
    assert base == {"run": "base", "label": "base", "method": "base", "rank": None, "seed": None}
    assert list(base) == ["run", "label", "method", "rank", "seed"]  # the order every record is written in
    with pytest.raises(ConfigError, match="run id 'arca' is not of the form"):
        run_identity("arca", "arca")


def test_training_hash_follows_the_training_sections_only():
    cfg = Config()
    h = training_hash(cfg)
    assert len(h) == 16 and int(h, 16) >= 0
    other_eval = from_dict({**to_dict(cfg), "name": "renamed", "eval": {**to_dict(cfg.eval), "batch_size": 3}})
    assert training_hash(other_eval) == h
    other_lr = from_dict({**to_dict(cfg), "train": {**to_dict(cfg.train), "lr": cfg.train.lr * 2}})
    assert training_hash(other_lr) != h
