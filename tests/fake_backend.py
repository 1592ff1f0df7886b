"""A scripted :class:`pyscst.devices.backend.ScsiBackend` for unit tests.

It answers like a small SBC disk kept in memory (INQUIRY, READ CAPACITY(16),
MODE SENSE of the Control page, RSOC, READ/WRITE(10), TEST UNIT READY), and
lets a test queue backend UNIT ATTENTIONs, make it go down, hold commands
until released, or answer with anything it likes (``script``).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pyscst.devices.backend import BackendDown, BackendReply, BackendSpec, parse_backend
from pyscst.scsi.command import Buffer, DataDirection, TaskAttribute
from pyscst.scsi.sense import Asc, Sense, SenseKey, Status

Script = Callable[[bytes, bytes, int], BackendReply | None]

#: what the fake's RSOC lists (opcode, service action)
SUPPORTED = ((0x00, None), (0x03, None), (0x12, None), (0x1A, None), (0x15, None), (0x1E, None),
             (0x28, None), (0x2A, None), (0x35, None), (0x88, None), (0x8A, None),
             (0x9E, 0x10), (0xA3, 0x0C))  # fmt: skip


def rsoc_data(supported: tuple[tuple[int, int | None], ...] = SUPPORTED) -> bytes:
    body = b"".join(
        struct.pack(">BBHBBH", op, 0, sa or 0, 0, 1 if sa is not None else 0, 10)
        for op, sa in supported
    )
    return struct.pack(">I", len(body)) + body


class FakeBackend:
    def __init__(self, blocks: int = 2048, block_size: int = 512) -> None:
        self.spec: BackendSpec = parse_backend("iscsi://fake:3260/iqn.2026-11.test:fake/1")
        self.blocks = blocks
        self.block_size = block_size
        self.data = bytearray(blocks * block_size)
        self.up = True
        #: UAs the backend reports (to its one initiator, pyscst) on the next commands
        self.pending_ua: list[Asc] = []
        self.script: Script | None = None
        #: every command it got: (cdb, data_out, read_length, attr)
        self.seen: list[tuple[bytes, bytes, int, TaskAttribute]] = []
        self.resets = 0
        self.hold: trio.Event | None = None
        self.closed = False
        self.inquiry_product = b"FAKE DISK       "

    @property
    def connected(self) -> bool:
        return self.up

    def describe(self) -> str:
        return f"{self.spec.url} {'up' if self.up else 'down'}"

    async def run(
        self, on_connect: Callable[[], Awaitable[None]], task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await on_connect()
        await trio.sleep_forever()

    def reset_lu(self) -> None:
        self.resets += 1
        self.pending_ua = [Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED]

    async def close(self) -> None:
        self.closed = True

    async def execute(
        self, cdb: bytes, data_out: Buffer, read_length: int, attr: TaskAttribute,
        direction: DataDirection | None = None,
    ) -> BackendReply:
        self.seen.append((bytes(cdb), bytes(data_out), read_length, attr))
        if self.hold is not None:
            await self.hold.wait()
        if not self.up:
            raise BackendDown("fake backend down")
        if self.script is not None:
            scripted = self.script(bytes(cdb), bytes(data_out), read_length)
            if scripted is not None:
                return scripted
        op = cdb[0]
        if self.pending_ua and op not in (0x12, 0x03):
            asc = self.pending_ua.pop(0)
            return BackendReply(Status.CHECK_CONDITION,
                                Sense.of(SenseKey.UNIT_ATTENTION, asc).encode())
        if op == 0x00:
            return BackendReply(Status.GOOD)
        if op == 0x12:
            if cdb[1] & 1:
                if cdb[2] == 0x83:
                    naa = bytes((1, 3, 0, 8)) + bytes.fromhex("6001405abcdef012")
                    port = bytes((0x61, 0x94, 0, 4)) + struct.pack(">HH", 0, 7)
                    page = bytes((0, 0x83)) + struct.pack(">H", len(naa + port)) + naa + port
                    return BackendReply(Status.GOOD, data=page[:read_length])
                return BackendReply(Status.CHECK_CONDITION, Sense.of(
                    SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB).encode())
            data = bytearray(96)
            data[2], data[3], data[4] = 6, 2, 91
            data[8:16] = b"FAKE    "
            data[16:32] = self.inquiry_product
            return BackendReply(Status.GOOD, data=bytes(data[:read_length]))
        if op == 0x9E:
            capacity = struct.pack(">QI", self.blocks - 1, self.block_size) + bytes(20)
            return BackendReply(Status.GOOD, data=capacity[:read_length])
        if op == 0x1A:
            control = bytes((0x0A, 10, 0x02, 0x00, 0, 0x40, 0, 0, 0, 0, 0, 0))
            mode = bytes((3 + len(control), 0, 0, 0)) + control
            return BackendReply(Status.GOOD, data=mode[:read_length])
        if op == 0xA3:
            return BackendReply(Status.GOOD, data=rsoc_data()[:read_length])
        if op in (0x28, 0x2A, 0x88, 0x8A):
            if op in (0x88, 0x8A):
                lba, n = struct.unpack_from(">QI", cdb, 2)
                op -= 0x60
            else:
                lba, n = struct.unpack_from(">IxH", cdb, 2)
            at, length = lba * self.block_size, n * self.block_size
            if op == 0x28:
                return BackendReply(Status.GOOD, data=bytes(self.data[at : at + length]),
                                    residual=max(0, read_length - length))  # fmt: skip
            self.data[at : at + len(data_out)] = data_out
            return BackendReply(Status.GOOD)
        return BackendReply(Status.GOOD)


class QueuingFakeBackend(FakeBackend):
    """The same fake, also taking commands synchronously (``start``, what the
    iSCSI backend offers): the pass-through device's fast path, no Trio task
    of the LU per command. Each queued command runs ``execute`` in a task of
    the fake's own (so ``hold``, ``script`` and the rest behave the same);
    its abort answers the caller at once and counts in ``aborted``."""

    def __init__(self, blocks: int = 2048, block_size: int = 512) -> None:
        super().__init__(blocks, block_size)
        self._nursery: trio.Nursery | None = None
        #: commands queued through ``start`` / aborted through its cancel
        self.started = 0
        self.aborted = 0
        #: ``start`` refuses (as when its queue depth is reached)
        self.refuse = False

    async def run(
        self, on_connect: Callable[[], Awaitable[None]], task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await on_connect()
            await trio.sleep_forever()

    def start(
        self, cdb: bytes, data_out: Buffer | list[Buffer], read_length: int, attr: TaskAttribute,
        direction: DataDirection | None, done: Callable[[BackendReply | Exception], object],
    ) -> Callable[[], None] | None:
        nursery = self._nursery
        if nursery is None or self.refuse or not self.up:
            return None
        self.started += 1
        scope = trio.CancelScope()
        ended = False

        def end(outcome: BackendReply | Exception) -> None:
            nonlocal ended
            if not ended:
                ended = True
                done(outcome)

        async def run_it() -> None:
            with scope:
                try:
                    reply: BackendReply | Exception = await self.execute(
                        cdb, b"".join(data_out) if isinstance(data_out, list)
                        else bytes(data_out), read_length, attr, direction)
                except Exception as exc:  # BackendDown / BackendFault, as the real one
                    reply = exc
                end(reply)

        nursery.start_soon(run_it)

        def cancel() -> None:
            if not ended:
                self.aborted += 1
                scope.cancel()
                end(BackendDown("aborted"))

        return cancel
