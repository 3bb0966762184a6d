"""Device handling (``device: auto|cpu|cuda`` via ``arca.models.resolve_device``) and the bf16 path on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from arca.config import ConfigError, load_config
from arca.models import load_base_model, load_policy, resolve_device
from arca.paths import paths_of
from arca.pretrain import char_tokenizer, pretrain_model

ALPHABET = "0123456789+-*/=() abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,?:\n\\{}$"


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_cpu_without_a_gpu(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine as it is")
def test_auto_is_cpu_here():
    assert resolve_device("auto").type == "cpu"


def test_auto_is_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_a_clear_error(no_cuda, name):
    with pytest.raises(ConfigError, match=r"'device'.*no CUDA device"):
        resolve_device(name)


def test_unknown_device_names_the_key():
    with pytest.raises(ConfigError, match="'device'"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="'device'"):
        load_config("configs/smoke.yaml", ["device=gpu"])


# ----------------------------------------------------------------------------- bf16 on CPU
@pytest.fixture()
def tiny_base(tmp_path):
    """A tiny random Qwen3 base folder at ``paths_of(cfg).base`` (smoke sizes), saved in float32."""
    cfg = load_config("configs/smoke.yaml", [f"paths.results={tmp_path}", "device=auto"])
    tok = char_tokenizer([ALPHABET])
    torch.manual_seed(0)
    pretrain_model(cfg, len(tok), tok).save_pretrained(paths_of(cfg).base)
    tok.save_pretrained(paths_of(cfg).base)
    return cfg


def test_load_base_model_cuda_without_gpu_names_device(tiny_base, no_cuda):
    with pytest.raises(ConfigError, match="'device'"):
        load_base_model(tiny_base, device="cuda")


def test_bf16_forward_on_cpu(tiny_base):
    tiny_base.model.dtype = "bfloat16"
    model, tok = load_base_model(tiny_base)
    assert next(model.parameters()).device.type == "cpu"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.tensor([tok("1+2=3", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # [1, T, V]
    assert logits.dtype == torch.bfloat16 and logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("method", ["arca"])  # needs the adapter-off pass too
def test_bf16_train_step_on_cpu(tiny_base, method):
    """One GRPO step in bf16 on CPU (generation, scoring, adapter-off pass, update) gives finite metrics."""
    from arca.backends import make_generator
    from arca.data import generate_problems
    from arca.train import lr_scheduler, train_step

    tiny_base.model.dtype = "bfloat16"
    tiny_base.credit.method = method
    torch.manual_seed(0)
    model, tok = load_policy(tiny_base)
    # the frozen base runs in bf16; peft keeps the LoRA weights in float32 (autocast_adapter_dtype)
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = lr_scheduler(tiny_base, opt)
    problems = generate_problems(tiny_base.train.prompts_per_step, seed=0, levels=[1])
    m, weights = train_step(tiny_base, model, make_generator(tiny_base, model, tok), opt, sched, problems, 0, 1)
    for key in ("loss", "reward_mean", "grad_norm", "gini", "eff_ratio", "surprisal_mean"):
        assert m[key] is not None and math.isfinite(m[key]), (key, m[key])
    assert len(weights) == tiny_base.train.prompts_per_step * tiny_base.rollout.k
    assert all(abs(sum(w) - 1) < 1e-2 for w in weights if w)
