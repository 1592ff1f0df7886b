"""UNIT ATTENTION queues: priorities, resets, duplicates, bounds; and the LU raising them.

The queue is pure; the LU-level tests drive a real LogicalUnit with a real SBC
DiskDevice and check which nexus sees which condition after the events the
issue names: a new nexus, a LUN reset, a capacity change, MODE SELECT by
another nexus, and QUERY ASYNCHRONOUS EVENT's view of the queue.
"""

from __future__ import annotations

import trio

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.messages import RaiseUnitAttention, ResetLogicalUnit, TmfResponse, call
from pyscst.actors.unit_attention import MAX_QUEUED, UnitAttentionQueue
from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.command import DataDirection, Nexus, ScsiCommand, TaskAttribute
from pyscst.scsi.sense import Asc, SenseKey, Status
from tests.fakes import FakeTransport, Response

NEXUS_A = Nexus.iscsi("iqn.2026-11.org.example:a", 1, "iqn.2026-11.org.pyscst:t", 1)
NEXUS_B = Nexus.iscsi("iqn.2026-11.org.example:b", 2, "iqn.2026-11.org.pyscst:t", 1)
TUR = bytes(6)


def codes(queue: UnitAttentionQueue) -> list[tuple[int, int]]:
    return [(s.asc, s.ascq) for s in queue.pending()]


# -- the queue ----------------------------------------------------------------------------


def test_higher_priority_conditions_are_reported_first() -> None:
    q = UnitAttentionQueue()
    q.add(Asc.CAPACITY_DATA_HAS_CHANGED)
    q.add(Asc.MODE_PARAMETERS_CHANGED)
    q.add(Asc.REGISTRATIONS_PREEMPTED)
    q.add(Asc.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR)
    # lost commands and lost reservations first (in arrival order), then the rest
    assert codes(q) == [(0x2A, 0x05), (0x2F, 0x00), (0x2A, 0x09), (0x2A, 0x01)]
    first = q.pop()
    assert first is not None and first.key == SenseKey.UNIT_ATTENTION
    assert (first.asc, first.ascq) == (0x2A, 0x05)


def test_a_reset_clears_older_conditions_but_later_ones_queue_behind_it() -> None:
    q = UnitAttentionQueue()
    q.add(Asc.MODE_PARAMETERS_CHANGED)
    q.add(Asc.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR)
    q.add(Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED)
    assert codes(q) == [(0x29, 0x03)]
    q.add(Asc.CAPACITY_DATA_HAS_CHANGED)
    q.add(Asc.I_T_NEXUS_LOSS_OCCURRED)  # a newer reset supersedes the older one too
    assert codes(q) == [(0x29, 0x07)]
    q.add(Asc.REPORTED_LUNS_DATA_HAS_CHANGED)
    assert codes(q) == [(0x29, 0x07), (0x3F, 0x0E)]


def test_duplicates_are_dropped_and_the_queue_is_bounded() -> None:
    q = UnitAttentionQueue()
    q.add(Asc.MODE_PARAMETERS_CHANGED)
    q.add(Asc.MODE_PARAMETERS_CHANGED)
    assert len(q) == 1
    q.clear()
    q.add(Asc.REGISTRATIONS_PREEMPTED)
    low = [a for a in Asc if a.code not in (0x29, 0x2F, 0x2A)][: MAX_QUEUED + 4]
    for asc in low:
        q.add(asc)
    assert len(q) == MAX_QUEUED
    assert codes(q)[0] == (0x2A, 0x05)  # the important one survived the storm
    q.add(Asc.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR)  # still gets in when full
    assert codes(q)[:2] == [(0x2A, 0x05), (0x2F, 0x00)] and len(q) == MAX_QUEUED
    q.add(Asc.POWER_ON_OCCURRED)
    assert codes(q) == [(0x29, 0x01)]


# -- raised by the logical unit ---------------------------------------------------------------


async def run_cmd(lu: LogicalUnit, nexus: Nexus, cdb: bytes, data_out: bytes = b"") -> Response:
    """One command through the LU; its response."""
    transport = FakeTransport(data_out)
    direction = DataDirection.WRITE if data_out else DataDirection.READ
    cmd = ScsiCommand(cdb=cdb, lun=0, tag=1, attr=TaskAttribute.SIMPLE, expected_length=255,
                      direction=direction, nexus=nexus, transport=transport)  # fmt: skip
    lu.submit(cmd, 0, False)
    with trio.fail_after(2):
        while not transport.responses:
            await trio.sleep(0.001)
    return transport.responses[0]


