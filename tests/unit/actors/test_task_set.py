"""The logical unit's task set: task attributes, reordering rules, aborts, UAs.

These drive a real LogicalUnit actor and a real SBC DiskDevice over a store
whose I/O can be held at a gate, so "this command is still running" is a
state the test controls instead of a race it hopes to win.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.messages import (
    AbortTask,
    ClearTaskSet,
    Envelope,
    NexusLoss,
    ResetLogicalUnit,
    TmfResponse,
    call,
)
from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.command import DataDirection, Nexus, ScsiCommand, TaskAttribute
from pyscst.scsi.sense import Asc, Status
from tests.cdbs import TUR, read10, write10
from tests.fakes import FakeTransport, lu_on

BS = 512
NEXUS_A = Nexus.iscsi("iqn.2026-11.org.example:a", 1, "iqn.2026-11.org.pyscst:t", 1)
NEXUS_B = Nexus.iscsi("iqn.2026-11.org.example:b", 2, "iqn.2026-11.org.pyscst:t", 1)


class GatedStore(MemoryStore):
    """A memory store where the next write to a gated LBA waits for the gate
    (one-shot: later writes to that LBA go straight through)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.gates: dict[int, trio.Event] = {}
        self.log: list[tuple[str, int]] = []

    def gate(self, lba: int) -> trio.Event:
        self.gates[lba] = trio.Event()
        return self.gates[lba]

    async def write(self, offset: int, data: object, fua: bool = False) -> None:
        lba = offset // BS
        gate = self.gates.pop(lba, None)
        if gate is not None:
            await gate.wait()
        await super().write(offset, data, fua)  # type: ignore[arg-type]
        self.log.append(("write", lba))

    def write_now(self, offset: int, data: object) -> bool:
        if offset // BS in self.gates:
            return False  # a gated write must take the awaiting path
        return super().write_now(offset, data)  # type: ignore[arg-type]

    async def readinto(self, offset: int, buf: memoryview) -> None:
        await super().readinto(offset, buf)
        self.log.append(("read", offset // BS))


class Recorder(FakeTransport):
    """Records which tags answered, in order, with their status."""

    def __init__(self, data_out: bytes = b"") -> None:
        super().__init__(data_out)
        self.answered: list[tuple[int, Status]] = []
        self.sense_by_tag: dict[int, bytes | None] = {}

    def record(self, cmd, status, sense, data):  # type: ignore[no-untyped-def]
        super().record(cmd, status, sense, data)
        self.answered.append((cmd.tag, status))
        self.sense_by_tag[cmd.tag] = sense


def command(
    transport: Recorder,
    cdb: bytes,
    tag: int,
    attr: TaskAttribute = TaskAttribute.SIMPLE,
    nexus: Nexus = NEXUS_A,
) -> ScsiCommand:
    direction = {0x2A: DataDirection.WRITE, 0x28: DataDirection.READ, 0x9C: DataDirection.WRITE,
                 0x48: DataDirection.WRITE, 0x83: DataDirection.WRITE,
                 0x15: DataDirection.WRITE, 0x1A: DataDirection.READ}.get(
        cdb[0], DataDirection.NONE
    )
    return ScsiCommand(
        cdb=cdb,
        lun=0,
        tag=tag,
        attr=attr,
        expected_length=1 << 20,
        direction=direction,
        nexus=nexus,
        transport=transport,
    )


@asynccontextmanager
async def running_lu() -> AsyncIterator[tuple[LogicalUnit, GatedStore]]:
    store = GatedStore(1 << 20)
    async with lu_on(store, BS) as lu:
        yield lu, store


async def clear_power_on_ua(lu: LogicalUnit, nexus: Nexus = NEXUS_A) -> None:
    t = Recorder()
    lu.submit(command(t, TUR, 900, nexus=nexus), 0, False)
    await wait_answers(t, 1)
    assert t.answered == [(900, Status.CHECK_CONDITION)]


async def wait_answers(t: Recorder, n: int) -> None:
    with trio.fail_after(5):
        while len(t.answered) < n:
            await trio.sleep(0.001)


async def test_ordered_waits_for_older_simple_commands() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder(b"x" * BS)
        gate = store.gate(0)
        lu.submit(command(t, write10(0), 1), 0, False)
        lu.submit(command(t, write10(100), 2, TaskAttribute.ORDERED), 0, False)
        await trio.sleep(0.05)
        assert t.answered == []  # the ORDERED write is held behind the gated SIMPLE one
        gate.set()
        await wait_answers(t, 2)
        assert t.answered == [(1, Status.GOOD), (2, Status.GOOD)]


async def test_simple_after_ordered_waits_but_head_of_queue_overtakes() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder(b"y" * BS)
        gate = store.gate(5)
        lu.submit(command(t, write10(5), 1, TaskAttribute.ORDERED), 0, False)
        lu.submit(command(t, read10(50), 2), 0, False)
        lu.submit(command(t, read10(60), 3, TaskAttribute.HEAD_OF_QUEUE), 0, False)
        await wait_answers(t, 1)
        await trio.sleep(0.05)
        assert t.answered == [(3, Status.GOOD)]  # HoQ ran; SIMPLE waits for ORDERED
        gate.set()
        await wait_answers(t, 3)
        assert [tag for tag, _ in t.answered] == [3, 1, 2]


async def test_overlapping_writes_keep_their_order_disjoint_ones_do_not_wait() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        first = Recorder(b"1" * BS)
        second = Recorder(b"2" * BS)
        disjoint = Recorder(b"3" * BS)
        gate = store.gate(7)
        lu.submit(command(first, write10(7), 1), 0, False)
        lu.submit(command(second, write10(7), 2), 0, False)
        lu.submit(command(disjoint, write10(200), 3), 0, False)
        await wait_answers(disjoint, 1)
        assert first.answered == [] and second.answered == []
        gate.set()
        await wait_answers(first, 1)
        await wait_answers(second, 1)
        # restricted reordering: the later overlapping write lands last
        assert bytes(store.data[7 * BS : 8 * BS]) == b"2" * BS


async def test_abort_task_cancels_a_running_command_without_response() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder(b"z" * BS)
        store.gate(9)  # never opened: the write hangs until aborted
        lu.submit(command(t, write10(9), 41), 0, False)
        await trio.sleep(0.02)
        assert lu.task_count() == 1
        with trio.fail_after(5):
            result = await call(lu.mailbox, AbortTask(NEXUS_A, 41))
        assert result == TmfResponse.COMPLETE
        assert t.answered == []  # an aborted command sends no status
        assert [c.tag for c in t.finished] == [41]  # but its transport state is freed
        assert lu.task_count() == 0
        assert bytes(store.data[9 * BS : 10 * BS]) == bytes(BS)  # old data, not torn
        again = await call(lu.mailbox, AbortTask(NEXUS_A, 41))
        assert again == TmfResponse.TASK_DOES_NOT_EXIST


async def test_abort_task_racing_a_completing_command_gets_one_consistent_answer() -> None:
    """ABORT TASK handled while the command is runnable again (its store just
    completed): either the command answered and the TMF says TASK DOES NOT
    EXIST, or it was aborted silently and the TMF says COMPLETE, never GOOD
    and COMPLETE both (libiscsi AbortTaskSimpleAsync). The TMF reaches the
    LU's mailbox before the store's gate opens, so the LU handles it first."""
    for tag in range(100, 120):
        async with running_lu() as (lu, store):
            await clear_power_on_ua(lu)
            t = Recorder(b"r" * BS)
            gate = store.gate(9)
            lu.submit(command(t, write10(9), tag), 0, False)
            await trio.sleep(0.01)
            reply_send, reply_recv = trio.open_memory_channel[object](1)
            lu.mailbox.send_nowait(Envelope(AbortTask(NEXUS_A, tag), reply_send))
            gate.set()  # (no checkpoint in between)
            with trio.fail_after(5):
                result = await reply_recv.receive()
            if result == TmfResponse.COMPLETE:
                assert t.answered == [], "aborted (COMPLETE) yet answered"
            else:
                assert result == TmfResponse.TASK_DOES_NOT_EXIST
                assert t.answered == [(tag, Status.GOOD)]


async def test_unit_attentions_are_per_nexus_and_exempt_commands_pass() -> None:
    async with running_lu() as (lu, _store):
        t = Recorder()
        inquiry = bytes((0x12, 0, 0, 0, 36, 0))
        lu.submit(command(t, inquiry, 1), 0, False)  # INQUIRY is not failed by the UA
        await wait_answers(t, 1)
        assert t.answered[-1] == (1, Status.GOOD)
        lu.submit(command(t, TUR, 2), 0, False)
        await wait_answers(t, 2)
        assert t.answered[-1] == (2, Status.CHECK_CONDITION)
        sense = t.sense_by_tag[2]
        assert sense is not None and (sense[2] & 0x0F, sense[12], sense[13]) == (6, 0x29, 0x00)
        lu.submit(command(t, TUR, 3), 0, False)  # reported once, then clear
        await wait_answers(t, 3)
        assert t.answered[-1] == (3, Status.GOOD)
        # B is a different nexus: it gets its own power-on UA
        tb = Recorder()
        lu.submit(command(tb, TUR, 4, nexus=NEXUS_B), 0, False)
        await wait_answers(tb, 1)
        assert tb.answered == [(4, Status.CHECK_CONDITION)]
        # a LUN reset from A raises 29/03 for every nexus
        assert await call(lu.mailbox, ResetLogicalUnit(NEXUS_A)) == TmfResponse.COMPLETE
        for rec, nexus, tag in ((t, NEXUS_A, 5), (tb, NEXUS_B, 6)):
            expected = len(rec.answered) + 1  # (may be answered inside submit)
            lu.submit(command(rec, TUR, tag, nexus=nexus), 0, False)
            await wait_answers(rec, expected)
            sense = rec.sense_by_tag[tag]
            assert sense is not None and (sense[12], sense[13]) == (0x29, 0x03)


async def test_clear_task_set_tells_the_other_initiator() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu, NEXUS_A)
        await clear_power_on_ua(lu, NEXUS_B)
        tb = Recorder(b"b" * BS)
        store.gate(11)
        lu.submit(command(tb, write10(11), 7, nexus=NEXUS_B), 0, False)
        await trio.sleep(0.02)
        assert await call(lu.mailbox, ClearTaskSet(NEXUS_A)) == TmfResponse.COMPLETE
        assert tb.answered == []  # TAS=0: no TASK ABORTED status ...
        lu.submit(command(tb, TUR, 8, nexus=NEXUS_B), 0, False)
        await wait_answers(tb, 1)
        sense = tb.sense_by_tag[8]
        # ... but COMMANDS CLEARED BY ANOTHER INITIATOR on B's next command
        assert sense is not None and (sense[12], sense[13]) == (0x2F, 0x00)


async def set_control_page(lu: LogicalUnit, byte: int, mask: int, value: int) -> None:
    """MODE SELECT(6) of the control page with ``byte``'s ``mask`` bits set to ``value``."""
    t = Recorder()
    lu.submit(command(t, bytes((0x1A, 0x08, 0x0A, 0, 255, 0)), 800), 0, False)
    await wait_answers(t, 1)
    data = t.responses[0].data
    assert data is not None
    page = bytearray(data[4 + data[3] :][:12])
    page[0] &= 0x3F
    page[byte] = (page[byte] & ~mask) | value
    params = bytes(4) + bytes(page)
    t = Recorder(params)
    lu.submit(command(t, bytes((0x15, 0x10, 0, 0, len(params), 0)), 801), 0, False)
    await wait_answers(t, 1)
    assert t.answered == [(801, Status.GOOD)]


async def clear_mode_ua(lu: LogicalUnit, nexus: Nexus) -> None:
    """The other nexus' MODE PARAMETERS CHANGED (2A/01), seen and cleared."""
    t = Recorder()
    lu.submit(command(t, TUR, 802, nexus=nexus), 0, False)
    await wait_answers(t, 1)
    sense = t.sense_by_tag[802]
    assert sense is not None and (sense[12], sense[13]) == (0x2A, 0x01)


async def test_unrestricted_qam_lets_overlapping_writes_overtake() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        await set_control_page(lu, 3, 0xF0, 0x10)  # QUEUE ALGORITHM MODIFIER = 1
        first = Recorder(b"1" * BS)
        second = Recorder(b"2" * BS)
        gate = store.gate(7)
        lu.submit(command(first, write10(7), 1), 0, False)
        with trio.fail_after(2):
            while 7 in store.gates:  # the first write holds the (one-shot) gate
                await trio.sleep(0.001)
        lu.submit(command(second, write10(7), 2), 0, False)
        await wait_answers(second, 1)  # did not wait for the overlapping older write
        assert first.answered == []
        gate.set()
        await wait_answers(first, 1)
        assert bytes(store.data[7 * BS : 8 * BS]) == b"1" * BS  # the older one landed last


def write_atomic16(lba: int, n: int = 1) -> bytes:
    return bytes((0x9C, 0)) + lba.to_bytes(8, "big") + bytes(2) + n.to_bytes(2, "big") + bytes(2)


async def test_unrestricted_qam_never_reorders_across_an_atomic_write() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        await set_control_page(lu, 3, 0xF0, 0x10)  # QUEUE ALGORITHM MODIFIER = 1
        atomic = Recorder(b"A" * 8 * BS)
        later = Recorder(b"2" * BS)
        reader = Recorder()
        gate = store.gate(8)
        lu.submit(command(atomic, write_atomic16(8, 8), 1), 0, False)
        with trio.fail_after(2):
            while 8 in store.gates:  # the atomic write holds the (one-shot) gate
                await trio.sleep(0.001)
        lu.submit(command(later, write10(9), 2), 0, False)
        lu.submit(command(reader, read10(15), 3), 0, False)
        lu.submit(command(reader, read10(16), 4), 0, False)  # no overlap: runs
        await wait_answers(reader, 1)
        await trio.sleep(0.02)
        assert reader.answered == [(4, Status.GOOD)]
        assert later.answered == [] and atomic.answered == []
        gate.set()
        await wait_answers(atomic, 1)
        await wait_answers(later, 1)
        await wait_answers(reader, 2)
        assert atomic.answered == [(1, Status.GOOD)]
        # the overlapping write and read waited: the read saw the whole atomic
        # write (or the later write too), never half of it
        assert bytes(store.data[8 * BS : 9 * BS]) == b"A" * BS
        assert bytes(store.data[9 * BS : 10 * BS]) == b"2" * BS
        assert reader.sense_by_tag[3] is None


async def test_sanitize_outlives_abort_and_lun_reset_and_blocks_everything_else() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        await clear_power_on_ua(lu, NEXUS_B)
        params = bytes((0x01, 0, 0, 4)) + b"\x5a" * 4
        cdb = bytes((0x48, 0x01, 0, 0, 0, 0, 0, 0, len(params), 0))  # OVERWRITE, IMMED=0
        issuer = Recorder(params)
        gate = store.gate(0)  # the overwrite's first write waits here
        lu.submit(command(issuer, cdb, 1), 0, False)
        with trio.fail_after(2):
            while 0 in store.gates:
                await trio.sleep(0.001)
        other = Recorder()
        for tag, cdb2 in ((2, TUR), (3, read10(5)), (4, bytes((0x1B, 0, 0, 0, 1, 0)))):
            lu.submit(command(other, cdb2, tag, nexus=NEXUS_B), 0, False)
        await wait_answers(other, 3)  # at once: not after the older SANITIZE
        for tag in (2, 3, 4):
            sense = other.sense_by_tag[tag]
            assert sense is not None and (sense[2], sense[12], sense[13]) == (2, 0x04, 0x1B)
        # neither ABORT TASK of the SANITIZE nor a LU reset stops the operation
        assert await call(lu.mailbox, AbortTask(NEXUS_A, 1)) == TmfResponse.COMPLETE
        assert await call(lu.mailbox, ResetLogicalUnit(NEXUS_A)) == TmfResponse.COMPLETE
        assert issuer.answered == []  # the aborted command never answers
        probe = Recorder()
        # REQUEST SENSE: first the reset's UA (29/03), then the sanitize
        lu.submit(command(probe, bytes((0x03, 0, 0, 0, 18, 0)), 5), 0, False)
        await wait_answers(probe, 1)
        lu.submit(command(probe, bytes((0x03, 0, 0, 0, 18, 0)), 7), 0, False)
        await wait_answers(probe, 2)
        data = probe.responses[1].data
        assert data is not None and (data[2], data[12], data[13]) == (2, 0x04, 0x1B)
        assert data[15] == 0x80  # SKSV: PROGRESS INDICATION follows
        gate.set()
        with trio.fail_after(5):
            while True:
                t = Recorder()
                lu.submit(command(t, TUR, 6), 0, False)
                await wait_answers(t, 1)
                if t.answered == [(6, Status.GOOD)]:
                    break
                await trio.sleep(0.01)
        assert bytes(store.data[5 * BS : 6 * BS]) == b"\x5a" * BS


async def test_abort_task_stops_an_extended_copy_between_chunks(monkeypatch: object) -> None:
    import struct

    from pyscst.devices import disk_xcopy

    monkeypatch.setattr(disk_xcopy, "COPY_CHUNK", 8 * BS)  # type: ignore[attr-defined]
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        store.data[0 : 64 * BS] = b"c" * 64 * BS
        device = lu.current_device()
        assert device is not None
        desc = bytearray(32)
        desc[0] = 0xE4
        desc[29:32] = BS.to_bytes(3, "big")
        seg = struct.pack(">BBHHH2xHQQ", 0x02, 0, 0x18, 0, 0, 64, 0, 100)
        params = struct.pack(">BBHIII", 1, 0, 32, 0, len(seg), 0) + bytes(desc) + seg
        cdb = bytes((0x83, 0)) + bytes(8) + len(params).to_bytes(4, "big") + bytes(2)
        t = Recorder(params)
        cmd = command(t, cdb, 1)
        cmd.copy_targets = lambda designation: (device, False)
        gate = store.gate(116)  # the third chunk's write waits here
        lu.submit(cmd, 0, False)
        with trio.fail_after(2):
            while 116 in store.gates:
                await trio.sleep(0.001)
        assert await call(lu.mailbox, AbortTask(NEXUS_A, 1)) == TmfResponse.COMPLETE
        gate.set()
        await trio.sleep(0.02)
        assert t.answered == []
        assert bytes(store.data[100 * BS : 116 * BS]) == b"c" * 16 * BS  # two chunks
        assert bytes(store.data[116 * BS : 164 * BS]) == bytes(48 * BS)  # then stopped


async def test_aborting_an_ordered_task_releases_the_commands_behind_it() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder(b"o" * BS)
        store.gate(20)  # never opened
        lu.submit(command(t, write10(20), 1), 0, False)
        lu.submit(command(t, read10(21), 2, TaskAttribute.ORDERED), 0, False)
        lu.submit(command(t, read10(22), 3), 0, False)
        await trio.sleep(0.05)
        assert t.answered == []
        assert await call(lu.mailbox, AbortTask(NEXUS_A, 2)) == TmfResponse.COMPLETE
        await wait_answers(t, 1)
        assert t.answered == [(3, Status.GOOD)]  # the SIMPLE read no longer waits
        assert await call(lu.mailbox, AbortTask(NEXUS_A, 1)) == TmfResponse.COMPLETE
        assert t.answered == [(3, Status.GOOD)]  # the aborted ones never answered


async def test_lun_reset_with_tas_answers_task_aborted_to_other_nexuses_only() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu, NEXUS_A)
        await clear_power_on_ua(lu, NEXUS_B)
        await set_control_page(lu, 5, 0x40, 0x40)  # TAS = 1
        await clear_mode_ua(lu, NEXUS_B)
        ta, tb = Recorder(b"a" * BS), Recorder(b"b" * BS)
        store.gate(30)
        store.gate(31)
        lu.submit(command(ta, write10(30), 1), 0, False)
        lu.submit(command(tb, write10(31), 2, nexus=NEXUS_B), 0, False)
        await trio.sleep(0.02)
        assert await call(lu.mailbox, ResetLogicalUnit(NEXUS_A)) == TmfResponse.COMPLETE
        assert ta.answered == []  # the issuer's own task: silent
        assert tb.answered == [(2, Status.TASK_ABORTED)]
        for rec, nexus, tag in ((ta, NEXUS_A, 3), (tb, NEXUS_B, 4)):
            expected = len(rec.answered) + 1
            lu.submit(command(rec, TUR, tag, nexus=nexus), 0, False)
            await wait_answers(rec, expected)
            sense = rec.sense_by_tag[tag]
            assert sense is not None and (sense[12], sense[13]) == (0x29, 0x03)


