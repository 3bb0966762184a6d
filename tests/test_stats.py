"""Tests of arca.stats: pass@k, the bootstrap intervals over seeds and problems, paired differences,
and the robust summaries over runs (IQM, probability of improvement, performance profile).

Each estimator is checked against a hand-computed value or a closed form (the binomial pass@k,
the analytic standard error of a mean of paired differences), and the intervals against their
coverage on simulated data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from arca.stats import (
    Estimate,
    bootstrap_iqm_ci,
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    iqm,
    min_detectable_difference,
    paired_bootstrap,
    paired_difference,
    pass_at_k,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_ci,
)


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (4, 1, 1, 0.25),
        (4, 1, 4, 1.0),
        (4, 0, 2, 0.0),
        (10, 0, 1, 0.0),
        (5, 2, 2, 1 - math.comb(3, 2) / math.comb(5, 2)),  # 0.7
        (4, 4, 1, 1.0),
    ],
)
def test_pass_at_k_hand_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_formula():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_estimate_format():
    assert Estimate(0.62, 0.551, 0.689).fmt() == "0.620 [0.551, 0.689]"
    # a narrow interval keeps its width visible (it once printed as "0.508 [0.51, 0.51]")
    assert Estimate(0.508, 0.5052, 0.5114).fmt() == "0.508 [0.505, 0.511]"
    assert Estimate(float("nan"), 0, 0).fmt() == "-"


def test_bootstrap_covers_mean_one_seed():
    rng = np.random.default_rng(123)
    p, hits, reps = 0.6, 0, 200
    for i in range(reps):
        x = rng.random(80) < p
        est = bootstrap_mean_ci(x.astype(float), n_boot=400, seed=i)
        hits += est.contains(p)
        assert est.lo <= est.mean <= est.hi
    assert 0.88 <= hits / reps <= 0.99


def test_bootstrap_covers_mean_seeds_and_problems():
    """Problems of random difficulty, graded over several seeds: cover the population mean."""
    rng = np.random.default_rng(7)
    a, b = 2.0, 1.5
    true_mean, hits, reps = a / (a + b), 0, 200
    for i in range(reps):
        difficulty = rng.beta(a, b, size=60)  # [P] per-problem success probability
        x = rng.random((3, 60)) < difficulty[None, :]  # [S, P]
        hits += bootstrap_mean_ci(x.astype(float), n_boot=400, seed=i).contains(true_mean)
    assert 0.88 <= hits / reps <= 0.99


def test_bootstrap_is_deterministic_and_shrinks_with_more_problems():
    rng = np.random.default_rng(0)
    small = (rng.random((2, 20)) < 0.5).astype(float)
    large = (rng.random((2, 500)) < 0.5).astype(float)
    assert bootstrap_mean_ci(small) == bootstrap_mean_ci(small)
    e_small, e_large = bootstrap_mean_ci(small), bootstrap_mean_ci(large)
    assert (e_large.hi - e_large.lo) < (e_small.hi - e_small.lo)
    assert e_small.n_seeds == 2 and e_small.n_problems == 20


def test_paired_difference_sign_and_interval():
    rng = np.random.default_rng(3)
    ref = (rng.random((2, 40)) < 0.5).astype(float)
    better = ref.copy()
    wrong = np.flatnonzero(ref[0] == 0)[:8]
    better[:, wrong] = 1.0  # fix 8 problems for both seeds
    expected = better.mean() - ref.mean()
    up = paired_difference(better, ref, n_boot=1000)
    assert up.mean == pytest.approx(expected)
    assert up.mean > 0 and up.lo > 0 and up.lo <= up.mean <= up.hi
    down = paired_difference(ref, better, n_boot=1000)
    assert down.mean == pytest.approx(-expected) and down.hi < 0
    same = paired_difference(ref, ref, n_boot=200)
    assert same.mean == 0 and same.lo == 0 and same.hi == 0


def test_paired_difference_is_tighter_than_unpaired_noise():
    """Pairing removes problem difficulty: a constant shift has a narrow interval."""
    rng = np.random.default_rng(5)
    ref = (rng.random((1, 200)) < 0.5).astype(float)
    method = ref.copy()
    method[0, np.flatnonzero(ref[0] == 0)[:10]] = 1
    paired = paired_difference(method, ref, n_boot=1000)
    solo = bootstrap_mean_ci(method, n_boot=1000)
    assert (paired.hi - paired.lo) < 0.5 * (solo.hi - solo.lo)


def test_paired_difference_needs_same_problems():
    with pytest.raises(ValueError):
        paired_difference(np.ones((1, 3)), np.ones((1, 4)))


def test_paired_bootstrap_mean_matches_paired_difference():
    rng = np.random.default_rng(11)
    a, b = (rng.random((3, 50)) < 0.6).astype(float), (rng.random((3, 50)) < 0.5).astype(float)
    pb, pd_ = paired_bootstrap(a, b), paired_difference(a, b)
    assert (pb.estimate.mean, pb.estimate.lo, pb.estimate.hi) == (pd_.mean, pd_.lo, pd_.hi)
    assert pb.finite_frac == 1.0 and pb.mdd == pytest.approx(2.8 * pb.se)


def test_paired_bootstrap_se_matches_the_analytic_one():
    """One seed: the bootstrap SE of a mean of paired differences is sd(d) / sqrt(P)."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.3, 1.0, (1, 400)), rng.normal(0.0, 1.0, (1, 400))
    pb = paired_bootstrap(a, b, n_boot=4000)
    d = (a - b)[0]
    assert pb.se == pytest.approx(d.std() / math.sqrt(d.size), rel=0.1)
    assert min_detectable_difference(0.1) == pytest.approx(0.28)


