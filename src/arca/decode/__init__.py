"""Lean batched decoding (``rollout.decoder: lean``): ``generate``'s tokens without its per-token overhead.

For the small models of this benchmark most of ``model.generate``'s time is per-token Python and
framework work (logits processors, stopping criteria, input preparation, attention-mask building,
peft's module dispatch), not arithmetic. ``LeanDecoder`` runs the same computation as a plain
loop over the decoder's weights, and rounds every number as ``generate`` does:

- **Same arithmetic.** Each projection is ``F.linear(x, W)`` plus, per active LoRA adapter,
  ``(x A^T) B^T * scaling`` added as peft adds it (eval mode: no dropout). For a power-of-two
  scaling (the default lora_alpha = 2 * rank) the last multiply-add is one ``addmm``, which rounds
  the same since the scaling is exact. RMSNorm, the model's own rotary module, transformers' own
  ``sdpa_attention_forward`` and the residual stream follow the Llama/Qwen3 code; the boolean
  mask is passed as the 0/-inf mask SDPA would make of it, and rotate_half's sign is folded into
  sin (``(-a) * b == a * (-b)``). Positions are ``cumsum(mask) - 1`` (0 on left padding), then one
  more per step; the last position's logits are read in fp32.
- **Same sampling.** Each step applies, in ``generate``'s order: EOS at -inf while fewer than
  ``min_new_tokens`` tokens exist (greedy too), then, when sampling, temperature, top-k and top-p
  (``min_tokens_to_keep`` 1); then ``argmax`` or ``torch.multinomial(softmax(scores), 1)`` over
  every row, stopped rows included, so the global RNG advances as in ``generate``. A row stops at
  its first EOS and is padded with ``pad_id`` after it; the loop ends when every row has stopped
  or ``max_new_tokens`` exist.
- **Less work.** The KV cache is preallocated and read as a view of the current length; the
  prompt runs once per distinct prompt, its cache copied to the K rows sharing it; rows that have
  stopped leave the model's batch (``MIN_ROWS`` stay). ``final_hidden`` gives the training step's
  adapter-off reference pass the same saving on the prompt.

Row results do not depend on how many rows a matmul has (from 4 rows up, on MKL) nor on which
other rows are in the batch, so the output equals ``model.generate``'s token for token on CPU,
greedy and sampled under the same seed: ``tests/test_decode.py`` checks it with and without a
LoRA adapter, with and without left padding, stopped rows, min_new_tokens, every filter, on
Llama and Qwen3 blocks. On a GPU the kernels may round differently for other batch shapes (the
distribution is the same). Supported: Llama and Qwen3 decoder-only models (the pretrained-here
model, SmolLM2, Qwen3-1.7B-Base) with SDPA attention in every layer, plain LoRA adapters, no
generation-config processor beyond the ones above; anything else is refused at construction with
a message naming ``rollout.decoder``.
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