async def test_resets_and_nexus_loss_reach_the_device_handler() -> None:
    """PREVENT ALLOW MEDIUM REMOVAL ends with a LUN reset or the preventing
    nexus' loss; a cold reset (power on) also restores default mode pages."""
    device = DiskDevice("r0", GatedStore(1 << 20), block_size=BS, removable=True)
    lu = LogicalUnit("r0", lambda: device, CORE_TABLE)
    prevent = bytes((0x1E, 0, 0, 0, 1, 0))
    load = bytes((0x1B, 0, 0, 0, 0x03, 0))  # LOEJ=1 START=1: refused while prevented

    async def answer(cdb: bytes, nexus: Nexus, tag: int) -> tuple[int, int] | None:
        t = Recorder()
        lu.submit(command(t, cdb, tag, nexus=nexus), 0, False)
        await wait_answers(t, 1)
        sense = t.sense_by_tag[tag]
        return None if sense is None else (sense[12], sense[13])

    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        await clear_power_on_ua(lu, NEXUS_A)
        await clear_power_on_ua(lu, NEXUS_B)
        assert await answer(prevent, NEXUS_A, 1) is None
        assert await answer(load, NEXUS_B, 2) == (0x53, 0x02)  # MEDIUM REMOVAL PREVENTED
        assert await call(lu.mailbox, ResetLogicalUnit(NEXUS_B)) == TmfResponse.COMPLETE
        assert await answer(load, NEXUS_B, 3) == (0x29, 0x03)
        assert await answer(load, NEXUS_B, 4) is None  # the reset ended the prevention
        assert await answer(TUR, NEXUS_A, 5) == (0x29, 0x03)
        assert await answer(prevent, NEXUS_A, 6) is None
        await lu.mailbox.send(NexusLoss(NEXUS_A))
        await trio.sleep(0.01)
        assert await answer(load, NEXUS_B, 7) is None  # A's prevention went with A
        await clear_power_on_ua(lu, NEXUS_A)  # A is a new nexus again
        await set_control_page(lu, 5, 0x40, 0x40)  # TAS=1
        assert device.tas
        await call(lu.mailbox, ResetLogicalUnit(NEXUS_B, Asc.POWER_ON_OCCURRED))
        assert await answer(TUR, NEXUS_B, 8) == (0x29, 0x01)
        assert not device.tas  # power-on defaults
        nursery.cancel_scope.cancel()


