"""Data: the MATH loader (both formats, JSONL and Parquet, bad data), selections, the arithmetic
generator (determinism, disjoint splits, compact and correct solutions) and ``prepare_data``."""

import json
import logging
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from arca.config import ConfigError, load_config
from arca.data import (
    FIELDS,
    Record,
    first_n,
    generate_problems,
    load_math,
    make_splits,
    prepare_data,
    random_subset,
    read_records,
)
from arca.data.forks import SINGLE_DECISION
from arca.grading import extract_boxed, grade_paper

FIXTURES = Path(__file__).parent / "fixtures"
LIGHTEVAL = FIXTURES / "math_sample.jsonl"
MATH500 = FIXTURES / "math500_sample.jsonl"
SUBJECTS7 = {
    "Algebra",
    "Counting & Probability",
    "Geometry",
    "Intermediate Algebra",
    "Number Theory",
    "Prealgebra",
    "Precalculus",
}


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]


def _write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- fixtures themselves
def test_fixture_covers_all_subjects_and_levels():
    rows = _lines(LIGHTEVAL)
    assert len(rows) >= 20
    assert {r["type"] for r in rows} == SUBJECTS7
    assert {r["level"] for r in rows} == {f"Level {i}" for i in range(1, 6)}
    assert all(extract_boxed(r["solution"]) for r in rows)
    m500 = _lines(MATH500)
    assert [r["problem"] for r in m500] == [r["problem"] for r in rows]
    assert all(r["answer"] == extract_boxed(r["solution"]) for r in m500)


# ----------------------------------------------------------------------------- loader
def _check_records(records):
    for r in records:
        assert set(r) == set(FIELDS)
        assert isinstance(r["level"], int) and 1 <= r["level"] <= 5
        assert r["answer"] and r["subject"] in SUBJECTS7
        Record(**r)  # the typed view accepts it


def test_load_lighteval_jsonl():
    records, no_gold = load_math(str(LIGHTEVAL), "test")
    rows = _lines(LIGHTEVAL)
    assert no_gold == 0 and len(records) == len(rows)
    _check_records(records)
    assert [r["id"] for r in records] == [f"test/{i}" for i in range(len(rows))]
    assert records[0]["answer"] == "5"
    assert records[1]["level"] == 3 and records[1]["subject"] == "Algebra"
    # the gold is the LAST balanced box, nested braces included
    polar = next(r for r in records if "polar" in r["problem"])
    assert polar["answer"] == r"\left( 3, \frac{\pi}{2} \right)"
    assert grade_paper(r"\boxed{\left(3, \frac{\pi}{2}\right)}", polar["answer"]) is False  # space differs
    assert grade_paper(r"\boxed{( 3, \frac{\pi}{2} )}", polar["answer"]) is True


def test_load_math500_jsonl_matches_lighteval():
    a, _ = load_math(str(LIGHTEVAL), "test")
    b, no_gold = load_math(str(MATH500), "test")
    assert no_gold == 0
    _check_records(b)
    assert b[0]["id"] == "test/algebra/100.json"  # unique_id wins
    strip = lambda rs: [{k: v for k, v in r.items() if k != "id"} for r in rs]  # noqa: E731
    assert strip(a) == strip(b)


@pytest.mark.parametrize("source", [LIGHTEVAL, MATH500])
def test_load_parquet(tmp_path, source):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / (source.stem + ".parquet")
    pq.write_table(pa.Table.from_pylist(_lines(source)), path)
    from_parquet, no_gold = load_math(str(path), "test")
    from_jsonl, _ = load_math(str(source), "test")
    assert no_gold == 0
    assert from_parquet == from_jsonl


def test_answer_field_wins_over_box(tmp_path):
    rows = _lines(MATH500)[:2]
    rows[0]["answer"] = "five"
    rows[1]["answer"] = ""  # empty: fall back to the solution's box
    records, _ = load_math(str(_write_lines(tmp_path / "a.jsonl", rows)), "test")
    assert records[0]["answer"] == "five"
    assert records[1]["answer"] == "3"


# ----------------------------------------------------------------------------- bad data
def test_empty_file(tmp_path):
    for content in ("", "\n\n  \n"):
        path = tmp_path / "empty.jsonl"
        path.write_text(content)
        with pytest.raises(ValueError, match=re.escape(f"{path}:1:") + ".*empty"):
            load_math(str(path), "test")


def test_malformed_json_line(tmp_path):
    text = LIGHTEVAL.read_text().splitlines()
    text[2] = text[2][:-5]  # cut the closing quote and brace
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3:") + ".*malformed JSON"):
        load_math(str(path), "test")


