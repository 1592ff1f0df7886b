"""The in-flight SCSI command and the two interfaces it crosses.

A target driver (iSCSI today) builds a :class:`ScsiCommand` and submits it to a
logical unit; the LU runs it as one Trio task under its own cancel scope. The
command talks back to its transport only through :class:`Transport` (SCST's
``rdy_to_xfer`` and ``xmit_response``), and a device handler sees the LU only
through :class:`ExecContext`. Keeping both narrow is what lets fault injection,
other transports and test doubles slot in without touching the middle.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from pyscst.scsi.alua import PortAccess
    from pyscst.scsi.cdb import Pending
    from pyscst.scsi.sense import Asc, Sense, Status

#: What a data-in handler may hand back: bytes-like, sent as is.
Buffer = bytes | bytearray | memoryview


class DataDirection(enum.IntEnum):
    NONE = 0
    READ = 1  # data-in: target -> initiator
    WRITE = 2  # data-out: initiator -> target


class TaskAttribute(enum.IntEnum):
    """SAM task attributes, numbered as in the iSCSI ATTR field."""

    UNTAGGED = 0
    SIMPLE = 1
    ORDERED = 2
    HEAD_OF_QUEUE = 3
    ACA = 4


@attrs.frozen
class Nexus:
    """An I_T nexus: who is talking to which target port.

    ``initiator_port`` and ``target_port`` are SAM port names (for iSCSI
    ``iqn...,i,0x<ISID>`` and ``iqn...,t,0x<TPGT>``); ``initiator_name`` is what
    LUN masking matches on; ``isid`` feeds persistent-reservation TransportIDs.
    ``relative_port`` is the target port's RELATIVE TARGET PORT IDENTIFIER and
    ``port_group_id`` its TARGET PORT GROUP id (0: the target has no ALUA groups),
    both fixed when the nexus forms (VPD 0x83 designates them).
    """

    initiator_name: str
    initiator_port: str
    target_name: str
    target_port: str
    relative_port: int = 1
    isid: int = 0
    port_group_id: int = 0

    @classmethod
    def iscsi(
        cls,
        initiator_name: str,
        isid: int,
        target_name: str,
        tpgt: int,
        relative_port: int = 1,
        port_group_id: int = 0,
    ) -> Nexus:
        return cls(
            initiator_name=initiator_name,
            initiator_port=f"{initiator_name},i,0x{isid:012x}",
            target_name=target_name,
            target_port=f"{target_name},t,0x{tpgt:04x}",
            relative_port=relative_port,
            isid=isid,
            port_group_id=port_group_id,
        )


class TransportGone(Exception):
    """The transport that carried a command went away while the command still
    needed it (e.g. its data-out): the command is aborted, nothing more. The
    LU answers nothing and counts no error."""


class Transport(Protocol):
    """What a running command needs from the target driver that carried it."""

    async def receive_data(self, cmd: ScsiCommand, length: int) -> memoryview:
        """Fetch ``length`` bytes of data-out (immediate, unsolicited, then R2T).

        Returns at most ``min(length, cmd.expected_length)`` bytes; the caller
        checks the length it got. Cancellable: an aborted command stops asking.
        Raises :class:`TransportGone` when the connection dropped meanwhile.
        """
        ...

    async def send_response(
        self, cmd: ScsiCommand, status: Status, sense: bytes | None, data: Buffer | None
    ) -> None:
        """Deliver data-in (if any) then the status; computes residuals."""
        ...

    def data_now(self, cmd: ScsiCommand, length: int) -> memoryview | None:
        """The data-out :meth:`receive_data` would return, if it has all arrived
        already (immediate data); None when getting it needs to wait."""
        ...

    def data_later(self, cmd: ScsiCommand) -> Pending | None:
        """Fetch, without a task waiting for it, the data-out that the last
        :meth:`data_now` call found missing (R2T and Data-Out): a Pending that
        finishes with None once it has all arrived (then :meth:`data_now`
        returns it), or with the exception that ended it (a ScsiError, such
        as a broken Data-Out sequence; :class:`TransportGone`). Cancelling it
        (a TMF, a lost nexus) stops soliciting; it then finishes with
        :class:`TransportGone`, never synchronously inside ``cancel``.

        None: this transport cannot (or the data is missing for a reason
        it does not handle this way); the caller's task awaits
        :meth:`receive_data` instead. A spawned task that waits for the
        Data-Out costs several scheduler passes per command; the LU runs the
        command's fast handler again from the Pending's completion instead.
        """
        ...

    def respond_now(
        self, cmd: ScsiCommand, status: Status, sense: bytes | None, data: Buffer | None
    ) -> bool:
        """:meth:`send_response` without waiting, for commands that finished
        synchronously; False (nothing sent) if it would have to wait."""
        ...

    def command_finished(self, cmd: ScsiCommand) -> None:
        """The command left the task set (answered or aborted): free its resources."""
        ...

    def drop(self, cmd: ScsiCommand, session: bool) -> None:
        """Fault injection: drop the connection that carried ``cmd`` (``session``:
        the whole session) without answering; the nexus loss aborts its commands."""
        ...


#: a designation descriptor (4-byte header + designator) -> (the device, is the
#: initiator's mapping of it read-only) among the LUs the issuing I_T nexus can
#: reach through its own LUN map, or None. Supplied by the session (the actor
#: layer) so that devices never see the LUN maps: an EXTENDED COPY can only
#: name what its initiator could address itself (CVE-2020-28374).
CopyResolver = Callable[[bytes], "tuple[object, bool] | None"]


class ScsiCommand:
    """One command from arrival to response. Owned by the task that runs it.

    A transport that keeps per-command state of its own subclasses it (the
    iSCSI connection's ``IscsiCommand``), so a command stays one object."""

    __slots__ = (
        "attr",
        "cdb",
        "copy_targets",
        "direction",
        "expected_length",
        "lun",
        "nexus",
        "port_group",
        "tag",
        "transfer_length",
        "transport",
    )

    def __init__(
        self,
        cdb: bytes,
        lun: int,
        tag: int,
        attr: TaskAttribute,
        expected_length: int,
        direction: DataDirection,
        nexus: Nexus,
        transport: Transport,
    ) -> None:
        self.cdb = cdb
        self.lun = lun
        self.tag = tag
        self.attr = attr
        self.expected_length = expected_length
        self.direction = direction
        self.nexus = nexus
        self.transport = transport
        #: bytes the CDB asks to move; set by the handler, used for residuals
        self.transfer_length = 0
        #: set by the session: EXTENDED COPY's way to the LUs this nexus reaches
        self.copy_targets: CopyResolver | None = None
        #: set by the session: the ALUA target port group of the port the
        #: command arrived on (None: its target has none; every command allowed)
        self.port_group: PortAccess | None = None

    @property
    def opcode(self) -> int:
        return self.cdb[0]

    async def receive_data(self, length: int) -> memoryview:
        self.transfer_length = length
        return await self.transport.receive_data(self, length)

    def data_now(self, length: int) -> memoryview | None:
        self.transfer_length = length
        return self.transport.data_now(self, length)

    def data_segments_now(self, length: int) -> list[Buffer] | None:
        """``data_now`` as the pieces the data-out arrived in, ``length``
        bytes in all (a transport without ``data_segments_now``: one piece),
        for a handler that writes them with one pwritev instead of having
        them copied into one buffer first."""
        self.transfer_length = length
        segments = getattr(self.transport, "data_segments_now", None)
        if segments is not None:
            got: list[Buffer] | None = segments(self, length)
            return got
        data = self.transport.data_now(self, length)
        return None if data is None else [data]

    def __repr__(self) -> str:
        return f"<ScsiCommand tag={self.tag:#x} lun={self.lun} op={self.cdb[:1].hex()}>"


class ExecContext(Protocol):
    """What a device handler may ask of the logical unit running its command."""

    @property
    def nexus(self) -> Nexus: ...

    @property
    def lun(self) -> int:
        """The LUN number the initiator addressed (for VPD, REPORT LUNS)."""
        ...

    @property
    def read_only(self) -> bool:
        """True when this initiator's mapping of the LU is read-only."""
        ...

    def take_sense(self) -> Sense | None:
        """For REQUEST SENSE: pop this nexus' highest-priority pending UA (or None)."""
        ...

    def notify_others(self, asc: Asc) -> None:
        """Queue a UNIT ATTENTION with ``asc`` for every *other* nexus of this LU
        (e.g. MODE PARAMETERS CHANGED after MODE SELECT)."""
        ...

    def notify_all(self, asc: Asc) -> None:
        """Queue a UNIT ATTENTION with ``asc`` for every nexus of this LU, this
        one too (a condition a pass-through backend reported to pyscst)."""
        ...

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` in the LU's nursery, outliving this command, its aborts,
        resets and its session (SANITIZE). ``fn`` must not raise."""
        ...
