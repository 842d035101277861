"""The real image set: embedded default data, import, validation and the train/test split.

Every image is decoded here, at the edge, by `load_rgb`: the one place that turns any file a user
brings (greyscale, palette, RGBA, CMYK, 16-bit, EXIF-rotated) into correct 8-bit RGB, or says why it
cannot. Files that fail are listed with a reason and left out; nothing is deleted.
"""

from __future__ import annotations

import csv
import hashlib
import random
import shutil
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from synthmix.errors import UserError
from synthmix.files import atomic_path, sha256_file
from synthmix.progress import progress

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MANIFEST_FIELDS = ("path", "class", "sha256", "split", "rank")


@dataclass(frozen=True)
class ImageRecord:
    """A usable image found in the real set, before splitting."""

    path: Path
    label: str
    sha256: str


@dataclass(frozen=True)
class Rejection:
    path: Path
    reason: str


@dataclass(frozen=True)
class SplitRow:
    path: Path
    label: str
    sha256: str
    split: str  # "train" or "test"
    rank: int  # position within its class and split; training subsets take ranks 0..N-1


# --- decoding ------------------------------------------------------------------------------------


def load_rgb(path: Path) -> Image.Image:
    """Decode an image file fully into 8-bit RGB, EXIF orientation applied.

    Raises ValueError with a short reason when the file is not a usable image.
    """
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        with Image.open(path) as img:
            img.load()  # forces a full decode: truncated files fail here, not later in training
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except UnidentifiedImageError:
        raise ValueError("not an image (unreadable or unknown format)") from None
    except (OSError, SyntaxError) as exc:  # PIL reports truncation and corrupt data as these
        raise ValueError(f"corrupt or truncated image ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large ({exc})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Correct 8-bit RGB from any PIL mode (transparency composited onto white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) greyscale: scale the full range, don't clip at 255 as convert("L") does
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(np.round(arr / top * 255), 0, 255).astype(np.uint8), "L").convert(
            "RGB"
        )
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_array(path: Path, size: int | None = None) -> np.ndarray:
    """An image as a uint8 HxWx3 array, optionally resized to size x size."""
    img = load_rgb(path)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).copy()


# --- finding and validating a class-per-folder tree ----------------------------------------------


