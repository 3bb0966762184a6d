"""The prompt, shared by training rollouts and evaluation.

docs/method.md ("Setup of the reported sweep") uses a raw-text prompt without a chat template::

    Solve this math problem step by step. Put your final answer in \\boxed{}.\\n\\nProblem: {problem}\\n

``build_prompt`` is that prompt. ``PromptFormat`` is what every step that samples calls: the same
prompt, optionally preceded by worked examples (``data.few_shot``) and wrapped in the tokenizer's
chat template (``model.chat_template``). Both are off by default (the paper's prompt); an
instruction-tuned model too small to find the answer format zero-shot (SmolLM2-135M) needs them.
Keeping it in one place guarantees that the policy is evaluated on exactly the text it was
trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arca.config import ConfigError, InputError, MissingInputError
from arca.data import read_records
from arca.paths import paths_of

PROMPT_TEMPLATE = "Solve this math problem step by step. Put your final answer in \\boxed{{}}.\n\nProblem: {problem}\n"


def build_prompt(problem: str) -> str:
    """Return the paper's prompt for ``problem`` (the problem text is inserted verbatim)."""
    if not isinstance(problem, str):
        raise TypeError(f"problem must be a str, got {type(problem).__name__}")
    # str.format on the template only: braces inside the problem (LaTeX) are never interpreted.
    return PROMPT_TEMPLATE.format(problem=problem)


@dataclass(frozen=True)
class PromptFormat:
    """``problem -> prompt text``: worked examples first, then the problem, as raw text or chat turns.

    Raw text: each example is ``build_prompt(problem) + solution`` followed by a blank line. Chat:
    each example is a user turn (``build_prompt(problem)``) answered by an assistant turn (the
    solution), and the problem's user turn ends with the template's generation prompt, so the model
    answers as the assistant and stops at the template's end-of-turn token.
    """

    shots: tuple[tuple[str, str], ...] = ()  # (problem, worked solution) pairs
    tokenizer: object | None = None  # set: render through tokenizer.apply_chat_template

    def __call__(self, problem: str) -> str:
        if self.tokenizer is None:
            return "".join(build_prompt(q) + a + "\n\n" for q, a in self.shots) + build_prompt(problem)
        turns = []
        for q, a in self.shots:
            turns += [{"role": "user", "content": build_prompt(q)}, {"role": "assistant", "content": a}]
        turns.append({"role": "user", "content": build_prompt(problem)})
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def read_shots(path: Path, n: int) -> tuple[tuple[str, str], ...]:
    """The ``n`` worked examples prepare-data wrote to ``path`` (``data/shots.jsonl``; none when n is 0)."""
    if n == 0:
        return ()
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"data.few_shot is {n} but {path} does not exist: rerun prepare-data")
    shots = read_records(path)
    if len(shots) != n:
        raise InputError(f"data.few_shot is {n} but {path} holds {len(shots)} examples: rerun prepare-data")
    return tuple((r["problem"], r["solution"]) for r in shots)


def prompt_format(cfg, tokenizer) -> PromptFormat:
    """The prompt format of ``cfg`` (``data.few_shot``, ``model.chat_template``) for ``tokenizer``."""
    chat = None
    if cfg.model.chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"key 'model.chat_template' is true but the tokenizer of {cfg.model.source} model "
                f"{cfg.model.name_or_path or cfg.model.gguf_package!r} has no chat template"
            )
        chat = tokenizer
    return PromptFormat(read_shots(paths_of(cfg).data.shots, cfg.data.few_shot), chat)
