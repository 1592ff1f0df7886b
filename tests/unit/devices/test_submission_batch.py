"""SubmissionBatch: the daemon-owned list of rings to submit and of readers
that submit themselves (devices/io_engine.py), replacing module state."""

from __future__ import annotations

import os

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
