"""Training-step benchmark (``python -m arca bench``): every paper credit method, and TRL's GRPOTrainer.

On the config's model and batch shape, with completions of forced length: each method's step
(interleaved round-robin), TRL's ``GRPOTrainer`` alternating with our ``uniform``, the step's
sampling with both decoders, where the time goes, and length scaling; ``--backends`` measures the
rollout backends' generation throughput instead. The protocol: docs/performance.md, "How the
bench measures". Writes ``results/<name>/bench/summary.{json,md}`` (``generation.{json,md}``).
"""

from arca.bench.main import bench_main  # noqa: F401  (the CLI step)
