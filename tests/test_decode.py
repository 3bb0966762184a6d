"""The lean decoder (arca.decode) against ``model.generate``: the same tokens, greedy and sampled.

Both decoders run through ``TransformersGenerator`` on the same batches and seeds; the lean one
must give the same completion ids, masks and texts and leave the global RNG where ``generate``
leaves it (the training run's random stream continues from there). Two of its parts round
differently from ``generate`` (float32): their size is pinned by a logit test against the model's
own forward and the sampled distribution by a chi-square test. The gradient pass that runs each
prompt once per group is checked against the full pass. Models: a Qwen3 model
pretrained here for a few dozen steps (it emits EOS, so rows stop at different steps) and a small
random Llama model (SmolLM2's architecture), each with a LoRA adapter whose B is random and nonzero,
decoded with the adapter on and off, on prompts of different lengths (left padding) and of one
length (no padding: SDPA without a mask).
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from arca.config import load_config
from arca.decode import LeanDecoder, UnsupportedModelError, process_scores
from arca.models import wrap_lora
from arca.paths import paths_of
from arca.pretrain import char_tokenizer, pretrain
from arca.prompts import build_prompt
from arca.rollout import TransformersGenerator
from arca.sampling import Sampling

# the training prompt around problems of different lengths (left padding), and of one length
PROMPTS = [build_prompt(p) for p in ["12+7-3", "5+60-1", "88+9-4", "3+4-2", "40+40-8"]]
SAME_LENGTH = [build_prompt(p) for p in ["12+7-3", "5+60-1", "88+9-4"]]


def arithmetic_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 9)
        rows.append(
            {
                "id": f"g{i}",
                "problem": f"{a}+{b}-{c}",
                "solution": f"{a}+{b}={a + b}, {a + b}-{c}={a + b - c}. \\boxed{{{a + b - c}}}",
                "answer": str(a + b - c),
                "level": 1,
                "subject": "arithmetic",
            }
        )
    return rows


def random_lora_b(model, std: float = 0.2, seed: int = 0) -> None:
    """Give every LoRA B a random nonzero value, so the adapter changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    """A tiny Qwen3 model pretrained here (120 steps), with a random LoRA adapter."""
    import json

    from arca.config import from_dict, to_dict

    root = tmp_path_factory.mktemp("decode")
    raw = to_dict(load_config("configs/smoke.yaml", [f"paths.results={root}"]))
    raw["model"]["pretrain"].update(
        {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "intermediate_size": 64,
            "steps": 120,
            "batch_size": 8,
            "seq_len": 160,
            "lr": 1e-2,
            "warmup_steps": 4,
            "seed": 3,
            "threads": 1,
        }
    )
    cfg = from_dict(raw, source="test")
    paths_of(cfg).data.root.mkdir(parents=True)
    (paths_of(cfg).data.root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arithmetic_records(64)))
    out = root / "base"
    out.mkdir()
    model, tok, _ = pretrain(cfg, out)
    model = wrap_lora(model, cfg.lora)
    random_lora_b(model)
    return model, tok


