"""The Markdown tables of the benchmark summaries."""

from __future__ import annotations

import logging

from arca.bench.common import ratio

log = logging.getLogger(__name__)


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _methods_section(s: dict) -> list[str]:
    """The heading sentence and one row per method: seconds, rate, memory, passes, ratios to uniform."""
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
    return lines


def _update_split_section(s: dict) -> list[str]:
    """Where each method's update time goes: forward, backward, reference pass, optimizer."""
    lines = [
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
    return lines


def _sampling_section(s: dict) -> list[str]:
    """The lean decoder against ``generate`` on one step's sampling (empty when not measured)."""
    if not s.get("sampling"):
        return []
    st, d = s["settings"], s["sampling"]
    lines = [
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
            f"{_f(ratio(d['seconds']['generate'], d['seconds'][name]))} |"
        )
    return lines


def _hardware_section(s: dict) -> list[str]:
    """Each part of the step's arithmetic against this machine's matmul rate (empty when not measured)."""
    if not s.get("hardware"):
        return []
    hw = s["hardware"]
    mm = hw["matmul_gflops"]
    lines = [
        "",
        f"Arithmetic of one step (prompts {hw['prompt_tokens']} tokens wide, {hw['distinct_prompts']} distinct, "
        f"reference pass sharing the first {hw['shared_prefix']} positions, gradient pass the first "
        f"{hw.get('grad_shared_prefix', 0)}) against this machine's float32 "
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
    if hw.get("arca_floor_x_uniform"):
        lines += [
            "",
            f"ARCA's step can cost no less than **{_f(hw['arca_floor_x_uniform'])}x** uniform's here: its one "
            "extra part, the reference pass, at the best matmul rate and nothing else, over uniform's step.",
        ]
    return lines


def _trl_section(s: dict) -> list[str]:
    """Our uniform step against TRL's ``GRPOTrainer`` and the ratios (empty when TRL did not run)."""
    if not s.get("trl"):
        return []
    st, t = s["settings"], s["trl"]
    lines = [
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
    return lines + [
        "",
        f"ours / TRL, whole step: **{_f(t['ratio_vs_trl'])}** (generation {_f(t['gen_ratio_vs_trl'])}, "
        f"rest of the step {_f(t['update_ratio_vs_trl'])})",
    ]


def _length_section(s: dict) -> list[str]:
    """Uniform and arca step time and memory per completion length (empty when not measured)."""
    if not s.get("length_scaling"):
        return []
    lines = [
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
            f"{_f(ratio(a.get('step_seconds'), u.get('step_seconds')))} | "
            f"{_f(u.get('peak_mem_mb'), '{:.0f}')} | {_f(a.get('peak_mem_mb'), '{:.0f}')} |"
        )
    return lines


def format_table(s: dict) -> str:
    """The Markdown tables of a summary."""
    lines = [
        *_methods_section(s),
        *_update_split_section(s),
        *_sampling_section(s),
        *_hardware_section(s),
        *_trl_section(s),
        *_length_section(s),
        "",
        "Peak memory: CUDA max_memory_allocated, or on CPU the process's peak RSS during the step (it also "
        "holds the other models of the run); growth = peak minus the memory in use when the step began.",
    ]
    return "\n".join(lines) + "\n"


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
