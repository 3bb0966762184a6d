r"""MATH loading into one normalized record schema, from the Hub or a local JSONL/Parquet file.

Two source formats are understood, told apart per row by their columns:

* MATH-lighteval (``DigitalLearningGmbH/MATH-lighteval``): ``problem``, ``solution``,
  ``level`` as ``"Level 3"``, ``type`` (the subject);
* MATH-500 (``HuggingFaceH4/MATH-500``): ``problem``, ``solution``, ``answer``, ``subject``,
  ``level`` as an int, ``unique_id``.

Each becomes ``{"id", "problem", "solution", "answer", "level" (1-5 or None), "subject"}``. The
gold answer is the ``answer`` field when present and non-empty, else the content of the
solution's last ``\boxed{...}`` by the paper grader's extraction (``arca.grading.extract_boxed``).

No row is ever skipped, so "the first 200 test problems" are raw rows 0-199 in dataset order, as
in the author's evaluation, and MATH-500 has all 500. A row whose gold answer cannot be recovered
(no ``answer`` field and no complete ``\boxed{`` in its solution) is kept with ``answer: ""``: it
always scores 0 under both graders, as in the author's code, and is counted and reported with a
warning. An unknown level (MATH has a few ``"Level ?"``) is kept as ``level: None``. Anything else
that is wrong with the data raises ``ValueError("<file>:<line>: ...")``: an empty file, a
malformed JSON line, a missing or mistyped field, bytes that are not UTF-8, a repeated id. The id
is ``unique_id`` when present, else ``"<split>/<row index>"``.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from arca.config import InputError, MissingInputError, is_local_path, require_hub
from arca.grading import extract_boxed

log = logging.getLogger(__name__)

FIELDS = ("id", "problem", "solution", "answer", "level", "subject")
_LEVEL_RE = re.compile(r"^\s*Level\s+([1-5])\s*$")


def _get_str(row: dict, key: str, where: str) -> str:
    if key not in row or row[key] is None:
        raise InputError(f"{where}: missing required field '{key}'")
    value = row[key]
    if not isinstance(value, str):
        raise InputError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def _level(value: Any, where: str) -> int | None:
    if isinstance(value, bool):
        raise InputError(f"{where}: field 'level' must be an int 1-5 or 'Level N', got {value!r}")
    if isinstance(value, int):
        if 1 <= value <= 5:
            return value
        raise InputError(f"{where}: field 'level' must be 1-5, got {value}")
    if isinstance(value, str):
        m = _LEVEL_RE.match(value)
        if m:
            return int(m.group(1))
        if value.strip().startswith("Level"):
            return None  # MATH's "Level ?": kept, its level unknown
    raise InputError(f"{where}: field 'level' must be an int 1-5 or 'Level N', got {value!r}")


def normalize_row(row: Any, index: int, split: str, where: str) -> dict:
    """One source row (either format) -> a normalized record (``answer`` "" when none). Raises ``ValueError``."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    problem = _get_str(row, "problem", where)
    solution = _get_str(row, "solution", where)
    if "level" not in row or row["level"] is None:
        raise InputError(f"{where}: missing required field 'level'")
    subject_key = "subject" if "subject" in row else "type"
    subject = _get_str(row, subject_key, where).strip()
    level = _level(row["level"], where)
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise InputError(f"{where}: field 'answer' must be a string, got {type(answer).__name__}")
    answer = (answer or "").strip()
    if not answer:
        answer = (extract_boxed(solution) or "").strip()  # "" when there is none: kept, scores 0
    if "unique_id" in row and row["unique_id"] is not None:
        rid = _get_str(row, "unique_id", where)
    else:
        rid = f"{split}/{index}"
    return {"id": rid, "problem": problem, "solution": solution, "answer": answer, "level": level, "subject": subject}


def _normalize_rows(rows: Iterable[tuple[str, Any]], split: str, source: str) -> tuple[list[dict], int]:
    """``(where, row)`` pairs -> one record per row, in order; ``(records, n_no_gold)``.

    Duplicate ids are an error; rows without a gold answer or level are kept and counted.
    """
    records: list[dict] = []
    first_seen: dict[str, str] = {}
    for index, (where, row) in enumerate(rows):
        rec = normalize_row(row, index, split, where)
        if rec["id"] in first_seen:
            raise InputError(f"{where}: duplicate id {rec['id']!r} (first at {first_seen[rec['id']]})")
        first_seen[rec["id"]] = where
        if not rec["answer"]:
            log.debug("%s: no recoverable gold answer (kept; it scores 0)", where)
        records.append(rec)
    if not records:
        raise InputError(f"{source}:1: empty file (no records)")
    no_gold = count_no_gold(records)
    if no_gold:
        log.warning(
            "%s: %d of %d rows have no recoverable gold answer; kept in order, they always score 0",
            source,
            no_gold,
            len(records),
        )
    no_level = sum(r["level"] is None for r in records)
    if no_level:
        log.warning("%s: %d of %d rows have an unknown level; kept", source, no_level, len(records))
    return records, no_gold