def find_class_root(root: Path) -> Path:
    """Descend through wrapper folders (e.g. animals/animals/) to the folder whose subfolders are classes."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder. Give a folder with one subfolder of images per class.")
    current = root
    while True:
        entries = [p for p in current.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in entries if p.is_dir()]
        files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if len(dirs) == 1 and not files:
            current = dirs[0]
            continue
        if not dirs:
            raise UserError(
                f"{root} has no class folders. synthmix expects one subfolder per class holding its "
                f"images, e.g. {root}/cat/001.jpg and {root}/dog/001.jpg."
            )
        return current


def scan_tree(root: Path) -> tuple[dict[str, list[Path]], list[Rejection]]:
    """Class name -> candidate files, sorted; hidden files and folders are rejected, not read."""
    class_root = find_class_root(root)
    by_class: dict[str, list[Path]] = {}
    rejected: list[Rejection] = []
    for class_dir in sorted(p for p in class_root.iterdir() if p.is_dir()):
        if class_dir.name.startswith("."):
            rejected.append(Rejection(class_dir, "hidden folder"))
            continue
        files: list[Path] = []
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file():
                continue
            if any(part.startswith(".") for part in path.relative_to(class_dir).parts):
                rejected.append(Rejection(path, "hidden file"))
                continue
            files.append(path)
        by_class[class_dir.name] = files
    if not by_class:
        raise UserError(f"{class_root} has no class folders with images in them.")
    return by_class, rejected


def validate_tree(
    root: Path, description: str = "Validating images"
) -> tuple[list[ImageRecord], list[Rejection]]:
    """Decode every candidate file once; return the usable images and the rejected files with reasons."""
    by_class, rejected = scan_tree(root)
    candidates = [(label, path) for label, paths in by_class.items() for path in paths]
    records: list[ImageRecord] = []
    for label, path in progress(candidates, description):
        try:
            load_rgb(path)
        except ValueError as reason:
            rejected.append(Rejection(path, str(reason)))
            continue
        records.append(ImageRecord(path, label, sha256_file(path)))
    records, duplicates = deduplicate(records)
    return records, rejected + duplicates


def deduplicate(records: Sequence[ImageRecord]) -> tuple[list[ImageRecord], list[Rejection]]:
    """Keep one file per content hash, so no photo can sit in both train and test.

    The same content under two classes is an ambiguous label: every copy is left out.
    """
    by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_hash[record.sha256].append(record)
    kept: list[ImageRecord] = []
    rejected: list[Rejection] = []
    for copies in by_hash.values():
        copies = sorted(copies, key=lambda r: str(r.path))
        labels = sorted({r.label for r in copies})
        if len(labels) > 1:
            rejected.extend(
                Rejection(r.path, f"same content appears in classes {', '.join(labels)} (ambiguous label)")
                for r in copies
            )
            continue
        kept.append(copies[0])
        rejected.extend(Rejection(r.path, f"duplicate of {copies[0].path}") for r in copies[1:])
    kept.sort(key=lambda r: (r.label, str(r.path)))
    return kept, rejected


def write_rejections(rejections: Iterable[Rejection], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(rejections, key=lambda r: str(r.path))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("path", "reason"))
        writer.writerows((r.path.as_posix(), r.reason) for r in rows)


# --- the split -----------------------------------------------------------------------------------


def split_records(
    records: Sequence[ImageRecord],
    train_per_class: int,
    test_per_class: int,
    seed: int,
    drop_small_classes: bool = False,
) -> list[SplitRow]:
    """A seeded per-class split: the first `train_per_class` of a shuffled order train, the next test.

    The order depends only on the seed, the class name and the content hashes (not on file names or
    listing order), and training ranks are nested: the first 15 of a class are among its first 30.
    """
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)
    needed = train_per_class + test_per_class
    small = {label: len(items) for label, items in by_class.items() if len(items) < needed}
    if small and not drop_small_classes:
        listing = "; ".join(f"class '{label}' has {count}" for label, count in sorted(small.items()))
        raise UserError(
            f"Too few usable images for a {train_per_class}/{test_per_class} split ({needed} per class "
            f"needed): {listing}. Add images to those classes, lower data.train_per_class / "
            "data.test_per_class in params.yaml, or set data.drop_small_classes: true to leave them out."
        )
    for label in sorted(small):
        warnings.warn(
            f"Dropping class '{label}': {small[label]} usable images, {needed} needed "
            "(data.drop_small_classes is true).",
            stacklevel=2,
        )
    kept_classes = sorted(set(by_class) - set(small))
    if len(kept_classes) < 2:
        raise UserError(
            f"Only {len(kept_classes)} class(es) have enough images for the split; a classifier needs at "
            "least 2. Add images or lower data.train_per_class / data.test_per_class."
        )
    rows: list[SplitRow] = []
    for label in kept_classes:
        items = sorted(by_class[label], key=lambda r: r.sha256)
        random.Random(_class_seed(seed, label)).shuffle(items)
        for rank, record in enumerate(items[:train_per_class]):
            rows.append(SplitRow(record.path, label, record.sha256, "train", rank))
        for rank, record in enumerate(items[train_per_class:needed]):
            rows.append(SplitRow(record.path, label, record.sha256, "test", rank))
    return rows


def _class_seed(seed: int, label: str) -> int:
    # Per-class seeds: adding or dropping one class leaves every other class's split unchanged.
    return int.from_bytes(hashlib.sha256(f"{seed}:{label}".encode()).digest()[:8], "big")


def write_manifest(rows: Sequence[SplitRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_FIELDS)
        for row in rows:
            writer.writerow((row.path.as_posix(), row.label, row.sha256, row.split, row.rank))


def read_manifest(path: Path) -> list[SplitRow]:
    if not path.exists():
        raise UserError(
            f"Split manifest {path} is missing. Run `synthmix prepare` (or `dvc repro prepare`) first."
        )
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise UserError(
                f"{path} is not a synthmix split manifest (columns {reader.fieldnames}); rerun `synthmix prepare`."
            )
        return [
            SplitRow(Path(r["path"]), r["class"], r["sha256"], r["split"], int(r["rank"])) for r in reader
        ]


def prepare_split(
    data_dir: Path,
    out_dir: Path,
    train_per_class: int,
    test_per_class: int,
    seed: int,
    drop_small_classes: bool = False,
) -> tuple[list[SplitRow], list[Rejection]]:
    """Validate the real set and write train.csv, test.csv and rejected.csv under out_dir."""
    if not data_dir.exists():
        raise UserError(
            f"The real image folder {data_dir} does not exist. Run `synthmix data default` for the "
            f"embedded digits, `synthmix data import PATH` for your own images, or `dvc pull`."
        )
    records, rejected = validate_tree(data_dir)
    rows = split_records(records, train_per_class, test_per_class, seed, drop_small_classes)
    write_manifest([r for r in rows if r.split == "train"], out_dir / "train.csv")
    write_manifest([r for r in rows if r.split == "test"], out_dir / "test.csv")
    write_rejections(rejected, out_dir / "rejected.csv")
    return rows, rejected


# --- the embedded default data and importing a user's own ----------------------------------------


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
    counts: dict[str, int] = defaultdict(int)
    for record in progress(records, "Copying images"):
        target = tmp / record.label / _flat_name(record.path, source, record.label)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record.path, target)
        counts[record.label] += 1
    if data_dir.exists():
        shutil.rmtree(data_dir)
    tmp.rename(data_dir)
    return records, rejected


def _flat_name(path: Path, source: Path, label: str) -> str:
    # Files in nested subfolders of a class keep their relative path in the name, so none collide.
    class_dir = next(p for p in path.parents if p.name == label and source in (p, *p.parents))
    return "__".join(path.relative_to(class_dir).parts)
