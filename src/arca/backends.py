"""The sampling backend a config names: one factory above the backends, so neither imports the other.

``arca.rollout`` holds the shared ``Rollouts`` record, the completion mask and the Transformers
backend; ``arca.vllm_backend`` builds on those. Steps ask for a backend here.
"""

from __future__ import annotations

from arca.config import Config
from arca.rollout import Generator, TransformersGenerator


def make_generator(cfg: Config, model, tokenizer, batch_size: int | None = None) -> Generator:
    """The backend named by ``cfg.rollout.backend``; ``batch_size`` completions per batch (default
    ``rollout.batch_size``; evaluation passes ``eval.batch_size``)."""
    if cfg.rollout.backend == "vllm":
        from arca.vllm_backend import VLLMGenerator  # optional and heavy: vllm is imported only here

        return VLLMGenerator(cfg, model, tokenizer)
    return TransformersGenerator(
        model,
        tokenizer,
        batch_size or cfg.rollout.batch_size,
        cfg.data.max_prompt_tokens,
        cfg.rollout.completion_mask,
        cfg.rollout.decoder,
    )
