"""What a pass-through device needs of the device server it forwards to.

A ``passthrough`` device (devices/passthrough.py) exports a SCSI device that
lives elsewhere: a LUN of another iSCSI target, or a local SCSI device
through SG_IO. The device layer must not import the transports (the layer
contract), yet the iSCSI backend is an iSCSI *initiator*, which belongs with
the iSCSI code. So this module defines the seam: :class:`ScsiBackend`, the
protocol a backend satisfies, and :class:`BackendSpec`, the validated
``backend = ...`` setting. A higher layer supplies the implementation as a
:data:`BackendConnector` (the daemon hands ``transports/iscsi/backend.py``'s
connector to each device actor, as it hands the admin plane its daemon API);
the SG_IO backend (devices/sg_backend.py) needs no network and lives here.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
import trio

from pyscst.scsi.command import Buffer, DataDirection, TaskAttribute

log = logging.getLogger(__name__)

#: the iSCSI port a backend URL without one means
ISCSI_PORT = 3260
#: commands in flight toward one backend, by default
DEFAULT_QUEUE_DEPTH = 32
#: a backend command unanswered this long: the backend is hung (seconds)
DEFAULT_COMMAND_TIMEOUT = 30.0
#: reconnect backoff: first wait and cap (seconds)
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0


@attrs.frozen
class BackendChap:
    """CHAP credentials the backend target asks of us (and its own, for mutual)."""

    user: str
    secret: bytes = attrs.field(repr=False)
    target_user: str | None = None
    target_secret: bytes | None = attrs.field(default=None, repr=False)
    #: the files the secrets came from, as written (what ``save`` writes back)
    secret_file: str | None = None
    target_secret_file: str | None = None


@attrs.frozen
class BackendSpec:
    """Where a pass-through device's commands go (``[devices.NAME] backend``)."""

    #: as written in the configuration
    url: str
    #: "iscsi" or "sg"
    kind: str
    host: str = ""
    port: int = ISCSI_PORT
    target: str = ""
    lun: int = 0
    #: the SG_IO device (``/dev/sgN`` or a block device)
    path: Path | None = None
    #: our initiator name toward the backend target
    initiator_name: str = ""
    chap: BackendChap | None = None
    queue_depth: int = DEFAULT_QUEUE_DEPTH
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT


def parse_backend(text: str) -> BackendSpec:
    """``iscsi://host[:port]/iqn/lun`` or an absolute device path; ValueError
    (a sentence for the configuration error) when it is neither."""
    text = text.strip()
    if text.startswith("/"):
        return BackendSpec(url=text, kind="sg", path=Path(text))
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "iscsi":
        raise ValueError(f'expected "iscsi://host:port/iqn/lun" or a /dev path, got "{text}"')
    if parts.username or parts.password:
        raise ValueError("put backend CHAP credentials in backend_chap, not in the URL")
    if parts.query or parts.fragment:
        raise ValueError("the backend URL takes no query or fragment")
    try:
        host, port = parts.hostname, parts.port or ISCSI_PORT
    except ValueError as exc:  # a port that is not a number or out of range
        raise ValueError(f"bad port in {text!r}: {exc}") from None
    if not host:
        raise ValueError(f"no host in {text!r}")
    segments = parts.path.strip("/").split("/")
    if len(segments) != 2 or not segments[0] or not segments[1]:
        raise ValueError(f'expected "iscsi://{host}:{port}/<target name>/<lun>", got "{text}"')
    target, lun_text = segments
    if not lun_text.isdigit() or not 0 <= int(lun_text) <= 16383:
        raise ValueError(f"LUN must be 0..16383, got {lun_text!r}")
    return BackendSpec(url=text, kind="iscsi", host=host, port=port, target=target,
                       lun=int(lun_text))  # fmt: skip


@attrs.frozen
class BackendReply:
    """How the backend device server ended a command: its status, its sense
    data as it sent it, its data-in, and its residual (positive: it moved
    less than we asked; negative: it had more)."""

    status: int
    sense: bytes = b""
    data: Buffer = b""
    residual: int = 0


