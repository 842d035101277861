"""The quality stage: how good each synthetic set is, and which of its images the automatic filters reject.

Reads the real training split (prepared/train.csv; the test split only for the memorisation check and
never to choose anything) and every generator's synthetic manifest; writes into quality.out_dir:
filters.csv (data/vetting.py's format: each image's filter verdicts, what a @filtered mix leaves out),
quality.json (quality/files.py: per-class quality, the closest synthetic-to-real pairs, the feature
space, which filters ran), nearest.csv (each synthetic image's nearest real training and test image);
and quality_metrics.json (the headline numbers, DVC's metrics file). Logs all of it to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from synthmix import quality
from synthmix.config.compute import Compute, resolve_compute
from synthmix.config.params import Params, flatten, to_dict
from synthmix.core.errors import UserError
from synthmix.core.files import write_csv
from synthmix.core.progress import progress
from synthmix.data.images import LabelledImages, load_images
from synthmix.data.real import SplitRow, decode_array, read_manifest
from synthmix.data.vetting import FilterRow, write_filter_rows
from synthmix.generate.manifest import SyntheticRow, read_synthetic_manifest
from synthmix.models import CNN_HIDDEN, MODELS
from synthmix.quality.files import (
    NEAREST_NAME,
    QUALITY_NAME,
    ClosestPair,
    FeatureSpace,
    FilterStatus,
    GeneratorQuality,
    QualitySummary,
    headline_metrics,
    write_metrics,
    write_quality,
)
from synthmix.quality.filters.blank import pixel_std
from synthmix.quality.filters.reference import (
    REFERENCE_MODEL,
    Verdicts,
    features_and_verdicts,
    train_reference,
)
from synthmix.runs import tracking
from synthmix.runs.environment import environment_params, watch_system
from synthmix.train.features import backbone_features, feature_cache_key

Embed = Callable[[LabelledImages], np.ndarray]
NEAREST_FIELDS = ("generator", "label", "path", "train_path", "train_distance", "test_path", "test_distance")


@dataclass(frozen=True)
class QualityResult:
    summary: QualitySummary
    filter_rows: tuple[FilterRow, ...]
    mlflow_run_id: str | None


@dataclass(frozen=True)
class _Real:
    classes: tuple[str, ...]
    train_rows: tuple[SplitRow, ...]
    test_rows: tuple[SplitRow, ...]
    train: LabelledImages
    test: LabelledImages


def quality_stage(
    params: Params, log_to_mlflow: bool = True, compute: Compute | None = None
) -> QualityResult:
    """Measure every generator's synthetic set and run the filters; write quality.out_dir and the
    metrics file. Generators whose manifest does not exist yet fail with how to make it. Every network
    runs on `compute` (compute.* resolved: the CLI's, else resolved here)."""
    cfg, compute = params.quality, compute or resolve_compute(params.compute)
    real = _read_real(params)
    sets = {name: _manifest(params, name) for name in params.generate.names}
    reference = train_reference(real.train, len(real.classes), params.train, cfg.classifier.seed, compute)
    space, embed = _feature_space(params, reference.model, len(real.classes), len(real.train_rows), compute)
    real_features, test_features = embed(real.train), embed(real.test)
    clip, clip_status = _clip(params, compute)
    statuses = (_asked("classifier", cfg.classifier, params), clip_status, _asked("blank", cfg.blank, params))
    generators, filter_rows, nearest_rows = [], [], []
    for name, rows in sets.items():
        rows = [r for r in rows if r.label in real.classes]
        images = _load(rows, real.classes, params)
        features, verdicts = features_and_verdicts(reference.model, images, compute)
        if space.name != "reference":
            features = embed(images)
        scores = _clip_scores(clip, rows, cfg.clip_score.prompt) if clip is not None else None
        stds = pixel_std(images.images).numpy()
        labels = images.labels.numpy()
        filter_rows += _verdicts(name, rows, real.classes, labels, verdicts, stds, scores, statuses, params)
        measured = np.array([not r.blocked for r in rows], dtype=bool)  # a blacked-out image has no content
        gen_quality, nearest = _measure(
            name,
            [r for r, m in zip(rows, measured, strict=True) if m],
            features[measured],
            real,
            real_features,
            test_features,
            params,
        )
        generators.append(gen_quality)
        nearest_rows += nearest
    summary = QualitySummary(space, statuses, tuple(generators), float(reference.history[-1].eval_accuracy))
    metrics = headline_metrics(summary, kept_fractions(filter_rows))
    _write(params, summary, metrics, filter_rows, nearest_rows)
    run_id = _log(params, summary, metrics, compute) if log_to_mlflow else None
    return QualityResult(summary, tuple(filter_rows), run_id)


def _read_real(params: Params) -> _Real:
    prepared = params.data.prepared_dir
    train_rows = tuple(read_manifest(prepared / "train.csv"))
    test_rows = tuple(read_manifest(prepared / "test.csv"))
    classes = tuple(sorted({r.label for r in train_rows}))
    return _Real(
        classes, train_rows, test_rows, _load(train_rows, classes, params), _load(test_rows, classes, params)
    )


def _manifest(params: Params, name: str) -> list[SyntheticRow]:
    path = params.generate.manifest_path(name)
    if not path.exists():
        raise UserError(
            f"{path} does not exist: generator '{name}' has not made its images yet. Run `synthmix generate` "
            "(or `dvc repro`) before `synthmix quality`."
        )
    return read_synthetic_manifest(path)


def _load(rows: Sequence[SplitRow | SyntheticRow], classes: Sequence[str], params: Params) -> LabelledImages:
    index = {c: i for i, c in enumerate(classes)}
    return load_images(
        [r.path for r in rows],
        [index[r.label] for r in rows],
        [r.sha256 for r in rows],
        params.train.image_size,
        params.train.cache_dir,
    )


def _feature_space(
    params: Params, reference: object, num_classes: int, n_real: int, compute: Compute
) -> tuple[FeatureSpace, Embed]:
    """ImageNet ResNet50's pooled features when asked for (or auto) and its weights are on this machine,
    the train stage's cached ones; else the reference classifier's hidden layer."""
    choice, train = params.quality.feature_space, params.train
    if choice in ("auto", "resnet50"):
        entry = MODELS["resnet50"]
        section = train.model_section("resnet50")
        weights = entry.weights(section)
        if not weights.is_random:
            built = entry.build(num_classes, train.image_size, 0.0, section, weights, 0).to(compute.device)
            key = feature_cache_key("resnet50", weights, 0, train.image_size, compute)
            description = (
                f"ResNet50's pooled features, weights {weights.used} ({weights.identity}), of the images at "
                f"{train.image_size} px, the same features the train stage caches for its frozen ResNet50"
            )

            def embed(images: LabelledImages) -> np.ndarray:
                features = backbone_features(built, images, train.cache_dir, key, compute)
                return features.numpy().astype(np.float64)

            return FeatureSpace("resnet50", description), embed
        if choice == "resnet50":
            raise UserError(
                "quality.feature_space is resnet50, but no ImageNet ResNet50 weights are on this machine "
                f"(train.resnet50.weights is {section.weights!r}). Point train.resnet50.weights at a "
                "state_dict file, or set quality.feature_space to auto or reference."
            )
    description = (
        f"the hidden layer ({CNN_HIDDEN} units) of the reference classifier, the study's "
        f"{REFERENCE_MODEL.upper()} trained here on the {n_real} real training images only (no pretrained "
        "encoder's weights are on this machine), so distances reflect what tells these classes apart"
    )

    def embed_reference(images: LabelledImages) -> np.ndarray:
        return features_and_verdicts(reference, images, compute)[0]  # type: ignore[arg-type]

    return FeatureSpace("reference", description), embed_reference


def _asked(name: str, settings: object, params: Params) -> FilterStatus:
    """Filter `name` with its settings: applied when quality.filters names it."""
    asked = name in params.quality.filters
    return FilterStatus(name, asked, to_dict(settings), "" if asked else "not in quality.filters")


def _clip(params: Params, compute: Compute) -> tuple[tuple[object, object] | None, FilterStatus]:
    cfg = params.quality.clip_score
    status = _asked("clip_score", cfg, params)
    if not status.applied:
        return None, status
    from synthmix.quality.filters.clip_score import (  # transformers: only when asked
        ClipUnavailable,
        load_clip,
    )

    try:
        model, processor = load_clip(cfg.model)
    except ClipUnavailable as exc:
        return None, FilterStatus("clip_score", False, status.settings, str(exc))
    return (model.to(compute.device), processor), status  # clip_scores follows the model's device


def _clip_scores(clip: tuple[object, object], rows: Sequence[SyntheticRow], prompt: str) -> np.ndarray:
    from synthmix.quality.filters.clip_score import clip_scores

    model, processor = clip
    texts = [prompt.replace("{label}", r.label.replace("_", " ")) for r in rows]
    pictures = [decode_array(r.path) for r in progress(rows, "CLIP scores")]
    return clip_scores(model, processor, pictures, texts)


def _verdicts(
    generator: str,
    rows: Sequence[SyntheticRow],
    classes: Sequence[str],
    labels: np.ndarray,
    verdicts: Verdicts,
    stds: np.ndarray,
    scores: np.ndarray | None,
    statuses: Sequence[FilterStatus],
    params: Params,
) -> list[FilterRow]:
    """Each row's filter verdicts; `labels` are the rows' class indices into `classes`."""
    cfg = params.quality
    applied = {s.name for s in statuses if s.applied}
    disagrees = verdicts.rejected(labels, cfg.classifier.min_confidence)
    out = []
    for i, row in enumerate(rows):
        why = [
            name
            for name, hit in (
                ("blocked", row.blocked),
                ("near_test", row.near_test_path is not None),
                ("blank", "blank" in applied and stds[i] < cfg.blank.min_std),
                ("classifier", "classifier" in applied and bool(disagrees[i])),
                (
                    "clip_score",
                    scores is not None and "clip_score" in applied and scores[i] < cfg.clip_score.min_score,
                ),
            )
            if hit
        ]
        out.append(
            FilterRow(
                generator,
                row.label,
                row.index,
                row.path,
                row.sha256,
                tuple(why),
                float(stds[i]),
                classes[int(verdicts.predicted[i])],
                float(verdicts.confidence[i]),
                None if scores is None else float(scores[i]),
            )
        )
    return out


def _by_class(rows: Sequence[SyntheticRow | SplitRow], features: np.ndarray) -> dict[str, np.ndarray]:
    labels = np.array([r.label for r in rows])
    return {label: features[labels == label] for label in dict.fromkeys(labels.tolist())}


def _measure(
    generator: str,
    rows: Sequence[SyntheticRow],
    features: np.ndarray,
    real: _Real,
    real_features: np.ndarray,
    test_features: np.ndarray,
    params: Params,
) -> tuple[GeneratorQuality, list[tuple[object, ...]]]:
    """Per-class and pooled quality against the real training images, each image's nearest training
    and test image, and the closest pairs over both splits."""
    cfg = params.quality
    by_class = quality.per_class_quality(
        _by_class(real.train_rows, real_features),
        _by_class(rows, features),
        nearest_k=cfg.nearest_k,
        kid_subset_size=cfg.kid_subset_size,
        kid_subsets=cfg.kid_subsets,
        samples=cfg.bootstrap_samples,
        confidence=cfg.confidence,
        seed=cfg.seed,
    )
    if not rows:
        return GeneratorQuality(generator, dict(by_class.classes), by_class.overall, (), None), []
    to_train = quality.nearest_real(features, real_features)
    to_test = quality.nearest_real(features, test_features)
    nearest = [
        (
            generator,
            row.label,
            row.path.as_posix(),
            real.train_rows[int(to_train.index[i])].path.as_posix(),
            f"{to_train.distance[i]:.6f}",
            real.test_rows[int(to_test.index[i])].path.as_posix(),
            f"{to_test.distance[i]:.6f}",
        )
        for i, row in enumerate(rows)
    ]
    both = [*(("train", r) for r in real.train_rows), *(("test", r) for r in real.test_rows)]
    pairs = quality.closest_pairs(features, np.concatenate([real_features, test_features]), cfg.closest_pairs)
    closest = tuple(
        ClosestPair(rows[s].label, rows[s].path, both[r][1].path, both[r][1].label, both[r][0], d)
        for s, r, d in pairs
    )
    test_median = float(np.median(to_test.distance))
    return (
        GeneratorQuality(generator, dict(by_class.classes), by_class.overall, closest, test_median),
        nearest,
    )


def _write(
    params: Params,
    summary: QualitySummary,
    metrics: dict[str, dict[str, float | None]],
    filter_rows: Sequence[FilterRow],
    nearest: Sequence[tuple[object, ...]],
) -> None:
    out = params.quality.out_dir
    write_filter_rows(filter_rows, params.quality.filters_path)
    write_csv(NEAREST_FIELDS, nearest, out / NEAREST_NAME)
    write_quality(summary, out / QUALITY_NAME)
    write_metrics(metrics)


def kept_fractions(rows: Sequence[FilterRow]) -> dict[str, float]:
    """Per generator, the fraction of its images no filter rejected (blocked and test near-copies count
    as rejected: no mix takes them)."""
    out: dict[str, float] = {}
    for name in dict.fromkeys(r.generator for r in rows):
        own = [r for r in rows if r.generator == name]
        out[name] = sum(not r.rejected_by for r in own) / len(own)
    return out


def _log(
    params: Params, summary: QualitySummary, headline: dict[str, dict[str, float | None]], compute: Compute
) -> str:
    import mlflow

    watch_system(compute)  # MLflow's system metrics, on CUDA only
    metrics = {
        f"quality.{generator}.{key}": value
        for generator, values in headline.items()
        for key, value in values.items()
        if value is not None and math.isfinite(value)
    }
    metrics["quality.reference_accuracy"] = summary.reference_accuracy
    with tracking.stage_run(
        "quality",
        params={**flatten(to_dict(params.quality), "quality."), **environment_params(compute.record())},
        synthetic_manifest=params.generate.manifest_path(),
    ) as run:
        with tracking.interrupts_deferred():
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(params.quality.out_dir), artifact_path="quality")
        return run.info.run_id


def describe(result: QualityResult, params: Params) -> list[str]:
    """What `synthmix quality` prints: per generator its pooled KID and how many images the filters
    rejected, each asked-for filter that could not run and why, and the feature space."""
    lines = []
    for g in result.summary.generators:
        own = [r for r in result.filter_rows if r.generator == g.generator]
        kid = "n/a" if g.overall.kid is None else f"{g.overall.kid:.4g}"
        lines.append(
            f"{g.generator}: KID {kid} against the real training images; the filters reject "
            f"{sum(r.filtered_out for r in own)} of {len(own)} images."
        )
    lines += [
        f"Filter {f.name} did not run: {f.reason}"
        for f in result.summary.filters
        if not f.applied and f.name in params.quality.filters
    ]
    lines.append(f"Feature space: {result.summary.feature_space.name}. Tables in {params.quality.out_dir}/.")
    return lines
