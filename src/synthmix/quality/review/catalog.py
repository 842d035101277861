"""The images the review page may show: each generator's synthetic manifest and the real training split.

A requested image is looked up among the paths these manifests list, never joined onto a folder and
opened: whatever else the request names (`../../etc/passwd`, an absolute path, params.yaml, a stray
file or link inside synthetic/) is not found. A listed file is served only when its bytes are an
image, so a listed path later replaced by a link to some other file gives nothing away either.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from synthmix.config.generate import GenerateConfig
from synthmix.data.real import SplitRow, read_manifest
from synthmix.generate.manifest import SyntheticRow, read_synthetic_manifest

T = TypeVar("T")


@dataclass(frozen=True)
class Picture:
    """An image file's bytes and their MIME type."""

    data: bytes
    mime: str


class Catalog:
    """The project's listed images, each manifest re-read when it changes on disk (a rerun of
    `synthmix generate` or `synthmix prepare` while the page is open)."""

    def __init__(self, generate: GenerateConfig, prepared_dir: Path, root: Path) -> None:
        self.root = root.resolve()
        self.generators = generate.names
        self._manifests = {name: root / generate.manifest_path(name) for name in self.generators}
        self._train = root / prepared_dir / "train.csv"
        self._cache: dict[Path, tuple[tuple[int, int], object]] = {}
        self._listed_at: tuple[tuple[int, int], ...] = ()
        self._listed_cache: dict[str, Path] = {}
        self._lock = threading.Lock()  # the server answers requests in threads

    def synthetic(self, generator: str) -> list[SyntheticRow]:
        """Generator `generator`'s manifest rows; a UserError when it has none yet."""
        return self._read(self._manifests[generator], read_synthetic_manifest)

    def real(self) -> list[SplitRow]:
        """The real training split's rows; none before `synthmix prepare`."""
        return self._read(self._train, read_manifest) if self._train.exists() else []

    def row(self, generator: str, requested: str) -> SyntheticRow | None:
        """The row of generator `generator`'s manifest that `requested` names, else None."""
        key = self._key(requested)
        return next((r for r in self.synthetic(generator) if self._key(r.path.as_posix()) == key), None)

    def picture(self, requested: str) -> Picture | None:
        """The image a manifest lists at `requested`, or None: not listed, missing, or not an image."""
        path = self._listed().get(self._key(requested))
        if path is None:
            return None
        try:
            data = (self.root / path).read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                mime = Image.MIME.get(img.format or "")
        except (OSError, UnidentifiedImageError):
            return None
        return Picture(data, mime) if mime else None

    def _listed(self) -> dict[str, Path]:
        """Every listed image (real training split, each generator's manifest there is) by its key."""
        sources = [self._train, *self._manifests.values()]
        stamps = tuple(self._stamp(p) for p in sources)
        with self._lock:
            if self._listed_at == stamps:
                return self._listed_cache
            paths = [r.path for r in self.real()]
            for generator, manifest in self._manifests.items():
                if manifest.exists():
                    paths += [r.path for r in self.synthetic(generator)]
            self._listed_cache = {self._key(p.as_posix()): p for p in paths}
            self._listed_at = stamps
            return self._listed_cache

    def _key(self, path: str) -> str:
        """`path` (relative to the project or absolute) as a normalised absolute path, for comparing."""
        return os.path.normpath(os.path.join(self.root, path)) if "\0" not in path else ""

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        """What changes when a manifest is rewritten (an atomic replace: a new mtime)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return (0, -1)
        return (stat.st_mtime_ns, stat.st_size)

    def _read(self, path: Path, reader: Callable[[Path], list[T]]) -> list[T]:
        """`reader(path)`, from the cache while the file's mtime and size are the same."""
        stamp = self._stamp(path)
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, reader(path))
            self._cache[path] = cached
        return cached[1]  # type: ignore[return-value]
