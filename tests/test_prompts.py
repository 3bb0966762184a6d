"""The prompt template is the paper's, byte for byte."""

import pytest

from arca.prompts import PROMPT_TEMPLATE, build_prompt


def test_exact_paper_prompt():
    expected = "Solve this math problem step by step. Put your final answer in \\boxed{}.\n\nProblem: What is 2+2?\n"
    assert build_prompt("What is 2+2?") == expected


def test_problem_inserted_verbatim_with_latex_braces():
    problem = r"Compute $\frac{1}{2} + {x}$ and {0} {problem}"
    prompt = build_prompt(problem)
    assert prompt.endswith("Problem: " + problem + "\n")
    assert prompt.count("\\boxed{}") == 1


def test_template_has_one_placeholder():
    assert PROMPT_TEMPLATE.count("{problem}") == 1


def test_non_str_rejected():
    with pytest.raises(TypeError):
        build_prompt(None)  # type: ignore[arg-type]
