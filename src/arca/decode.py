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

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "qwen3")

# Generation-config fields that would make ``generate`` add a logits processor we do not apply,
# with the value that means "off".
_OFF_PROCESSORS = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "min_length": 0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
    "guidance_scale": None,
    "exponential_decay_length_penalty": None,
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "watermarking_config": None,
}


class UnsupportedModelError(ValueError):
    """The model is outside what the lean decoder reproduces exactly."""


def _unsupported(why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"rollout.decoder: lean cannot decode this model ({why}); set rollout.decoder: generate"
    )


# ----------------------------------------------------------------------------- sampling
def process_scores(
    logits: torch.Tensor,
    n_generated: int,
    greedy: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    min_new_tokens: int,
    eos_mask: torch.Tensor,
) -> torch.Tensor:
    """``generate``'s logits processors, in its order, on next-token logits [B, V] (float32).

    EOS suppression while ``n_generated < min_new_tokens`` (also when greedy); then, for sampling
    only, temperature (when != 1), top-k (when > 0) and top-p (when < 1), each masking with -inf
    and keeping at least one token. ``eos_mask`` [V] is True on the EOS ids.
    """
    scores = logits
    if n_generated < min_new_tokens:
        scores = torch.where(eos_mask, -math.inf, scores)  # [B, V]
    if greedy:
        return scores
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        k = min(top_k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]  # [B, 1] the k-th largest score
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)  # [B, V] ascending
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # [B, V]
        drop = cum <= (1 - top_p)  # the least likely tokens whose mass stays within 1 - top_p
        drop[..., -1:] = 0  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(1, order, drop), -math.inf)
    return scores


def next_tokens(scores: torch.Tensor, greedy: bool) -> torch.Tensor:
    """Argmax, or one multinomial draw per row of softmax(scores): [B, V] -> [B]."""
    if greedy:
        return torch.argmax(scores, dim=-1)
    return torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)


# ----------------------------------------------------------------------------- weights
@dataclass
class Projection:
    """A linear layer as it computes now: base weight and bias, plus (A, B, scaling) per active LoRA adapter."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    loras: list[tuple[torch.Tensor, torch.Tensor, float]]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N]: ``base(x) + sum over adapters of B(A(x)) * scaling``, peft's order."""
        out = F.linear(x, self.weight, self.bias)
        if not self.loras:
            return out
        dtype = out.dtype
        flat_x, flat = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])  # [M, K], [M, N]
        for a, b, scaling in self.loras:
            if a.dtype != flat.dtype or a.dtype != flat_x.dtype:
                # peft keeps adapters in float32 over a bf16/fp16 base: input cast to the adapter's
                # dtype, the sum promoted, the result cast back once at the end
                flat = flat + F.linear(F.linear(flat_x.to(a.dtype), a), b) * scaling
            elif math.frexp(scaling)[0] == 0.5:
                # a power of two scales exactly, so one fused multiply-add rounds as peft's
                # ``out + (h @ B^T) * scaling`` does (the default: lora_alpha = 2 * rank)
                flat.addmm_(F.linear(flat_x, a), b.t(), alpha=scaling)
            else:
                flat.add_(F.linear(F.linear(flat_x, a), b) * scaling)
        return flat.to(dtype).view(out.shape)


def projection(module: torch.nn.Module) -> Projection:
    """The ``Projection`` of an ``nn.Linear`` or a peft LoRA ``Linear``, read at call time.

    Reading it per ``generate`` call picks up the current weights and adapter state
    (``disable_adapter()``, merged adapters, the active adapters).
    """
    from peft.tuners.lora import LoraLayer

    if isinstance(module, torch.nn.Linear):
        return Projection(module.weight, module.bias, [])
    if not isinstance(module, LoraLayer) or not isinstance(module.base_layer, torch.nn.Linear):
        raise _unsupported(f"layer type {type(module).__name__}")
    base = module.base_layer
    if module.disable_adapters or module.merged:
        if module.disable_adapters and module.merged:
            raise _unsupported("an adapter is merged into the weights and disabled")
        return Projection(base.weight, base.bias, [])
    loras = []
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if name in module.lora_variant or getattr(module, "fan_in_fan_out", False):
            raise _unsupported(f"LoRA variant or fan_in_fan_out on adapter {name!r}")
        a, b = module.lora_A[name], module.lora_B[name]
        if a.bias is not None or b.bias is not None or a.weight.dtype != b.weight.dtype:
            raise _unsupported(f"LoRA bias or mixed dtypes on adapter {name!r}")
        loras.append((a.weight, b.weight, module.scaling[name]))
    return Projection(base.weight, base.bias, loras)


