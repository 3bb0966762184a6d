"""The one-pass guarantee of ``train_step`` and the ``bench`` step (arca.bench).

The pass count is checked three independent ways: the step's own ``reference_passes`` and
``entropy_passes`` metrics, a wrapper counting entries into ``model.disable_adapter()``, and a
forward pre-hook on the decoder stack counting every forward call (adapter on or off). A second
adapter-off pass added anywhere would change the second and third counts even if it bypassed
``reference_scores``.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from helpers import bench_cfg, small_config_dict, tiny_qwen3

from arca import credit
from arca.config import Config, from_dict
from arca.paths import paths_of
from arca.rollout import Rollouts
from arca.sampling import Sampling
from arca.train import lr_scheduler, train_step

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

VOCAB, PAD, EOS = 24, 0, 1
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _lora_model(seed: int = 0):
    base = tiny_qwen3(VOCAB, seed)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0))
    with torch.no_grad():  # B != 0 so that the adapter changes the model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.eval()
    return model


class FakeGenerator:
    """Fixed random rollouts (left-padded prompts, some completions ending early), half of them correct."""

    tokenizer = None  # the prompt format needs one only for a chat template

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)

    def generate(self, prompts, sampling, progress=None) -> Rollouts:
        N, P, T = len(prompts) * sampling.n, 4, sampling.max_new_tokens
        prompt_ids = torch.randint(3, VOCAB, (N, P), generator=self.gen)
        prompt_mask = torch.ones(N, P, dtype=torch.long)
        prompt_ids[0, 0], prompt_mask[0, 0] = PAD, 0  # one left pad
        comp = torch.randint(3, VOCAB, (N, T), generator=self.gen)
        mask = torch.ones(N, T)
        comp[1, 2], mask[1, 3:] = EOS, 0.0  # one completion stops early
        comp[1, 3:] = PAD
        texts = [r"\boxed{1}" if i % 2 == 0 else r"\boxed{2}" for i in range(N)]
        return Rollouts(prompt_ids, prompt_mask, comp, mask, texts)


class PassCounter:
    """Counts adapter-off contexts and passes over the model (inside one and in all).

    A pass is a call of the decoder module's forward or of ``LeanDecoder.final_hidden``, which
    runs the decoder's layers itself (the prompt once per group); the counting lasts until
    ``close``.
    """

    def __init__(self, model):
        self.model, self.disabled, self.off_forwards, self.forwards = model, 0, 0, 0
        self._inside = False
        inner = model.disable_adapter

        @contextlib.contextmanager
        def counting_disable_adapter():
            self.disabled += 1
            self._inside = True
            try:
                with inner():
                    yield
            finally:
                self._inside = False

        model.disable_adapter = counting_disable_adapter
        decoder = model.get_base_model().get_decoder()
        self.handle = decoder.register_forward_pre_hook(self._hook)
        from arca.decode import LeanDecoder

        self._lean_final_hidden = real = LeanDecoder.final_hidden

        def counting_final_hidden(lean, *args, **kwargs):
            out = real(lean, *args, **kwargs)
            if out is not None:  # None: it declined, and the caller runs the decoder module instead
                self._hook(None, args)
            return out

        LeanDecoder.final_hidden = counting_final_hidden

    def close(self) -> None:
        from arca.decode import LeanDecoder

        LeanDecoder.final_hidden = self._lean_final_hidden
        self.handle.remove()

    def _hook(self, module, args):
        self.forwards += 1
        # an adapter-off pass: inside disable_adapter, or with every LoRA layer disabled
        if self._inside or all(
            getattr(m, "disable_adapters", False) for m in self.model.modules() if hasattr(m, "lora_A")
        ):
            self.off_forwards += 1


def _train_step(cfg: Config, model) -> tuple[dict, list[list[float]]]:
    """One ``train_step`` of ``model`` on FakeGenerator rollouts (lora_dropout 0: deterministic)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = lr_scheduler(cfg, opt)
    problems = [{"problem": f"p{i}", "answer": "1"} for i in range(cfg.train.prompts_per_step)]
    return train_step(cfg, model, FakeGenerator(), opt, sched, problems, 0, 0)


def _one_step(method: str, prompts: int, micro: int) -> tuple[PassCounter, dict]:
    model = _lora_model()
    counter = PassCounter(model)
    try:
        metrics, _ = _train_step(bench_cfg(method, prompts, micro), model)
    finally:
        counter.close()
    assert metrics["reward_std"] > 0  # non-zero advantages: a real gradient step
    return counter, metrics


NO_REFERENCE = ("uniform", "surprisal", "entropy_reduction")
ONE_REFERENCE = ("divergence", "arca")


