"""Evaluation of the base model or a trained adapter (``python -m arca evaluate --run R|base``).

Protocols (``eval.protocols``):
  - ``paper200``: the first ``eval.n_problems`` (200) MATH test problems: raw rows 0-199 of the
    test split in dataset order, none skipped; primary grader the paper's string match.
  - ``math500``: MATH-500, all 500 rows; primary grader Math-Verify.
A problem whose gold answer could not be recovered stays in (it scores 0 under both graders, as in
the author's evaluation); ``n_no_gold`` in the summary counts them, and a warning names the number.
  - ``generated``: the generated test split, first ``eval.n_problems``; primary grader string match.
Each protocol measures greedy accuracy and, from ``eval.pass_k`` samples at ``eval.temperature`` /
``eval.top_k`` / ``eval.top_p``, the unbiased pass@k and pass@1. Every completion is graded by BOTH graders.

Writes ``eval/<run>/samples.jsonl`` (one line per graded completion) and ``eval/<run>/summary.json``
(overall, per level, per subject, grader agreement), each renamed into place when complete.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import torch

from arca.config import Config, parse_run_id, training_hash
from arca.io import write_json, write_jsonl

log = logging.getLogger(__name__)

PRIMARY_GRADER = {"paper200": "paper", "generated": "paper", "math500": "math_verify"}
GRADERS = ("paper", "math_verify")
EVAL_SEED = 20260529  # fixed sampling seed: every model is evaluated on the same random stream


def protocol_problems(cfg: Config, protocol: str) -> list[dict]:
    """The problems of one protocol, in dataset order, none skipped (``arca.data.math``)."""
    from arca.data import read_records

    if protocol == "math500":
        return read_records(cfg.data_dir / "math500.jsonl")
    return read_records(cfg.data_dir / "test.jsonl")[: cfg.eval.n_problems]


def summarize(rows: list[dict], pass_k: int, primary: str) -> dict:
    """Greedy accuracy, pass@k, pass@1 and grader agreement; per level and subject for ``primary``."""
    from arca.report.stats import pass_at_k

    by_problem: dict[str, dict] = defaultdict(lambda: {"greedy": {}, "samples": []})
    for r in rows:
        p = by_problem[r["problem_id"]]
        p["level"], p["subject"], p["gold"] = r["level"], r["subject"], r["gold"]
        if r["mode"] == "greedy":
            p["greedy"] = r
        else:
            p["samples"].append(r)

    def measures(problems: list[dict], grader: str) -> tuple[float, float, float]:
        greedy = sum(bool(p["greedy"].get(grader)) for p in problems) / max(1, len(problems))
        pk, p1 = [], []
        for p in problems:
            n, c = len(p["samples"]), sum(bool(s[grader]) for s in p["samples"])
            if n:
                pk.append(pass_at_k(n, c, min(pass_k, n)))
                p1.append(c / n)
        mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
        return greedy, mean(pk), mean(p1)

    problems = list(by_problem.values())
    n_no_gold = sum(not p["gold"] for p in problems)  # kept in every measure, always wrong
    out = {"n_problems": len(problems), "n_no_gold": n_no_gold, "primary_grader": primary, "greedy": {},
           "pass_at_k": {"k": pass_k}, "pass_at_1": {}}
    for g in GRADERS:
        out["greedy"][g], out["pass_at_k"][g], out["pass_at_1"][g] = measures(problems, g)
    out["agreement"] = sum(r["paper"] == r["math_verify"] for r in rows) / max(1, len(rows))
    for key, field in (("by_level", "level"), ("by_subject", "subject")):
        groups: dict[str, list] = defaultdict(list)
        for p in problems:
            groups["unknown" if p[field] is None else str(p[field])].append(p)
        out[key] = {}
        for name in sorted(groups):
            greedy, pk, _ = measures(groups[name], primary)
            out[key][name] = {"n": len(groups[name]), "greedy": greedy, "pass_at_k": pk}
    return out


def evaluate_protocol(cfg: Config, generator, protocol: str, grader) -> list[dict]:
    """Greedy and sampled completions of one protocol, each graded by both graders."""
    from arca.prompts import build_prompt

    problems = protocol_problems(cfg, protocol)
    no_gold = sum(not p["answer"] for p in problems)
    if no_gold:
        log.warning("%s: %d of %d problems have no recoverable gold answer; they stay in and score 0",
                    protocol, no_gold, len(problems))
    prompts = [build_prompt(p["problem"]) for p in problems]
    e = cfg.eval
    greedy = generator.generate(prompts, 1, 1.0, 1.0, e.max_new_tokens, greedy=True)
    sampled = generator.generate(prompts, e.pass_k, e.temperature, e.top_p, e.max_new_tokens, seed=EVAL_SEED,
                                 top_k=e.top_k)
    items = [(p, "greedy", 0, t) for p, t in zip(problems, greedy.texts)]
    items += [(problems[i // e.pass_k], "sample", i % e.pass_k, t) for i, t in enumerate(sampled.texts)]
    verdicts = grader([it[0]["answer"] for it in items], [it[3] for it in items])
    return [
        {"protocol": protocol, "problem_id": p["id"], "level": p["level"], "subject": p["subject"], "mode": mode,
         "sample": k, "completion": text, "answer": v["answer"], "gold": p["answer"], "paper": bool(v["paper"]),
         "math_verify": bool(v["math_verify"])}
        for (p, mode, k, text), v in zip(items, verdicts)
    ]


def evaluate_main(cfg: Config, args) -> None:
    """CLI step: evaluate ``args.run`` (a run id of the sweep, or ``base``)."""
    from arca.grading import grade_both
    from arca.models import count_trainable, load_base_model, load_policy, resolve_device
    from arca.rollout import make_generator

    run = args.run
    if run == "base":
        run_cfg, identity = cfg, {"run": "base", "label": "base", "method": "base", "rank": None, "seed": None}
        model, tok = load_base_model(cfg)
        trainable = None
    else:
        run_cfg = cfg.for_run(run)
        label, rank, seed = parse_run_id(run)
        identity = {"run": run, "label": label, "method": run_cfg.credit.method, "rank": rank, "seed": seed}
        adapter = cfg.run_dir(run) / "adapter"
        if not adapter.is_dir():
            raise FileNotFoundError(f"no trained adapter at {adapter}; run `python -m arca train --run {run}` first")
        model, tok = load_policy(run_cfg, adapter_dir=adapter)
        trainable = count_trainable(model)
    if resolve_device(cfg.device).type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    generator = make_generator(run_cfg, model, tok)

    def grader(golds, completions):
        return grade_both(golds, completions, timeout=cfg.eval.grader_timeout, workers=cfg.eval.grader_workers)

    rows, protocols = [], {}
    for protocol in cfg.eval.protocols:
        prows = evaluate_protocol(cfg, generator, protocol, grader)
        protocols[protocol] = summarize(prows, cfg.eval.pass_k, PRIMARY_GRADER[protocol])
        rows += prows
        s = protocols[protocol]
        log.info("%s %s: greedy %.3f pass@%d %.3f (primary grader %s)", run, protocol,
                 s["greedy"][s["primary_grader"]], cfg.eval.pass_k, s["pass_at_k"][s["primary_grader"]], s["primary_grader"])
    out = Path(cfg.eval_dir(run))
    write_jsonl(out / "samples.jsonl", rows)
    write_json(out / "summary.json", {**identity, "trainable_params": trainable,
                                      "config_hash": training_hash(run_cfg), "protocols": protocols})
