"""The Vendi score (Friedman & Dieng 2023): the effective number of distinct images in a set.

With the cosine-similarity kernel K (K_ij = cos(x_i, x_j), so K_ii = 1), it is the exponential of the
Shannon entropy of the eigenvalues of K / n: 1 for n identical images, n for n mutually orthogonal
ones. The nonzero eigenvalues of K / n = X X^T / n (rows of X normalised) are those of X^T X / n, so
the smaller of the two matrices is decomposed (what the authors' `vendi_score.score_dual` does).
The `vendi-score` package (0.0.3) is not used: its `score_K` warns on every call under SciPy 1.17 and
breaks with SciPy 2.0 (`scipy.sparse.csr`), and it adds a dependency for these few lines.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, stats

from synthmix.quality.arrays import features


def vendi(x: np.ndarray) -> float:
    """Vendi score of the rows of `x` (n, d) with the cosine-similarity kernel, in [1, min(n, d)].
    Every row must be nonzero (a zero vector has no direction)."""
    a = features(x, "features")
    norms = np.linalg.norm(a, axis=1)
    if (norms == 0).any():
        raise ValueError("the Vendi score's cosine kernel needs nonzero feature vectors")
    a = a / norms[:, None]
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    eigenvalues = np.clip(linalg.eigvalsh(gram / a.shape[0]), 0.0, None)
    return float(np.exp(stats.entropy(eigenvalues)))
