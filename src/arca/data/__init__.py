"""Problems for training and evaluation, in one normalized record schema.

A record is ``{"id": str, "problem": str, "solution": str, "answer": str, "level": int 1-5,
"subject": str}``; a MATH row keeps its place even without a gold answer (``answer`` "", it scores
0) or a known level (``level`` None). Sources: MATH (``arca.data.math``: a Hub id or a local JSONL/Parquet file in
MATH-lighteval or MATH-500 format) or generated arithmetic problems (``arca.data.generated``).

``prepare_data`` is the ``prepare-data`` step: it writes ``<results>/<name>/data/train.jsonl``,
``test.jsonl`` (and ``math500.jsonl`` when the ``math500`` protocol is on, ``shots.jsonl`` when
``data.few_shot`` > 0) plus the resolved
``config.yaml``; later steps read them back with ``read_records``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from arca.config import InputError, dump_config
from arca.data.generated import generate_disjoint, generate_problems, make_splits
from arca.data.math import FIELDS, count_no_gold, first_n, load_math, random_subset, read_records, validate_record
from arca.io import write_jsonl, write_text
from arca.paths import paths_of

log = logging.getLogger(__name__)

__all__ = [
    "FIELDS",
    "Record",
    "count_no_gold",
    "first_n",
    "generate_disjoint",
    "generate_problems",
    "load_math",
    "make_splits",
    "prepare_data",
    "random_subset",
    "read_records",
    "validate_record",
]


@dataclass(frozen=True)
class Record:
    """Typed view of a record dict (``Record(**d)``; ``.to_dict()`` back)."""

    id: str
    problem: str
    solution: str
    answer: str  # "" when the gold answer could not be recovered
    level: int | None  # None when unknown
    subject: str

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_data(cfg, args=None) -> None:
    """Write the train/test (and MATH-500, few-shot) records and the resolved config to ``data/``."""
    out = paths_of(cfg).data
    splits: dict[str, list[dict]] = {}
    if cfg.data.source == "generated":
        splits["train"], splits["test"] = make_splits(cfg.data)
    else:
        for name, ref, split, key in _math_sources(cfg):
            records, no_gold = load_math(ref, split, key=key)
            if no_gold == len(records):
                raise InputError(f"key '{key}': {ref} has no row with a recoverable gold answer ({no_gold} rows)")
            log.info(
                "%s: %d problems from %s (%d without a gold answer: kept, they score 0)",
                name,
                len(records),
                ref,
                no_gold,
            )
            splits[name] = records
    if cfg.data.few_shot:
        # the worked examples of the prompt come from the train split and are not trained on
        n = cfg.data.few_shot
        if len(splits["train"]) <= n:
            raise InputError(f"key 'data.few_shot': {n} examples leave no training problem ({len(splits['train'])})")
        splits["train"], splits["shots"] = splits["train"][:-n], splits["train"][-n:]
    for name, records in splits.items():
        path = getattr(out, name)  # DataPaths.train, .test, .math500, .shots
        write_jsonl(path, records)
        log.info("wrote %d %s problems to %s", len(records), name, path)
    write_text(out.root / "config.yaml", dump_config(cfg))


def _math_sources(cfg) -> list[tuple[str, str, str, str]]:
    """(output name, reference, split, config key) for each MATH file to prepare."""
    sources = [("train", cfg.data.train, "train", "data.train"), ("test", cfg.data.test, "test", "data.test")]
    if "math500" in cfg.eval.protocols:
        sources.append(("math500", cfg.data.math500, "test", "data.math500"))
    return sources
