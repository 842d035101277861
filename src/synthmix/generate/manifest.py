"""synthetic/: the one owner of its layout, of each image's embedded record, and of manifest.csv.

The set is `synthetic/<class>/<index:04d>.png` plus `synthetic/manifest.csv` (columns
SYNTHETIC_MANIFEST_FIELDS, one row per image, sorted by class then index; docs/layout.md). Every PNG
carries its own record (settings digest, seed, retries, blocked) in a PNG text chunk, so a rerun can
tell an image finished with the current settings from one made with others. Imports neither torch nor
diffusers: training, tuning and the report read the manifest through here.

A row is `usable` for training unless the safety checker still blocked it after the retries (it is
all black) or it is a near-copy of a test image (`near_test_path`): mixes skip rows that are not.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, PngImagePlugin

from synthmix.core.errors import one_line
from synthmix.core.files import atomic_path, read_csv, write_csv

if TYPE_CHECKING:
    import numpy as np

MANIFEST_NAME = "manifest.csv"
PNG_RECORD_KEY = "synthmix"
_IMAGE_NAME = re.compile(r"^(\d{4,})\.png$")

# What each value of the `generator` column learnt from, for the report's provenance (an image made
# image-to-image names its own real source in `source_path` instead).
GENERATOR_PROVENANCE = {
    "ddpm-pool": (
        "the DDPM learnt from a held-out pool of real images that the classifier never sees (neither "
        "trains nor tests on), so its images bring knowledge from outside the training set, as a "
        "pretrained generator's do; no mix holds a real image its synthetic images derive from"
    ),
    "ddpm": (
        "the DDPM learnt from every real training image of each class (never the test split), so a mix "
        "with fewer real images (e.g. 15r30s, 0r30s) carries information from real images it does not hold"
    ),
    "lora-pool": (
        "a pretrained text-to-image model whose LoRA adapters were fine-tuned on a held-out pool of real "
        "images that the classifier never sees; no mix holds a real image its synthetic images derive from"
    ),
    "lora": (
        "a pretrained text-to-image model whose LoRA adapters were fine-tuned on every real training image "
        "of each class (never the test split), so a mix with fewer real images carries information from "
        "real images it does not hold"
    ),
    "text2image": (
        "made from a text prompt alone, from no real image of this data set (what the model learnt in its "
        "own pre-training is outside this study)"
    ),
}
IMAGE_TO_IMAGE_PROVENANCE = (
    "made image-to-image, each from the real training image named in source_path; every mix with real "
    "images holds the sources of its synthetic images"
)

SYNTHETIC_MANIFEST_FIELDS = (
    "path",
    "class",
    "index",
    "seed",
    "generator",
    "model_id",
    "revision",
    "prompt",
    "steps",
    "guidance",
    "retries",
    "sha256",
    "blocked",
    "source_path",
    "near_test_path",
    "near_test_similarity",
    "learned_from",
    "negative_prompt",
    "strength",
    "model_hash",
)


@dataclass(frozen=True)
class SyntheticRow:
    """One generated image as synthetic/manifest.csv describes it (docs/layout.md)."""

    path: Path
    label: str
    index: int
    seed: int
    generator: str
    model_id: str
    revision: str
    prompt: str
    steps: int
    guidance: float
    retries: int
    sha256: str
    blocked: bool = False  # still blocked by the safety checker after max_retries: an all-black image
    source_path: Path | None = None  # the real training image it was made from (image-to-image mode)
    near_test_path: Path | None = None  # the test image it nearly copies (data/copies.py), if any
    near_test_similarity: float | None = None  # the pair's aligned correlation
    # which real images the generator learnt from: "pool" (held out from the classifier), "train" (the
    # classifier's own training split) or "" (it learnt from none of this data set's images)
    learned_from: str = ""
    negative_prompt: str = ""
    strength: float | None = None  # image-to-image: how far from its source image (0-1); else None
    model_hash: str = ""  # sha256 of the model's files (a pipeline folder or the hub snapshot used)

    @property
    def usable(self) -> bool:
        """Whether a mix may train on the image: not blocked, and no near-copy of a test image."""
        return not self.blocked and self.near_test_path is None


def usable(row: SyntheticRow) -> bool:
    """Whether a mix may train on the image (SyntheticRow.usable)."""
    return row.usable


def provenance(row: SyntheticRow) -> str:
    """Which real images the generator of `row` learnt from, in words (GENERATOR_PROVENANCE)."""
    if row.source_path is not None:
        return IMAGE_TO_IMAGE_PROVENANCE
    key = f"{row.generator}-{row.learned_from}" if row.learned_from == "pool" else row.generator
    return GENERATOR_PROVENANCE.get(key, "not recorded for this generator")


@dataclass(frozen=True)
class ImageRecord:
    """What a finished PNG says about itself: the settings digest it was made with and how."""

    digest: str
    seed: int  # the seed that produced it (differs from the image's seed after retries)
    retries: int
    blocked: bool


def image_path(out_dir: Path, label: str, index: int) -> Path:
    return out_dir / label / f"{index:04d}.png"


# --- one image ------------------------------------------------------------------------------------


def write_image(path: Path, pixels: np.ndarray, record: ImageRecord) -> None:
    """Atomic PNG write of uint8 HxWx3 `pixels`; the image's own record rides along in a text chunk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_RECORD_KEY, json.dumps(asdict(record), sort_keys=True))
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format="PNG", pnginfo=info, compress_level=6)


