"""The generic machinery of a problem with planted forks: forks, tasks and their branches.

A ``Task`` is a problem plus a ``render`` function from choices (one option per ``Fork``) to the
worked solution and the answer it reaches. ``branches`` enumerates every distinct solution text
with its fork tokens; ``sample_choices`` draws one branch the way a pretraining solution does.
The problem families themselves live in ``arca.data.forks``.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Fork:
    """A choice point in a solution: its options and how pretraining solutions pick among them.

    ``correct`` names the option that gives the right answer for a decisive fork; harmless forks
    have ``correct=None`` and pick by ``probs``. Decisive forks have exactly two options, the
    correct one and the bug.
    """

    name: str
    options: tuple[str, ...]
    probs: tuple[float, ...] = ()
    correct: str | None = None
    planted: bool = True  # False: a decision pretraining always takes correctly (the twins)

    @property
    def decisive(self) -> bool:
        return self.correct is not None


Render = Callable[[dict], tuple[str, str]]  # choices {fork name: option} -> (steps, answer)


@dataclass(frozen=True)
class Task:
    family: str
    level: int
    problem: str
    forks: tuple[Fork, ...]
    render: Render  # the worked steps and the answer they reach, before the connector and box

    def text(self, choices: dict) -> tuple[str, str]:
        steps, answer = self.render(choices)
        return f"{steps}{choices['connector']}\\boxed{{{answer}}}", answer


# ----------------------------------------------------------------------------- branches
def _first_diff(s: str, t: str) -> int | None:
    for i, (x, y) in enumerate(zip(s, t)):
        if x != y:
            return i
    return None if len(s) == len(t) else min(len(s), len(t))


def fork_token(text: str, alternatives: list[str]) -> int | None:
    """Character index of a fork's token in ``text``, given the texts its other options write from the
    same choices elsewhere (None: the fork changes nothing here)."""
    diffs = [d for alt in alternatives if (d := _first_diff(text, alt)) is not None]
    return min(diffs) if diffs else None


def branches(task: Task) -> list[dict]:
    """Every distinct branch of a task: text, answer, correct, the decisive forks it takes wrongly
    (``bugs``, by fork name), and its fork tokens (char indices)."""
    names = [f.name for f in task.forks]
    combos = list(itertools.product(*(f.options for f in task.forks)))
    # every combination is rendered once; a fork's token compares a branch with its neighbours,
    # the combinations that differ from it in that fork only
    texts = {combo: task.text(dict(zip(names, combo))) for combo in combos}
    out: dict[str, dict] = {}
    for combo in combos:
        text, answer = texts[combo]
        if text in out:
            continue
        chosen = dict(zip(names, combo))
        tokens = {
            f.name: fork_token(text, [texts[combo[:k] + (o,) + combo[k + 1 :]][0] for o in f.options if o != combo[k]])
            for k, f in enumerate(task.forks)
        }
        out[text] = {
            "text": text,
            "answer": answer,
            "correct": all(chosen[f.name] == f.correct for f in task.forks if f.decisive),
            "bugs": sorted(f.name for f in task.forks if f.decisive and chosen[f.name] != f.correct),
            "decisive": sorted(i for f in task.forks if f.decisive and (i := tokens[f.name]) is not None),
            "distractor": sorted(i for f in task.forks if not f.decisive and (i := tokens[f.name]) is not None),
        }
    return list(out.values())


def sample_choices(task: Task, rng: random.Random, p_bug: float) -> dict:
    """One branch as a pretraining solution would take it: the bug with probability ``p_bug``."""
    choices = {}
    for f in task.forks:
        if f.decisive:
            bug = next(o for o in f.options if o != f.correct)
            choices[f.name] = bug if f.planted and rng.random() < p_bug else f.correct
        else:
            choices[f.name] = rng.choices(f.options, weights=f.probs)[0]
    return choices
