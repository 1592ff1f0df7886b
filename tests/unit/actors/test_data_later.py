"""Writes whose data-out comes later (R2T), fetched without a task (Transport.data_later).

A write whose fast handler finds its data incomplete is kept in the task set
while the transport solicits the rest; when it has arrived the LU runs the
fast handler again from the transport's completion, so no Trio task waits
for the Data-Out. These tests hold "the Data-Out is still coming" as a state
of a fake transport and check that such a write behaves as one with a task:
it is a task (QUERY TASK, ordering), it is answered with GOOD and its data
written once the data is in, ABORT TASK and TAS end it by cancellation, a
dropped connection ends it silently and a broken Data-Out sequence with its
sense.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from pyscst.actors.lun import LogicalUnit
from pyscst.actors.messages import AbortTask, ClearTaskSet, QueryTask, TmfResponse, call
from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.cdb import Pending
from pyscst.scsi.command import ScsiCommand, TransportGone
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status
from tests.cdbs import read10, write10
from tests.fakes import lu_on
from tests.unit.actors.test_task_set import (
    NEXUS_A,
    NEXUS_B,
    Recorder,
    clear_power_on_ua,
    command,
    set_control_page,
    wait_answers,
)

BS = 512


class LaterTransport(Recorder):
    """Data-out that is not there until the test says it arrived."""

    def __init__(self, data_out: bytes) -> None:
        super().__init__(data_out)
        self.arrived = False
        self.later: list[Pending] = []
        self.cancels = 0
        self.awaited = 0

    def data_now(self, cmd: ScsiCommand, length: int) -> memoryview | None:
        if not self.arrived:
            return None
        return super().data_now(cmd, length)

    def data_later(self, cmd: ScsiCommand) -> Pending | None:
        pending = Pending()
        pending.on_cancel(self._cancel)
        self.later.append(pending)
        return pending

    def _cancel(self) -> None:
        # as the iSCSI connection does: finished later, never inside cancel()
        self.cancels += 1
        pending = self.later.pop()
        trio.lowlevel.current_trio_token().run_sync_soon(pending.finish, TransportGone())

    async def receive_data(self, cmd: ScsiCommand, length: int) -> memoryview:
        self.awaited += 1
        raise AssertionError("a task awaited the data-out")

    def arrive(self) -> None:
        self.arrived = True
        self.later.pop().finish(None)


@asynccontextmanager
async def disk_lu() -> AsyncIterator[tuple[LogicalUnit, MemoryStore]]:
    store = MemoryStore(1 << 20)
    async with lu_on(store, BS) as lu:
        await clear_power_on_ua(lu)
        yield lu, store


async def test_the_write_is_answered_when_its_data_arrives_without_a_task() -> None:
    async with disk_lu() as (lu, store):
        t = LaterTransport(b"w" * 2 * BS)
        lu.submit(command(t, write10(8, 2), 1), 0, False)
        assert len(t.later) == 1 and lu.task_count() == 1  # waiting, in the task set
        assert await call(lu.mailbox, QueryTask(NEXUS_A, 1)) == TmfResponse.SUCCEEDED
        # a younger overlapping read waits for it (restricted reordering)
        lu.submit(command(t, read10(8, 1), 2), 0, False)
        await trio.sleep(0.01)
        assert t.answered == []
        t.arrive()
        assert t.answered[0] == (1, Status.GOOD)  # answered from the completion itself
        assert bytes(store.data[8 * BS : 10 * BS]) == b"w" * 2 * BS
        await wait_answers(t, 2)
        assert t.answered[1] == (2, Status.GOOD) and t.responses[1].data == b"w" * BS
        assert t.awaited == 0 and lu.task_count() == 0
        assert lu.stats().bytes_written == 2 * BS


async def test_abort_task_cancels_the_wait_and_nothing_is_written_or_answered() -> None:
    async with disk_lu() as (lu, store):
        t = LaterTransport(b"w" * BS)
        lu.submit(command(t, write10(0, 1), 3), 0, False)
        with trio.fail_after(5):
            assert await call(lu.mailbox, AbortTask(NEXUS_A, 3)) == TmfResponse.COMPLETE
        assert t.cancels == 1 and t.answered == [] and lu.task_count() == 0
        assert [c.tag for c in t.finished] == [3]
        assert bytes(store.data[:BS]) == bytes(BS)
        assert await call(lu.mailbox, QueryTask(NEXUS_A, 3)) == TmfResponse.COMPLETE


async def test_another_initiators_abort_with_tas_answers_task_aborted() -> None:
    async with disk_lu() as (lu, _store):
        await clear_power_on_ua(lu, NEXUS_B)
        await set_control_page(lu, 5, 0x40, 0x40)  # TAS = 1
        t = LaterTransport(b"w" * BS)
        lu.submit(command(t, write10(0, 1), 4), 0, False)
        with trio.fail_after(5):
            assert await call(lu.mailbox, ClearTaskSet(NEXUS_B)) == TmfResponse.COMPLETE
        assert t.answered == [(4, Status.TASK_ABORTED)]


async def test_a_dropped_connection_ends_it_silently_and_counts_no_error() -> None:
    async with disk_lu() as (lu, store):
        t = LaterTransport(b"w" * BS)
        before = lu.stats()
        lu.submit(command(t, write10(0, 1), 5), 0, False)
        t.later.pop().finish(TransportGone())
        assert t.answered == [] and lu.task_count() == 0
        assert [c.tag for c in t.finished] == [5]
        after = lu.stats()
        assert after.errors == before.errors and after.bytes_written == 0
        assert bytes(store.data[:BS]) == bytes(BS)


async def test_a_broken_data_out_sequence_is_answered_with_its_sense() -> None:
    async with disk_lu() as (lu, store):
        t = LaterTransport(b"w" * BS)
        lu.submit(command(t, write10(0, 1), 6), 0, False)
        t.later.pop().finish(ScsiError.check(SenseKey.ABORTED_COMMAND, Asc.DATA_PHASE_ERROR))
        assert t.answered == [(6, Status.CHECK_CONDITION)]
        sense = t.sense_by_tag[6]
        assert sense is not None and sense[2] & 0x0F == SenseKey.ABORTED_COMMAND
        assert (sense[12], sense[13]) == Asc.DATA_PHASE_ERROR.value
        assert bytes(store.data[:BS]) == bytes(BS) and lu.task_count() == 0


def _stop(device: DiskDevice) -> None:
    device.started = False  # START STOP UNIT, from another initiator


def _sanitize(device: DiskDevice) -> None:
    device.medium.busy = Sense.of(SenseKey.NOT_READY, Asc.LUN_NOT_READY_SANITIZE_IN_PROGRESS)


@pytest.mark.parametrize("change", [_stop, _sanitize], ids=["stopped", "sanitizing"])
async def test_the_unit_checks_readiness_again_when_the_data_arrives(
    change: Callable[[DiskDevice], None],
) -> None:
    """Stopped, or busy with a sanitize, while its data came: NOT READY, as on
    the task path (the same execution-time check), and the write does not land."""
    async with disk_lu() as (lu, store):
        t = LaterTransport(b"w" * BS)
        lu.submit(command(t, write10(0, 1), 7), 0, False)
        device = lu.current_device()
        assert isinstance(device, DiskDevice)
        change(device)
        t.arrive()
        assert t.answered == [(7, Status.CHECK_CONDITION)]
        sense = t.sense_by_tag[7]
        assert sense is not None and sense[2] & 0x0F == SenseKey.NOT_READY
        assert bytes(store.data[:BS]) == bytes(BS)
