"""Labels of the planted forks on sampled completions: which tokens decided the outcome.

Every record of the forked corpus (``arca.data.forks``) lists its canonical branches, each with
the character positions of its decisive fork tokens (where the correct and the buggy procedure
first differ) and of its harmless distractor fork tokens. A sampled completion is *aligned* with
a branch as follows:

1. L = the length of the longest common prefix of the completion with any branch; the
   candidates are the branches reaching L.
2. A candidate's labels are its fork positions inside the common prefix (position < L): the
   completion wrote exactly the branch's text up to and including those tokens.
3. The completion is aligned when every candidate gives the same labels, and (forked problems)
   every decisive fork token of the candidates lies inside the prefix, so the decision was taken
   in a recognizable way; an unforked problem needs L >= 1. Anything else (a slip before the
   decision, a third procedure, an ambiguous tie) gets no label, never a guessed one, and is
   counted.

The *first error* of a completion (what the first-error oracle credits) is where it leaves every
correct branch: the character at L_c = the longest common prefix with any correct branch. A
completion that writes a correct branch exactly has none; one that stops inside a correct branch
(a prefix of it) is blamed at its last character.

Character positions become token positions through each token's character span in the decoded
completion, so this works for the character-level tokenizer and for subword tokenizers alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from arca.diagnostics import credit_precision
from arca.grading import grade_paper


@dataclass(frozen=True)
class Alignment:
    correct: bool  # the branch's decisive choices are all the correct ones
    answer: str | None  # the answer the branch reaches (None when the candidates' answers differ)
    decisive: tuple[int, ...]  # character positions in the completion
    distractor: tuple[int, ...]
    bugs: tuple[str, ...] | None = None  # the decisive forks it takes wrongly (None: not recorded)


def _lcp(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def align(completion: str, branches: list[dict]) -> Alignment | None:
    """The labels of ``completion`` against its problem's ``branches``, or None when it cannot be aligned."""
    if not branches:
        return None
    lcps = [_lcp(completion, b["text"]) for b in branches]
    best = max(lcps)
    cands = [b for b, n in zip(branches, lcps) if n == best]
    labels = {
        (tuple(i for i in b["decisive"] if i < best), tuple(i for i in b["distractor"] if i < best)) for b in cands
    }
    if len(labels) != 1 or len({b["correct"] for b in cands}) != 1:
        return None
    decisive, distractor = labels.pop()
    forked = any(b["decisive"] for b in cands)
    if forked and any(i >= best for b in cands for i in b["decisive"]):
        return None  # the completion left every branch before (or at) its decisive token
    if not forked and best == 0:
        return None
    answers = {b["answer"] for b in cands}
    bugs = {tuple(b["bugs"]) if "bugs" in b else None for b in cands}
    return Alignment(
        cands[0]["correct"],
        answers.pop() if len(answers) == 1 else None,
        decisive,
        distractor,
        bugs.pop() if len(bugs) == 1 else None,
    )


def first_error(completion: str, branches: list[dict]) -> int | None:
    """Character position where ``completion`` leaves every correct branch; None when it is one.

    L_c = max over correct branches of the common prefix length; the error is at L_c, or at the
    last character when the completion stopped inside a correct branch (L_c = its length). None
    also when the problem has no branches or no correct one (nothing to compare with), and for
    an empty completion.
    """
    correct = [b["text"] for b in branches if b["correct"]]
    if not correct or not completion or completion in correct:
        return None
    lc = max(_lcp(completion, t) for t in correct)
    return min(lc, len(completion) - 1)


def token_starts(token_texts: list[str]) -> list[int]:
    """Character offset where each token starts in the concatenated text."""
    starts, pos = [], 0
    for t in token_texts:
        starts.append(pos)
        pos += len(t)
    return starts


def token_flags(token_texts: list[str], char_positions: tuple[int, ...] | list[int]) -> list[int]:
    """1 for each token whose character span holds one of ``char_positions``, else 0."""
    flags = [0] * len(token_texts)
    starts = token_starts(token_texts)
    for c in char_positions:
        for t, (s, piece) in enumerate(zip(starts, token_texts)):
            if s <= c < s + len(piece):
                flags[t] = 1
                break
    return flags


@dataclass
class TokenLabels:
    """Per-row token labels of a batch (lists, the caller makes tensors)."""

    decisive: list[list[int]]  # [N][T] 1 on decisive fork tokens
    distractor: list[list[int]]  # [N][T] 1 on distractor fork tokens
    aligned: list[bool]  # [N] the row got labels
    forked: list[bool]  # [N] the row's problem has a decisive fork
    correct_branch: list[bool | None]  # [N] the aligned branch is the correct one (None: unaligned)
    first_error: list[list[int]]  # [N][T] 1 on the token holding the row's first error (all 0: none)


def label_batch(token_texts: list[list[str]], texts: list[str], problems: list[dict], width: int) -> TokenLabels:
    """Labels for N completions (``problems[i]`` is row i's record); rows padded to ``width`` tokens.

    ``token_texts[i]`` are the decoded pieces of row i's real tokens (their concatenation is
    ``texts[i]``); records without ``branches`` (the clean corpus, MATH) give unaligned rows.
    """
    out = TokenLabels([], [], [], [], [], [])
    for pieces, text, prob in zip(token_texts, texts, problems):
        branches = prob.get("branches") or []
        a = align(text, branches)
        pad = [0] * (width - len(pieces))
        dec = token_flags(pieces, a.decisive) + pad if a else [0] * width
        dis = token_flags(pieces, a.distractor) + pad if a else [0] * width
        out.decisive.append(dec[:width])
        out.distractor.append(dis[:width])
        out.aligned.append(a is not None)
        out.forked.append(any(b["decisive"] for b in branches))
        out.correct_branch.append(a.correct if a else None)
        err = first_error(text, branches)
        out.first_error.append((token_flags(pieces, [err]) + pad)[:width] if err is not None else [0] * width)
    return out


