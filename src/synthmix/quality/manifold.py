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
from synthmix.quality.resample import BootstrapInterval, bootstrap_interval


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


def coverage_interval(
    real: np.ndarray,
    fake: np.ndarray,
    nearest_k: int = 5,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile bootstrap interval (`resample.bootstrap_interval`) of coverage, resampling each set
    with replacement. Distances are computed once. In a resample a row's copies are not its own
    neighbours (they would shrink its ball to radius 0)."""
    r, f = _checked(real, fake, nearest_k)
    d_rr, d_ff, d_rf = _distances(r, f)
    return bootstrap_interval(
        lambda i, j: _prdc(d_rr, d_ff, d_rf, nearest_k, i, j).coverage,
        np.arange(len(r)),
        np.arange(len(f)),
        samples=samples,
        confidence=confidence,
        seed=seed,
    )
