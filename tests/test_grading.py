r"""Extraction, the paper's normalization and string grader, both graders together, the CLI step."""

import json
import os
import subprocess
import sys
import time

import pytest
from helpers import DEEP_BOX, TIMEOUT, latexish
from hypothesis import given, settings

from arca.grading import extract_boxed, gold_answer, grade_both, grade_lines, grade_paper, normalize_answer


# ----------------------------------------------------------------------------- extraction
@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{5}.", "5"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{{a}{b{c}}}", "{a}{b{c}}"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{1 \}", "1 \\"),  # every brace counts, escaped or not (the author's depth count)
        (r"first \boxed{1} then \boxed{2} finally \boxed{3}", "3"),
        (r"the answer is \boxed 5", None),  # no brace: not a box
        (r"$\boxed 42$ done", None),
        (r"\boxed {7}", None),  # a space before the brace: not a box
        (r"\fbox{8}", None),  # \fbox is not a box
        (r"\boxed{1} and \fbox{2}", "1"),
        (r"\fbox{2} and \boxed{1}", "1"),
        (r"\boxed{5} and then \boxed", "5"),  # a later bare \boxed does not hide an earlier box
        (r"\boxed{5} then \boxed 6", "5"),
        (r"no box here", None),
        ("", None),
        (r"\boxed{}", ""),
        (r"\boxed{5", None),  # truncated completion: the last box is unbalanced
        (r"\boxed{4} then \boxed{5", None),  # an earlier complete box is NOT used
        (r"\boxed{5}}}", "5"),
        (r"\boxed", None),
        (r"\boxedfoo{3}", None),
        (r"\boxed{3} \boxedfoo{4}", "3"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_boxed_5000_deep():
    assert extract_boxed(DEEP_BOX) == "5"
    inner = "{" * 5000 + "x" + "}" * 5000
    assert extract_boxed("\\boxed{" + inner + "}") == inner
    assert extract_boxed("\\boxed{" + "{" * 5000 + "x") is None  # deep and unbalanced


def test_extract_boxed_is_linear_time():
    worst = "\\boxedx" * 50_000 + "\\fbox" + "\\boxed{" + "{" * 50_000 + "}" * 50_000 + "}"
    t = time.perf_counter()
    assert extract_boxed(worst) == "{" * 50_000 + "}" * 50_000
    assert extract_boxed("\\boxedx" * 100_000) is None
    assert extract_boxed("\\boxed{" * 100_000) is None
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("value", [None, 5, b"\\boxed{5}", ["\\boxed{5}"]])
def test_extract_boxed_non_str(value):
    assert extract_boxed(value) is None


def test_gold_answer():
    assert gold_answer(r"Thus $x = \boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert gold_answer("  42 ") == "42"  # a bare answer
    assert gold_answer(r"\boxed{1} or \boxed{2}") == "2"
    assert gold_answer(r"a solution whose box never closes: \boxed{1") == ""  # no gold
    assert gold_answer(None) == ""


# ----------------------------------------------------------------------------- normalization
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  5  ", "5"),  # strip
        ("x  +\n\t1", "x + 1"),  # collapse whitespace
        ("5.", "5"),  # trailing '.'
        ("5 .", "5"),
        ("5..", "5"),
        (r"\left(1,2\right)", "(1,2)"),  # \left \right
        (r"\left[ 0, 1 \right)", "[ 0, 1 )"),
        (r"3\,000", "3000"),  # \,
        (r"a\;b", "ab"),  # \;
        (r"a\!b", "ab"),  # \!
        (r"5\text{ cm}", "5{ cm}"),  # the 5 characters \text go, its braces stay
        (r"\text{(A)}", "{(A)}"),
        (r"10 \text{ inches}", "10 { inches}"),
        (r"10\text{ inches}", "10{ inches}"),
        (r"\textbf{A}", "bf{A}"),  # plain substring removal
        (r"\leftarrow", "arrow"),
        (r"\rightarrow", "arrow"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),  # \dfrac
        (r"\tfrac{3}{4}", r"\frac{3}{4}"),  # \tfrac
        (r"\dfracx", r"\fracx"),
        (r"\dfrac{1}{2}.", r"\frac{1}{2}"),
        # the author's order: the dot goes before the spacing commands, the spaces collapse before them
        (r"5.\,", "5."),
        (r"a \, b", "a  b"),
    ],
)
def test_normalize_each_rule(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        r"\frac12",
        "0.5",
        "3,000",
        r"\pi",
        "{5}",
        "1/2",
        "5%",
        r"\sqrt{2}",
        "x=5",
        "(1,2]",
        "A",
        "Yes",
        r"\$5",
        r"\mbox{cm}",
        r"\fbox{5}",
    ],
)
def test_normalize_touches_nothing_else(raw):
    assert normalize_answer(raw) == raw


def test_normalize_non_str():
    assert normalize_answer(None) == ""


