"""Percentile bootstrap intervals: over two sets resampled independently, and over classes for a rank
correlation; and the Clopper-Pearson interval of a proportion with an effective size (coverage's).

A resample whose statistic is not finite (a Spearman rho of a resample whose values are all tied, say)
is left out of the percentiles; `BootstrapInterval.samples` counts those that were kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class BootstrapInterval:
    """`estimate` (the statistic on the data as given) and the interval [low, high] at `confidence`, from
    `samples` resamples with a finite statistic (NaN bounds when none had one): their percentiles, or
    for `proportion_interval` the variance behind its effective size."""

    estimate: float
    low: float
    high: float
    confidence: float
    samples: int

    def covers(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho over `n` pairs, its p-value (scipy's, against no association) and a bootstrap
    interval over the pairs; NaN everywhere with a `reason` when fewer than 3 pairs are usable."""

    rho: float
    p_value: float
    interval: BootstrapInterval
    n: int
    reason: str | None = None


def _percentile_interval(estimate: float, resampled: np.ndarray, confidence: float) -> BootstrapInterval:
    kept = resampled[np.isfinite(resampled)]
    if kept.size == 0:
        return BootstrapInterval(estimate, math.nan, math.nan, confidence, 0)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(kept, [alpha, 1 - alpha])
    return BootstrapInterval(estimate, float(low), float(high), confidence, int(kept.size))


def proportion_interval(estimate: float, n_eff: float, confidence: float, samples: int) -> BootstrapInterval:
    """Clopper-Pearson ("exact") interval of a proportion `estimate` observed on `n_eff` independent
    rows (a real number: n / design effect): the beta quantiles at estimate * n_eff successes, 0 or 1
    at the ends. `samples` is recorded as the resamples that gave the design effect."""
    _check(max(samples, 1), confidence)
    alpha = (1 - confidence) / 2
    x = estimate * n_eff
    low = float(stats.beta.ppf(alpha, x, n_eff - x + 1)) if x > 0 else 0.0
    high = float(stats.beta.ppf(1 - alpha, x + 1, n_eff - x)) if x < n_eff else 1.0
    return BootstrapInterval(estimate, low, high, confidence, samples)


def _check(samples: int, confidence: float) -> None:
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def bootstrap_interval(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    real: np.ndarray,
    fake: np.ndarray,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile bootstrap interval of `statistic(real, fake)`: each resample draws the rows of `real`
    and, independently, the rows of `fake` with replacement, each set keeping its size.

    The arrays may be anything indexed by rows; passing `np.arange(n)` hands the statistic the resampled
    indices, which lets it reuse precomputed pairwise matrices (`kernel.kid_interval` does).
    Deterministic given `seed`.
    """
    _check(samples, confidence)
    n, m = len(real), len(fake)
    rng = np.random.default_rng(seed)
    resampled = np.array(
        [statistic(real[rng.integers(0, n, n)], fake[rng.integers(0, m, m)]) for _ in range(samples)],
        dtype=np.float64,
    )
    return _percentile_interval(float(statistic(real, fake)), resampled, confidence)


def rank_correlation(
    x: Sequence[float | None],
    y: Sequence[float | None],
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RankCorrelation:
    """Spearman's rho between paired per-class values (say, a class's KID and the change in its F1)
    with a percentile bootstrap interval that resamples the classes (pairs kept together).

    Pairs where either value is None or NaN are dropped first (a class too small to measure). Ties get
    average ranks (scipy.stats.spearmanr). Deterministic given `seed`.
    """
    _check(samples, confidence)
    if len(x) != len(y):
        raise ValueError(f"x and y must pair up, got {len(x)} and {len(y)} values")
    xs, ys = (np.array([math.nan if v is None else v for v in vs], dtype=np.float64) for vs in (x, y))
    usable = np.isfinite(xs) & np.isfinite(ys)
    a, b = xs[usable], ys[usable]
    n = int(usable.sum())
    if n < 3:
        empty = BootstrapInterval(math.nan, math.nan, math.nan, confidence, 0)
        return RankCorrelation(math.nan, math.nan, empty, n, f"needs 3 classes with both values, has {n}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        empty = BootstrapInterval(math.nan, math.nan, math.nan, confidence, 0)
        return RankCorrelation(math.nan, math.nan, empty, n, "one of the two is the same in every class")
    result = stats.spearmanr(a, b)
    rng = np.random.default_rng(seed)
    resampled = np.empty(samples)
    for s in range(samples):
        i = rng.integers(0, n, n)
        # An all-tied resample has no rho: NaN, left out of the percentiles.
        tied = np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0
        resampled[s] = math.nan if tied else stats.spearmanr(a[i], b[i]).statistic
    interval = _percentile_interval(float(result.statistic), resampled, confidence)
    return RankCorrelation(float(result.statistic), float(result.pvalue), interval, n)
