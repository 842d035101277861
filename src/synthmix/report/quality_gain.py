"""Quality against gain: does a class whose synthetic images are closer to its real ones (KID, coverage,
memorisation) gain more F1 from them? Spearman's rho across the classes of one study with a bootstrap
interval over classes, per model and generator; exploratory, not adjusted for the several measures,
models and generators, and nothing causal (a class's image quality and its room to gain may both follow
from how hard the class is)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from synthmix.config.params import Params
from synthmix.data.mixes import Mix
from synthmix.quality import BootstrapInterval, Quality, RankCorrelation, rank_correlation
from synthmix.quality.files import QualitySummary
from synthmix.report import controls
from synthmix.report.cells import figure_source
from synthmix.report.comparisons import Results
from synthmix.report.tables import Table
from synthmix.report.wording import finite, p_text, value_text


@dataclass(frozen=True)
class Measure:
    """A per-class quality measure set against the gain in F1: its name and what a higher value says."""

    label: str
    higher: str  # the subject of a sentence: 'classes with higher KID'
    value: Callable[[Quality], float | None]


MEASURES = (
    Measure("KID", "classes with higher KID", lambda q: q.kid),
    Measure("coverage", "classes with higher coverage", lambda q: q.coverage),
    Measure(
        "nearest-real median",
        "classes whose synthetic images lie farther from their nearest real training image",
        lambda q: q.nearest.median if q.nearest else None,
    ),
)


@dataclass(frozen=True)
class QualityGain:
    """Spearman's rho across classes between a quality measure of `generator`'s images and the change in
    F1 (point estimate) of `model` from `baseline` to `mix`, that generator's synthetic target."""

    model: str
    generator: str
    baseline: Mix
    mix: Mix
    measure: Measure
    correlation: RankCorrelation


def quality_gains(
    results: Results, summary: QualitySummary, first_generator: str, params: Params
) -> list[QualityGain]:
    """Per model and generator: the baseline comparison of the generator's synthetic target (the first
    generator's: controls.synthetic_target; another's: that mix with its suffix), class by class."""
    out = []
    for model in results.models:
        source = figure_source(results.cells, model)
        own = [c for c in results.cells if c.model == model and c.source == source]
        target = controls.synthetic_target((c.mix for c in own), results.baseline)
        if target is None:
            continue
        for generator in params.generate.names:
            mix = target if generator == first_generator else target.with_generator(generator)
            k = next(
                (
                    k
                    for k in results.comparisons
                    if (k.kind, k.model, k.b.source, k.b.mix) == ("baseline", model, source, mix)
                ),
                None,
            )
            quality = summary.generator(generator)
            if k is None or not k.class_f1 or quality is None:
                continue
            classes = list(k.class_f1)
            gains = [k.class_f1[c].estimate for c in classes]
            for measure in MEASURES:
                values = [
                    measure.value(quality.classes[c]) if c in quality.classes else None for c in classes
                ]
                rho = rank_correlation(
                    values,
                    gains,
                    params.quality.bootstrap_samples,
                    params.report.confidence,
                    params.quality.seed,
                )
                out.append(QualityGain(model, generator, k.a.mix, mix, measure, rho))
    return out


def _excludes_zero(iv: BootstrapInterval) -> bool:
    return bool(iv.low > 0 or iv.high < 0)  # NaN bounds (no interval) never exclude it


def _span(iv: BootstrapInterval, confidence: bool = True) -> str:
    if not (finite(iv.low) and finite(iv.high)):
        return "no interval: every resample of the classes was tied"
    return f"{f'{iv.confidence:.0%} ' if confidence else ''}interval {iv.low:.2f} to {iv.high:.2f}"


def gain_sentence(g: QualityGain, name: str) -> str:
    """The direction only when the interval excludes zero; otherwise that none is detectable."""
    rc, who = g.correlation, f"{name}, {g.generator}"
    change = f"from {g.baseline} to {g.mix}"
    if rc.reason:
        return f"{who}: {g.measure.label} not set against the F1 change {change} ({rc.reason})."
    if _excludes_zero(rc.interval):
        more = "more" if rc.interval.low > 0 else "less"
        return (
            f"{who}: {g.measure.higher} gained {more} F1 {change} (rho {rc.rho:.2f}, {_span(rc.interval)}, "
            f"{rc.n} classes)."
        )
    return (
        f"{who}: no monotone relation between {g.measure.label} and the F1 change {change} detectable across "
        f"{rc.n} classes (rho {rc.rho:.2f}, {_span(rc.interval, confidence=False)})."
    )


def gain_table(
    gains: Sequence[QualityGain], names: Mapping[str, str], feature_space: str, confidence: float
) -> Table:
    rows = []
    for g in gains:
        rc = g.correlation
        rows.append(
            (
                names.get(g.model, g.model),
                g.generator,
                f"{g.mix} vs {g.baseline}",
                g.measure.label,
                str(rc.n),
                value_text(rc.rho, ".2f"),
                rc.reason or _span(rc.interval, confidence=False).removeprefix("interval "),
                p_text(rc.p_value) if finite(rc.p_value) else "n/a",
            )
        )
    header = ("model", "generator", "F1 change", f"measure ({feature_space} features)", "classes", "rho")
    return Table((*header, f"{confidence:.0%} interval", "p"), tuple(rows))


def gain_sentences(gains: Sequence[QualityGain], names: Mapping[str, str], samples: int) -> list[str]:
    if not gains:
        return [
            "Quality is not set against gain: no model has a baseline comparison of a mix adding a "
            "generator's synthetic images to the baseline's real ones."
        ]
    intro = (
        "Exploratory, across classes, and saying nothing causal: for each model and generator, Spearman's "
        "rho between a class's quality measure and the change in that class's F1 (mean over replicates) "
        "from the baseline to the mix adding the most of that generator's synthetic images, with a "
        f"percentile bootstrap interval over classes ({samples} resamples), not adjusted for the several "
        "measures, models and generators. A class's quality and its room to gain may both follow from "
        "how hard the class is."
    )
    return [intro, *(gain_sentence(g, names.get(g.model, g.model)) for g in gains)]
