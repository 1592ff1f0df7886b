"""Test doubles for the two narrow interfaces a command crosses.

``FakeTransport`` hands out preloaded data-out (capped by the command's
expected length, as a real transport would) and records every response;
``FakeContext`` stands in for the logical unit (pending sense, UAs queued for
other nexuses, read-only mapping). ``run_cdb`` pushes one CDB through a table
and a device the way the LU actor does, so handler tests exercise the real
lookup and field checks.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.lun import LogicalUnit
from pyscst.devices.device_type import check_ready_for
from pyscst.devices.disk import DiskDevice
from pyscst.devices.io_engine import SubmissionBatch, UringEngine
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.cdb import OpTable, Pending
from pyscst.scsi.command import Buffer, DataDirection, Nexus, ScsiCommand, TaskAttribute
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status

DEFAULT_NEXUS = Nexus.iscsi(
    "iqn.2024-01.org.example:initiator", 0x23D000000001, "iqn.2024-01.org.pyscst:disk", 1
)


@attrs.frozen
class Response:
    status: Status
    sense: bytes | None
    data: bytes | None


class FakeTransport:
    """Data-out from a preloaded buffer; responses recorded in order."""

    def __init__(self, data_out: bytes = b"") -> None:
        self.data_out = data_out
        self.requests: list[int] = []
        self.responses: list[Response] = []
        self.finished: list[ScsiCommand] = []
        #: drop() calls: True for a session drop
        self.dropped: list[bool] = []

    async def receive_data(self, cmd: ScsiCommand, length: int) -> memoryview:
        self.requests.append(length)
        n = min(length, cmd.expected_length, len(self.data_out))
        return memoryview(self.data_out[:n])

    def data_now(self, cmd: ScsiCommand, length: int) -> memoryview | None:
        self.requests.append(length)
        n = min(length, cmd.expected_length, len(self.data_out))
        return memoryview(self.data_out[:n])

    def data_later(self, cmd: ScsiCommand) -> Pending | None:
        return None  # (data_now always has it)

    def record(
        self, cmd: ScsiCommand, status: Status, sense: bytes | None, data: Buffer | None
    ) -> None:
        self.responses.append(Response(status, sense, None if data is None else bytes(data)))

    async def send_response(
        self, cmd: ScsiCommand, status: Status, sense: bytes | None, data: Buffer | None
    ) -> None:
        self.record(cmd, status, sense, data)

    def respond_now(
        self, cmd: ScsiCommand, status: Status, sense: bytes | None, data: Buffer | None
    ) -> bool:
        self.record(cmd, status, sense, data)
        return True

    def command_finished(self, cmd: ScsiCommand) -> None:
        self.finished.append(cmd)

    def drop(self, cmd: ScsiCommand, session: bool) -> None:
        self.dropped.append(session)


class FakeContext:
    """The ExecContext a logical unit would give a handler."""

    def __init__(
        self, nexus: Nexus = DEFAULT_NEXUS, lun: int = 0, read_only: bool = False
    ) -> None:
        self._nexus = nexus
        self._lun = lun
        self._read_only = read_only
        self.pending: list[Sense] = []
        self.notified_others: list[Asc] = []
        self.background: list[Callable[[], Awaitable[None]]] = []

    @property
    def nexus(self) -> Nexus:
        return self._nexus

    @property
    def lun(self) -> int:
        return self._lun

    @property
    def read_only(self) -> bool:
        return self._read_only

    def take_sense(self) -> Sense | None:
        return self.pending.pop(0) if self.pending else None

    def notify_others(self, asc: Asc) -> None:
        self.notified_others.append(asc)

    def notify_all(self, asc: Asc) -> None:
        """Every nexus: the others (recorded) and this one (pending)."""
        self.notified_others.append(asc)
        self.pending.append(Sense.of(SenseKey.UNIT_ATTENTION, asc))

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Kept for the test to run (``await ctx.background.pop()()``)."""
        self.background.append(fn)


