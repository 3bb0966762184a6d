"""One decoder layer of a Llama/Qwen3 model as the lean decoder computes it: weights read at call time, and the math.

``Projection`` is a linear layer plus its active LoRA adapters, added as peft adds them;
``Block`` holds one layer's weights; ``rms_norm``, the rotary tables and ``additive`` reproduce
transformers' RMSNorm, rotary embedding and SDPA mask op for op. A layer that cannot be
reproduced exactly raises ``UnsupportedModelError``, naming ``rollout.decoder``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class UnsupportedModelError(ValueError):
    """The model is outside what the lean decoder reproduces exactly."""


def unsupported(why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"rollout.decoder: lean cannot decode this model ({why}); set rollout.decoder: generate"
    )


# ----------------------------------------------------------------------------- weights
@dataclass
class Projection:
    """A linear layer as it computes now: base weight and bias, plus (A, B, scaling, dropout) per active LoRA adapter.

    ``dropout`` is the adapter's ``nn.Dropout`` when its module is in train mode with p > 0
    (peft applies it to the adapter's input only), else None.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    loras: list[tuple[torch.Tensor, torch.Tensor, float, torch.nn.Module | None]]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N]: ``base(x) + sum over adapters of B(A(dropout(x))) * scaling``, peft's order."""
        out = F.linear(x, self.weight, self.bias)
        if not self.loras:
            return out
        dtype = out.dtype
        flat_x, flat = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])  # [M, K], [M, N]
        for a, b, scaling, dropout in self.loras:
            xa = flat_x.to(a.dtype)  # [M, K]; peft casts the input to the adapter's dtype
            xa = xa if dropout is None else dropout(xa)
            if a.dtype != flat.dtype or a.dtype != flat_x.dtype:
                # peft keeps adapters in float32 over a bf16/fp16 base: the sum promoted, the result
                # cast back once at the end
                flat = flat + F.linear(F.linear(xa, a), b) * scaling
            elif math.frexp(scaling)[0] == 0.5:
                # a power of two scales exactly, so one fused multiply-add rounds as peft's
                # ``out + (h @ B^T) * scaling`` does (the default: lora_alpha = 2 * rank)
                flat = torch.addmm(flat, F.linear(xa, a), b.t(), alpha=scaling)
            else:
                flat = flat + F.linear(F.linear(xa, a), b) * scaling
        return flat.to(dtype).view(out.shape)


def merged(p: Projection) -> Projection:
    """``p`` with its LoRA adapters folded into the weight, W + scaling * B A, for sampling.

    One matmul per projection instead of three: the same linear map, rounded differently (about
    1e-7 relative in float32). Only for float32 weights and adapters without dropout; anything
    else (a half-precision base, where folding would round the update into the base's precision,
    or train-mode dropout) is returned unchanged.
    """
    if not p.loras or p.weight.dtype != torch.float32:
        return p
    if any(a.dtype != torch.float32 or b.dtype != torch.float32 or drop is not None for a, b, _, drop in p.loras):
        return p
    w = p.weight.detach()
    for a, b, scaling, _ in p.loras:
        w = w + (b.detach() @ a.detach()) * scaling  # [N, r] @ [r, K] -> [N, K]
    return Projection(w, p.bias, [])


def projection(module: torch.nn.Module) -> Projection:
    """The ``Projection`` of an ``nn.Linear`` or a peft LoRA ``Linear``, read at call time.

    Reading it per ``generate`` call picks up the current weights and adapter state
    (``disable_adapter()``, merged adapters, the active adapters).
    """
    from peft.tuners.lora import LoraLayer

    if isinstance(module, torch.nn.Linear):
        return Projection(module.weight, module.bias, [])
    if not isinstance(module, LoraLayer) or not isinstance(module.base_layer, torch.nn.Linear):
        raise unsupported(f"layer type {type(module).__name__}")
    base = module.base_layer
    if module.disable_adapters or module.merged:
        if module.disable_adapters and module.merged:
            raise unsupported("an adapter is merged into the weights and disabled")
        return Projection(base.weight, base.bias, [])
    loras = []
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if name in module.lora_variant or getattr(module, "fan_in_fan_out", False):
            raise unsupported(f"LoRA variant or fan_in_fan_out on adapter {name!r}")
        a, b = module.lora_A[name], module.lora_B[name]
        if a.bias is not None or b.bias is not None or a.weight.dtype != b.weight.dtype:
            raise unsupported(f"LoRA bias or mixed dtypes on adapter {name!r}")
        drop = module.lora_dropout[name] if name in module.lora_dropout else None
        active = module.training and isinstance(drop, torch.nn.Dropout) and drop.p > 0
        loras.append((a.weight, b.weight, module.scaling[name], drop if active else None))
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
    # q, k, v and gate, up as one matmul each (``stacked``), where all of them are plain weights
    qkv: Projection | None = None
    gate_up: Projection | None = None


def stacked(*parts: Projection) -> Projection | None:
    """One projection computing ``parts`` side by side (outputs concatenated), or None if one has LoRA.

    Projections of the same input in one matmul: fewer, wider calls for the decode steps, where
    each call's fixed cost is comparable to its arithmetic.
    """
    if any(p.loras for p in parts) or len({p.weight.dtype for p in parts}) > 1:
        return None
    if any(p.bias is None for p in parts) and any(p.bias is not None for p in parts):
        return None
    bias = None if parts[0].bias is None else torch.cat([p.bias.detach() for p in parts])
    return Projection(torch.cat([p.weight.detach() for p in parts]), bias, [])


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


# ----------------------------------------------------------------------------- one layer's parts
def queries_keys_values(
    blk: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int, head_dim: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotated queries [B, S, heads, D], rotated keys and values [B, S, kv_heads, D] of x [B, S, H]."""
    B, S = x.shape[:2]
    if blk.qkv is not None:  # [B, S, (heads + 2 kv_heads) D] in one matmul
        n_v = blk.v.weight.shape[0]
        q_k, v = blk.qkv(x).split([blk.qkv.weight.shape[0] - n_v, n_v], -1)
        qk = q_k.view(B, S, -1, head_dim)  # [B, S, heads + kv_heads, D]
    else:
        # q and k side by side [B, S, heads + kv_heads, D]: one per-head norm and one rotation for both
        qk = torch.cat([blk.q(x).view(B, S, n_heads, -1), blk.k(x).view(B, S, -1, head_dim)], dim=2)
        v = blk.v(x)
    if blk.qk_norm is not None:
        qk = rms_norm(qk, blk.qk_norm, eps)
    qk = rotate(qk, cos, sin)
    return qk[:, :, :n_heads], qk[:, :, n_heads:], v.view(B, S, -1, head_dim)


def keys_values(
    blk: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int, head_dim: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated keys and values [B, S, kv_heads, D] of x [B, S, H] alone (no queries computed)."""
    B, S = x.shape[:2]
    k = blk.k(x).view(B, S, -1, head_dim)  # [B, S, kv_heads, D]
    if blk.qk_norm is not None:
        k = rms_norm(k, blk.qk_norm[n_heads:], eps)
    return rotate(k, cos, sin), blk.v(x).view(B, S, -1, head_dim)


def attend(blk: Block, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of queries q [B, S, heads, D] over k, v [B, kv_heads, L, D] -> [B, S, heads, D].

    Transformers' own SDPA call (the flash kernel on CPU), except a float32 decode step (S = 1):
    ``one_query_attention``.
    """
    if q.shape[1] == 1 and q.dtype == torch.float32:
        return one_query_attention(q[:, 0], k, v, mask, blk.attn.scaling)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    a, _ = sdpa_attention_forward(blk.attn, q.transpose(1, 2), k, v, mask, dropout=0.0, scaling=blk.attn.scaling)
    return a  # [B, S, heads, D]


def feed_forward(blk: Block, x: torch.Tensor) -> torch.Tensor:
    """The MLP of x [B, S, H]: down(act(gate(x)) * up(x)) -> [B, S, H]."""
    if blk.gate_up is not None:
        g, u = blk.gate_up(x).chunk(2, dim=-1)  # [B, S, I] each
    else:
        g, u = blk.gate(x), blk.up(x)
    return blk.down(blk.act(g) * u)


def one_query_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """Attention of one query per row: q [B, heads, D] over k, v [B, kv_heads, L, D] -> [B, 1, heads, D].

    softmax(q k^T * scaling + mask) v with grouped heads (query head h reads key/value head
    h // (heads / kv_heads), as ``repeat_kv``), as three batched matmul-sized kernels. PyTorch's CPU
    flash-attention kernel runs two tiny GEMMs per row and head, which for a single query costs
    more than the arithmetic; this is the same function, rounded differently (its own softmax):
    float32 only, where that difference is about 1e-7 relative (a half-precision model keeps the
    flash kernel, whose fp32 accumulation it would not reproduce). ``mask`` is the additive
    [B, 1, 1, L] mask or None.
    """
    B, n_q, D = q.shape
    n_kv = k.shape[1]
    s = torch.matmul(q.view(B, n_kv, n_q // n_kv, D), k.transpose(-1, -2)) * scaling  # [B, kv_heads, G, L]
    if mask is not None:
        s = s + mask  # [B, 1, 1, L] broadcasts over heads and the group
    p = torch.softmax(s, dim=-1)  # [B, kv_heads, G, L]
    return torch.matmul(p, v).view(B, 1, n_q, D)  # [B, kv_heads, G, D] -> [B, 1, heads, D]
