"""The report's synthetic-data section: how good each generator's images are, what the filters dropped,
which vetted mixes came up short, and whether a class's quality goes with its gain in F1.

Reads quality/quality.json and quality/filters.csv (the quality stage's files, owned by
synthmix.quality.files and synthmix.data.vetting) and, for the figures, the images they name (paths relative
to the repo root, where the report runs). A study that never ran the quality stage has no quality.json:
then there is no section and no figure. `read_inputs` reads, `synthetic_section` computes the tables and
sentences (pure), `draw_synthetic_figures` draws.

Quality against gain is exploratory: Spearman's rho across the classes of one study, with a bootstrap
interval over classes, not adjusted for the several measures, models and generators, and nothing
causal (a class's image quality and its room to gain may both follow from how hard the class is).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from synthmix.config.params import Params
from synthmix.data.mixes import Mix
from synthmix.data.vetting import ALWAYS_LEFT_OUT, FilterRow, read_filter_rows
from synthmix.quality import BootstrapInterval, Quality
from synthmix.quality.files import QUALITY_NAME, FilterStatus, GeneratorQuality, QualitySummary, read_quality
from synthmix.report.cells import Cell, report_mixes
from synthmix.report.comparisons import Results
from synthmix.report.quality_gain import gain_sentences, gain_table, quality_gains
from synthmix.report.tables import Section, Table
from synthmix.report.wording import finite, model_names, value_text

TITLE = "Synthetic images"
ALL_CLASSES = "all classes"


@dataclass(frozen=True)
class SyntheticInputs:
    """What the section is computed from: quality.json, filters.csv's rows (none when it is missing) and
    the first generator's name (params.yaml's; a mix without -<generator> takes its images)."""

    quality: QualitySummary
    filter_rows: tuple[FilterRow, ...]
    first_generator: str


def read_inputs(params: Params) -> SyntheticInputs | None:
    """quality.json and filters.csv from params.quality.out_dir; None when the quality stage never ran."""
    path = params.quality.out_dir / QUALITY_NAME
    if not path.exists():
        return None
    filters = params.quality.filters_path
    rows = tuple(read_filter_rows(filters)) if filters.exists() else ()
    return SyntheticInputs(read_quality(path), rows, params.generate.first_name)


# --- numbers as table entries --------------------------------------------------------------------


def _with_interval(value: float | None, interval: BootstrapInterval | None, spec: str) -> str:
    text = value_text(value, spec)
    if not finite(value) or interval is None or not (finite(interval.low) and finite(interval.high)):
        return text
    return f"{text} ({interval.low:{spec}} to {interval.high:{spec}})"


# --- quality per class ---------------------------------------------------------------------------


def _kid_text(q: Quality) -> str:
    if q.kid_interval is None and finite(q.kid_std):  # pooled: no interval, the spread over KID subsets
        return f"{value_text(q.kid, '.3g')} (sd {q.kid_std:.2g})"
    return _with_interval(q.kid, q.kid_interval, ".3g")


def quality_row(name: str, q: Quality) -> tuple[str, ...]:
    near = q.nearest
    return (
        name,
        str(q.n_real),
        str(q.n_fake),
        _kid_text(q),
        value_text(q.precision, ".2f"),
        value_text(q.recall, ".2f"),
        value_text(q.density, ".2f"),
        _with_interval(q.coverage, q.coverage_interval, ".2f"),
        f"{value_text(q.vendi, '.1f')} / {value_text(q.vendi_real, '.1f')}",
        f"{value_text(near.median, '.3f')} / {value_text(near.real_median, '.3f')}" if near else "n/a",
    )


def quality_table(g: GeneratorQuality, feature_space: str, confidence: float) -> Table:
    """One row per class and an 'all classes' row (every class pooled, no interval)."""
    header = (
        f"{g.generator}: class ({feature_space} features)",
        "real n",
        "synthetic n",
        f"KID ({confidence:.0%} interval)",
        "precision",
        "recall",
        "density",
        f"coverage ({confidence:.0%} interval)",
        "Vendi synthetic / real",
        "nearest real: synthetic / real median",
    )
    rows = [quality_row(label, q) for label, q in g.classes.items()]
    return Table(header, (*rows, quality_row(ALL_CLASSES, g.overall)))


def _interval_confidence(summary: QualitySummary, default: float) -> float:
    """The confidence quality.json's intervals were computed at (params may have changed since)."""
    for g in summary.generators:
        for q in g.classes.values():
            for iv in (q.kid_interval, q.coverage_interval):
                if iv is not None:
                    return iv.confidence
    return default


