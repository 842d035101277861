"""Worker processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time


def die_with_parent(parent: int) -> None:
    """A worker's initializer: die with the stage's process (`parent`), whatever kills it, and leave
    Ctrl-C to it (the terminal signals the whole process group; the stage then kills its workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux") and ctypes.CDLL(None).prctl(1, signal.SIGKILL) == 0:  # PDEATHSIG
        if os.getppid() != parent:  # it died before prctl: no signal will come
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Where the kernel cannot signal a parent's death: poll for it every second."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)
