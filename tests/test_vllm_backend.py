"""The vLLM backend without vLLM: request building, output parsing, adapter sync, and the thin
engine-calling code driven by a stand-in ``vllm`` module shaped like the real one."""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import load_file

from arca import vllm_backend as vb
from arca.config import NonFiniteError, load_config
from arca.models import wrap_lora
from arca.paths import paths_of
from arca.pretrain import char_tokenizer, pretrain_model
from arca.rollout import TransformersGenerator, completion_mask, encode_prompts
from arca.sampling import Sampling

ALPHABET = "0123456789+-*/=() abcdefghijklmnopqrstuvwxyz.,\n\\{}:"


# ----------------------------------------------------------------------------- stand-ins for vLLM outputs
@dataclass
class Logprob:  # vllm.logprobs.Logprob, the field we read
    logprob: float


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput, the fields we read
    index: int
    token_ids: list[int]
    text: str = ""
    finish_reason: str | None = None  # "stop" or "length"
    stop_reason: int | str | None = None
    cumulative_logprob: float | None = None  # with logprobs requested: the sum of the sampled tokens'
    logprobs: list[dict[int, Logprob]] | None = None  # with logprobs=0: {sampled token id: its Logprob} per token


def with_logprobs(token_ids: list[int], values: list[float], **kw) -> CompletionOutput:
    """A sample as vLLM returns it with ``logprobs=0``: one log-prob per sampled token, and their sum."""
    lps = [{t: Logprob(v)} for t, v in zip(token_ids, values)]
    return CompletionOutput(0, token_ids, cumulative_logprob=sum(values), logprobs=lps, **kw)


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput, the fields we read
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer([ALPHABET])


@pytest.fixture()
def cfg(tmp_path):
    return load_config("configs/smoke.yaml", [f"paths.results={tmp_path}"])


def tiny_policy(cfg, tok):
    torch.manual_seed(0)
    return wrap_lora(pretrain_model(cfg, len(tok), tok), cfg.lora)