@dataclass
class Block:
    """One decoder layer's weights for the current call."""

    attn: torch.nn.Module  # the attention module (its settings feed transformers' SDPA call)
    ln1: torch.Tensor
    ln2: torch.Tensor
    q: Projection
    k: Projection
    v: Projection
    o: Projection
    qk_norm: torch.Tensor | None  # [heads + kv_heads, D]: Qwen3's q and k norm weights per head; Llama has none
    gate: Projection
    up: Projection
    down: Projection
    act: torch.nn.Module


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama/Qwen3 RMSNorm, op for op: normalize in fp32, scale in the input dtype."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign-folded sin [B, S, 1, D] for ``rotate``.

    transformers' rotary embedding is ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) =
    cat(-x2, x1)``. Since ``(-a) * b == a * (-b)`` exactly, the sign moves onto sin once per step
    and every layer's rotation saves a negation: the same values with fewer kernels.
    """
    half = cos.shape[-1] // 2
    signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)  # [B, S, D]
    return cos.unsqueeze(2), signed_sin.unsqueeze(2)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [B, S, heads, D] (tables from ``rotary_tables``)."""
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((x[..., half:], x[..., :half]), dim=-1) * signed_sin)


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask (True = attend) as SDPA turns it into an additive one: 0 or -inf."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, -math.inf)


