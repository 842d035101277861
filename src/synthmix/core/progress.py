"""Rich progress bars for every loop long enough to wait on."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")


def progress(items: Sequence[T] | Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items` with a progress bar on stderr (hidden when SYNTHMIX_QUIET is set)."""
    if total is None and isinstance(items, Sequence):
        total = len(items)
    disable = bool(os.environ.get("SYNTHMIX_QUIET"))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=disable, transient=not sys.stderr.isatty()) as bar:
        yield from bar.track(items, total=total, description=description)
