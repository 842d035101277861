"""Every quality measure of a synthetic set, per class and pooled over classes.

A class with too few images for a measure gets None for it and a reason in `Quality.reasons`, never an
exception: KID needs 2 images of each kind, precision/recall/density/coverage need nearest_k + 1 of
each, the nearest-image distances 1 of each (and 2 real for the real-to-real baseline), the Vendi
score 1. Intervals (percentile bootstrap) are computed per class only: the pooled sets are too large
for O(n^2) work per resample, and their KID already has its spread over subsets.
Each class's random draws derive from `seed` and the class's name, so they do not depend on the order
of the classes or on which other classes are there.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from synthmix.quality.diversity import vendi
from synthmix.quality.kernel import kid, kid_interval
from synthmix.quality.manifold import coverage_interval, prdc
from synthmix.quality.nearest import nearest_other, nearest_real
from synthmix.quality.resample import BootstrapInterval


@dataclass(frozen=True)
class NearestSummary:
    """Cosine distances from synthetic images to their nearest real image (`min`, `median`), and
    `real_median`, the median distance from a real image to its nearest other real image (None with
    one real image): a synthetic median far below it suggests copies."""

    min: float
    median: float
    real_median: float | None


@dataclass(frozen=True)
class Quality:
    """One class's (or the pooled) quality of the synthetic images against the real ones. `vendi` is
    the synthetic images' Vendi score, `vendi_real` the real images' for comparison. Fields are None
    when the class has too few images for them; `reasons` says which and why."""

    n_real: int
    n_fake: int
    kid: float | None
    kid_std: float | None
    kid_interval: BootstrapInterval | None
    precision: float | None
    recall: float | None
    density: float | None
    coverage: float | None
    coverage_interval: BootstrapInterval | None
    vendi: float | None
    vendi_real: float | None
    nearest: NearestSummary | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class QualityByClass:
    """`classes` by name (the real classes' order, then classes with only synthetic images), and
    `overall`: every class's images pooled."""

    classes: Mapping[str, Quality]
    overall: Quality


@dataclass(frozen=True)
class _Settings:
    nearest_k: int
    kid_subset_size: int
    kid_subsets: int
    samples: int
    confidence: float


def _class_seed(seed: int, name: str) -> int:
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def _quality(real: np.ndarray, fake: np.ndarray, s: _Settings, seed: int, intervals: bool) -> Quality:
    n, m = len(real), len(fake)
    values: dict[str, object] = {}
    reasons: list[str] = []
    counts = f"has {n} real and {m} synthetic"

    if min(n, m) >= 2:
        distance = kid(real, fake, s.kid_subset_size, s.kid_subsets, seed)
        values |= {"kid": distance.mean, "kid_std": distance.std}
        if intervals:
            values["kid_interval"] = kid_interval(real, fake, s.samples, s.confidence, seed)
    else:
        reasons.append(f"KID needs 2 real and 2 synthetic images, {counts}")

    if min(n, m) >= s.nearest_k + 1:
        values |= asdict(prdc(real, fake, s.nearest_k))
        if intervals:
            values["coverage_interval"] = coverage_interval(
                real, fake, s.nearest_k, s.samples, s.confidence, seed
            )
    else:
        reasons.append(
            f"precision, recall, density and coverage need {s.nearest_k + 1} real and "
            f"{s.nearest_k + 1} synthetic images (nearest_k + 1), {counts}"
        )

    if m:
        values["vendi"] = vendi(fake)
    if n:
        values["vendi_real"] = vendi(real)
    if n and m:
        distances = nearest_real(fake, real).distance
        baseline = float(np.median(nearest_other(real))) if n >= 2 else None
        values["nearest"] = NearestSummary(float(distances.min()), float(np.median(distances)), baseline)
    else:
        reasons.append(f"the Vendi score and nearest-image distances need images, {counts}")

    if not intervals:
        reasons.append("intervals are computed per class only")
    measures = {f.name for f in fields(Quality)} - {"n_real", "n_fake", "reasons"}
    return Quality(n_real=n, n_fake=m, reasons=tuple(reasons), **{k: values.get(k) for k in measures})


def per_class_quality(
    real_by_class: Mapping[str, np.ndarray],
    fake_by_class: Mapping[str, np.ndarray],
    nearest_k: int = 5,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> QualityByClass:
    """Quality of the synthetic features against the real ones in every class (a class missing on one
    side counts as having no images there) and pooled over all classes. Every array is (n, d) with one
    d throughout; an empty class may be (0, d) or left out. `samples` and `confidence` are the per-class
    bootstrap intervals' (KID, coverage)."""
    if nearest_k < 1:
        raise ValueError(f"nearest_k must be at least 1, got {nearest_k}")
    arrays = [np.asarray(a, dtype=np.float64) for a in [*real_by_class.values(), *fake_by_class.values()]]
    lengths = {a.shape[1] for a in arrays if a.ndim == 2 and len(a)}
    if len(lengths) != 1:
        raise ValueError(f"every class's features need one length, got lengths {sorted(lengths)}")
    d = lengths.pop()

    def rows(by_class: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        a = np.asarray(by_class.get(name, np.empty((0, d))), dtype=np.float64)
        return a.reshape(0, d) if a.size == 0 else a

    s = _Settings(nearest_k, kid_subset_size, kid_subsets, samples, confidence)
    names = list(dict.fromkeys([*real_by_class, *fake_by_class]))
    classes = {
        name: _quality(rows(real_by_class, name), rows(fake_by_class, name), s, _class_seed(seed, name), True)
        for name in names
    }
    pooled = [np.concatenate([rows(by, name) for name in names]) for by in (real_by_class, fake_by_class)]
    return QualityByClass(classes, _quality(*pooled, s, seed, intervals=False))
