"""Statistics for evaluation and the report: the unbiased pass@k estimator and bootstrap intervals.

Accuracy is a mean over problems and seeds, and both are samples: the problems from a larger
pool, the seeds from all possible training runs. The intervals therefore resample both levels
(a hierarchical bootstrap): each replicate draws seeds with replacement, then problems with
replacement, and takes the mean over the drawn seed x problem block. The problems of one
replicate are shared by all its seeds because every seed is evaluated on the same problems (a
crossed design); drawing them separately per seed would understate the problem variance.
Resampling both levels counts the seed x problem residual twice, so the intervals err on the
wide (conservative) side, never the narrow one.

Paired differences (a method against ``uniform``) resample the same problems for both arms, and
the same seed indices when both arms have the same number of seeds, so that problem difficulty
cancels out of the difference.

The robust summaries over runs (Agarwal et al., 2021) see one score per run: the interquartile
mean (``iqm``), the probability that a run of one method beats a run of another
(``probability_of_improvement``, bootstrapped per arm) and the performance profile.

All randomness comes from ``numpy.random.Generator`` with a fixed seed: the tables are
byte-for-byte reproducible.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_REPLICATES = 2000
DEFAULT_SEED = 0
# Bound the [replicates, seeds, problems] gather so a large test set cannot exhaust memory.
_MAX_CHUNK_ELEMENTS = 4_000_000


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Evaluated as the product 1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms the large
    binomials (Chen et al., 2021 give the same identity).
    """
    if n < 1 or k < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1, k >= 1 and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass_at_k needs k <= n (k={k} samples asked, only n={n} drawn)")
    if n - c < k:
        # Every k-subset contains a correct sample.
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a (1 - alpha) bootstrap interval and its sample sizes."""

    mean: float
    lo: float
    hi: float
    n_seeds: int = 0
    n_problems: int = 0

    def fmt(self, digits: int = 3, ci_digits: int | None = None) -> str:
        """``0.620 [0.551, 0.689]``; ``-`` for a missing value.

        The bounds get as many digits as the mean (``ci_digits`` defaults to ``digits``): with
        fewer, a narrow interval reads as empty, e.g. ``0.508 [0.51, 0.51]``.
        """
        ci_digits = digits if ci_digits is None else ci_digits
        if not np.isfinite(self.mean):
            return "-"
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.lo:.{ci_digits}f}, {self.hi:.{ci_digits}f}]"

    def contains(self, value: float) -> bool:
        return bool(self.lo <= value <= self.hi)


NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan)


def _as_matrix(scores) -> np.ndarray:
    """Scores as a float [S, P] matrix (a 1-D input is one seed); NaN marks a missing cell."""
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty [seeds, problems] array, got shape {a.shape}")
    return a


def _chunks(n_boot: int, per_replicate: int):
    size = max(1, _MAX_CHUNK_ELEMENTS // max(1, per_replicate))
    for start in range(0, n_boot, size):
        yield min(size, n_boot - start)


def _block_means(a: np.ndarray, seed_idx: np.ndarray, prob_idx: np.ndarray) -> np.ndarray:
    """Mean of a[seed_idx[b]][:, prob_idx[b]] for each replicate b, ignoring NaN cells."""
    block = a[seed_idx[:, :, None], prob_idx[:, None, :]]  # [B, S, P]
    with warnings.catch_warnings():
        # An all-NaN replicate (a metric that was never logged) is NaN, not an error.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(block.reshape(block.shape[0], -1), axis=1)  # [B]


def _interval(reps: np.ndarray, alpha: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    scores,
    n_boot: int = DEFAULT_REPLICATES,
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
) -> Estimate:
    """Mean of a [seeds, problems] score matrix with a hierarchical percentile bootstrap CI.

    Each replicate resamples seeds (rows) with replacement, then problems (columns) with
    replacement, and averages the block. Pass per-seed values as shape [S, 1] to bootstrap over
    seeds only. With one seed and one problem the interval collapses to the point.
    """
    a = _as_matrix(scores)
    n_seeds, n_problems = a.shape
    if not np.isfinite(a).any():
        return Estimate(math.nan, math.nan, math.nan, n_seeds, n_problems)
    mean = float(np.nanmean(a))
    rng = np.random.default_rng(seed)
    reps = []
    for b in _chunks(n_boot, n_seeds * n_problems):
        seed_idx = rng.integers(0, n_seeds, size=(b, n_seeds))
        prob_idx = rng.integers(0, n_problems, size=(b, n_problems))
        reps.append(_block_means(a, seed_idx, prob_idx))
    lo, hi = _interval(np.concatenate(reps), alpha)
    return Estimate(mean, lo, hi, n_seeds, n_problems)


def paired_difference(
    method_scores,
    reference_scores,
    n_boot: int = DEFAULT_REPLICATES,
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
) -> Estimate:
    """mean(method) - mean(reference) on the same problems, with a paired bootstrap CI.

    Both matrices are [seeds, problems] with the same problem columns in the same order. Each
    replicate draws one problem resample used by both arms; seeds are drawn as shared indices
    when both arms have the same number of seeds (seed i of one arm paired with seed i of the
    other), and independently otherwise.
    """
    a = _as_matrix(method_scores)
    b = _as_matrix(reference_scores)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired_difference needs the same problems in both arms, got {a.shape[1]} and {b.shape[1]}")
    n_problems = a.shape[1]
    paired_seeds = a.shape[0] == b.shape[0]
    if not (np.isfinite(a).any() and np.isfinite(b).any()):
        return Estimate(math.nan, math.nan, math.nan, min(a.shape[0], b.shape[0]), n_problems)
    diff = float(np.nanmean(a) - np.nanmean(b))
    rng = np.random.default_rng(seed)
    reps = []
    for nb in _chunks(n_boot, (a.shape[0] + b.shape[0]) * n_problems):
        prob_idx = rng.integers(0, n_problems, size=(nb, n_problems))
        seed_a = rng.integers(0, a.shape[0], size=(nb, a.shape[0]))
        seed_b = seed_a if paired_seeds else rng.integers(0, b.shape[0], size=(nb, b.shape[0]))
        reps.append(_block_means(a, seed_a, prob_idx) - _block_means(b, seed_b, prob_idx))
    lo, hi = _interval(np.concatenate(reps), alpha)
    return Estimate(diff, lo, hi, min(a.shape[0], b.shape[0]), n_problems)


# ----------------------------------------------------------------------------- general statistics
# Power of a comparison: a true difference of (z_{1-alpha/2} + z_{power}) standard errors is
# detected with the given power by a two-sided test at level alpha (80% power, 5% two-sided).
Z_TWO_SIDED_5 = 1.96
Z_POWER_80 = 0.84


def min_detectable_difference(se: float) -> float:
    """(z_0.975 + z_0.80) x SE: the smallest true difference a two-sided 5% test finds 80% of the time."""
    return (Z_TWO_SIDED_5 + Z_POWER_80) * se if np.isfinite(se) else math.nan


@dataclass(frozen=True)
class PairedBootstrap:
    """A paired difference with its percentile interval, the bootstrap SE and the replicates behind them."""

    estimate: Estimate
    se: float  # standard deviation of the finite replicates
    finite_frac: float  # share of replicates where the statistic was defined in both arms

    @property
    def mdd(self) -> float:
        return min_detectable_difference(self.se)


def _nanmean_block(block: np.ndarray) -> np.ndarray:
    """[B, S, P, ...] -> [B]: the mean of each replicate's block, NaN cells skipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(block.reshape(block.shape[0], -1), axis=1)