@pytest.fixture(scope="module")
def llama():
    """A small random Llama model (no q/k norms, GQA) with a random LoRA adapter."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from arca.config import LoraConfig

    tok = char_tokenizer(["0123456789+-=,. \\boxed{}"])
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        attn_implementation="sdpa",
    )
    base = LlamaForCausalLM(config)
    with torch.no_grad():  # make EOS likely enough that some rows stop early
        base.model.embed_tokens.weight[tok.eos_token_id] *= 6
    model = wrap_lora(
        base,
        LoraConfig(
            rank=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        ),
    )
    random_lora_b(model, seed=1)
    return model, tok


SETTINGS = {
    "greedy": {"greedy": True},
    "paper_sampling": {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "seed": 11},
    "no_filters": {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": 12},
    "hot_top_k": {"temperature": 1.7, "top_p": 0.8, "top_k": 5, "seed": 13},
    "cold": {"temperature": 0.4, "top_p": 0.95, "top_k": 50, "seed": 14},
    "min_new_tokens": {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "seed": 15, "min_new_tokens": 9},
    "greedy_min_new_tokens": {"greedy": True, "min_new_tokens": 12},
}


def run_both(model, tok, prompts, n, setting, batch_size=64, max_new_tokens=32):
    kw = dict(SETTINGS[setting])
    temperature, top_p = kw.pop("temperature", 1.0), kw.pop("top_p", 1.0)
    out = {}
    for decoder in ("generate", "lean"):
        gen = TransformersGenerator(model, tok, batch_size=batch_size, decoder=decoder)
        torch.manual_seed(99)  # greedy runs without a seed: the RNG must still end where generate leaves it
        r = gen.generate(prompts, Sampling(n, max_new_tokens, temperature, top_p, **kw))
        out[decoder] = (r, torch.get_rng_state())
    return out["generate"], out["lean"]


def assert_same(a, b):
    (ra, rng_a), (rb, rng_b) = a, b
    assert torch.equal(ra.completion_ids, rb.completion_ids)
    assert torch.equal(ra.completion_mask, rb.completion_mask)
    assert ra.texts == rb.texts
    assert torch.equal(rng_a, rng_b)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("adapter", ["on", "off"])
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_lean_decoder_gives_the_tokens_of_generate(request, arch, adapter, setting):
    model, tok = request.getfixturevalue(arch)
    n = 1 if setting.startswith("greedy") else 4  # 4 samples per prompt: one prompt pass serves the group
    if adapter == "on":
        a, b = run_both(model, tok, PROMPTS, n, setting)
    else:
        with model.disable_adapter():
            a, b = run_both(model, tok, PROMPTS, n, setting)
    assert_same(a, b)
    lengths = a[0].completion_mask.sum(dim=1)
    if not setting.startswith("greedy"):
        assert lengths.min() < lengths.max()  # rows stopped at different steps (EOS, then padding)
    if "min_new_tokens" in SETTINGS[setting]:
        assert lengths.min() >= SETTINGS[setting]["min_new_tokens"]


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_lean_decoder_without_padding_and_in_uneven_batches(request, arch):
    model, tok = request.getfixturevalue(arch)
    # every prompt of one length: generate drops the mask and SDPA runs causal / unmasked
    assert_same(*run_both(model, tok, SAME_LENGTH, 4, "paper_sampling"))
    assert_same(*run_both(model, tok, SAME_LENGTH, 1, "greedy"))
    # batches of 3 rows split the groups of 4 samples: shared prompts inside a batch only
    assert_same(*run_both(model, tok, PROMPTS, 4, "paper_sampling", batch_size=3))


def test_stopped_rows_leave_the_batch_with_the_same_tokens(qwen3, monkeypatch):
    import arca.decode.decoder as dec

    model, tok = qwen3
    kept, compact = [], dec.compact_rows
    monkeypatch.setattr(dec, "compact_rows", lambda rows, live: kept.append(len(live)) or compact(rows, live))
    assert_same(*run_both(model, tok, PROMPTS * 3, 4, "paper_sampling"))  # 60 rows
    assert_same(*run_both(model, tok, PROMPTS * 4, 1, "greedy"))
    # Which sampled rows stop when depends on the host's kernels, so the floor is forced by the
    # input: two groups of 7 identical prompts, decoded greedily. Identical rows stop at the same
    # step, so when the group with the shorter answer stops, 7 of the 14 rows still run: the batch
    # shrinks to those 7 and is topped up with one stopped row to MIN_ROWS.
    short, long = build_prompt("1+2-1"), build_prompt("88+99-7")
    kept.clear()
    a, b = run_both(model, tok, [short] * 7 + [long] * 7, 1, "greedy", max_new_tokens=64)
    assert_same(a, b)
    lengths = a[0].completion_mask.sum(dim=1).tolist()
    assert len(set(lengths[:7])) == len(set(lengths[7:])) == 1  # identical rows, identical completions
    assert lengths[0] != lengths[7] and max(lengths) < 64, lengths  # both groups stop, at different steps
    assert kept == [7] and 7 < dec.MIN_ROWS  # the batch shrank below its floor of MIN_ROWS rows


@pytest.mark.parametrize("setting", ["greedy", "paper_sampling", "hot_top_k"])
def test_bfloat16_base_with_float32_adapter(setting):
    # peft keeps adapters in float32 over a bf16 base (input cast up, sum cast back), here with a
    # scaling that is not a power of two (lora_alpha 12, rank 4)
    import peft
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer(["0123456789+-=,. \\boxed{}"])
    torch.manual_seed(2)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        attn_implementation="sdpa",
    )
    base = LlamaForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        base.model.embed_tokens.weight[tok.eos_token_id] *= 6
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    model.eval()
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    random_lora_b(model, seed=2)
    assert_same(*run_both(model, tok, PROMPTS, 1 if setting == "greedy" else 4, setting))


def test_the_adapter_changes_the_tokens(qwen3):
    # otherwise the adapter-on cases above would not test the LoRA arithmetic
    model, tok = qwen3
    on, _ = run_both(model, tok, PROMPTS, 1, "greedy")
    with model.disable_adapter():
        off, _ = run_both(model, tok, PROMPTS, 1, "greedy")
    assert not torch.equal(on[0].completion_ids, off[0].completion_ids)


def test_lean_decoder_follows_the_current_weights(qwen3):
    # the decoder reads the adapter at every call: a training step's update shows in the next rollout
    model, tok = qwen3
    gen = TransformersGenerator(model, tok, decoder="lean")
    before = gen.generate(PROMPTS, Sampling.greedy_decoding(32)).completion_ids
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    try:
        random_lora_b(model, seed=5)
        after = gen.generate(PROMPTS, Sampling.greedy_decoding(32))
        ref = TransformersGenerator(model, tok, decoder="generate").generate(PROMPTS, Sampling.greedy_decoding(32))
        assert torch.equal(after.completion_ids, ref.completion_ids)
        assert not torch.equal(after.completion_ids, before)
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])


# ----------------------------------------------------------------------------- the sampling filters
def hf_processors(V, n_generated, min_new_tokens, eos, temperature, top_k, top_p):
    """transformers' own processors, built the way generate() builds them for these settings."""
    from transformers import LogitsProcessorList
    from transformers.generation.logits_process import (
        MinNewTokensLengthLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if min_new_tokens > 0:
        procs.append(MinNewTokensLengthLogitsProcessor(3, min_new_tokens, eos))
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    return procs, torch.zeros(1, 3 + n_generated, dtype=torch.long)  # input_ids: a 3-token prompt + n generated


@pytest.mark.parametrize(
    "temperature, top_k, top_p", [(1.0, 50, 0.95), (0.7, 0, 0.9), (1.3, 3, 1.0), (1.0, 0, 1.0), (1.0, 200, 0.5)]
)
@pytest.mark.parametrize("n_generated, min_new_tokens", [(0, 0), (2, 5), (5, 5)])
def test_process_scores_equals_transformers_processors(temperature, top_k, top_p, n_generated, min_new_tokens):
    gen = torch.Generator().manual_seed(0)
    V, eos = 67, [1, 4]
    logits = torch.randn(16, V, generator=gen) * 3
    logits[:4, :10] = 2.5  # ties, across the top-k and top-p boundaries
    logits[5, 7] = -math.inf
    procs, input_ids = hf_processors(V, n_generated, min_new_tokens, torch.tensor(eos), temperature, top_k, top_p)
    want = procs(input_ids.expand(16, -1), logits.clone())
    eos_mask = torch.isin(torch.arange(V), torch.tensor(eos))
    got = process_scores(logits.clone(), n_generated, False, temperature, top_k, top_p, min_new_tokens, eos_mask)
    assert torch.equal(got, want)
    # greedy applies only the EOS suppression
    greedy = process_scores(logits.clone(), n_generated, True, temperature, top_k, top_p, min_new_tokens, eos_mask)
    assert torch.equal(greedy.isinf(), logits.isinf() | (eos_mask & (n_generated < min_new_tokens)))


# ----------------------------------------------------------------------------- what it refuses
def test_lean_decoder_refuses_what_it_does_not_reproduce(qwen3):
    from transformers import LlamaConfig, LlamaForCausalLM

    model, _ = qwen3
    eager = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=16,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            attn_implementation="eager",
        )
    )
    with pytest.raises(UnsupportedModelError, match="rollout.decoder: generate"):
        LeanDecoder(eager)
    lm = model.get_base_model()
    lm.generation_config.repetition_penalty = 1.3
    try:
        with pytest.raises(UnsupportedModelError, match="repetition_penalty"):
            LeanDecoder(model)
    finally:
        lm.generation_config.repetition_penalty = 1.0


