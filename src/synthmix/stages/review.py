"""The `synthmix review` stage: a local page to accept or reject synthetic images into vetting/decisions.csv.

Reads the synthetic manifests (generate.*) and the real training split (data.prepared_dir), checks
that there is something to review and that the decisions file reads, and binds the page's server
(quality/review/). The decisions it writes are what a `@reviewed` mix leaves out (data/vetting.py).
"""

from __future__ import annotations

import errno
from pathlib import Path

from synthmix.config.params import Params
from synthmix.core.errors import UserError, one_line
from synthmix.data.vetting import DECISIONS_PATH, read_decisions
from synthmix.quality.review.catalog import Catalog
from synthmix.quality.review.server import ReviewServer, serve_until_stopped

__all__ = ["review_stage", "serve_until_stopped"]


def review_stage(
    params: Params, host: str = "127.0.0.1", port: int = 8765, decisions_path: Path = DECISIONS_PATH
) -> ReviewServer:
    """A server bound to host:port (port 0: a free one) for the project in the working directory; a
    UserError when there is nothing to review yet or the address cannot be had."""
    catalog = Catalog(params.generate, params.data.prepared_dir, Path.cwd())
    catalog.synthetic(catalog.generators[0])  # no manifest yet: say so now, not on the first page view
    read_decisions(decisions_path)  # a damaged decisions file: say so now
    try:
        return ReviewServer(host, port, catalog, decisions_path)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"Port {port} on {host} is already in use (another `synthmix review`, or another "
                "program). Stop that one, or pick a free port with `synthmix review --port 8766`."
            ) from None
        raise UserError(
            f"Cannot listen on {host}:{port}: {one_line(exc)}. Give an address of this machine with "
            "--host (the default, 127.0.0.1, is reachable from this machine only) and a port from 1024 "
            "to 65535 with --port."
        ) from None
