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
(overall, per level, per subject, grader agreement, and a run's credit precision on the probe of
``arca.probe``), each renamed into place when complete (paths: ``arca.paths.EvalPaths``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch

from arca import grading, mc_values
from arca.backends import make_generator
from arca.cards import check_adapter_hash
from arca.config import BASE, Config, MissingInputError, for_run, run_identity, training_hash
from arca.data import read_records
from arca.grading import grade_both, math_verify_failures
from arca.io import read_jsonl, write_json, write_jsonl
from arca.labels import align
from arca.models import count_trainable, load_base_model, load_policy, resolve_device
from arca.paths import paths_of
from arca.probe import probe_precision, probe_problems, values_by_row
from arca.prompts import prompt_format
from arca.sampling import Sampling
from arca.stats import pass_at_k

log = logging.getLogger(__name__)

PRIMARY_GRADER = {"paper200": "paper", "generated": "paper", "math500": "math_verify"}
GRADERS = ("paper", "math_verify")
EVAL_SEED = 20260529  # fixed sampling seed: every model is evaluated on the same random stream


def fork_summary(rows: list[dict], problems: list[dict]) -> dict:
    """How the model handles the planted forks, from its graded completions (empty without forks).

    ``correct_branch``: share of aligned completions of forked problems that take the correct
    branch; ``execution``: share of aligned completions whose answer is the one their own branch
    reaches (the arithmetic given the decision), also split by the branch taken; ``labeled``:
    share of completions that align with a branch at all.
    """
    by_id = {p["id"]: p for p in problems}
    if not any(p.get("branches") for p in problems):
        return {}
    out = {}
    for mode in ("greedy", "sample"):
        n = labeled = forked = on_correct = 0
        exe = {True: [0, 0], False: [0, 0]}  # branch correct -> [executed right, aligned]
        for r in rows:
            if r["mode"] != mode:
                continue
            branches = by_id[r["problem_id"]].get("branches") or []
            n += 1
            a = align(r["completion"], branches)
            if a is None:
                continue
            labeled += 1
            if any(b["decisive"] for b in branches):
                forked += 1
                on_correct += a.correct
            exe[a.correct][1] += 1
            exe[a.correct][0] += a.answer is not None and bool(grading.grade_paper(r["completion"], a.answer))
        ratio = lambda x, y: x / y if y else None  # noqa: E731
        out[mode] = {
            "n": n,
            "labeled": ratio(labeled, n),
            "correct_branch": ratio(on_correct, forked),
            "execution": ratio(exe[True][0] + exe[False][0], exe[True][1] + exe[False][1]),
            "execution_correct_branch": ratio(*exe[True]),
            "execution_bug_branch": ratio(*exe[False]),
        }
    return out


def protocol_problems(cfg: Config, protocol: str) -> list[dict]:
    """The problems of one protocol, in dataset order, none skipped (``arca.data.math``)."""
    data = paths_of(cfg).data
    if protocol == "math500":
        return read_records(data.math500)
    return read_records(data.test)[: cfg.eval.n_problems]


def summarize(rows: list[dict], pass_k: int, primary: str) -> dict:
    """Greedy accuracy, pass@k, pass@1 and grader agreement; per level and subject for ``primary``."""
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
    out = {
        "n_problems": len(problems),
        "n_no_gold": n_no_gold,
        "primary_grader": primary,
        "greedy": {},
        "pass_at_k": {"k": pass_k},
        "pass_at_1": {},
    }
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


def evaluate_protocol(cfg: Config, generator, protocol: str, grader, name: str = "") -> list[dict]:
    """Greedy and sampled completions of one protocol, each graded by both graders.

    Progress bars (completions done, rate, ETA) go to stderr, i.e. to the job's log.
    """
    problems = protocol_problems(cfg, protocol)
    no_gold = sum(not p["answer"] for p in problems)
    if no_gold:
        log.warning(
            "%s: %d of %d problems have no recoverable gold answer; they stay in and score 0",
            protocol,
            no_gold,
            len(problems),
        )
    fmt = prompt_format(cfg, generator.tokenizer)
    prompts = [fmt(p["problem"]) for p in problems]
    e = cfg.eval
    label = f"{name} {protocol}".strip()
    greedy = generator.generate(prompts, Sampling.greedy_decoding(e.max_new_tokens), f"{label} greedy")
    sampled = generator.generate(prompts, Sampling.from_eval(e, e.pass_k, EVAL_SEED), f"{label} {e.pass_k} samples")
    log.info("%s: grading %d completions", label, len(prompts) * (1 + e.pass_k))
    items = [(p, "greedy", 0, t) for p, t in zip(problems, greedy.texts)]
    items += [(problems[i // e.pass_k], "sample", i % e.pass_k, t) for i, t in enumerate(sampled.texts)]
    verdicts = grader([it[0]["answer"] for it in items], [it[3] for it in items])
    return [
        {
            "protocol": protocol,
            "problem_id": p["id"],
            "level": p["level"],
            "subject": p["subject"],
            "mode": mode,
            "sample": k,
            "completion": text,
            "answer": v["answer"],
            "gold": p["answer"],
            "paper": bool(v["paper"]),
            "math_verify": bool(v["math_verify"]),
        }
        for (p, mode, k, text), v in zip(items, verdicts)
    ]


def protocol_summary(cfg: Config, generator, protocol: str, grader, name: str = "") -> tuple[list[dict], dict]:
    """The graded rows of one protocol and their summary, with the Math-Verify items that timed
    out or failed (scored False, so a non-zero count qualifies its numbers)."""
    before = math_verify_failures(cfg.eval.grader_workers)
    rows = evaluate_protocol(cfg, generator, protocol, grader, name=name)
    after = math_verify_failures(cfg.eval.grader_workers)
    summary = summarize(rows, cfg.eval.pass_k, PRIMARY_GRADER[protocol])
    problems = protocol_problems(cfg, protocol)
    summary["forks"] = fork_summary(rows, problems)
    if protocol != "math500" and len(problems) < cfg.eval.n_problems:
        log.warning(
            "%s: the test split holds %d problems, fewer than eval.n_problems = %d; all of them are evaluated",
            protocol,
            len(problems),
            cfg.eval.n_problems,
        )
    failures = summary["math_verify_failures"] = {k: after[k] - before[k] for k in after}
    if any(failures.values()):
        log.warning(
            "%s %s: Math-Verify timed out on %d and failed on %d completions; they score False",
            name,
            protocol,
            failures["timeouts"],
            failures["errors"],
        )
    return rows, summary


def load_target(cfg: Config, run: str) -> tuple[Config, dict, Any, Any, int | None]:
    """The config, identity, model and tokenizer of ``run`` (a run id, or ``base``), and its
    trainable parameter count (None for the base model)."""
    if run == BASE:
        identity = run_identity(BASE)
        model, tok = load_base_model(cfg)
        return cfg, identity, model, tok, None
    run_cfg = for_run(cfg, run)
    identity = run_identity(run, run_cfg.credit.method)
    adapter = paths_of(cfg).run(run).adapter
    if not adapter.is_dir():
        raise MissingInputError(f"no trained adapter at {adapter}; run `python -m arca train --run {run}` first")
    check_adapter_hash(adapter, run, training_hash(run_cfg))
    model, tok = load_policy(run_cfg, adapter_dir=adapter)
    return run_cfg, identity, model, tok, count_trainable(model)


def final_mc(cfg: Config, seed: int | None) -> bool:
    """Whether a run of ``seed`` gets Monte Carlo values under its own final model: one of the
    sweep's first ``eval.mc_final_seeds`` seeds, with the probe and Monte Carlo values on."""
    e = cfg.eval
    on = e.mc_problems > 0 and e.probe_problems > 0
    return on and seed is not None and seed in cfg.sweep.seeds[: e.mc_final_seeds]


def evaluate_main(cfg: Config, args) -> None:
    """CLI step: evaluate each of ``args.run`` (run ids of the sweep, or ``base``) in turn, in one
    process (the rule hands it every seed of a cell, so the libraries load once)."""
    runs = [args.run] if isinstance(args.run, str) else list(args.run)
    for run in runs:
        evaluate_one(cfg, run)


def evaluate_one(cfg: Config, run: str) -> None:
    """Evaluate one target (a run id, or ``base``) and write its summary and samples."""
    run_cfg, identity, model, tok, trainable = load_target(cfg, run)
    if resolve_device(cfg.device).type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    generator = make_generator(run_cfg, model, tok, cfg.eval.batch_size)

    def grader(golds, completions):
        return grade_both(golds, completions, timeout=cfg.eval.grader_timeout, workers=cfg.eval.grader_workers)

    rows, protocols = [], {}
    for protocol in cfg.eval.protocols:
        prows, protocols[protocol] = protocol_summary(cfg, generator, protocol, grader, run)
        rows += prows
        s = protocols[protocol]
        log.info(
            "%s %s: greedy %.3f pass@%d %.3f (primary grader %s)",
            run,
            protocol,
            s["greedy"][s["primary_grader"]],
            cfg.eval.pass_k,
            s["pass_at_k"][s["primary_grader"]],
            s["primary_grader"],
        )
    precision, mc_final = {}, None
    if run != BASE and cfg.eval.probe_problems > 0:
        probe_rows = read_jsonl(paths_of(cfg).probe_rollouts)
        final_values = None
        if final_mc(cfg, identity["seed"]):  # the ground truth under this run's own final model too
            values, mc_final = mc_values.estimate(run_cfg, model, tok, mc_values.mc_rows(cfg, probe_rows))
            final_values = values_by_row(values)
            log.info("%s: Monte Carlo values under the final model: %s", run, mc_final)
        precision = probe_precision(run_cfg, model, tok, probe_rows, probe_problems(cfg), final_values)
    out = paths_of(cfg).eval(run)
    write_jsonl(out.samples, rows)
    write_json(
        out.summary,
        {
            **identity,
            "trainable_params": trainable,
            "config_hash": training_hash(run_cfg),
            "protocols": protocols,
            "credit_precision": precision,
            "mc_final": mc_final,
        },
    )
