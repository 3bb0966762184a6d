"""Generated configs (wrong types, values out of range, non-finite numbers, YAML tricks) through
both front doors: each is either accepted and valid, or refused with one line, in seconds."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import tempfile
import time
import typing
from pathlib import Path

import yaml
from helpers import run_snakemake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arca import cli
from arca.config import Config, from_dict
from arca.config.ranges import RANGES


def _leaf_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config that holds a value (not a section)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _leaf_keys(tp, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


KEYS = _leaf_keys()
NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63, 1e308, -0.0, 5e-324]),
)
SCALARS = st.one_of(
    NUMBERS,
    st.booleans(),
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["..", ".", "a b", "x; touch /tmp/x", "$(id)", "../..", "/", "a\x00b", "é", "uniform"]),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=2))

# Texts that YAML 1.1 reads in surprising ways, or that exhaust a naive reader.
TRICKS = [
    "train:\n  steps: 3:00\n",
    "train:\n  steps: 0777\n",
    "name: a\nname: b\n",
    "a: &a [1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n",
    "name: !!python/name:os.system\n",
    "name: 2024-01-01\n",
    "__use_yte__: true\nname: a\n",
    "train: .inf\n",
    "train:\n  lr: .nan\n",
    "train:\n  lr: 1e400\n",
    "- a\n- b\n",
    "train: {lr: [1, 2]}\n",
    "{",
    "name: yes\n",
    "sweep:\n  seeds: [1, 1]\n",
    "sweep:\n  cells: [{method: uniform, ranks: [8], overrides: {name: x}}]\n",
]


def _set(raw: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for p in parents:
        raw = raw.setdefault(p, {})
    raw[last] = value


def _show_config(text: str | bytes) -> tuple[int | None, str, str, float]:
    """``python -m arca show-config --config FILE`` in-process: (status, stdout, stderr, seconds)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        out, err = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["show-config", "--config", str(path)])
        return rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def _assert_accepted_and_valid_or_refused(rc, out: str, err: str, seconds: float) -> None:
    assert seconds < 5, f"took {seconds:.1f} s"
    if rc == 2:
        assert err.startswith("error: ") and err.count("\n") == 1 and len(err) < 1000, err
        return
    assert rc == 0, (rc, err)
    cfg = from_dict(yaml.safe_load(out))  # what was accepted loads again and passes every check
    for key, rng in RANGES.items():  # and no numeric value slipped through out of range
        if "[]" not in key:
            node = cfg
            for part in key.split("."):
                node = getattr(node, part)
            assert node is None or (math.isfinite(node) and rng.holds(node)), (key, node)


FAST = settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=4))
def test_generated_values_are_accepted_and_valid_or_refused_in_one_line(values):
    raw: dict = {}
    for key, value in values.items():
        _set(raw, key, value)
    _assert_accepted_and_valid_or_refused(*_show_config(yaml.safe_dump(raw, allow_unicode=True)))


@settings(max_examples=len(TRICKS) * 2, deadline=5000)
@given(st.sampled_from(TRICKS), st.sampled_from(["", "# comment\n"]))
def test_yaml_tricks_are_refused_in_one_line_and_fast(text, prefix):
    rc, out, err, seconds = _show_config(prefix + text)
    assert rc == 2, f"accepted: {text!r}"
    _assert_accepted_and_valid_or_refused(rc, out, err, seconds)


@settings(max_examples=3, deadline=None)
@given(st.sampled_from(TRICKS[:8]))
def test_snakemakes_front_door_refuses_them_too(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.yaml"
        path.write_text(text)
        t0 = time.perf_counter()
        proc = run_snakemake("-n", "--nolock", "--cores", "1", "--configfile", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.log, proc.log[-2000:]
    assert time.perf_counter() - t0 < 60
