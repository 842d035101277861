"""The review page's HTTP server (stdlib): GET / (the page), GET /image?path=... (a listed image only),
POST /decision (record one verdict in vetting/decisions.csv).

Bound to 127.0.0.1 unless told otherwise. While bound to a loopback address it answers only requests
addressed to it by a loopback name (a web page elsewhere cannot reach it through DNS rebinding), and
a decision must come as JSON from the page's own origin, so another site cannot post one. Ctrl-C or
SIGTERM stops it quietly.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from synthmix.core.errors import UserError, full_disk_error, one_line
from synthmix.data.vetting import decide, verdict
from synthmix.quality.review.catalog import Catalog
from synthmix.quality.review.page import render_message, render_page

MAX_BODY = 64 * 1024  # a decision is a few hundred bytes
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True  # a stalled browser connection never holds up stopping

    def __init__(self, host: str, port: int, catalog: Catalog, decisions_path: Path) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), ReviewHandler)
        self.catalog = catalog
        self.decisions_path = decisions_path
        self.port = self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self.allowed_hosts = _allowed_hosts(host, self.port)


def _allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The Host headers a loopback-bound server answers; None (any) when bound to another address."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return frozenset(f"{name}:{port}" for name in LOOPBACK_NAMES) if loopback else None


class ReviewHandler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "synthmix-review"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the page says what was saved."""

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/":
            self._page(query.get("generator", [self.server.catalog.generators[0]])[0])
        elif url.path == "/image":
            self._image(query.get("path", [""])[0])
        else:
            self._send(HTTPStatus.NOT_FOUND, b"Not found.\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        if urlsplit(self.path).path != "/decision":
            self._json(HTTPStatus.NOT_FOUND, {"error": "Not found."})
            return
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
            self._json(HTTPStatus.FORBIDDEN, {"error": "Decisions come from the review page only."})
            return
        if self.headers.get_content_type() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "Send the decision as JSON."})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "Send one decision as a small JSON object."})
            return
        try:
            answer = self._decide(json.loads(self.rfile.read(length)))
        except (UserError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            self._json(HTTPStatus.BAD_REQUEST, {"error": one_line(exc)})
        except OSError as exc:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": one_line(full_disk_error(exc) or exc)})
        else:
            self._json(HTTPStatus.OK, answer)

    def _decide(self, body: object) -> dict[str, str]:
        fields = ("generator", "path", "decision")
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in fields):
            raise UserError(f"A decision is a JSON object with the strings {', '.join(fields)}.")
        catalog = self.server.catalog
        if body["generator"] not in catalog.generators:
            raise UserError(
                f"No generator {body['generator']!r}; params.yaml names {', '.join(catalog.generators)}."
            )
        row = catalog.row(body["generator"], body["path"])
        if row is None:
            raise UserError(f"{body['path']!r} is not an image of generator {body['generator']}'s manifest.")
        made = decide(body["generator"], row, verdict(body["decision"]), self.server.decisions_path)
        return {
            "generator": made.generator,
            "path": made.path.as_posix(),
            "sha256": made.sha256,
            "decision": made.decision,
            "decided_at": made.decided_at,
        }

    def _page(self, generator: str) -> None:
        catalog = self.server.catalog
        if generator not in catalog.generators:
            title, text = "No such generator", f"params.yaml names {', '.join(catalog.generators)}."
            self._send(HTTPStatus.NOT_FOUND, render_message(title, text).encode(), "text/html; charset=utf-8")
            return
        try:
            html = render_page(catalog, generator, self.server.decisions_path)
        except UserError as exc:  # that generator's manifest is not there yet
            html = render_message(f"Nothing to review for {generator}", str(exc))
            self._send(HTTPStatus.NOT_FOUND, html.encode(), "text/html; charset=utf-8")
            return
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")

    def _image(self, requested: str) -> None:
        try:
            picture = self.server.catalog.picture(requested)
        except UserError:
            picture = None
        if picture is None:
            body = b"Not an image of this project's manifests.\n"
            self._send(HTTPStatus.NOT_FOUND, body, "text/plain; charset=utf-8")
            return
        self._send(HTTPStatus.OK, picture.data, picture.mime, cache="no-cache")

    def _host_ok(self) -> bool:
        allowed = self.server.allowed_hosts
        if allowed is None or self.headers.get("Host") in allowed:
            return True
        self._send(HTTPStatus.FORBIDDEN, b"Open the page at its loopback address.\n", "text/plain")
        return False

    def _json(self, status: HTTPStatus, data: dict[str, str]) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)


def serve_until_stopped(server: ReviewServer) -> None:
    """Answer requests until Ctrl-C or SIGTERM, then close the socket; returns normally either way."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