def test_bootstrap_ratio_ci_hand_cases():
    est = bootstrap_ratio_ci([1.0, 3.0], [1.0, 1.0])
    assert est.mean == pytest.approx(2.0) and est.lo == pytest.approx(1.0) and est.hi == pytest.approx(3.0)
    one = bootstrap_ratio_ci([0.3, float("nan")], [0.1, 0.2])  # the seed without a value is dropped
    assert one.mean == pytest.approx(3.0) and one.lo == one.hi == pytest.approx(3.0) and one.n_seeds == 1
    assert math.isnan(bootstrap_ratio_ci([float("nan")], [float("nan")]).mean)


# ----------------------------------------------------------------------------- robust summaries over runs
def _slow_iqm(values):
    """scipy.stats.trim_mean(x, 0.25) written out: drop floor(n / 4) sorted runs at each end."""
    xs = sorted(values)
    g = len(xs) // 4
    middle = xs[g : len(xs) - g]
    return sum(middle) / len(middle)


def _slow_improvement(x, y):
    total = 0.0
    for xi in x:
        for yj in y:
            total += 1.0 if xi > yj else 0.5 if xi == yj else 0.0
    return total / (len(x) * len(y))


def _bytes(est: Estimate) -> bytes:
    return np.array([est.mean, est.lo, est.hi]).tobytes()


def test_iqm_hand_cases():
    assert iqm(range(1, 9)) == pytest.approx(4.5)  # middle four of 1..8: 3, 4, 5, 6
    assert iqm([1000, 1, 2, 3, 4, 5, 6, -100]) == pytest.approx(3.5)  # outliers cut: 2, 3, 4, 5
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)  # n = 5: floor(5 / 4) = 1 cut each end
    assert iqm([1, 2, 10]) == pytest.approx(13 / 3)  # n < 4: nothing cut, the plain mean
    assert iqm([0.7]) == pytest.approx(0.7)


def test_iqm_matches_the_trimming_convention_written_out():
    rng = np.random.default_rng(4)
    for n in range(1, 30):
        x = rng.normal(size=n)
        assert iqm(x) == pytest.approx(_slow_iqm(x.tolist()), abs=1e-12), n


def test_probability_of_improvement_hand_cases():
    # 0.8 beats both runs of y (2); each 0.7 beats 0.6 and ties 0.7 (1.5 each): 5 of 6 pairs
    assert probability_of_improvement([0.8, 0.7, 0.7], [0.6, 0.7]) == pytest.approx(5 / 6)
    # 1 loses twice, 2 ties twice, 3 wins twice: (0 + 1 + 2) / 6
    assert probability_of_improvement([1, 2, 3], [2, 2]) == pytest.approx(0.5)
    assert probability_of_improvement([0.5], [0.4]) == 1.0


