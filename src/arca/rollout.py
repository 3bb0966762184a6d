"""Rollouts: one ``Generator`` interface, a Transformers backend (default, CPU and GPU) and a vLLM
backend (GPU extra, in ``arca.vllm_backend``).

The Transformers backend decodes with ``rollout.decoder``: ``lean`` (default; ``arca.decode``, the
same tokens as ``generate`` without its per-token overhead) or ``generate`` (``model.generate``).

A generator samples ``n`` completions per prompt and returns them as a ``Rollouts`` batch in
prompt-major order (the n samples of prompt i are rows i*n .. i*n+n-1): prompts left-padded,
completions right-padded, and the completion mask m of ``completion_mask`` under the rule
``rollout.completion_mask``. That one mask is what every consumer reads: the attention mask of
the scoring passes, the credit weights, the loss, Gini and EffN/T, the decoded texts.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from arca.config import Decoder, MaskRule
from arca.decode.sampling import check_scores
from arca.sampling import Sampling

log = logging.getLogger(__name__)


@dataclass
class Rollouts:
    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P] 1 on real prompt tokens
    completion_ids: torch.Tensor  # [N, T] right-padded with pad_token_id
    completion_mask: torch.Tensor  # [N, T] float, m_t of ``completion_mask`` (rule: rollout.completion_mask)
    texts: list[str]  # decoded completions (up to the first EOS, special tokens dropped)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, idx: slice | list[int]) -> "Rollouts":
        """Rows ``idx`` as a new batch (used for micro-batches)."""
        texts = self.texts[idx] if isinstance(idx, slice) else [self.texts[i] for i in idx]
        return Rollouts(
            self.prompt_ids[idx], self.prompt_mask[idx], self.completion_ids[idx], self.completion_mask[idx], texts
        )


class Generator(Protocol):
    tokenizer: Any  # the policy's tokenizer (the prompt format renders chat templates with it)

    def generate(self, prompts: list[str], sampling: Sampling, progress: str | None = None) -> Rollouts:
        """``sampling.n`` completions of each prompt (``arca.sampling``); ``progress``: label of a
        progress bar with ETA on stderr (None: no bar)."""
        ...


# Values of ``rollout.completion_mask``; the first is the paper's.
MASK_RULES = typing.get_args(MaskRule)  # ("author", "through_eos")
# Values of ``rollout.decoder`` (Transformers backend); the first is the default.
DECODERS = typing.get_args(Decoder)  # ("lean", "generate")


class FiniteScores:
    """A ``generate`` logits processor that raises ``NonFiniteError`` on non-finite logits."""

    def __init__(self):
        self.token = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        check_scores(scores, self.token)
        self.token += 1
        return scores


def completion_mask(
    completion_ids: torch.Tensor,
    eos_ids: set[int],
    pad_id: int | None,
    lengths: torch.Tensor | None = None,
    rule: str = "author",
) -> torch.Tensor:
    """The completion mask m [N, T] (float) of generated tokens y_1..y_T under ``rule``.

    ``author`` (the author's code, docs/method.md "Notation"): m_t = [y_t != pad] * [no EOS in y_1..y_{t-1}],
    i.e. ``token != pad``, then 0 from the position after the first EOS on. Where pad and EOS are
    the same token (Qwen3-1.7B-Base, SmolLM2) the EOS itself is 0: never scored, weighted or
    trained. Where they differ (the pretrained-here model: ``<pad>`` 0, ``<eos>`` 1) the EOS is 1,
    and a generated pad token is 0 wherever it occurs.
    ``through_eos``: m_t = [no EOS in y_1..y_{t-1}], every generated token up to and including the
    first EOS, whatever the pad id (the EOS is trained for every model).
    ``lengths`` [N], the generated length of each row, also sets the padding beyond it to 0 (for
    padding that cannot be told apart by value). A row without EOS keeps every generated token.
    """
    if rule not in MASK_RULES:
        raise ValueError(f"unknown completion-mask rule {rule!r} (known: {list(MASK_RULES)})")
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= completion_ids == e
    # number of EOS strictly before t; a token is kept while none has appeared yet
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()  # [N, T]
    mask = eos_before == 0  # [N, T]
    if rule == "author" and pad_id is not None:
        mask &= completion_ids != pad_id
    if lengths is not None:  # per-row generated length (other rows' padding)
        mask &= torch.arange(completion_ids.shape[1], device=completion_ids.device)[None, :] < lengths[:, None]
    return mask.float()


def pad_right(rows: list[torch.Tensor], pad_value: float | int) -> torch.Tensor:
    width = max((r.shape[-1] for r in rows), default=0)
    return (
        torch.stack([torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=pad_value) for r in rows])
        if rows
        else torch.empty(0, 0)
    )


def eos_token_ids(tokenizer, model=None) -> set[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return ids


def encode_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids and mask [N, P], left-padded (generation then continues every row at the same column),
    each prompt cut to its first ``max_prompt_tokens`` tokens, no special tokens added (the prompt
    format writes them). The tokenizer's own padding side is left as it was."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_prompt_tokens,
            add_special_tokens=False,
        )
    finally:
        tokenizer.padding_side = side
    return enc["input_ids"], enc["attention_mask"]


class TransformersGenerator:
    """Sampling with the model's weights in this process, in batches of ``batch_size`` completions.

    ``decoder`` ``lean`` runs ``arca.decode.LeanDecoder`` (KV cache preallocated, prompt run once
    per distinct prompt, no per-token framework overhead); ``generate`` calls ``model.generate``
    (KV cache on). Both give the same tokens for the same batches and seed. Sampling is
    temperature, then top-k (``top_k`` > 0; 0 = off), then top-p, every setting passed explicitly
    so that no generation config of the model adds its own (the vLLM backend applies the same
    three). Greedy ignores them.
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 64,
        max_prompt_tokens: int = 512,
        mask_rule: str = "author",
        decoder: str = "lean",
    ):
        if decoder not in DECODERS:
            raise ValueError(f"unknown rollout.decoder {decoder!r} (known: {list(DECODERS)})")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self.mask_rule = mask_rule
        self.decoder = decoder
        self.eos_ids = eos_token_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.lean = None
        if decoder == "lean":
            from arca.decode import LeanDecoder, UnsupportedModelError

            try:
                self.lean = LeanDecoder(model)
            except UnsupportedModelError as e:  # the same tokens either way; generate() covers every model
                log.warning("%s; using generate() instead", e)

    @torch.no_grad()
    def generate(self, prompts: list[str], sampling: Sampling, progress: str | None = None) -> Rollouts:
        """``sampling.n`` completions of each prompt; ``progress`` names a progress bar (completions
        done, rate, ETA) drawn on stderr."""
        from arca.io import progress_bar

        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        was_training = self.model.training
        self.model.eval()  # sampling in eval mode (no LoRA dropout), as in the author's code
        device = next(self.model.parameters()).device
        try:
            prompt_rows = [p for p in prompts for _ in range(sampling.n)]
            ids, am = encode_prompts(self.tokenizer, prompt_rows, self.max_prompt_tokens)  # [N, P]
            outs = []
            bar = progress_bar(ids.shape[0], progress, unit="completion") if progress else None
            for start in range(0, ids.shape[0], self.batch_size):
                b_ids = ids[start : start + self.batch_size].to(device)
                b_am = am[start : start + self.batch_size].to(device)
                outs.extend(self._decode_batch(b_ids, b_am, sampling).cpu())  # [b, T] each
                if bar is not None:
                    bar.update(b_ids.shape[0])
        finally:
            self.model.train(was_training)
            if bar is not None:
                bar.close()
        comp = pad_right(outs, self.pad_id).long()  # [N, T]
        if comp.shape[1] == 0:  # nothing generated at all
            comp = torch.full((ids.shape[0], 1), self.pad_id, dtype=torch.long)
        mask = completion_mask(comp, self.eos_ids, self.pad_id, rule=self.mask_rule)  # [N, T]
        return Rollouts(ids, am, comp, mask, self.decode(comp, mask))

    def _decode_batch(self, ids: torch.Tensor, am: torch.Tensor, s: Sampling) -> torch.Tensor:
        """Completion ids [b, T] of one batch of left-padded prompts [b, P], padded after each row's EOS."""
        if self.lean is not None:
            return self.lean.generate(ids, am, sorted(self.eos_ids), self.pad_id, s)
        # transformers reads top_k=0 as "no top-k filter"
        kwargs = (
            dict(do_sample=False)
            if s.greedy
            else dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        )
        if s.min_new_tokens > 0:
            kwargs["min_new_tokens"] = s.min_new_tokens
        out = self.model.generate(
            logits_processor=[FiniteScores()],  # reads the scores, changes nothing
            input_ids=ids,
            attention_mask=am,
            max_new_tokens=s.max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids),
            use_cache=True,
            **kwargs,
        )
        return out[:, ids.shape[1] :]  # the completion part of every row

    def decode(self, comp: torch.Tensor, mask: torch.Tensor) -> list[str]:
        texts = []
        for row, m in zip(comp.tolist(), mask.tolist()):  # Python lists: no tensor per element
            toks = [t for t, keep in zip(row, m) if keep > 0 and t not in self.eos_ids]
            texts.append(self.tokenizer.decode(toks, skip_special_tokens=True))
        return texts