class PiecedTransport(FakeTransport):
    """Data-out that came in pieces (immediate data, Data-Out segments), as
    the iSCSI connection keeps a write's whose data came by R2T: a handler
    that asks for them joined (data_now) fails the test."""

    def __init__(self, parts: list[bytes]) -> None:
        super().__init__(b"".join(parts))
        self.parts = parts

    def data_now(self, cmd: ScsiCommand, length: int) -> memoryview | None:
        raise AssertionError("joined: data_now was asked")

    def data_segments_now(self, cmd: ScsiCommand, length: int) -> list[bytes] | None:
        total = min(length, cmd.expected_length)
        if sum(map(len, self.parts)) < total:
            return None
        out, left = [], total
        for part in self.parts:
            if left <= 0:
                break
            out.append(part[:left])
            left -= len(part)
        return out


def make_cmd(
    cdb: bytes,
    transport: FakeTransport | None = None,
    expected_length: int | None = None,
    direction: DataDirection = DataDirection.NONE,
    nexus: Nexus = DEFAULT_NEXUS,
) -> ScsiCommand:
    t = transport or FakeTransport()
    if expected_length is None:
        # data-out: what the initiator sends is what it announced; data-in: room
        expected_length = len(t.data_out) if t.data_out else 1 << 24
    return ScsiCommand(
        cdb=cdb,
        lun=0,
        tag=1,
        attr=TaskAttribute.SIMPLE,
        expected_length=expected_length,
        direction=direction,
        nexus=nexus,
        transport=t,
    )


@attrs.frozen
class Outcome:
    """What one command produced: data (GOOD) or the error it raised."""

    data: bytes | None
    error: ScsiError | None
    cmd: ScsiCommand

    @property
    def status(self) -> Status:
        return Status.GOOD if self.error is None else self.error.status

    @property
    def sense(self) -> Sense | None:
        return None if self.error is None else self.error.sense


async def run_cdb(
    device: Any,
    cdb: bytes,
    *,
    data_out: bytes = b"",
    ctx: FakeContext | None = None,
    table: OpTable | None = None,
    expected_length: int | None = None,
    nexus: Nexus | None = None,
) -> Outcome:
    """Look ``cdb`` up in the table and run its handler, as the LU would."""
    context = ctx or FakeContext()
    transport = FakeTransport(data_out)
    cmd = make_cmd(
        cdb, transport, expected_length=expected_length, nexus=nexus or context.nexus
    )
    tbl = table if table is not None else device.table
    try:
        spec = tbl.lookup(cdb)
        check_ready_for(device, spec)
        data = await spec.handler(device, cmd, context)
    except ScsiError as exc:
        return Outcome(None, exc, cmd)
    return Outcome(None if data is None else bytes(data), None, cmd)


@asynccontextmanager
async def lu_on(store: MemoryStore, block_size: int = 512) -> AsyncIterator[LogicalUnit]:
    """A running LogicalUnit over an SBC disk on ``store`` (LU-level tests)."""
    device = DiskDevice("d0", store, block_size=block_size)
    lu = LogicalUnit("d0", lambda: device, CORE_TABLE)
    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        yield lu
        nursery.cancel_scope.cancel()


async def until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll until ``cond()`` holds; the test fails after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.001)


def fill_pipe(w: int) -> None:
    """Fill a pipe's buffer, so that the next write to ``w`` waits (an I/O
    engine test's stand-in for a device that holds a write)."""
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"\0" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)


@asynccontextmanager
async def engine_on_pipe(
    name: str, batch: SubmissionBatch
) -> AsyncIterator[tuple[UringEngine, int, int, list[int | BaseException]]]:
    """An io_uring engine of ``batch`` with one read already queued on a new
    pipe (which starts its pumps): the engine, the pipe's read and write
    ends, and the list that read's result lands in. On the way out the
    calling task is no reader of the batch any more, what it still holds is
    submitted, and the engine and the pipe are closed."""
    engine = UringEngine.create(name, batch=batch)
    r, w = os.pipe()
    got: list[int | BaseException] = []
    try:
        engine.start_read(r, memoryview(bytearray(8)), -1, got.append)
        yield engine, r, w, got
    finally:
        batch.unregister_reader(trio.lowlevel.current_task())
        batch.submit_queued()
        await engine.aclose()
        os.close(r)
        os.close(w)