async def ua(lu: LogicalUnit, nexus: Nexus) -> tuple[int, int] | None:
    """The condition the next command of ``nexus`` reports (None: GOOD)."""
    t = await run_cmd(lu, nexus, TUR)
    if t.status == Status.GOOD:
        return None
    assert t.status == Status.CHECK_CONDITION and t.sense is not None
    assert t.sense[2] & 0x0F == SenseKey.UNIT_ATTENTION
    return t.sense[12], t.sense[13]


async def test_lu_raises_unit_attentions_per_nexus() -> None:
    device = DiskDevice("d0", MemoryStore(1 << 20))
    lu = LogicalUnit("d0", lambda: device, CORE_TABLE)
    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        # a new nexus starts with power-on, reported once
        assert await ua(lu, NEXUS_A) == (0x29, 0x00)
        assert await ua(lu, NEXUS_A) is None
        assert await ua(lu, NEXUS_B) == (0x29, 0x00)
        assert not lu.has_unit_attention(NEXUS_A)
        # capacity change: everyone
        await lu.mailbox.send(RaiseUnitAttention(Asc.CAPACITY_DATA_HAS_CHANGED))
        await trio.sleep(0.01)
        assert lu.has_unit_attention(NEXUS_A)
        assert await ua(lu, NEXUS_A) == (0x2A, 0x09)
        assert await ua(lu, NEXUS_B) == (0x2A, 0x09)
        # MODE SELECT that changes a page, by A: only B hears of it
        data = (await run_cmd(lu, NEXUS_A, bytes((0x1A, 0x08, 0x0A, 0, 255, 0)))).data
        assert data is not None
        page = bytearray(data[4 + data[3] :][:12])
        page[0] &= 0x3F
        page[5] ^= 0x40  # flip TAS: a real change
        params = bytes(4) + bytes(page)
        t = await run_cmd(lu, NEXUS_A, bytes((0x15, 0x10, 0, 0, len(params), 0)), params)
        assert t.status == Status.GOOD
        assert await ua(lu, NEXUS_A) is None
        assert await ua(lu, NEXUS_B) == (0x2A, 0x01)
        # LUN reset: everyone, 29/03; it outranks what was queued before it
        lu.unit_attention(Asc.INQUIRY_DATA_HAS_CHANGED)
        assert await call(lu.mailbox, ResetLogicalUnit(NEXUS_A)) == TmfResponse.COMPLETE
        assert await ua(lu, NEXUS_A) == (0x29, 0x03)
        assert await ua(lu, NEXUS_A) is None
        assert await ua(lu, NEXUS_B) == (0x29, 0x03)
        # one nexus only
        lu.unit_attention(Asc.REPORTED_LUNS_DATA_HAS_CHANGED, NEXUS_B)
        assert await ua(lu, NEXUS_A) is None
        assert await ua(lu, NEXUS_B) == (0x3F, 0x0E)
        nursery.cancel_scope.cancel()


async def test_inquiry_passes_a_unit_attention_and_request_sense_reports_it() -> None:
    device = DiskDevice("d0", MemoryStore(1 << 20))
    lu = LogicalUnit("d0", lambda: device, CORE_TABLE)
    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        inquiry = await run_cmd(lu, NEXUS_A, bytes((0x12, 0, 0, 0, 36, 0)))
        assert inquiry.status == Status.GOOD  # INQUIRY neither fails nor clears it
        assert lu.has_unit_attention(NEXUS_A)
        sense = await run_cmd(lu, NEXUS_A, bytes((0x03, 0, 0, 0, 18, 0)))  # REQUEST SENSE
        assert sense.status == Status.GOOD and sense.data is not None
        assert (sense.data[2] & 0x0F, sense.data[12], sense.data[13]) == (0x6, 0x29, 0x00)
        assert not lu.has_unit_attention(NEXUS_A)  # reported, so cleared
        assert await ua(lu, NEXUS_A) is None
        nursery.cancel_scope.cancel()


def test_queued_is_truthy_exactly_while_a_unit_attention_waits() -> None:
    """``queued`` (what the command path tests instead of calling __bool__)
    follows every change of the queue: add, pop, clear, a reset's replacement."""
    q = UnitAttentionQueue()
    assert not q.queued and not q
    q.add(Asc.MODE_PARAMETERS_CHANGED)
    q.add(Asc.REPORTED_LUNS_DATA_HAS_CHANGED)
    assert q.queued and q
    q.add(Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET)  # (rank 0: replaces the rest)
    assert len(q.queued) == len(q) == 1
    q.pop()
    assert not q.queued and not q
    q.add(Asc.MODE_PARAMETERS_CHANGED)
    q.clear()
    assert not q.queued and not q
