"""The study's figures from its cells: what each figure shows, read from the runs, drawn by figures.py.

Per model: loss and accuracy curves (the study's Figs. 4-5), every metric per mix (Figs. 6-7), the
class-wise F1 change with its interval per class (Fig. 8), real vs synthetic samples (Figs. 1 and 9)
and confusion matrices. The curves and the class-wise change set the baseline against one mix, chosen
by `comparison_cell`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthmix.config.params import Params, ReportConfig
from synthmix.core.errors import UserError
from synthmix.core.progress import progress
from synthmix.data.mixes import Mix
from synthmix.generate.manifest import read_synthetic_manifest, usable
from synthmix.report import controls, figures
from synthmix.report.cells import Cell, figure_source
from synthmix.report.comparisons import Results
from synthmix.report.figures import FigureRef
from synthmix.report.stats import Difference
from synthmix.report.wording import METRIC_LABELS, model_names, signed
from synthmix.runs import rundir
from synthmix.runs.evaluate import FINAL_METRICS

# One class's F1 change from the baseline to the compared mix.
ClassChange = tuple[str, Difference]


@dataclass(frozen=True)
class TrainingImages:
    """Training image paths per class, in the order mixes take them (real by rank, synthetic by index)."""

    real: Mapping[str, list[Path]]
    synthetic: Mapping[str, list[Path]]


@dataclass(frozen=True)
class FigureInputs:
    """What every figure of one report draws from."""

    results: Results
    mixes: tuple[Mix, ...]  # in report order: a mix keeps its colour across every figure
    cfg: ReportConfig
    images: TrainingImages
    out: Path  # the report folder the figures/ go into


@dataclass(frozen=True)
class ModelView:
    """One model's cells as its figures show them: one hyperparameter source, the baseline and the
    mix set against it (with the rule that chose that mix, for the captions)."""

    model: str
    label: str
    own: tuple[Cell, ...]
    base: Cell | None
    other: Cell | None
    rule: str

    @property
    def shown(self) -> list[Cell]:
        return [c for c in (self.base, self.other) if c is not None]


def comparison_cell(cells: Sequence[Cell], baseline: Mix) -> tuple[Cell | None, str]:
    """The mix the curves and class-wise figures set against the baseline, and the rule in words.

    The mix with the baseline's real images and the most synthetic ones added (30r30s in the default
    study: what adding synthetic images does); when the study has none, the best other mix by mean
    macro F1. `cells` are one model's cells of one hyperparameter source.
    """
    target = controls.synthetic_target((c.mix for c in cells), baseline)
    if target is not None:
        cell = next(c for c in cells if c.mix == target)
        return cell, f"the mix with the baseline's {baseline.real} real images and the most synthetic ones"
    others = [c for c in cells if c.mix != baseline]
    best = max(others, key=lambda c: float(np.mean([r.metrics["f1_macro"] for r in c.runs])), default=None)
    return best, (
        f"the best mix by mean macro F1, picked on the test set (no mix adds synthetic images to the "
        f"baseline's {baseline.real} real ones)"
    )


def model_view(results: Results, model: str) -> ModelView:
    source = figure_source(results.cells, model)
    own = tuple(c for c in results.cells if c.model == model and c.source == source)
    base = next((c for c in own if c.mix == results.baseline), None)
    other, rule = comparison_cell(own, results.baseline)
    return ModelView(model, model_names(results.cells)[model], own, base, other, rule)


def draw_figures(inputs: FigureInputs) -> list[FigureRef]:
    """Every figure of every model, written under inputs.out/figures/, in the order the report shows."""
    refs: list[FigureRef] = []
    for model in progress(inputs.results.models, "Drawing figures"):
        view = model_view(inputs.results, model)
        refs += [draw_curves(inputs, view), draw_metric_bars(inputs, view)]
        deltas = class_f1_changes(inputs.results, view)
        if deltas:
            refs.append(draw_classwise(inputs, view, deltas))
        if inputs.images.real and inputs.images.synthetic:
            refs.append(draw_samples(inputs, view, deltas))
        refs.append(draw_confusion(inputs, view))
    return refs


def _rule_sentence(view: ModelView) -> str:
    """Why the figure shows the mix it shows (comparison_cell's rule), for its caption."""
    return f" Compared mix: {view.rule}." if view.other is not None else ""


def draw_curves(inputs: FigureInputs, view: ModelView) -> FigureRef:
    names = " vs ".join(c.mix.name for c in view.shown)
    path = Path("figures") / f"curves-{view.model}.png"
    figures.curves_figure(
        f"{view.label}: loss and accuracy per epoch, {names}",
        {c.mix.name: mean_curves(c) for c in view.shown},
        inputs.out / path,
    )
    return FigureRef(
        path,
        f"{view.label}: train (dashed) and test (solid) loss and accuracy per epoch, {names} "
        f"(the study's Figs. 4-5).{_rule_sentence(view)}",
    )


def draw_metric_bars(inputs: FigureInputs, view: ModelView) -> FigureRef:
    colours = {m: figures.PALETTE[i % len(figures.PALETTE)] for i, m in enumerate(inputs.mixes)}
    cells = inputs.results.cells
    bars = [
        figures.Bar(c.mix.name, c.source, colours[c.mix], inputs.results.intervals[c])
        for mix in inputs.mixes
        for c in cells
        if c.model == view.model and c.mix == mix
    ]
    path = Path("figures") / f"metrics-{view.model}.png"
    figures.metric_bars_figure(
        f"{view.label}: every metric per mix", bars, FINAL_METRICS, METRIC_LABELS, inputs.out / path
    )
    return FigureRef(
        path,
        f"{view.label}: every metric per mix, mean over seeds with {inputs.cfg.confidence:.0%} "
        "CI error bars; hatched bars: tuned hyperparameters (the study's Figs. 6-7).",
    )


def class_f1_changes(results: Results, view: ModelView) -> list[ClassChange]:
    """The change in F1 of every class from the baseline to the compared mix, with its interval (the
    comparison's per-class inference); [] when there is no such comparison."""
    if view.base is None or view.other is None:
        return []
    k = next((k for k in results.comparisons if (k.a, k.b) == (view.base, view.other)), None)
    if k is None or not k.class_f1:
        return []
    return [(c, k.class_f1[c]) for c in view.base.classes if c in k.class_f1]


def draw_classwise(inputs: FigureInputs, view: ModelView, deltas: Sequence[ClassChange]) -> FigureRef:
    assert view.other is not None  # deltas exist only with a compared mix
    baseline, other = inputs.results.baseline, view.other.mix
    path = Path("figures") / f"classwise-{view.model}.png"
    figures.classwise_figure(
        f"{view.label}: class-wise F1 change, {baseline} -> {other}",
        [figures.ClassChange(c, d.estimate, d.low, d.high, not d.covers_zero()) for c, d in deltas],
        inputs.out / path,
        f"{inputs.cfg.confidence:.0%}",
    )
    up = sum(d.low > 0 for _, d in deltas)
    down = sum(d.high < 0 for _, d in deltas)
    return FigureRef(
        path,
        f"{view.label}: change in F1 per class from {baseline} to {other}, sorted, with "
        f"{inputs.cfg.confidence:.0%} intervals (spread over replicates plus the shared test-image draw; "
        f"not adjusted across classes, so descriptive, not verdicts): {up} classes with an interval above "
        f"zero, {down} below, {len(deltas) - up - down} holding zero (grey: not significant) (the study's "
        f"Fig. 8).{_rule_sentence(view)}",
    )


def _highlights(view: ModelView, deltas: Sequence[ClassChange], cfg: ReportConfig) -> list[tuple[str, str]]:
    """(class, note) rows of the sample figure: the most improved and most degraded classes, or, with
    no class-wise change to rank by, the first classes (as the study's Fig. 1). A change whose interval
    holds zero is marked n.s. (not significant)."""
    if not deltas:
        return [(c, "") for c in view.own[0].classes[: 2 * cfg.highlight_classes]]
    ranked = sorted(deltas, key=lambda item: item[1].estimate, reverse=True)
    k = min(cfg.highlight_classes, len(ranked) // 2 or 1)

    def note(d: Difference) -> str:
        return f"F1 {signed(d.estimate, 2)}{' (n.s.)' if d.covers_zero() else ''}"

    highlight = [(c, note(d)) for c, d in ranked[:k]]
    return highlight + [(c, note(d)) for c, d in ranked[-k:] if c not in dict(highlight)]


def draw_samples(inputs: FigureInputs, view: ModelView, deltas: Sequence[ClassChange]) -> FigureRef:
    highlight = _highlights(view, deltas, inputs.cfg)
    images = load_samples([c for c, _ in highlight], inputs.images, inputs.cfg.sample_images)
    rows = [figures.SampleRow(c, note, *images[c]) for c, note in highlight]
    what = (
        "classes with the largest (top) and smallest (bottom) F1 change"
        if any(n for _, n in highlight)
        else "classes"
    )
    title = f"{view.label}: real vs synthetic training images, {what}"
    marked = any("n.s." in note for _, note in highlight)
    caption = (
        f"{view.label}: real (left) and synthetic (right) training images of the {what} (the study's Figs. "
        f"1 and 9).{' n.s.: the change in F1 of that class has an interval holding zero.' if marked else ''}"
    )
    path = Path("figures") / f"samples-{view.model}.png"
    figures.samples_figure(title, rows, inputs.out / path)
    return FigureRef(path, caption)


def draw_confusion(inputs: FigureInputs, view: ModelView) -> FigureRef:
    path = Path("figures") / f"confusion-{view.model}.png"
    figures.confusion_figure(
        f"{view.label}: confusion matrices (summed over seeds, rows normalised)",
        {c.mix.name: confusion_counts(c) for c in view.own},
        view.own[0].classes,
        inputs.out / path,
    )
    return FigureRef(
        path,
        f"{view.label}: confusion matrix of every mix, summed over seeds, each row "
        "normalised to the share of its true class.",
    )


# --- what the figures read -----------------------------------------------------------------------


def mean_curves(cell: Cell) -> dict[str, figures.Curves]:
    """history.csv of every seed: per-epoch mean, lowest and highest seed."""
    per_seed = [rundir.read_history(run.dir) for run in cell.runs]
    epochs = min(len(h) for h in per_seed)  # seeds stop together; guard against a ragged history
    curves = {}
    for i, name in enumerate(rundir.HISTORY_FIELDS[1:], start=1):  # column 0 is the epoch
        values = np.stack([h[:epochs, i] for h in per_seed])
        curves[name] = figures.Curves(per_seed[0][:epochs, 0], values.mean(0), values.min(0), values.max(0))
    return curves


def confusion_counts(cell: Cell) -> np.ndarray:
    """confusion.csv summed over seeds (rows true, columns predicted, in class order)."""
    return np.sum([rundir.read_confusion(run.dir) for run in cell.runs], axis=0)


def read_training_images(params: Params) -> TrainingImages:
    """Real training images (prepared/train.csv) and synthetic ones (synthetic/manifest.csv) per class;
    empty when either file is missing (the sample figures are then left out)."""
    from synthmix.data.real import read_manifest

    train_csv = params.data.prepared_dir / "train.csv"
    manifest = params.generate.manifest_path()  # the first generator's images
    real: dict[str, list[Path]] = defaultdict(list)
    synthetic: dict[str, list[Path]] = defaultdict(list)
    if train_csv.exists():
        for row in sorted(read_manifest(train_csv), key=lambda r: r.rank):
            if row.split == "train":
                real[row.label].append(row.path)
    if manifest.exists():
        for s in sorted(read_synthetic_manifest(manifest), key=lambda r: r.index):
            if usable(s):  # what a mix may train on: never a blocked image or a near-copy of a test one
                synthetic[s.label].append(s.path)
    return TrainingImages(real, synthetic)


def load_samples(
    classes: Sequence[str], images: TrainingImages, per_row: int
) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """The first `per_row` real and synthetic images of each class, decoded."""
    from synthmix.data.real import decode_array

    def decode(path: Path) -> np.ndarray:
        try:
            return decode_array(path)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"Cannot read {path} for the sample figures ({exc}). Restore the data with `dvc pull` "
                "or `dvc repro`."
            ) from None

    return {
        c: (
            [decode(p) for p in images.real.get(c, [])[:per_row]],
            [decode(p) for p in images.synthetic.get(c, [])[:per_row]],
        )
        for c in classes
    }
