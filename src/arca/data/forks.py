r"""Planted procedure forks: generated problems whose solutions branch at known tokens.

Why this task family exists. RL post-training raises accuracy quickly when pretraining left the
model a *choice between behaviours it already has* and the reward tells them apart; it barely
moves greedy accuracy when errors are scattered slips of execution. The clean corpus
(``arca.data.generated``) has only the second kind of error, so GRPO on it does not learn. Here
every problem type has a correct procedure and a plausible, systematic bug (``how many more``
solved by adding, ``half of`` by doubling, left-to-right evaluation ignoring precedence, ``fewer
than`` read as ``more than``, subtracting in the order the numbers are mentioned, a sign that does
not flip when a term crosses ``=``...). The pretraining solutions take the buggy branch with
probability ``p_bug`` (about 0.6: greedy decoding follows the bug, sampling still finds the right
branch), with arithmetic easy enough that either branch is executed correctly almost always.
Training and test golds are always the correct answer.

Because the generator knows each branch, it knows the *decisive token* of every solution: the
first token where the correct and the buggy branch differ. It also plants *harmless distractor
forks* (the operand order of a commutative step, the wording before the box, with one rare but
harmless wording) so that the decisive tokens are not simply the only high-entropy or
high-surprisal positions. Every record lists all its branches (``branches``: text, answer,
character positions of decisive and distractor fork tokens, correct or not); ``arca.labels``
aligns a sampled completion with them.

A fork token, formally: for a branch (one option chosen at every fork) and a fork f, the fork
token is the first character where the branch's text differs from the text with f switched to
another option (the earliest such character over the other options). A fork whose options give
the same text on this branch has no token there.

Families (``subject`` of the record) and their levels:

======================  =====  ==============================  ================================
family                  level  correct                          bug
======================  =====  ==============================  ================================
none                    1      a+b, a*b                         - (no decision)
precedence_add          2      a+b*c = a+(bc)                   (a+b)*c
precedence_sub          2      a-b*c = a-(bc)                   (a-b)*c
subtract_from           2      "subtract b from a": a-b         b-a (order mentioned)
more_diff               3      "how many more": a-b             a+b
in_all                  3      "in all": a+b                    a-b, never planted (twin)
fewer_than              3      "b fewer than": a-b              a+b
more_than               3      "b more than": a+b               a-b, never planted (twin)
half                    4      half of n, plus b: n/2           n*2
each                    4      a bags of b each: a*b            a+b
share                   4      n shared by b: n/b               n-b
cross_plus              5      x + a = c: x = c-a               x = c+a
cross_minus             5      x - a = c: x = c+a               x = c-a, never planted (twin)
======================  =====  ==============================  ================================

The twins make three decisions depend on the wording rather than on a constant flip: the same slot
of the same equation takes ``-`` after "how many more", "fewer than" and "x + a = c" but ``+`` after
"in all", "more than" and "x - a = c", so pushing one family towards ``-`` must not drag its twin
along. A twin's decision is labelled like any other (its wrong operation is a branch), but
pretraining never plants its bug: it is "forked" only once RL drags it. (Twins that were forked too,
with the opposite bug, made the two wordings carry almost the same operation statistics in
pretraining, 60/40 against 40/60; a 1M-parameter model then barely told them apart and GRPO learnt
one constant operation for both.) ``none`` and the twins have half the weight of a planted family:
about 82% of problems carry a planted bug and no family holds more than about 9% of them.
"""

from __future__ import annotations

import random
from typing import Callable

from arca.config import InputError
from arca.data.chains import CHAIN_FAMILIES
from arca.data.fork_tree import Fork, Task, branches, sample_choices

_NAMES = ["Ann", "Bob", "Sam", "Mia", "Tom", "Eva", "Max", "Zoe", "Leo", "Ivy"]
_ITEMS = ["apples", "pens", "cards", "books", "eggs", "coins", "stamps", "shells"]

# The wording before the box: a harmless fork in every solution; " thus " is the rare option.
CONNECTORS = (". ", ", so ", " thus ")
CONNECTOR_PROBS = (0.47, 0.47, 0.06)
ORDER = ("ab", "ba")  # operand order of a commutative step: harmless


def _op(a: object, op: str, b: object) -> str:
    return f"{a}{op}{b}"


