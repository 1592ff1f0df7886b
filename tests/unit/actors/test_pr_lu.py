"""PREEMPT AND ABORT inside a real LogicalUnit: preempted nexuses' tasks are cancelled.

A write from the preempted initiator is held at a gate in the store, so "it
is still running when the PREEMPT AND ABORT arrives" is a state the test
controls. The abort is a cancellation: the write never answers (TAS=0), the
PROUT completes only after it is gone, and the preempted nexus learns why
from its UNIT ATTENTIONs.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from pyscst.actors.lun import LogicalUnit
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.command import DataDirection, Nexus, ScsiCommand, TaskAttribute
from pyscst.scsi.sense import Status
from tests.fakes import FakeTransport, lu_on

BS = 512
TARGET = "iqn.2026-11.org.pyscst:t"
A = Nexus.iscsi("iqn.2026-11.org.example:a", 1, TARGET, 1)
B = Nexus.iscsi("iqn.2026-11.org.example:b", 2, TARGET, 1)
EA = 0x3


class GatedStore(MemoryStore):
    """Writes to LBA 7 wait for ``gate``."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.gate = trio.Event()
        self.entered = trio.Event()

    async def write(self, offset: int, data: object, fua: bool = False) -> None:
        if offset // BS == 7:
            self.entered.set()
            await self.gate.wait()
        await super().write(offset, data, fua)  # type: ignore[arg-type]

    def write_now(self, offset: int, data: object) -> bool:
        # the gated LBA must take the awaiting path, like a write that would block
        return offset // BS != 7 and super().write_now(offset, data)  # type: ignore[arg-type]


@asynccontextmanager
async def running_lu() -> AsyncIterator[tuple[LogicalUnit, GatedStore]]:
    store = GatedStore(1 << 20)
    async with lu_on(store, BS) as lu:
        yield lu, store


async def run(lu: LogicalUnit, nexus: Nexus, cdb: bytes, data: bytes = b"") -> FakeTransport:
    """Submit one command and wait for its answer (or its end without one)."""
    t = FakeTransport(data)
    submit(lu, t, nexus, cdb, tag=len(cdb) + cdb[0])
    with trio.fail_after(5):
        while not t.finished:
            await trio.sleep(0.001)
    return t


def submit(lu: LogicalUnit, t: FakeTransport, nexus: Nexus, cdb: bytes, tag: int) -> None:
    direction = DataDirection.WRITE if t.data_out else DataDirection.READ
    cmd = ScsiCommand(
        cdb=cdb, lun=0, tag=tag, attr=TaskAttribute.SIMPLE, expected_length=1 << 16,
        direction=direction, nexus=nexus, transport=t,
    )  # fmt: skip
    lu.submit(cmd, 0, False)


def prout(sa: int, key: int, sark: int, ptype: int = 0) -> tuple[bytes, bytes]:
    data = struct.pack(">QQ8x", key, sark)
    return struct.pack(">BBBHIB", 0x5F, sa, ptype, 0, len(data), 0), data


def sense_of(t: FakeTransport) -> tuple[int, int]:
    (r,) = t.responses
    assert r.status == Status.CHECK_CONDITION and r.sense is not None
    return r.sense[12], r.sense[13]


async def test_preempt_and_abort_cancels_the_preempted_nexus_tasks() -> None:
    async with running_lu() as (lu, store):
        for nexus, key in ((A, 0xA), (B, 0xB)):
            await run(lu, nexus, bytes(6))  # POWER ON UA
            t = await run(lu, nexus, *prout(0x00, 0, key))
            assert [r.status for r in t.responses] == [Status.GOOD]
        await run(lu, A, *prout(0x01, 0xA, 0, EA))
        held = FakeTransport(b"\x11" * BS)
        submit(lu, held, A, struct.pack(">BBIBHB", 0x2A, 0, 7, 0, 1, 0), tag=99)
        await store.entered.wait()
        t = await run(lu, B, *prout(0x05, 0xB, 0xA, EA))  # PREEMPT AND ABORT
        assert [r.status for r in t.responses] == [Status.GOOD]
        assert held.finished and held.responses == []  # aborted, silently (TAS=0)
        assert lu.task_count() == 0
        assert sense_of(await run(lu, A, bytes(6))) == (0x2A, 0x05)  # REGISTRATIONS PREEMPTED
        assert sense_of(await run(lu, A, bytes(6))) == (0x2F, 0x00)  # COMMANDS CLEARED
        t = await run(lu, A, bytes(6))
        assert [r.status for r in t.responses] == [Status.GOOD]
        read = struct.pack(">BBIBHB", 0x28, 0, 7, 0, 1, 0)
        t = await run(lu, A, read)
        assert [r.status for r in t.responses] == [Status.RESERVATION_CONFLICT]
        t = await run(lu, B, read)
        assert t.responses[0].data == bytes(BS)  # the aborted write never landed