async def test_statistics_count_each_command_once_and_outlive_the_nexus() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu, NEXUS_A)  # 1 command, an error (the UA)
        await clear_power_on_ua(lu, NEXUS_B)
        ta, tb = Recorder(b"a" * BS), Recorder(b"b" * BS)
        lu.submit(command(ta, write10(3), 1), 0, False)
        lu.submit(command(tb, read10(3), 2, nexus=NEXUS_B), 0, False)
        await wait_answers(ta, 1)
        await wait_answers(tb, 1)
        a = lu.nexus_stats(NEXUS_A)
        assert a is not None and (a.commands, a.errors, a.bytes_written) == (2, 1, BS)
        total = lu.stats()
        assert (total.commands, total.errors, total.bytes_read, total.bytes_written) == (
            4, 2, BS, BS,
        )  # fmt: skip
        # A held a write in flight when it went away: aborted, a command but not
        # an error (nothing was answered), and everything A did still counts in
        # the LU's totals
        store.gate(9)
        lu.submit(command(ta, write10(9), 3), 0, False)
        await trio.sleep(0.01)
        await lu.mailbox.send(NexusLoss(NEXUS_A))
        with trio.fail_after(5):
            while lu.task_count():
                await trio.sleep(0.001)
        assert lu.nexus_stats(NEXUS_A) is None
        total = lu.stats()
        assert (total.commands, total.errors, total.bytes_written) == (5, 2, BS)
        assert sum(total.histogram) == 5


