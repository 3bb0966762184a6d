"""The one AdamW factory of the package: GRPO training, the GPU smoke check, the benchmark and
pretraining all build their optimizer here.

Two settings, each exactly the call it replaces (same parameter order, same arguments, so the
runs' numbers do not move):

- ``grpo_adamw(model, cfg)``: GRPO on a LoRA adapter (``train.lr``, ``train.weight_decay``). Weight
  decay on every trainable tensor, torch's default betas (0.9, 0.999) and eps.
- ``pretrain_adamw(model, lr, weight_decay)``: pretraining the small base model. Weight decay on
  matrices (``ndim >= 2``) only, norm gains left undecayed; betas (0.9, 0.95).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from arca.config import Config

PRETRAIN_BETAS = (0.9, 0.95)  # the usual choice for language-model pretraining


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that receive gradients, in ``model.parameters()`` order (the optimizer's order)."""
    return [p for p in model.parameters() if p.requires_grad]


def decay_matrices_only(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: the trainable matrices with ``weight_decay``, everything else with none."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    lr: float,
    weight_decay: float | None = None,
    betas: tuple[float, float] | None = None,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``params`` (tensors, or groups carrying their own ``weight_decay``).

    ``weight_decay`` and ``betas`` left at None keep torch's defaults (groups set their own decay).
    """
    kwargs: dict[str, Any] = {"lr": lr}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    if betas is not None:
        kwargs["betas"] = betas
    return torch.optim.AdamW(params, **kwargs)


def grpo_adamw(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    """The GRPO optimizer over the adapter's trainable parameters (``train.lr``, ``train.weight_decay``)."""
    return adamw(trainable(model), cfg.train.lr, cfg.train.weight_decay)


def pretrain_adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The pretraining optimizer: decay on matrices only, betas ``PRETRAIN_BETAS``."""
    return adamw(decay_matrices_only(model, weight_decay), lr, betas=PRETRAIN_BETAS)
