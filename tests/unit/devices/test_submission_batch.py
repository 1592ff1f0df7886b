"""SubmissionBatch: the daemon-owned list of rings to submit and of readers
that submit themselves (devices/io_engine.py), replacing module state."""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from pyscst.devices import uring
from pyscst.devices.io_engine import SubmissionBatch, UringEngine
from tests.fakes import engine_on_pipe, until

UNAVAILABLE = uring.probe()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}")


async def test_a_batch_submits_only_its_own_rings_and_counts_only_its_readers() -> None:
    mine, theirs = SubmissionBatch(), SubmissionBatch()
    one = UringEngine.create("one", batch=mine)
    two = UringEngine.create("two", batch=theirs)
    r, w = os.pipe()
    me = trio.lowlevel.current_task()
    try:
        got: list[int | BaseException] = []
        one.start_read(r, memoryview(bytearray(8)), -1, got.append)  # (pumps started)
        two.start_read(r, memoryview(bytearray(8)), -1, got.append)
        await until(lambda: one.in_flight == 1 and two.in_flight == 1)
        s1, s2 = one.submits, two.submits
        mine.register_reader(me)
        one.start_read(r, memoryview(bytearray(8)), -1, got.append)
        two.start_read(r, memoryview(bytearray(8)), -1, got.append)
        assert mine.queued == [one] and theirs.queued == [two]
        mine.submit_queued()
        assert one.submits == s1 + 1 and two.submits == s2  # not the other daemon's ring
        await trio.sleep(0.01)  # I am not a reader of theirs: their flusher took it
        assert two.submits == s2 + 1 and not theirs.readers
        mine.unregister_reader(me)
        assert not mine.readers
        os.write(w, b"x" * 32)
        await until(lambda: len(got) == 4)
    finally:
        mine.unregister_reader(me)
        await one.aclose()
        await two.aclose()
        os.close(r)
        os.close(w)


async def test_use_batch_moves_a_ring_with_requests_waiting_without_stranding_them() -> None:
    """A store's engine is made with a batch of its own and handed the
    daemon's after opening; requests queued before the hand-over are
    submitted through the new batch (or the flusher), never lost."""
    own, daemons = SubmissionBatch(), SubmissionBatch()
    async with engine_on_pipe("e", own) as (engine, r, w, got):  # (its pumps started)
        me = trio.lowlevel.current_task()
        await until(lambda: engine.in_flight == 1 and not engine._flush_wanted)
        own.register_reader(me)  # (so the flusher is not woken: the request waits)
        engine.start_read(r, memoryview(bytearray(8)), -1, got.append)
        assert own.queued == [engine] and engine._flush_wanted
        engine.use_batch(daemons)
        assert own.queued == [] and daemons.queued == [engine]
        before = engine.submits
        daemons.submit_queued()
        assert engine.submits == before + 1 and not daemons.queued
        engine.use_batch(daemons)  # (again: nothing changes)
        assert engine._batch is daemons
        os.write(w, b"y" * 16)
        await until(lambda: len(got) == 2)
        assert got == [8, 8]


