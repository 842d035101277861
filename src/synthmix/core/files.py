"""Writing files so that a reader never sees half of one, and hashing their contents.

Every file one stage writes and another reads goes through `atomic_path` (a temp file in the same
folder, then os.replace), so an interrupted write leaves the old file or none, never a torn one: not
even when the disk fills up or a file-size limit is hit halfway (the temp file is removed, and the
OSError names the file that was being written, for errors.full_disk_error). A file that several
processes rewrite from what they read (metrics.json, best_params.yaml) is rewritten under `locked`.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from synthmix.core.errors import UserError


class atomic_path:
    """Context manager giving a temporary path that replaces `path` only if the block succeeds.

    When the block fails the temp file is removed; an OSError that names no file (a write() that found
    the disk full) or names the temp file is raised again naming `path`, the file the user knows.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
            return
        self.tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno and exc.filename in (None, str(self.tmp), self.tmp):
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for `path` during the block (flock on `.<name>.lock` beside it), so that
    processes rewriting one shared file take turns instead of interleaving. The lock file stays: a
    removed lock file would let a waiting process and a newcomer lock two different files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when fh closes, also if the process dies
        yield


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(data: object) -> str:
    """Hash of a JSON-able value, independent of dict order: the fingerprints' common form."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def write_text(text: str, path: Path) -> None:
    """A small text file (a marker such as a run's DONE), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_array(array: Any, path: Path) -> None:
    """One numpy array as a .npy file, atomically. Written through Python's file object: on a real file
    np.save hands the data to C's fwrite, whose short write on a full disk goes unreported, so it
    would leave a truncated array in place without an error."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def write_json(data: object, path: Path) -> None:
    """JSON with NaN and infinities written as null (JSON has neither) and paths as POSIX strings,
    atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(data), indent=2) + "\n")


def write_csv(header: Sequence[str], rows: Iterable[Sequence[object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def read_csv(
    path: Path, fields: Sequence[str], missing: str | None, not_ours: Callable[[list[str] | None], str]
) -> list[dict[str, str]]:
    """The rows of a CSV file that synthmix wrote with header `fields`, as dicts. A UserError with
    `missing` when the file is not there (no rows when `missing` is None), or with `not_ours(columns)`
    when its header is another: each message says which file it is and how to make it again."""
    if not path.exists():
        if missing is None:
            return []
        raise UserError(missing)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != tuple(fields):
            raise UserError(not_ours(reader.fieldnames))
        return list(reader)


def _finite(obj: object) -> object:
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
