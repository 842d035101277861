"""Decode and resize each image once into a cached uint8 tensor store shared by all mixes, seeds, epochs.

The cache holds one file per (content hash, size) under `<cache_dir>/images/<size>/`, so a second mix,
seed or epoch never decodes a file again, an interrupted load keeps what it finished, and two
processes filling the cache at once cannot corrupt it (every write is a temp file + os.replace).
Every entry is checked when read (`read_cache_entry`: it loads whole, with the dtype and shape it must
have), so one a full disk or another tool damaged is deleted and rebuilt with a warning naming it; and a
source file is hashed when it is decoded, so a file changed since its manifest row never fills the cache.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthmix.core.errors import UserError, one_line
from synthmix.core.files import sha256_file, write_array
from synthmix.core.progress import progress
from synthmix.data.real import decode_array


@dataclass(frozen=True)
class LabelledImages:
    """Images as uint8 (N, 3, S, S) with their class indices and source-file sha256s."""

    images: torch.Tensor  # uint8, (N, 3, S, S)
    labels: torch.Tensor  # int64, (N,)
    keys: tuple[str, ...]  # sha256 of each source file (feature-cache key part)

    def __post_init__(self) -> None:
        if not (len(self.images) == len(self.labels) == len(self.keys)):
            raise ValueError(
                f"images ({len(self.images)}), labels ({len(self.labels)}) and keys ({len(self.keys)}) "
                "must have the same length"
            )

    def subset(self, index: Sequence[int] | torch.Tensor) -> LabelledImages:
        index = torch.as_tensor(index, dtype=torch.long)
        return LabelledImages(
            self.images[index], self.labels[index], tuple(self.keys[i] for i in index.tolist())
        )

    def __len__(self) -> int:
        return len(self.labels)


def cached_image_path(cache_dir: Path, sha256: str, size: int) -> Path:
    return cache_dir / "images" / str(size) / sha256[:2] / f"{sha256}.npy"


def load_images(
    paths: Sequence[Path], labels: Sequence[int], sha256s: Sequence[str], size: int, cache_dir: Path
) -> LabelledImages:
    """The images at `paths`, decoded (data.load_rgb) and resized to size x size once, then cached.

    The cache key is the file's content hash and the size, so the same image in several mixes (or the
    same content under two names) is decoded once.
    """
    if not (len(paths) == len(labels) == len(sha256s)):
        raise ValueError("paths, labels and sha256s must have the same length")
    arrays: dict[str, np.ndarray] = {}
    missing: list[tuple[Path, str]] = []
    for path, sha in zip(paths, sha256s, strict=True):
        if sha in arrays:
            continue
        cached = read_cache_entry(
            cached_image_path(cache_dir, sha, size), np.uint8, (size, size, 3), f"decoding {path} again"
        )
        if cached is not None:
            arrays[sha] = cached
        else:
            arrays[sha] = np.empty(0)  # placeholder: keeps first-seen order, filled below
            missing.append((path, sha))
    for path, sha in progress(missing, f"Decoding images at {size} px"):
        arrays[sha] = _decode_and_cache(path, sha, size, cache_dir)
    stacked = np.stack([arrays[sha] for sha in sha256s]) if sha256s else np.zeros((0, size, size, 3))
    images = torch.from_numpy(stacked.astype(np.uint8, copy=False)).permute(0, 3, 1, 2).contiguous()
    return LabelledImages(images, torch.as_tensor(list(labels), dtype=torch.long), tuple(sha256s))


def read_cache_entry(
    path: Path, dtype: type[np.generic], shape: Sequence[int | None], rebuild: str
) -> np.ndarray | None:
    """The array cached at `path`, or None when there is none or it is bad: it does not load whole
    (truncated, empty, not a .npy file), or has another dtype or shape (None: any length) or, for floats,
    a NaN or an infinity. A bad entry is deleted with one warning naming it and what is done instead
    (`rebuild`, e.g. "decoding data/3/0012.png again"), so the caller rebuilds it like a missing one."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as fh:
            array = np.load(fh, allow_pickle=False)
            problem = _entry_problem(array, np.dtype(dtype), tuple(shape))
    except Exception as exc:  # whatever a torn or foreign file raises: the entry is rebuilt either way
        problem = one_line(exc)
    if problem is None:
        return array
    path.unlink(missing_ok=True)
    warnings.warn(f"Bad cache entry {path} ({problem}): deleted, {rebuild}.", stacklevel=3)
    return None


def _entry_problem(array: object, dtype: np.dtype, shape: tuple[int | None, ...]) -> str | None:
    if not isinstance(array, np.ndarray):
        return "not a single array"
    expected = "(" + ", ".join("N" if n is None else str(n) for n in shape) + ")"
    if array.dtype != dtype or array.ndim != len(shape):
        return f"{array.dtype} {array.shape}, expected {dtype} {expected}"
    if any(n is not None and n != actual for n, actual in zip(shape, array.shape, strict=True)):
        return f"shape {array.shape}, expected {expected}"
    if np.issubdtype(dtype, np.floating) and not np.isfinite(array).all():
        return "holds NaN or infinite values"
    return None


def _decode_and_cache(path: Path, sha256: str, size: int, cache_dir: Path) -> np.ndarray:
    """Decode `path`, after checking that it still holds the content its manifest row hashed."""
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise UserError(
            f"Image {path} is listed in a manifest but missing. Run `dvc pull` (or `dvc checkout`) to "
            "restore it, or rerun `synthmix prepare` / `synthmix generate` to rebuild the manifests."
        ) from None
    if actual != sha256:
        raise UserError(
            f"Image {path} has changed since its manifest was written (sha256 {actual[:12]}..., the "
            f"manifest says {sha256[:12]}...). Restore it with `dvc checkout`, or rerun `synthmix "
            "prepare` (a real image) or `synthmix generate` (a synthetic one) to rebuild the manifests."
        )
    try:
        array = decode_array(path, size)
    except ValueError as reason:
        raise UserError(
            f"Image {path} cannot be decoded ({reason}), though it holds what its manifest recorded. "
            "Rerun `synthmix prepare` to check the data set again."
        ) from None
    target = cached_image_path(cache_dir, sha256, size)
    write_array(array, target)
    return array
