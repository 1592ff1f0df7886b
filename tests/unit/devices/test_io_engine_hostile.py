"""The io_uring engine's hot path under hostile conditions: a full ring,
completions that say "not now" (EAGAIN, ENOMEM), cancellation of linked
requests mid-flight, and the one-object-per-request bookkeeping that must not
leak a request or call a callback twice."""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

import pytest
import trio

import pyscst.devices.uring as uring
from pyscst.devices.direct import DirectStore
from pyscst.devices.io_engine import EngineFailedError, UringEngine
from pyscst.devices.stores import FileStore
from tests.fakes import fill_pipe, until

UNAVAILABLE = uring.probe()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}")


def _first_completions_fail(engine: UringEngine, errnos: list[int]) -> list[int]:
    """Make the next completions (one per entry of ``errnos``) carry that
    negative errno instead of their result, as the kernel would when out of
    memory or request slots; returns the list of rewritten user_data keys."""
    ring = engine._ring
    real = ring.reap
    hit: list[int] = []

    def reap() -> list[tuple[int, int]]:
        out = []
        for key, res in real():
            if key and errnos:
                hit.append(key)
                res = -errnos.pop(0)
            out.append((key, res))
        return out

    ring.reap = reap  # type: ignore[method-assign]
    return hit


async def test_a_full_ring_that_takes_nothing_sends_one_request_by_thread(tmp_path: Path) -> None:
    """The SQ full and the kernel taking none of it (EAGAIN from the engine):
    that request goes by thread, and the store keeps its ring for the next
    (before, a full ring dropped io_uring for good)."""
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    engine = store.engine
    assert engine is not None
    await store.write(0, b"a" * 4096)
    ring = engine._ring
    real_submit = ring.submit
    ring.submit = lambda wait=0: 0  # type: ignore[method-assign]  # (the kernel takes nothing)
    try:
        for _ in range(ring.sq_entries):  # fills the SQ
            engine.queue(uring.OP_NOP, -1, 0, 0, 0, 0, None, lambda res: None)
        with pytest.raises(EngineFailedError) as caught:
            engine.queue(uring.OP_NOP, -1, 0, 0, 0, 0, None, lambda res: None)
        assert caught.value.errno == errno.EAGAIN and engine.broken is None
        buf = bytearray(4096)
        assert store.start_read(0, buf, lambda r: None) is None  # (full: the task path)
        assert store.engine is engine  # still io_uring
        await store.readinto(0, memoryview(buf))  # by thread, correct data
        assert buf == b"a" * 4096
    finally:
        ring.submit = real_submit  # type: ignore[method-assign]
    await until(lambda: engine.in_flight == 0)
    assert store.engine is engine and engine.broken is None
    await store.close()


@pytest.mark.parametrize("err", [errno.EAGAIN, errno.ENOMEM])
async def test_a_task_request_that_completes_eagain_or_enomem_is_queued_again(
    tmp_path: Path, err: int
) -> None:
    """A read whose completion says EAGAIN/ENOMEM is not an I/O error: the
    engine queues it again (a few times, after a short pause) and the
    caller gets the data (before: OSError, a MEDIUM ERROR to the initiator)."""
    path = tmp_path / "f"
    path.write_bytes(b"z" * 8192)
    engine = UringEngine.create("t")
    fd = os.open(path, os.O_RDONLY)
    try:
        hit = _first_completions_fail(engine, [err, err])
        buf = bytearray(8192)
        n = await engine.read(fd, memoryview(buf), 0)
        assert n == 8192 and buf == b"z" * 8192
        assert len(hit) == 2 and engine.requests == 3
    finally:
        await engine.aclose()
        os.close(fd)


async def test_a_task_request_that_keeps_failing_eagain_raises_in_the_end(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"z" * 512)
    engine = UringEngine.create("t")
    fd = os.open(path, os.O_RDONLY)
    try:
        _first_completions_fail(engine, [errno.EAGAIN] * 10)
        with pytest.raises(OSError) as caught:
            await engine.read(fd, memoryview(bytearray(512)), 0)
        assert caught.value.errno == errno.EAGAIN and engine.requests == 4  # 1 + 3 retries
        assert engine.in_flight == 0
    finally:
        await engine.aclose()
        os.close(fd)


@pytest.mark.parametrize("err", [errno.EAGAIN, errno.ENOMEM])
async def test_a_callback_read_that_completes_eagain_is_redone_not_failed(
    tmp_path: Path, err: int
) -> None:
    """A queued read (no task) whose completion says EAGAIN/ENOMEM answers
    "redo it the task way" (None), not an OSError; the store keeps its ring
    and reports no failure."""
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    engine = store.engine
    assert engine is not None
    await store.write(0, b"q" * 4096)
    _first_completions_fail(engine, [err])
    got: list[object] = []
    buf = bytearray(4096)
    assert store.start_read(0, buf, got.append) is not None
    await until(lambda: bool(got))
    assert got == [None] and store.engine is engine and store.problem() is None
    await store.readinto(0, memoryview(buf))  # the task path's redo
    assert buf == b"q" * 4096
    await store.close()


