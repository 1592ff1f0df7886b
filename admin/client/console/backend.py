"""What the console talks to: one blocking ``call(op, **args) -> result``.

The console sits between two event loops that do not mix: prompt_toolkit runs
on asyncio, the daemon on Trio. A blocking request/reply call keeps the shell
free of both: the same command code serves the interactive prompt, the tests
(with an in-memory fake backend) and the real daemon behind its control socket
(:class:`ClientBackend`, over the protocol's blocking :class:`pyscst.admin.client.connection.Client`).
Every failure, whether the daemon refused an op or could not be reached,
arrives as one :class:`BackendError` (the protocol's ``OpError``) carrying the
error code, a message naming what and where, and optionally the object path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pyscst.admin.client.connection import Client, Unreachable
from pyscst.admin.control.protocol import OpError

BackendError = OpError
UNREACHABLE = "unreachable"  # the console's own code: no daemon answers on the socket

__all__ = ["UNREACHABLE", "Backend", "BackendError", "ClientBackend"]


class Backend(Protocol):
    """Runs one control-protocol op and returns its ``result``."""

    def call(self, op: str, **args: Any) -> Any:
        """Raise :class:`BackendError` when the op fails or cannot be sent."""
        ...

    def close(self) -> None: ...


class ClientBackend:
    """The daemon's control socket, connected lazily and again after a loss.

    A console outlives a daemon restart: the next command reconnects, and
    until then every command says which socket could not be reached.
    """

    def __init__(self, socket_path: str | Path, timeout: float = 60.0) -> None:
        self._path = str(socket_path)
        self._timeout = timeout
        self._client: Client | None = None

    @property
    def socket_path(self) -> str:
        return self._path

    def call(self, op: str, **args: Any) -> Any:
        try:
            if self._client is None:
                self._client = Client(self._path, timeout=self._timeout)
            return self._client.call(op, **args)
        except Unreachable as exc:
            self.close()
            raise BackendError(UNREACHABLE, str(exc)) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
