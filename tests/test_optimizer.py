"""The AdamW factory (arca.optimizer): each setting is exactly the call it replaced (pretraining's
matrices-only decay was tested in test_pretrain.py as ``pretrain._adamw``).

"Exactly" means the same parameter groups in the same order with the same hyper-parameters, and
bit-identical parameters after a few steps on the same gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch

from arca.config import Config
from arca.optimizer import PRETRAIN_BETAS, decay_matrices_only, grpo_adamw, pretrain_adamw, trainable


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 3))
    model[0].bias.requires_grad_(False)  # a frozen tensor, as the base weights under LoRA
    return model


def _groups(opt: torch.optim.Optimizer, model: torch.nn.Module) -> list[dict]:
    """Param groups with parameters as their names, so two optimizers over two copies compare."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [{**g, "params": [names[id(p)] for p in g["params"]]} for g in opt.param_groups]


def _steps(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    for _ in range(n):
        opt.zero_grad()
        x = torch.randn(5, 4, generator=gen)
        model(x).pow(2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_trainable_keeps_parameter_order():
    model = _model()
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in trainable(model)] == ["0.weight", "1.weight", "1.bias", "2.weight", "2.bias"]


def test_grpo_adamw_is_the_training_call():
    cfg = Config()
    cfg.train.lr, cfg.train.weight_decay = 3e-3, 0.05
    ours, ref = _model(), _model()
    opt = grpo_adamw(ours, cfg)
    params = [p for p in ref.parameters() if p.requires_grad]
    ref_opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    assert _groups(opt, ours) == _groups(ref_opt, ref) and opt.defaults == ref_opt.defaults
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["weight_decay"] == 0.05
    for a, b in zip(_steps(ours, opt), _steps(ref, ref_opt)):
        assert torch.equal(a, b)


def test_pretrain_adamw_is_the_pretraining_call():
    ours, ref = _model(), _model()
    opt = pretrain_adamw(ours, 1e-2, 0.1)
    # the call pretraining made before the factory existed
    decay = [p for p in ref.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in ref.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    ref_opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95))
    assert _groups(opt, ours) == _groups(ref_opt, ref) and opt.defaults == ref_opt.defaults
    assert _groups(opt, ours)[0]["params"] == ["0.weight", "2.weight"]
    assert _groups(opt, ours)[1]["params"] == ["1.weight", "1.bias", "2.bias"]
    assert opt.param_groups[0]["betas"] == PRETRAIN_BETAS == (0.9, 0.95)
    for a, b in zip(_steps(ours, opt), _steps(ref, ref_opt)):
        assert torch.equal(a, b)


def test_matrix_decay_changes_the_result():
    # the check above can fail: decaying norm gains too moves the parameters
    model = _model()
    decayed_all = copy.deepcopy(model)
    a = _steps(model, pretrain_adamw(model, 1e-2, 0.5))
    b = _steps(decayed_all, torch.optim.AdamW(trainable(decayed_all), lr=1e-2, weight_decay=0.5, betas=(0.9, 0.95)))
    assert not all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_decay_matrices_only_groups(wd):
    groups = decay_matrices_only(_model(), wd)
    assert [g["weight_decay"] for g in groups] == [wd, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])
