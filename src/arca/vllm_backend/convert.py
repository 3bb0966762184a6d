"""The vLLM backend's plain functions: the transformers backend's settings, prompts and results in vLLM's shapes.

Sampling settings as ``vllm.SamplingParams`` keyword arguments, prompts as token-id requests,
vLLM's ``RequestOutput``s back into a ``Rollouts`` batch (an EOS put back where vLLM dropped it),
sampled log-probs and their finiteness check, the LoRA rank and the engine's sequence length. None of it needs vLLM
installed; ``arca.vllm_backend`` says why each rule is what it is.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from arca.config import NonFiniteError
from arca.rollout import Rollouts, completion_mask, pad_right
from arca.sampling import Sampling

# The ranks vLLM's LoRA kernels accept for ``max_lora_rank`` (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM supports that is >= ``rank`` (e.g. 4 -> 8, 64 -> 64)."""
    for r in VLLM_LORA_RANKS:
        if r >= rank:
            return r
    raise ValueError(f"key 'lora.rank' is {rank}, above the largest rank vLLM supports ({VLLM_LORA_RANKS[-1]})")


def sampling_params_kwargs(s: Sampling, stop_token_ids: Sequence[int] | None = None, logprobs: bool = False) -> dict:
    """Keyword arguments of ``vllm.SamplingParams`` equal to the transformers backend's settings ``s``.

    Sampling: temperature, top-k (``top_k`` > 0, else off: -1), top-p. Greedy: temperature 0 and ONE sample per prompt
    (every greedy sample is the same; ``parse_outputs`` repeats it ``s.n`` times, which also avoids
    vLLM versions that refuse n > 1 with greedy decoding). ``min_new_tokens`` > 0 becomes
    ``min_tokens`` (greedy or not, as transformers). ``logprobs`` asks for the log-probability of
    each sampled token (``logprobs=0``: no alternatives), read by ``sampled_logprobs`` and
    ``check_sampled_logprobs``.
    """
    kw: dict[str, Any] = dict(max_tokens=int(s.max_new_tokens), detokenize=False)
    if s.greedy:
        kw.update(n=1, temperature=0.0, top_p=1.0, top_k=-1)
    else:
        kw.update(
            n=int(s.n),
            temperature=float(s.temperature),
            top_p=float(s.top_p),
            top_k=int(s.top_k) if s.top_k > 0 else -1,
        )
    if s.min_new_tokens > 0:
        kw["min_tokens"] = int(s.min_new_tokens)
    if logprobs:
        kw["logprobs"] = 0
    if s.seed is not None:
        kw["seed"] = int(s.seed)
    if stop_token_ids:
        kw["stop_token_ids"] = sorted(int(t) for t in stop_token_ids)
    return kw


def build_requests(prompt_token_ids: list[list[int]]) -> list[dict]:
    """One vLLM ``TokensPrompt``-style dict per prompt: ``{"prompt_token_ids": [...]}``."""
    return [{"prompt_token_ids": [int(t) for t in ids]} for ids in prompt_token_ids]


def prompt_token_lists(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]]:
    """The token ids of each left-padded prompt row [M, P] without its padding (what vLLM is given)."""
    return [row[m.bool()].tolist() for row, m in zip(prompt_ids, prompt_mask)]


def decode_completions(tokenizer, comp: torch.Tensor, mask: torch.Tensor, eos_ids: set[int]) -> list[str]:
    """Texts of the masked completion tokens, EOS and special tokens dropped (as the transformers backend)."""
    texts = []
    for row, m in zip(comp, mask):
        toks = [int(t) for t, keep in zip(row, m) if keep > 0 and int(t) not in eos_ids]
        texts.append(tokenizer.decode(toks, skip_special_tokens=True))
    return texts


def completion_tokens(sample: Any, eos_ids: set[int]) -> list[int]:
    """Token ids of one vLLM ``CompletionOutput``, ending with the EOS id when it stopped on one.

    A sample with ``finish_reason == "stop"`` whose ``token_ids`` lack the stop token gets it
    appended: its ``stop_reason`` when that is one of ``eos_ids``, else the smallest EOS id (any EOS
    id gives the same mask). Samples cut at the length limit are left as they are.
    """
    ids = [int(t) for t in sample.token_ids]
    if getattr(sample, "finish_reason", None) == "stop" and eos_ids and (not ids or ids[-1] not in eos_ids):
        stop = getattr(sample, "stop_reason", None)
        ids.append(int(stop) if isinstance(stop, int) and stop in eos_ids else min(eos_ids))
    return ids


