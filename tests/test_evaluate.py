"""Evaluation protocols (arca.evaluate): which problems, in which order, and how a problem without a
gold answer is scored and counted."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from arca.config import load_config
from arca.data import prepare_data
from arca.evaluate import evaluate_protocol, protocol_problems, summarize
from arca.grading import grade_both
from arca.prompts import build_prompt
from arca.rollout import Rollouts

FIXTURES = Path(__file__).parent / "fixtures"


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class AnsweringGenerator:
    """Answers every prompt with a fixed completion (greedy and sampled alike)."""

    tokenizer = None  # the prompt format needs one only for a chat template

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def generate(self, prompts, sampling, progress=None) -> Rollouts:
        texts = [self.answers[p] for p in prompts for _ in range(sampling.n)]
        N = len(texts)
        one = torch.ones(N, 1, dtype=torch.long)
        return Rollouts(one, one, one, torch.ones(N, 1), texts)


def test_paper200_and_math500_keep_every_row_in_order_and_no_gold_scores_zero(tmp_path):
    test_rows = _lines(FIXTURES / "math_sample.jsonl")
    m500_rows = _lines(FIXTURES / "math500_sample.jsonl")
    # every completion below gives the original rows' answer in a box
    answers = {build_prompt(r["problem"]): rf"So \boxed{{{r['answer']}}}." for r in m500_rows}
    test_rows[1]["solution"] = test_rows[1]["solution"].replace("\\boxed{", "\\fbox{")  # no gold for the author
    test_rows[3]["solution"] = "We give up."
    test_rows[4]["level"] = "Level ?"
    m500_rows[2]["answer"], m500_rows[2]["solution"] = "", "No box."
    cfg = load_config(
        overrides=[
            f"paths.results={tmp_path}",
            "name=m",
            "data.source=math",
            f"data.train={FIXTURES / 'math_sample.jsonl'}",
            f"data.test={_write(tmp_path / 't.jsonl', test_rows)}",
            f"data.math500={_write(tmp_path / 'm.jsonl', m500_rows)}",
            "eval.protocols=[paper200, math500]",
            "eval.n_problems=6",
            "eval.pass_k=2",
        ]
    )
    prepare_data(cfg)

    paper = protocol_problems(cfg, "paper200")
    assert [p["id"] for p in paper] == [f"test/{i}" for i in range(6)]  # raw rows 0-5, none skipped
    assert [i for i, p in enumerate(paper) if not p["answer"]] == [1, 3] and paper[4]["level"] is None
    m500 = protocol_problems(cfg, "math500")
    assert [p["id"] for p in m500] == [r["unique_id"] for r in m500_rows]  # all of them

    def grader(golds, completions):
        return grade_both(golds, completions, timeout=5.0)

    gen = AnsweringGenerator(answers)
    rows = evaluate_protocol(cfg, gen, "paper200", grader)
    no_gold = {"test/1", "test/3"}
    for r in rows:  # the right answer, yet no gold: 0 under both graders
        assert r["paper"] is r["math_verify"] is (r["problem_id"] not in no_gold), r
    s = summarize(rows, cfg.eval.pass_k, "paper")
    assert s["n_problems"] == 6 and s["n_no_gold"] == 2
    assert s["greedy"]["paper"] == s["greedy"]["math_verify"] == 4 / 6
    assert s["by_level"]["unknown"]["n"] == 1

    s500 = summarize(evaluate_protocol(cfg, gen, "math500", grader), cfg.eval.pass_k, "math_verify")
    assert s500["n_problems"] == len(m500_rows) and s500["n_no_gold"] == 1
    assert s500["greedy"]["math_verify"] == (len(m500_rows) - 1) / len(m500_rows)


def test_summary_reports_math_verify_timeouts_and_errors(tmp_path, caplog):
    from collections import defaultdict

    from arca.evaluate import protocol_summary
    from arca.math_verify_pool import shared_grader

    cfg = load_config(overrides=[f"paths.results={tmp_path}", "data.n_train=20", "data.n_test=4", "eval.n_problems=9"])
    prepare_data(cfg)
    pool = shared_grader(cfg.eval.grader_workers)

    def grader(golds, completions):  # as if Math-Verify hung on three items and crashed on one
        pool.n_timeouts += 3
        pool.n_errors += 1
        return [{"answer": None, "paper": False, "math_verify": False} for _ in golds]

    gen = AnsweringGenerator(defaultdict(lambda: "The answer is \\boxed{1}."))
    with caplog.at_level("WARNING", logger="arca"):
        rows, summary = protocol_summary(cfg, gen, "generated", grader)
    assert summary["math_verify_failures"] == {"timeouts": 3, "errors": 1}
    assert "Math-Verify timed out on 3 and failed on 1" in caplog.text
    assert len(rows) == 4 * (1 + cfg.eval.pass_k)
    assert "holds 4 problems, fewer than eval.n_problems = 9" in caplog.text  # said, not silent