async def test_a_blockio_write_that_completes_enomem_is_redone_and_lands(tmp_path: Path) -> None:
    """BLOCKIO (O_DIRECT on a file of a disk filesystem): a queued write whose
    completion says ENOMEM asks for the task path's redo, which writes it."""
    directory = Path("/var/tmp")
    path = directory / f"pyscst-hostile-{os.getpid()}.img"
    try:
        store = await DirectStore.open_direct(
            path, key="devices.d", size=1 << 20, block_size=512, roots=(directory,), grow=True,
            io_engine="uring",
        )  # fmt: skip
    except Exception as exc:  # (a filesystem without O_DIRECT: nothing to test here)
        path.unlink(missing_ok=True)
        pytest.skip(f"no O_DIRECT under /var/tmp: {exc}")
    try:
        engine = store.engine
        assert engine is not None
        _first_completions_fail(engine, [errno.ENOMEM])
        got: list[object] = []
        data = os.urandom(4096)
        assert store.start_write(8192, data, True, got.append) is not None
        await until(lambda: bool(got))
        assert got == [None] and store.engine is engine
        await store.write(8192, data, fua=True)  # the redo
        buf = bytearray(4096)
        await store.readinto(8192, memoryview(buf))
        assert buf == data
    finally:
        await store.close()
        path.unlink(missing_ok=True)


async def test_cancelling_a_callback_write_mid_flight_ends_it_once() -> None:
    """A queued write the kernel holds (a full pipe): cancel() of the one
    object the caller holds stops it, ``done`` comes exactly once (negative:
    nothing claimed written), and nothing stays in flight or pinned."""
    engine = UringEngine.create("t")
    r, w = os.pipe()
    try:
        fill_pipe(w)  # the next write waits
        got: list[int | BaseException] = []
        request = engine.start_write(w, memoryview(bytearray(4096)), -1, got.append)
        await trio.sleep(0.01)
        assert engine.in_flight == 1 and not got, got
        request.cancel()
        await until(lambda: engine.in_flight == 0)
        await trio.sleep(0.01)
        assert len(got) == 1
        assert isinstance(got[0], int) and got[0] < 0
        assert request.pin is None
        request.cancel()  # (after the end: nothing to do, no cancel SQE)
        await trio.sleep(0.01)
        assert len(got) == 1 and engine.in_flight == 0
    finally:
        await engine.aclose()
        os.close(r)
        os.close(w)


async def test_cancel_of_a_fua_write_reaches_its_linked_sync(tmp_path: Path) -> None:
    """FUA is two linked requests but one object to the caller: its cancel()
    asks the kernel to stop both (while they are unfinished), and a request
    that has ended is not cancelled again."""
    engine = UringEngine.create("t")
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    cancelled: list[int] = []
    engine._cancel = lambda op: cancelled.append(op.key)  # type: ignore[method-assign]
    try:
        got: list[int | BaseException] = []
        request = engine.start_write(fd, memoryview(bytearray(512)), 0, got.append, datasync=True)
        link = request.link
        assert link is not None and engine.in_flight == 2
        request.cancel()
        assert cancelled == [request.key, link.key]
        await until(lambda: bool(got))
        assert got == [512] and engine.in_flight == 0  # (it was done before the cancel ran)
        request.cancel()
        assert cancelled == [request.key, link.key]  # ended: not again
    finally:
        await engine.aclose()
        os.close(fd)


async def test_many_requests_in_one_tick_are_one_object_each_and_all_complete(
    tmp_path: Path,
) -> None:
    """More requests in one tick than the SQ holds: the engine submits when
    full and carries on; every callback comes exactly once, with its data."""
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 64)
    engine = UringEngine.create("t", entries=8)
    fd = os.open(path, os.O_RDONLY)
    try:
        got: dict[int, int | BaseException] = {}
        bufs = [bytearray(256) for _ in range(50)]
        for i, b in enumerate(bufs):
            engine.start_read(fd, memoryview(b), i * 256, functools.partial(got.setdefault, i))
        await until(lambda: len(got) == 50)
        assert all(res == 256 for res in got.values())
        assert all(b == bytes(range(256)) for b in bufs)
        assert engine.in_flight == 0 and engine.submits >= 50 // 8
    finally:
        await engine.aclose()
        os.close(fd)
