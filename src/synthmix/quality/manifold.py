"""Precision, recall, density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity
Metrics for Generative Models"), on Euclidean distances between features.

Each real row's k-NN ball has its distance to its `nearest_k`-th nearest other real row as radius
(the same for synthetic rows).
- precision: the share of synthetic rows inside at least one real ball (fidelity);
- recall: the share of real rows inside at least one synthetic ball (diversity);
- density: the mean number of real balls holding a synthetic row, over `nearest_k` (fidelity that
  counts how crowded the real neighbourhood is; can exceed 1);
- coverage: the share of real rows whose ball holds at least one synthetic row (diversity, robust to
  outliers among the synthetic rows).

"Inside" is a strict `<`, exactly as the authors' `prdc` package (version 0.2), which
tests/test_quality.py compares against. That package is not called here: it prints to stdout on every
call, computes distances with joblib's n_jobs=8, and recomputes them for every bootstrap resample,
where `coverage_interval` computes them once. Distances are scikit-learn's `euclidean_distances`, as
the package's. Memory is O((n + m)^2): three distance matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances

from synthmix.quality.arrays import feature_pair
from synthmix.quality.resample import BootstrapInterval, _check, proportion_interval


@dataclass(frozen=True)
class PRDC:
    precision: float
    recall: float
    density: float
    coverage: float


def _radii(distances: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each of `rows`' distance to its k-th nearest row among `rows`, a row's copies (and itself) left
    out; infinite when fewer than k other distinct rows are there."""
    d = distances[np.ix_(rows, rows)]
    d[rows[:, None] == rows[None, :]] = np.inf
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _prdc(d_rr: np.ndarray, d_ff: np.ndarray, d_rf: np.ndarray, k: int, i: np.ndarray, j: np.ndarray) -> PRDC:
    real_radii, fake_radii = _radii(d_rr, i, k), _radii(d_ff, j, k)
    d = d_rf[np.ix_(i, j)]
    in_real_ball = d < real_radii[:, None]
    return PRDC(
        precision=float(in_real_ball.any(axis=0).mean()),
        recall=float((d < fake_radii[None, :]).any(axis=1).mean()),
        density=float(in_real_ball.sum(axis=0).mean() / k),
        coverage=float((d.min(axis=1) < real_radii).mean()),
    )


def _distances(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return euclidean_distances(real), euclidean_distances(fake), euclidean_distances(real, fake)


def _checked(real: np.ndarray, fake: np.ndarray, nearest_k: int) -> tuple[np.ndarray, np.ndarray]:
    if nearest_k < 1:
        raise ValueError(f"nearest_k must be at least 1, got {nearest_k}")
    return feature_pair(real, fake, min_rows=nearest_k + 1)


def prdc(real: np.ndarray, fake: np.ndarray, nearest_k: int = 5) -> PRDC:
    """Precision, recall, density and coverage of `fake` against `real` with k-NN balls of
    `nearest_k` neighbours. Each set needs at least nearest_k + 1 rows."""
    r, f = _checked(real, fake, nearest_k)
    return _prdc(*_distances(r, f), nearest_k, np.arange(len(r)), np.arange(len(f)))


def _coverages(d_rr: np.ndarray, d_rf: np.ndarray, k: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Coverage of each resample: real rows `i` (B, n), synthetic rows `j` (B, m); as `_prdc`'s, a real
    row's copies left out of its own neighbours."""
    rr = d_rr[i[:, :, None], i[:, None, :]]
    rr[i[:, :, None] == i[:, None, :]] = np.inf
    radii = np.partition(rr, k - 1, axis=2)[:, :, k - 1]
    return (d_rf[i[:, :, None], j[:, None, :]].min(axis=2) < radii).mean(axis=1)


# Resamples of `coverage_interval` evaluated together: at most this many distance entries at once (32 MB).
CHUNK_ENTRIES = 4_000_000


def coverage_interval(
    real: np.ndarray,
    fake: np.ndarray,
    nearest_k: int = 5,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Interval of coverage: the Clopper-Pearson interval of a proportion (`resample.proportion_interval`)
    with the effective size n_real / deff, where deff (at least 1) is the bootstrap variance of coverage
    over the binomial one, p (1 - p) / n_real.

    Coverage is the share of real rows whose ball holds a synthetic row, but those n_real indicators
    are not independent (neighbouring balls overlap and share synthetic rows; each radius depends on
    the other real rows): deff says by how much. The bootstrap resamples each set with replacement, as
    `resample.bootstrap_interval` draws them for the same seed; in a resample a row's copies are not its
    own neighbours (they would shrink its ball to radius 0). Its spread is used, not its percentiles:
    copies of other rows still crowd a real row's k nearest, shrinking balls, and a resample holds
    about 63% of the distinct synthetic rows, so resampled coverage runs below the estimate and the
    percentile interval leaned low. bench/bench_quality_intervals.py (bench/RESULTS.md) measured the
    actual coverage of nominal 90% intervals of the expected coverage at the same sizes (n_real 30,
    n_fake 30 and 90, k 5, Gaussians in 2, 8 and 32 dimensions, the same distribution or a shifted
    one), 200 replications each, in two runs: 0.77-0.99 for the percentile interval, 0.88-1.00 for this
    one (the lowest at a shifted distribution, expected coverage 0.28), 0.9-1.6 times as wide. The
    exact binomial form keeps an estimate of 0 or 1 from giving an interval of width 0.

    Distances are computed once; the resamples are evaluated together in chunks. `samples` must be at
    least 1; with 1 resample there is no variance and deff is 1."""
    _check(samples, confidence)
    r, f = _checked(real, fake, nearest_k)
    n, m = len(r), len(f)
    d_rr, d_rf = euclidean_distances(r), euclidean_distances(r, f)
    estimate = float(_coverages(d_rr, d_rf, nearest_k, np.arange(n)[None], np.arange(m)[None])[0])
    rng = np.random.default_rng(seed)
    draws = [(rng.integers(0, n, n), rng.integers(0, m, m)) for _ in range(samples)]
    chunk = max(1, CHUNK_ENTRIES // (n * n + n * m))
    resampled = np.concatenate(
        [
            _coverages(d_rr, d_rf, nearest_k, np.array([a for a, _ in part]), np.array([b for _, b in part]))
            for part in (draws[s : s + chunk] for s in range(0, samples, chunk))
        ]
    )
    binomial = estimate * (1 - estimate) / n
    variance = float(resampled.var(ddof=1)) if samples > 1 else 0.0
    deff = max(1.0, variance / binomial) if binomial > 0 else 1.0
    return proportion_interval(estimate, n / deff, confidence, samples)