def count_no_gold(records: Iterable[dict]) -> int:
    """Number of records without a gold answer (``answer`` ""): kept, they score 0."""
    return sum(not r["answer"] for r in records)


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """``("path:line", object)`` for each non-blank line; bad bytes or JSON name their line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{where}: not UTF-8 text (byte {e.start} of the line: {e.reason})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: malformed JSON line: {e.msg} (column {e.colno})") from None
            yield where, obj


def _iter_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    """``("path:row", dict)``, rows counted from 1 (Parquet has no lines)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001  (pyarrow raises several types for a bad file)
        raise InputError(f"{path}:1: not a readable Parquet file: {e}") from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield f"{path}:{i}", row


def _iter_hub(ref: str, split: str) -> Iterator[tuple[str, Any]]:
    from datasets import load_dataset

    ds = load_dataset(ref, split=split)
    for i, row in enumerate(ds, 1):
        yield f"{ref}[{split}]:{i}", dict(row)


def load_math(ref: str, split: str, key: str | None = None) -> tuple[list[dict], int]:
    """Load MATH-format problems, one record per row in order: ``(records, n_no_gold)``.

    ``ref`` is a local ``.jsonl``/``.parquet`` file or a Hub dataset id; ``key`` names the config
    key it came from (default ``data.<split>``) so that an offline Hub id gives a clear error.
    """
    key = key or f"data.{split}"
    if is_local_path(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise MissingInputError(f"key '{key}': data file not found: {path}")
        if path.suffix == ".parquet":
            rows = _iter_parquet(path)
        elif path.suffix in (".jsonl", ".json"):
            rows = _iter_jsonl(path)
        else:
            raise InputError(f"key '{key}': {path} is neither .jsonl nor .parquet")
        return _normalize_rows(rows, split, str(path))
    require_hub(ref, key)
    return _normalize_rows(_iter_hub(ref, split), split, f"{ref}[{split}]")


# ----------------------------------------------------------------------------- selections
def first_n(records: list[dict], n: int) -> list[dict]:
    """The first ``n`` records in dataset order (the paper's "first 200 test problems")."""
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    if n > len(records):
        log.warning("asked for the first %d records but there are only %d", n, len(records))
    return list(records[:n])


def random_subset(records: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` records drawn without replacement by ``random.Random(seed)``, kept in dataset order."""
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    if n >= len(records):
        if n > len(records):
            log.warning("asked for %d random records but there are only %d", n, len(records))
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


# ----------------------------------------------------------------------------- normalized files
def validate_record(rec: Any, where: str) -> dict:
    """Check one normalized record; ``ValueError`` naming ``where`` on any problem."""
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in FIELDS if k not in rec]
    if missing:
        raise InputError(f"{where}: missing required field(s) {missing}")
    for k in ("id", "problem", "solution", "answer", "subject"):
        if not isinstance(rec[k], str):
            raise InputError(f"{where}: field '{k}' must be a string, got {type(rec[k]).__name__}")
    lv = rec["level"]  # None: unknown (MATH's "Level ?"); an empty answer: no gold, scores 0
    if lv is not None and (isinstance(lv, bool) or not isinstance(lv, int) or not 1 <= lv <= 5):
        raise InputError(f"{where}: field 'level' must be an int 1-5 or null, got {lv!r}")
    return rec


def read_records(path: str | Path) -> list[dict]:
    """Read a normalized-records JSONL file (``prepare-data`` output), validating every line."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"records file not found: {path}")
    records: list[dict] = []
    first_seen: dict[str, str] = {}
    for where, obj in _iter_jsonl(path):
        rec = validate_record(obj, where)
        if rec["id"] in first_seen:
            raise InputError(f"{where}: duplicate id {rec['id']!r} (first at {first_seen[rec['id']]})")
        first_seen[rec["id"]] = where
        records.append(rec)
    if not records:
        raise InputError(f"{path}:1: empty file (no records)")
    return records
