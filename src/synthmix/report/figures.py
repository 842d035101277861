"""The report's figures as PNG files, drawn from numbers the report has already computed.

Plain matplotlib `Figure` objects (no pyplot global state, no display needed). Each function takes
plain values (labels, arrays, intervals) and a path, so the report decides what is drawn and these
decide only how. They mirror the study's figures: curves (Figs. 4-5), metric bars with error bars
(Figs. 6-7), class-wise F1 change with intervals (Fig. 8), real vs synthetic samples (Figs. 1 and 9), and
confusion matrices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from synthmix.report.stats import Interval

DPI = 100
# One colour per mix position (tab10), so a mix keeps its colour across every figure of a report.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
IMPROVED, DEGRADED, NOT_SIGNIFICANT = "#2a9d4b", "#c0392b", "#b0b0b0"


@dataclass(frozen=True)
class FigureRef:
    """A figure of the report: its file (relative to the report folder) and its caption."""

    path: Path
    caption: str


@dataclass(frozen=True)
class Curves:
    """Per-epoch mean over seeds, with the lowest and highest seed, of one (mix, split, quantity)."""

    epochs: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class Bar:
    """One bar of the metric chart: a mix, fixed or tuned hyperparameters, its interval per metric."""

    mix: str
    source: str
    colour: str
    intervals: Mapping[str, Interval]


@dataclass(frozen=True)
class ClassChange:
    """One class's change in F1 with its interval; `significant` when the interval excludes zero."""

    label: str
    change: float
    low: float
    high: float
    significant: bool


@dataclass(frozen=True)
class SampleRow:
    """One row of a sample grid: a class, a note (e.g. its F1 change) and images to show."""

    label: str
    note: str
    real: Sequence[np.ndarray]
    synthetic: Sequence[np.ndarray]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    return path


def curves_figure(title: str, curves: Mapping[str, Mapping[str, Curves]], path: Path) -> Path:
    """Loss and accuracy per epoch, train dashed and test solid, one colour per mix.

    `curves[mix]` maps 'train_loss', 'test_loss', 'train_accuracy', 'test_accuracy' to Curves.
    """
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, quantity in zip(axes, ("loss", "accuracy"), strict=True):
        for i, (mix, by_name) in enumerate(curves.items()):
            colour = PALETTE[i % len(PALETTE)]
            for split, style in (("train", "--"), ("test", "-")):
                c = by_name[f"{split}_{quantity}"]
                ax.plot(c.epochs, c.mean, style, color=colour, label=f"{mix} {split}")
                ax.fill_between(c.epochs, c.low, c.high, color=colour, alpha=0.12, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity)
        ax.set_title(f"{quantity.capitalize()} (mean over seeds, band: lowest to highest seed)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def metric_bars_figure(
    title: str, bars: Sequence[Bar], metrics: Sequence[str], labels: Mapping[str, str], path: Path
) -> Path:
    """Grouped bars: one group per metric, one bar per (mix, source), CI error bars.

    Tuned bars are hatched and sit beside their mix's fixed bar. Test loss (another scale) gets its
    own panel on the right.
    """
    score_metrics = [m for m in metrics if m != "test_loss"]
    fig = Figure(figsize=(12, 4.6))
    axes = fig.subplots(1, 2, width_ratios=(len(score_metrics), 1.4))
    width = 0.8 / max(len(bars), 1)
    for ax, shown in ((axes[0], score_metrics), (axes[1], ["test_loss"])):
        x = np.arange(len(shown))
        for i, bar in enumerate(bars):
            means = np.array([bar.intervals[m].mean for m in shown])
            err = np.array([_error(bar.intervals[m]) for m in shown]).T
            ax.bar(
                x - 0.4 + width * (i + 0.5),
                means,
                width,
                yerr=err,
                capsize=2,
                color=bar.colour,
                hatch="//" if bar.source == "tuned" else None,
                edgecolor="white" if bar.source == "tuned" else bar.colour,
                error_kw={"elinewidth": 0.8},
            )
        ax.set_xticks(x, [labels[m] for m in shown])
        ax.grid(axis="y", alpha=0.3)
    lows = [
        b.intervals[m].low if not math.isnan(b.intervals[m].low) else b.intervals[m].mean
        for b in bars
        for m in score_metrics
    ]
    if lows:  # zoom in on the differences, as the study's bar charts do
        axes[0].set_ylim(
            max(0.0, min(lows) - 0.05), min(1.0, max(_top(b, score_metrics) for b in bars)) + 0.02
        )
    axes[0].set_title("Scores (higher is better); error bars: 95% CI over seeds", fontsize=9)
    axes[1].set_title("Test loss (lower is better)", fontsize=9)
    handles = [
        Patch(
            facecolor=b.colour,
            hatch="//" if b.source == "tuned" else None,
            edgecolor="white",
            label=f"{b.mix}{' tuned' if b.source == 'tuned' else ''}",
        )
        for b in bars
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.suptitle(title)
    fig.subplots_adjust(bottom=0.2)
    return _save(fig, path)


def _error(interval: Interval) -> tuple[float, float]:
    if math.isnan(interval.low):
        return (0.0, 0.0)  # one seed: no interval to draw
    return (interval.mean - interval.low, interval.high - interval.mean)


def _top(bar: Bar, metrics: Sequence[str]) -> float:
    return max(
        bar.intervals[m].high if not math.isnan(bar.intervals[m].high) else bar.intervals[m].mean
        for m in metrics
    )


def classwise_figure(title: str, changes: Sequence[ClassChange], path: Path, confidence: str) -> Path:
    """Per-class change as horizontal diverging bars with interval whiskers, sorted from most improved
    to most degraded; a class whose interval holds zero is grey (not significant)."""
    ordered = sorted(changes, key=lambda c: c.change)
    fig = Figure(figsize=(7, max(2.5, 0.22 * len(ordered) + 1.2)))
    ax = fig.subplots()
    values = np.array([c.change for c in ordered])
    colours = [
        NOT_SIGNIFICANT if not c.significant else IMPROVED if c.change > 0 else DEGRADED for c in ordered
    ]
    err = np.array(
        [(0.0, 0.0) if math.isnan(c.low) else (c.change - c.low, c.high - c.change) for c in ordered]
    ).T.reshape(2, len(ordered))
    y = np.arange(len(ordered))
    ax.barh(y, values, color=colours, height=0.75, xerr=err, error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.set_yticks(y, [c.label for c in ordered], fontsize=8 if len(ordered) <= 40 else 6)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"change in F1 (mean over replicates), {confidence} interval; grey: interval holds zero")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def samples_figure(title: str, rows: Sequence[SampleRow], path: Path) -> Path:
    """A grid: one row per class, real images on the left, synthetic on the right."""
    n_real = max((len(r.real) for r in rows), default=0)
    n_synth = max((len(r.synthetic) for r in rows), default=0)
    columns = max(n_real + n_synth, 1)
    fig = Figure(figsize=(1.1 * columns + 2.2, 1.15 * len(rows) + 0.8))
    axes = np.atleast_2d(fig.subplots(len(rows), columns, squeeze=False))
    for r, row in enumerate(rows):
        images = [*row.real, *([None] * (n_real - len(row.real))), *row.synthetic]
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images) and images[c] is not None:
                ax.imshow(images[c], interpolation="nearest")
            if r == 0:
                ax.set_title("real" if c < n_real else "synthetic", fontsize=8)
        axes[r, 0].set_ylabel(
            f"{row.label}\n{row.note}".strip(), fontsize=8, rotation=0, ha="right", va="center"
        )
    fig.suptitle(title)
    return _save(fig, path)