def paired_bootstrap(
    method_scores,
    reference_scores,
    statistic=None,
    n_boot: int = DEFAULT_REPLICATES,
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
) -> PairedBootstrap:
    """statistic(method) - statistic(reference) with the paired bootstrap of ``paired_difference``.

    Both arrays are [S, P, ...] (seeds, problems, then anything the statistic reads, e.g. curve
    steps) with the same seeds (row i of one arm is the same training seed as row i of the
    other) and the same problem columns. ``statistic`` maps a batch of resampled blocks
    [B, S, P, ...] to [B] values (NaN where undefined); the default, the block mean, makes the
    point estimate and the interval those of ``paired_difference`` on the same 2-D input (same
    draws), and adds the SE that the minimum detectable difference needs.
    """
    stat = statistic or _nanmean_block
    a = np.asarray(method_scores, dtype=np.float64)
    b = np.asarray(reference_scores, dtype=np.float64)
    if a.ndim < 2 or a.shape != b.shape or 0 in a.shape:
        raise ValueError(
            f"paired_bootstrap needs two non-empty [seeds, problems, ...] arrays of one shape, "
            f"got {a.shape} and {b.shape}"
        )
    n_seeds, n_problems = a.shape[:2]
    point = float(stat(a[None])[0] - stat(b[None])[0])
    rng = np.random.default_rng(seed)
    reps = []
    # Per replicate the gather holds both arms' [S, P, ...] blocks; the draw order (problems, seeds
    # of arm a, seeds of arm b) is that of ``paired_difference``.
    for nb in _chunks(n_boot, 2 * a.size):
        prob_idx = rng.integers(0, n_problems, size=(nb, n_problems))
        seed_idx = rng.integers(0, n_seeds, size=(nb, n_seeds))
        block_a = a[seed_idx[:, :, None], prob_idx[:, None, :]]  # [B, S, P, ...]
        block_b = b[seed_idx[:, :, None], prob_idx[:, None, :]]  # [B, S, P, ...]
        reps.append(stat(block_a) - stat(block_b))
    reps = np.concatenate(reps)
    finite = reps[np.isfinite(reps)]
    lo, hi = _interval(reps, alpha)
    se = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return PairedBootstrap(Estimate(point, lo, hi, n_seeds, n_problems), se, finite.size / reps.size)


