"""Scoring passes (arca.scoring): token log-probs / entropies, alignment with left-padded prompts,
and the adapter-off reference pass of a peft LoRA model at init (B = 0) and after B changes."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from helpers import PAD, ROWS, make_rollouts, tiny_model

from arca import credit
from arca.rollout import Rollouts
from arca.scoring import (
    _final_hidden,
    _sequence,
    credit_inputs_for_rollouts,
    policy_scores,
    reference_scores,
    token_entropies,
    token_logprobs,
)

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@contextlib.contextmanager
def adapter_off_passes(model):
    """Counts entries into ``model.disable_adapter()`` (every adapter-off pass goes through it)."""
    calls = {"n": 0}
    real = model.disable_adapter

    def counting():
        calls["n"] += 1
        return real()

    model.disable_adapter = counting
    try:
        yield calls
    finally:
        del model.disable_adapter


# ----------------------------------------------------------------------------- token_logprobs
def _ref_logprobs(logits, targets):
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_token_logprobs_value_and_grad_match_log_softmax(chunk):
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 5, 11
    logits = (torch.randn(B, T, V, generator=g) * 3).requires_grad_(True)
    targets = torch.randint(0, V, (B, T), generator=g)
    up = torch.randn(B, T, generator=g)  # arbitrary upstream gradient

    lp = token_logprobs(logits, targets, chunk)
    assert lp.shape == (B, T) and lp.dtype == torch.float32
    (g_fast,) = torch.autograd.grad((lp * up).sum(), logits)

    logits2 = logits.detach().clone().requires_grad_(True)
    ref = _ref_logprobs(logits2, targets)
    (g_ref,) = torch.autograd.grad((ref * up).sum(), logits2)
    torch.testing.assert_close(lp, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-6)


def test_token_logprobs_gradcheck_float64():
    # The function computes in float32 (its documented output dtype) even for float64 logits,
    # so finite differences need a step (1e-3) well above float32 rounding of the forward.
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (2, 3), generator=g)
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, targets, 2), (logits,), eps=1e-3, atol=1e-3, rtol=1e-3)
    # and the analytic backward agrees with float64 autograd of log_softmax to float32 precision
    lp = token_logprobs(logits, targets, 4)
    (g_fast,) = torch.autograd.grad(lp.sum(), logits)
    assert g_fast.dtype == torch.float64
    l2 = logits.detach().clone().requires_grad_(True)
    ref = torch.log_softmax(l2, -1).gather(-1, targets[..., None]).squeeze(-1)
    (g_ref,) = torch.autograd.grad(ref.sum(), l2)
    torch.testing.assert_close(g_fast, g_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(lp.double(), ref.detach(), rtol=0, atol=1e-6)


def test_token_logprobs_bfloat16_logits():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 9, generator=g).to(torch.bfloat16).requires_grad_(True)
    targets = torch.randint(0, 9, (2, 4), generator=g)
    lp = token_logprobs(logits, targets, 3)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, _ref_logprobs(logits.detach(), targets), rtol=1e-5, atol=1e-5)
    (gr,) = torch.autograd.grad(lp.sum(), logits)
    assert gr.dtype == torch.bfloat16
    l2 = logits.detach().float().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(_ref_logprobs(l2, targets).sum(), l2)
    torch.testing.assert_close(gr.float(), g_ref, rtol=0, atol=1e-2)


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_token_entropies_match_direct(chunk):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 13, generator=g) * 2
    logits[0, 0] = 0.0  # uniform: entropy log(13)
    logits[1, 1] = torch.tensor([50.0] + [0.0] * 12)  # nearly one-hot: entropy ~ 0
    p = torch.softmax(logits, -1)
    direct = -(p * torch.log(p)).sum(-1)
    ent = token_entropies(logits, chunk)
    assert ent.shape == (3, 4) and ent.dtype == torch.float32
    torch.testing.assert_close(ent, direct, rtol=1e-5, atol=1e-6)
    assert float(ent[0, 0]) == pytest.approx(torch.log(torch.tensor(13.0)).item(), rel=1e-6)
    assert 0 <= float(ent[1, 1]) < 1e-12
    assert not token_entropies(logits.requires_grad_(True), chunk).requires_grad


# ----------------------------------------------------------------------------- a tiny real causal LM
def slow_row_logprobs(model, prompt, completion, n):
    """Unpadded prompt+completion alone; logits at position len(prompt)-1+t-1 predict y_t."""
    ids = torch.tensor([prompt + completion[:n]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]  # [L, V]
    lp = torch.log_softmax(logits.float(), -1)
    out = []
    for t in range(1, n + 1):
        pos = len(prompt) - 1 + t - 1
        out.append(lp[pos, completion[t - 1]])
    return torch.stack(out), logits


def slow_row_hidden(model, prompt, completion, n):
    ids = torch.tensor([prompt + completion[:n]])
    with torch.no_grad():
        h = model.model(input_ids=ids).last_hidden_state[0]  # [L, H], after the final norm
    return h[len(prompt) - 1 : len(prompt) - 1 + n]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_policy_scores_left_padded_match_unpadded_reference(attn):
    model = tiny_model(attn=attn)
    r = make_rollouts()
    s = policy_scores(model, r, want_entropies=True, want_hidden=True)
    T = r.completion_ids.shape[1]
    assert s.logprobs.shape == (len(ROWS), T)
    assert s.entropies.shape == (len(ROWS), T)
    assert s.hidden.shape == (len(ROWS), T, 32)
    for i, (p, c, n) in enumerate(ROWS):
        ref, logits = slow_row_logprobs(model, p, c, n)
        torch.testing.assert_close(s.logprobs[i, :n].detach(), ref, rtol=1e-5, atol=1e-5)
        # entropies at the same positions
        pos = torch.arange(len(p) - 1, len(p) - 1 + n)
        lpv = torch.log_softmax(logits[pos].float(), -1)
        torch.testing.assert_close(s.entropies[i, :n], -(lpv.exp() * lpv).sum(-1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s.hidden[i, :n], slow_row_hidden(model, p, c, n), rtol=1e-5, atol=1e-5)
    assert torch.all(torch.isfinite(s.logprobs))  # also on padded positions (masked later)


def _slow_entropies(model, prompt, tokens):
    """Entropies of the distributions after each prefix prompt + tokens[:t], t = 0..len(tokens), unpadded."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 :]  # [n + 1, V]
    lp = torch.log_softmax(logits.float(), -1)
    return -(lp.exp() * lp).sum(-1)  # [n + 1]: H_1 .. H_{n+1}


