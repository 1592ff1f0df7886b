"""Messages between actors, and the request/reply pattern over memory channels.

Messages are small frozen attrs classes. A request that needs an answer
carries nothing but its fields; :func:`call` pairs it with a one-shot reply
channel so the receiving actor answers without sharing state with the caller.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import trio

from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import Asc

R = TypeVar("R")


class TmfFunction(enum.IntEnum):
    """iSCSI Task Management Function Request codes (RFC 7143 11.5.1, RFC 7144 4.1):
    the numbers ``Session.task_management`` takes, whatever the transport."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8
    QUERY_TASK = 9
    QUERY_TASK_SET = 10
    I_T_NEXUS_RESET = 11
    QUERY_ASYNC_EVENT = 12


class TmfResponse(enum.IntEnum):
    """iSCSI Task Management Function Response codes (RFC 7143 11.6.1, RFC 7144)."""

    COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    REASSIGNMENT_NOT_SUPPORTED = 4
    NOT_SUPPORTED = 5
    AUTHORIZATION_FAILED = 6
    SUCCEEDED = 7  # QUERY TASK / QUERY TASK SET: a task exists
    REJECTED = 255


@attrs.frozen
class AbortTask:
    nexus: Nexus
    tag: int


@attrs.frozen
class QueryTask:
    nexus: Nexus
    tag: int


@attrs.frozen
class AbortTaskSet:
    nexus: Nexus


@attrs.frozen
class QueryTaskSet:
    nexus: Nexus


@attrs.frozen
class ClearTaskSet:
    nexus: Nexus


@attrs.frozen
class ResetLogicalUnit:
    """LOGICAL UNIT RESET (asc 29/03) or a target reset's share of it (29/02)."""

    nexus: Nexus | None
    asc: Asc = Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED


@attrs.frozen
class NexusLoss:
    """An I_T nexus ended (logout, dropped connection, reinstatement) or was reset.

    ``reset`` is True for I_T NEXUS RESET: the nexus lives on with a 29/07 UA.
    """

    nexus: Nexus
    reset: bool = False


@attrs.frozen
class RaiseUnitAttention:
    """Queue a UA for every nexus of the LU (capacity change, LUN map edits...)."""

    asc: Asc
    nexus: Nexus | None = None  # only this one, when set


@attrs.frozen
class ResizeDevice:
    """Change a device's capacity to ``size`` bytes (admin ``device.resize``).

    Replies None, or the exception that refused it."""

    size: int


@attrs.frozen
class ChangeMedium:
    """Eject (``load`` False) or load the medium of a removable device
    (admin ``device.eject`` / ``device.load``).

    Replies True if the medium changed, False if it already was so, or the
    exception that refused it (not removable, PREVENT held, an image that
    cannot be opened). ``path``: load this image instead (a CD-ROM's).
    ``forget``: on eject, the device no longer names that medium, so a
    restart comes back empty (a changer carried the cartridge elsewhere).
    """

    load: bool
    path: Path | None = None
    forget: bool = False


@attrs.frozen
class OperateLibrary:
    """An operator's change to a medium changer's library (admin ``library.*``):
    ``action`` is create, import, export, delete or list; ``options`` its
    extra arguments (capacity, worm).

    Replies the element it touched (or the inventory, for list), or the
    exception that refused it."""

    action: str
    barcode: str = ""
    options: tuple[tuple[str, object], ...] = ()


@attrs.frozen
class SetDeviceReadOnly:
    """Write-protect a device for everyone, or lift it (admin ``device.set``).

    Replies None, or the exception that refused it."""

    read_only: bool


@attrs.frozen
class Envelope(Generic[R]):
    message: Any
    reply: trio.MemorySendChannel[R]


def reply_to(reply: trio.MemorySendChannel[R], answer: R) -> bool:
    """Answer a request; False when the requester went away.

    The caller of :func:`call` may be gone by the time the answer is ready:
    cancelled with its connection (a TCP reset right after a LUN RESET), or
    its session closed. Its end of the reply channel is closed then, and the
    answer is dropped: an actor never fails because someone stopped
    listening. Every actor answers through this one function.
    """
    try:
        reply.send_nowait(answer)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def call(mailbox: trio.MemorySendChannel[Any], message: Any) -> Any:
    """Send ``message`` and wait for the receiving actor's reply."""
    reply_send, reply_recv = trio.open_memory_channel[Any](1)
    async with reply_recv:
        await mailbox.send(Envelope(message, reply_send))
        return await reply_recv.receive()