# ----------------------------------------------------------------------------- sampling settings
class RecordingModel(torch.nn.Module):
    """Stands in for a causal LM: records ``generate`` kwargs and returns prompt + 2 tokens."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = None
        self.calls = []

    def generate(self, input_ids, attention_mask, **kw):
        self.calls.append(kw)
        return torch.cat([input_ids, torch.full((input_ids.shape[0], 2), 5)], dim=1)


@pytest.mark.parametrize("top_k", [0, 50])
@pytest.mark.parametrize("greedy", [False, True])
def test_sampling_kwargs_match_transformers_backend(tok, greedy, top_k):
    model = RecordingModel()
    gen = TransformersGenerator(model, tok, decoder="generate")
    sampling = Sampling(3, 11, temperature=0.7, top_p=0.9, top_k=top_k, greedy=greedy)
    gen.generate(["1+1="], sampling)
    hf = model.calls[0]
    kw = vb.sampling_params_kwargs(sampling, stop_token_ids=gen.eos_ids)
    assert kw["max_tokens"] == hf["max_new_tokens"] == 11
    assert kw["stop_token_ids"] == hf["eos_token_id"] == [tok.eos_token_id]
    if greedy:
        assert hf["do_sample"] is False and "top_k" not in hf
        assert kw["temperature"] == 0.0 and kw["n"] == 1  # one greedy sample, repeated by parse_outputs
        assert kw["top_k"] == -1
    else:
        assert hf["do_sample"] is True
        assert (kw["temperature"], kw["top_p"], kw["n"]) == (hf["temperature"], hf["top_p"], 3)
        # the same filter in both: k tokens, or none ("off" is 0 in transformers, -1 in vLLM; both
        # backends always pass it, since transformers' default would be 50 and vLLM's off)
        assert hf["top_k"] == top_k
        assert kw["top_k"] == (top_k if top_k > 0 else -1)
    assert "seed" not in kw
    assert vb.sampling_params_kwargs(Sampling(2, 8, 1.0, 0.95, seed=7))["seed"] == 7


def test_lora_rank_rounds_up_to_a_supported_rank():
    assert [vb.vllm_lora_rank(r) for r in (1, 2, 4, 8, 9, 16, 64, 65, 512)] == [1, 8, 8, 8, 16, 16, 64, 128, 512]
    with pytest.raises(ValueError, match="lora.rank"):
        vb.vllm_lora_rank(513)


# ----------------------------------------------------------------------------- requests and outputs
def test_build_requests_are_token_prompts():
    reqs = vb.build_requests([[4, 5, 6], [7]])
    assert reqs == [{"prompt_token_ids": [4, 5, 6]}, {"prompt_token_ids": [7]}]
    assert all(type(t) is int for r in reqs for t in r["prompt_token_ids"])


def test_prompt_token_lists_are_the_truncated_prompts_without_padding(tok):
    prompts = ["1+2=3 and more text", "7"]
    ids, am = encode_prompts(tok, prompts, max_prompt_tokens=5)  # the transformers backend's batch
    lists = vb.prompt_token_lists(ids, am)
    assert (
        lists[0] == tok("1+2=3", add_special_tokens=False)["input_ids"]
        and lists[1] == tok("7", add_special_tokens=False)["input_ids"]
    )
    assert ids[1, :4].tolist() == [tok.pad_token_id] * 4  # left padding


def test_parse_outputs_order_padding_mask_and_texts(tok):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    p_ids, p_mask = encode_prompts(tok, ["ab", "c"], 512)
    outs = [
        RequestOutput("0", enc("ab"), [CompletionOutput(0, enc("12") + [eos]), CompletionOutput(1, enc("345"))]),
        RequestOutput("1", enc("c"), [CompletionOutput(0, [eos]), CompletionOutput(1, enc("6") + [eos] + enc("7"))]),
    ]
    r = vb.parse_outputs(outs, 2, {eos}, pad, p_ids, p_mask, tok)
    assert len(r) == 4
    assert r.texts == ["12", "345", "", "6"]  # prompt-major, EOS and what follows it dropped
    assert r.completion_ids.shape == (4, 3)
    assert r.completion_ids[2].tolist() == [eos, pad, pad]  # right-padded
    assert r.completion_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert torch.equal(r.completion_mask, completion_mask(r.completion_ids, {eos}, pad, torch.tensor([3, 3, 1, 3])))
    assert torch.equal(r.prompt_ids, p_ids.repeat_interleave(2, dim=0))
    assert torch.equal(r.prompt_mask, p_mask.repeat_interleave(2, dim=0))


def test_parse_outputs_pad_equal_to_eos_and_greedy_repeat(tok):
    eos = tok.eos_token_id
    p_ids, p_mask = encode_prompts(tok, ["a"], 512)
    # pad id == eos id (tokenizers without a pad token): padding must not count as generated
    r = vb.parse_outputs([RequestOutput("0", [5], [CompletionOutput(0, [6])])], 3, {eos}, eos, p_ids, p_mask, tok)
    assert len(r) == 3 and r.completion_mask.tolist() == [[1.0]] * 3  # one greedy sample -> n rows
    outs = [RequestOutput("0", [5], [CompletionOutput(0, [6, 7]), CompletionOutput(1, [6])])]
    r = vb.parse_outputs(outs, 2, {eos}, eos, p_ids, p_mask, tok)
    assert r.completion_mask.tolist() == [[1, 1], [1, 0]]
    with pytest.raises(ValueError, match="expected 3"):
        vb.parse_outputs(outs, 3, {eos}, eos, p_ids, p_mask, tok)


@pytest.mark.parametrize(
    "rule, expected", [("author", [[1, 0], [1, 0], [1, 1]]), ("through_eos", [[1, 1], [1, 1], [1, 1]])]
)
def test_parse_outputs_mask_rule_and_a_dropped_stop_token(tok, rule, expected):
    eos = tok.eos_token_id
    p_ids, p_mask = encode_prompts(tok, ["a"], 512)
    # pad == EOS (as Qwen3): sample 0 returns its EOS, sample 1 stopped on it but vLLM left it out
    # (it is put back, so both rows are [6, EOS], as generate() gives), sample 2 hit the length limit
    outs = [
        RequestOutput(
            "0",
            [5],
            [
                CompletionOutput(0, [6, eos], finish_reason="stop", stop_reason=eos),
                CompletionOutput(1, [6], finish_reason="stop"),
                CompletionOutput(2, [6, 7], finish_reason="length"),
            ],
        )
    ]
    r = vb.parse_outputs(outs, 3, {eos}, eos, p_ids, p_mask, tok, rule)
    assert r.completion_ids.tolist() == [[6, eos], [6, eos], [6, 7]]
    assert r.completion_mask.tolist() == expected


def test_parse_outputs_nothing_generated(tok):
    p_ids, p_mask = encode_prompts(tok, ["a"], 512)
    r = vb.parse_outputs(
        [RequestOutput("0", [5], [CompletionOutput(0, []), CompletionOutput(1, [])])],
        2,
        {tok.eos_token_id},
        tok.pad_token_id,
        p_ids,
        p_mask,
        tok,
    )
    assert r.completion_ids.shape == (2, 1) and r.completion_mask.sum() == 0 and r.texts == ["", ""]


# ----------------------------------------------------------------------------- sampled log-probs
def test_sampled_logprobs_rows_and_a_greedy_repeat():
    outputs = [
        RequestOutput("0", [5], [with_logprobs([7, 8, 1], [-0.5, -1.0, -2.0]), with_logprobs([9], [-0.25])]),
        RequestOutput("1", [6], [with_logprobs([3, 4], [-3.0, -4.0])]),  # greedy: one sample, repeated
    ]
    lp = vb.sampled_logprobs(outputs, 2, 4)  # [N=4, T=4]
    nan = float("nan")
    expected = [[-0.5, -1.0, -2.0, nan], [-0.25, nan, nan, nan], [-3.0, -4.0, nan, nan], [-3.0, -4.0, nan, nan]]
    assert torch.equal(lp.isnan(), torch.tensor(expected).isnan())
    assert torch.equal(lp.nan_to_num(9.0), torch.tensor(expected).nan_to_num(9.0))


def test_finite_sampled_logprobs_pass_the_check():
    # very unlikely tokens (finite, however negative) and an empty sample are fine
    vb.check_sampled_logprobs([RequestOutput("0", [5], [with_logprobs([7, 8], [-1e30, -0.1]), with_logprobs([], [])])])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_sampled_logprob_is_named_with_its_token(bad):
    outputs = [
        RequestOutput("0", [5], [with_logprobs([7, 8], [-0.1, -0.2])]),
        RequestOutput("1", [6], [with_logprobs([7, 8], [-0.1, -0.2]), with_logprobs([4, 5, 6, 7], [-1, -1, bad, bad])]),
    ]
    message = (
        "sampling: non-finite logits from the model at completion token 2 "
        f"(vLLM's log-probability of the sampled token is {bad})"
    )
    with pytest.raises(NonFiniteError) as e:
        vb.check_sampled_logprobs(outputs)
    assert str(e.value) == message


def test_the_check_refuses_outputs_without_logprobs():
    with pytest.raises(ValueError, match="no log-probs"):
        vb.check_sampled_logprobs([RequestOutput("0", [5], [CompletionOutput(0, [7, 8])])])


# ----------------------------------------------------------------------------- adapter sync
def _sgd_step(model):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()


def test_adapter_saved_where_the_request_points_and_ids_increment(cfg, tok, tmp_path):
    model = tiny_policy(cfg, tok)
    sync = vb.AdapterSync(tmp_path / "lora", keep=2)
    name1, id1, path1 = sync.request_args(model)
    assert sync.request_args(model) == (name1, id1, path1)  # unchanged adapter: same request, no re-save
    _sgd_step(model)
    name2, id2, path2 = sync.request_args(model)
    assert id2 == id1 + 1 and name2 != name1 and path2 != path1
    saved = load_file(f"{path2}/adapter_model.safetensors")
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert saved and lora
    for key, value in lora.items():  # the saved B matrices are the current (stepped) ones
        match = [v for k, v in saved.items() if k.replace(".weight", "") in key]
        assert match and torch.equal(match[0], value)
    for _ in range(2):
        _sgd_step(model)
        last = sync.request_args(model)
    assert last[1] == id2 + 2
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == [
        "step_000003",
        "step_000004",
    ]  # keep=2, no temp left
    assert sync.request_args(pretrain_model(cfg, len(tok), tok)) is None  # no adapter -> no LoRA request


def test_owned_adapter_folder_is_removed_on_close(cfg, tok):
    sync = vb.AdapterSync()
    sync.request_args(tiny_policy(cfg, tok))
    root = sync.root
    assert any(root.iterdir())
    sync.close()
    assert not root.exists()


# ----------------------------------------------------------------------------- the engine-calling code
def test_missing_vllm_gives_install_hint(cfg, tok, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(ImportError, match=r"gpu.*extra"):
        vb.VLLMGenerator(cfg, tiny_policy(cfg, tok), tok)


@pytest.fixture()
def fake_vllm(monkeypatch):
    """A stand-in ``vllm`` package recording what the generator passes to it; every sample is the
    tokens 10 + j, 11, 1 with the log-probs ``calls["logprobs"]`` when they are asked for."""
    calls = {"llm": [], "generate": [], "logprobs": [-0.5, -1.5, -0.25]}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LoRARequest:
        def __init__(self, lora_name, lora_int_id, lora_path):
            self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path

    class LLM:
        def __init__(self, **kw):
            calls["llm"].append(kw)

        def generate(self, prompts, params, use_tqdm=True, lora_request=None):
            calls["generate"].append((prompts, params, lora_request))
            n = params.kw["n"]

            def sample(j):
                ids = [10 + j, 11, 1]
                return with_logprobs(ids, calls["logprobs"]) if "logprobs" in params.kw else CompletionOutput(j, ids)

            return [
                RequestOutput(str(i), p["prompt_token_ids"], [sample(j) for j in range(n)])
                for i, p in enumerate(prompts)
            ]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    lora_pkg, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    lora_pkg.request = request
    vllm.lora = lora_pkg
    for name, mod in (("vllm", vllm), ("vllm.lora", lora_pkg), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    return calls


def test_generator_with_stand_in_vllm(cfg, tok, fake_vllm, tmp_path):
    cfg.model.dtype = "bfloat16"
    model = tiny_policy(cfg, tok)
    gen = vb.VLLMGenerator(cfg, model, tok, adapter_root=tmp_path / "lora")
    r = gen.generate(["1+1=", "2+2="], Sampling(2, 5, 1.0, 0.95, top_k=50))
    _sgd_step(model)
    gen.generate(["3+3="], Sampling(2, 5, 1.0, 0.95))
    (llm_kw,) = fake_vllm["llm"]  # one engine for every step
    assert llm_kw["model"] == str(paths_of(cfg).base) and llm_kw["enable_lora"] is True
    assert llm_kw["max_lora_rank"] == 8 and cfg.lora.rank == 4  # rounded up to a vLLM rank
    assert llm_kw["gpu_memory_utilization"] == cfg.rollout.vllm_gpu_memory_utilization
    assert (llm_kw["dtype"], llm_kw["seed"]) == ("bfloat16", cfg.train.seed)
    (p1, s1, l1), (p2, s2, l2) = fake_vllm["generate"]
    assert p1[0]["prompt_token_ids"] == tok("1+1=", add_special_tokens=False)["input_ids"]
    assert s1.kw == vb.sampling_params_kwargs(Sampling(2, 5, 1.0, 0.95, top_k=50), gen.eos_ids, logprobs=True)
    assert s1.kw["logprobs"] == 0  # the sampled token's log-prob only, for the finiteness check
    assert (s1.kw["top_k"], s2.kw["top_k"]) == (50, -1)  # passed through; the default is off
    assert (l1.lora_int_id, l2.lora_int_id) == (1, 2)  # a new id after the optimizer step: vLLM reloads
    assert (tmp_path / "lora" / "step_000002" / "adapter_model.safetensors").is_file()
    assert l2.lora_path == str(tmp_path / "lora" / "step_000002")
    assert len(r) == 4 and r.completion_ids[:, 0].tolist() == [10, 11, 10, 11]
    assert r.completion_mask.tolist() == [[1, 1, 1]] * 4  # EOS id 1 included
    gen.close()


@pytest.mark.parametrize("with_logprobs_asked", [False, True])
def test_generator_stops_on_a_non_finite_sampled_logprob(cfg, tok, fake_vllm, tmp_path, with_logprobs_asked):
    gen = vb.VLLMGenerator(cfg, tiny_policy(cfg, tok), tok, adapter_root=tmp_path / "lora")
    fake_vllm["logprobs"] = [-0.5, float("nan"), -0.25]
    with pytest.raises(NonFiniteError, match=r"^sampling: non-finite logits from the model at completion token 1 "):
        if with_logprobs_asked:
            gen.generate_with_logprobs(["1+1="], Sampling(2, 5, 1.0, 0.95))
        else:
            gen.generate(["1+1="], Sampling(2, 5, 1.0, 0.95, greedy=True))
    gen.close()


@pytest.mark.slow
def test_a_non_finite_sampled_logprob_in_training_names_the_run_and_step(cfg, fake_vllm, tmp_path):
    from arca import train
    from arca.config import for_run
    from arca.data import prepare_data
    from arca.models import build_base

    prepare_data(cfg)
    build_base(cfg)
    run = "uniform_r4_s1"
    run_cfg = for_run(cfg, run)
    run_cfg.rollout.backend, run_cfg.eval.every = "vllm", 0  # no held-out curve: the first sampling is step 1's
    fake_vllm["logprobs"] = [-0.5, -1.5, float("inf")]
    with pytest.raises(NonFiniteError) as e:
        train.train_run(run_cfg, run, run_dir=tmp_path / "r")
    assert str(e.value) == (
        "run uniform_r4_s1: step 1: sampling: non-finite logits from the model at completion token 2 "
        "(vLLM's log-probability of the sampled token is inf)"
    )
    assert not (tmp_path / "r" / "checkpoints").exists() or not list((tmp_path / "r" / "checkpoints").iterdir())
