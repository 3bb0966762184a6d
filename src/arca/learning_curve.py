"""The held-out learning curve of a training run: points of greedy and sampled accuracy.

The training loop calls ``heldout_point`` every ``eval.every`` steps on the first
``eval.curve_problems`` test problems, graded by the run's reward function, with the decisions'
log-probs on the probe rollouts beside them. The point at step 0 is the same in every run (the
adapter starts at B = 0, so the policy is the base model), so ``python -m arca curve-start``
computes it once for the whole sweep and each run copies it (``start_point``).
"""

from __future__ import annotations

import json
import logging
from typing import Callable

import torch

from arca.backends import make_generator
from arca.config import Config
from arca.config.sweep import curve_start_hash, shares_curve_start
from arca.data import read_records
from arca.grading import gold_answer, grade_paper
from arca.io import read_jsonl, write_json
from arca.labels import outcome_means
from arca.models import load_base_model, resolve_device
from arca.paths import paths_of
from arca.probe import decision_logprobs, probe_problems
from arca.prompts import prompt_format
from arca.sampling import Sampling

log = logging.getLogger(__name__)

CURVE_SEED = 20261203  # the learning curve's sampling seed, the same at every point and in every run


def curve_point(cfg: Config, generator, problems: list[dict], step: int, grade: Callable[[str, str], bool]) -> dict:
    """Held-out accuracy at one point of training: greedy and one sample at ``eval.temperature``.

    The global RNG is saved and restored around the sampling, so evaluating a curve leaves the
    training run's random stream untouched.
    """
    e = cfg.eval
    fmt = prompt_format(cfg, generator.tokenizer)
    prompts = [fmt(p["problem"]) for p in problems]
    golds = [gold_answer(p["answer"]) for p in problems]
    with torch.random.fork_rng(devices=[]):
        greedy = generator.generate(prompts, Sampling.greedy_decoding(e.max_new_tokens))
        sampled = generator.generate(prompts, Sampling.from_eval(e, 1, CURVE_SEED))
    g_ok = [int(grade(t, g)) for t, g in zip(greedy.texts, golds)]
    s_ok = [int(grade(t, g)) for t, g in zip(sampled.texts, golds)]
    n = max(1, len(problems))
    # per-problem verdicts (in the order of the test split) let the report pair runs problem by problem
    return {
        "step": step,
        "greedy": sum(g_ok) / n,
        "sampled": sum(s_ok) / n,
        "n": len(problems),
        "greedy_correct": g_ok,
        "sampled_correct": s_ok,
        **{f"greedy_{k}": v for k, v in outcome_means(greedy.texts, problems, g_ok).items()},
    }


def heldout_point(
    cfg: Config,
    generator,
    problems: list[dict],
    step: int,
    grade: Callable[[str, str], bool],
    probe_rows: list[dict],
    probe_set: list[dict],
) -> dict:
    """``curve_point`` plus, given probe rollouts, the decisions' log-probs on them (the effective step)."""
    point = curve_point(cfg, generator, problems, step, grade)
    if probe_rows:
        point.update(decision_logprobs(cfg, generator.model, generator.tokenizer, probe_rows, probe_set))
    return point


def curve_problems(cfg: Config) -> list[dict]:
    """The learning curve's problems: the first ``eval.curve_problems`` of the test split."""
    return read_records(paths_of(cfg).data.test)[: cfg.eval.curve_problems] if cfg.eval.every > 0 else []


def start_point(cfg: Config, grade: Callable[[str, str], bool], with_probe: bool) -> dict | None:
    """The shared step-0 point from ``curve-start``'s file, or None (then the run computes it).

    None unless the file exists, was made under the same settings (``curve_start_hash``), with
    the probe's log-probs exactly when the run has the probe (``with_probe``), and the run grades
    with the paper's grader (the file's verdicts are that grader's).
    """
    path = paths_of(cfg).curve_start
    if not shares_curve_start(cfg) or grade is not grade_paper or not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("fingerprint") != curve_start_hash(cfg) or saved.get("probe") != with_probe:
        log.warning("%s was made under other evaluation settings: the run computes its step-0 point", path)
        return None
    return saved["point"]


def curve_start_main(cfg: Config, args) -> None:
    """CLI step: the base model's held-out point (step 0 of every run's curve) into ``args.out``
    (the rule's declared output; by hand, default ``arca.paths``' ``eval/curve_start.json``)."""
    model, tok = load_base_model(cfg)
    if resolve_device(cfg.device).type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    probe_path = paths_of(cfg).probe_rollouts
    rows = read_jsonl(probe_path) if cfg.eval.probe_problems > 0 and probe_path.is_file() else []
    # the generator a training run builds (rollout.batch_size per batch), so the batches are the same
    point = heldout_point(
        cfg, make_generator(cfg, model, tok), curve_problems(cfg), 0, grade_paper, rows, probe_problems(cfg)
    )
    saved = {"fingerprint": curve_start_hash(cfg), "probe": bool(rows), "point": point}
    write_json(args.out or paths_of(cfg).curve_start, saved)
    log.info("curve start: greedy %.3f, sampled %.3f on %d problems", point["greedy"], point["sampled"], point["n"])
