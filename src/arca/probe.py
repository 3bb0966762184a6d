"""The credit-precision probe: fixed held-out rollouts on which every run's credit is measured.

``python -m arca probe-rollouts`` samples them once from the base model (``rollout.k`` per problem
of the first ``eval.probe_problems`` test problems, eval temperature, a fixed seed) and keeps each
completion's token ids and mask. ``arca.evaluate`` then rebuilds exactly that batch for a trained
run and reports, for every registered credit method, how its token weights fall on the planted
decisive and distractor forks (``arca.diagnostics.credit_precision``).
"""

from __future__ import annotations

import logging

import torch

from arca import credit as credit_lib
from arca import credit_passes, grading
from arca.backends import make_generator
from arca.config import Config
from arca.data import read_records
from arca.diagnostics import credit_precision, mc_agreement
from arca.grading import gold_answer
from arca.grpo import group_advantages
from arca.io import read_jsonl, write_jsonl
from arca.labels import align, rollout_labels
from arca.models import load_base_model, resolve_device
from arca.paths import paths_of
from arca.prompts import prompt_format
from arca.rollout import Rollouts, encode_prompts, pad_right
from arca.sampling import Sampling
from arca.scoring import credit_inputs_for_rollouts, policy_scores

log = logging.getLogger(__name__)

PROBE_SEED = 20260601  # the fixed held-out rollouts: the base model's samples under this seed


def probe_problems(cfg: Config) -> list[dict]:
    """The held-out problems of the probe: the first ``eval.probe_problems`` of the test split."""
    return read_records(paths_of(cfg).data.test)[: cfg.eval.probe_problems]


