"""Lean batched decoding (``rollout.decoder: lean``): ``generate``'s sampling without its per-token overhead.

For the small models of this benchmark most of ``model.generate``'s time is per-token Python and
framework work (logits processors, stopping criteria, input preparation, attention-mask building,
peft's module dispatch), not arithmetic. ``LeanDecoder`` runs the same computation as a plain
loop over the decoder's weights:

- **Same function.** Each projection is ``F.linear(x, W)`` plus, per active LoRA adapter,
  ``(x A^T) B^T * scaling`` as peft adds it; RMSNorm, the model's own rotary module, transformers'
  own ``sdpa_attention_forward`` for multi-token passes and the residual stream follow the
  Llama/Qwen3 code; positions are ``cumsum(mask) - 1`` (0 on left padding), then one more per
  step; the last position's logits are read in fp32.
- **Same sampling.** Each step applies, in ``generate``'s order: EOS at -inf while fewer than
  ``min_new_tokens`` tokens exist (greedy too), then, when sampling, temperature, top-k and top-p
  (``min_tokens_to_keep`` 1); then ``argmax`` or ``torch.multinomial(softmax(scores), 1)`` over
  every row, stopped rows included, so the global RNG advances as in ``generate``. A row stops at
  its first EOS and is padded with ``pad_id`` after it; the loop ends when every row has stopped
  or ``max_new_tokens`` exist.
- **Less work.** The KV cache is preallocated and read as a view of the current length; the
  prompt runs once per distinct prompt, its cache copied to the K rows sharing it; rows that have
  stopped leave the model's batch (``MIN_ROWS`` stay). For a float32 model two parts are computed
  another way, for speed: the LoRA adapters are folded into the weights for the call
  (``layers.merged``: one matmul per projection instead of three), and a decode step's attention
  (one query per row) runs as batched matmuls (``one_query_attention``) instead of PyTorch's CPU
  flash kernel, which spends two tiny GEMM calls per row and head.

What equals what. Those two parts are the same function rounded differently: the logits differ
from the model's own forward by float32 rounding (under 2e-5 in the tests) and the sampled
distribution is the same (a chi-square test over 1200 draws, which does detect temperature 1.5).
Tokens can therefore differ from ``generate``'s only where two choices lie within rounding of each
other; in every test case (greedy and sampled under the same seed, adapter on and off, left
padding, stopped rows, min_new_tokens, every filter, Llama and Qwen3 blocks) and in the bench's
step batch they are the same tokens, and the global RNG ends where ``generate`` leaves it
(``tests/test_decode.py``). A half-precision model keeps peft's unfolded adapters and the flash
kernel, op for op as ``generate``. Row results do not depend on how many rows a matmul has (from 4
rows up, on MKL) nor on which other rows are in the batch, so dropping stopped rows changes nothing.

``LeanDecoder.final_hidden`` gives the training step the same prompt saving: the adapter-off
reference pass bit for bit equal to the full pass (``exact``), and the gradient pass
(``train.share_prompt``) differentiable, equal up to rounding. Supported: Llama and Qwen3
decoder-only models (the pretrained-here model, SmolLM2, Qwen3-1.7B-Base) with SDPA attention in
every layer, plain LoRA adapters, no generation-config processor beyond the ones above; anything
else is refused at construction with a message naming ``rollout.decoder``.
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