# ----------------------------------------------------------------------------- the reference pass
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
@pytest.mark.parametrize("max_new_tokens, forced", [(8, False), (32, False), (32, True), (70, True)])
def test_shared_prompt_reference_pass_equals_the_full_pass(request, arch, max_new_tokens, forced):
    from arca.scoring import _final_hidden, _shared_prompt_hidden

    model, tok = request.getfixturevalue(arch)
    prompts = [build_prompt("1" * (40 + 3 * i) + "+2") for i in range(4)]  # 40+ tokens: a shared block exists
    gen = TransformersGenerator(model, tok, decoder="lean")
    r = gen.generate(
        prompts, Sampling(4, max_new_tokens, 1.0, 0.95, 50, seed=3, min_new_tokens=max_new_tokens * forced)
    )
    model.train()  # as in the update: train mode, adapter off, no gradient
    try:
        with torch.inference_mode(), model.disable_adapter():
            full = _final_hidden(model, r)  # [B, T, H]
            shared = _shared_prompt_hidden(model, r)
    finally:
        model.eval()
    assert shared is not None and torch.equal(shared, full)


def test_shared_prefix_follows_the_attention_query_blocks():
    from arca.decode import flash_query_block, shared_prefix_length

    def blocks(start, n):
        b = min(flash_query_block(n), n)
        return [(start + i, min(start + i + b, start + n)) for i in range(0, n, b)]

    for prompt_len in range(1, 260, 7):
        for seq_len in range(prompt_len + 1, prompt_len + 600, 13):
            q0 = shared_prefix_length(prompt_len, seq_len)
            assert 0 <= q0 < prompt_len
            if q0:  # the two passes cut the queries exactly as the full pass
                assert blocks(0, q0) + blocks(q0, seq_len - q0) == blocks(0, seq_len)
    assert shared_prefix_length(68, 115) == 64  # the default model's training step


