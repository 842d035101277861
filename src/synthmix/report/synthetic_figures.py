"""The synthetic-data section's figures: each generator's closest synthetic-to-real pairs side by side,
and examples of the images each filter dropped, with the reason. An image whose file is missing or
unreadable is left out and the caption says so; it never fails the report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from synthmix.data.real import decode_array
from synthmix.data.vetting import FilterRow
from synthmix.quality.files import GeneratorQuality
from synthmix.report.figures import DPI, FigureRef
from synthmix.report.synthetic import SyntheticInputs
from synthmix.report.wording import finite, value_text

EXAMPLES_PER_FILTER = 4  # dropped images shown per filter
PAIRS_PER_ROW = 4  # closest synthetic-to-real pairs side by side in one row of their figure


@dataclass(frozen=True)
class Tile:
    image: np.ndarray
    title: str


def _load(path: Path) -> np.ndarray | None:
    """The image, or None when its file is missing or unreadable: a figure leaves it out, never fails."""
    try:
        return decode_array(path)
    except (OSError, ValueError):
        return None


def _missing_note(missing: Sequence[Path]) -> str:
    if not missing:
        return ""
    shown = ", ".join(p.as_posix() for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
    return f" {len(missing)} image file(s) could not be read and are left out ({shown})."


def tile_figure(
    title: str, rows: Sequence[Sequence[Tile]], path: Path, row_labels: Sequence[str] = ()
) -> Path:
    """Images in a grid, each titled, one row per entry of `rows` (a short row leaves its end blank)."""
    columns = max(len(r) for r in rows)
    # constrained layout keeps each tile's (up to three-line) title clear of the row above
    fig = Figure(figsize=(1.8 * max(columns, 2) + 0.6, 2.3 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row):
                ax.imshow(row[c].image, interpolation="nearest")
                ax.set_title(row[c].title, fontsize=7)
            else:
                ax.set_axis_off()
        if r < len(row_labels):
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    return path


def draw_closest(g: GeneratorQuality, feature_space: str, out: Path) -> FigureRef | None:
    """The closest synthetic-to-real pairs, synthetic | nearest real; None when no pair can be shown."""
    tiles, missing = [], []
    for pair in g.closest:
        synthetic, real = _load(pair.synthetic), _load(pair.real)
        missing += [p for p, image in ((pair.synthetic, synthetic), (pair.real, real)) if image is None]
        if synthetic is not None and real is not None:
            title = f"nearest real: {pair.real_split}\n{pair.real_label}, d = {pair.distance:.3f}"
            tiles.append((Tile(synthetic, f"{pair.label}\nsynthetic"), Tile(real, title)))
    if not tiles:
        return None
    rows = [
        [t for pair in tiles[i : i + PAIRS_PER_ROW] for t in pair]
        for i in range(0, len(tiles), PAIRS_PER_ROW)
    ]
    path = Path("figures") / f"synthetic-closest-{g.generator}.png"
    tile_figure(f"{g.generator}: synthetic images closest to a real image", rows, out / path)
    near = g.overall.nearest
    scale = (
        f" For scale: a real training image's median distance to its nearest other is {near.real_median:.3f}."
        if near is not None and finite(near.real_median)
        else ""
    )
    return FigureRef(
        path,
        f"{g.generator}: the {len(tiles)} synthetic images closest to a real one ({feature_space} features), each "
        "beside its nearest real image, titled with the class, the split the real image belongs to (train or "
        f"test) and the cosine distance d.{scale}{_missing_note(missing)}",
    )


# Why a filter dropped an image, in words; a filter missing here is named alone.
REASONS: dict[str, Callable[[FilterRow], str]] = {
    "classifier": lambda r: f"predicted '{r.predicted}'\nat p(label)={r.confidence:.2f}",
    "blank": lambda r: f"pixel std {r.pixel_std:.3f}",
    "clip_score": lambda r: f"CLIP score {value_text(r.clip_score, '.3f')}",
    "near_test": lambda r: "near-copy of\na test image",
}


def reason(name: str, row: FilterRow) -> str:
    """Why filter `name` dropped `row`'s image: REASONS' words, or the filter's name alone."""
    return REASONS[name](row) if name in REASONS else name


# The safety checker's blocked images are not shown: what it flagged does not belong in a report.
NOT_SHOWN = frozenset({"blocked"})


def dropped_examples(rows: Sequence[FilterRow], name: str, k: int = EXAMPLES_PER_FILTER) -> list[FilterRow]:
    """Up to `k` images `name` rejected, one per class before a second of any class (file order)."""
    rank: Counter[str] = Counter()
    ranked = []
    for r in rows:
        if name in r.rejected_by:
            ranked.append((rank[r.label], r))
            rank[r.label] += 1
    return [r for _, r in sorted(ranked, key=lambda item: item[0])][:k]


def draw_dropped(generator: str, rows: Sequence[FilterRow], out: Path) -> FigureRef | None:
    """Per filter that dropped any of `generator`'s images, up to EXAMPLES_PER_FILTER of them."""
    names = [n for n in dict.fromkeys(n for r in rows for n in r.rejected_by) if n not in NOT_SHOWN]
    grid, labels, missing = [], [], []
    for name in names:
        tiles = []
        for r in dropped_examples(rows, name):
            image = _load(r.path)
            if image is None:
                missing.append(r.path)
            else:
                tiles.append(Tile(image, f"{r.label}\n{reason(name, r)}"))
        if tiles:
            grid.append(tiles)
            labels.append(name)
    if not grid:
        return None
    path = Path("figures") / f"synthetic-dropped-{generator}.png"
    tile_figure(f"{generator}: synthetic images the filters dropped", grid, out / path, labels)
    return FigureRef(
        path,
        f"{generator}: examples of the synthetic images each filter dropped (one row per filter, named on the "
        f"left; up to {EXAMPLES_PER_FILTER}, from different classes first), titled with the class and the "
        f"filter's reason. Images blocked by the safety checker are not shown.{_missing_note(missing)}",
    )


def draw_synthetic_figures(inputs: SyntheticInputs, out: Path) -> list[FigureRef]:
    """The closest pairs of every generator, then the dropped examples of every generator, under out/figures/."""
    space = inputs.quality.feature_space.name
    closest = [draw_closest(g, space, out) for g in inputs.quality.generators]
    generators = dict.fromkeys(r.generator for r in inputs.filter_rows)
    dropped = [draw_dropped(g, [r for r in inputs.filter_rows if r.generator == g], out) for g in generators]
    return [f for f in (*closest, *dropped) if f is not None]
