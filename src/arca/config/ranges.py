"""One range table for every numeric config key, and the safe-path check of ``name`` and ``paths.*``."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Iterator

from arca.config.sections import Config, ConfigError


@dataclass(frozen=True)
class Range:
    """``lo <= x <= hi`` (or ``<`` on an open side); always finite."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, x: float) -> bool:
        if isinstance(x, float) and not math.isfinite(x):
            return False
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def text(self) -> str:
        return f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


SEED = Range(0, 2**32, hi_open=True)  # what numpy and torch's generators take
COUNT = Range(1, 10**9)  # steps, problems: any positive count a run can finish
SIZE = Range(1, 2**20)  # token counts, batch sizes, layer widths
THREADS = Range(1, 1024)
RANK = Range(1, 65536)
UNIT_OPEN = Range(0, 1, lo_open=True)  # (0, 1]
UNIT = Range(0, 1)  # [0, 1]
TEMPERATURE = Range(0, 100, lo_open=True)

# Every int and float key of the config (``[]`` marks the items of a list); a test checks the
# table covers each one, so a new numeric key cannot go unchecked.
RANGES: dict[str, Range] = {
    "model.pretrain.hidden_size": Range(1, 65536),
    "model.pretrain.num_layers": THREADS,
    "model.pretrain.num_heads": THREADS,
    "model.pretrain.num_kv_heads": THREADS,
    "model.pretrain.intermediate_size": SIZE,
    "model.pretrain.max_position_embeddings": SIZE,
    "model.pretrain.steps": COUNT,
    "model.pretrain.batch_size": SIZE,
    "model.pretrain.seq_len": SIZE,
    "model.pretrain.lr": UNIT_OPEN,
    "model.pretrain.warmup_steps": Range(0, 10**9),
    "model.pretrain.weight_decay": Range(0, 10),
    "model.pretrain.seed": SEED,
    "model.pretrain.threads": THREADS,
    "lora.rank": RANK,
    "lora.alpha": Range(0, 1e6, lo_open=True),
    "lora.dropout": Range(0, 1, hi_open=True),
    "data.n_train": Range(0, 10**9),
    "data.n_test": Range(0, 10**9),
    "data.levels[]": Range(1, 5),
    "data.seed": SEED,
    "data.max_prompt_tokens": SIZE,
    "data.few_shot": Range(0, 10**6),
    "data.forks.p_bug": UNIT,
    "rollout.k": Range(2, 1024),
    "rollout.temperature": TEMPERATURE,
    "rollout.top_p": UNIT_OPEN,
    "rollout.top_k": Range(0, 2**20),
    "rollout.max_new_tokens": SIZE,
    "rollout.min_new_tokens": Range(0, 2**20),
    "rollout.batch_size": SIZE,
    "rollout.vllm_gpu_memory_utilization": UNIT_OPEN,
    "train.steps": COUNT,
    "train.prompts_per_step": SIZE,
    "train.micro_batch_prompts": SIZE,
    "train.lr": UNIT_OPEN,
    "train.weight_decay": Range(0, 10),
    "train.warmup_steps": Range(0, 10**9),
    "train.min_lr_ratio": UNIT,
    "train.grad_clip": Range(0, 1e6, lo_open=True),
    "train.checkpoint_every": COUNT,
    "train.seed": SEED,
    "train.threads": THREADS,
    "credit.sharpen": Range(0, 100, lo_open=True),
    "credit.eps": UNIT_OPEN,
    "credit.answer_tokens": COUNT,
    "credit.span_length": COUNT,
    "credit.vine_segment": COUNT,
    "credit.vine_rollouts": COUNT,
    "eval.n_problems": COUNT,
    "eval.pass_k": Range(1, 1024),
    "eval.temperature": TEMPERATURE,
    "eval.top_p": UNIT_OPEN,
    "eval.top_k": Range(0, 2**20),
    "eval.max_new_tokens": SIZE,
    "eval.batch_size": SIZE,
    "eval.grader_timeout": Range(0, 3600, lo_open=True),
    "eval.grader_workers": THREADS,
    "eval.every": Range(0, 10**9),
    "eval.curve_problems": COUNT,
    "eval.probe_problems": Range(0, 10**9),
    "eval.mc_problems": Range(0, 10**9),
    "eval.mc_samples": COUNT,
    "eval.mc_final_seeds": Range(0, 10**9),
    "sweep.cells[].ranks[]": RANK,
    "sweep.seeds[]": SEED,
    "resources.train_mem_mb": Range(1, 2**40),
    "resources.eval_mem_mb": Range(1, 2**40),
    "resources.train_threads": THREADS,
    "resources.runtime_min": COUNT,
}


def _is_number_type(tp: Any) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return all(a in (int, float) for a in args)


def numeric_keys(cls: type = Config, prefix: str = "") -> Iterator[str]:
    """The table's key of every int and float field (and list of them) under ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            if dataclasses.is_dataclass(item):
                yield from numeric_keys(item, f"{key}[].")
            elif _is_number_type(item):
                yield f"{key}[]"
        elif dataclasses.is_dataclass(tp):
            yield from numeric_keys(tp, f"{key}.")
        elif _is_number_type(tp):
            yield key


def _values(node: Any, parts: list[str], where: str) -> Iterator[tuple[str, Any]]:
    """(dotted key with indices, value) of every value the table key ``parts`` names in ``node``."""
    if not parts:
        yield where, node
        return
    head, rest = parts[0], parts[1:]
    name = head.removesuffix("[]")
    value = getattr(node, name)
    key = f"{where}.{name}" if where else name
    if head.endswith("[]"):
        for i, item in enumerate(value):
            yield from _values(item, rest, f"{key}[{i}]")
    else:
        yield from _values(value, rest, key)


def check_ranges(cfg: Config, source: str) -> None:
    """Every numeric key finite and inside its range, or a ``ConfigError`` naming the key."""
    for table_key, rng in RANGES.items():
        for key, value in _values(cfg, table_key.split("."), ""):
            if value is None:
                continue
            if not rng.holds(value):
                raise ConfigError(f"{source}: key '{key}' must be finite and in {rng.text()}, got {short(value)}")


SAFE_PATH = re.compile(r"[A-Za-z0-9_./\-]+")


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_path(value: str, key: str, source: str, folder_name: bool = False) -> None:
    """Letters, digits and ``_ - . /`` only (every shell command carries these paths), no ``..``
    part and, for a folder name, no ``/`` and not only dots."""
    ok = bool(SAFE_PATH.fullmatch(value)) and ".." not in value.split("/")
    if folder_name:
        ok = ok and "/" not in value and set(value) != {"."}
    if not ok:
        what = "a simple folder name" if folder_name else "a path"
        raise ConfigError(
            f"{source}: key '{key}' must be {what} of letters, digits and '_-./' "
            f"(no '..' part, not only dots), got {short(value)}"
        )


def check_paths(cfg: Config, source: str) -> None:
    check_path(cfg.name, "name", source, folder_name=True)
    check_path(cfg.paths.results, "paths.results", source)
    check_path(cfg.paths.cache, "paths.cache", source)
