"""The ``/metrics`` endpoint: a minimal HTTP/1.x server on the daemon's Trio loop.

Why not prometheus_client's ``start_http_server``: that runs a thread, and a
thread scraping Python objects contends for the GIL with the datapath at
every scrape, at moments the loop does not choose. Here a scrape is one Trio
task that reads the actors' counters between two commands, with no locks
(actors' state is only touched from the loop) and no second thread.

It answers ``GET /metrics`` (and ``HEAD``), ``GET /`` with a pointer, 404 for
any other path, 405 for other methods, 400 for anything that is not an HTTP
request, and closes the connection after each answer. A client gets
``REQUEST_TIMEOUT`` seconds and ``MAX_REQUEST`` bytes to send its request, and
at most ``MAX_CLIENTS`` are served at once (more are closed at once): a
scanner or a slow client cannot tie the loop up or grow memory.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
MAX_CLIENTS = 8

_INDEX = b"pyscst metrics: see /metrics\n"


class MetricsServer:
    """Serves one registry's exposition on listeners it is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._slots = trio.Semaphore(MAX_CLIENTS)
        self.scrapes = 0

    async def serve(
        self, listeners: list[trio.SocketListener], task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        await trio.serve_listeners(self._handle, listeners, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                return  # too many clients at once: close this one
            try:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    await self._answer(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the client went away: nothing to answer
            except Exception:  # no request may take the daemon down
                log.exception("metrics: request failed")
            finally:
                self._slots.release()

    async def _answer(self, stream: trio.SocketStream) -> None:
        request = await _read_head(stream)
        if request is None:
            await _send(stream, 400, b"bad request\n")
            return
        method, path = request
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            await _send(stream, 405, b"method not allowed\n", extra=b"Allow: GET, HEAD\r\n")
            return
        if path == "/metrics":
            self.scrapes += 1
            try:
                body = generate_latest(self.registry)
            except Exception:  # a collector bug must not take the daemon down
                log.exception("metrics: collecting failed")
                await _send(stream, 500, b"collecting metrics failed (see the daemon log)\n")
                return
            await _send(stream, 200, body, CONTENT_TYPE_LATEST, head=method == "HEAD")
        elif path == "/":
            await _send(stream, 200, _INDEX, head=method == "HEAD")
        else:
            await _send(stream, 404, b"not found\n", head=method == "HEAD")


async def _read_head(stream: trio.SocketStream) -> tuple[str, str] | None:
    """The request line's method and path, once the whole head has arrived
    (None: not HTTP, too long, or the client stopped sending)."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_REQUEST:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method, path = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    if not method.isalpha() or not path.startswith("/"):
        return None
    return method, path


_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    500: "Internal Server Error",
}  # fmt: skip


async def _send(
    stream: trio.SocketStream,
    code: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    head: bool = False,
    extra: bytes = b"",
) -> None:
    header = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode() + extra + b"\r\n"
    await stream.send_all(header if head else header + body)