# ----------------------------------------------------------------------------- the decoder
class LeanDecoder:
    """Batched decoding of a (peft-wrapped) Llama/Qwen3 causal LM, equal to its ``generate``."""

    def __init__(self, model):
        self.model = model
        # the transformers causal LM, inside a peft wrapper or not
        self.lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = getattr(self.lm, "config", None)
        if getattr(cfg, "model_type", None) not in SUPPORTED_MODEL_TYPES:
            raise _unsupported(
                f"model type {getattr(cfg, 'model_type', type(self.lm).__name__)!r}, "
                f"supported: {list(SUPPORTED_MODEL_TYPES)}"
            )
        if getattr(cfg, "_attn_implementation", None) != "sdpa":
            raise _unsupported(f"attention implementation {getattr(cfg, '_attn_implementation', None)!r}, needs 'sdpa'")
        if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
            raise _unsupported("sliding-window layers")
        gen_cfg = getattr(self.lm, "generation_config", None)
        for key, off in _OFF_PROCESSORS.items():
            value = getattr(gen_cfg, key, off)
            if value is not None and value != off:
                raise _unsupported(f"generation_config.{key} = {value!r} adds a logits processor")
        self.eps = cfg.rms_norm_eps
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads

    def blocks(self) -> list[Block]:
        out = []
        for layer in self.lm.model.layers:
            at, mlp = layer.self_attn, layer.mlp
            qk_norm = None
            if getattr(at, "q_norm", None) is not None:
                qk_norm = torch.cat([at.q_norm.weight.expand(self.n_heads, -1), at.k_norm.weight.expand(self.n_kv, -1)])
            out.append(
                Block(
                    at,
                    layer.input_layernorm.weight,
                    layer.post_attention_layernorm.weight,
                    projection(at.q_proj),
                    projection(at.k_proj),
                    projection(at.v_proj),
                    projection(at.o_proj),
                    qk_norm,
                    projection(mlp.gate_proj),
                    projection(mlp.up_proj),
                    projection(mlp.down_proj),
                    mlp.act_fn,
                )
            )
        return out

    def _hidden(
        self,
        blocks: list[Block],
        ids: torch.Tensor,
        pos: torch.Tensor,
        start: int,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor | None,
        kv_end: int | None = None,
    ) -> torch.Tensor:
        """Final hidden states [B, S, H] (after the last norm) of tokens ``ids`` [B, S] at positions ``pos``.

        Their keys and values go into ``cache`` at start..start+S-1, and they attend over the first
        ``kv_end`` (default start+S) entries; ``mask`` is the [B, 1, S, kv_end] additive mask (0 or
        -inf, see ``additive``) or None (causal, no padding).
        """
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        lm = self.lm
        h = lm.model.embed_tokens(ids)  # [B, S, H]
        cos, sin = rotary_tables(*lm.model.rotary_emb(h, pos))  # [B, S, 1, D] each
        B, S = ids.shape
        end = start + S
        kv_end = end if kv_end is None else kv_end
        n_q = self.n_heads
        for blk, (kc, vc) in zip(blocks, cache):
            x = rms_norm(h, blk.ln1, self.eps)
            # q and k side by side [B, S, heads + kv_heads, D]: one per-head norm and one rotation for both
            qk = torch.cat([blk.q(x).view(B, S, n_q, -1), blk.k(x).view(B, S, -1, self.head_dim)], dim=2)
            if blk.qk_norm is not None:
                qk = rms_norm(qk, blk.qk_norm, self.eps)
            qk = rotate(qk, cos, sin)
            kc[:, :, start:end] = qk[:, :, n_q:].transpose(1, 2)
            vc[:, :, start:end] = blk.v(x).view(B, S, -1, self.head_dim).transpose(1, 2)
            a, _ = sdpa_attention_forward(
                blk.attn,
                qk[:, :, :n_q].transpose(1, 2),
                kc[:, :, :kv_end],
                vc[:, :, :kv_end],
                mask,
                dropout=0.0,
                scaling=blk.attn.scaling,
            )  # [B, S, heads, D]
            h = h + blk.o(a.reshape(B, S, -1))
            x = rms_norm(h, blk.ln2, self.eps)
            h = h + blk.down(blk.act(blk.gate(x)) * blk.up(x))
        return rms_norm(h, lm.model.norm.weight, self.eps)  # [B, S, H]

    def _forward(
        self,
        blocks: list[Block],
        ids: torch.Tensor,
        pos: torch.Tensor,
        start: int,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``_hidden``, then the logits of the last position [B, V] in fp32 (generate()'s ``logits_to_keep=1``)."""
        h = self._hidden(blocks, ids, pos, start, cache, mask)
        head = self.lm.lm_head
        return F.linear(h[:, -1:, :], head.weight, head.bias)[:, -1].to(torch.float32)  # [B, V]

    def _cache(
        self, rows: int, length: int, like: torch.Tensor, n_blocks: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [tuple(like.new_zeros(rows, self.n_kv, length, self.head_dim) for _ in "kv") for _ in range(n_blocks)]

    @torch.no_grad()
    def final_hidden(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor | None:
        """Final hidden states [B, T, H] at the positions predicting y_1..y_T, equal to the full-sequence pass.

        The full pass (``arca.scoring._final_hidden``) runs prompt + completion [B, S = P+T-1] with the
        attention mask (prompt mask, completion mask) and positions cumsum(mask) - 1. Here the first
        Q0 <= P-1 positions run once per distinct prompt (their keys cached, the later slots masked
        as causality masks them there), the rest once per row over all S key slots. Q0 is a multiple
        of the query block of PyTorch's CPU flash attention for S queries, so every query falls in a
        block of the same size as in the full pass and gets the same rounding. Returns None where
        that cannot be arranged, on GPU, and where the full pass would take another attention path
        (no masked slot, or a single query): the caller then runs the full pass.
        """
        P, T = prompt_ids.shape[1], completion_ids.shape[1]
        S = P + T - 1
        am = torch.cat([prompt_mask.float(), completion_mask.float()], dim=1)[:, :-1].long()  # [B, S]
        q0 = shared_prefix_length(P, S)
        if prompt_ids.device.type != "cpu" or q0 == 0 or bool((am == 1).all()):
            return None
        ids = torch.cat([prompt_ids, completion_ids], dim=1)[:, :-1]  # [B, S]
        pos = (am.cumsum(dim=1) - 1).clamp(min=0)  # [B, S]
        blocks = self.blocks()
        dtype = self.lm.model.embed_tokens.weight.dtype
        causal = torch.ones(S, S, dtype=torch.bool, device=ids.device).tril()  # [S, S]
        uniq, inverse = torch.unique(
            torch.cat([ids[:, :q0], am[:, :q0]], dim=1), dim=0, return_inverse=True
        )  # [U, 2 q0]
        u_am = torch.cat([uniq[:, q0:].bool(), am.new_zeros(len(uniq), S - q0, dtype=torch.bool)], dim=1)  # [U, S]
        u_pos = (uniq[:, q0:].cumsum(dim=1) - 1).clamp(min=0)  # [U, q0]
        cache = self._cache(len(uniq), S, self.lm.model.embed_tokens.weight, len(blocks))
        self._hidden(
            blocks,
            uniq[:, :q0],
            u_pos,
            0,
            cache,
            additive(causal[None, None, :q0] & u_am[:, None, None], dtype),
            kv_end=S,
        )  # fills the shared keys and values of positions 0..q0-1
        cache = [(kc[inverse], vc[inverse]) for kc, vc in cache]
        mask = additive(causal[None, None, q0:] & am.bool()[:, None, None], dtype)  # [B, 1, S-q0, S]
        h = self._hidden(blocks, ids[:, q0:], pos[:, q0:], q0, cache, mask)  # [B, S-q0, H]
        return h[:, P - 1 - q0 :]  # [B, T, H]

    @torch.no_grad()
    def generate(
        self,
        ids: torch.Tensor,
        am: torch.Tensor,
        max_new_tokens: int,
        eos_ids: list[int],
        pad_id: int,
        greedy: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_new_tokens: int = 0,
    ) -> torch.Tensor:
        """Completions [B, T] (T <= max_new_tokens) of left-padded prompts ``ids`` / ``am`` [B, P].

        Row b holds its tokens up to and including its first EOS, then ``pad_id``; T is the step at
        which the last row stopped. The model must be in eval mode.
        """
        B, P = ids.shape
        device = ids.device
        blocks = self.blocks()
        padded = not bool((am == 1).all())  # generate() drops an all-ones mask: causal SDPA, no mask
        # the prompt runs once per distinct (ids, mask) row; its cache is then copied to every row sharing it
        uniq, inverse = torch.unique(torch.cat([ids, am], dim=1), dim=0, return_inverse=True)  # [U, 2P], [B]
        if len(uniq) == B:  # nothing shared: keep the batch as it is
            uniq, inverse = torch.cat([ids, am], dim=1), None
        u_ids, u_am = uniq[:, :P], uniq[:, P:]  # [U, P]
        pos0 = (u_am.long().cumsum(-1) - 1).masked_fill(u_am == 0, 0)  # [U, P]
        dtype = self.lm.model.embed_tokens.weight.dtype
        mask = None
        if padded:
            causal = torch.ones(P, P, dtype=torch.bool, device=device).tril()  # [P, P]
            mask = additive(causal[None, None] & u_am.bool()[:, None, None, :], dtype)  # [U, 1, P, P]
        L = P + max_new_tokens
        cache = self._cache(len(uniq), L, self.lm.model.embed_tokens.weight, len(blocks))
        logits = self._forward(blocks, u_ids, pos0, 0, cache, mask)  # [U, V]
        if inverse is not None:
            logits, pos0 = logits[inverse], pos0[inverse]  # [B, V], [B, P]
            cache = [(kc[inverse], vc[inverse]) for kc, vc in cache]
        pos = pos0[:, -1:]  # [B, 1]
        full_mask = additive(
            torch.cat([am.bool(), am.new_ones(B, max_new_tokens, dtype=torch.bool)], 1), dtype
        )  # [B, L]

        eos = torch.tensor(sorted(eos_ids), device=device)
        eos_mask = torch.isin(torch.arange(logits.shape[-1], device=device), eos)  # [V]
        out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)  # [B, max_new]
        unfinished = torch.ones(B, dtype=torch.long, device=device)
        rows = torch.arange(B, device=device)  # the batch rows still run through the model (sorted)
        steps = 0
        while True:
            # every row is sampled, finished ones too (their draws are thrown away), so the RNG
            # advances exactly as in generate()
            scores = process_scores(logits, steps, greedy, temperature, top_k, top_p, min_new_tokens, eos_mask)
            tok = next_tokens(scores, greedy) * unfinished + pad_id * (1 - unfinished)  # [B]
            out[:, steps] = tok
            steps += 1
            unfinished = unfinished & ~torch.isin(tok, eos)
            if steps >= max_new_tokens or unfinished.max() == 0:
                break
            if len(rows) > MIN_ROWS and int(unfinished.sum()) <= len(rows) // 2:
                keep = compact_rows(rows, unfinished.nonzero().squeeze(1))  # positions in ``rows`` to keep
                rows, pos, full_mask = rows[keep], pos[keep], full_mask[keep]
                cache = [(kc[keep], vc[keep]) for kc, vc in cache]
            pos = pos + 1
            step_mask = full_mask[:, None, None, : P + steps] if padded else None  # [R, 1, 1, P+steps]
            new = self._forward(blocks, tok[rows, None], pos, P + steps - 1, cache, step_mask)  # [R, V]
            if len(rows) == B:
                logits = new
            else:  # stopped rows keep their last logits: only their (discarded) draws read them
                logits[rows] = new
        return out[:, :steps]


def flash_query_block(n_queries: int) -> int:
    """Query block size of PyTorch's CPU flash attention for ``n_queries`` queries (its dispatch rule)."""
    return 256 if n_queries >= 768 else 64 if n_queries >= 192 else 32


def shared_prefix_length(prompt_len: int, seq_len: int) -> int:
    """Q0: how many leading positions ``final_hidden`` runs once per prompt; 0 = none.

    The full pass cuts its ``seq_len`` queries into blocks of b = ``flash_query_block(seq_len)``.
    Q0 is the largest multiple of b below the prompt's last position for which the first pass (Q0
    queries) and the second (the other seq_len - Q0) cut theirs into the same blocks.
    """
    b = min(flash_query_block(seq_len), seq_len)
    q0 = (prompt_len - 1) // b * b
    while q0 > 0:
        rest = seq_len - q0
        b_rest = min(flash_query_block(rest), rest)  # a whole block of b, or the full pass's (shorter) last one
        if min(flash_query_block(q0), q0) == b and (b_rest == b or b_rest == rest <= b):
            return q0
        q0 -= b
    return 0


# Rows that have stopped are dropped from the model's batch, but it keeps at least this many: MKL
# rounds a GEMM row the same whatever the number of rows from 4 up (not below), and the attention
# treats every row on its own, so the rows still running get exactly generate()'s values.
MIN_ROWS = 8


def compact_rows(rows: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """Positions in ``rows`` (sorted batch rows) to keep: every row in ``live``, topped up to MIN_ROWS."""
    is_live = torch.isin(rows, live)  # [R]
    keep = is_live.nonzero().squeeze(1)
    if len(keep) < MIN_ROWS:  # fill with stopped rows so that the batch does not shrink below MIN_ROWS
        keep = torch.cat([keep, (~is_live).nonzero().squeeze(1)[: MIN_ROWS - len(keep)]]).sort().values
    return keep