def sampled_logprobs(outputs: Sequence[Any], n: int, width: int) -> torch.Tensor:
    """vLLM's log-probability of every sampled token, [N, width] in the rows of ``parse_outputs``.

    ``outputs[i].outputs[j].logprobs[t]`` maps token ids to ``Logprob`` objects (the sampled token
    among them); positions past a sample's tokens, and an EOS that ``completion_tokens`` put back,
    are NaN.
    """
    rows = []
    for req in outputs:
        samples = list(req.outputs)
        for s in samples * n if len(samples) == 1 and n > 1 else samples:
            if s.logprobs is None:
                raise ValueError("vLLM returned no log-probs; pass logprobs=True to sampling_params_kwargs")
            row = torch.full((width,), float("nan"))
            values = _token_logprobs(s)
            row[: len(values)] = torch.tensor(values)
            rows.append(row)
    return torch.stack(rows) if rows else torch.empty(0, width)  # [N, width]


def check_sampled_logprobs(outputs: Sequence[Any]) -> None:
    """Raise ``NonFiniteError`` when a sampled token's log-probability is NaN or inf.

    vLLM exposes no logits; the log-probability it reports for each sampled token is the raw
    model's (vLLM's default ``logprobs_mode``), so a NaN or inf logit anywhere in a step's
    distribution makes it NaN. One float per sample is read: ``cumulative_logprob``, the sum over
    its tokens, is finite exactly when every term is (a sum of finite log-probabilities of a few
    thousand tokens cannot overflow). Only for a sample that fails are its tokens scanned, to name
    the first bad one.
    """
    for req in outputs:
        for s in req.outputs:
            total = getattr(s, "cumulative_logprob", None)
            if total is None:
                raise ValueError("vLLM returned no log-probs; pass logprobs=True to sampling_params_kwargs")
            if math.isfinite(total):
                continue
            token, value = next(
                ((t, v) for t, v in enumerate(_token_logprobs(s)) if not math.isfinite(v)), ("?", total)
            )
            raise NonFiniteError(
                f"sampling: non-finite logits from the model at completion token {token} "
                f"(vLLM's log-probability of the sampled token is {value})"
            )


def _token_logprobs(sample: Any) -> list[float]:
    """The log-probability of each sampled token of one ``CompletionOutput`` (logprobs requested)."""
    return [float(lp[int(tid)].logprob) for tid, lp in zip(sample.token_ids, sample.logprobs or [])]


def parse_outputs(
    outputs: Sequence[Any],
    n: int,
    eos_ids: set[int],
    pad_id: int,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    tokenizer,
    mask_rule: str = "author",
) -> Rollouts:
    """vLLM ``RequestOutput``s (one per prompt, in prompt order) -> a ``Rollouts`` batch.

    ``outputs[i].outputs[j].token_ids`` is sample j of prompt i; row ``i * n + j`` of the batch.
    ``prompt_ids`` / ``prompt_mask`` are per prompt ([M, P], left-padded) and are repeated n times.
    A request with a single output (greedy) is repeated n times. Completions are right-padded
    with ``pad_id``; the mask is ``arca.rollout.completion_mask`` under ``mask_rule``.
    """
    if len(outputs) != prompt_ids.shape[0]:
        raise ValueError(f"vLLM returned {len(outputs)} request outputs for {prompt_ids.shape[0]} prompts")
    rows: list[torch.Tensor] = []
    for i, req in enumerate(outputs):
        samples = list(req.outputs)
        if len(samples) == 1 and n > 1:
            samples = samples * n
        if len(samples) != n:
            raise ValueError(f"vLLM returned {len(samples)} completions for prompt {i}, expected {n}")
        rows.extend(torch.tensor(completion_tokens(s, eos_ids), dtype=torch.long) for s in samples)
    N = len(rows)
    comp = pad_right(rows, pad_id).long() if rows else torch.empty(0, 0, dtype=torch.long)  # [N, T]
    if comp.shape[1] == 0:  # nothing generated at all
        comp = torch.full((N, 1), pad_id, dtype=torch.long)
    lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)  # [N]
    # pad_id may equal an EOS id, so padding is excluded by length, not by value
    mask = completion_mask(comp, eos_ids, pad_id, lengths, rule=mask_rule)  # [N, T]
    p_ids = prompt_ids.repeat_interleave(n, dim=0)  # [N, P]
    p_mask = prompt_mask.repeat_interleave(n, dim=0)  # [N, P]
    return Rollouts(p_ids, p_mask, comp, mask, decode_completions(tokenizer, comp, mask, eos_ids))


def max_model_len(cfg, model=None) -> int:
    """Longest sequence the engine must hold: the prompt limit plus the longest generation asked for."""
    need = cfg.data.max_prompt_tokens + max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(need, int(limit)) if limit else need
