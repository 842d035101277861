"""The top of the report: the headline figure (with its data as a CSV) and the sentences above the rest.

The headline figure plots the primary metric against synthetic images a class, one line per real
count and generator (the mixes of real and synthetic images; a line of another generator than the
first is labelled with its name), the controls (controls.CONTROLS) as horizontal
reference lines, one panel per model. The sentences say whether the mix adding the most synthetic
images to the baseline's real ones beats its augmentation control, and what its synthetic images are
worth in real ones (exchange.py).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synthmix.report import controls, exchange, figures
from synthmix.report.cells import Cell, figure_source
from synthmix.report.comparisons import Results
from synthmix.report.study_figures import FigureRef
from synthmix.report.wording import LOWER_IS_BETTER, METRIC_LABELS, describe, model_names

FIGURE = Path("figures") / "headline.png"  # relative to the report folder, as FigureRef paths are
DATA = Path("figures") / "headline.csv"
DATA_FIELDS = ("model", "mix", "real", "synthetic", "kind", "mean", "low", "high")


@dataclass(frozen=True)
class Point:
    """One row of headline.csv: a model's mix, its kind (controls.kind) and the primary metric's mean
    over replicates with its Student-t interval (NaN bounds with one replicate)."""

    model: str
    cell: Cell
    kind: str
    mean: float
    low: float
    high: float


def points(results: Results) -> list[Point]:
    """Every mix of every model (the hyperparameter source its figures use), in report order."""
    out = []
    for model in results.models:
        source = figure_source(results.cells, model)
        for c in results.cells:
            if c.model == model and c.source == source:
                iv = results.intervals[c][results.primary]
                out.append(Point(model, c, controls.kind(c.mix, results.baseline), iv.mean, iv.low, iv.high))
    return out


def write_data(rows: Sequence[Point], path: Path) -> None:
    """headline.csv: one row per model and mix (DATA_FIELDS), for `dvc plots`."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(DATA_FIELDS)
        for p in rows:
            numbers = ("" if math.isnan(v) else f"{v:.6g}" for v in (p.mean, p.low, p.high))
            writer.writerow(
                (p.model, p.cell.mix.name, p.cell.mix.real, p.cell.mix.synthetic, p.kind, *numbers)
            )


def _panel(results: Results, model: str, label: str, rows: Sequence[Point]) -> figures.Panel:
    own = [p for p in rows if p.model == model]
    mixing = [p for p in own if p.kind in (controls.SYNTHETIC, controls.REAL_ONLY)]
    lines = []
    # one line per real count and generator; a real-only mix starts every generator's line of its count
    generators = list(dict.fromkeys(["", *(p.cell.mix.generator for p in mixing if p.cell.mix.synthetic)]))
    for real in sorted({p.cell.mix.real for p in mixing}):
        for generator in generators:
            line = sorted(
                (
                    p
                    for p in mixing
                    if p.cell.mix.real == real
                    and (p.cell.mix.generator == generator or not p.cell.mix.synthetic)
                ),
                key=lambda p: p.cell.mix.synthetic,
            )
            if generator and not any(p.cell.mix.synthetic for p in line):
                continue
            lines.append(
                figures.Line(
                    f"{real} real" + (f", {generator}" if generator else ""),
                    [p.cell.mix.synthetic for p in line],
                    [results.intervals[p.cell][results.primary] for p in line],
                    [p.cell.mix.name for p in line],
                )
            )
    references = [
        figures.Reference(
            controls.named(p.cell.mix, results.baseline), results.intervals[p.cell][results.primary]
        )
        for p in own
        if p not in mixing
    ]
    source = own[0].cell.source if own else "fixed"
    return figures.Panel(label if source == "fixed" else f"{label} (tuned)", lines, references)


def draw_headline(results: Results, out: Path) -> FigureRef:
    """figures/headline.png and figures/headline.csv under the report folder `out`."""
    rows = points(results)
    names = model_names(results.cells)
    label = METRIC_LABELS[results.primary]
    panels = [_panel(results, m, names[m], rows) for m in results.models]
    figures.headline_figure(
        f"{label} by synthetic images a class", panels, label, f"{results.confidence:.0%}", out / FIGURE
    )
    write_data(rows, out / DATA)
    refs = sorted(
        {
            controls.named(p.cell.mix, results.baseline)
            for p in rows
            if p.kind not in (controls.SYNTHETIC, controls.REAL_ONLY)
        }
    )
    listed = f"{', '.join(refs[:-1])} and {refs[-1]}" if len(refs) > 1 else "".join(refs)
    what = "the controls and vetted mixes" if any(p.kind == controls.VETTED for p in rows) else "the controls"
    shown = f"; dashed: {what}, {listed}, their intervals shaded" if refs else ""
    return FigureRef(
        FIGURE,
        f"{label[0].upper()}{label[1:]} against synthetic images a class, one line per real count (the mixes of real and "
        f"synthetic images; per generator when there are several), one panel per model{shown}. Mean over replicates with its "
        f"{results.confidence:.0%} Student-t interval as a band; its numbers are in {DATA.name}, beside the figure's PNG.",
    )


# --- the sentences at the top --------------------------------------------------------------------


def augmentation_sentences(results: Results) -> list[str]:
    """Per model: whether the synthetic mix with the baseline's real count and the most synthetic
    images beats the augmentation control with as many images a class (the declared comparison),
    with its change and interval; a verdict only when Holm-adjusted significant."""
    declared = (results.baseline, *results.family.mixes)
    target = controls.synthetic_target(declared, results.baseline)
    control = controls.augmentation_control_for(target, declared) if target else None
    if target is None or control is None:
        return []
    names, out = model_names(results.cells), []
    for model in results.models:
        source = figure_source(results.cells, model)
        who = names[model] if source == "fixed" else f"{names[model]} (tuned)"
        k = next(
            (
                k
                for k in results.comparisons
                if k.kind == "augmentation"
                and k.model == model
                and k.b.source == source
                and (k.a.mix, k.b.mix) == (control, target)
            ),
            None,
        )
        if k is None:
            have = {c.mix for c in results.cells if c.model == model and c.source == source}
            missing = " and ".join(str(m) for m in (target, control) if m not in have)
            why = f"no runs of {missing}" if missing else "their runs share no replicate"
            out.append(f"{who}: whether {target} beats the augmentation control {control} is unknown: {why}.")
            continue
        d = k.differences[results.primary]
        if not results.significant(k):
            then = "so this study does not show that the synthetic images beat augmentation"
        else:
            better = (d.estimate < 0) if results.primary in LOWER_IS_BETTER else (d.estimate > 0)
            then = (
                "the synthetic images beat augmentation here"
                if better
                else "augmentation beat the synthetic images here"
            )
            then = f"so {then}" + (" (exploratory)" if results.family.exploratory else "")
        then = "" if d.no_variance else f", {then}"
        out.append(
            f"{who}: does adding {target.synthetic} synthetic images a class beat augmenting the real ones? "
            f"{target} vs the augmentation control {control} ({control.real} real images and "
            f"{control.augmented} augmented copies of them a class) {describe(k, results.primary, results)}"
            f"{then}."
        )
    return out


def summary(results: Results, rates: Sequence[exchange.ExchangeRate]) -> list[str]:
    """The sentences at the top of the report: augmentation control, then the exchange rates."""
    return [*augmentation_sentences(results), *(exchange.sentence(r, results) for r in rates)]
