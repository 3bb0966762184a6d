"""Where the time goes: the two decoders side by side, FLOPs of each part of a step, and the
machine's measured matmul throughput."""

from __future__ import annotations

import logging
import statistics
import time

import torch

from arca.bench.common import median, ratio, top_rank
from arca.config import Config
from arca.paths import paths_of
from arca.sampling import Sampling

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- sampling: lean vs generate
def compare_decoders(cfg: Config, device: torch.device, step_problems: list[list[dict]], reps: int) -> dict:
    """The step's sampling with ``rollout.decoder`` lean and generate on one fresh policy, interleaved.

    One untimed round, then ``reps`` rounds; the decoder that goes first alternates. Both get the
    same prompts and seed in a round, so their tokens should be identical (``identical``).
    """
    from arca.models import load_policy
    from arca.prompts import prompt_format
    from arca.rollout import TransformersGenerator

    torch.manual_seed(cfg.train.seed)
    model, tok = load_policy(cfg)
    r = cfg.rollout
    gens = {
        d: TransformersGenerator(model, tok, r.batch_size, cfg.data.max_prompt_tokens, r.completion_mask, d)
        for d in ("generate", "lean")
    }
    seconds: dict[str, list[float]] = {d: [] for d in gens}
    tokens: list[float] = []
    identical = True
    fmt = prompt_format(cfg, tok)
    for i in range(reps + 1):
        prompts = [fmt(p["problem"]) for p in step_problems[i]]
        out = {}
        for d in ("generate", "lean") if i % 2 else ("lean", "generate"):
            t0 = time.perf_counter()
            out[d] = gens[d].generate(prompts, Sampling.from_rollout(r, seed=cfg.train.seed + i))
            if i > 0:
                seconds[d].append(time.perf_counter() - t0)
        identical &= torch.equal(out["generate"].completion_ids, out["lean"].completion_ids)
        if i > 0:
            tokens.append(float(out["lean"].completion_mask.sum()))
    med = {d: median(v) for d, v in seconds.items()}
    tok_med = median(tokens)
    return {
        "seconds": med,
        "tokens_per_second": {d: tok_med / v for d, v in med.items()},
        "speedup": ratio(med["generate"], med["lean"]),
        "identical": bool(identical),
        "reps": reps,
        "raw": seconds,
    }


# ----------------------------------------------------------------------------- FLOPs and the hardware
def matmul_gflops(device: torch.device, m: int, k: int, n: int, reps: int = 5) -> float:
    """Measured float32 GFLOP/s of an [m, k] x [k, n] matmul on ``device`` (best of ``reps`` timed runs)."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    best = float("inf")
    for i in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0:  # the first run warms up
            best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def _token_flops(mc, rank: int, targets: list[str]) -> dict[str, float]:
    """Per-token FLOPs of a Llama/Qwen3 config's parts, the terms of ``step_flops``.

    base / lora: every layer's projections; first_in: the first layer's q/k/v input gradient,
    which backward skips (the embeddings are frozen); per_key: attention per query and key slot;
    head: the LM head; dead / dead_lora: the last layer's work a cache-only position skips (all
    but k_proj and v_proj).
    """
    hd = getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads
    h, i, layers = mc.hidden_size, mc.intermediate_size, mc.num_hidden_layers
    shapes = {
        "q_proj": (h, mc.num_attention_heads * hd),
        "k_proj": (h, mc.num_key_value_heads * hd),
        "v_proj": (h, mc.num_key_value_heads * hd),
        "o_proj": (mc.num_attention_heads * hd, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    live = ("k_proj", "v_proj")
    return {
        "base": 2 * layers * sum(a * b for a, b in shapes.values()),
        "lora": 2 * layers * sum(rank * (a + b) for name, (a, b) in shapes.items() if name in targets),
        "first_in": 2
        * sum(
            a * b + (rank * a if name in targets else 0)
            for name, (a, b) in shapes.items()
            if name in ("q_proj", "k_proj", "v_proj")
        ),
        "per_key": 4 * layers * mc.num_attention_heads * hd,
        "head": 2 * h * mc.vocab_size,
        "dead": 2 * sum(a * b for name, (a, b) in shapes.items() if name not in live),
        "dead_lora": 2 * sum(rank * (a + b) for name, (a, b) in shapes.items() if name in targets and name not in live),
    }


def step_flops(
    mc,
    rank: int,
    targets: list[str],
    n: int,
    u: int,
    p: int,
    t: int,
    q0: int,
    grad_q0: int = 0,
    sampling_lora: bool = True,
    ref_exact: bool = True,
) -> dict[str, float]:
    """Arithmetic of one step in FLOPs (2 per multiply-add) for a Llama/Qwen3 config ``mc``.

    ``n`` completions of ``t`` tokens after prompts ``p`` tokens wide (s = p + t - 1 positions per
    sequence), ``u`` distinct prompts, the reference pass sharing the first ``q0`` positions per
    prompt and the gradient pass the first ``grad_q0`` (0: the full pass per row; with
    ``train.share_prompt`` p - 1, over their own slots; the reference pass's shared positions
    attend over all s slots when ``ref_exact``, else over their own). ``sampling_lora`` False: the adapter is
    folded into the weights while sampling (the lean decoder in float32), so no LoRA matmuls there.
    Matmuls: 2 * in * out per token and projection, LoRA 2 * rank * (in + out) on ``targets``, the
    LM head 2 * hidden * vocab where logits are taken. Attention: 4 * heads * head_dim per query and
    key (QK and PV) over every key slot, masked ones included, as the attention kernels compute them.
    Sampling (lean decoder): the prompt once per distinct prompt, then t - 1 steps of n rows.
    Forward: the gradient pass over its positions, the head on the t completion positions.
    Backward: the input gradient of every matmul (the base weights are frozen) except the first
    layer's q/k/v inputs (the embeddings need none), the LoRA weight gradients, attention twice
    its forward. Reference: the adapter-off pass without LoRA and head (ARCA).
    """
    f = _token_flops(mc, rank, targets)
    base, lora, first_in, per_key, head = f["base"], f["lora"], f["first_in"], f["per_key"], f["head"]
    dead, dead_lora, layers = f["dead"], f["dead_lora"], mc.num_hidden_layers
    s = p + t - 1
    decode_keys = sum(p + j for j in range(1, t))  # keys of the t - 1 decode steps
    grad_positions = u * grad_q0 + n * (s - grad_q0)  # per distinct prompt, then per row
    attention = (u * grad_q0 * grad_q0 * (layers - 1) / layers + n * (s - grad_q0) * s) * per_key
    shared_dead = u * grad_q0 * (dead + dead_lora)
    ref_positions = u * q0 + n * (s - q0)
    ref_attention = (u * q0 * (s if ref_exact else q0) * (layers - 1) / layers + n * (s - q0) * s) * per_key
    sample_lora = lora if sampling_lora else 0
    return {
        "sampling": float(
            u * p * (base + sample_lora)
            + u * p * p * per_key
            + n * (t - 1) * (base + sample_lora)
            + n * decode_keys * per_key
            + (u + n * (t - 1)) * head
        ),
        "forward": float(grad_positions * (base + lora) - shared_dead + attention + n * t * head),
        "backward": float(
            grad_positions * (base + 2 * lora - first_in)
            - shared_dead
            - u * grad_q0 * dead_lora
            + 2 * attention
            + n * t * head
        ),
        "reference": float(ref_positions * base - u * q0 * dead + ref_attention),
    }


def _median_prompt_width(cfg: Config, step_problems: list[list[dict]]) -> int:
    """Median over steps of the widest prompt of the step, in tokens, in the config's prompt format."""
    from transformers import AutoTokenizer

    from arca.pretrain import finish_tokenizer
    from arca.prompts import prompt_format

    tok = finish_tokenizer(AutoTokenizer.from_pretrained(paths_of(cfg).base))
    fmt = prompt_format(cfg, tok)
    widths = [
        max(len(tok(fmt(q["problem"]), add_special_tokens=False)["input_ids"]) for q in probs)
        for probs in step_problems
    ]
    return int(statistics.median(widths))