# ----------------------------------------------------------------------------- where lean rounds differently
# Two parts of sampling are computed another way than generate() computes them, for speed: the
# decode step's attention (one query per row) and the LoRA adapters, folded into the weights. Both
# are the same function, rounded differently (float32 only); the token tests above still find the
# same tokens, and the tests below pin the size of the difference and the sampled distribution.
def test_one_query_attention_equals_a_loop_over_rows_and_heads():
    from arca.decode.layers import one_query_attention

    gen = torch.Generator().manual_seed(0)
    B, heads, kv_heads, L, D = 5, 6, 2, 9, 8
    q, k, v = (torch.randn(s, generator=gen) for s in [(B, heads, D), (B, kv_heads, L, D), (B, kv_heads, L, D)])
    allowed = torch.rand(B, L, generator=gen) > 0.3
    allowed[:, -1] = True  # the query's own slot
    mask = torch.zeros(B, 1, 1, L).masked_fill(~allowed[:, None, None], -math.inf)
    got = one_query_attention(q, k, v, mask, 0.35)  # [B, 1, heads, D]
    want = torch.empty(B, 1, heads, D)
    for b in range(B):
        for h in range(heads):
            g = h // (heads // kv_heads)  # repeat_kv: consecutive query heads share a key/value head
            s = [float(q[b, h] @ k[b, g, j]) * 0.35 if allowed[b, j] else -math.inf for j in range(L)]
            m = max(s)
            e = [math.exp(x - m) for x in s]
            want[b, 0, h] = sum(w * v[b, g, j] for j, w in enumerate(e)) / sum(e)
    assert torch.allclose(got, want, atol=1e-6)
    # the kernel it replaces, on the same inputs
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, None], k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), attn_mask=mask, scale=0.35
    )  # [B, heads, 1, D]
    assert torch.allclose(got, sdpa.transpose(1, 2), atol=1e-6)
    no_mask = one_query_attention(q, k, v, None, 0.35)
    assert torch.allclose(no_mask, one_query_attention(q, k, v, torch.zeros_like(mask), 0.35))