def _decide(bug: str, ok: str = "ok", planted: bool = True) -> Fork:
    return Fork("decision", (ok, bug), correct=ok, planted=planted)


def _connector() -> Fork:
    return Fork("connector", CONNECTORS, CONNECTOR_PROBS)


def _order() -> Fork:
    return Fork("order", ORDER, (0.5, 0.5))


def _ordered(ch: dict, x: object, y: object) -> tuple[object, object]:
    return (x, y) if ch["order"] == "ab" else (y, x)


# ----------------------------------------------------------------------------- families
# Operands are small (mostly single digits) so that a ~1M-parameter model executes either branch
# reliably: the outcome should hinge on the decision, not on arithmetic slips. Most texts carry a
# name (and an item) so that the held-out split can still find problems absent from training.
def _none(rng: random.Random) -> Task:
    p = rng.choice(_NAMES)
    if rng.random() < 0.5:
        a, b, op = rng.randint(2, 9), rng.randint(2, 9), "+"
        text = rng.choice(["What is {a} + {b}?", "{p} adds {a} and {b}. What does {p} get?"]).format(a=a, b=b, p=p)
    else:
        a, b, op = rng.randint(2, 5), rng.randint(2, 9), "*"
        text = rng.choice(["What is {a} * {b}?", "{p} multiplies {a} by {b}. What does {p} get?"]).format(a=a, b=b, p=p)
    r = a + b if op == "+" else a * b

    def render(ch: dict) -> tuple[str, str]:
        x, y = _ordered(ch, a, b)
        return f"{_op(x, op, y)}={r}", str(r)

    return Task("none", 1, text, (_order(), _connector()), render)


def _expression(rng: random.Random, expr: str) -> str:
    p = rng.choice(_NAMES)
    return rng.choice(
        ["What is {e}?", "{p} computes {e}. What is the result?", "{p} works out {e}. What is it?"]
    ).format(e=expr, p=p)


def _precedence_add(rng: random.Random) -> Task:
    a, b, c = rng.randint(2, 9), rng.randint(2, 3), rng.randint(2, 3)
    text = _expression(rng, f"{a} + {b} * {c}")

    def render(ch: dict) -> tuple[str, str]:
        if ch["decision"] == "ok":
            return f"{a}+{b}*{c}={a}+{b * c}={a + b * c}", str(a + b * c)
        return f"{a}+{b}*{c}={a + b}*{c}={(a + b) * c}", str((a + b) * c)

    return Task("precedence_add", 2, text, (_decide("left_to_right"), _connector()), render)


def _precedence_sub(rng: random.Random) -> Task:
    b, c = rng.randint(2, 3), rng.randint(2, 3)
    a = rng.randint(b * c + 1, b * c + 9)
    text = _expression(rng, f"{a} - {b} * {c}")

    def render(ch: dict) -> tuple[str, str]:
        if ch["decision"] == "ok":
            return f"{a}-{b}*{c}={a}-{b * c}={a - b * c}", str(a - b * c)
        return f"{a}-{b}*{c}={a - b}*{c}={(a - b) * c}", str((a - b) * c)

    return Task("precedence_sub", 2, text, (_decide("left_to_right"), _connector()), render)


def _subtract_from(rng: random.Random) -> Task:
    a = rng.randint(3, 9)
    b = rng.randint(2, a - 1)
    p = rng.choice(_NAMES)
    text = rng.choice(
        [
            "Subtract {b} from {a}.",
            "{p} subtracts {b} from {a}. What is the result?",
            "{p} takes {b} away from {a}. What is left?",
        ]
    ).format(a=a, b=b, p=p)

    def render(ch: dict) -> tuple[str, str]:
        x, y = (a, b) if ch["decision"] == "ok" else (b, a)
        return f"{x}-{y}={x - y}", str(x - y)

    return Task("subtract_from", 2, text, (_decide("mention_order"), _connector()), render)


def _two_people(rng: random.Random) -> tuple[str, str, str, int, int]:
    p, q = rng.sample(_NAMES, 2)
    a = rng.randint(4, 9)
    return p, q, rng.choice(_ITEMS), a, rng.randint(2, a - 1)