@pytest.mark.parametrize("field", ["problem", "solution", "level", "type"])
def test_missing_field(tmp_path, field):
    rows = _lines(LIGHTEVAL)
    del rows[1][field]
    path = _write_lines(tmp_path / "missing.jsonl", rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}:2:") + f".*'{field}'"):
        load_math(str(path), "test")


def test_wrong_type_and_level(tmp_path):
    rows = _lines(MATH500)
    rows[3]["problem"] = 17
    path = _write_lines(tmp_path / "t.jsonl", rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}:4:") + ".*'problem' must be a string"):
        load_math(str(path), "test")
    rows = _lines(MATH500)
    rows[4]["level"] = 9
    path = _write_lines(tmp_path / "l.jsonl", rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}:5:") + ".*level"):
        load_math(str(path), "test")


def test_rows_without_gold_or_level_are_kept_in_order_and_counted(tmp_path, caplog):
    rows = _lines(LIGHTEVAL)
    rows[5]["solution"] = "We give up."
    rows[6]["solution"] = r"Unbalanced \boxed{35"
    rows[7]["level"] = "Level ?"  # occurs in the real MATH data
    rows[8]["solution"] = r"So the answer is \fbox{35}."  # not a box for the author's extraction
    rows[9]["solution"] = r"So the answer is \boxed {35}."  # nor is this
    path = _write_lines(tmp_path / "keep.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="arca.data.math"):
        records, no_gold = load_math(str(path), "train")
    assert no_gold == 4
    assert [r["id"] for r in records] == [f"train/{i}" for i in range(len(rows))]  # every row, in order
    assert [i for i, r in enumerate(records) if r["answer"] == ""] == [5, 6, 8, 9]
    assert records[7]["level"] is None and records[7]["answer"] == extract_boxed(rows[7]["solution"])
    assert any("4 of" in rec.getMessage() and str(path) in rec.getMessage() for rec in caplog.records)
    out = _write_lines(tmp_path / "records.jsonl", records)
    assert read_records(out) == records  # the normalized file accepts them


def test_non_utf8_bytes(tmp_path):
    data = LIGHTEVAL.read_bytes().splitlines(keepends=True)
    data[3] = data[3].replace(b'"problem": "', b'"problem": "\xe9t\xe9 ', 1)  # Latin-1, not UTF-8
    assert b"\xe9" in data[3]
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b"".join(data))
    with pytest.raises(ValueError, match=re.escape(f"{path}:4:") + ".*not UTF-8"):
        load_math(str(path), "test")


def test_duplicate_ids(tmp_path):
    rows = _lines(MATH500)
    rows[6]["unique_id"] = rows[2]["unique_id"]
    path = _write_lines(tmp_path / "dup.jsonl", rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}:7:") + ".*duplicate id.*" + re.escape(f"{path}:3")):
        load_math(str(path), "test")


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.test"):
        load_math(str(tmp_path / "nope.jsonl"), "test")
    odd = tmp_path / "x.csv"
    odd.write_text("a,b\n")
    with pytest.raises(ValueError, match="neither"):
        load_math(str(odd), "test")


def test_bad_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=re.escape(f"{path}:1:")):
        load_math(str(path), "test")


def test_offline_hub_id_names_the_key(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="'data.train'.*HF_HUB_OFFLINE"):
        load_math("DigitalLearningGmbH/MATH-lighteval", "train")
    with pytest.raises(ConfigError, match="'data.math500'"):
        load_math("HuggingFaceH4/MATH-500", "test", key="data.math500")


# ----------------------------------------------------------------------------- selections
def test_first_n_and_random_subset():
    records, _ = load_math(str(LIGHTEVAL), "test")
    assert first_n(records, 5) == records[:5]
    assert first_n(records, 100) == records
    with pytest.raises(ValueError):
        first_n(records, -1)
    a = random_subset(records, 7, seed=3)
    assert a == random_subset(records, 7, seed=3)
    assert a != random_subset(records, 7, seed=4)
    assert len(a) == 7 and len({r["id"] for r in a}) == 7
    order = [r["id"] for r in records]
    assert [order.index(r["id"]) for r in a] == sorted(order.index(r["id"]) for r in a)  # dataset order
    assert random_subset(records, 1000, seed=0) == records


# ----------------------------------------------------------------------------- generator
def _num(expr):
    """Exact value of an arithmetic expression over integers (/ is exact division)."""
    assert re.fullmatch(r"[0-9+\-*/() ]+", expr), expr
    return eval(re.sub(r"\d+", lambda m: f"Fraction({m.group(0)})", expr), {"Fraction": Fraction})


