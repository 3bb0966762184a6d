"""``arca.sampling.Sampling``: the one record of a ``generate`` call and its constructors from the config."""

from __future__ import annotations

import dataclasses

import pytest

from arca.config import load_config
from arca.sampling import Sampling


@pytest.fixture()
def cfg():
    c = load_config("configs/default.yaml")
    # every setting a value of its own, so that a field read from the wrong key shows
    c.rollout.k, c.rollout.temperature, c.rollout.top_p, c.rollout.top_k = 3, 0.7, 0.9, 11
    c.rollout.max_new_tokens, c.rollout.min_new_tokens = 40, 5
    c.eval.temperature, c.eval.top_p, c.eval.top_k, c.eval.max_new_tokens = 0.6, 0.8, 13, 30
    return c


def test_greedy_decoding_is_one_argmax_completion_without_filters():
    assert Sampling.greedy_decoding(17) == Sampling(
        n=1, max_new_tokens=17, temperature=1.0, top_p=1.0, top_k=0, greedy=True, seed=None, min_new_tokens=0
    )


def test_from_rollout_reads_every_key_of_the_rollout_section(cfg):
    assert Sampling.from_rollout(cfg.rollout) == Sampling(
        n=3, max_new_tokens=40, temperature=0.7, top_p=0.9, top_k=11, greedy=False, seed=None, min_new_tokens=5
    )
    s = Sampling.from_rollout(cfg.rollout, n=1, seed=0, min_new_tokens=0)
    assert (s.n, s.seed, s.min_new_tokens, s.top_k) == (1, 0, 0, 11)  # changed fields only


def test_from_eval_reads_the_eval_section_not_the_rollouts(cfg):
    assert Sampling.from_eval(cfg.eval, 4, 9) == Sampling(
        n=4, max_new_tokens=30, temperature=0.6, top_p=0.8, top_k=13, greedy=False, seed=9, min_new_tokens=0
    )
    assert Sampling.from_eval(cfg.eval, 2, None, max_new_tokens=7).max_new_tokens == 7


def test_a_sampling_record_cannot_change():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Sampling(1, 8).seed = 3
