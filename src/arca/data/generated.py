r"""Generated arithmetic problems with short worked solutions, levels 1-5 (the offline data set).

The default config pretrains a ~2M-parameter character-level model on these solutions and then
GRPO-trains it with completions capped at about 48-64 characters, so everything is compact:

* a solution is a few ``=``-chained steps and ``\boxed{answer}`` (<= 48 characters, the
  default completion cap; a long fraction sum skips its common-denominator step to fit),
  e.g. ``3+4*2=3+8=11. \boxed{11}``;
* solutions use only digits, ``x``, ``+ - * / = ( ) . ,``, space, ``\boxed{}`` and ``\frac{}{}``;
* problem texts are at most 90 characters.

Difficulty rises with the level, so that a small model solves level 1 mostly and level 5 rarely:

====== ============ ===========================================================
level  subject      form
====== ============ ===========================================================
1      Arithmetic   a + b, a - b with small numbers
2      Arithmetic   two operations with precedence or parentheses
3      Prealgebra   two-step word problems (buy, give away, pay, share)
4      Fractions    sum, difference or product of proper fractions, reduced
5      Algebra      linear equations in x (one or two steps, negative roots)
====== ============ ===========================================================

Everything is drawn from a ``random.Random`` built from the seed, never the global state, so the
same seed gives the same problems on every machine.
"""

from __future__ import annotations

import random
from fractions import Fraction
from math import lcm
from typing import Callable

from arca.config import InputError
from arca.data.forks import generate_forked

SUBJECTS = {1: "Arithmetic", 2: "Arithmetic", 3: "Prealgebra", 4: "Fractions", 5: "Algebra"}
MAX_SOLUTION_CHARS = 64
TARGET_SOLUTION_CHARS = 48  # the default rollout.max_new_tokens (characters for the char model)
MAX_PROBLEM_CHARS = 90

_NAMES = ["Ann", "Bob", "Sam", "Mia", "Tom", "Eva", "Max", "Zoe", "Leo", "Ivy"]
_ITEMS = ["apples", "pens", "cards", "books", "eggs", "coins", "stamps", "shells"]

Problem = tuple[str, str, str]  # (problem text, worked solution, answer)


def _boxed(steps: str, answer: str) -> str:
    return f"{steps}. \\boxed{{{answer}}}"


# ----------------------------------------------------------------------------- level 1
def _level1(rng: random.Random) -> Problem:
    a, b = rng.randint(1, 15), rng.randint(1, 15)
    if rng.random() < 0.5:
        expr, r = f"{a}+{b}", a + b
        shown = f"{a} + {b}"
    else:
        a, b = max(a, b), min(a, b)  # keep level 1 free of negative numbers
        expr, r = f"{a}-{b}", a - b
        shown = f"{a} - {b}"
    text = rng.choice(["What is {e}?", "Compute {e}.", "Find {e}."]).format(e=shown)
    return text, _boxed(f"{expr}={r}", str(r)), str(r)


# ----------------------------------------------------------------------------- level 2
def _level2(rng: random.Random) -> Problem:
    a, b, c = (rng.randint(2, 7) for _ in range(3))
    form = rng.randrange(4)
    if form == 0:  # multiplication binds tighter
        expr, mid, r = f"{a}+{b}*{c}", f"{a}+{b * c}", a + b * c
    elif form == 1:
        c = rng.randint(1, a * b)  # non-negative result
        expr, mid, r = f"{a}*{b}-{c}", f"{a * b}-{c}", a * b - c
    elif form == 2:
        expr, mid, r = f"({a}+{b})*{c}", f"{a + b}*{c}", (a + b) * c
    else:
        d = rng.randint(2, 6)
        a, b, c = rng.randint(2, 6), rng.randint(2, 6), rng.randint(2, 6)
        expr, mid, r = f"{a}*{b}+{c}*{d}", f"{a * b}+{c * d}", a * b + c * d
    shown = expr.replace("+", " + ").replace("-", " - ").replace("*", " * ")
    text = rng.choice(["What is {e}?", "Compute {e}.", "Evaluate {e}."]).format(e=shown)
    return text, _boxed(f"{expr}={mid}={r}", str(r)), str(r)


