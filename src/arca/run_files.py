"""What a training run keeps in its folder ``runs/<run>/`` (``arca.paths.RunPaths``).

While it trains: ``checkpoints/step_XXXXXX/`` (adapter, optimizer, scheduler, RNG states, data
position, metrics so far; the last two kept), ``live/`` (``JsonlAppender`` lines, written by
``arca.train``) and, with ``monitor.tensorboard``, TensorBoard events. At the end: ``adapter/``
(loadable from anywhere, with tokenizer and model card: ``arca.cards``), ``metrics.jsonl``,
``curve.jsonl`` and ``final_weights.json``, each renamed into place only when complete; then the
checkpoints and ``live/`` go.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field

import torch

from arca.cards import RUN_INFO, base_model_reference, final_metrics, model_card
from arca.config import Config, ConfigError
from arca.io import atomic_path, write_json, write_jsonl, write_text
from arca.paths import RunPaths

log = logging.getLogger(__name__)


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    metrics: list[dict] = field(default_factory=list)
    last_weights: list[list[float]] = field(default_factory=list)  # masked weights of the last step
    curve: list[dict] = field(default_factory=list)  # held-out accuracy at step 0 and every eval.every steps


def _checkpoint_dirs(run: RunPaths) -> list:
    return sorted(run.checkpoints.glob("step_*"))


def plain(obj):
    """``obj`` with every number a Python int or float (a numpy or 0-d torch scalar becomes one,
    exactly), so that ``torch.load(weights_only=True)`` reads it back."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or type(obj) in (bool, int, float, str):  # exact: np.float64 is a float subclass
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"checkpoint state holds a {type(obj).__name__}: {obj!r}")


def save_checkpoint(
    run: RunPaths, model, opt, sched, state: RunState, data_gen: torch.Generator, run_hash: str, keep: int = 2
) -> None:
    """Adapter + trainer state in ``checkpoints/step_XXXXXX/``, renamed into place when complete."""
    with atomic_path(run.checkpoint(state.step)) as tmp:
        model.save_pretrained(tmp / "adapter")
        torch.save(
            {
                "step": state.step,
                "metrics": plain(state.metrics),
                "last_weights": plain(state.last_weights),
                "curve": plain(state.curve),
                "run_hash": run_hash,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "data_rng": data_gen.get_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            tmp / "trainer_state.pt",
        )
    for old in _checkpoint_dirs(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint(ckpt) -> tuple[dict, dict] | None:
    """(trainer state, adapter tensors) of one checkpoint folder, or None when it is damaged.

    ``weights_only=True``: a checkpoint holds tensors and plain data only, so a planted file cannot
    run code. Anything that fails to read (truncated, garbage, a pickled object) counts as damage.
    """
    from safetensors.torch import load_file

    try:
        st = torch.load(ckpt / "trainer_state.pt", weights_only=True)
        adapter = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    except Exception as e:  # noqa: BLE001 - every way a file can be damaged, reported below
        log.warning("checkpoint %s is damaged (%s: %s); trying the one before", ckpt, type(e).__name__, e)
        return None
    if not isinstance(st, dict) or not {"step", "run_hash", "optimizer", "scheduler"} <= set(st):
        log.warning("checkpoint %s is damaged (no trainer state); trying the one before", ckpt)
        return None
    return st, adapter


def _latest_intact(run: RunPaths) -> tuple[dict, dict, object] | None:
    for ckpt in reversed(_checkpoint_dirs(run)):
        read = _read_checkpoint(ckpt)
        if read is not None:
            return (*read, ckpt)
    return None


def _intact_checkpoint_of(run: RunPaths, run_hash: str) -> tuple[dict, dict, object] | None:
    """The latest intact checkpoint of this config, or None. Checkpoints of another config move
    to ``checkpoints.<its hash>`` (never deleted: a hand run with other settings must not cost the
    sweep its progress), and this config's come back from there."""
    found = _latest_intact(run)
    if found is not None and found[0]["run_hash"] != run_hash:
        other = run.set_aside(str(found[0]["run_hash"]))
        log.warning("checkpoints in %s belong to another config: moved to %s", run.checkpoints, other)
        if other.exists():
            shutil.rmtree(other)  # an older set of that same config
        run.checkpoints.rename(other)
        found = None
    mine = run.set_aside(run_hash)
    if mine.is_dir() and not run.checkpoints.exists():
        log.info("bringing back this config's checkpoints from %s", mine)
        mine.rename(run.checkpoints)
        found = _latest_intact(run)
    return found


def load_checkpoint(run: RunPaths, model, opt, sched, data_gen: torch.Generator, run_hash: str) -> RunState | None:
    """Restore the latest intact checkpoint of this exact run config, or None to start fresh."""
    from peft import set_peft_model_state_dict

    found = _intact_checkpoint_of(run, run_hash)
    if found is None:
        return None
    st, adapter, last = found
    set_peft_model_state_dict(model, adapter)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    torch.set_rng_state(st["torch_rng"])
    data_gen.set_state(st["data_rng"])
    if st["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda_rng"])
    log.info("resuming from %s (step %d)", last, st["step"])
    return RunState(step=st["step"], metrics=st["metrics"], last_weights=st["last_weights"], curve=st.get("curve", []))


def tensorboard_writer(run: RunPaths, purge_step: int):
    """A ``torch.utils.tensorboard.SummaryWriter`` (``monitor.tensorboard``); ``purge_step`` drops
    events a killed run logged after the checkpoint it resumes from."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        raise ConfigError(
            "key 'monitor.tensorboard' is true but the tensorboard package is not installed: "
            "pip install 'arca-bench[tensorboard]' (or set monitor.tensorboard: false)"
        ) from None
    return SummaryWriter(log_dir=str(run.tensorboard), purge_step=purge_step)


def log_scalars(writer, row: dict, step: int, prefix: str) -> None:
    """Every finite number of a metrics or curve row as a TensorBoard scalar (nothing without a writer)."""
    if writer is None:
        return
    for key, value in row.items():
        if key in ("step", "rank", "seed") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            writer.add_scalar(prefix + key, value, step)
    writer.flush()


def finish_run(cfg: Config, run: RunPaths, model, tok, state: RunState, identity: dict, n_trainable: int) -> None:
    """Final outputs, each renamed into place when complete; then the checkpoints go.

    The adapter folder is self-contained (``arca.cards``): the base recorded so that peft finds it
    from any working directory, the tokenizer, ``arca_run.json`` and a filled model card.
    """
    write_json(
        run.final_weights,
        {**identity, "step": state.step, "trainable_params": n_trainable, "weights": state.last_weights},
    )
    write_jsonl(run.metrics, state.metrics)
    write_jsonl(run.curve, state.curve)
    info = {
        **identity,
        "steps": state.step,
        "trainable_params": n_trainable,
        "final_metrics": final_metrics(state.metrics, state.curve),
    }
    for peft_cfg in model.peft_config.values():
        peft_cfg.base_model_name_or_path = base_model_reference(cfg)
    with atomic_path(run.adapter) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / RUN_INFO, info)
        # replaces peft's blank template; a fresh adapter has no evaluation yet (an old one may lie around)
        write_text(tmp / "README.md", model_card(cfg, info, summary={}))
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    shutil.rmtree(run.live, ignore_errors=True)  # the finished metrics.jsonl and curve.jsonl hold it all
