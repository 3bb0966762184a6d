"""TRL's ``GRPOTrainer`` on the same work as our step, timed step by step alternating with ours."""

from __future__ import annotations

import logging
import time

import torch

from arca.bench.common import PeakMemory
from arca.config import Config
from arca.paths import paths_of

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- TRL peer
def _trl_reward():
    from arca.grading import gold_answer, grade_paper

    def paper_reward(prompts, completions, answer, **kwargs) -> list[float]:
        return [float(grade_paper(c, gold_answer(a))) for c, a in zip(completions, answer)]

    return paper_reward


def _trl_dataset(step_problems: list[list[dict]], fmt):
    """The prompts of every step in order, one dataset row per prompt (prompt text by ``fmt``, gold answer)."""
    import datasets

    # shuffle off: TRL's step i takes dataset rows i*P .. i*P+P-1, the same prompts as our step i;
    # the text is already formatted (worked examples, chat template), so it goes to TRL as plain text
    rows = [{"prompt": fmt(p["problem"]), "answer": p["answer"]} for probs in step_problems for p in probs]
    return datasets.Dataset.from_list(rows)


def _grpo_args(cfg: Config, device: torch.device, total: int):
    """``GRPOConfig`` doing our step's work: P prompts x K completions of exactly L tokens, no KL, no logging."""
    from trl import GRPOConfig

    P, K, L = cfg.train.prompts_per_step, cfg.rollout.k, cfg.rollout.max_new_tokens
    return GRPOConfig(
        output_dir=str(paths_of(cfg).bench / "trl_out"),
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


def _step_timer(
    device: torch.device, rows: int, L: int, total: int, steps: int, between_blocks, timed: list[dict], held: dict
):
    """A ``TrainerCallback`` appending one timed row per TRL step to ``timed`` and calling ``between_blocks``.

    ``held["gen"]`` is the step's sampling seconds (added up by ``_time_generation``), reset after
    each step; ``held["trainer"]`` is the trainer, read for its completion lengths. ``rows``
    completions per step of up to ``L`` tokens.
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.mem = PeakMemory(device).__enter__()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            dt = time.perf_counter() - self.t0
            self.mem.__exit__(None, None, None)
            lengths = getattr(held["trainer"], "_metrics", {}).get("train", {}).get("completions/mean_length") or []
            tokens = rows * (float(lengths[-1]) if lengths else L)
            timed.append(
                {
                    "gen_seconds": held["gen"],
                    "update_seconds": dt - held["gen"],
                    "step_seconds": dt,
                    "tokens": tokens,
                    "tokens_per_second": tokens / dt,
                    "peak_mem_mb": self.mem.peak_mb,
                    "mem_start_mb": self.mem.start_mb,
                    "threads": torch.get_num_threads(),
                    "global_step": state.global_step,
                }
            )
            held["gen"] = 0.0
            done = state.global_step
            if done < total and (done - 1) % steps == 0:
                between_blocks((done - 1) // steps)

    return StepTimer()


def _time_generation(trainer, held: dict) -> None:
    """Wrap the sampling part of TRL's step so that its seconds add up in ``held["gen"]``."""
    inner = trainer._generate_single_turn

    def timed_generate(*a, **kw):
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            held["gen"] += time.perf_counter() - t

    trainer._generate_single_turn = timed_generate


def run_trl(
    cfg: Config, device: torch.device, step_problems: list[list[dict]], steps: int, blocks: int, between_blocks
) -> list[dict]:
    """``1 + blocks * steps`` TRL GRPO steps (the first is a warm-up, dropped); after the warm-up and
    after every block but the last, ``between_blocks(i)`` runs (our block i). Returns the timed steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from arca.models import peft_lora_config, torch_dtype
    from arca.pretrain import finish_tokenizer
    from arca.prompts import prompt_format

    total = 1 + blocks * steps
    P, K, L = cfg.train.prompts_per_step, cfg.rollout.k, cfg.rollout.max_new_tokens
    tok = finish_tokenizer(AutoTokenizer.from_pretrained(paths_of(cfg).base))
    ds = _trl_dataset(step_problems[:total], prompt_format(cfg, tok))
    torch.manual_seed(cfg.train.seed)
    model = AutoModelForCausalLM.from_pretrained(
        paths_of(cfg).base, dtype=torch_dtype(cfg.model.dtype), attn_implementation=cfg.model.attn_implementation
    )
    args = _grpo_args(cfg, device, total)
    timed: list[dict] = []
    held = {"gen": 0.0}
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[_trl_reward()],
        args=args,
        train_dataset=ds,
        processing_class=tok,
        peft_config=peft_lora_config(cfg.lora),
        callbacks=[_step_timer(device, P * K, L, total, steps, between_blocks, timed, held)],
    )
    held["trainer"] = trainer
    _time_generation(trainer, held)
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    trainer.train()
    return timed[1:]