def _answer_value(answer):
    m = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", answer)
    return Fraction(int(m.group(1)), int(m.group(2))) if m else Fraction(int(answer))


def _expected(rec):
    """The answer recomputed from the problem text alone, independently of the generator."""
    text, lv = rec["problem"], rec["level"]
    if lv in (1, 2):
        expr = re.fullmatch(r"(?:What is|Compute|Find|Evaluate) (.+?)[?.]", text).group(1)
        return _num(expr)
    if lv == 3:
        n = [int(x) for x in re.findall(r"\d+", text)]
        if "buys" in text and "packs" in text:
            return n[0] + n[1] * n[2]
        if "gives" in text:
            return n[0] - n[1] * n[2]
        if "change" in text:
            return n[2] - n[0] * n[1]
        if "shared" in text:
            return Fraction(n[0], n[1]) + n[2]
        raise AssertionError(text)
    if lv == 4:
        m = re.search(r"(\d+)/(\d+) ([+\-*]) (\d+)/(\d+)", text)
        x, y = Fraction(int(m.group(1)), int(m.group(2))), Fraction(int(m.group(4)), int(m.group(5)))
        return {"+": x + y, "-": x - y, "*": x * y}[m.group(3)]
    if lv == 5:
        lhs, rhs = re.fullmatch(r"Solve for x: (.+) = (.+)\.", text).groups()

        def side(s, x):  # "3x + 5" -> 3*x + 5, "4(x - 2)" -> 4*(x - 2)
            s = re.sub(r"(\d)(x|\()", r"\1*\2", s).replace("x", f"({x})")
            return _num(s)

        g = lambda x: side(lhs, x) - side(rhs, x)  # noqa: E731  (linear in x)
        slope = g(1) - g(0)
        assert slope != 0, text
        root = -g(0) / slope
        assert g(root) == 0
        return root
    raise AssertionError(lv)


@pytest.fixture(scope="module")
def generated():
    return generate_problems(2000, seed=7, levels=[1, 2, 3, 4, 5])


def test_generator_is_deterministic():
    assert generate_problems(300, 11, [1, 2, 3, 4, 5]) == generate_problems(300, 11, [1, 2, 3, 4, 5])
    assert generate_problems(300, 11, [1, 2, 3, 4, 5]) != generate_problems(300, 12, [1, 2, 3, 4, 5])


def test_generator_does_not_touch_global_random():
    import random

    random.seed(0)
    expected = random.random()
    random.seed(0)
    generate_problems(50, 1, [1, 2, 3, 4, 5])
    assert random.random() == expected


def test_generator_levels_and_schema(generated):
    assert {r["level"] for r in generated} == {1, 2, 3, 4, 5}
    counts = [sum(r["level"] == lv for r in generated) for lv in range(1, 6)]
    assert counts == [400] * 5
    subjects = {r["level"]: r["subject"] for r in generated}
    assert subjects == {1: "Arithmetic", 2: "Arithmetic", 3: "Prealgebra", 4: "Fractions", 5: "Algebra"}
    assert len({r["id"] for r in generated}) == len(generated)
    for r in generated:
        assert set(r) == set(FIELDS)
    only = generate_problems(20, 0, [2, 5])
    assert {r["level"] for r in only} == {2, 5}
    with pytest.raises(ValueError):
        generate_problems(5, 0, [0, 6])


def test_generated_solutions_compact(generated):
    allowed = set("0123456789x+-*/=()., ") | set("\\boxed{}") | set("\\frac{}{}")
    for r in generated:
        sol = r["solution"]
        assert len(sol) <= 64, sol
        assert len(sol) <= 48, sol  # fits the default completion cap
        assert len(r["problem"]) <= 90, r["problem"]
        assert set(sol) <= allowed, sol
        assert sol.endswith("\\boxed{" + r["answer"] + "}")


def test_generated_answers_correct(generated):
    for r in generated:
        assert extract_boxed(r["solution"]) == r["answer"]
        assert grade_paper(r["solution"], r["answer"])
        assert _answer_value(r["answer"]) == _expected(r), r
        if r["level"] == 4:  # fractions are reduced
            m = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", r["answer"])
            if m:
                assert Fraction(int(m.group(1)), int(m.group(2))).denominator == int(m.group(2))


def test_generated_steps_are_consistent(generated):
    """Every '='-chained step of a level 1-4 solution has the same exact value."""
    for r in generated:
        if r["level"] > 4:
            continue
        chain = r["solution"].split(". \\boxed")[0].split("=")
        values = {_num(part) for part in chain}
        assert len(values) == 1, r["solution"]


