"""The paper's LoRA sizes: our peft config on the Qwen3-1.7B-Base architecture (built on the meta
device from its published shape, nothing downloaded) has the trainable parameter counts docs/method.md
quotes: 4.36M, 17.4M and 69.7M at r = 4, 16 and 64."""

from __future__ import annotations

import pytest
import torch

from arca.config import LoraConfig
from arca.models import count_trainable, wrap_lora

# Qwen/Qwen3-1.7B-Base config.json shape values.
QWEN3_1_7B = dict(
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=True,
)


@pytest.mark.parametrize("rank, millions", [(4, 4.36), (16, 17.4), (64, 69.7)])
def test_trainable_parameters_match_the_paper(rank, millions):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3Config(**QWEN3_1_7B))
        policy = wrap_lora(model, LoraConfig(rank=rank))
    assert count_trainable(policy) / 1e6 == pytest.approx(millions, abs=0.05)
