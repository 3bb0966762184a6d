r"""Math-Verify in worker processes: equivalences, the hard timeout, killed and replaced workers."""

import os
import signal
import threading
import time

import pytest
from helpers import BIG_EXPR, DEEP_BOX, DEEP_TEXT, SLACK, TIMEOUT, TOWER, latexish
from hypothesis import HealthCheck, given, settings

from arca.grading import grade_paper
from arca.math_verify_pool import MathVerifyGrader, grade_math_verify


@pytest.fixture(scope="module")
def grader():
    with MathVerifyGrader(workers=1, timeout=TIMEOUT) as g:
        yield g


# ----------------------------------------------------------------------------- Math-Verify
EQUIVALENT = [
    (r"\frac{1}{2}", r"so the answer is \boxed{0.5}"),
    ("0.5", r"\boxed{\frac{1}{2}}"),
    ("3000", r"\boxed{3,000}"),
    ("(1,2]", r"\boxed{(1, 2]}"),
    ("(1,2]", r"\boxed{\left( 1, 2 \right]}"),
]


@pytest.mark.parametrize("gold, completion", EQUIVALENT)
def test_math_verify_accepts_what_string_match_rejects(grader, gold, completion):
    assert grade_paper(completion, gold) is False
    assert grader.grade(gold, completion) is True


@pytest.mark.parametrize(
    "gold, completion",
    [
        ("(1,2]", r"\boxed{[1,2]}"),
        ("(1,2]", r"\boxed{(1,2)}"),
        (r"\frac{1}{2}", r"\boxed{0.25}"),
        ("5", "I do not know"),
        ("5", ""),
    ],
)
def test_math_verify_rejects_wrong(grader, gold, completion):
    assert grader.grade(gold, completion) is False


def test_math_verify_gold_forms(grader):
    # A bare gold answer is wrapped before parsing; a gold full solution is used as is.
    assert grader.grade(r"Hence $\boxed{\frac{3}{4}}$.", r"\boxed{0.75}") is True
    assert grader.grade(r"\$18.90", r"\boxed{\$18.90}") is True


def test_grade_many_order_and_bad_items(grader):
    pairs = [("5", r"\boxed{5}"), ("5", r"\boxed{6}"), (5, r"\boxed{5}"), ("1/2", None), ("2", r"\boxed{2}")]
    assert grader.grade_many(pairs) == [True, False, False, False, True]
    assert grader.grade_many([]) == []
    # an empty gold (a kept problem whose gold could not be recovered) scores 0 here too
    assert grader.grade_many([("", r"\boxed{}"), (" ", r"\boxed{5}"), ("5", r"\boxed{5}")]) == [False, False, True]


@pytest.mark.parametrize(
    "completion", [TOWER, BIG_EXPR, DEEP_TEXT, DEEP_BOX], ids=["tower", "100kB", "deep-text", "deep-box"]
)
def test_pathological_inputs_return_within_timeout(grader, completion):
    t = time.monotonic()
    result = grader.grade("5", completion)
    elapsed = time.monotonic() - t
    assert isinstance(result, bool)
    assert elapsed < TIMEOUT + SLACK, f"took {elapsed:.1f} s"
    # the caller (this process) survives and the grader still works
    assert grader.grade("7", r"\boxed{7}") is True


def test_timeout_kills_and_replaces_worker(grader):
    before_pids = grader.worker_pids()
    before_timeouts = grader.n_timeouts
    t = time.monotonic()
    assert grader.grade("5", TOWER) is False
    assert time.monotonic() - t < TIMEOUT + SLACK
    assert grader.n_timeouts == before_timeouts + 1
    assert grader.worker_pids() != before_pids  # replaced
    for pid in before_pids:  # and the old one is really gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert grader.grade(r"\frac{1}{2}", r"\boxed{0.5}") is True  # the next item grades correctly


def test_batch_with_a_hang_keeps_order_and_time():
    pairs = [("1", r"\boxed{1}"), ("5", TOWER), ("3", r"\boxed{3}"), ("4", r"\boxed{5}"), ("0.5", r"\boxed{\frac12}")]
    with MathVerifyGrader(workers=2, timeout=TIMEOUT) as g:
        g.grade_many([("1", r"\boxed{1}")] * 2)  # warm up both workers
        t = time.monotonic()
        assert g.grade_many(pairs) == [True, False, True, False, True]
        assert time.monotonic() - t < TIMEOUT + 2 * SLACK
        assert g.n_timeouts == 1


def test_worker_killed_from_outside_is_replaced(grader):
    grader.grade("1", r"\boxed{1}")
    (pid,) = grader.worker_pids()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert grader.grade("2", r"\boxed{2}") is True
    assert grader.worker_pids() != [pid]


def test_grading_from_a_worker_thread(grader):
    # Math-Verify's own SIGALRM timeouts would fail outside the main thread; ours must not.

    out = {}
    t = threading.Thread(target=lambda: out.update(r=grader.grade_many([("2", r"\boxed{2}"), ("5", TOWER)])))
    t.start()
    t.join(timeout=TIMEOUT + 10)
    assert out.get("r") == [True, False]


def test_grade_math_verify_convenience():
    assert grade_math_verify("3000", r"\boxed{3,000}", timeout=TIMEOUT) is True
    assert grade_math_verify("3000", r"\boxed{300}", timeout=TIMEOUT) is False


def test_grader_rejects_bad_settings():
    with pytest.raises(ValueError):
        MathVerifyGrader(workers=0)
    with pytest.raises(ValueError):
        MathVerifyGrader(timeout=0)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(latexish, latexish)
def test_math_verify_never_raises_or_hangs(grader, completion, gold):
    t = time.monotonic()
    result = grader.grade(gold, completion)
    assert isinstance(result, bool)
    assert time.monotonic() - t < TIMEOUT + SLACK