def sample_probe(cfg: Config, generator, problems: list[dict]) -> list[dict]:
    """K samples per problem (``rollout.k``, eval temperature and top-p, fixed seed), graded.

    Each row keeps the completion's token ids up to its last masked-in or EOS token and the mask,
    so a later step rebuilds exactly the batch that was sampled.
    """
    e, k = cfg.eval, cfg.rollout.k
    fmt = prompt_format(cfg, generator.tokenizer)
    r = generator.generate([fmt(p["problem"]) for p in problems], Sampling.from_eval(e, k, PROBE_SEED))
    rows = []
    for i, (ids, m, text) in enumerate(zip(r.completion_ids.tolist(), r.completion_mask.tolist(), r.texts)):
        p = problems[i // k]
        keep = max((t for t, v in enumerate(m) if v > 0), default=-1) + 2  # one column past the mask (the EOS)
        rows.append(
            {
                "problem_id": p["id"],
                "sample": i % k,
                "completion_ids": ids[:keep],
                "mask": m[:keep],
                "text": text,
                "reward": float(grading.grade_paper(text, gold_answer(p["answer"]))),
            }
        )
    return rows


def probe_batch(rows: list[dict], problems: list[dict], tokenizer, pad_id: int, max_prompt_tokens: int, fmt):
    """The probe's rows as a ``Rollouts`` batch (prompts re-encoded by ``fmt``, completions as sampled)."""
    by_id = {p["id"]: p for p in problems}
    prompt_rows = [fmt(by_id[r["problem_id"]]["problem"]) for r in rows]
    ids, am = encode_prompts(tokenizer, prompt_rows, max_prompt_tokens)  # [N, P]
    comp = pad_right([torch.tensor(r["completion_ids"]) for r in rows], pad_id).long()  # [N, T]
    mask = pad_right([torch.tensor(r["mask"], dtype=torch.float32) for r in rows], 0.0).float()  # [N, T]
    return Rollouts(ids, am, comp, mask, [r["text"] for r in rows])


def labelled_probe(cfg: Config, tokenizer, rows: list[dict], problems: list[dict]):
    """The probe's rows as a ``Rollouts`` batch with their fork labels (labels None without forks)."""
    by_id = {p["id"]: p for p in problems}
    ordered = [by_id[r["problem_id"]] for r in rows[:: cfg.rollout.k]]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    fmt = prompt_format(cfg, tokenizer)
    batch = probe_batch(rows, problems, tokenizer, pad_id, cfg.data.max_prompt_tokens, fmt)
    return batch, rollout_labels(tokenizer, batch, ordered, cfg.rollout.k)


def probe_precision(
    cfg: Config, model, tokenizer, rows: list[dict], problems: list[dict], final_values: dict | None = None
) -> dict[str, dict]:
    """Credit precision of every registered method on the probe rollouts, under ``model`` (no gradient).

    All methods see the same rollouts, labels and advantages (the group advantages of the probe's
    rewards); the model is in eval mode, so no dropout enters the signals. Agreement with the Monte
    Carlo advantages under the base model (``mc_*``) and, given ``final_values`` (V_t under
    ``model`` itself), with those too (``mc_final_*``).
    """
    batch, labels = labelled_probe(cfg, tokenizer, rows, problems)
    if labels is None:
        return {}
    adv = group_advantages(torch.tensor([r["reward"] for r in rows]), cfg.rollout.k)  # [N]
    was_training = model.training
    model.eval()
    try:
        inputs = credit_inputs_for_rollouts(model, batch, seed=PROBE_SEED)
    finally:
        model.train(was_training)
    inputs.decisive = labels.decisive.to(inputs.mask.device)  # [N, T]
    inputs.first_error = labels.first_error.to(inputs.mask.device)  # [N, T]
    rewards = torch.tensor([float(r["reward"]) for r in rows])  # [N]
    # no generator here: a method that needs rollouts of its own (vineppo) is left out, and so is
    # a method with extra model passes outside the sweep (credit_passes.probe_methods)
    inputs, lacking = credit_passes.complete_for_registry(
        cfg, model, batch, inputs, credit_passes.Batch(rewards, adv, cfg.rollout.k), credit_passes.probe_methods(cfg)
    )
    out = {"labeled_frac": float(labels.aligned.float().mean()), "n_rollouts": len(rows), "methods": {}}
    width = batch.completion_mask.shape[1]
    abs_adv = mc_abs_advantages(load_mc_values(cfg), rows, width)  # [N, T] or None
    final_adv = mc_abs_advantages(final_values or {}, rows, width)  # [N, T] or None
    for name in credit_lib.REGISTRY:
        if name in lacking:
            continue
        w, _ = credit_lib.token_weights(name, inputs, cfg.credit.sharpen, cfg.credit.eps)  # [N, T]
        out["methods"][name] = credit_precision(
            w.cpu(), batch.completion_mask, labels.decisive, labels.distractor, adv, labels.aligned
        )
        if abs_adv is not None:
            out["methods"][name].update(mc_agreement(w.cpu(), batch.completion_mask, abs_adv))
        if final_adv is not None:
            agree = mc_agreement(w.cpu(), batch.completion_mask, final_adv)
            out["methods"][name].update({k.replace("mc_", "mc_final_", 1): v for k, v in agree.items()})
    return out


def values_by_row(rows: list[dict]) -> dict[tuple[str, int], list[float]]:
    """(problem_id, sample) -> V_0..V_L of ``arca.mc_values`` rows."""
    return {(r["problem_id"], int(r["sample"])): r["values"] for r in rows}


def load_mc_values(cfg: Config) -> dict[tuple[str, int], list[float]]:
    """(problem_id, sample) -> V_0..V_L from ``arca.mc_values``' output; empty when it is off or absent."""
    path = paths_of(cfg).mc_values
    if cfg.eval.mc_problems <= 0 or not path.exists():
        return {}
    return values_by_row(read_jsonl(path))


def mc_abs_advantages(values: dict, rows: list[dict], width: int) -> torch.Tensor | None:
    """|A_t| = |V_{t+1} - V_t| of each probe row's token t as [N, width] (NaN: no values); None if none."""
    if not values:
        return None
    out = torch.full((len(rows), width), float("nan"), dtype=torch.float64)  # [N, T]
    for i, r in enumerate(rows):
        v = values.get((r["problem_id"], int(r["sample"])))
        if v is not None:
            a = torch.tensor(v, dtype=torch.float64).diff().abs()[:width]  # [L]
            out[i, : len(a)] = a
    return out


# Keys of ``decision_logprobs`` (curve.jsonl): the effective step is their change between curve points.
DECISION_LOGPROB_KEYS = ("probe_logp_decisive_correct", "probe_logp_decisive_bug", "probe_logp_rest")


def decision_logprobs(cfg: Config, model, tokenizer, rows: list[dict], problems: list[dict]) -> dict:
    """Mean log pi(y_t) of the probe's fixed rollouts under ``model`` (eval mode, no gradient):

    - ``probe_logp_decisive_correct``: over the labelled decisive tokens of rows on a correct branch
    - ``probe_logp_decisive_bug``: over those of rows on a bug branch
    - ``probe_logp_rest``: over every other real token of the aligned rows

    Logged at every learning-curve point, their change between points is how far the updates
    moved the decisions (up for correct, down for bug) and how much they moved everything else.
    No dropout and no random draw: the training run's random stream is untouched. Empty without
    planted-fork labels.
    """
    by_id = {p["id"]: p for p in problems}
    batch, labels = labelled_probe(cfg, tokenizer, rows, problems)
    if labels is None:
        return {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # each prompt once for its K rows: a third of the full pass's time, equal up to rounding
            lp = policy_scores(model, batch, False, False, share_prompt=True).logprobs.float().cpu()  # [N, T]
    finally:
        model.train(was_training)
    mask = batch.completion_mask > 0  # [N, T]
    dec = (labels.decisive[:, : lp.shape[1]] > 0) & mask  # [N, T]
    aligns = [align(r["text"], by_id[r["problem_id"]].get("branches") or []) for r in rows]
    on_correct = torch.tensor([bool(a and a.correct) for a in aligns])  # [N]
    aligned = labels.aligned[:, None]  # [N, 1]

    def mean(sel: torch.Tensor) -> float | None:
        return float(lp[sel].mean()) if sel.any() else None

    return {
        "probe_logp_decisive_correct": mean(dec & on_correct[:, None]),
        "probe_logp_decisive_bug": mean(dec & ~on_correct[:, None] & aligned),
        "probe_logp_rest": mean(mask & ~dec & aligned),
    }


def probe_main(cfg: Config, args) -> None:
    """CLI step: sample the probe's fixed held-out rollouts from the base model into ``args.out``
    (the rule's declared output; by hand, default ``arca.paths``' ``eval/probe_rollouts.jsonl``)."""
    model, tok = load_base_model(cfg)
    if resolve_device(cfg.device).type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    rows = sample_probe(cfg, make_generator(cfg, model, tok, cfg.eval.batch_size), probe_problems(cfg))
    write_jsonl(args.out or paths_of(cfg).probe_rollouts, rows)
    log.info(
        "probe: %d rollouts of %d problems, mean reward %.3f",
        len(rows),
        cfg.eval.probe_problems,
        sum(r["reward"] for r in rows) / max(1, len(rows)),
    )
