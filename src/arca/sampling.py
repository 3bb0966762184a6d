"""``Sampling``: the settings of one ``generate`` call, as one frozen record every backend reads.

``n`` completions per prompt of at most ``max_new_tokens`` tokens (at least ``min_new_tokens``: EOS
held back until then), drawn at ``temperature`` after top-k (0 = off) and top-p, or by argmax when
``greedy``; ``seed`` seeds torch's global generator before the first draw (None: the stream as it is).
The constructors read the config's ``rollout`` and ``eval`` sections.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from arca.config import EvalConfig, RolloutConfig


@dataclass(frozen=True)
class Sampling:
    n: int  # completions per prompt (prompt-major in the returned batch)
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # keep the k most likely tokens before top-p; 0 = off
    greedy: bool = False  # argmax at every step; temperature, top-k and top-p are then ignored
    seed: int | None = None
    min_new_tokens: int = 0  # > 0 suppresses EOS until that many tokens exist (fixed-length benchmarks)

    @classmethod
    def greedy_decoding(cls, max_new_tokens: int) -> Sampling:
        """One argmax completion per prompt (the evaluation's greedy accuracy)."""
        return cls(1, max_new_tokens, greedy=True)

    @classmethod
    def from_rollout(cls, r: RolloutConfig, **changes) -> Sampling:
        """``rollout.k`` samples per prompt under the training rollout's settings; ``changes`` replace fields."""
        s = cls(r.k, r.max_new_tokens, r.temperature, r.top_p, r.top_k, min_new_tokens=r.min_new_tokens)
        return replace(s, **changes)

    @classmethod
    def from_eval(cls, e: EvalConfig, n: int, seed: int | None, **changes) -> Sampling:
        """``n`` samples per prompt under the evaluation's temperature, top-k, top-p and length, from ``seed``."""
        return replace(cls(n, e.max_new_tokens, e.temperature, e.top_p, e.top_k, seed=seed), **changes)