def test_method_groups_cover_the_paper_methods():
    assert set(NO_REFERENCE) | set(ONE_REFERENCE) == set(credit.PAPER_METHODS)
    for m in NO_REFERENCE:
        assert not credit.REGISTRY[m].needs_reference_pass
    for m in ONE_REFERENCE:
        assert credit.REGISTRY[m].needs_reference_pass


@pytest.mark.parametrize("method", NO_REFERENCE)
@pytest.mark.parametrize("prompts,micro", [(4, 2), (4, 4)])
def test_no_adapter_off_pass_without_reference_needs(method, prompts, micro):
    counter, metrics = _one_step(method, prompts, micro)
    n_micro = prompts // micro
    assert metrics["reference_passes"] == 0 and metrics["entropy_passes"] == 0
    assert counter.disabled == 0 and counter.off_forwards == 0
    assert counter.forwards == n_micro  # only the gradient pass of each micro-batch


@pytest.mark.parametrize("method", ONE_REFERENCE)
@pytest.mark.parametrize("prompts,micro", [(4, 2), (4, 4)])
def test_exactly_one_adapter_off_pass_per_micro_batch(method, prompts, micro):
    counter, metrics = _one_step(method, prompts, micro)
    n_micro = prompts // micro
    passes = metrics["reference_passes"]
    assert passes == n_micro
    assert counter.disabled == n_micro and counter.off_forwards == n_micro
    assert counter.forwards == 2 * n_micro  # one adapter-off pass + one gradient pass each
    if micro == prompts:
        assert passes == 1  # one per step when the step is one micro-batch


def test_arca_layers_needs_no_extra_pass():
    for prompts, micro in [(4, 2), (4, 4)]:
        counter, metrics = _one_step("arca_layers", prompts, micro)
        assert metrics["reference_passes"] == 0 and metrics["entropy_passes"] == 0
        assert counter.disabled == 0 and counter.off_forwards == 0
        assert counter.forwards == prompts // micro  # the gradient passes alone


@pytest.mark.parametrize("prompts,micro,extra", [(4, 4, 0), (4, 2, 2), (4, 1, 4)])
def test_entropy_top20_extra_pass_only_with_several_micro_batches(prompts, micro, extra):
    counter, metrics = _one_step("entropy_top20", prompts, micro)
    n_micro = prompts // micro
    assert metrics["reference_passes"] == 0 and counter.off_forwards == 0
    assert metrics["entropy_passes"] == extra
    assert counter.forwards == n_micro + extra


def _step_weights(method: str, prompts: int, micro: int, **extra) -> tuple[dict, list[list[float]]]:
    return _train_step(bench_cfg(method, prompts, micro, **extra), _lora_model())


def test_entropy_top20_threshold_spans_the_whole_step():
    # the same rollouts in one micro-batch or in four give the same weights: the threshold is the
    # step's, not each micro-batch's (with per-micro-batch thresholds every micro-batch would
    # select its own top tokens and the weights would differ)
    _, w_one = _step_weights("entropy_top20", 4, 4)
    _, w_four = _step_weights("entropy_top20", 4, 1)
    assert w_one == w_four
    n_selected = sum(sum(1 for v in row if v > 1e-6) for row in w_one)
    n_tokens = sum(len(row) for row in w_one)
    # ~20% of the step's tokens (rows with none fall back to uniform and add their length)
    assert 0.1 * n_tokens < n_selected < 0.8 * n_tokens
    # per-micro-batch thresholds really would differ here (the test has teeth)
    cfg = bench_cfg("entropy_top20", 4, 1)
    model = _lora_model()
    r = FakeGenerator().generate([f"p{i}" for i in range(4)], Sampling.from_rollout(cfg.rollout))
    from arca.scoring import credit_inputs_for_rollouts

    per_mb = []
    for s in range(0, len(r), cfg.rollout.k):
        x = credit_inputs_for_rollouts(
            model, r.select(slice(s, s + cfg.rollout.k)), needs=frozenset({credit.ENTROPIES})
        )
        w, _ = credit.token_weights("entropy_top20", x)
        per_mb += [[float(v) for v in row[m > 0]] for row, m in zip(w, x.mask)]
    assert per_mb != w_one


