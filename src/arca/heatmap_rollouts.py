"""``python -m arca heatmap-rollouts``: the model run whose per-token results the heat map shows.

``heatmap-rollouts`` samples held-out completions with the heat-map run's adapter and scores them
under every registered credit method, all on the same rollouts, so methods are compared on
identical text. Each row keeps the decoded tokens, every method's weights and Gini, the reward,
and (planted-fork corpus) which tokens are decisive or distractor forks. ``arca.report.heatmap``
renders the file; it never loads a model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from arca import credit_passes
from arca.backends import make_generator
from arca.config import Config, MissingInputError, for_run, heatmap_run
from arca.credit import LABELS, REGISTRY, token_weights
from arca.data import read_records
from arca.diagnostics import gini
from arca.grading import gold_answer, grade_paper
from arca.io import write_jsonl
from arca.labels import align, completion_pieces, rollout_labels, token_flags
from arca.models import load_policy, resolve_device
from arca.paths import paths_of
from arca.prompts import prompt_format
from arca.sampling import Sampling
from arca.scoring import credit_inputs_for_rollouts

log = logging.getLogger(__name__)

N_HEATMAP = 32  # held-out rollouts scored; the page shows a few and averages its agreement table over all


def fork_marks(tokens: list[str], completion: str, branches: list[dict] | None) -> dict | None:
    """Decisive and distractor flags (0/1 per token) of one completion, or None when it has no labels.

    ``completion`` is the decoded text whose characters the labels index, ``tokens`` its decoded
    pieces, one per shown token (their concatenation is ``completion``), as in training's
    ``arca.labels.label_batch``.
    """
    a = align(completion, branches or [])
    if a is None:
        return None
    return {
        "decisive": token_flags(tokens, a.decisive),
        "distractor": token_flags(tokens, a.distractor),
        "correct": a.correct,
    }


def heatmap_rollouts(cfg: Config) -> list[dict]:
    """Sample held-out completions with the heat-map run's adapter; weigh them by every method."""
    run = heatmap_run(cfg)
    rcfg = for_run(cfg, run)
    adapter = paths_of(cfg).run(run).adapter
    if not adapter.is_dir():
        raise MissingInputError(f"heatmap-rollouts: missing adapter {adapter} (train run {run} first)")
    problems = read_records(paths_of(cfg).data.test)[:N_HEATMAP]
    model, tok = load_policy(rcfg, adapter, is_trainable=False)
    model.eval()
    if resolve_device(rcfg.device).type == "cpu":
        # as every other model step: without it torch takes one thread per core of the machine,
        # and the sampled rollouts (float sums in another order) would depend on the machine
        torch.set_num_threads(rcfg.train.threads)
    gen = make_generator(rcfg, model, tok)  # rollout.backend, as in training
    fmt = prompt_format(rcfg, tok)
    # one sample per problem under the training rollout's settings, with no forced length
    sampling = Sampling.from_rollout(rcfg.rollout, n=1, seed=0, min_new_tokens=0)
    ro = gen.generate([fmt(p["problem"]) for p in problems], sampling)
    inputs = credit_inputs_for_rollouts(model, ro, seed=0)
    labels = rollout_labels(tok, ro, problems, 1)  # None on a corpus without planted forks
    if labels is not None:
        inputs.decisive = labels.decisive.to(inputs.mask.device)  # [N, T], what the oracle methods read
        inputs.first_error = labels.first_error.to(inputs.mask.device)  # [N, T]
    mask = inputs.mask  # [N, T]
    zeros = torch.zeros(len(ro))  # one rollout per problem: no group contrast, no advantage
    inputs, lacking = credit_passes.complete_for_registry(rcfg, model, ro, inputs, credit_passes.Batch(zeros, zeros, 1))
    per_method = {}
    for method, spec in REGISTRY.items():
        if (LABELS in spec.needs and inputs.decisive is None) or method in lacking:
            continue  # no fork labels here: the label-reading methods (the oracle) have nothing to weigh
        w, _ = token_weights(method, inputs, rcfg.credit.sharpen, rcfg.credit.eps)  # [N, T]
        per_method[method] = (w.float().cpu(), gini(w, mask).float().cpu())  # [N, T], [N]
    # The labels index characters of the decoded text; training maps them to tokens through these pieces.
    pieces = completion_pieces(tok, ro)  # [N][real tokens of row i]
    rollouts = []
    for i, p in enumerate(problems):
        keep = mask[i].cpu() > 0  # [T]
        ids = ro.completion_ids[i].cpu()[keep].tolist()
        tokens = [tok.decode([t]) for t in ids]
        rollouts.append(
            {
                "prompt": p["problem"],
                "tokens": tokens,
                "weights": {m: w[i][keep].tolist() for m, (w, _) in per_method.items()},
                "gini": {m: float(g[i]) for m, (_, g) in per_method.items()},
                "reward": float(grade_paper(ro.texts[i], gold_answer(p["answer"]))),
                **({"marks": fork_marks(pieces[i], ro.texts[i], p["branches"])} if p.get("branches") else {}),
            }
        )
    return rollouts


def heatmap_rollouts_main(cfg: Config, args=None) -> Path:
    """``python -m arca heatmap-rollouts``: write the heat map's scored rollouts (JSONL) to
    ``args.out`` (the rule's declared output; by hand, default ``arca.paths``' ``analysis/heatmap_rollouts.jsonl``)."""
    out = getattr(args, "out", None)
    path = Path(out) if out else paths_of(cfg).heatmap_rollouts
    rows = heatmap_rollouts(cfg)
    write_jsonl(path, rows)
    log.info("wrote %d scored rollouts of run %s to %s", len(rows), heatmap_run(cfg), path)
    return path
