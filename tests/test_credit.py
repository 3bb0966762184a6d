"""Credit methods (arca.credit) against hand-computed examples, alignment, masking and the registry."""

from __future__ import annotations

import math

import pytest
import torch

from arca import credit
from arca.credit import REGISTRY, CreditInputs, loss_weights, normalize, token_weights
from arca.diagnostics import effective_token_ratio, gini

EPS = 1e-8


def t(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


def full_inputs(B=3, T=6, H=5, seed=0, mask=None, requires_grad=False):
    """A batch with every input a method may need, random but reproducible."""
    g = torch.Generator().manual_seed(seed)
    if mask is None:
        lengths = [T - (i % T) for i in range(B)]  # T, T-1, ...
        mask = torch.stack([(torch.arange(T) < n).float() for n in lengths])
    logprobs = -torch.rand(B, T, generator=g) * 3 - 0.01
    ref = -torch.rand(B, T, generator=g) * 3 - 0.01
    ent = torch.rand(B, T, generator=g) * 4
    hid = torch.randn(B, T, H, generator=g)
    base = torch.randn(B, T, H, generator=g)
    delta = torch.randn(B, T, H, generator=g)
    decisive = (torch.rand(B, T, generator=g) > 0.8).float()  # labelled decisive tokens (oracle methods)
    first_error = torch.zeros(B, T)  # one first-error token in every other row (the oracle)
    first_error[::2, 0] = 1.0
    # the literature methods' inputs (arca.credit_passes): groups of two rows
    token_ids = torch.randint(0, 5, (B, T), generator=g)
    rewards = (torch.rand(B, generator=g) > 0.5).float()
    saliency = torch.rand(B, T, generator=g)
    span_drop = torch.randn(B, T, generator=g)
    step_values = torch.randn(B, T, generator=g)
    if requires_grad:
        for x in (logprobs, ref, ent, hid, base, delta):
            x.requires_grad_(True)
    return CreditInputs(
        mask=mask,
        logprobs=logprobs,
        entropies=ent,
        ref_logprobs=ref,
        hidden=hid,
        base_hidden=base,
        lora_delta=delta,
        decisive=decisive,
        first_error=first_error,
        seed=3,
        token_ids=token_ids,
        rewards=rewards,
        advantages=rewards - 0.5,
        groups=torch.arange(B) // 2,
        saliency=saliency,
        span_drop=span_drop,
        step_values=step_values,
    )


# ----------------------------------------------------------------------------- hand-computed examples
def test_surprisal_hand_example_s2():
    # logprobs [-1, -2, -0.5] -> alpha (1, 2, 0.5); s = 2:
    # scores ((1+1e-8)^2, (2+1e-8)^2, (0.5+1e-8)^2) ~ (1, 4, 0.25), sum 5.25
    x = CreditInputs(mask=t([[1, 1, 1]]), logprobs=t([[-1.0, -2.0, -0.5]]))
    w, fb = token_weights("surprisal", x, sharpen=2.0)
    expected = t([[1.0, 4.0, 0.25]]) / 5.25
    torch.testing.assert_close(w, expected, rtol=1e-6, atol=1e-7)
    assert not fb.any()


def test_surprisal_hand_example_s1():
    # s = 1: scores (1, 2, 0.5) (+1e-8 each), sum 3.5 -> (2/7, 4/7, 1/7)
    x = CreditInputs(mask=t([[1, 1, 1]]), logprobs=t([[-1.0, -2.0, -0.5]]))
    w, _ = token_weights("surprisal", x, sharpen=1.0)
    torch.testing.assert_close(w, t([[2 / 7, 4 / 7, 1 / 7]]), rtol=1e-6, atol=1e-7)


def test_sharpen_changes_concentration():
    x = CreditInputs(mask=t([[1, 1, 1]]), logprobs=t([[-1.0, -2.0, -0.5]]))
    w1, _ = token_weights("surprisal", x, sharpen=1.0)
    w2, _ = token_weights("surprisal", x, sharpen=2.0)
    # squaring moves mass toward the largest signal: 4/7 -> 4/5.25, and away from the smallest
    assert w2[0, 1] > w1[0, 1]
    assert w2[0, 2] < w1[0, 2]
    assert float(gini(w2, x.mask)[0]) > float(gini(w1, x.mask)[0])
    assert float(effective_token_ratio(w2, x.mask)[0]) < float(effective_token_ratio(w1, x.mask)[0])


def test_exact_eps_arithmetic_tiny_signal():
    # alpha (0, 1e-8) with s = 1: scores (1e-8, 2e-8), sum 3e-8 > eps -> (1/3, 2/3), no fall-back.
    # With s = 2: scores (1e-16, 4e-16), sum 5e-16 <= eps -> uniform fall-back (1/2, 1/2).
    x = CreditInputs(mask=t([[1, 1]], torch.float64), logprobs=t([[0.0, -1e-8]], torch.float64))
    w1, fb1 = token_weights("surprisal", x, sharpen=1.0)
    torch.testing.assert_close(w1, t([[1 / 3, 2 / 3]], torch.float64), rtol=1e-9, atol=1e-12)
    assert not fb1.any()
    w2, fb2 = token_weights("surprisal", x, sharpen=2.0)
    torch.testing.assert_close(w2, t([[0.5, 0.5]], torch.float64))
    assert fb2.tolist() == [True]


@pytest.mark.parametrize("sharpen", [1.0, 2.0, 3.0])
def test_uniform_is_one_over_T_over_mask(sharpen):
    mask = t([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    x = CreditInputs(mask=mask, logprobs=-torch.rand(4, 4))
    w, fb = token_weights("uniform", x, sharpen=sharpen)
    expected = t([[0.25] * 4, [0.5, 0.5, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    torch.testing.assert_close(w, expected)
    assert not fb.any()  # uniform is never a fall-back


def test_entropy_reduction_hand_example():
    # H = (3, 1, 2, 0.5); alpha = (max(0,3-1), max(0,1-2), max(0,2-0.5), last -> 0) = (2, 0, 1.5, 0)
    # s = 2: ((2+e)^2, e^2, (1.5+e)^2, e^2) ~ (4, 0, 2.25, 0) / 6.25
    x = CreditInputs(mask=t([[1, 1, 1, 1]]), logprobs=torch.zeros(1, 4), entropies=t([[3.0, 1.0, 2.0, 0.5]]))
    alpha = credit.entropy_reduction_signal(x)
    torch.testing.assert_close(alpha, t([[2.0, 0.0, 1.5, 0.0]]))
    w, _ = token_weights("entropy_reduction", x, sharpen=2.0)
    torch.testing.assert_close(w, t([[4.0, 0.0, 2.25, 0.0]]) / 6.25, rtol=1e-6, atol=1e-7)


def test_entropy_reduction_last_real_token_uses_the_masked_column_after_it():
    # The author's rule (docs/method.md, Notation): y_T keeps max(0, H_T - H_{T+1}), H_{T+1} being the
    # entropy at the masked column after it (the EOS that the mask leaves out when pad == EOS);
    # only the last column of the padded batch has no H_{t+1} and gets 0.
    # Row 0: real tokens 0..2, H = (5, 1, 4 | 0.5): alpha = (4, 0, max(0, 4 - 0.5) = 3.5, 0)
    # Row 1: the same tokens but H_{T+1} = 6 > H_T: alpha = (4, 0, 0, *)
    # Row 2: every column real, entropies increase: alpha = 0 -> uniform fall-back
    x = CreditInputs(
        mask=t([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]]),
        logprobs=torch.zeros(3, 4),
        entropies=t([[5.0, 1.0, 4.0, 0.5], [5.0, 1.0, 4.0, 6.0], [1.0, 2.0, 3.0, 9.0]]),
    )
    alpha = credit.entropy_reduction_signal(x)
    torch.testing.assert_close(alpha[:2, :3], t([[4.0, 0.0, 3.5], [4.0, 0.0, 0.0]]))
    assert torch.all(alpha[:, 3] == 0) and torch.all(alpha[2] == 0)
    w, fb = token_weights("entropy_reduction", x)
    # s = 2: row 0 scores ((4+e)^2, e^2, (3.5+e)^2) ~ (16, 0, 12.25) / 28.25; row 1 ~ (1, 0, 0)
    torch.testing.assert_close(w[0], t([16.0, 0.0, 12.25, 0.0]) / 28.25, atol=1e-6, rtol=0)
    torch.testing.assert_close(w[1], t([1.0, 0.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(w[2], t([0.25] * 4))
    assert fb.tolist() == [False, False, True]


def test_entropy_reduction_single_token_rows():
    # One real token followed by a masked column: alpha = max(0, 7 - 2) = 5, weight 1, no fall-back.
    x = CreditInputs(mask=t([[1, 0, 0]]), logprobs=torch.zeros(1, 3), entropies=t([[7.0, 2.0, 0.0]]))
    assert credit.entropy_reduction_signal(x)[0, 0] == 5.0
    w, fb = token_weights("entropy_reduction", x)
    torch.testing.assert_close(w, t([[1.0, 0.0, 0.0]]))
    assert fb.tolist() == [False]
    # A one-column batch: nothing follows the token, alpha = 0 and the row falls back to uniform.
    y = CreditInputs(mask=t([[1]]), logprobs=torch.zeros(1, 1), entropies=t([[7.0]]))
    assert credit.entropy_reduction_signal(y)[0, 0] == 0.0
    assert token_weights("entropy_reduction", y)[1].tolist() == [True]


def test_divergence_hand_example():
    # logprobs (-1, -2, -3), ref (-1.5, -2, -1): alpha = (0.5, 0, 2)
    # s = 2: (0.25, ~0, 4) / 4.25
    x = CreditInputs(mask=t([[1, 1, 1]]), logprobs=t([[-1.0, -2.0, -3.0]]), ref_logprobs=t([[-1.5, -2.0, -1.0]]))
    torch.testing.assert_close(credit.divergence_signal(x), t([[0.5, 0.0, 2.0]]))
    w, _ = token_weights("divergence", x, sharpen=2.0)
    torch.testing.assert_close(w, t([[0.25, 0.0, 4.0]]) / 4.25, rtol=1e-6, atol=1e-7)
    w1, _ = token_weights("divergence", x, sharpen=1.0)
    torch.testing.assert_close(w1, t([[0.5, 0.0, 2.0]]) / 2.5, rtol=1e-6, atol=1e-7)


def test_arca_hand_example():
    # h - h_base per position: (3, 4) -> 5; (0, 0) -> 0; (1, 0) -> 1 (the L2 norm over H)
    # s = 2: (25, ~0, 1) / 26
    h = t([[[3.0, 4.0], [1.0, 1.0], [2.0, 0.0]]])
    hb = t([[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]])
    x = CreditInputs(mask=t([[1, 1, 1]]), logprobs=torch.zeros(1, 3), hidden=h, base_hidden=hb)
    torch.testing.assert_close(credit.arca_signal(x), t([[5.0, 0.0, 1.0]]))
    w, fb = token_weights("arca", x)
    torch.testing.assert_close(w, t([[25.0, 0.0, 1.0]]) / 26.0, rtol=1e-6, atol=1e-7)
    assert not fb.any()


# ----------------------------------------------------------------------------- masking and alignment
@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_masked_positions_zero_and_do_not_affect_others(method):
    x = full_inputs(B=2, T=5, seed=1, mask=t([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    w, _ = token_weights(method, x)
    assert torch.all(w[0, 3:] == 0)
    # change every input at the masked positions of row 0 only: weights must not move
    y = full_inputs(B=2, T=5, seed=1, mask=x.mask.clone())
    y.logprobs[0, 3:] = t([-50.0, -0.001])
    y.ref_logprobs[0, 3:] = t([0.0, -40.0])
    # for entropy_reduction the first masked column holds H_{T+1} of the last real token (see
    # test_entropy_reduction_last_real_token_uses_the_masked_column_after_it), so it stays
    y.entropies[0, 4:] = 0.0
    if method != "entropy_reduction":
        y.entropies[0, 3] = 100.0
    y.hidden[0, 3:] += 1000.0
    y.base_hidden[0, 3:] -= 7.0
    y.lora_delta[0, 3:] *= 100.0
    y.token_ids[0, 3:] = t([1, 2]).long()
    y.saliency[0, 3:] = 77.0
    y.span_drop[0, 3:] = t([9.0, -9.0])
    y.step_values[0, 3:] = 5.0
    w2, _ = token_weights(method, y)
    torch.testing.assert_close(w2, w, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["surprisal", "divergence", "arca"])
def test_alignment_weight_of_y_t_uses_index_t(method):
    # A large signal placed at index 2 must give the largest weight to index 2 (no shift by one).
    T = 5
    x = CreditInputs(
        mask=torch.ones(1, T),
        logprobs=torch.full((1, T), -0.1),
        ref_logprobs=torch.full((1, T), -0.1),
        hidden=torch.zeros(1, T, 3),
        base_hidden=torch.zeros(1, T, 3),
    )
    x.logprobs[0, 2] = -5.0  # surprisal 5 and divergence 4.9 at index 2
    x.hidden[0, 2, 0] = 5.0  # residual 5 at index 2
    x.hidden[0, :, 1] = 0.1 if method == "arca" else 0.0  # small residual elsewhere
    w, _ = token_weights(method, x)
    assert int(w.argmax()) == 2
    assert float(w[0, 2]) > 0.9


def test_alignment_entropy_reduction():
    # H_t at index t: a drop between index 1 and 2 -> alpha at index 1 only
    x = CreditInputs(mask=torch.ones(1, 4), logprobs=torch.zeros(1, 4), entropies=t([[1.0, 3.0, 0.5, 0.5]]))
    torch.testing.assert_close(credit.entropy_reduction_signal(x), t([[0.0, 2.5, 0.0, 0.0]]))


# ----------------------------------------------------------------------------- zero signal, fall-back
def test_divergence_and_arca_zero_at_identity_fall_back_to_uniform():
    x = full_inputs(B=3, T=4, seed=2, mask=t([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]))
    x.ref_logprobs = x.logprobs.clone()
    x.base_hidden = x.hidden.clone()
    uniform = t([[0.25] * 4, [0.5, 0.5, 0, 0], [0, 0, 0, 0]])
    for method in ("divergence", "arca", "arca_permuted"):
        alpha = REGISTRY[method].signal(x)
        assert torch.all(alpha == 0), method
        w, fb = token_weights(method, x)
        torch.testing.assert_close(w, uniform, rtol=0, atol=1e-7)
        assert fb.tolist() == [True, True, False], method  # an empty mask is no fall-back


def test_normalize_fallback_flag_and_rows():
    alpha = t([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = t([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    w, fb = normalize(alpha, mask)
    torch.testing.assert_close(w[0], t([0.5, 0.5, 0.0]))
    torch.testing.assert_close(w[1], t([1.0, 0.0, 0.0]), atol=1e-7, rtol=0)
    torch.testing.assert_close(w[2], t([0.0, 0.0, 0.0]))
    assert fb.tolist() == [True, False, False]
    assert fb.dtype == torch.bool


# ----------------------------------------------------------------------------- arca_permuted
def _permuted(x, seed):
    x2 = CreditInputs(**{**x.__dict__, "seed": seed})
    return token_weights("arca_permuted", x2)[0]


def test_arca_permuted_same_multiset_and_diagnostics():
    x = full_inputs(B=4, T=12, H=6, seed=5, mask=torch.stack([(torch.arange(12) < n).float() for n in (12, 9, 5, 1)]))
    w_arca, _ = token_weights("arca", x)
    w_perm = _permuted(x, 11)
    for b in range(4):
        m = x.mask[b] > 0
        torch.testing.assert_close(torch.sort(w_perm[b][m]).values, torch.sort(w_arca[b][m]).values)
        assert torch.all(w_perm[b][~m] == 0)
    torch.testing.assert_close(gini(w_perm, x.mask), gini(w_arca, x.mask), equal_nan=True)
    torch.testing.assert_close(effective_token_ratio(w_perm, x.mask), effective_token_ratio(w_arca, x.mask))
    # positional information is gone: with 12 distinct values the long row is (almost surely) moved
    assert not torch.equal(w_perm[0], w_arca[0])


def test_arca_permuted_deterministic_per_seed():
    x = full_inputs(B=2, T=10, seed=6, mask=torch.ones(2, 10))
    a = _permuted(x, 7)
    b = _permuted(x, 7)
    c = _permuted(x, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_arca_permuted_signal_keeps_masked_alpha():
    x = full_inputs(B=1, T=6, seed=7, mask=t([[1, 1, 1, 1, 0, 0]]))
    alpha = credit.arca_signal(x)
    perm = credit.arca_permuted_signal(x)
    torch.testing.assert_close(perm[0, 4:], alpha[0, 4:])  # masked positions untouched
    torch.testing.assert_close(torch.sort(perm[0, :4]).values, torch.sort(alpha[0, :4]).values)


# ----------------------------------------------------------------------------- registry
def test_registry_contents_and_reference_pass():
    assert set(credit.PAPER_METHODS) <= set(REGISTRY)
    assert {"uniform", "surprisal", "entropy_reduction", "divergence", "arca", "arca_permuted"} <= set(REGISTRY)
    ref = {name for name, m in REGISTRY.items() if m.needs_reference_pass}
    assert ref == {"divergence", "arca", "arca_permuted"}  # arca_layers: zero extra passes
    assert REGISTRY["arca_layers"].needs == frozenset({credit.LORA_DELTA})
    assert REGISTRY["entropy_top20"].needs == frozenset({credit.ENTROPIES, credit.STEP_ENTROPIES})
    assert REGISTRY["entropy_reduction"].needs == frozenset({credit.ENTROPIES})
    assert REGISTRY["uniform"].needs == frozenset()
    assert REGISTRY["surprisal"].needs == frozenset()


@pytest.mark.parametrize("method", sorted(REGISTRY))
@pytest.mark.parametrize("sharpen", [1.0, 2.0])
def test_every_method_shape_sum_detached(method, sharpen):
    x = full_inputs(B=4, T=7, seed=8, requires_grad=True)
    w, fb = token_weights(method, x, sharpen=sharpen)
    assert w.shape == (4, 7)
    assert fb.shape == (4,)
    assert not w.requires_grad and w.grad_fn is None
    assert torch.all(w >= 0) and torch.all(torch.isfinite(w))
    torch.testing.assert_close((w * x.mask).sum(1), torch.ones(4), atol=1e-6, rtol=0)
    assert torch.all(w[x.mask == 0] == 0)


@pytest.mark.parametrize(
    "method,missing",
    [
        ("entropy_reduction", "entropies"),
        ("divergence", "ref_logprobs"),
        ("arca", "hidden"),
        ("arca", "base_hidden"),
        ("arca_permuted", "hidden"),
        ("arca_permuted", "base_hidden"),
        ("entropy_top20", "entropies"),
        ("arca_layers", "lora_delta"),
    ],
)
def test_missing_input_raises_value_error_naming_it(method, missing):
    x = full_inputs(B=2, T=3)
    setattr(x, missing, None)
    with pytest.raises(ValueError) as err:
        token_weights(method, x)
    need = "hidden" if missing == "base_hidden" else missing
    assert need in str(err.value)
    assert method.split("_permuted")[0] in str(err.value)  # the permuted control reports via arca


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown credit method"):
        token_weights("nope", full_inputs())


def test_custom_registered_method_is_used():
    REGISTRY["_test_prob"] = credit.CreditMethod(lambda x: x.logprobs.exp(), frozenset(), "p")
    try:
        # p = (e^-1, e^-2); s = 1 -> proportional to p
        x = CreditInputs(mask=t([[1, 1]]), logprobs=t([[-1.0, -2.0]]))
        w, _ = token_weights("_test_prob", x, sharpen=1.0)
        p = torch.tensor([math.exp(-1), math.exp(-2)])
        torch.testing.assert_close(w[0], p / p.sum(), rtol=1e-6, atol=1e-7)
    finally:
        del REGISTRY["_test_prob"]


# ----------------------------------------------------------------------------- permuted control: exact diagnostics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arca_permuted_has_exactly_arcas_gini_and_effn_per_sequence(seed):
    lengths = (16, 11, 7, 3, 2)
    x = full_inputs(B=5, T=16, H=8, seed=20 + seed, mask=torch.stack([(torch.arange(16) < n).float() for n in lengths]))
    x.hidden, x.base_hidden = x.hidden.double(), x.base_hidden.double()
    x.mask = x.mask.double()
    w_arca, _ = token_weights("arca", x)
    w_perm = _permuted(x, 100 + seed)
    g_a, g_p = gini(w_arca, x.mask), gini(w_perm, x.mask)
    e_a, e_p = effective_token_ratio(w_arca, x.mask), effective_token_ratio(w_perm, x.mask)
    assert torch.equal(g_a, g_p)  # the same multiset sorted: bit-identical
    torch.testing.assert_close(e_p, e_a, rtol=1e-14, atol=0)  # only the summation order differs
    assert g_a.min() > 0.01  # non-trivial weights in every row, so the equality is not 0 == 0


# ----------------------------------------------------------------------------- entropy_top20
def test_entropy_top20_hand_case_selects_top_fifth_of_the_batch():
    ent = t([[0.1, 0.5, 0.3, 0.7, 0.0, 0.0], [0.9, 0.2, 1.0, 0.4, 0.6, 0.8]])
    mask = t([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])  # 0.7 (row 0, index 3) is padding
    x = CreditInputs(mask=mask, logprobs=torch.zeros(2, 6), entropies=ent)
    alpha = credit.entropy_top20_signal(x)
    # real entropies: .1 .5 .3 | .9 .2 1. .4 .6 .8 (9 tokens): q(0.8) at position 6.4 of the sorted
    # list (.1 .2 .3 .4 .5 .6 .8 .9 1.) = .8 + .4 * (.9 - .8) = .84 -> tokens .9 and 1.0
    torch.testing.assert_close(alpha, t([[0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0]]))
    w, fb = token_weights("entropy_top20", x)
    torch.testing.assert_close(w[1], t([0.5, 0, 0.5, 0, 0, 0]), atol=1e-7, rtol=0)
    # row 0 has none of the batch's top tokens: uniform fall-back over its 3 real tokens
    torch.testing.assert_close(w[0], t([1 / 3, 1 / 3, 1 / 3, 0, 0, 0]))
    assert fb.tolist() == [True, False]


def test_entropy_top20_count_matches_slow_reference():
    g = torch.Generator().manual_seed(4)
    for n_rows, T in [(3, 10), (5, 7), (1, 20)]:
        ent = torch.rand(n_rows, T, generator=g) * 3
        mask = (torch.rand(n_rows, T, generator=g) > 0.2).float()
        mask[:, 0] = 1.0
        x = CreditInputs(mask=mask, logprobs=torch.zeros(n_rows, T), entropies=ent)
        alpha = credit.entropy_top20_signal(x)
        real = sorted(float(v) for v in ent[mask > 0])
        n = len(real)
        k = 1 + math.floor(0.2 * (n - 1) + 1e-12)  # distinct values: the k highest are selected
        chosen = sorted(float(v) for v in ent[(alpha > 0)])
        assert chosen == real[n - k :]


def test_entropy_top20_uses_the_step_wide_threshold_when_given():
    # Alone this batch would select its own top token; with the step's entropies (all larger) none.
    x = CreditInputs(mask=torch.ones(1, 5), logprobs=torch.zeros(1, 5), entropies=t([[0.1, 0.2, 0.3, 0.4, 0.5]]))
    assert credit.entropy_top20_signal(x).sum() == 1
    x.step_entropies = torch.cat([x.entropies.flatten(), torch.full((20,), 9.0)])
    assert credit.entropy_top20_signal(x).sum() == 0
    w, fb = token_weights("entropy_top20", x)
    torch.testing.assert_close(w, torch.full((1, 5), 0.2))
    assert fb.tolist() == [True]


# ----------------------------------------------------------------------------- arca_layers
def test_arca_layers_hand_example():
    # summed deltas (3, 4) -> 5 and (0, 1) -> 1; s = 2: scores 25, 1 -> (25/26, 1/26)
    x = CreditInputs(mask=t([[1, 1]]), logprobs=torch.zeros(1, 2), lora_delta=t([[[3.0, 4.0], [0.0, 1.0]]]))
    torch.testing.assert_close(credit.arca_layers_signal(x), t([[5.0, 1.0]]))
    w, _ = token_weights("arca_layers", x)
    torch.testing.assert_close(w, t([[25.0, 1.0]]) / 26.0)


# ----------------------------------------------------------------------------- normalization
def test_mean_one_weights_average_one_over_the_mask():
    x = full_inputs(B=4, T=7, seed=9, mask=t([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0], [0] * 7]))
    for method in sorted(REGISTRY):
        w, _ = token_weights(method, x)
        wl = loss_weights(w, x.mask, "mean_one")
        n = x.mask.sum(1)
        torch.testing.assert_close((wl * x.mask).sum(1)[:3] / n[:3], torch.ones(3), rtol=1e-6, atol=1e-6)
        assert torch.all(wl[3] == 0) and torch.all(wl[x.mask == 0] == 0)
        torch.testing.assert_close(wl, w * n[:, None])  # the same shape of credit, rescaled per row
        assert loss_weights(w, x.mask, "sum_to_one") is w
    w, _ = token_weights("uniform", x)
    torch.testing.assert_close(loss_weights(w, x.mask, "mean_one"), x.mask)  # uniform -> w_t = 1


def test_unknown_normalization_raises():
    with pytest.raises(ValueError, match="unknown credit normalization 'l2'"):
        loss_weights(torch.ones(1, 2), torch.ones(1, 2), "l2")
