"""quality/quality.json and quality_metrics.json: the one owner of the quality stage's summary formats.

quality.json holds, per generator, the synthetic set's quality against the real training images per
class and pooled (synthmix.quality.Quality), each synthetic image's nearest real images (training and
test split), the closest synthetic-to-real pairs, the feature space all of it was measured in, and
which automatic filters ran (a filter that could not, e.g. CLIP without local weights, says why).
quality_metrics.json is its headline numbers per generator, the stage's DVC metrics file.
Written by the quality stage, read by the report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from synthmix.core.errors import UserError
from synthmix.core.files import write_json
from synthmix.quality import BootstrapInterval, NearestSummary, Quality

QUALITY_NAME = "quality.json"
NEAREST_NAME = "nearest.csv"
METRICS_PATH = Path("quality_metrics.json")


@dataclass(frozen=True)
class FeatureSpace:
    """Where quality was measured: `name` (reference | resnet50) and a sentence saying what it is."""

    name: str
    description: str


@dataclass(frozen=True)
class FilterStatus:
    """One automatic filter: whether it ran (`applied`), its settings, and why not when it did not."""

    name: str
    applied: bool
    settings: dict[str, Any]
    reason: str = ""


@dataclass(frozen=True)
class ClosestPair:
    """A synthetic image and its nearest real image (`real_split`: train or test), cosine distance."""

    label: str
    synthetic: Path
    real: Path
    real_label: str
    real_split: str
    distance: float


@dataclass(frozen=True)
class GeneratorQuality:
    """One generator's synthetic set against the real training images, per class and pooled."""

    generator: str
    classes: dict[str, Quality]
    overall: Quality
    closest: tuple[ClosestPair, ...]
    test_nearest_median: float | None  # median distance of a synthetic image to its nearest test image


@dataclass(frozen=True)
class QualitySummary:
    feature_space: FeatureSpace
    filters: tuple[FilterStatus, ...]
    generators: tuple[GeneratorQuality, ...]
    reference_accuracy: float  # the reference classifier's accuracy on its own (real) training images

    def generator(self, name: str) -> GeneratorQuality | None:
        return next((g for g in self.generators if g.generator == name), None)


def write_quality(summary: QualitySummary, path: Path) -> None:
    write_json(asdict(summary), path)


def _interval(raw: dict[str, Any] | None) -> BootstrapInterval | None:
    if raw is None:
        return None
    return BootstrapInterval(**{f.name: raw[f.name] for f in fields(BootstrapInterval)})


def _quality(raw: dict[str, Any]) -> Quality:
    values = dict(raw)
    values["kid_interval"] = _interval(raw.get("kid_interval"))
    values["coverage_interval"] = _interval(raw.get("coverage_interval"))
    values["nearest"] = NearestSummary(**raw["nearest"]) if raw.get("nearest") else None
    values["reasons"] = tuple(raw.get("reasons", ()))
    return Quality(**{f.name: values.get(f.name) for f in fields(Quality)})


def read_quality(path: Path) -> QualitySummary:
    """quality/quality.json; a UserError naming the file and how to remake it when it cannot be read."""
    try:
        raw = json.loads(path.read_text())
        return QualitySummary(
            FeatureSpace(**raw["feature_space"]),
            tuple(FilterStatus(**f) for f in raw["filters"]),
            tuple(
                GeneratorQuality(
                    g["generator"],
                    {name: _quality(q) for name, q in g["classes"].items()},
                    _quality(g["overall"]),
                    tuple(
                        ClosestPair(
                            p["label"],
                            Path(p["synthetic"]),
                            Path(p["real"]),
                            p["real_label"],
                            p["real_split"],
                            p["distance"],
                        )
                        for p in g["closest"]
                    ),
                    g["test_nearest_median"],
                )
                for g in raw["generators"]
            ),
            raw["reference_accuracy"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path} cannot be read ({exc}). Rerun `synthmix quality` (or `dvc repro`) to write it again."
        ) from None


def headline_metrics(summary: QualitySummary, kept: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """quality_metrics.json: per generator, the pooled measures and the fraction of images the
    automatic filters kept (`kept`, by generator)."""
    out: dict[str, dict[str, float | None]] = {}
    for g in summary.generators:
        q = g.overall
        out[g.generator] = {
            "kid": q.kid,
            "precision": q.precision,
            "recall": q.recall,
            "density": q.density,
            "coverage": q.coverage,
            "vendi": q.vendi,
            "nearest_median": q.nearest.median if q.nearest else None,
            "filters_kept": kept.get(g.generator),
        }
    return out


def write_metrics(metrics: dict[str, dict[str, float | None]], path: Path = METRICS_PATH) -> None:
    write_json({g: dict(sorted(v.items())) for g, v in sorted(metrics.items())}, path)