def test_entropy_at_the_masked_eos_column_predicts_the_eos():
    # pad == EOS (as Qwen3-1.7B-Base): the author's mask leaves the EOS out, yet its column's entropy
    # is H_{T+1}, the distribution that predicted the EOS, read at y_T; entropy_reduction gives the
    # last real token max(0, H_T - H_{T+1}) from it. Only a row filling the last column gets 0 there.
    from arca.rollout import completion_mask

    eos = 1
    model = tiny_model(seed=3)
    rows = [([5, 6, 7], [10, 11, eos, eos]), ([4], [12, eos, eos, eos]), ([8, 9], [13, 14, 15, 16])]
    P, T = 3, 4
    pid = torch.tensor([[PAD] * (P - len(p)) + p for p, _ in rows])
    pm = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p, _ in rows])
    cid = torch.tensor([c for _, c in rows])
    mask = completion_mask(cid, {eos}, eos, rule="author")  # [3, 4]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    x = credit_inputs_for_rollouts(model, Rollouts(pid, pm, cid, mask, ["x"] * 3), needs=frozenset({credit.ENTROPIES}))
    alpha = credit.entropy_reduction_signal(x)  # [3, 4]
    last = []
    for i, ((p, c), n) in enumerate(zip(rows, (2, 1, 4))):
        h = _slow_entropies(model, p, c[:n])  # H_1 .. H_{n+1}
        torch.testing.assert_close(x.entropies[i, : min(n + 1, T)], h[: min(n + 1, T)], rtol=1e-5, atol=1e-5)
        expected = torch.clamp(h[:n] - h[1 : n + 1], min=0.0)  # alpha_1 .. alpha_n, alpha_n from H_{n+1}
        if n == T:
            expected[-1] = 0.0  # y_T in the last column: no H_{T+1} in the batch
        torch.testing.assert_close(alpha[i, :n], expected, rtol=1e-5, atol=1e-5)
        last.append(float(expected[-1]))
    assert max(last[:2]) > 0  # the masked-EOS entropy does change a weight here


def test_sequence_ids_mask_and_left_padded_position_ids():
    # RoPE attention is invariant to a constant shift of a row's positions, so the model-level check
    # above cannot see whether left padding is skipped in the position ids; check them directly.
    r = make_rollouts()
    ids, am, pos, P = _sequence(r, torch.device("cpu"))
    assert P == 5
    assert ids.shape == am.shape == pos.shape == (4, 5 + 4 - 1)  # the last completion token is not input
    # row 1: prompt [4, 3] after 3 pads, completion 13 14 15 (16 dropped as it predicts nothing)
    assert ids[1].tolist() == [PAD, PAD, PAD, 4, 3, 13, 14, 15]
    assert am[1].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert pos[1, 3:].tolist() == [0, 1, 2, 3, 4]  # the first real token is position 0
    # row 0: no padding, positions 0..7
    assert pos[0].tolist() == list(range(8))
    # row 3: prompt [11] after 4 pads; completion y_1 = 18 real, the rest padding (masked)
    assert am[3].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert pos[3, 4:6].tolist() == [0, 1]


