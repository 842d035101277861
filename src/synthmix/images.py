"""Decode and resize each image once into a cached uint8 tensor store shared by all mixes, seeds, epochs.

The cache holds one file per (content hash, size) under `<cache_dir>/images/<size>/`, so a second mix,
seed or epoch never decodes a file again, an interrupted load keeps what it finished, and two
processes filling the cache at once cannot corrupt it (every write is a temp file + os.replace).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthmix.data import decode_array
from synthmix.errors import UserError
from synthmix.files import atomic_path
from synthmix.progress import progress


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
        cached = cached_image_path(cache_dir, sha, size)
        if cached.exists():
            arrays[sha] = np.load(cached)
        else:
            arrays[sha] = np.empty(0)  # placeholder: keeps first-seen order, filled below
            missing.append((path, sha))
    for path, sha in progress(missing, f"Decoding images at {size} px"):
        arrays[sha] = _decode_and_cache(path, sha, size, cache_dir)
    stacked = np.stack([arrays[sha] for sha in sha256s]) if sha256s else np.zeros((0, size, size, 3))
    images = torch.from_numpy(stacked.astype(np.uint8, copy=False)).permute(0, 3, 1, 2).contiguous()
    return LabelledImages(images, torch.as_tensor(list(labels), dtype=torch.long), tuple(sha256s))


def _decode_and_cache(path: Path, sha256: str, size: int, cache_dir: Path) -> np.ndarray:
    try:
        array = decode_array(path, size)
    except FileNotFoundError:
        raise UserError(
            f"Image {path} is listed in a manifest but missing. Run `dvc pull` (or `dvc checkout`) to "
            "restore it, or rerun `synthmix prepare` / `synthmix generate` to rebuild the manifests."
        ) from None
    except ValueError as reason:
        raise UserError(
            f"Image {path} cannot be decoded ({reason}). It was usable when the manifest was written, so "
            "the file has changed since: restore it with `dvc checkout` or rerun `synthmix prepare`."
        ) from None
    target = cached_image_path(cache_dir, sha256, size)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return array
