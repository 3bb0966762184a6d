"""The literature methods' extra passes (arca.credit_passes) against slow one-row references."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import ROWS, make_rollouts, tiny_model

from arca import credit, credit_passes
from arca.config import Config
from arca.rollout import Rollouts

ANSWER = 2


def test_answer_mask_and_spans_by_hand():
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    assert credit_passes.answer_mask(mask, 2).tolist() == [[0, 0, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert credit_passes.spans(7, 2, 2) == [(0, 2), (2, 4), (4, 5)]
    assert credit_passes.spans(2, 2, 2) == []


def _slow_answer_lp(model, prompt, completion, n, drop=()):
    """log pi(answer) of one unpadded row, the completion positions ``drop`` (0-based) masked out."""
    ids = torch.tensor([prompt + completion[:n]])
    am = torch.ones_like(ids)
    for t in drop:
        am[0, len(prompt) + t] = 0
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    lp = torch.log_softmax(model(input_ids=ids, attention_mask=am, position_ids=pos).logits[0].float(), -1)
    first = max(0, n - ANSWER)
    return sum(lp[len(prompt) - 1 + t, completion[t]] for t in range(first, n))


def test_span_drops_match_a_slow_reference():
    model = tiny_model(seed=4)
    r = make_rollouts()
    got = credit_passes.span_drops(model, r, span_length=1, answer_tokens=ANSWER)  # [B, T]
    with torch.no_grad():
        for i, (p, c, n) in enumerate(ROWS):
            base = _slow_answer_lp(model, p, c, n)
            for t in range(c.__len__()):
                want = float(base - _slow_answer_lp(model, p, c, n, drop=[t])) if t < n - ANSWER else 0.0
                assert float(got[i, t]) == pytest.approx(want, abs=1e-5), (i, t)
    assert float(got.abs().sum()) > 0  # the rows with spans before their answer moved it


def test_input_saliency_matches_a_slow_reference_and_leaves_parameter_grads():
    model = tiny_model(seed=5)
    r = make_rollouts()
    got = credit_passes.input_saliency(model, r, ANSWER)  # [B, T]
    assert all(p.grad is None for p in model.parameters())
    for i, (p, c, n) in enumerate(ROWS):
        ids = torch.tensor([p + c[:n]])
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        lp = torch.log_softmax(model(inputs_embeds=emb).logits[0].float(), -1)
        target = sum(lp[len(p) - 1 + t, c[t]] for t in range(max(0, n - ANSWER), n))
        (g,) = torch.autograd.grad(target, emb)
        want = (g[0] * emb[0].detach()).sum(-1).abs()  # [L]
        for t in range(n):
            expect = float(want[len(p) + t]) if len(p) + t < ids.shape[1] else 0.0
            assert float(got[i, t]) == pytest.approx(expect, abs=1e-5), (i, t)


class FakeGenerator:
    """Continuations whose answer depends on the prefix: a prefix ending in 'b' always fails."""

    def __init__(self):
        self.tokenizer = SimpleNamespace(decode=lambda ids: "".join("ab"[i - 3] for i in ids))
        self.calls = []

    def generate(self, prompts, sampling):
        n = sampling.n
        self.calls.append((len(prompts), n, sampling.max_new_tokens))
        texts = []
        for p in prompts:
            for j in range(n):
                ok = not p.endswith("b") and (j % 2 == 0 or p.endswith("a"))
                texts.append(" \\boxed{3}" if ok else " \\boxed{4}")
        return SimpleNamespace(texts=texts)


def test_segment_value_steps_by_hand():
    # one row "a a b" + EOS-less; segment 1: states "", "a", "aa"; V = 1/2, 1, 1; reward 0
    r = Rollouts(
        torch.ones(1, 1, dtype=torch.long),
        torch.ones(1, 1, dtype=torch.long),
        torch.tensor([[3, 3, 4, 0]]),
        torch.tensor([[1.0, 1, 1, 0]]),
        ["aab"],
    )
    cfg = Config()
    cfg.credit.vine_segment, cfg.credit.vine_rollouts = 1, 2
    gen = FakeGenerator()
    batch = credit_passes.Batch(torch.tensor([0.0]), torch.tensor([-1.0]), 1, ["Q:"], ["3"], gen)
    v = credit_passes.segment_value_steps(cfg, batch, r)
    assert v.tolist() == [[0.5, 0.0, -1.0, 0.0]]  # V: 1/2 -> 1 -> 1 -> 0 (the reward)
    assert [c[1] for c in gen.calls] == [2, 2, 2]
    x = credit.CreditInputs(
        mask=r.completion_mask, logprobs=torch.zeros(1, 4), step_values=v, advantages=batch.advantages
    )
    assert credit.vineppo_signal(x).tolist() == [[0.0, 0.0, 1.0, 0.0]]  # the failure's token: "b"


def test_complete_fills_what_the_needs_name():
    model = tiny_model(seed=6)
    r = make_rollouts()
    x = credit.CreditInputs(mask=r.completion_mask, logprobs=torch.zeros(r.completion_mask.shape))
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    batch = credit_passes.Batch(rewards, torch.tensor([0.7, -0.7, 0.7, -0.7]), 2)
    out = credit_passes.complete(Config(), frozenset({credit.GROUPS}), model, r, x, batch)
    assert out.groups.tolist() == [0, 0, 1, 1] and out.saliency is None and out.span_drop is None
    assert torch.equal(out.token_ids, r.completion_ids)
    assert credit_passes.can_complete(frozenset({credit.MC_VALUES}), batch) is False
    model.train()
    out = credit_passes.complete(Config(), frozenset({credit.INPUT_GRAD, credit.SPAN_DROP}), model, r, x, batch)
    assert model.training and out.saliency.shape == out.span_drop.shape == r.completion_mask.shape
