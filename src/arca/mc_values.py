"""Monte Carlo ground truth of token credit on the probe's fixed rollouts (``python -m arca mc-values``).

For a probe completion y with tokens y_1..y_L, V_t is the probability that the base model, continuing
from the prompt plus y_1..y_t, ends with a correct answer: the mean reward of M sampled
continuations (standard error sqrt(V(1-V)/M)). V_L is the completion's own reward. The token
advantage of y_t is A_t = V_t - V_{t-1}: how much writing that token changed the chance of success.
A token credit method is right where its weights follow |A_t|. The step writes V per row, and a
check of the first-error labels: how often the labelled first error of a failed completion is the
token of largest value drop. ``arca.probe.mc_agreement`` scores every method against it.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from arca import grading
from arca.backends import make_generator
from arca.config import Config
from arca.grading import gold_answer
from arca.io import read_jsonl, write_json, write_jsonl
from arca.labels import first_error, token_starts
from arca.models import load_base_model, resolve_device
from arca.paths import paths_of
from arca.probe import probe_problems
from arca.prompts import prompt_format
from arca.sampling import Sampling

log = logging.getLogger(__name__)

MC_SEED = 20260602  # the continuations' random stream: fixed, apart from the probe's own


def mc_rows(cfg: Config, rows: list[dict]) -> list[dict]:
    """The probe rows of the first ``eval.mc_problems`` probe problems (K rows each)."""
    return rows[: cfg.eval.mc_problems * cfg.rollout.k]


def token_texts(tokenizer, ids: list[int], mask: list[float]) -> list[str]:
    """The decoded text of each real (masked-in) completion token, in order."""
    n = sum(1 for m in mask if m > 0)
    return [tokenizer.decode([i]) for i in ids[:n]]


def sample_values(
    cfg: Config, generator, prompts: list[str], pieces: list[list[str]], golds: list[str]
) -> list[list[float]]:
    """V_0..V_{L-1} of every row (V at each proper prefix), from ``eval.mc_samples`` continuations.

    Prefixes of the same length t are sampled together, each with ``max_new_tokens - t`` new tokens
    left, so a continuation has the budget the original completion had from that point.
    """
    m, e = cfg.eval.mc_samples, cfg.eval
    values = [[math.nan] * len(p) for p in pieces]
    for t in range(max((len(p) for p in pieces), default=0)):
        idx = [i for i, p in enumerate(pieces) if len(p) > t]
        prefixes = ["".join(pieces[i][:t]) for i in idx]
        r = generator.generate(
            [prompts[i] + pre for i, pre in zip(idx, prefixes)],
            Sampling.from_eval(e, m, MC_SEED + t, max_new_tokens=max(1, e.max_new_tokens - t)),
        )
        for j, i in enumerate(idx):
            texts = r.texts[j * m : (j + 1) * m]
            values[i][t] = sum(grading.grade_paper(prefixes[j] + x, golds[i]) for x in texts) / m
    return values


def largest_drop_is_first_error(text: str, pieces: list[str], values: list[float], branches: list[dict]) -> bool | None:
    """Whether the token of largest V drop (V_{t-1} - V_t) holds the first-error label; None when
    the row has no such label (a success, or a problem without branches)."""
    err = first_error(text, branches) if branches else None
    if err is None or len(values) < 2:
        return None
    starts = token_starts(pieces)
    drops = [values[t] - values[t + 1] for t in range(len(values) - 1)]  # drop caused by token t
    worst = max(range(len(drops)), key=lambda t: drops[t])
    end = starts[worst] + len(pieces[worst])
    return starts[worst] <= err < end


def estimate(cfg: Config, model, tok, rows: list[dict]) -> tuple[list[dict], dict]:
    """V_0..V_L (and their standard errors) of the probe ``rows`` under ``model``, and a summary:
    the cost and the check of the first-error labels against the largest value drop."""
    problems = {p["id"]: p for p in probe_problems(cfg)}
    fmt = prompt_format(cfg, tok)
    pieces = [token_texts(tok, r["completion_ids"], r["mask"]) for r in rows]
    golds = [gold_answer(problems[r["problem_id"]]["answer"]) for r in rows]
    start = time.perf_counter()
    gen = make_generator(cfg, model, tok, cfg.eval.batch_size)
    sampled = sample_values(cfg, gen, [fmt(problems[r["problem_id"]]["problem"]) for r in rows], pieces, golds)
    seconds = time.perf_counter() - start
    out, checks = [], []
    for r, p, v in zip(rows, pieces, sampled):
        values = [*v, float(r["reward"])]  # V_0..V_L
        m = cfg.eval.mc_samples
        se = [math.sqrt(max(x * (1 - x), 0.0) / m) for x in v] + [0.0]
        hit = largest_drop_is_first_error(r["text"], p, values, problems[r["problem_id"]].get("branches") or [])
        if hit is not None:
            checks.append(hit)
        out.append({"problem_id": r["problem_id"], "sample": r["sample"], "values": values, "se": se})
    summary = {
        "rows": len(out),
        "samples_per_prefix": cfg.eval.mc_samples,
        "continuations": sum(len(p) for p in pieces) * cfg.eval.mc_samples,
        "seconds": seconds,
        "failed_rows_labelled": len(checks),
        "first_error_is_largest_drop": sum(checks) / len(checks) if checks else None,
        "mean_se": _mean([s for o in out for s in o["se"][:-1]]),
    }
    return out, summary


def mc_values_main(cfg: Config, args) -> None:
    """CLI step: V_t of the first ``eval.mc_problems`` problems' probe rollouts under the base model."""
    paths = paths_of(cfg)
    model, tok = load_base_model(cfg)
    if resolve_device(cfg.device).type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    out, summary = estimate(cfg, model, tok, mc_rows(cfg, read_jsonl(paths.probe_rollouts)))
    write_jsonl(args.out or paths.mc_values, out)
    write_json(paths.mc_summary, summary)
    log.info("mc-values: %s", summary)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
