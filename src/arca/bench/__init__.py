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

from arca.bench.main import bench_main  # noqa: F401  (the CLI step)
