"""How real images enter the project: the embedded default data, or a user's class-per-folder tree.

Both write `data.dir` (one folder per class), which `synthmix prepare` then validates and splits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from synthmix.core.errors import UserError
from synthmix.core.progress import progress
from synthmix.data import copies
from synthmix.data.copies import Fingerprints
from synthmix.data.real import ImageRecord, Rejection, validate_tree, write_rejections


def write_default_data(out_dir: Path) -> int:
    """Write scikit-learn's handwritten digits (real 8x8 scans) as out_dir/<digit>/<index>.png.

    Byte-for-byte deterministic, so data.dvc's hash holds on every machine with the pinned Pillow.
    Returns the number of images written.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for index, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):
        class_dir = tmp / str(int(target))
        class_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(class_dir / f"{index:04d}.png", optimize=False, compress_level=9)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return len(pixels)


def import_tree(source: Path, data_dir: Path, report_path: Path) -> tuple[list[ImageRecord], list[Rejection]]:
    """Validate a user's class-per-folder tree and copy its usable images, bytes unchanged, to data_dir.

    The previous contents of data_dir are replaced only after the whole import succeeded (and stay in
    the DVC cache under the old data.dvc hash).
    """
    source = source.resolve()
    if data_dir.resolve() == source or data_dir.resolve() in source.parents:
        raise UserError(f"Cannot import {source} into {data_dir}: it is the same folder or inside it.")
    records, rejected = validate_tree(source, "Importing images")
    write_rejections(rejected, report_path)
    if not records:
        raise UserError(f"No usable images under {source}; see {report_path} for why each file was left out.")
    tmp = data_dir.with_name(data_dir.name + ".import-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for record in progress(records, "Copying images"):
        target = tmp / record.label / _flat_name(record.path, source, record.label)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record.path, target)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    tmp.rename(data_dir)
    return records, rejected


def _flat_name(path: Path, source: Path, label: str) -> str:
    # Files in nested subfolders of a class keep their relative path in the name, so none collide.
    class_dir = next(p for p in path.parents if p.name == label and source in (p, *p.parents))
    return "__".join(path.relative_to(class_dir).parts)


def near_copies_per_class(records: list[ImageRecord]) -> dict[str, int]:
    """Class -> images that are near-copies (data/copies.py) of another image of the set: what prepare
    will leave out, keeping one of each group of copies (which one depends on the seeded order)."""
    group = copies.groups(Fingerprints.stack([(r.thumb, r.side) for r in records]))
    seen: set[int] = set()
    lost: dict[str, int] = {}
    for i, record in enumerate(records):
        if group[i] in seen:
            lost[record.label] = lost.get(record.label, 0) + 1
        seen.add(group[i])
    return dict(sorted(lost.items()))
