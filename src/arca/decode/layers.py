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
            if a.dtype != flat.dtype or a.dtype != flat_x.dtype:
                # peft keeps adapters in float32 over a bf16/fp16 base: input cast to the adapter's
                # dtype, the sum promoted, the result cast back once at the end
                xa = flat_x.to(a.dtype)
                flat = flat + F.linear(F.linear(xa if dropout is None else dropout(xa), a), b) * scaling
                continue
            xa = flat_x if dropout is None else dropout(flat_x)  # [M, K]
            if math.frexp(scaling)[0] == 0.5:
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