class BackendDown(Exception):
    """The command did not complete at the backend: the connection was down or
    went away with the command outstanding, or the backend did not answer in
    time. Whether it executed is unknown; the initiator must retry."""


class BackendFault(Exception):
    """The backend answered this command in a way no device server may (data
    beyond what was asked, a protocol error): its answer cannot be passed on."""


class LinkState:
    """Up or down, and why: what every backend keeps of its link and says in
    ``describe`` (each new reason for being down is logged once)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._up = False
        self._reason: str | None = None
        #: the backend actor's own nursery (aborts, resets run there)
        self._nursery: trio.Nursery | None = None

    async def run(
        self, on_connect: Callable[[], Awaitable[None]], task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The backend actor: ``_serve`` (connect, probe, serve, reconnect) in
        a nursery of its own."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._serve(on_connect)

    async def _serve(self, on_connect: Callable[[], Awaitable[None]]) -> None:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        return self._up

    def describe(self) -> str:
        state = "up" if self.connected else f"down ({self._reason or 'connecting'})"
        return f"{self.where} {state}"

    def _down(self, reason: str) -> None:
        if reason != self._reason:
            log.warning("pass-through backend %s: %s; retrying", self.where, reason)
        self._reason = reason

    def _back_up(self) -> None:
        log.info("pass-through backend %s: %s", self.where,
                 "connected again" if self._reason is not None else "connected")  # fmt: skip
        self._up, self._reason = True, None


class ScsiBackend(Protocol):
    """One backend device server as the pass-through device drives it.

    ``run`` is the backend's actor body (started in the device actor's
    nursery, so the device's supervisor supervises it): it connects, calls
    ``on_connect`` after every (re)connection (the device probes identity
    there, through ``execute``), and reconnects with backoff when the link is
    lost, for ever. It raises only on a bug.
    """

    spec: BackendSpec

    @property
    def connected(self) -> bool: ...

    def describe(self) -> str:
        """For logs and the admin plane: where it goes and its state."""
        ...

    async def run(
        self, on_connect: Callable[[], Awaitable[None]], task_status: Any = ...
    ) -> None: ...

    async def execute(
        self, cdb: bytes, data_out: Buffer, read_length: int, attr: TaskAttribute,
        direction: DataDirection | None = None,
    ) -> BackendReply:
        """One command, with its CDB, data and task attribute (and direction,
        when the initiator's differs from what the lengths say: a read with an
        expected length of 0 is still a read). Cancelling the
        caller aborts the command at the backend (ABORT TASK). Raises
        :class:`BackendDown` or :class:`BackendFault`."""
        ...

    def reset_lu(self) -> None:
        """Reset the backend logical unit (LOGICAL UNIT RESET), soon; never waits."""
        ...

    async def close(self) -> None: ...


#: what a backend that can queue a command without a task calls when it ends:
#: with its reply, or the BackendDown / BackendFault ``execute`` would raise
Completion = Callable[[BackendReply | Exception], object]


@runtime_checkable
class QueuingBackend(Protocol):
    """A backend that can also take a command synchronously (the iSCSI one):
    the pass-through device's fast path, with no Trio task per command."""

    def start(
        self, cdb: bytes, data_out: Buffer | list[Buffer], read_length: int, attr: TaskAttribute,
        direction: DataDirection | None, done: Completion,
    ) -> Callable[[], None] | None:
        """Queue the command now; ``done`` is called exactly once, later (never
        from inside ``start``). ``data_out`` may be the pieces the data-out
        arrived in (sent on in order, never joined by the caller). Returns
        the function that aborts it (``done`` then hears BackendDown at
        once), or None when it cannot be queued now (not connected, queue
        depth reached): use ``execute``."""
        ...


#: builds the backend for a spec (supplied by the layer that can: the daemon)
BackendConnector = Callable[[BackendSpec], ScsiBackend]
