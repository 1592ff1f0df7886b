"""A READ queued on a real store's ring (FileStore over io_uring: the path
whose completion goes straight to ``Pending.finish``) behaves as a task
would: data, the error sense, a redo for EAGAIN/ENOMEM or a short read, and
an abort mid-flight that is answered only after the I/O ended. The engine's
submission is held by the test (the request is recorded, not submitted), so
"in flight" is a state the test controls."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.messages import AbortTask, TmfResponse, call
from pyscst.devices import uring
from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import FileStore
from pyscst.scsi.sense import Asc, SenseKey, Status
from tests.cdbs import read10
from tests.unit.actors.test_task_set import NEXUS_A, Recorder, clear_power_on_ua, command

UNAVAILABLE = uring.probe()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}")
BS = 512


class HeldRequest:
    def __init__(self) -> None:
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


@asynccontextmanager
async def ring_lu(tmp_path: Path) -> AsyncIterator[tuple[LogicalUnit, FileStore, list[Any]]]:
    """An LU over a FileStore whose reads all miss the cache and whose ring
    records each callback request (offset, address, length, done, handle)
    instead of submitting it; a task's request goes to the real ring."""
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    assert store.engine is not None
    await store.write(0, bytes(range(256)) * 4096)
    held: list[Any] = []
    real_queue = store.engine.queue

    def queue(opcode: int, fd: int, off: int, addr: int, length: int, flags: int, pin: object,
              done: Callable[[int | BaseException], object] | None,
              sqe_flags: int = 0) -> Any:  # fmt: skip
        if done is None:  # a task's request (the redo's readinto): the real ring
            return real_queue(opcode, fd, off, addr, length, flags, pin, done, sqe_flags)
        request = HeldRequest()
        held.append((off, addr, length, done, request))
        return request

    store.engine.queue = queue  # type: ignore[method-assign]
    store.read_now = lambda offset, buf: False  # type: ignore[method-assign]
    device = DiskDevice("d0", store, block_size=BS)
    lu = LogicalUnit("d0", lambda: device, CORE_TABLE)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(lu.run)
            yield lu, store, held
            nursery.cancel_scope.cancel()
    finally:
        store.engine.queue = real_queue  # type: ignore[method-assign]
        await store.close()


def fill(held: Any, data: bytes) -> None:
    """What the kernel would do: the read's bytes into the pinned buffer."""
    _off, addr, length, _done, _request = held
    ctypes.memmove(addr, data, min(length, len(data)))


async def test_a_ring_read_is_answered_with_its_data_from_the_completion(tmp_path: Path) -> None:
    async with ring_lu(tmp_path) as (lu, _store, held):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(8, 2), 1), 0, False)
        assert len(held) == 1 and lu.task_count() == 1 and t.answered == []
        want = (bytes(range(256)) * 8)[: 2 * BS]
        fill(held[0], want)
        held[0][3](2 * BS)
        assert t.answered == [(1, Status.GOOD)]
        assert t.responses[-1].data == want and lu.task_count() == 0


async def test_a_ring_read_error_is_the_medium_error_sense(tmp_path: Path) -> None:
    async with ring_lu(tmp_path) as (lu, _store, held):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(4, 1), 2), 0, False)
        held[0][3](-errno.EIO)
        assert t.answered == [(2, Status.CHECK_CONDITION)]
        sense = t.sense_by_tag[2]
        assert sense is not None and sense[2] & 0x0F == SenseKey.MEDIUM_ERROR
        assert (sense[12], sense[13]) == Asc.UNRECOVERED_READ_ERROR.value


@pytest.mark.parametrize("res", [-errno.EAGAIN, -errno.ENOMEM, 100])
async def test_a_ring_read_that_says_not_now_or_short_is_redone_by_the_task_path(
    tmp_path: Path, res: int
) -> None:
    async with ring_lu(tmp_path) as (lu, _store, held):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(16, 1), 3), 0, False)
        held[0][3](res)
        want = (bytes(range(256)) * 2)[:BS]  # (what the file holds at block 16)
        with trio.fail_after(5):
            while not t.answered:
                await trio.sleep(0.001)
        assert t.answered == [(3, Status.GOOD)] and t.responses[-1].data == want


async def test_an_abort_mid_flight_cancels_the_request_and_waits_for_its_end(
    tmp_path: Path,
) -> None:
    async with ring_lu(tmp_path) as (lu, _store, held):
        await clear_power_on_ua(lu)
        t = Recorder()
        lu.submit(command(t, read10(0, 1), 4), 0, False)
        reply: list[object] = []

        async def abort() -> None:
            reply.append(await call(lu.mailbox, AbortTask(NEXUS_A, 4)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(abort)
            request = held[0][4]
            with trio.fail_after(5):
                while not request.cancelled:
                    await trio.sleep(0.001)
            await trio.sleep(0.02)
            assert reply == [] and lu.task_count() == 1  # the kernel may still write
            held[0][3](-errno.ECANCELED)
        assert reply == [TmfResponse.COMPLETE]
        assert t.answered == [] and lu.task_count() == 0  # aborted: no status