def read_record(path: Path, digest: str) -> ImageRecord | None:
    """The record of a finished image made with these settings, else None (missing, other settings,
    or damaged: a PNG cut short, or that fails its checksums or does not decode, with a warning)."""
    if not path.exists():
        return None
    try:
        with Image.open(path) as img:
            img.verify()  # every chunk there up to IEND, each with its checksum: fails on a file cut short
        with Image.open(path) as img:
            img.load()  # and every pixel decodes
            fields = json.loads(img.text.get(PNG_RECORD_KEY, "{}"))
    except (OSError, ValueError, SyntaxError) as exc:
        reason = one_line(exc)
        warnings.warn(f"Synthetic image {path} is damaged ({reason}): it is made again.", stacklevel=2)
        return None
    if not isinstance(fields, dict):
        return None
    if fields.get("digest") != digest:
        return None
    return ImageRecord(digest, fields["seed"], fields["retries"], fields["blocked"])


def remove_strays(
    out_dir: Path, classes: Sequence[str], images_per_class: int, other_sets: Sequence[str] = ()
) -> None:
    """Leave only this set in out_dir: drop old classes, indices past images_per_class, temp files, and
    the sets of generators no longer configured (`other_sets`: the folder names of those that are)."""
    keep = set(classes) | set(other_sets)
    for entry in out_dir.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry)
        elif entry.is_file() and entry.name != MANIFEST_NAME:
            entry.unlink()
    for label in classes:
        for path in (out_dir / label).iterdir():
            match = _IMAGE_NAME.match(path.name)
            if not (match and int(match.group(1)) < images_per_class and path.is_file()):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


# --- manifest.csv ---------------------------------------------------------------------------------


def write_synthetic_manifest(rows: Sequence[SyntheticRow], path: Path) -> None:
    """Write the manifest sorted by class then index (atomic: a crash leaves the old file)."""
    write_csv(
        SYNTHETIC_MANIFEST_FIELDS,
        (
            (
                r.path.as_posix(),
                r.label,
                r.index,
                r.seed,
                r.generator,
                r.model_id,
                r.revision,
                r.prompt,
                r.steps,
                r.guidance,
                r.retries,
                r.sha256,
                "true" if r.blocked else "false",
                _text(r.source_path),
                _text(r.near_test_path),
                _text(None if r.near_test_similarity is None else round(r.near_test_similarity, 4)),
                r.learned_from,
                r.negative_prompt,
                _text(r.strength),
                r.model_hash,
            )
            for r in sorted(rows, key=lambda r: (r.label, r.index))
        ),
        path,
    )


def read_synthetic_manifest(path: Path) -> list[SyntheticRow]:
    rows = read_csv(
        path,
        SYNTHETIC_MANIFEST_FIELDS,
        f"Synthetic manifest {path} is missing. Run `synthmix generate` (or `dvc repro generate`) "
        "first, or use a mix with 0 synthetic images (e.g. 30r0s).",
        lambda columns: (
            f"{path} is not a synthmix synthetic manifest (columns {columns}); rerun `synthmix generate`."
        ),
    )
    return [
        SyntheticRow(
            Path(r["path"]),
            r["class"],
            int(r["index"]),
            int(r["seed"]),
            r["generator"],
            r["model_id"],
            r["revision"],
            r["prompt"],
            int(r["steps"]),
            float(r["guidance"]),
            int(r["retries"]),
            r["sha256"],
            r["blocked"] == "true",
            Path(r["source_path"]) if r["source_path"] else None,
            Path(r["near_test_path"]) if r["near_test_path"] else None,
            float(r["near_test_similarity"]) if r["near_test_similarity"] else None,
            r["learned_from"],
            r["negative_prompt"],
            float(r["strength"]) if r["strength"] else None,
            r["model_hash"],
        )
        for r in rows
    ]


def _text(value: Path | int | float | None) -> str:
    """A manifest cell: empty for None, a POSIX path for a Path."""
    if value is None:
        return ""
    return value.as_posix() if isinstance(value, Path) else str(value)