# the single-decision corpus (not the default's chains): the level mix and the count of distinct problems
PLAIN = ("data.forks.p_bug=0.0", f"data.forks.families=[{', '.join(SINGLE_DECISION)}]")


def test_make_splits_disjoint():
    cfg = load_config(overrides=[*PLAIN, "data.n_train=3000", "data.n_test=300", "data.seed=5"])
    train, test = make_splits(cfg.data)
    assert len(train) == 3000 and len(test) == 300
    assert not {r["problem"] for r in train} & {r["problem"] for r in test}
    assert len({r["problem"] for r in test}) == 300  # test texts distinct
    ids = [r["id"] for r in train + test]
    assert len(set(ids)) == len(ids)
    assert {r["level"] for r in test} == {1, 2, 3, 4, 5}
    # the test stream is not the train stream
    assert [r["problem"] for r in test[:20]] != [r["problem"] for r in generate_problems(20, 5, cfg.data.levels)]
    again = make_splits(cfg.data)
    assert again == (train, test)


def test_make_splits_impossible_request_is_clear():
    cfg = load_config(overrides=[*PLAIN, "data.n_train=10", "data.n_test=5000", "data.levels=[1]"])
    with pytest.raises(ValueError, match="n_test"):
        make_splits(cfg.data)


# ----------------------------------------------------------------------------- prepare_data
def test_prepare_data_generated(tmp_path):
    cfg = load_config(overrides=[f"paths.results={tmp_path}", "data.n_train=100", "data.n_test=20", "name=gen"])
    prepare_data(cfg, None)
    out = tmp_path / "gen" / "data"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "test.jsonl", "train.jsonl"]
    train, test = read_records(out / "train.jsonl"), read_records(out / "test.jsonl")
    assert (train, test) == make_splits(cfg.data)
    assert load_config(out / "config.yaml").data == cfg.data


def test_prepare_data_math(tmp_path):
    cfg = load_config(
        overrides=[
            f"paths.results={tmp_path}",
            "name=m",
            "data.source=math",
            f"data.train={LIGHTEVAL}",
            f"data.test={LIGHTEVAL}",
            f"data.math500={MATH500}",
            "eval.protocols=[paper200, math500]",
        ]
    )
    prepare_data(cfg, None)
    out = tmp_path / "m" / "data"
    assert {p.name for p in out.iterdir()} == {"config.yaml", "train.jsonl", "test.jsonl", "math500.jsonl"}
    train = read_records(out / "train.jsonl")
    assert train[0]["id"] == "train/0" and len(train) == len(_lines(LIGHTEVAL))
    assert read_records(out / "math500.jsonl")[0]["id"] == "test/algebra/100.json"
    assert not list(out.glob(".*tmp*"))  # atomic writes left nothing behind


def test_prepare_data_math_without_any_gold_is_an_error(tmp_path):
    rows = [dict(r, solution="No box.") for r in _lines(LIGHTEVAL)]
    bad = _write_lines(tmp_path / "nogold.jsonl", rows)
    cfg = load_config(
        overrides=[
            f"paths.results={tmp_path}",
            "name=m",
            "data.source=math",
            f"data.train={LIGHTEVAL}",
            f"data.test={bad}",
            "eval.protocols=[paper200]",
        ]
    )
    with pytest.raises(ValueError, match="data.test.*no row with a recoverable gold answer"):
        prepare_data(cfg, None)


def test_prepare_data_cli_offline_hub_error(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arca",
            "prepare-data",
            "--set",
            f"paths.results={tmp_path}",
            "--set",
            "data.source=math",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "data.train" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert not (tmp_path / "default" / "data" / "train.jsonl").exists()


# ----------------------------------------------------------------------------- read_records
def test_read_records_validates(tmp_path):
    good = generate_problems(3, 0, [1, 2, 3])
    path = _write_lines(tmp_path / "r.jsonl", good)
    assert read_records(path) == good
    for i, (key, value, msg) in enumerate(
        [
            ("level", 6, "level"),
            ("level", "3", "level"),
            ("answer", None, "answer"),
            ("problem", None, "problem"),
            ("id", good[0]["id"], "duplicate"),
        ]
    ):
        rows = [dict(r) for r in good]
        rows[1][key] = value
        path = _write_lines(tmp_path / f"bad{i}.jsonl", rows)
        with pytest.raises(ValueError, match=re.escape(f"{path}:2:") + f".*{msg}"):
            read_records(path)
    rows = [dict(r) for r in good]
    del rows[2]["subject"]
    path = _write_lines(tmp_path / "nosubj.jsonl", rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}:3:") + ".*subject"):
        read_records(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_records(empty)
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "absent.jsonl")
