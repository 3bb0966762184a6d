r"""Answer extraction and the two graders: the paper's string match and Math-Verify.

Paper grader (docs/method.md, "The string grader"): the author's extraction and normalization, and
nothing more. It is pure Python, linear in the input length and never raises, so the training
loop uses it as the reward.

  1. Extraction (``extract_boxed``), the same for completion and gold: find the LAST occurrence
     of the 7 characters ``\boxed{``; from there count braces (depth starts at 1, every ``{``
     +1, every ``}`` -1, escaped or not); the answer is the text before depth reaches 0, and
     there is none if the text ends first (a completion truncated inside its last box). Nothing
     else is a box: not ``\fbox{5}``, not ``\boxed 5``, not ``\boxed {5}``; a later ``\boxed``
     without a brace does not hide an earlier complete box.
  2. Normalization (``normalize_answer``): strip; collapse whitespace runs to one space; strip
     trailing ``.``; remove ``\left`` and ``\right``; remove ``\,`` ``\;`` ``\!``; remove the 5
     characters ``\text`` (its braces stay: ``10\text{ in}`` -> ``10{ in}``); ``\dfrac`` and
     ``\tfrac`` -> ``\frac``; strip. Plain substring operations, in this order; no lower-casing.
  3. Reward 1 when both answers exist and the normalized strings are equal, else 0.

Equivalent forms that differ as strings (``0.5`` vs ``\frac{1}{2}``, ``\text{(A)}`` vs ``(A)``)
score 0 here; accepting them is Math-Verify's job.

Math-Verify grader: ``arca.math_verify_pool`` runs it in worker processes with a hard timeout,
because it runs sympy on model output; ``grade_both`` gives both grades per completion.

A gold answer that is empty (a problem whose reference solution has no ``\boxed{...}``, kept in
the evaluation set) scores 0 under both graders.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any, Iterable, Sequence

from arca.math_verify_pool import shared_grader

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- extraction
BOX_OPEN = "\\boxed{"  # the only thing that opens an answer
_BRACE = re.compile(r"[{}]")


def extract_boxed(text: Any) -> str | None:
    r"""The author's extraction: the content of the last ``\boxed{...}`` in ``text``, or None.

    Last occurrence of ``\boxed{``, then depth counting from 1 over every ``{`` / ``}`` until 0;
    None when there is no ``\boxed{`` or the text ends before the box closes. Never raises (a
    non-str gives None), never recurses, linear time.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(BOX_OPEN)
    if start < 0:
        return None
    begin = start + len(BOX_OPEN)
    depth = 1
    for m in _BRACE.finditer(text, begin):
        depth += 1 if m.group(0) == "{" else -1
        if depth == 0:
            return text[begin : m.start()]
    return None  # unbalanced: no answer


def gold_answer(gold: Any) -> str:
    r"""The gold answer of a reference: a bare answer as it is (stripped), or a solution's box.

    A reference holding ``\boxed{`` is a solution: its ``extract_boxed`` content, or "" (no gold)
    when that box never closes. "" (also for a non-str) is the empty gold, which scores 0.
    """
    if not isinstance(gold, str):
        return ""
    if BOX_OPEN in gold:
        return extract_boxed(gold) or ""
    return gold.strip()


# ----------------------------------------------------------------------------- normalization
_WS_RE = re.compile(r"\s+")
# Removed as plain substrings, in this order (so "\textbf" loses its "\text" too, as in the author's code).
_REMOVED = ("\\left", "\\right", "\\,", "\\;", "\\!", "\\text")


def normalize_answer(s: Any) -> str:
    r"""The author's light normalization, in the author's order, and nothing else.

    strip; whitespace runs -> one space; strip trailing ``.``; remove ``\left`` ``\right`` ``\,``
    ``\;`` ``\!`` and ``\text`` (the 5 characters only: its braces stay); ``\dfrac`` / ``\tfrac``
    -> ``\frac``; strip. A non-str gives "".
    """
    if not isinstance(s, str):
        return ""
    s = _WS_RE.sub(" ", s.strip())
    s = s.rstrip(".")
    for piece in _REMOVED:
        s = s.replace(piece, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return s.strip()


def grade_paper(completion: Any, gold_answer: Any) -> bool:
    r"""The paper's reward: normalized last box of ``completion`` == normalized gold answer.

    ``gold_answer`` may be a bare answer or a full reference solution (its last box is used, see
    ``gold_answer``). No box in the completion, or an empty gold, is wrong; never raises.
    """
    pred = extract_boxed(completion)
    gold = _gold_of(gold_answer)
    if pred is None or gold == "":
        return False
    return normalize_answer(pred) == normalize_answer(gold)


_gold_of = gold_answer  # grade_paper's parameter shadows the function name


def grade_both(golds: Sequence[str], completions: Sequence[str], timeout: float = 5.0, workers: int = 1) -> list[dict]:
    """Both graders for each pair: ``{"answer": last box or None, "paper": bool, "math_verify": bool}``."""
    golds, completions = list(golds), list(completions)
    if len(golds) != len(completions):
        raise ValueError(f"{len(golds)} gold answers but {len(completions)} completions")
    mv = shared_grader(max(1, int(workers))).grade_many(list(zip(golds, completions)), timeout=timeout)
    return [
        {"answer": extract_boxed(c), "paper": grade_paper(c, g), "math_verify": m}
        for g, c, m in zip(golds, completions, mv)
    ]


def math_verify_failures(workers: int = 1) -> dict[str, int]:
    """Items the shared Math-Verify grader timed out or failed on so far (each scored False)."""
    g = shared_grader(max(1, int(workers)))
    return {"timeouts": g.n_timeouts, "errors": g.n_errors}


# ----------------------------------------------------------------------------- CLI step
def _parse_grade_line(raw: bytes, lineno: int) -> tuple[str, str] | str:
    """``(gold, completion)`` from one input line, or an error message naming the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"line {lineno}: not UTF-8 ({e.reason} at byte {e.start})"
    if not text.strip():
        return f"line {lineno}: empty line"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return f"line {lineno}: malformed JSON: {e.msg} (column {e.colno})"
    if not isinstance(obj, dict):
        return f"line {lineno}: expected a JSON object, got {type(obj).__name__}"
    for key in ("gold", "completion"):
        if key not in obj:
            return f"line {lineno}: missing key '{key}'"
        if not isinstance(obj[key], str):
            return f"line {lineno}: key '{key}' must be a string, got {type(obj[key]).__name__}"
    return obj["gold"], obj["completion"]


def grade_lines(lines: Iterable[bytes], timeout: float, workers: int = 1) -> list[dict]:
    """Grade JSONL lines ``{"gold", "completion"}``; a bad line gives ``{"error": "line N: ..."}``."""
    parsed = [_parse_grade_line(raw.rstrip(b"\r\n"), n) for n, raw in enumerate(lines, 1)]
    good = [p for p in parsed if isinstance(p, tuple)]
    graded = iter(grade_both([g for g, _ in good], [c for _, c in good], timeout=timeout, workers=workers))
    return [next(graded) if isinstance(p, tuple) else {"error": p} for p in parsed]


def grade_main(cfg, args) -> None:
    """``python -m arca grade``: JSONL ``{gold, completion}`` on stdin -> one JSONL result per line."""
    rows = grade_lines(sys.stdin.buffer, timeout=cfg.eval.grader_timeout, workers=cfg.eval.grader_workers)
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row) + "\n")
    out.flush()
    n_err = sum("error" in r for r in rows)
    log.info("graded %d lines (%d malformed)", len(rows) - n_err, n_err)