def _filter_status_sentences(filters: Sequence[FilterStatus]) -> list[str]:
    def settings(f: FilterStatus) -> str:
        listed = ", ".join(f"{k}={v}" for k, v in sorted(f.settings.items()))
        return f"{f.name} ({listed})" if listed else f.name

    ran = [settings(f) for f in filters if f.applied]
    out = [f"Filters that ran: {'; '.join(ran)}."] if ran else []
    if any(f.applied and f.name == "classifier" for f in filters):
        out.append(
            "The classifier filter keeps the images a CNN trained on the same real training images already "
            "recognises; those may teach a classifier less than the ones it drops, so a @filtered mix's "
            "change measures that trade-off as well as image quality."
        )
    out += [
        f"The {f.name} filter did not run: {(f.reason or 'quality.json gives no reason').rstrip('.')}."
        for f in filters
        if not f.applied
    ]
    return out


def setting_sentences(summary: QualitySummary, confidence: float) -> list[str]:
    """What the quality tables measure, in which feature space, and which filters ran."""
    out = [
        f"Quality of each generator's synthetic images against the real training images, measured in "
        f"{summary.feature_space.description} (feature space '{summary.feature_space.name}'), per class "
        f"with {confidence:.0%} intervals (KID: percentile bootstrap; coverage: exact binomial at the "
        "effective size the bootstrap's variance implies, whose actual coverage a simulation checks in "
        "bench/RESULTS.md), and with every class pooled (no interval; KID's sd over subsets instead). KID: lower is closer to the real images. Precision: share of synthetic "
        "images inside the real images' neighbourhoods (fidelity); recall: the reverse (diversity); "
        "density and coverage after Naeem et al. (2020). Vendi: the effective number of distinct images, "
        "synthetic and real. Nearest real: the median cosine distance from a synthetic image to its nearest "
        "real training image beside that from a real image to its nearest other one; a synthetic median "
        "far below the real one would suggest copies. n/a: too few images of a class for that measure."
    ]
    if finite(summary.reference_accuracy):
        out.append(
            f"The reference classifier (trained on the real training images alone; the classifier "
            f"filter asks it) reaches {summary.reference_accuracy:.1%} accuracy on those same images, "
            "a training-set figure, not a held-out one."
        )
    return out + _filter_status_sentences(summary.filters)


def memorisation_sentence(g: GeneratorQuality) -> str | None:
    """How close the generator's images come to real ones, pooled, and in how many classes the synthetic
    median lies below the real images' own."""
    near = g.overall.nearest
    if near is None:
        return None
    text = (
        f"{g.generator}: a synthetic image lies at a median cosine distance of {near.median:.3f} from its "
        f"nearest real training image (closest {near.min:.3f})"
    )
    if finite(near.real_median):
        text += f", against {near.real_median:.3f} from a real image to its nearest other"
    if finite(g.test_nearest_median):
        text += f", and at {g.test_nearest_median:.3f} from its nearest test image"
    measured = [q.nearest for q in g.classes.values() if q.nearest and finite(q.nearest.real_median)]
    below = sum(n.median < n.real_median for n in measured if n.real_median is not None)
    if measured:
        text += f"; in {below} of {len(measured)} classes the synthetic median is below the real one's"
    return text + "."


# --- what the filters dropped --------------------------------------------------------------------


@dataclass(frozen=True)
class DropCounts:
    """One generator's class (or ALL_CLASSES): its images, how many each filter rejected (an image may be
    rejected by several) and how many none rejected."""

    generator: str
    label: str
    images: int
    rejected: Mapping[str, int]
    kept: int


def filter_names(summary: QualitySummary, rows: Sequence[FilterRow]) -> list[str]:
    """The columns: the checks every mix applies, then quality.json's filters, then any other seen."""
    named = [*ALWAYS_LEFT_OUT, *(f.name for f in summary.filters)]
    seen = sorted({n for r in rows for n in r.rejected_by} - set(named))
    return list(dict.fromkeys([*named, *seen]))


def _count(generator: str, label: str, rows: Sequence[FilterRow], names: Sequence[str]) -> DropCounts:
    rejected = Counter(n for r in rows for n in r.rejected_by)
    return DropCounts(
        generator, label, len(rows), {n: rejected[n] for n in names}, sum(not r.rejected_by for r in rows)
    )


def drop_counts(rows: Sequence[FilterRow], names: Sequence[str]) -> list[DropCounts]:
    """Per generator, one entry per class (in file order) and then the generator's total."""
    out = []
    for generator in dict.fromkeys(r.generator for r in rows):
        own = [r for r in rows if r.generator == generator]
        for label in dict.fromkeys(r.label for r in own):
            out.append(_count(generator, label, [r for r in own if r.label == label], names))
        out.append(_count(generator, ALL_CLASSES, own, names))
    return out