def _add_or_sub(family: str, a: int, b: int, correct_op: str, bug: str, text: str, planted: bool = True) -> Task:
    """``a op b``; ``planted=False`` is a twin: pretraining always takes the correct operation."""

    def render(ch: dict) -> tuple[str, str]:
        op = correct_op if ch["decision"] == "ok" else ("+" if correct_op == "-" else "-")
        r = a + b if op == "+" else a - b
        return f"{a}{op}{b}={r}", str(r)

    return Task(family, 3, text, (_decide(bug, planted=planted), _connector()), render)


# "a has ..., b has ..." problems: family -> (question, correct operation, bug name, planted)
_TWO_PEOPLE = {
    "more_diff": ("{p} has {a} {i}. {q} has {b} {i}. How many more does {p} have?", "-", "adds", True),
    "in_all": ("{p} has {a} {i}. {q} has {b} {i}. How many do they have in all?", "+", "subtracts", False),
    "fewer_than": ("{p} has {a} {i}. {q} has {b} fewer than {p}. How many does {q} have?", "-", "reads_more", True),
    "more_than": ("{p} has {a} {i}. {q} has {b} more than {p}. How many does {q} have?", "+", "reads_fewer", False),
}


def _two_people_task(family: str, rng: random.Random) -> Task:
    template, op, bug, planted = _TWO_PEOPLE[family]
    p, q, item, a, b = _two_people(rng)
    return _add_or_sub(family, a, b, op, bug, template.format(p=p, q=q, i=item, a=a, b=b), planted=planted)


def _half(rng: random.Random) -> Task:
    h, b = rng.randint(2, 9), rng.randint(2, 9)
    n = 2 * h
    p, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    text = rng.choice(
        [
            "What is half of {n}, plus {b}?",
            "{p} has {n} {i}, gives away half, then gets {b} more. How many now?",
        ]
    ).format(n=n, b=b, p=p, i=item)

    def render(ch: dict) -> tuple[str, str]:
        v = n // 2 if ch["decision"] == "ok" else n * 2
        op = "/" if ch["decision"] == "ok" else "*"
        x, y = _ordered(ch, v, b)
        return f"{n}{op}2={v}, {x}+{y}={v + b}", str(v + b)

    return Task("half", 4, text, (_decide("doubles"), _order(), _connector()), render)


def _each(rng: random.Random) -> Task:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(2, 5), rng.randint(2, 9)
    text = f"{name} buys {a} bags of {b} {item} each. How many {item} is that?"

    def render(ch: dict) -> tuple[str, str]:
        op = "*" if ch["decision"] == "ok" else "+"
        x, y = _ordered(ch, a, b)
        r = a * b if op == "*" else a + b
        return f"{x}{op}{y}={r}", str(r)

    return Task("each", 4, text, (_decide("adds"), _order(), _connector()), render)


def _share(rng: random.Random) -> Task:
    item, p = rng.choice(_ITEMS), rng.choice(_NAMES)
    b, q = rng.randint(2, 5), rng.randint(2, 9)
    n = b * q
    text = rng.choice(
        [
            "{n} {i} are shared equally by {b} kids. How many does each kid get?",
            "{p} shares {n} {i} equally among {b} kids. How many does each get?",
        ]
    ).format(n=n, i=item, b=b, p=p)

    def render(ch: dict) -> tuple[str, str]:
        op, r = ("/", q) if ch["decision"] == "ok" else ("-", n - b)
        return f"{n}{op}{b}={r}", str(r)

    return Task("share", 4, text, (_decide("subtracts"), _connector()), render)


def _cross(family: str, sign: str, rng: random.Random) -> Task:
    a = rng.randint(2, 8)
    c = a + rng.randint(1, 9 - a) if sign == "+" else rng.randint(2, 9)
    lhs = rng.choice(["x {s} {a}", "{a} {s} x"] if sign == "+" else ["x {s} {a}"]).format(s=sign, a=a)
    p = rng.choice(_NAMES)
    text = rng.choice(["Solve for x: {l} = {c}.", "{p} knows that {l} = {c}. What is x?"]).format(l=lhs, c=c, p=p)
    flip = "-" if sign == "+" else "+"

    def render(ch: dict) -> tuple[str, str]:
        op = flip if ch["decision"] == "ok" else sign
        v = c - a if op == "-" else c + a
        return f"x={c}{op}{a}={v}", str(v)

    # x - a = c is the twin of x + a = c: the same decision, never taken wrongly in pretraining
    return Task(family, 5, text, (_decide("keeps_sign", planted=sign == "+"), _connector()), render)


