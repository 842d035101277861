"""Writing files so that a reader never sees half of one, and hashing their contents.

Every file one stage writes and another reads goes through `atomic_path` (a temp file in the same
folder, then os.replace), so an interrupted write leaves the old file or none, never a torn one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


class atomic_path:
    """Context manager giving a temporary path that replaces `path` only if the block succeeds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        elif self.tmp.exists():
            self.tmp.unlink()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(data: object) -> str:
    """Hash of a JSON-able value, independent of dict order: the fingerprints' common form."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def write_json(data: object, path: Path) -> None:
    """JSON with NaN and infinities written as null (JSON has neither), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(data), indent=2) + "\n")


def write_csv(header: Sequence[str], rows: Iterable[Sequence[object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _finite(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