def test_mean_one_loss_keeps_the_token_sum_scale():
    # uniform: sum_to_one gives -(1/N) sum_i A_i mean_t lp_it, mean_one -(1/N) sum_i A_i sum_t lp_it
    cfg = bench_cfg("uniform", 2, 2)
    model = _lora_model()
    model.train()
    r = FakeGenerator().generate(["p0", "p1"], Sampling.from_rollout(cfg.rollout))
    from arca.grpo import group_advantages
    from arca.scoring import policy_scores

    with torch.no_grad():
        lp = policy_scores(model, r, False, False).logprobs * r.completion_mask  # [N, T]
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), cfg.rollout.k)  # texts alternate right/wrong
    n = r.completion_mask.sum(1)
    m_sum, _ = _step_weights("uniform", 2, 2)
    m_mean, _ = _step_weights("uniform", 2, 2, credit__normalization="mean_one")
    assert m_sum["loss"] == pytest.approx(float(-(adv * lp.sum(1) / n).sum() / 4), abs=1e-6)
    assert m_mean["loss"] == pytest.approx(float(-(adv * lp.sum(1)).sum() / 4), abs=1e-6)
    # diagnostics read the sum-to-one weights either way
    assert m_mean["gini"] == pytest.approx(m_sum["gini"], abs=1e-12)
    assert m_mean["eff_ratio"] == pytest.approx(1.0)
    assert abs(m_mean["loss"]) > 2 * abs(m_sum["loss"])  # the scales really differ (5 tokens)


# ----------------------------------------------------------------------------- bench
def _tiny_bench_cfg(results) -> Config:
    raw = small_config_dict()
    raw["name"] = "tinybench"
    raw["device"] = "cpu"
    raw["paths"] = {"results": str(results), "cache": str(results / "cache")}
    raw["model"]["pretrain"].update(
        {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "num_kv_heads": 1,
            "intermediate_size": 64,
            "steps": 3,
            "batch_size": 4,
            "seq_len": 160,
            "warmup_steps": 1,
        }
    )
    raw["data"].update({"n_train": 40, "n_test": 8})
    raw["rollout"].update({"k": 2, "max_new_tokens": 6})
    raw["train"].update({"prompts_per_step": 2, "micro_batch_prompts": 2, "threads": 1})
    raw["sweep"]["cells"] = [{"method": "uniform", "ranks": [2]}, {"method": "arca", "ranks": [2, 4]}]
    raw["sweep"]["seeds"] = [1]
    return from_dict(raw, source="test")


REQUIRED_KEYS = {
    "ratio_vs_uniform",
    "update_ratio_vs_uniform",
    "ratio_vs_trl",
    "raw",
    "medians",
    "length_scaling",
    "machine",
    "settings",
}