# ----------------------------------------------------------------------------- labels of a batch of rollouts
def completion_pieces(tokenizer, r) -> list[list[str]]:
    """The decoded text of every real completion token of each row (special tokens decode to "").

    ``r`` is a batch of rollouts (``arca.rollout.Rollouts``: ``completion_ids`` [N, T],
    ``completion_mask`` [N, T], ``texts``).

    One token at a time, which is exact for the character-level tokenizer; where the pieces do not
    add up to the row's text (a subword tokenizer merging across tokens), each token's piece is
    taken as the growth of the decoded prefix instead.
    """
    out = []
    for ids, m, text in zip(r.completion_ids.tolist(), r.completion_mask.tolist(), r.texts):
        real = [i for i, keep in zip(ids, m) if keep > 0]
        pieces = [tokenizer.decode([i], skip_special_tokens=True) for i in real]
        if "".join(pieces) != text:
            prefixes = [tokenizer.decode(real[: t + 1], skip_special_tokens=True) for t in range(len(real))]
            pieces = [p[len(q) :] for p, q in zip(prefixes, [""] + prefixes[:-1])]
        out.append(pieces)
    return out


@dataclass
class BatchLabels:
    """Token labels of a batch of rollouts as tensors (rows without labels are all 0)."""

    decisive: torch.Tensor  # [N, T]
    distractor: torch.Tensor  # [N, T]
    aligned: torch.Tensor  # [N] bool
    forked: torch.Tensor  # [N] bool
    first_error: torch.Tensor  # [N, T] 1 on the token of each row's first error (arca.labels.first_error)

    def select(self, sl: slice) -> "BatchLabels":
        return BatchLabels(
            *(t[sl] for t in (self.decisive, self.distractor, self.aligned, self.forked, self.first_error))
        )


def rollout_labels(tokenizer, r, problems: list[dict], k: int) -> BatchLabels | None:
    """Labels of the planted forks for rollouts of ``problems`` (K rows each), or None without forks."""
    if not any(p.get("branches") for p in problems):
        return None
    rows = [p for p in problems for _ in range(k)]
    lab = label_batch(completion_pieces(tokenizer, r), r.texts, rows, r.completion_ids.shape[1])
    return BatchLabels(
        torch.tensor(lab.decisive, dtype=torch.float32),
        torch.tensor(lab.distractor, dtype=torch.float32),
        torch.tensor(lab.aligned),
        torch.tensor(lab.forked),
        torch.tensor(lab.first_error, dtype=torch.float32),
    )


def label_metrics(labels: BatchLabels | None, W: torch.Tensor, M: torch.Tensor, adv: torch.Tensor) -> dict:
    """Alignment rates and credit precision of a step's weights (empty without labels)."""
    if labels is None:
        return {}
    forked = labels.forked
    return {
        "labeled_frac": float(labels.aligned.float().mean()),
        "labeled_frac_forked": float(labels.aligned[forked].float().mean()) if forked.any() else None,
        **credit_precision(
            W, M, labels.decisive[:, : W.shape[1]], labels.distractor[:, : W.shape[1]], adv, labels.aligned
        ),
    }


# ----------------------------------------------------------------------------- outcomes
OUTCOMES = ("aligned", "decision", "execution", "collateral")


def problem_outcome(completion: str, record: dict, correct: bool) -> dict[str, float]:
    """The four outcome scores of one greedy completion of ``record`` (all NaN without branches), plus
    ``decision:<fork>`` for each named decision of an aligned completion."""
    branches = record.get("branches") or []
    out = dict.fromkeys(OUTCOMES, math.nan)
    if not branches:
        return out
    forked = any(b["decisive"] for b in branches)
    if not record.get("fork"):
        out["collateral"] = float(correct)
    a = align(completion, branches)
    out["aligned"] = float(a is not None)
    if a is not None:
        out["decision"] = float(a.correct) if forked else math.nan
        out["execution"] = float(a.answer is not None and bool(grade_paper(completion, a.answer)))
        if a.bugs is not None:  # each named decision on its own: 1 taken correctly, 0 taken wrongly
            for name in decision_names(branches):
                out[f"{DECISION_PREFIX}{name}"] = float(name not in a.bugs)
    return out


DECISION_PREFIX = "decision:"


def decision_names(branches: list[dict]) -> list[str]:
    """The problem's decisive forks by name: those some branch takes wrongly."""
    return sorted({name for b in branches for name in b.get("bugs", ())})


def outcome_means(texts: list[str], problems: list[dict], correct: list[int]) -> dict[str, float | None]:
    """The planted-fork outcomes of a set of completions (``problem_outcome``), as means
    over the problems each is defined on (None where none; empty without forks), so a method's
    spill-over onto the collateral problems shows along the curve."""
    if not any(p.get("branches") for p in problems):
        return {}
    scores = [problem_outcome(t, p, bool(ok)) for t, p, ok in zip(texts, problems, correct)]
    means = {}
    for key in OUTCOMES:
        seen = [sc[key] for sc in scores if not math.isnan(sc[key])]
        means[key] = sum(seen) / len(seen) if seen else None
    return means
