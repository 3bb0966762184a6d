"""Builders the test modules share: tiny configs and data, the Snakemake runner, fork tasks, the
graders' pathological inputs, the rollout alphabet and a hand-made sweep of result files.

A test module imports what it needs from here, never from another test module.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from hypothesis import strategies as st

from arca.config import BASE, Config, deep_merge, from_dict, run_hash, run_identity, to_dict
from arca.data.forks import FAMILIES, SINGLE_DECISION
from arca.paths import paths_of
from arca.rollout import Rollouts
from arca.stats import pass_at_k

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = str(VENV_BIN / "snakemake") if (VENV_BIN / "snakemake").exists() else shutil.which("snakemake")


# ----------------------------------------------------------------------------- a tiny pretrained base and its data
TINY_PRETRAIN = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "num_kv_heads": 1,
    "intermediate_size": 64,
    "steps": 40,
    "batch_size": 8,
    "seq_len": 160,
    "lr": 1e-2,
    "warmup_steps": 4,
    "seed": 3,
}


def arithmetic_records(n: int, seed: int = 0) -> list[dict]:
    """Small two-operation problems with worked solutions, in the train.jsonl record schema."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 9)
        s1 = a + b
        ans = s1 - c
        rows.append(
            {
                "id": f"gen-{i}",
                "problem": f"{a}+{b}-{c}",
                "solution": f"{a}+{b}={s1}, {s1}-{c}={ans}. \\boxed{{{ans}}}",
                "answer": str(ans),
                "level": 1,
                "subject": "arithmetic",
            }
        )
    return rows


# What the tests' small configs set apart from the defaults (configs/default.yaml): no learning
# curve, credit-precision probe or Monte Carlo values, the clean corpus (no planted forks), 50
# steps at lr 5e-4 and the paper's five cells, so that a test of one step runs that step only.
SMALL = {
    "data": {"forks": {"p_bug": 0.0, "families": list(SINGLE_DECISION)}},
    "train": {"steps": 50, "lr": 5e-4},
    "eval": {"every": 0, "probe_problems": 0, "mc_problems": 0},
    "sweep": {
        "cells": [
            {"method": m, "ranks": r, "label": "", "overrides": {}, "compare": []}
            for m, r in (("uniform", [8]), ("surprisal", [8]), ("entropy_reduction", [8]), ("divergence", [8]))
        ]
        + [{"method": "arca", "ranks": [2, 8], "label": "", "overrides": {}, "compare": []}]
    },
}


def small_config_dict() -> dict:
    """``to_dict`` of the default config with ``SMALL`` merged over it."""
    return deep_merge(to_dict(Config()), SMALL)


def tiny_cfg(results: Path, name: str = "tiny", **model_overrides) -> Config:
    raw = small_config_dict()
    raw["name"] = name
    raw["device"] = "cpu"
    raw["paths"] = {"results": str(results), "cache": str(results / "cache")}
    raw["model"]["pretrain"].update(TINY_PRETRAIN)
    raw["model"].update(model_overrides)
    raw["lora"]["rank"] = 4
    raw["train"]["threads"] = 1
    return from_dict(raw, source="test")


def write_data(cfg: Config, n: int = 64) -> None:
    paths_of(cfg).data.root.mkdir(parents=True, exist_ok=True)
    with open(paths_of(cfg).data.root / "train.jsonl", "w", encoding="utf-8") as f:
        for row in arithmetic_records(n):
            f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------- a default config for one training step
def bench_cfg(method: str, prompts: int, micro: int, k: int = 2, **extra) -> Config:
    raw = small_config_dict()
    raw["device"] = "cpu"
    raw["credit"]["method"] = method
    raw["rollout"]["k"] = k
    raw["rollout"]["max_new_tokens"] = 5
    raw["train"]["prompts_per_step"] = prompts
    raw["train"]["micro_batch_prompts"] = micro
    for key, value in extra.items():
        section, name = key.split("__")
        raw[section][name] = value
    return from_dict(raw, source="test")