# ----------------------------------------------------------------------------- level 3
def _level3(rng: random.Random) -> Problem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    form = rng.randrange(4)
    if form == 0:
        a, b, c = rng.randint(2, 20), rng.randint(2, 5), rng.randint(2, 6)
        text = f"{name} has {a} {item} and buys {b} packs of {c}. How many {item} now?"
        steps, r = f"{a}+{b}*{c}={a}+{b * c}={a + b * c}", a + b * c
    elif form == 1:
        b, c = rng.randint(2, 5), rng.randint(2, 5)
        a = b * c + rng.randint(1, 12)
        text = f"{name} has {a} {item} and gives {b} to each of {c} friends. How many are left?"
        steps, r = f"{a}-{b}*{c}={a}-{b * c}={a - b * c}", a - b * c
    elif form == 2:
        a, b = rng.randint(2, 5), rng.randint(2, 6)
        c = a * b + rng.randint(1, 15)
        text = f"{name} buys {a} {item} at {b} dollars each and pays {c} dollars. What is the change?"
        steps, r = f"{c}-{a}*{b}={c}-{a * b}={c - a * b}", c - a * b
    else:
        b, q, c = rng.randint(2, 5), rng.randint(2, 6), rng.randint(1, 6)
        a = b * q
        text = f"{a} {item} are shared by {b} kids. Each kid then gets {c} more. How many does each have?"
        steps, r = f"{a}/{b}+{c}={q}+{c}={q + c}", q + c
    return text, _boxed(steps, str(r)), str(r)


