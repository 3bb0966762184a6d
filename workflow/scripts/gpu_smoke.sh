#!/usr/bin/env bash
# GPU smoke test: a few GRPO steps of every credit method on the small pretrained model, offline,
# printing per-method step seconds, reward, Gini, EffN/T and peak memory (`python -m arca gpu-smoke`).
# Needs only torch, transformers, peft and this package (`pip install --no-deps -e .`).
# bf16 on a GPU, float32 on CPU. Extra arguments go to the step (e.g. --steps 5).
# ARCA_SMOKE_VLLM=1 runs it a second time with the vLLM rollout backend (needs the `gpu` extra).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then dtype=bfloat16; else dtype=float32; fi
"$PY" -m arca gpu-smoke --config configs/smoke.yaml --set device=auto --set model.dtype="$dtype" "$@"
if [ "${ARCA_SMOKE_VLLM:-0}" = 1 ]; then
  "$PY" -m arca gpu-smoke --config configs/smoke.yaml --set device=auto --set model.dtype="$dtype" --set rollout.backend=vllm "$@"
fi
