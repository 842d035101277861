"""The sample grids: real vs synthetic images of each class, the study's Fig. 1.

`samples/<class>.png` puts GRID_COLUMNS real training images (top row) over as many synthetic ones
(bottom row); `samples/grid.png` shows OVERVIEW_COLUMNS of each for every class at once. The synthetic
images shown are the first usable ones (`manifest.usable`: those a mix may train on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from synthmix.core.files import atomic_path
from synthmix.data.real import load_rgb
from synthmix.generate.manifest import usable

if TYPE_CHECKING:
    from synthmix.data.real import SplitRow
    from synthmix.generate.manifest import SyntheticRow

GRID_COLUMNS = 8  # images per row in samples/<class>.png
OVERVIEW_COLUMNS = 5  # real and synthetic images per class in samples/grid.png


def write_sample_grids(
    train_rows: Sequence[SplitRow], synthetic_rows: Sequence[SyntheticRow], samples_dir: Path
) -> dict[str, Path]:
    """samples/<class>.png (real top row, synthetic bottom row) and samples/grid.png (all classes)."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    real: dict[str, list[Path]] = {}
    for row in sorted(train_rows, key=lambda r: (r.label, r.rank)):
        real.setdefault(row.label, []).append(row.path)
    synthetic: dict[str, list[Path]] = {}
    for row in sorted(synthetic_rows, key=lambda r: (r.label, r.index)):
        if usable(row):
            synthetic.setdefault(row.label, []).append(row.path)
    written: dict[str, Path] = {}
    for label in sorted(real):
        picture = _tile_rows([real[label][:GRID_COLUMNS], synthetic.get(label, [])[:GRID_COLUMNS]], tile=64)
        written[label] = _save_png(picture, samples_dir / f"{label}.png")
    overview_rows = [
        real[label][:OVERVIEW_COLUMNS] + synthetic.get(label, [])[:OVERVIEW_COLUMNS] for label in sorted(real)
    ]
    overview = _tile_rows(overview_rows, tile=32, labels=sorted(real), split_at=OVERVIEW_COLUMNS)
    written["grid"] = _save_png(overview, samples_dir / "grid.png")
    return written


def _tile_rows(
    rows: Sequence[Sequence[Path]],
    tile: int,
    labels: Sequence[str] | None = None,
    split_at: int | None = None,
) -> Image.Image:
    gap, margin = 2, (56 if labels else 0)
    divider = 6 if split_at else 0
    columns = max((len(r) for r in rows), default=1)
    width = margin + columns * (tile + gap) + divider
    canvas = Image.new("RGB", (width, len(rows) * (tile + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, paths in enumerate(rows):
        y = r * (tile + gap)
        if labels:
            draw.text((4, y + tile // 3), labels[r][:8], fill="black")
        for c, path in enumerate(paths):
            img = load_rgb(path)
            resample = Image.Resampling.NEAREST if img.width < tile else Image.Resampling.LANCZOS
            x = margin + c * (tile + gap) + (divider if split_at is not None and c >= split_at else 0)
            canvas.paste(img.resize((tile, tile), resample), (x, y))
    return canvas


def _save_png(picture: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path