def test_merged_projection_is_the_same_linear_map():
    import peft

    from arca.decode.layers import merged, projection

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(16, 12))
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=12, lora_dropout=0.1, target_modules=["0"]))
    random_lora_b(model)
    layer = model.base_model.model[0]
    x = torch.randn(7, 16)
    model.eval()
    p = projection(layer)
    folded = merged(p)
    assert folded.loras == [] and not torch.equal(folded.weight, p.weight)
    with torch.no_grad():
        assert torch.allclose(folded(x), layer(x), atol=1e-6) and torch.allclose(p(x), layer(x), atol=1e-6)
    assert torch.equal(layer.base_layer.weight, p.weight)  # the model's own weights are untouched
    model.train()  # dropout active: nothing is folded (the gradient pass keeps A and B apart)
    assert merged(projection(layer)).loras
    with model.disable_adapter():
        assert merged(projection(layer)).weight is layer.base_layer.weight


def test_lean_logits_follow_the_model_up_to_rounding(qwen3, monkeypatch):
    # every step's logits (prompt pass and decode steps, LoRA folded) against one full forward of
    # the model over the sampled sequence: the difference is float32 rounding, not a different model
    import arca.decode.decoder as dec

    model, tok = qwen3
    seen = []
    monkeypatch.setattr(dec, "process_scores", lambda logits, *a: seen.append(logits.clone()) or real(logits, *a))
    real = process_scores
    r = TransformersGenerator(model, tok, decoder="lean").generate(PROMPTS, Sampling(2, 24, 1.0, 0.95, 50, seed=5))
    P, T = r.prompt_ids.shape[1], r.completion_ids.shape[1]
    ids = torch.cat([r.prompt_ids, r.completion_ids], dim=1)
    am = torch.cat([r.prompt_mask, r.completion_mask.long()], dim=1)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=am).logits[:, P - 1 : P + T - 1]  # [B, T, V]
    got = torch.stack(seen[:T], dim=1)  # [B, T, V]
    live = r.completion_mask.bool()  # steps at which each row was still running
    assert live.sum() > 40
    diff = (got - full).abs()[live]
    assert diff.max() < 2e-5, float(diff.max())


def _chi_square_p(a: list[int], b: list[int]) -> float:
    """Two-sample chi-square test of equal category frequencies; p-value (Wilson-Hilferty approximation)."""
    na, nb = sum(a), sum(b)
    stat, dof = 0.0, -1
    for x, y in zip(a, b):
        if x + y == 0:
            continue
        ea, eb = (x + y) * na / (na + nb), (x + y) * nb / (na + nb)
        stat += (x - ea) ** 2 / ea + (y - eb) ** 2 / eb
        dof += 1
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_sampled_tokens_follow_generates_distribution(qwen3):
    # 1200 samples of one prompt from each decoder under different seeds: the frequencies of the
    # tokens at decode steps 2-4 (lean's own attention and folded LoRA) do not tell the decoders apart,
    # while a slightly hotter temperature is told apart by the same test
    model, tok = qwen3

    def counts(decoder, seed, temperature=1.0):
        r = TransformersGenerator(model, tok, batch_size=400, decoder=decoder).generate(
            PROMPTS[:1], Sampling(1200, 4, temperature, seed=seed, min_new_tokens=4)
        )
        return [torch.bincount(r.completion_ids[:, t], minlength=len(tok)).tolist() for t in range(1, 4)]

    lean, hf, hot = counts("lean", 1), counts("generate", 2), counts("generate", 2, temperature=1.5)
    for t in range(3):
        assert _chi_square_p(lean[t], hf[t]) > 1e-3
    assert min(_chi_square_p(lean[t], hot[t]) for t in range(3)) < 1e-6


