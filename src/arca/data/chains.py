r"""Chain problems: a value passes through two or three planted decisions in one solution.

Where the single-decision families of ``arca.data.forks`` give a completion one place to go wrong,
a chain gives it several: a start value, then a sequence of operation words, each with its own
correct procedure and systematic bug, and, in half of the problems, a harmless step between them.
A failed completion can then hold correct decisions next to the wrong one, and a lucky one wrong
decisions next to right ones, which is where token credit can beat uniform credit (under uniform
credit every token of a failed completion is pushed down, its correct decisions included).

=========  =========================================  =======  =====
word       problem text                               correct  bug
=========  =========================================  =======  =====
half       "gives away half"                          v/2      v*2
lose       "loses b"                                  v-b      v+b
split      "keeps one of b equal piles"               v/b      v*b
add        "finds b more" (harmless: either order)    v+b      b+v
=========  =========================================  =======  =====

No word's correct option is another word's bug: ``/`` is always right against ``*`` and ``-``
against ``+`` (the operand order of ``add`` is a harmless fork, as is the wording before the box).
The decisive token of a step is its operator. An operand-order decision ("takes that from b": b-v
against v-b) was tried and dropped: no credit method taught the small model to stop copying the
running value first, so it capped every method alike. Every intermediate value is an integer of
magnitude at most 24 on every branch, so that the outcome hinges on the decisions, not on execution.
``chain_none`` problems have only ``add`` steps: no decision, the collateral that no credit aims at.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

from arca.data.fork_tree import Fork, Task

_NAMES = ["Ann", "Bob", "Sam", "Mia", "Tom", "Eva", "Max", "Zoe", "Leo", "Ivy"]
_ITEMS = ["apples", "pens", "cards", "books", "eggs", "coins", "stamps", "shells"]
_MAX_VALUE = 24  # every intermediate value on every branch stays within +-24: easy to execute
_MAX_TRIES = 200

CONNECTORS = (". ", ", so ", " thus ")
CONNECTOR_PROBS = (0.47, 0.47, 0.06)


@dataclass(frozen=True)
class Word:
    """One step: its phrase, its operand range, and the (left, op, right) it writes per option."""

    phrase: str
    operand: tuple[int, int]  # b drawn uniformly from this range (inclusive)
    ok: Callable[[int, int], tuple[int, str, int]]
    bug: Callable[[int, int], tuple[int, str, int]] | None  # None: a harmless step (order fork)


WORDS: dict[str, Word] = {
    "half": Word("gives away half", (2, 2), lambda v, b: (v, "/", 2), lambda v, b: (v, "*", 2)),
    "lose": Word("loses {b}", (1, 5), lambda v, b: (v, "-", b), lambda v, b: (v, "+", b)),
    "split": Word("keeps one of {b} equal piles", (2, 3), lambda v, b: (v, "/", b), lambda v, b: (v, "*", b)),
    "add": Word("finds {b} more", (1, 5), lambda v, b: (v, "+", b), None),
}
DECISIVE_WORDS = ("half", "lose", "split")


def _apply(x: int, op: str, y: int) -> int | None:
    """x op y, or None where a division leaves the integers."""
    if op == "/":
        return x // y if x % y == 0 else None
    return {"+": x + y, "-": x - y, "*": x * y}[op]


def _fork_names(steps: list[tuple[str, int]]) -> list[str]:
    """A decisive step's fork is named by its word (each word at most once per chain, so the
    outcome tables can score every word's decision); a harmless step by its position."""
    return [word if WORDS[word].bug is not None else f"{word}{i}" for i, (word, _) in enumerate(steps)]


def _run(start: int, steps: list[tuple[str, int]], choices: dict) -> list[tuple[int, str, int, int]] | None:
    """The written steps (x, op, y, result) of one branch, or None where a value leaves the integers."""
    v, out = start, []
    for name, (word, b) in zip(_fork_names(steps), steps):
        w = WORDS[word]
        option = choices.get(name, "ok")
        x, op, y = w.ok(v, b) if option in ("ok", "ab") else (w.bug(v, b) if w.bug else (b, "+", v))
        r = _apply(x, op, y)
        if r is None or abs(r) > _MAX_VALUE:
            return None
        v = r
        out.append((x, op, y, v))
    return out


def _forks(steps: list[tuple[str, int]]) -> tuple[Fork, ...]:
    forks = []
    for name, (word, _) in zip(_fork_names(steps), steps):
        if WORDS[word].bug is None:
            forks.append(Fork(name, ("ab", "ba"), (0.5, 0.5)))
        else:
            forks.append(Fork(name, ("ok", "bug"), correct="ok"))
    forks.append(Fork("connector", CONNECTORS, CONNECTOR_PROBS))
    return tuple(forks)


def _all_branches_valid(start: int, steps: list[tuple[str, int]], forks: tuple[Fork, ...]) -> bool:
    step_forks = [f for f in forks if f.name != "connector"]
    for combo in itertools.product(*(f.options for f in step_forks)):
        if _run(start, steps, dict(zip((f.name for f in step_forks), combo))) is None:
            return False
    return True


def chain_task(family: str, words: list[str], rng: random.Random) -> Task:
    """A chain through ``words`` (in this order) from a random start, every branch kept integral."""
    p, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    for _ in range(_MAX_TRIES):
        start = rng.randint(2, 12)
        steps = [(w, rng.randint(*WORDS[w].operand)) for w in words]
        forks = _forks(steps)
        if _all_branches_valid(start, steps, forks):
            break
    else:
        raise ValueError(f"no integral chain found for words {words} in {_MAX_TRIES} tries")
    phrases = [WORDS[w].phrase.format(b=b) for w, b in steps]
    text = f"{p} has {start} {item}, " + ", then ".join(phrases) + ". How many now?"

    rendered: dict[tuple, tuple[str, str]] = {}  # enumerating branches renders each choice many times

    def render(ch: dict) -> tuple[str, str]:
        key = tuple(sorted(ch.items()))
        if key not in rendered:
            written = _run(start, steps, ch)
            assert written is not None  # checked for every branch above
            rendered[key] = ", ".join(f"{x}{op}{y}={r}" for x, op, y, r in written), str(written[-1][3])
        return rendered[key]

    level = {0: 1, 2: 4, 3: 5}.get(sum(WORDS[w].bug is not None for w in words), 3)
    return Task(family, level, text, forks, render)


def _decisive_chain(n: int, family: str) -> Callable[[random.Random], Task]:
    """``n`` distinct decisive words in random order; half the problems get a harmless ``add`` step too."""

    def make(rng: random.Random) -> Task:
        for _ in range(_MAX_TRIES):
            words = rng.sample(DECISIVE_WORDS, n)
            if rng.random() < 0.5:
                words.insert(rng.randint(0, n), "add")
            try:
                return chain_task(family, words, rng)
            except ValueError:  # some word orders rarely stay integral: draw another order
                continue
        raise ValueError(f"no integral {family} chain found in {_MAX_TRIES} word draws")

    return make


def _none_chain(rng: random.Random) -> Task:
    return chain_task("chain_none", ["add", "add"], rng)


# family -> (task maker, weight): what ``arca.data.forks.FAMILIES`` registers
CHAIN_FAMILIES: dict[str, tuple[Callable[[random.Random], Task], float]] = {
    "chain2": (_decisive_chain(2, "chain2"), 1.0),
    "chain3": (_decisive_chain(3, "chain3"), 1.0),
    "chain_none": (_none_chain, 0.3),
}
