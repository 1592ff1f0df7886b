"""Commands whose read is queued on a ring and answered without a task (scsi.cdb.Pending).

A store with ``start_read`` (FileStore and DirectStore over io_uring) lets a
cache-missing READ queue its I/O from the fast path; the LU keeps the command
in its task set and answers it from the completion. These tests use a store
whose queued reads the test completes by hand, so "the read is in flight" is
a state the test holds, and check that such a command behaves as one that has
a task: it answers with its data or the right sense, an abort cancels its I/O
and is answered only once the I/O has ended (never while the kernel could
still write into its buffer), TAS and device loss answer as for any task, and
a completion that says "redo it" runs the ordinary handler.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from pyscst.actors.lun import LogicalUnit
from pyscst.actors.messages import AbortTask, Envelope, ResetLogicalUnit, TmfResponse, call
from pyscst.devices.stores import MemoryStore, ReadResult, WriteResult
from pyscst.scsi.command import Buffer
from pyscst.scsi.sense import Asc, SenseKey, Status
from tests.cdbs import read10, write10
from tests.fakes import lu_on
from tests.unit.actors.test_task_set import (
    NEXUS_A,
    NEXUS_B,
    Recorder,
    clear_mode_ua,
    clear_power_on_ua,
    command,
    set_control_page,
    wait_answers,
)

BS = 512


class QueuedStore(MemoryStore):
    """Every read misses the "cache" and is queued; the test completes it."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.queued: list[tuple[int, bytearray | memoryview, Callable[[ReadResult], object]]] = []
        self.cancels = 0
        self.writes: list[tuple[int, bytes, bool, Callable[[WriteResult], object]]] = []
        self.awaited_reads = 0
        self.data[:] = bytes(range(256)) * (size // 256)

    def read_now(self, offset: int, buf: memoryview) -> bool:
        return False

    def start_read(
        self, offset: int, buf: bytearray | memoryview, done: Callable[[ReadResult], object]
    ) -> Callable[[], object]:
        self.queued.append((offset, buf, done))
        return self._cancel

    def _cancel(self) -> None:
        self.cancels += 1

    def start_write(
        self, offset: int, data: Buffer, fua: bool, done: Callable[[WriteResult], object]
    ) -> Callable[[], object]:
        self.writes.append((offset, bytes(data), fua, done))
        return self._cancel

    def write_now(self, offset: int, data: Buffer) -> bool:
        return False  # (every write is queued)

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        view = memoryview(data)
        self.data[offset : offset + len(view)] = view

    def complete_write(self, result: WriteResult = True) -> None:
        offset, data, _fua, done = self.writes.pop(0)
        if result is True:
            self.data[offset : offset + len(data)] = data
        done(result)

    async def readinto(self, offset: int, buf: memoryview) -> None:
        self.awaited_reads += 1
        await trio.lowlevel.checkpoint()
        buf[:] = self.data[offset : offset + len(buf)]

    def complete(self, i: int = 0, result: object = "data") -> None:
        offset, buf, done = self.queued.pop(i)
        if result == "data":
            buf[:] = self.data[offset : offset + len(buf)]
            done(buf)
        else:
            done(result)  # type: ignore[arg-type]


@asynccontextmanager
async def queued_lu() -> AsyncIterator[tuple[LogicalUnit, QueuedStore]]:
    store = QueuedStore(1 << 20)
    async with lu_on(store, BS) as lu:
        yield lu, store


async def queued(store: QueuedStore, n: int) -> None:
    with trio.fail_after(5):
        while len(store.queued) < n:
            await trio.sleep(0.001)


async def abort_then(
    lu: LogicalUnit, store: QueuedStore, tag: int, complete: Callable[[], object]
) -> list[object]:
    """ABORT TASK ``tag`` while its I/O is queued: the I/O is cancelled, the
    TMF stays unanswered while the I/O could still touch the buffer, and is
    answered once ``complete`` ends it. Returns the TMF's answer."""
    reply: list[object] = []

    async def abort() -> None:
        reply.append(await call(lu.mailbox, AbortTask(NEXUS_A, tag)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(abort)
        with trio.fail_after(5):
            while store.cancels == 0:
                await trio.sleep(0.001)
        await trio.sleep(0.02)
        assert reply == [] and lu.task_count() == 1
        complete()
    return reply


async def test_a_queued_read_is_answered_from_its_completion() -> None:
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(8, 2), 1), 0, False)
        assert len(store.queued) == 1  # queued inside submit: no task spawned
        assert lu.task_count() == 1 and t.answered == []
        await trio.sleep(0.01)
        assert t.answered == []  # nothing answers before the I/O ends
        store.complete()
        assert t.answered == [(1, Status.GOOD)]  # answered at once, from the completion
        assert t.responses[-1].data == bytes(store.data[8 * BS : 10 * BS])
        assert lu.task_count() == 0 and [c.tag for c in t.finished] == [1]
        assert store.awaited_reads == 0


async def test_an_error_completion_is_the_error_sense() -> None:
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(4, 1), 2), 0, False)
        store.complete(result=OSError(errno.EIO, "media"))
        assert t.answered == [(2, Status.CHECK_CONDITION)]
        sense = t.sense_by_tag[2]
        assert sense is not None
        assert sense[2] & 0x0F == SenseKey.MEDIUM_ERROR
        assert (sense[12], sense[13]) == Asc.UNRECOVERED_READ_ERROR.value
        assert lu.task_count() == 0


