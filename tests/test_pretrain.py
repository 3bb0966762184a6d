"""Tests of arca.pretrain: the character tokenizer, example encoding, and pretraining the tiny base.

A tiny model and a few dozen steps on hand-made arithmetic records keep these within seconds.
The helpers here (``tiny_cfg``, ``write_data``) also set up the tiny base that ``built``
(tests/conftest.py) shares with the loading and LoRA tests of test_models.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_PRETRAIN, arithmetic_records, tiny_cfg, write_data

from arca import models, pretrain
from arca.paths import paths_of
from arca.prompts import build_prompt


def test_char_tokenizer_round_trip():
    texts = [build_prompt(r["problem"]) + r["solution"] for r in arithmetic_records(20)]
    tok = pretrain.char_tokenizer(texts)
    assert tok.convert_tokens_to_ids([pretrain.PAD, pretrain.EOS, pretrain.BOS, pretrain.UNK]) == [0, 1, 2, 3]
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.padding_side == "left"
    for text in texts + ["  double  spaces \n\n and\ttabs? no, tabs are absent", "\\boxed{12}\n"]:
        text = "".join(ch for ch in text if ch in tok.get_vocab())
        ids = tok(text, add_special_tokens=False)["input_ids"]
        plain = text
        for phrase in pretrain.tokenizer_phrases():
            plain = plain.replace(phrase, "\x00")
        assert len(ids) == len(plain)  # one token per character, one per phrase
        assert tok.decode(ids) == text
    ids = tok("1 2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "1 2"
    assert tok("1~2", add_special_tokens=False)["input_ids"][1] == tok.unk_token_id
    # the paper's prompt costs one token plus the problem's characters
    prefix_ids = tok(build_prompt("1+2"), add_special_tokens=False)["input_ids"]
    assert len(prefix_ids) == 1 + len("1+2\n")
    assert tok(r"\boxed{7}", add_special_tokens=False)["input_ids"] == tok.convert_tokens_to_ids([r"\boxed{", "7", "}"])


def test_encode_examples_masks_prompt_and_warns_on_truncation(caplog):
    pairs = [("ab\n", "c d"), ("abcdefgh\n", "x"), ("a\n", "b")]
    tok = pretrain.char_tokenizer([p + s for p, s in pairs])
    with caplog.at_level("WARNING", logger="arca.models"):
        examples = pretrain.encode_examples(pairs, tok, seq_len=6)
    assert "cuts 2 of 3 examples (1 dropped" in caplog.text
    assert [n for _, n in examples] == [3, 2]
    ids, n_prompt = examples[1]
    assert tok.decode(ids) == "a\nb" + pretrain.EOS and n_prompt == 2
    input_ids, labels = pretrain.collate(examples, tok.pad_token_id)  # [2, 6]
    assert input_ids.shape == (2, 6) and (input_ids[1, 4:] == tok.pad_token_id).all()
    assert labels[0].tolist() == [-100] * 3 + ids_of(tok, "c d")
    assert labels[1].tolist() == [-100] * 2 + ids_of(tok, "b") + [tok.eos_token_id] + [-100] * 2


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_pretrain_build_writes_loadable_base(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = paths_of(built).base
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "config_arca.yaml",
        "info.json",
        "pretrain_loss.jsonl",
        "generation_config.json",
    ):
        assert (base / name).is_file(), name
    assert not [p for p in base.parent.iterdir() if p.name.startswith(".")]  # no temporaries left
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    assert model.config.model_type == "qwen3" and model.config.tie_word_embeddings
    assert model.config.head_dim == 16 and model.config.num_key_value_heads == 1
    assert model.generation_config.eos_token_id == tok.eos_token_id
    text = build_prompt("1+2-3")
    assert tok.decode(tok(text)["input_ids"]) == text

    info = json.loads((base / "info.json").read_text())
    assert info["source"] == "pretrain" and info["n_params"] == models.count_params(model)
    assert info["steps"] == TINY_PRETRAIN["steps"] and info["seconds"] > 0
    curve = [json.loads(line) for line in (base / "pretrain_loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == list(range(TINY_PRETRAIN["steps"]))
    first, last = sum(r["loss"] for r in curve[:3]) / 3, sum(r["loss"] for r in curve[-3:]) / 3
    assert last < first - 0.5, (first, last)
    assert info["final_loss"] == curve[-1]["loss"]
    # the library's cosine with warm-up, logged as the rate each step used: lr * s / 4 for s < 4 (the
    # first step at 0), then lr * 0.5 * (1 + cos(pi * (s - 4) / 36)): lr / 2 at s = 22
    lr = TINY_PRETRAIN["lr"]
    assert [r["lr"] for r in curve[:5]] == pytest.approx([0.0, lr / 4, lr / 2, 3 * lr / 4, lr])
    assert curve[22]["lr"] == pytest.approx(lr / 2)


def test_pretrain_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    weights = []
    for run in ("a", "b"):
        cfg = tiny_cfg(tmp_path / run)
        cfg.model.pretrain.steps = 6
        write_data(cfg, n=24)
        models.build_base(cfg)
        weights.append(load_file(paths_of(cfg).base / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_missing_train_data_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare-data"):
        models.build_base(tiny_cfg(tmp_path))


# ---------------------------------------------------------------------------- training helpers
def test_batches_draw_every_example_once_per_epoch_across_batch_boundaries():
    gen = torch.Generator().manual_seed(0)
    batches = list(pretrain._batches(5, 3, 5, gen))  # 15 indices: exactly three permutations of range(5)
    assert [len(b) for b in batches] == [3] * 5
    flat = [i for b in batches for i in b]
    for epoch in range(3):
        assert sorted(flat[5 * epoch : 5 * epoch + 5]) == list(range(5))
    again = list(pretrain._batches(5, 3, 5, torch.Generator().manual_seed(0)))
    assert again == batches


def test_finish_tokenizer_pads_with_eos_on_the_left_or_names_the_problem():
    from types import SimpleNamespace

    tok = pretrain.finish_tokenizer(SimpleNamespace(pad_token=None, eos_token="</s>", padding_side="right"))
    assert tok.pad_token == "</s>" and tok.padding_side == "left"
    own = pretrain.finish_tokenizer(SimpleNamespace(pad_token="<pad>", eos_token="</s>", padding_side="right"))
    assert own.pad_token == "<pad>"
    with pytest.raises(ValueError, match="neither a pad nor an eos"):
        pretrain.finish_tokenizer(SimpleNamespace(pad_token=None, eos_token=None, padding_side="right"))