FAMILIES: dict[str, tuple[Callable[[random.Random], Task], float]] = {
    "none": (_none, 0.5),
    "precedence_add": (_precedence_add, 1),
    "precedence_sub": (_precedence_sub, 1),
    "subtract_from": (_subtract_from, 1),
    "more_diff": (lambda rng: _two_people_task("more_diff", rng), 1),
    "in_all": (lambda rng: _two_people_task("in_all", rng), 0.5),
    "fewer_than": (lambda rng: _two_people_task("fewer_than", rng), 1),
    "more_than": (lambda rng: _two_people_task("more_than", rng), 0.5),
    "half": (_half, 1),
    "each": (_each, 1),
    "share": (_share, 1),
    "cross_plus": (lambda rng: _cross("cross_plus", "+", rng), 1),
    "cross_minus": (lambda rng: _cross("cross_minus", "-", rng), 0.5),
}
SINGLE_DECISION = tuple(FAMILIES)  # one decision per problem: the default family set
FAMILIES.update(CHAIN_FAMILIES)  # several decisions per solution (arca.data.chains)


def draw_family(rng: random.Random, families: list[str]) -> str:
    return rng.choices(families, weights=[FAMILIES[n][1] for n in families])[0]


def check_families(families: list[str]) -> list[str]:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise InputError(f"data.forks.families must be a non-empty list of {list(FAMILIES)}; unknown: {unknown}")
    return list(families)


def task_record(rid: str, task: Task, choices: dict, bs: list[dict] | None = None) -> dict:
    """A record of the normalized schema plus ``fork`` (the family, "" when unforked) and ``branches``
    (``bs`` when the caller has already enumerated them)."""
    solution, _ = task.text(choices)
    _, answer = task.text({**choices, **{f.name: f.correct for f in task.forks if f.decisive}})
    return {
        "id": rid,
        "problem": task.problem,
        "solution": solution,
        "answer": answer,
        "level": task.level,
        "subject": task.family,
        "fork": task.family if any(f.decisive and f.planted for f in task.forks) else "",
        "branches": branches(task) if bs is None else bs,
    }


def generate_forked(
    n: int,
    seed: int | str,
    p_bug: float,
    families: list[str] | None = None,
    id_prefix: str = "train",
    exclude: set[str] | None = None,
) -> list[dict]:
    """``n`` records; pretraining solutions take each decisive fork's bug with probability ``p_bug``.

    ``exclude`` (problem texts) switches to held-out mode: distinct texts not in ``exclude``.
    """
    rng = random.Random(seed)
    families = check_families(families or list(SINGLE_DECISION))
    seen = set(exclude) if exclude is not None else None
    # A held-out set gets exact family quotas (shuffled), so no family's share drifts by chance.
    plan = _quotas(n, families, rng) if seen is not None else None
    out: list[dict] = []
    while len(out) < n:
        family = plan[len(out)] if plan else draw_family(rng, families)
        for _ in range(_MAX_TRIES):
            task = FAMILIES[family][0](rng)
            bs = branches(task)
            if _bug_hits_answer(bs):
                continue  # e.g. 2*2 = 2+2: the decision would not decide
            if seen is None or task.problem not in seen:
                break
        else:
            raise InputError(
                f"could not draw a held-out '{family}' problem absent from the training set after "
                f"{_MAX_TRIES} tries ({len(out)} of {n} found); lower data.n_test or data.n_train"
            )
        if seen is not None:
            seen.add(task.problem)
        out.append(task_record(f"{id_prefix}/{len(out)}", task, sample_choices(task, rng, p_bug), bs))
    return out


_MAX_TRIES = 20_000


def _quotas(n: int, families: list[str], rng: random.Random) -> list[str]:
    """``n`` family names in proportion to their weights (largest remainder), in random order."""
    w = [FAMILIES[f][1] for f in families]
    exact = [n * x / sum(w) for x in w]
    counts = [int(e) for e in exact]
    for i in sorted(range(len(w)), key=lambda i: exact[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    plan = [f for f, c in zip(families, counts) for _ in range(c)]
    rng.shuffle(plan)
    return plan


def _bug_hits_answer(bs: list[dict]) -> bool:
    right = {b["answer"] for b in bs if b["correct"]}
    return any(b["answer"] in right for b in bs if not b["correct"])
