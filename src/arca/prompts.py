"""The one prompt template, shared by training rollouts and evaluation.

docs/method.md ("Setup of the reported sweep") uses a raw-text prompt without a chat template::

    Solve this math problem step by step. Put your final answer in \\boxed{}.\\n\\nProblem: {problem}\\n

Keeping it in one place guarantees that the policy is evaluated on exactly the text it was
trained on.
"""

from __future__ import annotations

PROMPT_TEMPLATE = "Solve this math problem step by step. Put your final answer in \\boxed{{}}.\n\nProblem: {problem}\n"


def build_prompt(problem: str) -> str:
    """Return the paper's prompt for ``problem`` (the problem text is inserted verbatim)."""
    if not isinstance(problem, str):
        raise TypeError(f"problem must be a str, got {type(problem).__name__}")
    # str.format on the template only: braces inside the problem (LaTeX) are never interpreted.
    return PROMPT_TEMPLATE.format(problem=problem)