# ----------------------------------------------------------------------------- paper grader
@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        # the author's known cases (docs/method.md, "The string grader")
        (r"\boxed{10 \text{ inches}}", r"10\text{ inches}", False),  # "10 { inches}" vs "10{ inches}"
        (r"\boxed{10 \text{ inches}}", r"so $\boxed{10\text{ inches}}$", False),  # gold as a full solution
        (r"\boxed{\text{(A)}}", "(A)", False),  # "{(A)}" vs "(A)"
        (r"\fbox{5}", "5", False),
        (r"\boxed 5", "5", False),
        (r"\boxed {7}", "7", False),
        (r"\boxed{5} and then \boxed", "5", True),  # a truncated second \boxed hides nothing
        (r"\boxed{5} and then \boxed", r"\boxed{5}", True),
        (r"\boxed{\dfrac{1}{2}.}", r"\boxed{\frac{1}{2}}", True),
        # more
        (r"3+4*2=3+8=11. \boxed{11}", "11", True),
        (r"3+4*2=3+8=12. \boxed{12}", "11", False),
        (r"=11.", "11", False),  # no box
        (r"\boxed{}", "", False),  # an empty gold never matches
        (r"\boxed{5}", "", False),
        (r"\boxed{5}", r"a solution without a box", False),  # taken as a bare answer: no match
        (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", True),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", True),
        (r"\boxed{10\text{ inches}}", r"10\text{ inches}", True),
        (r"\boxed{5\text{ cm}}", "5 cm", False),  # the braces of \text stay
        (r"\boxed{5.}", "5", True),
        (r"\boxed{5}", r"so the answer is $\boxed{5}$.", True),  # gold given as a full solution
        (r"\boxed{1} \boxed{2}", "1", False),  # last box wins
        (r"\boxed{11", "11", False),  # truncated
        (r"\boxed{0.5}", r"\frac{1}{2}", False),  # equivalent, but string match rejects it
        (r"\boxed{yes}", "Yes", False),  # no lower-casing
        (None, "5", False),
        (r"\boxed{5}", None, False),
    ],
)
def test_grade_paper(completion, gold, expected):
    assert grade_paper(completion, gold) is expected


def test_grade_paper_accepts_every_generated_gold():
    # The generated data's answers (integers, negatives, fractions) against their own worked solutions.
    from arca.data import generate_problems

    problems = generate_problems(200, seed=0)
    assert any("\\frac" in p["answer"] for p in problems) and any(p["answer"].startswith("-") for p in problems)
    assert all(grade_paper(p["solution"], p["answer"]) for p in problems)


# ----------------------------------------------------------------------------- both graders
def test_grade_both():
    rows = grade_both(["3000", "11", "5"], [r"\boxed{3,000}", r"\boxed{11}", "no box"], timeout=TIMEOUT)
    assert rows == [
        {"answer": "3,000", "paper": False, "math_verify": True},
        {"answer": "11", "paper": True, "math_verify": True},
        {"answer": None, "paper": False, "math_verify": False},
    ]
    with pytest.raises(ValueError):
        grade_both(["1"], [], timeout=TIMEOUT)


# ----------------------------------------------------------------------------- CLI
def test_grade_lines_reports_bad_lines():
    lines = [
        json.dumps({"gold": "2", "completion": r"\boxed{2}"}).encode(),
        b"{not json",
        json.dumps({"gold": "2"}).encode(),
        json.dumps({"gold": 2, "completion": "x"}).encode(),
        json.dumps(["gold", "completion"]).encode(),
        b"\xff\xfe",
        b"",
        json.dumps({"gold": "3", "completion": r"\boxed{3}"}).encode(),
    ]
    rows = grade_lines(lines, timeout=TIMEOUT)
    assert len(rows) == len(lines)
    assert rows[0] == {"answer": "2", "paper": True, "math_verify": True}
    for i in range(1, 7):
        assert rows[i]["error"].startswith(f"line {i + 1}:"), rows[i]
    assert "gold" in rows[3]["error"] and "completion" in rows[2]["error"]
    assert rows[7] == {"answer": "3", "paper": True, "math_verify": True}


def test_grade_cli_subprocess():
    lines = [
        json.dumps({"gold": r"\frac{1}{2}", "completion": r"so \boxed{0.5}"}),
        '{"gold": "1", "completion": ',  # malformed, in the middle
        json.dumps({"gold": "5", "completion": "no box, no number"}),
        json.dumps({"completion": r"\boxed{1}"}),
        json.dumps({"gold": "11", "completion": r"3+4*2=3+8=11. \boxed{11}"}),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "arca", "grade", "--set", f"eval.grader_timeout={TIMEOUT}"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(out) == 5
    assert out[0] == {"answer": "0.5", "paper": False, "math_verify": True}
    assert out[1]["error"].startswith("line 2:") and "JSON" in out[1]["error"]
    assert out[2] == {"answer": None, "paper": False, "math_verify": False}
    assert out[3]["error"].startswith("line 4:") and "gold" in out[3]["error"]
    assert out[4] == {"answer": "11", "paper": True, "math_verify": True}


# ----------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(latexish)
def test_extract_and_normalize_never_raise(text):
    box = extract_boxed(text)
    assert box is None or (isinstance(box, str) and box in text)
    norm = normalize_answer(text)
    assert isinstance(norm, str)
    assert norm == norm.strip()
    assert "\n" not in norm and "\t" not in norm  # every whitespace run became one space


@settings(max_examples=150, deadline=None)
@given(latexish, latexish)
def test_grade_paper_never_raises_and_is_reflexive_on_boxes(completion, gold):
    assert isinstance(grade_paper(completion, gold), bool)
    box = extract_boxed(completion)
    if box is not None and "\\boxed{" not in box and normalize_answer(box):
        assert grade_paper(completion, box) is True
