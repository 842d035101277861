"""The one exception type for mistakes a user can fix (bad input, bad parameters, a full disk).

The CLI turns it into a one-paragraph message and exit code 2; anything else is a bug and keeps
its traceback. A write that fails for want of space (`full_disk_error`) is such a mistake too.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (for a one-line warning), or its type's name when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


# A write that failed for want of room: the disk is full, the user's quota is used up, or the file-size
# limit (`ulimit -f`, RLIMIT_FSIZE) is reached.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# The same, as libraries that drop the OSError report it: the C library's words for those errnos
# (safetensors: the Rust io error), SQLite's SQLITE_FULL (ENOSPC) and SQLITE_IOERR_WRITE (the others).
_FULL_DISK_WORDS = tuple(sorted(os.strerror(code) for code in FULL_DISK_ERRNOS))
_SQLITE_FULL = frozenset({"SQLITE_FULL", "SQLITE_IOERR_WRITE"})


class UserError(Exception):
    """A problem with the user's data, parameters or environment, with how to fix it."""


def full_disk_error(exc: BaseException) -> UserError | None:
    """The message for `exc` when it, or an exception it arose from, is a write that found no room;
    None for any other exception. Names the file being written where the error tells it."""
    chain = list(_chain(exc))
    for link in chain:
        if isinstance(link, OSError) and link.errno in FULL_DISK_ERRNOS:
            return UserError(_message(link.filename, link.strerror or os.strerror(link.errno)))
    for link in chain:
        if getattr(link, "sqlite_errorname", None) in _SQLITE_FULL:
            return UserError(_message(_sqlite_file(chain), f"{link} ({link.sqlite_errorname})"))
    for link in chain:
        text = one_line(link)
        if any(words in text for words in _FULL_DISK_WORDS):
            return UserError(_message(None, text))
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it arose from (raise ... from, during handling, SQLAlchemy's orig)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        link = todo.pop(0)
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        todo += [link.__cause__, link.__context__, getattr(link, "orig", None)]


def _sqlite_file(chain: list[BaseException]) -> str:
    """The database file SQLAlchemy was writing (MLflow's, Optuna's): SQLite's error does not name it,
    the Connection in the failing frame does."""
    for link in chain:
        tb = link.__traceback__
        while tb is not None:
            url = getattr(getattr(tb.tb_frame.f_locals.get("self"), "engine", None), "url", None)
            if getattr(url, "database", None):
                return str(url.database)
            tb = tb.tb_next
    return "a SQLite database"


def _message(filename: str | bytes | os.PathLike | None, reason: str) -> str:
    where = os.fsdecode(filename) if filename else f"a file in {os.getcwd()}"
    return (
        f"Could not write {where}: {reason.rstrip('.')}. The disk is full, the disk quota is used up, or "
        "the file-size limit (`ulimit -f`) is too small for the file. Free some space (or raise the "
        "limit), then rerun the same command: finished work (prepared splits, generated images and "
        "checkpoints, cached images, finished runs) is kept, and nothing half-written is used."
    )