def test_bench_main_tiny_no_trl(tmp_path, capsys):
    import argparse

    from arca.bench import bench_main

    cfg = _tiny_bench_cfg(tmp_path)
    bench_main(cfg, argparse.Namespace(steps=1, no_trl=True, lengths="8"))
    assert paths_of(cfg).data.train.is_file() and (paths_of(cfg).base / "config.json").is_file()  # built first
    summary = json.loads((paths_of(cfg).root / "bench" / "summary.json").read_text())
    assert REQUIRED_KEYS <= set(summary)
    assert set(summary["ratio_vs_uniform"]) == set(credit.PAPER_METHODS)
    assert summary["ratio_vs_uniform"]["uniform"] == pytest.approx(1.0)
    assert summary["update_ratio_vs_uniform"]["uniform"] == pytest.approx(1.0)
    assert summary["ratio_vs_trl"] is None
    assert summary["settings"]["lora_rank"] == 4  # the sweep's top rank
    assert summary["machine"]["cpu_count"] >= 1 and summary["machine"]["device"] == "cpu"
    for m, rows in summary["raw"]["methods"].items():
        assert len(rows) == 1
        row = rows[0]
        assert row["tokens"] == 2 * 2 * 6  # forced length: every completion has max_new_tokens tokens
        assert row["reference_passes"] == (1 if credit.REGISTRY[m].needs_reference_pass else 0)
        assert row["peak_mem_mb"] > 0 and row["step_seconds"] >= row["update_seconds"]
    assert set(summary["length_scaling"]) == {"8"}
    assert set(summary["length_scaling"]["8"]) == {"uniform", "arca"}
    md = (paths_of(cfg).root / "bench" / "summary.md").read_text()
    assert "| arca |" in md and "Length scaling" in md
    assert "| arca |" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_trl_peer_tiny(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    from arca.bench.step import bench

    cfg = _tiny_bench_cfg(tmp_path)
    summary = bench(cfg, steps=1, lengths=[4], trl=True, blocks=1, methods=("uniform",))
    assert summary["ratio_vs_trl"] is not None and summary["ratio_vs_trl"] > 0
    raw = summary["raw"]["trl"]
    assert len(raw["trl"]) == 1 and len(raw["ours_uniform"]) == 1
    assert raw["trl"][0]["tokens"] == 2 * 2 * 6
    assert json.loads((paths_of(cfg).root / "bench" / "summary.json").read_text())["trl"]["trl"]["n"] == 1


def test_parse_methods():
    from arca.bench.main import parse_methods

    assert parse_methods(None) == credit.PAPER_METHODS
    assert parse_methods("arca_layers, entropy_top20") == ("uniform", "arca_layers", "entropy_top20")
    assert parse_methods("arca,uniform") == ("uniform", "arca")
    with pytest.raises(ValueError, match="unknown credit method.*'magic'"):
        parse_methods("arca,magic")


def test_parse_backends():
    from arca.bench.generation import parse_backends

    assert parse_backends("transformers, vllm,transformers") == ("transformers", "vllm")
    with pytest.raises(ValueError, match="unknown rollout backend"):
        parse_backends("transformers,sglang")


def test_bench_generation_transformers_only(tmp_path, capsys):
    """``bench --backends transformers`` (the vLLM side runs in tests/vllm/)."""
    import argparse

    from arca.bench import bench_main

    cfg = _tiny_bench_cfg(tmp_path)
    bench_main(cfg, argparse.Namespace(steps=2, no_trl=True, lengths=None, backends="transformers"))
    s = json.loads((paths_of(cfg).root / "bench" / "generation.json").read_text())
    assert list(s["medians"]) == ["transformers"] and s["medians"]["transformers"]["n"] == 2
    assert [r["tokens"] for r in s["raw"]["transformers"]] == [2 * 2 * 6] * 2  # forced length
    assert s["medians"]["transformers"]["speed_x_first"] == pytest.approx(1.0)
    assert not (paths_of(cfg).root / "bench" / "summary.json").exists()  # the training-step bench did not run
    assert "| transformers |" in capsys.readouterr().out


def test_step_flops_counts_the_matmuls_of_the_training_passes():
    # the estimate's matmul part equals what torch's FLOP counter sees in the gradient pass and its
    # backward (the counter does not count CPU flash attention, so the attention term is left out)
    from torch.utils.flop_counter import FlopCounterMode

    from arca.bench.hardware import step_flops
    from arca.scoring import policy_scores

    model = _lora_model()
    mc = model.get_base_model().config
    n, p, t, rank = 6, 9, 7, 4
    gen = torch.Generator().manual_seed(0)
    r = Rollouts(
        torch.randint(3, VOCAB, (n, p), generator=gen),
        torch.ones(n, p, dtype=torch.long),
        torch.randint(3, VOCAB, (n, t), generator=gen),
        torch.ones(n, t),
        [""] * n,
    )
    r.prompt_mask[0, :2] = 0
    with FlopCounterMode(display=False) as fwd:
        scores = policy_scores(model, r, want_entropies=False, want_hidden=False)
    with FlopCounterMode(display=False) as bwd:
        scores.logprobs.sum().backward()
    est = step_flops(mc, rank, TARGETS, n, u=3, p=p, t=t, q0=0)
    s = p + t - 1
    attention = n * s * s * 4 * mc.num_hidden_layers * mc.num_attention_heads * mc.head_dim
    assert est["forward"] - attention == fwd.get_total_flops()
    assert est["backward"] - 2 * attention == bwd.get_total_flops()


def test_step_flops_counts_the_shared_prompt_gradient_pass():
    # train.share_prompt: each of the u distinct prompts' first p - 1 positions once, then every row
    from torch.utils.flop_counter import FlopCounterMode

    from arca.bench.hardware import step_flops
    from arca.scoring import policy_scores

    model = _lora_model()
    mc = model.get_base_model().config
    n, u, p, t, rank = 6, 3, 9, 7, 4
    gen = torch.Generator().manual_seed(1)
    r = Rollouts(
        torch.randint(3, VOCAB, (u, p), generator=gen).repeat_interleave(n // u, dim=0),  # K = 2 rows per prompt
        torch.ones(n, p, dtype=torch.long),
        torch.randint(3, VOCAB, (n, t), generator=gen),
        torch.ones(n, t),
        [""] * n,
    )
    r.prompt_mask[:2, :2] = 0  # the first group's prompt is shorter (left padding)
    with FlopCounterMode(display=False) as fwd:
        scores = policy_scores(model, r, want_entropies=False, want_hidden=False, share_prompt=True)
    with FlopCounterMode(display=False) as bwd:
        scores.logprobs.sum().backward()
    q0 = p - 1
    est = step_flops(mc, rank, TARGETS, n, u=u, p=p, t=t, q0=0, grad_q0=q0)
    s = p + t - 1
    layers = mc.num_hidden_layers  # the shared pass's last layer computes only keys and values
    attention = (u * q0 * q0 * (layers - 1) + n * (s - q0) * s * layers) * 4 * mc.num_attention_heads * mc.head_dim
    assert est["forward"] - attention == fwd.get_total_flops()
    assert est["backward"] - 2 * attention == bwd.get_total_flops()
    full = step_flops(mc, rank, TARGETS, n, u=u, p=p, t=t, q0=0)
    assert est["forward"] < 0.8 * full["forward"]