def _completion_posted(engine: UringEngine, timeout: float = 5.0) -> None:
    """Wait, without yielding to Trio (whose reaper task would take it), until
    the engine's completion queue holds something."""
    poller = select.poll()
    poller.register(engine._ring._eventfd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while not engine._ring.completed():
        assert time.monotonic() < deadline, "no completion posted"
        poller.poll(10)  # (a system call: the kernel posts pending completions)


async def test_reap_inline_completes_in_the_reader_and_leaves_the_reaper_parked() -> None:
    batch = SubmissionBatch()
    async with engine_on_pipe("e", batch) as (engine, r, w, got):
        me = trio.lowlevel.current_task()
        await until(lambda: engine.in_flight == 1 and not engine._flush_wanted)
        os.write(w, b"a" * 8)
        await until(lambda: got == [8])  # (the first read, through the reaper)
        batch.register_reader(me)
        seen: list[tuple[int | BaseException, trio.lowlevel.Task]] = []
        engine.start_read(
            r, memoryview(bytearray(8)), -1,
            lambda res: seen.append((res, trio.lowlevel.current_task())),
        )  # fmt: skip
        assert not batch.reap_inline()  # (nothing submitted yet: nothing to look at)
        batch.submit_queued()
        assert batch.waiting == [engine]  # the read is in flight
        assert not batch.reap_inline()  # not done yet: the reaper will take it
        assert batch.waiting == []
        batch.submit_queued()  # (nothing queued: the list stays empty)
        assert batch.waiting == []
        os.write(w, b"b" * 8)
        await until(lambda: len(seen) == 1)
        assert seen[0][0] == 8 and seen[0][1] is not me  # (the reaper's doing)

        engine.start_read(
            r, memoryview(bytearray(8)), -1,
            lambda res: seen.append((res, trio.lowlevel.current_task())),
        )  # fmt: skip
        batch.submit_queued()
        assert batch.waiting == [engine]
        os.write(w, b"c" * 8)
        _completion_posted(engine)
        assert batch.reap_inline()
        assert seen[1] == (8, me)  # completed here, by the reader
        assert engine.in_flight == 0
        with pytest.raises(BlockingIOError):  # the eventfd drained: the reaper stays parked
            os.read(engine._ring._eventfd, 8)
        await trio.sleep(0.01)
        assert len(seen) == 2  # and nothing completed twice


async def test_reap_inline_submits_what_the_completions_queued() -> None:
    # a completion callback run by the reader queues another request: the
    # reader promised to submit before its next checkpoint, so reap_inline does
    batch = SubmissionBatch()
    async with engine_on_pipe("e", batch) as (engine, r, w, got):
        me = trio.lowlevel.current_task()
        await until(lambda: engine.in_flight == 1 and not engine._flush_wanted)
        os.write(w, b"a" * 8)
        await until(lambda: got == [8])
        batch.register_reader(me)
        more: list[int | BaseException] = []

        def again(res: int | BaseException) -> None:
            engine.start_read(r, memoryview(bytearray(8)), -1, more.append)

        engine.start_read(r, memoryview(bytearray(8)), -1, again)
        batch.submit_queued()
        os.write(w, b"b" * 8)
        _completion_posted(engine)
        submits = engine.submits
        assert batch.reap_inline()
        assert engine.submits == submits + 1 and not batch.queued  # submitted at once
        assert batch.waiting == [engine]  # and in flight now
        os.write(w, b"c" * 8)
        await until(lambda: more == [8])


@contextlib.asynccontextmanager
async def _reader_reading_a_cached_file(
    tmp_path: Path,
) -> AsyncIterator[tuple[SubmissionBatch, UringEngine, list[int | BaseException]]]:
    """This task registered as a batch's reader, a 4 KiB read of a file just
    written (so in the page cache) queued on the batch's engine: the batch,
    the engine and the read's results (empty until it completes)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    batch = SubmissionBatch()
    engine = UringEngine.create("f", batch=batch)
    me = trio.lowlevel.current_task()
    try:
        batch.register_reader(me)
        got: list[int | BaseException] = []
        engine.start_read(fd, memoryview(bytearray(4096)), 0, got.append)
        yield batch, engine, got
    finally:
        batch.unregister_reader(me)
        await engine.aclose()
        os.close(fd)


async def test_a_request_done_at_submission_leaves_nothing_to_wait_for(tmp_path: Path) -> None:
    # (a cached file read completes inside io_uring_enter: no reader may then
    # sleep for it)
    async with _reader_reading_a_cached_file(tmp_path) as (batch, engine, got):
        batch.submit_queued()
        if got == [4096]:  # (done inline, as a page-cache hit nearly always is)
            assert batch.waiting == []
        else:
            assert batch.waiting == [engine]
        await until(lambda: got == [4096])


async def test_completions_found_at_submission_do_not_wake_the_reaper(tmp_path: Path) -> None:
    # a cached read completes inside io_uring_enter; its posting signalled the
    # eventfd, which the submission drains (else Trio wakes the reaper, for
    # nothing, once per such command)
    async with _reader_reading_a_cached_file(tmp_path) as (batch, engine, got):
        batch.submit_queued()
        assert got == [4096]  # completed in the submission
        with pytest.raises(BlockingIOError):
            os.read(engine._ring._eventfd, 8)  # and nothing left to wake the reaper
