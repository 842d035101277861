"""The memorisation check: how close each synthetic image's features come to a real image's.

Distances are cosine distances, 1 - cos(x, y), in [0, 2]: 0 for an exact copy (or a copy with its
features scaled), and comparable between backbones whose features differ in scale, where a Euclidean
threshold would not be. A zero feature vector has distance 1 to everything (scikit-learn's convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from synthmix.quality.arrays import feature_pair, features


@dataclass(frozen=True)
class NearestReal:
    """For synthetic row s: `index[s]`, the row of its nearest real image, and `distance[s]`, the
    cosine distance between them."""

    index: np.ndarray
    distance: np.ndarray


def nearest_real(fake: np.ndarray, real: np.ndarray) -> NearestReal:
    """Each synthetic row's nearest real row (exact search, scikit-learn, memory-bounded) and its
    cosine distance. Ties go to the lower real index."""
    r, f = feature_pair(real, fake)
    search = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(r)
    distance, index = search.kneighbors(f)
    return NearestReal(index=index[:, 0], distance=np.clip(distance[:, 0], 0.0, None))


def closest_pairs(fake: np.ndarray, real: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """The k synthetic rows closest to the real set, as (synthetic row, nearest real row, distance),
    closest first: the pairs to look at for copies. Each synthetic row appears at most once (with its
    nearest real row), so one copied image does not fill the list with its near-duplicate real
    neighbours. Fewer than k when there are fewer synthetic rows."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    nearest = nearest_real(fake, real)
    order = np.argsort(nearest.distance, kind="stable")[:k]
    return [(int(s), int(nearest.index[s]), float(nearest.distance[s])) for s in order]


def nearest_other(real: np.ndarray) -> np.ndarray:
    """Each real row's cosine distance to its nearest *other* real row: the baseline a synthetic
    image's `nearest_real` distance is read against (a copy sits far below it). Needs 2 rows."""
    r = features(real, "real", min_rows=2)
    search = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(r)
    distance, _ = search.kneighbors()  # no query: each row's neighbours leave the row itself out
    return np.clip(distance[:, 0], 0.0, None)