async def test_redo_runs_the_awaiting_handler() -> None:
    """A short read or a ring that broke: the command runs its ordinary
    handler in a task (the store's readinto) and answers from there."""
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(16, 1), 3), 0, False)
        store.complete(result=None)
        await wait_answers(t, 1)
        assert t.answered == [(3, Status.GOOD)]
        assert t.responses[-1].data == bytes(store.data[16 * BS : 17 * BS])
        assert store.awaited_reads == 1 and lu.task_count() == 0


async def test_abort_cancels_the_io_and_is_answered_only_after_it_ended() -> None:
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(0, 1), 4), 0, False)
        reply = await abort_then(
            lu, store, 4, lambda: store.complete(result=OSError(errno.ECANCELED, "cancelled"))
        )
        assert reply == [TmfResponse.COMPLETE]
        assert t.answered == []  # an aborted command sends no status
        assert [c.tag for c in t.finished] == [4] and lu.task_count() == 0


async def test_abort_after_the_data_arrived_still_wins() -> None:
    """The read completed with data after the abort: no GOOD status follows a
    TMF that says COMPLETE."""
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(0, 1), 5), 0, False)
        reply_send, reply_recv = trio.open_memory_channel[object](1)
        lu.mailbox.send_nowait(Envelope(AbortTask(NEXUS_A, 5), reply_send))
        with trio.fail_after(5):
            while store.cancels == 0:
                await trio.sleep(0.001)
        store.complete()  # the data came anyway
        with trio.fail_after(5):
            assert await reply_recv.receive() == TmfResponse.COMPLETE
        assert t.answered == []


async def test_lun_reset_with_tas_answers_task_aborted_to_the_other_nexus() -> None:
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu, NEXUS_A)
        await clear_power_on_ua(lu, NEXUS_B)
        await set_control_page(lu, 5, 0x40, 0x40)  # TAS = 1
        await clear_mode_ua(lu, NEXUS_B)
        ta, tb = Recorder(), Recorder()
        lu.submit(command(ta, read10(1, 1), 6), 0, False)
        lu.submit(command(tb, read10(2, 1), 7, nexus=NEXUS_B), 0, False)
        reply: list[object] = []

        async def reset() -> None:
            reply.append(await call(lu.mailbox, ResetLogicalUnit(NEXUS_A)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reset)
            with trio.fail_after(5):
                while store.cancels < 2:
                    await trio.sleep(0.001)
            store.complete()
            store.complete(result=OSError(errno.ECANCELED, "cancelled"))
        assert reply == [TmfResponse.COMPLETE]
        assert ta.answered == []  # the issuer's own task: silent
        assert tb.answered == [(7, Status.TASK_ABORTED)]


async def test_device_loss_answers_aborted_command_after_the_io() -> None:
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(3, 1), 8), 0, False)
        lu.device_lost()
        assert store.cancels == 1 and t.answered == []
        store.complete()
        assert t.answered == [(8, Status.CHECK_CONDITION)]
        sense = t.sense_by_tag[8]
        assert sense is not None and sense[2] & 0x0F == SenseKey.ABORTED_COMMAND
        assert (sense[12], sense[13]) == Asc.INTERNAL_TARGET_FAILURE.value


async def test_a_stopped_lu_cancels_queued_reads_and_drops_them_silently() -> None:
    store = QueuedStore(1 << 20)
    t = Recorder()
    async with lu_on(store, BS) as lu:
        await clear_power_on_ua(lu)
        lu.submit(command(t, read10(5, 1), 9), 0, False)
    assert store.cancels == 1  # the LU ended: its I/O is asked to stop
    store.complete(result=OSError(errno.ECANCELED, "cancelled"))
    assert t.answered == [] and [c.tag for c in t.finished] == [9]


async def test_a_queued_write_is_answered_from_its_completion_and_orders_an_overlapping_read() -> (
    None
):
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder(b"w" * BS)
        lu.submit(command(t, write10(7), 10), 0, False)
        assert len(store.writes) == 1 and store.writes[0][1] == b"w" * BS
        assert t.answered == []
        reader = Recorder()
        lu.submit(command(reader, read10(7, 1), 11), 0, False)  # same block
        await trio.sleep(0.02)
        assert store.queued == [] and reader.answered == []  # waits for the write
        store.complete_write()
        assert t.answered == [(10, Status.GOOD)]
        await wait_answers(reader, 1)  # (through its task: it had to wait)
        assert reader.responses[-1].data == b"w" * BS  # the new data, never the old
        assert lu.task_count() == 0


async def test_a_queued_write_error_is_a_write_error_and_redo_uses_the_handler() -> None:
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder(b"e" * BS)
        lu.submit(command(t, write10(3), 12), 0, False)
        store.complete_write(OSError(errno.EIO, "media"))
        assert t.answered == [(12, Status.CHECK_CONDITION)]
        sense = t.sense_by_tag[12]
        assert sense is not None and sense[2] & 0x0F == SenseKey.MEDIUM_ERROR
        assert (sense[12], sense[13]) == Asc.WRITE_ERROR.value
        lu.submit(command(t, write10(4), 13), 0, False)
        store.complete_write(None)  # short: the handler writes it all again
        await wait_answers(t, 2)
        assert t.answered[-1] == (13, Status.GOOD)
        assert bytes(store.data[4 * BS : 5 * BS]) == b"e" * BS


async def test_an_aborted_queued_write_is_silent_and_waits_for_its_completion() -> None:
    async with queued_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder(b"a" * BS)
        lu.submit(command(t, write10(9), 14), 0, False)
        reply = await abort_then(lu, store, 14, store.complete_write)  # it landed anyway
        assert reply == [TmfResponse.COMPLETE] and t.answered == []
        assert bytes(store.data[9 * BS : 10 * BS]) == b"a" * BS  # new data, whole