def bootstrap_ratio_ci(
    numerator,
    denominator,
    n_boot: int = DEFAULT_REPLICATES,
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
) -> Estimate:
    """mean(numerator) / mean(denominator) over seeds, with a percentile bootstrap over seeds.

    Both are [S] per-seed values of the same seeds (NaN = the seed has no value; such seeds are
    dropped from both). Each replicate draws the same seed indices for both means, so a seed's
    numerator stays with its denominator. With one seed the interval collapses to the point.
    """
    num = np.asarray(numerator, dtype=np.float64).ravel()
    den = np.asarray(denominator, dtype=np.float64).ravel()
    if num.shape != den.shape:
        raise ValueError(f"bootstrap_ratio_ci needs per-seed values of the same seeds, got {num.shape} and {den.shape}")
    keep = np.isfinite(num) & np.isfinite(den)
    num, den = num[keep], den[keep]
    if num.size == 0 or den.mean() == 0:
        return Estimate(math.nan, math.nan, math.nan, int(num.size), 0)
    point = float(num.mean() / den.mean())
    idx = np.random.default_rng(seed).integers(0, num.size, size=(n_boot, num.size))  # [B, S]
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = num[idx].mean(axis=1) / den[idx].mean(axis=1)  # [B]
    lo, hi = _interval(reps, alpha)
    return Estimate(point, lo, hi, int(num.size), 0)


# ----------------------------------------------------------------------------- robust summaries over runs
# After Agarwal et al. (2021), "Deep RL at the edge of the statistical precipice": with few runs per
# method, summaries that a single outlier run cannot drag (the interquartile mean), a comparison
# that is not a difference of means (the probability of improvement), and the whole distribution
# of run scores (the performance profile). Intervals resample runs, the only level these see.
IQM_TRIM = 0.25  # the share of runs cut from each end


