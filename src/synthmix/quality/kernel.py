"""Kernel Inception Distance (Bińkowski et al. 2018): the unbiased estimator of the squared maximum
mean discrepancy between real and synthetic features, with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

It is torchmetrics' `KernelInceptionDistance` on given features (tests/test_quality.py checks it
against torchmetrics' `poly_mmd` and the metric itself): each subset draws `subset_size` rows of each
set without replacement, the mean and the standard deviation (population, ddof=0, as torchmetrics)
are over subsets. Unlike torchmetrics, a set smaller than `subset_size` shrinks the subsets to the
smaller set's size instead of raising. The estimator is unbiased, so two samples of one distribution
give values scattered around 0, negative ones included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthmix.quality.arrays import feature_pair
from synthmix.quality.resample import BootstrapInterval, bootstrap_interval

DEGREE = 3
COEF = 1.0
# Up to this many kernel entries (256 MB of float64), `kid` computes the kernel of all rows once.
FULL_KERNEL_ENTRIES = 32_000_000


@dataclass(frozen=True)
class KernelDistance:
    """KID's mean and standard deviation over `subsets` subsets of `subset_size` rows of each set."""

    mean: float
    std: float
    subset_size: int
    subsets: int


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + COEF) ** DEGREE


def _kernels(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _poly_kernel(real, real), _poly_kernel(fake, fake), _poly_kernel(real, fake)


def _mmd2(k_rr: np.ndarray, k_ff: np.ndarray, k_rf: np.ndarray, i: np.ndarray, j: np.ndarray) -> float:
    """Unbiased MMD^2 of real rows `i` and fake rows `j` from full kernel matrices. Within a set, only
    pairs of *different* original rows count: with `i = arange(n)` that is the usual i != j sum, and
    for a bootstrap resample it keeps a row's copies from pairing with each other (which would add
    k(x, x) terms and bias the statistic upwards by O(1/n))."""
    within = 0.0
    for k, idx in ((k_rr, i), (k_ff, j)):
        distinct = idx[:, None] != idx[None, :]
        if not distinct.any():
            return math.nan  # a resample of one row drawn every time
        within += float(k[np.ix_(idx, idx)][distinct].sum() / distinct.sum())
    return within - 2.0 * float(k_rf[np.ix_(i, j)].mean())


def mmd2_unbiased(real: np.ndarray, fake: np.ndarray) -> float:
    """The unbiased MMD^2 estimate with the cubic polynomial kernel on all rows (sizes may differ):
    mean k over distinct real pairs + mean k over distinct fake pairs - 2 * mean k over real-fake pairs.
    Needs at least 2 rows in each set."""
    r, f = feature_pair(real, fake, min_rows=2)
    return _mmd2(*_kernels(r, f), np.arange(len(r)), np.arange(len(f)))


def kid(
    real: np.ndarray, fake: np.ndarray, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> KernelDistance:
    """KID of `fake` against `real`: `mmd2_unbiased` on `subsets` random subsets of
    min(len(real), len(fake), subset_size) rows of each set, drawn without replacement (like
    torchmetrics), its mean and its population standard deviation over subsets. Deterministic given
    `seed`. Needs at least 2 rows in each set."""
    r, f = feature_pair(real, fake, min_rows=2)
    if subset_size < 2 or subsets < 1:
        raise ValueError(f"KID needs subset_size >= 2 and subsets >= 1, got {subset_size} and {subsets}")
    size = min(len(r), len(f), subset_size)
    # Kernel matrices of all rows, when they fit, make each subset a selection instead of a product.
    full = _kernels(r, f) if len(r) ** 2 + len(f) ** 2 + len(r) * len(f) <= FULL_KERNEL_ENTRIES else None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        i, j = rng.permutation(len(r))[:size], rng.permutation(len(f))[:size]
        if full is None:
            values.append(_mmd2(*_kernels(r[i], f[j]), np.arange(size), np.arange(size)))
        else:
            values.append(_mmd2(*full, i, j))
    v = np.asarray(values)
    return KernelDistance(float(v.mean()), float(v.std()), size, subsets)


def kid_interval(
    real: np.ndarray, fake: np.ndarray, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> BootstrapInterval:
    """Percentile bootstrap interval (`resample.bootstrap_interval`) of `mmd2_unbiased` on all rows,
    resampling each set with replacement. The kernel matrices are computed once and each resample picks
    its rows from them, so a resample costs O((n + m)^2), not O((n + m)^2 d); meant for a class's few
    hundred images. Copies of one row in a resample are not paired with each other (see `_mmd2`)."""
    r, f = feature_pair(real, fake, min_rows=2)
    k_rr, k_ff, k_rf = _kernels(r, f)
    return bootstrap_interval(
        lambda i, j: _mmd2(k_rr, k_ff, k_rf, i, j),
        np.arange(len(r)),
        np.arange(len(f)),
        samples=samples,
        confidence=confidence,
        seed=seed,
    )
