"""Any registered credit method inside TRL's ``GRPOTrainer`` (docs/bring-your-own.md, "Inside TRL").

TRL's ``grpo`` loss is ``mean_i (1/T_i) sum_t -ratio_it A_it m_it`` and accepts per-token
advantages A_it [B, T]. With ``A_it = A_i w_it T_i`` (w = the method's sum-to-one weights,
T_i = the row's real tokens) its gradient with respect to log pi(y_it) is ``-A_i w_it / B`` on
policy, exactly that of ``arca.grpo.weighted_pg_loss``. ``credit_trainer_class`` returns a
``GRPOTrainer`` subclass that computes the weights of its ``credit_method`` for every batch
(no-grad scoring passes of ``arca.scoring`` and, where the method needs them,
``arca.credit_passes``) and hands TRL those per-token advantages. TRL is imported only here, when
the class is built.
"""

from __future__ import annotations

import torch

from arca import credit as credit_lib
from arca import credit_passes
from arca.config import Config
from arca.rollout import Rollouts
from arca.scoring import credit_inputs_for_rollouts


def token_advantages(
    advantages: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, normalization: str = "sum_to_one"
) -> torch.Tensor:
    """A_it = A_i w'_it T_i [B, T]: TRL's per-row mean over T_i then gives ours (w' = ``loss_weights``)."""
    n = (mask > 0).sum(dim=1, keepdim=True).to(weights.dtype)  # [B, 1]
    w = credit_lib.loss_weights(weights, mask, normalization)  # [B, T]
    return advantages.to(weights.dtype).unsqueeze(1) * w * n * (mask > 0)  # [B, T]


def trl_rollouts(inputs: dict) -> Rollouts:
    """TRL's batch (``prompt_ids`` left-padded, ``completion_ids`` right-padded, masks) as ``Rollouts``."""
    return Rollouts(
        inputs["prompt_ids"],
        inputs["prompt_mask"],
        inputs["completion_ids"],
        inputs["completion_mask"].float(),
        [""] * inputs["completion_ids"].shape[0],
    )


def trl_credit_inputs(cfg: Config, model, inputs: dict, k: int) -> credit_lib.CreditInputs:
    """The inputs ``cfg.credit.method`` needs for TRL's batch (no gradient; groups of ``k`` adjacent rows).

    TRL keeps no rewards per row in the batch: a rollout counts as correct when its advantage is > 0
    (the same for 0/1 rewards). Methods that need labels or rollouts of their own are refused.
    """
    spec = credit_lib.REGISTRY[cfg.credit.method]
    if credit_lib.LABELS in spec.needs or credit_lib.MC_VALUES in spec.needs:
        raise ValueError(f"credit method {cfg.credit.method!r} needs labels or extra rollouts, not available in TRL")
    r = trl_rollouts(inputs)
    x = credit_inputs_for_rollouts(model, r, spec.needs - credit_lib.EXTRA_NEEDS)
    adv = inputs["advantages"].detach()  # [B]
    batch = credit_passes.Batch((adv > 0).float(), adv, k)
    return credit_passes.complete(cfg, spec.needs, model, r, x, batch)


def credit_trainer_class(base=None):
    """A subclass of ``base`` (default ``trl.GRPOTrainer``) whose loss uses an ARCA credit method.

    Set ``arca_config`` (an ``arca.config.Config``; its ``credit`` section names the method and
    its settings) on the instance before training. Requires ``loss_type="grpo"`` (per-sequence
    length normalization, the loss ours equals).
    """
    if base is None:
        from trl import GRPOTrainer as base

    class CreditGRPOTrainer(base):
        arca_config: Config = Config()

        def _compute_loss(self, model, inputs):
            if self.loss_type != "grpo":
                raise ValueError(f"CreditGRPOTrainer needs loss_type='grpo', got {self.loss_type!r}")
            cfg = self.arca_config
            adv = inputs["advantages"]
            if adv.dim() == 1:  # a per-row advantage: weight it by the method's credit
                x = trl_credit_inputs(cfg, model, inputs, self.num_generations)
                w, _ = credit_lib.token_weights(cfg.credit.method, x, cfg.credit.sharpen, cfg.credit.eps)  # [B, T]
                adv = token_advantages(adv, w.to(adv.device), x.mask.to(adv.device), cfg.credit.normalization)
                inputs = {**inputs, "advantages": adv}
            return super()._compute_loss(model, inputs)

    return CreditGRPOTrainer