def confusion_figure(
    title: str, matrices: Mapping[str, np.ndarray], classes: Sequence[str], path: Path
) -> Path:
    """Row-normalised confusion matrices (true class down, predicted across), one panel per mix."""
    panels = len(matrices)
    fig = Figure(figsize=(3.6 * panels + 0.8, 3.9))
    axes = np.atleast_1d(fig.subplots(1, panels, squeeze=False)[0])
    show_ticks = len(classes) <= 20
    image = None
    for ax, (mix, counts) in zip(axes, matrices.items(), strict=True):
        totals = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, totals, out=np.zeros_like(counts, dtype=np.float64), where=totals > 0)
        image = ax.imshow(rates, vmin=0.0, vmax=1.0, cmap="Blues")
        ax.set_title(mix, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        if show_ticks:
            ticks = np.arange(len(classes))
            ax.set_xticks(ticks, classes, fontsize=6, rotation=90)
            ax.set_yticks(ticks, classes, fontsize=6)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=list(axes), fraction=0.02, label="share of the true class")
    fig.suptitle(title)
    return _save(fig, path)


@dataclass(frozen=True)
class Line:
    """One line of the headline figure: the mixes of one real count, by synthetic images a class."""

    label: str
    x: Sequence[float]
    intervals: Sequence[Interval]
    names: Sequence[str]  # each point's mix, written beside it


@dataclass(frozen=True)
class Reference:
    """A control drawn across the headline figure as a horizontal line, its interval as a band."""

    label: str
    interval: Interval


@dataclass(frozen=True)
class Panel:
    title: str
    lines: Sequence[Line]
    references: Sequence[Reference]


def headline_figure(title: str, panels: Sequence[Panel], ylabel: str, band: str, path: Path) -> Path:
    """One panel per model: the metric against synthetic images a class, one line per real count with
    its interval as a band, each control a dashed horizontal line (band: its interval) with its label."""
    fig = Figure(figsize=(5.6 * len(panels) + 0.6, 4.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, panel in zip(axes, panels, strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for i, line in enumerate(panel.lines):
            colour = PALETTE[i % len(PALETTE)]
            mean = np.array([iv.mean for iv in line.intervals])
            low = np.array([iv.low if not math.isnan(iv.low) else iv.mean for iv in line.intervals])
            high = np.array([iv.high if not math.isnan(iv.high) else iv.mean for iv in line.intervals])
            ax.plot(line.x, mean, "o-", color=colour, label=line.label)
            ax.fill_between(line.x, low, high, color=colour, alpha=0.15, linewidth=0)
            if len(line.x) == 1:  # a band needs two points: an error bar for a lone mix
                ax.errorbar(line.x, mean, yerr=[mean - low, high - mean], color=colour, capsize=3)
            for x, y, name in zip(line.x, mean, line.names, strict=True):
                ax.annotate(
                    name, (x, y), xytext=(4, -9), textcoords="offset points", fontsize=7, color=colour
                )
        for j, ref in enumerate(panel.references):
            colour = PALETTE[(len(panel.lines) + j) % len(PALETTE)]
            iv = ref.interval
            ax.axhline(iv.mean, color=colour, linestyle="--", linewidth=1.2, label=ref.label)
            if not math.isnan(iv.low):
                ax.axhspan(iv.low, iv.high, color=colour, alpha=0.08, linewidth=0)
            ax.annotate(
                ref.label,
                (1.0, iv.mean),
                xycoords=("axes fraction", "data"),
                xytext=(-3, 3),
                textcoords="offset points",
                ha="right",
                fontsize=7,
                color=colour,
            )
        ax.set_xlabel("synthetic images per class")
        ax.set_ylabel(ylabel)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{title}\n(mean over replicates; bands: {band} interval)", fontsize=11)
    return _save(fig, path)
