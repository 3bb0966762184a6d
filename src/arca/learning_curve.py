"""The held-out learning curve of a training run: one point of greedy and sampled accuracy.

The training loop calls ``curve_point`` every ``eval.every`` steps on the first
``eval.curve_problems`` test problems, graded by the run's reward function.
"""

from __future__ import annotations

from typing import Callable

import torch

from arca.config import Config
from arca.grading import gold_answer
from arca.labels import outcome_means
from arca.prompts import prompt_format
from arca.sampling import Sampling

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
