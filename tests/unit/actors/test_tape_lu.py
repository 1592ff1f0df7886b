"""A tape drive behind the real logical unit: its READ(6) and WRITE(6) take the
synchronous fast path when nothing waits (a cached record, immediate data),
answer in arrival order, and a CHECK CONDITION still carries its data-in."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.lowlevel

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.lun import LogicalUnit
from pyscst.devices.tape import TapeDevice
from pyscst.devices.tape_cartridge import Kind, create_blank, open_cartridge
from pyscst.scsi.command import DataDirection, Nexus, ScsiCommand, TaskAttribute
from pyscst.scsi.sense import Status
from tests.fakes import FakeTransport

NEXUS = Nexus.iscsi("iqn.2026-11.org.example:a", 1, "iqn.2026-11.org.pyscst:t", 1)


def c6(op: int, b1: int, n: int) -> bytes:
    return bytes((op, b1)) + n.to_bytes(3, "big") + b"\0"


def command(t: FakeTransport, tag: int, cdb: bytes, length: int, direction: DataDirection,
            attr: TaskAttribute = TaskAttribute.SIMPLE) -> ScsiCommand:  # fmt: skip
    return ScsiCommand(cdb=cdb, lun=0, tag=tag, attr=attr, expected_length=length,
                       direction=direction, nexus=NEXUS, transport=t)  # fmt: skip


async def test_cached_reads_and_immediate_writes_answer_inside_submit(tmp_path: Path) -> None:
    cart = open_cartridge(create_blank(tmp_path / "C", "C00001L8", 8 << 20))
    cart.partitions[0].append_many(Kind.RECORD, [b"a" * 10, b"b" * 10])
    device = TapeDevice("t0", cart)
    lu = LogicalUnit("t0", lambda: device, CORE_TABLE)
    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        t = FakeTransport()
        lu.submit(command(t, 1, bytes(6), 0, DataDirection.NONE), 0, False)  # power-on UA
        read = DataDirection.READ
        lu.submit(command(t, 2, c6(0x08, 0, 10), 10, read), 0, False)
        assert len(t.responses) == 2 and t.responses[1].status == Status.GOOD
        assert t.responses[1].data == b"a" * 10  # answered inside submit
        lu.submit(command(t, 3, c6(0x08, 0, 64), 64, read, TaskAttribute.ORDERED), 0, False)
        assert len(t.responses) == 3  # ordered, but nothing older: inline too
        ili = t.responses[2]
        assert ili.status == Status.CHECK_CONDITION and ili.sense is not None
        assert ili.sense[2] & 0x20 and ili.data == b"b" * 10  # ILI, and the data
        t_out = FakeTransport(b"c" * 8)
        lu.submit(command(t_out, 4, c6(0x0A, 0, 8), 8, DataDirection.WRITE), 0, False)
        with trio.fail_after(5):
            while not t_out.responses:
                await trio.lowlevel.checkpoint()
        assert t_out.responses[0].status == Status.GOOD
        assert device.part.eod == 3 and device.position == 3
        nursery.cancel_scope.cancel()
    cart.close_now()


async def test_immed_rewind_through_the_lu_reports_a_failed_sync_as_deferred(
    tmp_path: Path,
) -> None:
    """The synchronize an IMMED=1 REWIND leaves runs in the LU's nursery
    (ctx.start_background); its failure reaches the next command as a
    deferred error (response code 0x71), and only once."""
    cart = open_cartridge(create_blank(tmp_path / "C", "C00002L8", 8 << 20))
    device = TapeDevice("t0", cart)
    lu = LogicalUnit("t0", lambda: device, CORE_TABLE)

    def failing() -> None:
        raise OSError(5, "injected")

    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        t = FakeTransport(b"w" * 8)
        none, write = DataDirection.NONE, DataDirection.WRITE
        lu.submit(command(t, 1, bytes(6), 0, none), 0, False)  # power-on UA
        lu.submit(command(t, 2, c6(0x0A, 0, 8), 8, write), 0, False)
        with trio.fail_after(5):
            while len(t.responses) < 2:
                await trio.sleep(0.001)
        assert t.responses[1].status == Status.GOOD and device.unsynced
        cart.sync = failing  # type: ignore[method-assign]
        lu.submit(command(t, 3, c6(0x01, 1, 0), 0, none), 0, False)  # REWIND IMMED
        with trio.fail_after(5):
            while device.deferred is None:
                await trio.sleep(0.001)
        assert t.responses[2].status == Status.GOOD and device.position == 0
        lu.submit(command(t, 4, bytes(6), 0, none), 0, False)
        lu.submit(command(t, 5, bytes(6), 0, none), 0, False)
        with trio.fail_after(5):
            while len(t.responses) < 5:
                await trio.sleep(0.001)
        deferred = t.responses[3]
        assert deferred.status == Status.CHECK_CONDITION and deferred.sense is not None
        assert deferred.sense[0] == 0x71 and deferred.sense[2] & 0x0F == 0x03  # MEDIUM ERROR
        assert t.responses[4].status == Status.GOOD
        nursery.cancel_scope.cancel()
    cart.close_now()
