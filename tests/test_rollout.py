"""Rollouts (arca.rollout): the sampling settings every caller passes, and the completion mask."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import ALPHABET, EOS1, PAD0

from arca.config import load_config
from arca.paths import paths_of
from arca.pretrain import char_tokenizer, pretrain_model
from arca.rollout import Rollouts, TransformersGenerator
from arca.sampling import Sampling


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer([ALPHABET])


@pytest.fixture()
def cfg(tmp_path):
    return load_config("configs/smoke.yaml", [f"paths.results={tmp_path}"])


class RecordingGenerator:
    """A ``Generator`` that records its keyword arguments and returns fixed rollouts."""

    tokenizer = None

    def __init__(self):
        self.calls: list[dict] = []

    def generate(self, prompts, sampling: Sampling, progress=None) -> Rollouts:
        self.calls.append(sampling)
        N = len(prompts) * sampling.n
        comp = torch.full((N, 2), 5)
        return Rollouts(
            torch.ones(N, 1, dtype=torch.long),
            torch.ones(N, 1, dtype=torch.long),
            comp,
            torch.ones(N, 2),
            [r"\boxed{1}"] * N,
        )


# ----------------------------------------------------------------------------- top-k
def test_top_k_one_samples_the_greedy_completion(cfg, tok):
    # top-k = 1 leaves one token at every step: sampling must give the greedy completion, whatever the
    # seed; with top-k off the same seeds sample something else from this untrained, flat model.
    torch.manual_seed(0)
    gen = TransformersGenerator(pretrain_model(cfg, len(tok), tok), tok)
    prompts = ["1+2=", "7*3="]
    greedy = gen.generate(prompts, Sampling.greedy_decoding(12))
    for seed in (1, 2):
        top1 = gen.generate(prompts, Sampling(1, 12, seed=seed, top_k=1))
        assert torch.equal(top1.completion_ids, greedy.completion_ids)
        free = gen.generate(prompts, Sampling(1, 12, seed=seed, top_k=0))
        assert not torch.equal(free.completion_ids, greedy.completion_ids)


def test_training_and_evaluation_sample_with_their_top_k(cfg, tmp_path):
    from arca.evaluate import evaluate_protocol
    from arca.models import wrap_lora
    from arca.train import lr_scheduler, train_step

    tok = char_tokenizer([ALPHABET])
    cfg.rollout.top_k, cfg.eval.top_k = 7, 11
    torch.manual_seed(0)
    model = wrap_lora(pretrain_model(cfg, len(tok), tok), cfg.lora)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    gen = RecordingGenerator()
    problems = [{"problem": "1+1", "answer": "2"}] * cfg.train.prompts_per_step
    train_step(cfg, model, gen, opt, lr_scheduler(cfg, opt), problems, 0, 0, reward=lambda completion, gold: True)
    assert gen.calls[-1].top_k == 7 and gen.calls[-1].top_p == cfg.rollout.top_p

    paths_of(cfg).data.root.mkdir(parents=True)
    rec = {"id": "t/0", "problem": "1+1", "solution": r"\boxed{2}", "answer": "2", "level": 1, "subject": "s"}
    (paths_of(cfg).data.root / "test.jsonl").write_text(json.dumps(rec) + "\n")
    gen.calls.clear()
    evaluate_protocol(
        cfg,
        gen,
        "generated",
        lambda golds, comps: [{"answer": None, "paper": False, "math_verify": False}] * len(golds),
    )
    sampled = [c for c in gen.calls if not c.greedy]
    assert [c.top_k for c in sampled] == [11] and sampled[0].top_p == cfg.eval.top_p


# ----------------------------------------------------------------------------- the completion mask


@pytest.mark.parametrize(
    "rule, expected",
    [
        # the author's: token != pad, then 0 after the first EOS; with pad == EOS the EOS itself is out
        ("author", [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]),
        # up to and including the first EOS
        ("through_eos", [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]),
    ],
)
def test_completion_mask_pad_equal_to_eos(rule, expected):
    from arca.rollout import completion_mask

    comp = torch.tensor([[5, 6, EOS1, EOS1], [5, EOS1, EOS1, EOS1], [5, 6, 7, 8], [EOS1, EOS1, EOS1, EOS1]])
    assert completion_mask(comp, {EOS1}, EOS1, rule=rule).tolist() == expected


@pytest.mark.parametrize(
    "rule, expected",
    [
        # pad (0) != EOS (1), as in the pretrained-here model: the author's rule keeps the EOS, and drops a
        # generated pad token wherever it is (row 1)
        ("author", [[1, 1, 1, 0], [1, 0, 1, 1], [1, 0, 0, 0]]),
        ("through_eos", [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]),
    ],
)
def test_completion_mask_pad_distinct_from_eos(rule, expected):
    from arca.rollout import completion_mask

    comp = torch.tensor([[5, 6, EOS1, PAD0], [5, PAD0, 6, EOS1], [EOS1, PAD0, PAD0, PAD0]])
    assert completion_mask(comp, {EOS1}, PAD0, rule=rule).tolist() == expected


def test_completion_mask_default_is_the_authors_and_unknown_rule_fails():
    from arca.rollout import completion_mask

    comp = torch.tensor([[5, EOS1, EOS1]])
    assert completion_mask(comp, {EOS1}, EOS1).tolist() == [[1, 0, 0]]
    with pytest.raises(ValueError, match="through_eos"):
        completion_mask(comp, {EOS1}, EOS1, rule="before_eos")


# ----------------------------------------------------------------------------- progress
def test_progress_bar_with_eta_goes_to_stderr_and_changes_nothing(cfg, tok, capsys):
    torch.manual_seed(0)
    gen = TransformersGenerator(pretrain_model(cfg, len(tok), tok), tok, batch_size=2)
    quiet = gen.generate(["1+2=", "7*3=", "4-1="], Sampling(2, 6, seed=3))
    assert capsys.readouterr().err == ""
    shown = gen.generate(["1+2=", "7*3=", "4-1="], Sampling(2, 6, seed=3), progress="base generated samples")
    err = capsys.readouterr().err
    assert "base generated samples" in err and "6/6" in err and "completion/s" in err and "<" in err  # rate, ETA
    assert torch.equal(quiet.completion_ids, shown.completion_ids)
