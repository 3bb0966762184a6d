"""The base model this project pretrains itself: a character tokenizer and a small Qwen3 model
trained on the training split's worked solutions (``model.source: pretrain``).

Pretraining uses the same transformers schedule as GRPO training (warm-up, then cosine) and
AdamW without weight decay on norms and biases (``arca.optimizer.pretrain_adamw``);
``arca.models.build_base`` calls ``pretrain``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from arca.config import Config, InputError, MissingInputError
from arca.io import read_jsonl
from arca.optimizer import pretrain_adamw
from arca.paths import PRETRAIN_LOSS, paths_of

log = logging.getLogger(__name__)

# Special tokens of the character-level tokenizer; ids 0..3 in this order.
PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
# Pretraining clips the global gradient norm: with lr ~3e-3 on a fresh model the first steps can
# otherwise spike. Not a config key because it is not an experimental knob of the paper.
PRETRAIN_GRAD_CLIP = 1.0


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


def sync_generation_config(model, tok) -> None:
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
            "the longest needs %d tokens",
            seq_len,
            truncated,
            len(pairs),
            len(pairs) - len(out),
            longest,
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


def pretrain_examples(cfg: Config) -> tuple[Any, list[tuple[list[int], int]]]:
    """The character tokenizer over the training split and its encoded examples (``encode_examples``)."""
    train_file = paths_of(cfg).data.train
    if not train_file.is_file():
        raise MissingInputError(f"{train_file} not found; run `python -m arca prepare-data` first")
    pairs = pretrain_texts(read_jsonl(train_file))
    if not pairs:
        raise InputError(f"{train_file} holds no records")
    tok = char_tokenizer([prompt + solution for prompt, solution in pairs])
    examples = encode_examples(pairs, tok, cfg.model.pretrain.seq_len)
    if not examples:
        raise InputError(
            f"every prompt of {train_file} is longer than model.pretrain.seq_len={cfg.model.pretrain.seq_len}"
        )
    return tok, examples


def pretrain(cfg: Config, out_dir: Path) -> tuple[Any, Any, dict]:
    """Train the small base model from scratch; writes ``out_dir/pretrain_loss.jsonl``.

    Returns ``(model, tokenizer, info)`` with info holding the initial and final loss and seconds.
    """
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    p = cfg.model.pretrain
    tok, examples = pretrain_examples(cfg)
    torch.set_num_threads(p.threads)
    torch.manual_seed(p.seed)
    model = pretrain_model(cfg, len(tok), tok)
    model.train()
    opt = pretrain_adamw(model, p.lr, p.weight_decay)
    # The library's schedule, the same as GRPO training: lr * s / warmup for step s < warmup (the
    # first step has lr 0), then cosine to 0 at the last step.
    sched = get_cosine_schedule_with_warmup(opt, p.warmup_steps, p.steps)
    gen = torch.Generator().manual_seed(p.seed)

    losses: list[float] = []
    start = time.perf_counter()
    with open(out_dir / PRETRAIN_LOSS, "w", encoding="utf-8") as curve:
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
    sync_generation_config(model, tok)
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