# ----------------------------------------------------------------------------- the gradient pass, prompt once per group
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_shared_prompt_gradient_pass_equals_the_full_pass(request, arch):
    from arca.scoring import policy_scores

    model, tok = request.getfixturevalue(arch)
    r = TransformersGenerator(model, tok, decoder="lean").generate(PROMPTS, Sampling(4, 20, 1.0, 0.95, 50, seed=4))
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    out = {}
    model.eval()  # no dropout: both passes compute the same function
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        s = policy_scores(model, r, want_entropies=True, want_hidden=True, share_prompt=share)
        ((s.logprobs * r.completion_mask).sum() / 7).backward()
        out[share] = (s, [p.grad.clone() for p in lora])
    (full, g_full), (shared, g_shared) = out[False], out[True]
    m = r.completion_mask.bool()
    assert torch.allclose(shared.logprobs[m], full.logprobs[m], atol=2e-5)
    assert torch.allclose(shared.hidden[m], full.hidden[m], atol=2e-5)
    assert torch.allclose(shared.entropies[m], full.entropies[m], atol=2e-5)
    assert all((a - b).norm() <= 1e-5 * b.norm() for a, b in zip(g_shared, g_full))  # summed in another order
    assert any(g.abs().sum() > 0 for g in g_full)


def test_shared_prompt_gradient_pass_uses_dropout_and_the_lean_layers(qwen3, monkeypatch):
    import arca.decode.decoder as dec
    from arca.scoring import policy_scores

    model, tok = qwen3
    r = TransformersGenerator(model, tok, decoder="lean").generate(PROMPTS, Sampling(4, 12, 1.0, 0.95, 50, seed=6))
    calls = []
    real = dec.LeanDecoder.final_hidden
    monkeypatch.setattr(
        dec.LeanDecoder, "final_hidden", lambda self, *a, **kw: calls.append(kw) or real(self, *a, **kw)
    )
    model.train()  # LoRA dropout (0.05) on: two passes draw different masks
    try:
        torch.manual_seed(0)
        a = policy_scores(model, r, False, False, share_prompt=True).logprobs
        b = policy_scores(model, r, False, False, share_prompt=True).logprobs
        assert calls == [{"exact": False}, {"exact": False}]
        assert not torch.equal(a, b) and torch.isfinite(a).all()
        policy_scores(model, r, False, False, share_prompt=False)  # the full pass: no lean call
        policy_scores(model, r, False, False, want_lora_delta=True, share_prompt=True)  # hooks need peft's modules
        assert len(calls) == 2
    finally:
        model.eval()


@pytest.mark.parametrize("share", [True, False])
def test_adapter_at_zero_gives_the_reference_pass_bit_for_bit(qwen3, share):
    # B = 0 (every run's first step): the adapted pass and the adapter-off pass must agree exactly,
    # so that ARCA's residual and divergence's log-ratio are 0 and not the rounding noise of two
    # differently shaped passes (the reference pass runs as the gradient pass runs)
    from arca.scoring import policy_scores, reference_scores

    model, tok = qwen3
    r = TransformersGenerator(model, tok, decoder="lean").generate(PROMPTS, Sampling(4, 40, 1.0, 0.95, 50, seed=8))
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    model.train()  # LoRA dropout on, as in the update
    try:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in saved:
                    p.zero_()
        pol = policy_scores(model, r, False, True, share_prompt=share)
        with torch.no_grad():
            ref = reference_scores(model, r, True, share_prompt=share)
        assert torch.equal(pol.hidden, ref.hidden)
        assert torch.equal(pol.logprobs.detach(), ref.logprobs)
    finally:
        model.eval()
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])


@pytest.mark.parametrize("greedy", [False, True], ids=["sampled", "greedy"])
@pytest.mark.parametrize("decoder", ["lean", "generate"])
def test_non_finite_logits_raise_the_projects_error(llama, decoder, greedy):
    from arca.config import NonFiniteError

    model, tok = llama
    head = model.get_output_embeddings().weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head[0, 0] = float("nan")  # one weight: token 0's logit is NaN in every row
        gen = TransformersGenerator(model, tok, batch_size=8, decoder=decoder)
        with pytest.raises(NonFiniteError, match="non-finite logits"):
            gen.generate(["1+1=", "2+2="], Sampling(2, 8, 1.0, 0.95, greedy=greedy))
    finally:
        with torch.no_grad():
            head.copy_(saved)
