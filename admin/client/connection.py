"""Clients of the control socket: an async one (Trio, for the console and tests)
and a blocking one (for the one-shot ``pyscst admin``).

Both send :class:`pyscst.admin.control.protocol.Request` lines and return the result of each
reply, raising :class:`pyscst.admin.control.protocol.OpError` for error replies (including
the one ``forbidden`` line a daemon sends a peer it refuses) and
:class:`Unreachable` when there is no daemon to talk to, so callers can map
those to distinct exit codes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from pyscst.admin.control.protocol import MAX_LINE, Reply, Request, decode_reply


class Unreachable(ConnectionError):
    """No daemon answers on the control socket (missing, refused, hung up)."""


#: sun_path holds 108 bytes; longer paths go through /proc/self/fd/N/NAME
_SUN_PATH_MAX = 100


@contextlib.contextmanager
def socket_address(path: str | Path) -> Iterator[str]:
    """An AF_UNIX address for ``path`` usable while the block runs, even when the
    path is too long for ``sun_path`` (deep test directories): then it goes
    through a descriptor of the parent directory."""
    text = str(path)
    if len(os.fsencode(text)) <= _SUN_PATH_MAX:
        yield text
        return
    parent = os.open(os.path.dirname(text) or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{parent}/{os.path.basename(text)}"
    finally:
        os.close(parent)


class _Framer:
    """Splits received bytes into reply lines."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_LINE and b"\n" not in self._buffer:
            raise Unreachable("reply line too long: not a pyscst control socket?")

    def next_line(self) -> bytes | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line


def _parse(line: bytes, request: Request) -> Any:
    try:
        reply: Reply = decode_reply(line)
    except ValueError as exc:
        raise Unreachable(f"malformed reply from the daemon: {exc}") from None
    return reply.unwrap()


class Client:
    """Blocking client: ``with Client(path) as c: c.call("tree")``."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self._ids = itertools.count(1)
        self._framer = _Framer()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            with socket_address(self.path) as address:
                self._sock.connect(address)
        except OSError as exc:
            self._sock.close()
            raise Unreachable(
                f"cannot reach the daemon at {self.path}: {exc.strerror or exc}"
            ) from None

    def call(self, op: str, **args: Any) -> Any:
        request = Request(next(self._ids), op, {k: v for k, v in args.items() if v is not None})
        try:
            try:
                self._sock.sendall(request.encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # it may have hung up after saying why (a refused peer): read that
            while (line := self._framer.next_line()) is None:
                data = self._sock.recv(65536)
                if not data:
                    raise Unreachable(f"the daemon at {self.path} closed the connection")
                self._framer.feed(data)
        except OSError as exc:
            raise Unreachable(f"lost the daemon at {self.path}: {exc}") from None
        return _parse(line, request)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """Trio client: ``async with await AsyncClient.connect(path) as c: await c.call(...)``.

    Calls are serialised (one request in flight per client)."""

    def __init__(self, stream: trio.SocketStream, path: Path) -> None:
        self.path = path
        self._stream = stream
        self._ids = itertools.count(1)
        self._framer = _Framer()
        self._lock = trio.Lock()

    @classmethod
    async def connect(cls, path: str | Path) -> AsyncClient:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with socket_address(path) as address:
                await sock.connect(address)
        except OSError as exc:
            sock.close()
            raise Unreachable(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from None
        return cls(trio.SocketStream(sock), Path(path))

    async def call(self, op: str, **args: Any) -> Any:
        request = Request(next(self._ids), op, {k: v for k, v in args.items() if v is not None})
        async with self._lock:
            try:
                try:
                    await self._stream.send_all(request.encode())
                except trio.BrokenResourceError:
                    pass  # it may have hung up after saying why (a refused peer): read that
                while (line := self._framer.next_line()) is None:
                    data = await self._stream.receive_some(65536)
                    if not data:
                        raise Unreachable(f"the daemon at {self.path} closed the connection")
                    self._framer.feed(data)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise Unreachable(f"lost the daemon at {self.path}: {exc}") from None
        return _parse(line, request)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