# ----------------------------------------------------------------------------- level 4
def _frac_latex(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"\\frac{{{x.numerator}}}{{{x.denominator}}}"


def _level4(rng: random.Random) -> Problem:
    # Fractions are kept as (numerator, denominator) as written: Fraction would reduce them.
    b, d = rng.randint(2, 6), rng.randint(2, 6)
    a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
    op = rng.choice("+-*")
    if op == "-" and Fraction(a, b) < Fraction(c, d):
        a, b, c, d = c, d, a, b  # keep the result non-negative
    if op == "*":
        num, den = a * c, b * d
        steps = f"{a}/{b}*{c}/{d}={num}/{den}"
    else:
        den = lcm(b, d)
        x, y = a * (den // b), c * (den // d)
        num = x + y if op == "+" else x - y
        steps = f"{a}/{b}{op}{c}/{d}="
        steps += f"{x}/{den}{op}{y}/{den}={num}/{den}" if b != d else f"{num}/{den}"
    value = Fraction(num, den)
    reduced = f"={value.numerator}" if value.denominator == 1 else f"={value.numerator}/{value.denominator}"
    if (value.numerator, value.denominator) != (num, den):
        steps += reduced
    answer = _frac_latex(value)
    if len(_boxed(steps, answer)) > TARGET_SOLUTION_CHARS:
        # Too long for the rollout cap: skip the common-denominator step.
        steps = f"{a}/{b}{op}{c}/{d}={num}/{den}" + (reduced if reduced != f"={num}/{den}" else "")
    text = rng.choice(
        [
            "What is {a}/{b} {o} {c}/{d}? Give the answer in lowest terms.",
            "Compute {a}/{b} {o} {c}/{d} as a reduced fraction.",
        ]
    ).format(a=a, b=b, c=c, d=d, o=op)
    return text, _boxed(steps, answer), answer


# ----------------------------------------------------------------------------- level 5
def _signed(v: int) -> str:
    """``+ 5`` / ``- 5`` for writing ``ax + b`` with a negative b."""
    return f"+ {v}" if v >= 0 else f"- {-v}"


def _level5(rng: random.Random) -> Problem:
    x = rng.randint(-6, 9)
    a = rng.randint(2, 6)
    form = rng.randrange(3)
    if form == 0:  # a x + b = c
        b = rng.choice([i for i in range(-12, 13) if i != 0])
        c = a * x + b
        text = f"Solve for x: {a}x {_signed(b)} = {c}."
        rhs = f"{c}-{b}" if b > 0 else f"{c}+{-b}"
        steps = f"{a}x={rhs}={a * x}, x={a * x}/{a}={x}"
    elif form == 1:  # a (x + b) = c
        b = rng.choice([i for i in range(-6, 7) if i != 0])
        c = a * (x + b)
        inner = f"x+{b}" if b > 0 else f"x-{-b}"
        text = f"Solve for x: {a}(x {_signed(b)}) = {c}."
        back = f"{x + b}-{b}" if b > 0 else f"{x + b}+{-b}"
        steps = f"{inner}={c}/{a}={x + b}, x={back}={x}"
    else:  # a x + b = e x + f, a > e
        e = rng.randint(1, a - 1)
        b = rng.randint(1, 12)
        f = (a - e) * x + b
        ex = "x" if e == 1 else f"{e}x"
        text = f"Solve for x: {a}x + {b} = {ex} {_signed(f)}."
        k = a - e
        steps = f"x={f}-{b}={f - b}" if k == 1 else f"{k}x={f}-{b}={f - b}, x={f - b}/{k}={x}"
    return text, _boxed(steps, str(x)), str(x)


_MAX_REJECTED_IN_A_ROW = 20_000

_LEVELS: dict[int, Callable[[random.Random], Problem]] = {
    1: _level1,
    2: _level2,
    3: _level3,
    4: _level4,
    5: _level5,
}


def _record(rid: str, level: int, problem: Problem) -> dict:
    text, solution, answer = problem
    return {
        "id": rid,
        "problem": text,
        "solution": solution,
        "answer": answer,
        "level": level,
        "subject": SUBJECTS[level],
    }


def _check_levels(levels: list[int]) -> list[int]:
    levels = list(levels)
    if not levels or any(lv not in _LEVELS for lv in levels):
        raise InputError(f"levels must be a non-empty list of 1..5, got {levels}")
    return levels


def generate_problems(
    n: int, seed: int | str, levels: list[int] = (1, 2, 3, 4, 5), id_prefix: str = "gen"
) -> list[dict]:
    """``n`` problems cycling through ``levels`` (so each level gets n/len(levels)), ids ``<prefix>/<i>``.

    Problem texts may repeat (training samples prompts with replacement anyway).
    """
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    levels = _check_levels(levels)
    rng = random.Random(seed)
    return [
        _record(f"{id_prefix}/{i}", lv, _LEVELS[lv](rng)) for i, lv in ((i, levels[i % len(levels)]) for i in range(n))
    ]


def generate_disjoint(
    n: int, seed: int | str, levels: list[int], exclude: set[str], id_prefix: str = "test"
) -> list[dict]:
    """``n`` problems with distinct texts, none of them in ``exclude`` (rejection sampling)."""
    levels = _check_levels(levels)
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[dict] = []
    rejected_in_a_row = 0  # the level to fill only changes on success, so this measures exhaustion
    while len(out) < n:
        lv = levels[len(out) % len(levels)]
        problem = _LEVELS[lv](rng)
        if rejected_in_a_row >= _MAX_REJECTED_IN_A_ROW:
            raise InputError(
                f"could not draw {n} distinct problems at levels {levels} that are not in the "
                f"training set ({len(out)} found); lower data.n_test or data.n_train"
            )
        if problem[0] in seen:
            rejected_in_a_row += 1
            continue
        rejected_in_a_row = 0
        seen.add(problem[0])
        out.append(_record(f"{id_prefix}/{len(out)}", lv, problem))
    return out


def make_splits(data_cfg) -> tuple[list[dict], list[dict]]:
    """(train, test) from ``cfg.data``: test texts are distinct and absent from train.

    The test set comes from its own seed stream (``"<seed>:test"``), so changing ``n_train``
    changes which test problems are rejected but not how they are drawn. With
    ``data.forks.p_bug > 0`` the problems are the planted-fork families of ``arca.data.forks``
    (train solutions take the bug with probability p_bug; test solutions are correct); with 0 they
    are the clean levels 1-5 of this module, unchanged.
    """
    forks = data_cfg.forks
    if forks.p_bug > 0:
        train = generate_forked(data_cfg.n_train, data_cfg.seed, forks.p_bug, forks.families, id_prefix="train")
        test = generate_forked(
            data_cfg.n_test,
            f"{data_cfg.seed}:test",
            0.0,
            forks.families,
            id_prefix="test",
            exclude={r["problem"] for r in train},
        )
        return train, test
    train = generate_problems(data_cfg.n_train, data_cfg.seed, data_cfg.levels, id_prefix="train")
    test = generate_disjoint(
        data_cfg.n_test,
        f"{data_cfg.seed}:test",
        data_cfg.levels,
        exclude={r["problem"] for r in train},
        id_prefix="test",
    )
    return train, test
