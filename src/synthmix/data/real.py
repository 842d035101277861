"""The real image set: decoding, validation, the split manifests' format (the split itself: `split`).

Every image is decoded here, at the edge, by `load_rgb`: the one place that turns any file a user
brings (greyscale, palette, RGBA, CMYK, 16-bit, EXIF-rotated) into correct 8-bit RGB, or says why it
cannot. Files that fail are listed with a reason and left out; nothing is deleted.

Byte-identical copies are caught by sha256 (`deduplicate`); resized, re-encoded, cropped or re-toned
ones by `copies` from each image's fingerprint (taken here, while the image is decoded), used by
`split.split_records` and by generate (synthetic vs test).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from synthmix.core.errors import UserError
from synthmix.core.files import atomic_path, read_csv, sha256_file
from synthmix.core.progress import progress
from synthmix.data.copies import fingerprint

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MANIFEST_FIELDS = ("path", "class", "sha256", "split", "rank")
REJECTION_FIELDS = ("path", "reason", "copy_of", "copy_split", "search_similarity", "aligned_correlation")


@dataclass(frozen=True)
class ImageRecord:
    """A usable image found in the real set, before splitting."""

    path: Path
    label: str
    sha256: str
    thumb: np.ndarray = field(compare=False, repr=False)  # copies.fingerprint's greyscale thumbnail
    side: int = 0  # the decoded image's shorter side in pixels (copies.fingerprint)


@dataclass(frozen=True)
class Rejection:
    path: Path
    reason: str
    # A near-copy's twin (the image kept), and the two scores of the pair (data/copies.py)
    copy_of: Path | None = None
    copy_split: str | None = None  # the split of the twin: train, test, extra or pool
    search: float | None = None
    aligned: float | None = None


@dataclass(frozen=True)
class SplitRow:
    path: Path
    label: str
    sha256: str
    split: str  # "train", "test", "extra" (the extra-real control) or "pool" (the generator's alone)
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
            img = load_rgb(path)
        except ValueError as reason:
            rejected.append(Rejection(path, str(reason)))
            continue
        records.append(ImageRecord(path, label, sha256_file(path), *fingerprint(img)))
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
        writer.writerow(REJECTION_FIELDS)
        for r in rows:
            scores = (
                ("", "") if r.search is None or r.aligned is None else (f"{r.search:.4f}", f"{r.aligned:.4f}")
            )
            twin = (r.copy_of.as_posix() if r.copy_of else "", r.copy_split or "")
            writer.writerow((r.path.as_posix(), r.reason, *twin, *scores))


def read_rejections(path: Path) -> list[Rejection]:
    """prepared/rejected.csv (or an import report) as written by `write_rejections`."""
    rows = read_csv(
        path,
        REJECTION_FIELDS,
        f"{path} is missing. Run `synthmix prepare` (or `dvc repro prepare`) to write it.",
        lambda columns: (
            f"{path} is not a synthmix rejection list (columns {columns}); rerun `synthmix prepare`."
        ),
    )
    return [
        Rejection(
            Path(r["path"]),
            r["reason"],
            Path(r["copy_of"]) if r["copy_of"] else None,
            r["copy_split"] or None,
            float(r["search_similarity"]) if r["search_similarity"] else None,
            float(r["aligned_correlation"]) if r["aligned_correlation"] else None,
        )
        for r in rows
    ]


# --- split manifests ------------------------------------------------------------------------


def write_manifest(rows: Sequence[SplitRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_FIELDS)
        for row in rows:
            writer.writerow((row.path.as_posix(), row.label, row.sha256, row.split, row.rank))


def read_manifest(path: Path) -> list[SplitRow]:
    rows = read_csv(
        path,
        MANIFEST_FIELDS,
        f"Split manifest {path} is missing. Run `synthmix prepare` (or `dvc repro prepare`) first.",
        lambda columns: (
            f"{path} is not a synthmix split manifest (columns {columns}); rerun `synthmix prepare`."
        ),
    )
    return [SplitRow(Path(r["path"]), r["class"], r["sha256"], r["split"], int(r["rank"])) for r in rows]


# --- the embedded default data and importing a user's own ----------------------------------------
