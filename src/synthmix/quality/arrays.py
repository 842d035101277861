"""The one check every quality function makes of its inputs: finite float feature arrays (n, d)."""

from __future__ import annotations

import numpy as np


def features(x: np.ndarray, name: str, min_rows: int = 1) -> np.ndarray:
    """`x` as a float64 (n, d) array; ValueError if it is not 2-D, has fewer than `min_rows` rows or a
    non-finite value."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D feature array (n, d), got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, has {a.shape[0]}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds a NaN or infinite feature")
    return a


def feature_pair(real: np.ndarray, fake: np.ndarray, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both sets checked by `features`, and of one feature length."""
    r, f = features(real, "real", min_rows), features(fake, "fake", min_rows)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real and fake features differ in length: {r.shape[1]} != {f.shape[1]}")
    return r, f