def test_final_hidden_alignment_and_shift_detects_misalignment():
    model = tiny_model(seed=1)
    r = make_rollouts()
    h = _final_hidden(model, r)
    p, c, n = ROWS[1]
    ref = slow_row_hidden(model, p, c, n)
    torch.testing.assert_close(h[1, :n].detach(), ref, rtol=1e-5, atol=1e-5)
    # the reference itself distinguishes a one-position shift (the check has teeth)
    ids = torch.tensor([p + c[:n]])
    with torch.no_grad():
        full = model.model(input_ids=ids).last_hidden_state[0]
    assert not torch.allclose(full[len(p) : len(p) + n], ref, atol=1e-3)


def test_policy_scores_gradient_flows_to_parameters():
    model = tiny_model(seed=2)
    model.train()
    r = make_rollouts()
    s = policy_scores(model, r, want_entropies=False, want_hidden=False)
    assert s.entropies is None and s.hidden is None
    assert s.logprobs.requires_grad
    (s.logprobs * r.completion_mask).sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- peft LoRA
def lora_model(seed=0):
    base = tiny_model(seed=seed)
    plain = copy.deepcopy(base)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0))
    return model, plain


def _lora_b_params(model):
    return [p for n, p in model.named_parameters() if "lora_B" in n]


def _randomize_lora_b(model, seed: int, scale: float) -> None:
    """B != 0, so that the adapter changes the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in _lora_b_params(model):
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_lora_at_init_reference_equals_policy_and_falls_back_to_uniform():
    model, _ = lora_model()
    assert len(_lora_b_params(model)) == 2 * 7  # 7 projections in each of 2 layers
    r = make_rollouts()
    with adapter_off_passes(model) as off:
        x = credit_inputs_for_rollouts(model, r)
    assert off["n"] == 1  # a single adapter-off pass
    assert torch.equal(x.ref_logprobs, x.logprobs)
    assert torch.equal(x.hidden, x.base_hidden)
    assert x.entropies is not None
    assert not x.logprobs.requires_grad
    uniform = r.completion_mask / r.completion_mask.sum(1, keepdim=True)
    for method in ("divergence", "arca", "arca_permuted"):
        assert torch.all(credit.REGISTRY[method].signal(x) == 0)
        w, fb = credit.token_weights(method, x)
        torch.testing.assert_close(w, uniform, rtol=0, atol=1e-7)
        assert fb.all(), method


def test_lora_nonzero_b_adapter_off_equals_base_model():
    model, plain = lora_model(seed=3)
    _randomize_lora_b(model, seed=0, scale=0.5)
    model.eval()
    r = make_rollouts()
    ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
    am = torch.cat([r.prompt_mask, r.completion_mask.long()], 1)
    with torch.no_grad():
        base_logits = plain(input_ids=ids, attention_mask=am).logits
        on_logits = model(input_ids=ids, attention_mask=am).logits
        with model.disable_adapter():
            off_logits = model(input_ids=ids, attention_mask=am).logits
        on_again = model(input_ids=ids, attention_mask=am).logits  # the adapter is back on
    torch.testing.assert_close(off_logits, base_logits, rtol=0, atol=1e-6)
    assert (on_logits - base_logits).abs().max() > 1e-2
    torch.testing.assert_close(on_again, on_logits)

    # the credit inputs now carry a real residual; it matches a direct computation
    x = credit_inputs_for_rollouts(model, r)
    m = r.completion_mask > 0
    assert (x.ref_logprobs - x.logprobs)[m].abs().max() > 1e-3
    alpha = credit.arca_signal(x)
    assert torch.all(alpha[m] > 0)
    for i, (p, c, n) in enumerate(ROWS):
        torch.testing.assert_close(x.base_hidden[i, :n], slow_row_hidden(plain, p, c, n), rtol=1e-5, atol=1e-5)
        ref_lp, _ = slow_row_logprobs(plain, p, c, n)
        torch.testing.assert_close(x.ref_logprobs[i, :n], ref_lp, rtol=1e-5, atol=1e-5)
        pol_lp, _ = slow_row_logprobs(model, p, c, n)
        torch.testing.assert_close(x.logprobs[i, :n], pol_lp, rtol=1e-5, atol=1e-5)
    w, fb = credit.token_weights("arca", x)
    assert not fb.any()
    torch.testing.assert_close((w * r.completion_mask).sum(1), torch.ones(len(ROWS)), rtol=0, atol=1e-6)


def test_reference_scores_only_hidden_when_no_logprobs_needed():
    model, _ = lora_model(seed=4)
    r = make_rollouts()
    s = reference_scores(model, r, want_logprobs=False)
    assert s.logprobs is None
    assert s.hidden.shape == (len(ROWS), r.completion_ids.shape[1], 32)
    x = credit_inputs_for_rollouts(model, r, needs=frozenset({credit.HIDDEN}))
    assert x.ref_logprobs is None and x.entropies is None and x.hidden is not None
    with adapter_off_passes(model) as off:
        x2 = credit_inputs_for_rollouts(model, r, needs=frozenset({credit.ENTROPIES}))
    assert off["n"] == 0  # no adapter-off pass when not needed
    assert x2.base_hidden is None and x2.entropies is not None


# ----------------------------------------------------------------------------- arca_layers: LoRA deltas by hooks
def test_lora_delta_equals_hand_computed_sum_over_residual_writers():
    """Sum over layers of (alpha/r) B A x for o_proj and down_proj only, x captured at their inputs."""
    model, _ = lora_model(seed=5)
    _randomize_lora_b(model, seed=1, scale=0.3)
    model.train()  # as in training; lora_dropout is 0 here so the pass is deterministic
    r = make_rollouts()

    # capture each residual writer's input x [B, L, in] with pre-hooks on the LoRA-wrapped layers
    inputs, handles = {}, []
    for name, mod in model.named_modules():
        if name.endswith(("self_attn.o_proj", "mlp.down_proj")) and hasattr(mod, "lora_A"):
            handles.append(
                mod.register_forward_pre_hook(lambda m, a, name=name: inputs.__setitem__(name, (m, a[0].detach())))
            )
    s = policy_scores(model, r, want_entropies=False, want_hidden=False, want_lora_delta=True)
    for h in handles:
        h.remove()
    assert len(inputs) == 2 * 2  # o_proj and down_proj in each of 2 layers

    _, _, _, P = _sequence(r, torch.device("cpu"))
    expected = 0
    for name, (mod, x) in inputs.items():
        A, B = mod.lora_A["default"].weight, mod.lora_B["default"].weight  # [r, in], [out, r]
        expected = expected + (8 / 4) * x @ A.T @ B.T  # [B, L, out]: scaling = lora_alpha / r = 2
    expected = expected[:, P - 1 :, :]  # positions predicting y_1..y_T
    assert s.lora_delta.shape == (len(ROWS), r.completion_ids.shape[1], 32)
    assert not s.lora_delta.requires_grad and s.logprobs.requires_grad  # same pass, gradient intact
    torch.testing.assert_close(s.lora_delta, expected.detach(), rtol=1e-5, atol=1e-6)

    # with every target's delta included (q_proj also maps 32 -> 32) the sum would differ: the
    # check can tell residual writers from the rest
    q = [m for n, m in model.named_modules() if n.endswith("self_attn.q_proj") and hasattr(m, "lora_A")]
    assert q and float(q[0].lora_B["default"].weight.detach().abs().sum()) > 0

    x = credit_inputs_for_rollouts(model, r, needs=frozenset({credit.LORA_DELTA}))
    torch.testing.assert_close(x.lora_delta, s.lora_delta)
    alpha = credit.arca_layers_signal(x)
    m = r.completion_mask > 0
    torch.testing.assert_close(alpha[m], torch.linalg.vector_norm(expected.detach(), dim=-1)[m], rtol=1e-5, atol=1e-6)


def test_lora_delta_zero_at_init_and_no_reference_pass():
    model, _ = lora_model(seed=6)
    r = make_rollouts()
    with adapter_off_passes(model) as off:
        x = credit_inputs_for_rollouts(model, r, needs=frozenset({credit.LORA_DELTA}))
    assert off["n"] == 0  # no adapter-off pass
    assert torch.all(x.lora_delta == 0)
    w, fb = credit.token_weights("arca_layers", x)
    torch.testing.assert_close(w, r.completion_mask / r.completion_mask.sum(1, keepdim=True), rtol=0, atol=1e-7)
    assert fb.all()


def test_lora_delta_needs_a_residual_writer():
    from arca.config import ConfigError
    from arca.scoring import LoraDeltaSum

    base = tiny_model(seed=7)
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    with pytest.raises(ConfigError, match="residual-stream writer"):
        LoraDeltaSum(model)