def drop_table(counts: Sequence[DropCounts], names: Sequence[str], not_run: set[str]) -> Table:
    """A filter that did not run shows 'not run' rather than a count of 0 it never made."""

    def entry(c: DropCounts, name: str) -> str:
        return "not run" if name in not_run and not c.rejected[name] else str(c.rejected[name])

    return Table(
        ("generator", "class", "images", *names, "kept by the filters"),
        tuple(
            (c.generator, c.label, str(c.images), *(entry(c, n) for n in names), str(c.kept)) for c in counts
        ),
    )


def drop_sentences(counts: Sequence[DropCounts]) -> list[str]:
    totals = [c for c in counts if c.label == ALL_CLASSES]
    if not totals:
        return [
            "No filter verdicts (quality/filters.csv) were found, so what the filters dropped is not shown."
        ]
    kept = "; ".join(
        f"{c.generator}: {c.kept} of {c.images} ({c.kept / max(c.images, 1):.0%})" for c in totals
    )
    return [
        f"Synthetic images kept by every filter and check, {kept}. The filter table counts what each "
        f"rejected (an image may be rejected by several); {' and '.join(ALWAYS_LEFT_OUT)} images are left "
        "out of every mix, the other filters' rejects only out of @filtered and @vetted mixes."
    ]


# --- vetted mixes that came up short -------------------------------------------------------------


@dataclass(frozen=True)
class Shortfall:
    """A run of a vetted mix that trained on fewer synthetic images than its mix names."""

    cell: Cell
    seed: int
    expected: int
    trained: int


def shortfalls(cells: Sequence[Cell]) -> list[Shortfall]:
    out = []
    for cell in cells:
        for run in cell.runs if cell.mix.vetting else ():
            expected = cell.mix.synthetic * len(run.classes)
            if run.record.synthetic_images < expected:
                out.append(Shortfall(cell, run.seed, expected, run.record.synthetic_images))
    return out


def vetting_sentences(
    cells: Sequence[Cell], study_mixes: Sequence[Mix], names: Mapping[str, str]
) -> list[str]:
    """Which vetted mixes could not keep their size, or that every one did, or that there is none."""
    vetted = [c for c in cells if c.mix.vetting]
    if not vetted:
        planned = [m.name for m in study_mixes if m.vetting]
        if planned:
            return [f"No vetted mix has runs ({', '.join(planned)}): run `synthmix train`."]
        example = next(
            (m.with_vetting("filtered") for m in study_mixes if m.synthetic), Mix(30, 15, vetting="filtered")
        )
        return [
            f"The study has no vetted mix: add one such as {example} to study.mixes to train on the "
            "synthetic images the filters kept (the next images taken in place of the rejected ones)."
        ]
    short = shortfalls(vetted)
    if not short:
        listed = ", ".join(dict.fromkeys(c.mix.name for c in vetted))
        return [
            f"Every vetted mix kept its size ({listed}): each run trained on as many synthetic images as its mix names."
        ]
    out = []
    for cell in dict.fromkeys(s.cell for s in short):
        runs = ", ".join(
            f"seed {s.seed} on {s.trained} synthetic images instead of {s.expected} ({s.expected - s.trained} short)"
            for s in short
            if s.cell == cell
        )
        out.append(
            f"{names.get(cell.model, cell.model)} {cell.name} could not keep its size: its vetting rejected "
            f"more synthetic images than its replicate's block of generated images had to spare, so some classes took the ones left ({runs}); "
            f"its comparison with {cell.mix.with_vetting('')} therefore also changes the number of synthetic images."
        )
    return out


# --- the section ---------------------------------------------------------------------------------


def synthetic_section(inputs: SyntheticInputs, results: Results, params: Params) -> tuple[Section, list[str]]:
    """The section (its text is the sentences, joined) and its sentences one by one."""
    summary = inputs.quality
    names = model_names(results.cells)
    confidence = _interval_confidence(summary, params.quality.confidence)
    columns = filter_names(summary, inputs.filter_rows)
    counts = drop_counts(inputs.filter_rows, columns)
    gains = quality_gains(results, inputs.quality, inputs.first_generator, params)
    sentences = [
        *setting_sentences(summary, confidence),
        *(s for s in (memorisation_sentence(g) for g in summary.generators) if s),
        *drop_sentences(counts),
        *vetting_sentences(results.cells, report_mixes(params), names),
        *gain_sentences(gains, names, params.quality.bootstrap_samples),
    ]
    space = summary.feature_space.name
    tables = [quality_table(g, space, confidence) for g in summary.generators]
    if counts:
        tables.append(drop_table(counts, columns, {f.name for f in summary.filters if not f.applied}))
    if gains:
        tables.append(gain_table(gains, names, space, params.report.confidence))
    return Section(TITLE, " ".join(sentences), tuple(tables)), sentences