def _runs(values, name: str) -> np.ndarray:
    """Per-run scores as a finite float [N] array; a clear ValueError otherwise."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-run scores, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds a non-finite score: {a.tolist()}")
    return a


def _iqm_rows(sorted_rows: np.ndarray) -> np.ndarray:
    """[B, N] rows sorted along axis 1 -> [B] means of the middle, floor(N / 4) cut from each end."""
    n = sorted_rows.shape[1]
    cut = int(IQM_TRIM * n)
    return sorted_rows[:, cut : n - cut].mean(axis=1)


def iqm(values) -> float:
    """Interquartile mean: the mean of the sorted runs x_(g+1) .. x_(N-g), with g = floor(N / 4).

    The trimming convention of ``scipy.stats.trim_mean(x, 0.25)`` (whole runs cut, none weighted
    fractionally). With N < 4, g = 0 and nothing is cut: the IQM is the plain mean, as there is no
    quartile to drop.
    """
    a = _runs(values, "iqm: values")
    return float(_iqm_rows(np.sort(a)[None, :])[0])


def bootstrap_iqm_ci(
    values, n_boot: int = DEFAULT_REPLICATES, alpha: float = 0.05, seed: int = DEFAULT_SEED
) -> Estimate:
    """``iqm`` of per-run scores with a percentile bootstrap over runs (drawn with replacement).

    With one run, or all runs equal, the interval collapses to the point.
    """
    a = _runs(values, "bootstrap_iqm_ci: values")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))  # [B, N]
    reps = _iqm_rows(np.sort(a[idx], axis=1))  # [B]
    lo, hi = _interval(reps, alpha)
    return Estimate(iqm(a), lo, hi, int(a.size), 0)


def _win_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[N, M]: 1 where x_i > y_j, 0.5 where x_i = y_j, 0 where x_i < y_j."""
    return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + 0.5 P(X = Y) over all N x M pairs of a run of X and a run of Y.

    1/(N M) sum_i sum_j [x_i > y_j] + 0.5 [x_i = y_j]: the Mann-Whitney U of X over Y divided by
    N M. ``x`` holds the per-run scores of a method, ``y`` those of the baseline; 0.5 means
    neither tends to score higher, 1 that every run of X beats every run of Y.
    """
    x, y = _runs(x, "probability_of_improvement: x"), _runs(y, "probability_of_improvement: y")
    return float(_win_matrix(x, y).mean())


def probability_of_improvement_ci(
    x, y, n_boot: int = DEFAULT_REPLICATES, alpha: float = 0.05, seed: int = DEFAULT_SEED
) -> Estimate:
    """``probability_of_improvement`` with a stratified percentile bootstrap.

    Each replicate resamples the runs of X and, separately, the runs of Y with replacement (the
    arms are the strata: a replicate keeps N runs of X and M of Y) and recomputes the statistic.
    Runs are not paired by seed: the statistic compares every run with every run. ``n_seeds`` is
    the smaller arm.
    """
    x, y = _runs(x, "probability_of_improvement_ci: x"), _runs(y, "probability_of_improvement_ci: y")
    wins = _win_matrix(x, y)  # [N, M]; a replicate only picks rows and columns of it
    rng = np.random.default_rng(seed)
    reps = []
    for nb in _chunks(n_boot, x.size * y.size):
        ix = rng.integers(0, x.size, size=(nb, x.size))  # [B, N]
        iy = rng.integers(0, y.size, size=(nb, y.size))  # [B, M]
        reps.append(wins[ix[:, :, None], iy[:, None, :]].mean(axis=(1, 2)))  # [B]
    lo, hi = _interval(np.concatenate(reps), alpha)
    return Estimate(float(wins.mean()), lo, hi, int(min(x.size, y.size)), 0)


def performance_profile(scores_by_method, thresholds) -> dict[str, np.ndarray]:
    """The run-score distribution of each method: F(tau) = 1/N sum_i [x_i > tau] at each threshold.

    ``scores_by_method`` maps a name to its per-run scores [N] (N may differ between methods);
    ``thresholds`` is [T]. Returns the same names, each with a float [T] array of fractions.
    """
    taus = np.asarray(thresholds, dtype=np.float64)
    if taus.ndim != 1 or taus.size == 0:
        raise ValueError(f"performance_profile: thresholds must be a non-empty 1-D array, got shape {taus.shape}")
    out = {}
    for name, values in scores_by_method.items():
        a = _runs(values, f"performance_profile: scores of {name!r}")
        out[name] = (a[:, None] > taus[None, :]).mean(axis=0)  # [N, T] -> [T]
    return out