# ----------------------------------------------------------------------------- Snakemake
def snakemake_env(extra_path: Path | None = None) -> dict[str, str]:
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    if extra_path is not None:
        path = f"{extra_path}{os.pathsep}{path}"
    return {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_snakemake(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    # --nolock: dry runs must not collide with a real run in the same working directory.
    proc = subprocess.run(
        [SNAKEMAKE, *args], cwd=cwd, env=env or snakemake_env(), capture_output=True, text=True, timeout=600
    )
    proc.log = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


# ----------------------------------------------------------------------------- planted forks
def fork_task(family: str, seed: int = 0):
    return FAMILIES[family][0](random.Random(seed))


# ----------------------------------------------------------------------------- the graders' pathological inputs
TIMEOUT = 2.0  # short per-item limit so the pathological cases keep the suite fast


SLACK = 1.5  # kill + bookkeeping on a loaded 2-core machine


TOWER = r"\boxed{9^{9^{9^{9}}}}"


BIG_EXPR = "\\boxed{" + "+".join(["12345678"] * 11_200) + "}"  # ~100 kB


DEEP_TEXT = "{" * 5000 + "5" + "}" * 5000


DEEP_BOX = "\\boxed{" * 5000 + "5" + "}" * 5000


LATEX_TOKENS = [
    "\\boxed",
    "\\fbox",
    "\\boxedx",
    "{",
    "}",
    "\\{",
    "\\}",
    "\\",
    " ",
    "$",
    "\\frac",
    "\\dfrac",
    "\\left",
    "\\right",
    "\\text",
    "\\,",
    "\\!",
    "\\;",
    "^",
    "9",
    "1",
    "0.5",
    "x",
    "=",
    ".",
    ",",
    "(",
    "]",
    "\n",
    "\\sqrt",
    "\\infty",
    "\\pi",
    "%",
    "-",
]


latexish = st.one_of(
    st.lists(st.sampled_from(LATEX_TOKENS), max_size=60).map("".join),
    st.text(max_size=80),
)


# ----------------------------------------------------------------------------- the character tokenizer's alphabet
PAD0, EOS1 = 0, 1  # the character tokenizer's padding and end-of-sequence ids
ALPHABET = "0123456789+-*/=() abcdefghijklmnopqrstuvwxyz.,\n\\{}:"


# ----------------------------------------------------------------------------- a hand-made sweep of result files
PROBLEMS = [f"p{j}" for j in range(6)]


N_SAMPLES, K = 4, 2


SEEDS = [1, 2]


# (label, method, rank): per-seed greedy correctness, per-problem correct-sample counts, and the
# per-step gini / eff_ratio / reward of seed 1 (seed 2 adds 0.02 to each).
SPEC = {
    ("uniform", "uniform", 8): ([1, 1, 1, 0, 0, 0], [4, 2, 1, 0, 0, 3], (0.0, 1.0, 0.30)),
    ("surprisal", "surprisal", 8): ([1, 0, 0, 0, 0, 0], [3, 1, 0, 0, 0, 1], (0.90, 0.08, 0.20)),
    ("arca", "arca", 2): ([1, 1, 0, 0, 0, 0], [4, 1, 1, 0, 1, 2], (0.35, 0.50, 0.25)),
    ("arca", "arca", 8): ([1, 1, 1, 1, 0, 0], [4, 3, 2, 1, 0, 4], (0.45, 0.40, 0.35)),
    ("arca_permuted", "arca_permuted", 8): ([0, 1, 1, 0, 0, 1], [2, 2, 2, 2, 2, 2], (0.45, 0.40, 0.28)),
}


BASE_GREEDY, BASE_COUNTS = [1, 0, 0, 0, 0, 0], [2, 0, 0, 0, 1, 0]


STEPS = 3


def greedy_of(spec_greedy, seed):
    # Seed 2 gets problem p3 right in addition (so seeds differ).
    g = list(spec_greedy)
    if seed == 2:
        g[3] = 1
    return g


def step_values(base, seed):
    return [base + 0.01 * step + (0.02 if seed == 2 else 0.0) for step in range(STEPS)]


def write_eval(eval_dir: Path, identity: dict, greedy, counts, trainable, config_hash=None):
    eval_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for pid, g, c in zip(PROBLEMS, greedy, counts):
        common = dict(protocol="generated", problem_id=pid, level=1 + int(pid[1:]) % 5, subject="arithmetic", gold="1")
        samples.append(
            {
                **common,
                "mode": "greedy",
                "sample": 0,
                "completion": "x <a&b>",
                "answer": "1" if g else "2",
                "paper": bool(g),
                "math_verify": bool(g),
            }
        )
        for s in range(N_SAMPLES):
            ok = s < c
            samples.append(
                {
                    **common,
                    "mode": "sample",
                    "sample": s,
                    "completion": "y",
                    "answer": None if not ok else "1",
                    "paper": ok,
                    "math_verify": ok,
                }
            )
    (eval_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    greedy_acc = float(np.mean(greedy))
    pak = float(np.mean([pass_at_k(N_SAMPLES, c, K) for c in counts]))
    summary = {
        **identity,
        "trainable_params": trainable,
        "config_hash": config_hash,
        "protocols": {
            "generated": {
                "n_problems": len(PROBLEMS),
                "primary_grader": "paper",
                "greedy": {"paper": greedy_acc, "math_verify": greedy_acc},
                "pass_at_k": {"k": K, "paper": pak, "math_verify": pak},
                "pass_at_1": {
                    "paper": float(np.mean(counts)) / N_SAMPLES,
                    "math_verify": float(np.mean(counts)) / N_SAMPLES,
                },
                "agreement": 1.0,
                "by_level": {"1": {"n": 2, "greedy": 0.5, "pass_at_k": 0.5}},
                "by_subject": {"arithmetic": {"n": 6, "greedy": greedy_acc, "pass_at_k": pak}},
            }
        },
    }
    (eval_dir / "summary.json").write_text(json.dumps(summary))


def make_sweep(root: Path):
    cfg = from_dict(
        deep_merge(
            SMALL,
            {
                "name": "tiny",
                "paths": {"results": str(root)},
                "eval": {"protocols": ["generated"], "pass_k": K},
                "sweep": {
                    "cells": [
                        {
                            "method": m,
                            "ranks": sorted({r for (lab, mm, r) in SPEC if lab == label}),
                            "label": label,
                            "compare": ["arca"] if label == "arca_permuted" else [],
                        }
                        for label, m in dict.fromkeys((lab, mm) for (lab, mm, _) in SPEC)
                    ],
                    "seeds": SEEDS,
                },
            },
        ),
        source="test",
    )
    for (label, method, rank), (greedy, counts, (gini, eff, reward)) in SPEC.items():
        for seed in SEEDS:
            run = f"{label}_r{rank}_s{seed}"
            run_dir = paths_of(cfg).run(run).root
            run_dir.mkdir(parents=True)
            is_arca = method.startswith("arca")
            lines = []
            for step, (g, e, r) in enumerate(
                zip(step_values(gini, seed), step_values(eff, seed), step_values(reward, seed)), 1
            ):
                lines.append(
                    {
                        "step": step,
                        **run_identity(run, method),
                        "loss": 0.1,
                        "reward_mean": r,
                        "reward_std": 0.4,
                        "lr": 1e-4,
                        "grad_norm": 0.5 + 0.4 * step,
                        "gen_seconds": 0.5,
                        "update_seconds": 0.2,
                        "step_seconds": 0.7,
                        "completion_len_mean": 20.0,
                        "surprisal_mean": 1.5,
                        "gini": g,
                        "eff_ratio": e,
                        "fallback_frac": 0.0,
                        "residual_mean": 0.3 if is_arca else None,
                        "residual_max": 0.9 if is_arca else None,
                    }
                )
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            (run_dir / "curve.jsonl").write_text("")  # eval.every 0: no learning curve
            conc = {"uniform": [0.25] * 4, "surprisal": [0.97, 0.01, 0.01, 0.01]}.get(method, [0.4, 0.3, 0.2, 0.1])
            weights = [conc, list(reversed(conc)), [1.0]]
            (run_dir / "final_weights.json").write_text(
                json.dumps({"run": run, "method": method, "step": STEPS, "weights": weights})
            )
            write_eval(
                paths_of(cfg).eval(run).root,
                run_identity(run, method),
                greedy_of(greedy, seed),
                counts,
                trainable=1000 * rank,
                config_hash=run_hash(cfg, run),
            )
    write_eval(
        paths_of(cfg).eval("base").root,
        run_identity(BASE),
        BASE_GREEDY,
        BASE_COUNTS,
        trainable=None,
    )
    return cfg


# ----------------------------------------------------------------------------- a tiny real causal LM (scoring tests)
VOCAB = 20
PAD = 0


def tiny_qwen3(vocab_size: int = VOCAB, seed: int = 0, attn: str = "sdpa"):
    """A 2-layer, 32-wide Qwen3 causal LM with random weights (pad 0, eos 1, bos 2), in train mode."""
    torch.manual_seed(seed)
    cfg = transformers.Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = attn
    return transformers.Qwen3ForCausalLM(cfg)


def tiny_model(seed=0, attn="sdpa"):
    model = tiny_qwen3(VOCAB, seed, attn)
    model.eval()
    return model


# (prompt, completion, number of real completion tokens)
ROWS = [
    ([5, 6, 7, 8, 9], [10, 11, 12, 1], 4),  # longest prompt, completion ends with EOS
    ([4, 3], [13, 14, 15, 16], 4),  # short prompt (3 left pads), full completion
    ([7, 8, 9], [17, 1, PAD, PAD], 2),  # EOS then padding
    ([11], [18, PAD, PAD, PAD], 1),  # one-token prompt, one-token completion
]


def make_rollouts(rows=ROWS) -> Rollouts:
    P = max(len(p) for p, _, _ in rows)
    T = max(len(c) for _, c, _ in rows)
    pid, pm, cid, cm = [], [], [], []
    for p, c, n in rows:
        pid.append([PAD] * (P - len(p)) + p)  # left padding
        pm.append([0] * (P - len(p)) + [1] * len(p))
        cid.append(c + [PAD] * (T - len(c)))
        cm.append([1.0] * n + [0.0] * (T - n))
    return Rollouts(torch.tensor(pid), torch.tensor(pm), torch.tensor(cid), torch.tensor(cm), ["x"] * len(rows))
