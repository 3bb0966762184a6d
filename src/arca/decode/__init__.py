"""Lean batched decoding (``rollout.decoder: lean``): ``generate``'s sampling without its per-token overhead.

``LeanDecoder`` runs a Llama or Qwen3 decoder with plain LoRA adapters as a plain loop over its
weights: a preallocated KV cache, each distinct prompt run once, stopped rows leaving the batch,
``generate``'s logits processors in its order and one ``torch.multinomial`` over every row per step.
``final_hidden`` gives the training step the same prompt saving. What equals ``generate`` (the
sampling distribution and, in every tested case, the tokens) and what is rounded differently:
docs/performance.md, "Sampling" and "The gradient pass"; the checks are in ``tests/test_decode.py``.
Anything unsupported is refused at construction with a message naming ``rollout.decoder``.
"""

from arca.decode.decoder import (
    MIN_ROWS,
    SUPPORTED_MODEL_TYPES,
    LeanDecoder,
    compact_rows,
    flash_query_block,
    shared_prefix_length,
)
from arca.decode.layers import UnsupportedModelError
from arca.decode.sampling import next_tokens, process_scores

__all__ = [
    "MIN_ROWS",
    "SUPPORTED_MODEL_TYPES",
    "LeanDecoder",
    "UnsupportedModelError",
    "compact_rows",
    "flash_query_block",
    "next_tokens",
    "process_scores",
    "shared_prefix_length",
]