async def test_the_last_context_is_reused_only_for_its_nexus_and_mapping() -> None:
    """submit reuses the previous command's context (the hot path) only when
    nexus and mapping match: a read-only mapping, another nexus, or the same
    nexus after it went away (fresh state: a new power-on UA) each get their own."""
    async with running_lu() as (lu, _store):
        await clear_power_on_ua(lu, NEXUS_A)
        t = Recorder(b"w" * BS)
        lu.submit(command(t, write10(1), 1), 0, False)
        lu.submit(command(t, write10(1), 2), 0, True)  # the read-only mapping of it
        lu.submit(command(t, write10(1), 3), 0, False)
        await wait_answers(t, 3)
        assert t.answered == [(1, Status.GOOD), (2, Status.CHECK_CONDITION), (3, Status.GOOD)]
        sense = t.sense_by_tag[2]
        assert sense is not None and (sense[2] & 0x0F, sense[12]) == (0x07, 0x27)
        tb = Recorder()
        lu.submit(command(tb, TUR, 4, nexus=NEXUS_B), 0, False)  # B: its own UA
        await wait_answers(tb, 1)
        assert tb.answered == [(4, Status.CHECK_CONDITION)]
        lu.submit(command(t, TUR, 6), 0, False)  # (A's context is the last one again)
        await wait_answers(t, 4)
        assert t.answered[-1] == (6, Status.GOOD)
        await lu.mailbox.send(NexusLoss(NEXUS_A))
        with trio.fail_after(5):
            while lu.nexus_stats(NEXUS_A) is not None:
                await trio.sleep(0.001)
        lu.submit(command(t, TUR, 5), 0, False)  # A again, after it went: new state
        await wait_answers(t, 5)
        assert t.answered[-1] == (5, Status.CHECK_CONDITION)
        sense = t.sense_by_tag[5]
        assert sense is not None and (sense[12], sense[13]) == (0x29, 0x00)
        a = lu.nexus_stats(NEXUS_A)
        assert a is not None and a.commands == 1  # (its old counts went to the LU's)