def _rates(flops: float, seconds: float | None, best: float) -> dict:
    """One part's GFLOP, seconds, GFLOP/s and fraction of the best matmul rate (None where not timed)."""
    rate = flops / seconds / 1e9 if seconds else None
    return {
        "gflop": flops / 1e9,
        "seconds": seconds,
        "gflops_per_s": rate,
        "fraction_of_matmul": rate / best if rate else None,
    }


def hardware_summary(
    cfg: Config,
    device: torch.device,
    medians: dict,
    step_problems: list[list[dict]],
    sampling_seconds: float | None = None,
) -> dict:
    """FLOPs of each part of a step, their measured seconds and the matmul throughput of this machine.

    Sampling is timed by ``sampling_seconds`` (the lean decoder alone) when given, else by uniform's
    generation time; forward and backward by uniform's steps, the reference pass by ARCA's.
    """
    from transformers import AutoConfig

    from arca.decode import shared_prefix_length

    mc = AutoConfig.from_pretrained(paths_of(cfg).base)
    n, t = cfg.train.prompts_per_step * cfg.rollout.k, cfg.rollout.max_new_tokens
    p = _median_prompt_width(cfg, step_problems)
    u = int(statistics.median(len({q["id"] for q in probs}) for probs in step_problems))
    share = cfg.train.share_prompt  # both passes share the prompt's p - 1 positions, over their own slots
    q0 = p - 1 if share else shared_prefix_length(p, p + t - 1)
    grad_q0 = p - 1 if share else 0
    folded = cfg.rollout.decoder == "lean" and cfg.model.dtype == "float32"
    targets = list(cfg.lora.target_modules)
    flops = step_flops(mc, top_rank(cfg), targets, n, u, p, t, q0, grad_q0, not folded, ref_exact=not share)
    uni, arca = medians.get("uniform", {}), medians.get("arca", {})
    seconds = {
        "sampling": sampling_seconds or uni.get("gen_seconds"),
        "forward": uni.get("forward_seconds"),
        "backward": uni.get("backward_seconds"),
        "reference": arca.get("reference_seconds"),
    }
    peak = {
        "model_shape": matmul_gflops(device, n * (p + t - 1), mc.hidden_size, mc.intermediate_size),
        "square_1024": matmul_gflops(device, 1024, 1024, 1024),
    }
    best = max(peak.values())
    parts = {name: _rates(f, seconds.get(name), best) for name, f in flops.items()}
    # The least ARCA's step can cost over uniform's on this machine: its one extra part, the
    # reference pass, at the best matmul rate measured here and with no other cost at all.
    uni_step = uni.get("step_seconds")
    floor = 1 + flops["reference"] / (best * 1e9) / uni_step if uni_step else None
    return {
        "arca_floor_x_uniform": floor,
        "prompt_tokens": p,
        "distinct_prompts": u,
        "completions": n,
        "completion_tokens": t,
        "shared_prefix": q0,
        "grad_shared_prefix": grad_q0,
        "matmul_gflops": peak,
        "parts": parts,
    }
