"""Tests of arca.backends: the sampling backend a config names, and the settings it passes on.

A stand-in model whose ``generate`` appends fixed completions shows the configured completion
mask reaching the generated rollouts; a stand-in vLLM module shows the routing to that backend
without installing vllm.
"""

from __future__ import annotations

import sys
from types import ModuleType

import pytest
import torch
from helpers import ALPHABET, EOS1

from arca.backends import make_generator
from arca.config import load_config
from arca.pretrain import char_tokenizer
from arca.rollout import TransformersGenerator
from arca.sampling import Sampling


@pytest.fixture()
def cfg(tmp_path):
    return load_config("configs/smoke.yaml", [f"paths.results={tmp_path}"])


class FixedModel(torch.nn.Module):
    """Stands in for a causal LM whose ``generate`` appends fixed completions to the prompts."""

    def __init__(self, completions: list[list[int]]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = None
        self.completions = torch.tensor(completions)

    def generate(self, input_ids, attention_mask, **kw):
        return torch.cat([input_ids, self.completions[: input_ids.shape[0]]], dim=1)


@pytest.mark.parametrize(
    "rule, expected", [("author", [[1, 1, 0, 0], [1, 1, 1, 1]]), ("through_eos", [[1, 1, 1, 0], [1, 1, 1, 1]])]
)
def test_generator_mask_follows_the_config(cfg, rule, expected):
    from transformers import PreTrainedTokenizerFast

    tok = char_tokenizer([ALPHABET])
    tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<eos>", pad_token="<eos>")
    assert tok.pad_token_id == tok.eos_token_id == EOS1  # as Qwen3-1.7B-Base
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    cfg.rollout.completion_mask = rule
    cfg.rollout.decoder = "generate"  # FixedModel stands in for model.generate
    gen = make_generator(cfg, FixedModel([enc("12") + [EOS1, EOS1], enc("3456")]), tok)
    r = gen.generate(["a", "b"], Sampling(1, 4))
    assert r.completion_mask.tolist() == expected
    assert r.texts == ["12", "3456"]  # the EOS is never in the text


def test_transformers_backend_takes_its_settings_from_the_config(cfg):
    tok = char_tokenizer([ALPHABET])
    model = FixedModel([[5, 6]])
    cfg.rollout.batch_size, cfg.data.max_prompt_tokens = 7, 33
    cfg.rollout.completion_mask, cfg.rollout.decoder = "through_eos", "generate"
    gen = make_generator(cfg, model, tok)
    assert isinstance(gen, TransformersGenerator) and gen.model is model and gen.tokenizer is tok
    assert (gen.batch_size, gen.max_prompt_tokens, gen.mask_rule, gen.decoder) == (7, 33, "through_eos", "generate")
    assert make_generator(cfg, model, tok, batch_size=3).batch_size == 3  # evaluation passes eval.batch_size


def test_vllm_backend_is_imported_only_when_named(cfg, monkeypatch):
    made = []

    class StandIn:
        def __init__(self, *args):
            made.append(args)

    fake = ModuleType("arca.vllm_backend")
    fake.VLLMGenerator = StandIn
    monkeypatch.setitem(sys.modules, "arca.vllm_backend", fake)
    tok, model = char_tokenizer([ALPHABET]), FixedModel([[5]])
    assert isinstance(make_generator(cfg, model, tok), TransformersGenerator)  # smoke.yaml: transformers
    assert made == []
    cfg.rollout.backend = "vllm"
    gen = make_generator(cfg, model, tok, batch_size=3)
    assert isinstance(gen, StandIn) and made == [(cfg, model, tok)]