def test_probability_of_improvement_matches_a_slow_loop():
    rng = np.random.default_rng(8)
    for n, m in [(1, 1), (3, 3), (5, 2), (2, 7), (10, 10)]:
        x, y = rng.integers(0, 4, size=n) / 4, rng.integers(0, 4, size=m) / 4  # coarse: ties are common
        p = probability_of_improvement(x, y)
        assert p == pytest.approx(_slow_improvement(x.tolist(), y.tolist()), abs=1e-12)
        assert p + probability_of_improvement(y, x) == pytest.approx(1.0)  # the roles swap


def test_probability_of_improvement_degenerate_cases():
    same = probability_of_improvement_ci([0.6, 0.6, 0.6], [0.6, 0.6])
    assert (same.mean, same.lo, same.hi) == (0.5, 0.5, 0.5)
    apart = probability_of_improvement_ci([0.8, 0.9, 0.85], [0.1, 0.2, 0.3])
    assert (apart.mean, apart.lo, apart.hi) == (1.0, 1.0, 1.0)
    below = probability_of_improvement_ci([0.1, 0.2], [0.8, 0.9, 0.85])
    assert (below.mean, below.lo, below.hi) == (0.0, 0.0, 0.0) and below.n_seeds == 2


def test_probability_of_improvement_ci_contains_point_and_is_reproducible():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0.6, 0.05, size=5), rng.normal(0.55, 0.05, size=4)
    est = probability_of_improvement_ci(x, y)
    assert est.mean == pytest.approx(probability_of_improvement(x, y))
    assert 0.0 <= est.lo <= est.mean <= est.hi <= 1.0 and est.lo < est.hi
    assert _bytes(probability_of_improvement_ci(x, y)) == _bytes(est)  # the fixed seed, byte for byte
    assert _bytes(probability_of_improvement_ci(x, y, seed=1)) != _bytes(est)
    assert est.n_seeds == 4 and est.n_problems == 0


def test_bootstrap_iqm_ci():
    x = [0.2, 0.5, 0.55, 0.6, 0.62, 0.9]
    est = bootstrap_iqm_ci(x)
    assert est.mean == pytest.approx(iqm(x)) and est.lo <= est.mean <= est.hi and est.lo < est.hi
    assert _bytes(bootstrap_iqm_ci(x)) == _bytes(est) and est.n_seeds == 6
    one = bootstrap_iqm_ci([0.4])
    assert (one.mean, one.lo, one.hi) == (0.4, 0.4, 0.4)


def test_performance_profile_hand_values():
    taus = [0.0, 0.2, 0.5, 0.6, 1.0]
    prof = performance_profile({"a": [0.2, 0.5, 0.5, 0.9], "b": [0.4]}, taus)
    assert list(prof) == ["a", "b"]
    # strictly above tau: a run scoring exactly tau does not count
    np.testing.assert_allclose(prof["a"], [1.0, 0.75, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(prof["b"], [1.0, 1.0, 0.0, 0.0, 0.0])
    assert prof["a"].shape == (5,)


def test_robust_summaries_reject_bad_input():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        iqm([])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        iqm(np.ones((2, 2)))
    with pytest.raises(ValueError, match="y must be a non-empty"):
        probability_of_improvement([0.5], [])
    with pytest.raises(ValueError, match="x must be a non-empty"):
        probability_of_improvement_ci([], [0.5])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_iqm_ci([0.5, float("nan")])
    with pytest.raises(ValueError, match="thresholds"):
        performance_profile({"a": [0.5]}, [])
    with pytest.raises(ValueError, match="'a'"):
        performance_profile({"a": []}, [0.5])


def test_robust_summaries_agree_with_rliable():
    """Optional: rliable's IQM and probability of improvement on the same runs (one task)."""
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(12)
    for n, m in [(3, 3), (5, 8), (10, 4)]:
        x, y = rng.integers(0, 6, size=n) / 6, rng.integers(0, 6, size=m) / 6
        assert iqm(x) == pytest.approx(float(metrics.aggregate_iqm(x[:, None])), abs=1e-12)
        theirs = metrics.probability_of_improvement(x[:, None], y[:, None])
        assert probability_of_improvement(x, y) == pytest.approx(float(theirs), abs=1e-12)
