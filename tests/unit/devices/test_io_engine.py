"""The io_uring engine (devices/io_engine.py, devices/uring.py) and its fallback.

Each store-level behaviour is checked with both engines, so the io_uring path
answers exactly as the thread path does: data, short reads at EOF, errors (the
same OSError errno, hence the same sense), punch holes, FUA. Engine-level
tests cover batching, kernel-side cancellation (a cancelled request's task
leaves only after its completion, so no buffer is released under the kernel),
a ring that breaks at run time (the store carries on with threads), and the
choice of engine (config, environment, io_uring unavailable).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings

import pyscst.devices.uring as uring
from pyscst.devices.direct import DirectStore, is_aligned
from pyscst.devices.io_engine import EngineFailedError, SubmissionBatch, UringEngine
from pyscst.devices.stores import (
    IO_ENGINE_ENV,
    FileStore,
    ReadResult,
    StoreTruncatedError,
    WriteResult,
    make_engine,
)
from tests.fakes import engine_on_pipe, fill_pipe, until
from tests.loopdev import loop_device

UNAVAILABLE = uring.probe()
needs_uring = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}")
ENGINES = [pytest.param("uring", marks=needs_uring), "threads"]


def _drop_cache(store: FileStore) -> None:
    os.posix_fadvise(store.fileno, 0, 0, os.POSIX_FADV_DONTNEED)


@pytest.mark.parametrize("engine", ENGINES)
async def test_round_trip_fua_flush_punch(tmp_path: Path, engine: str) -> None:
    store = await FileStore.open(tmp_path / "d", size=4 << 20, io_engine=engine)
    assert (store.engine is not None) == (engine == "uring")
    data = os.urandom(64 << 10)
    await store.write(8192, data, fua=True)
    await store.write(1 << 20, bytearray(b"w" * 4096))
    await store.flush()
    _drop_cache(store)
    buf = bytearray(len(data))
    await store.readinto(8192, memoryview(buf))  # cold: the engine's path
    assert buf == data
    await store.discard(8192, 16384)
    await store.readinto(8192, memoryview(buf))
    assert buf[:16384] == bytes(16384) and buf[16384:] == data[16384:]
    with open(tmp_path / "d", "rb") as f:  # really on the file, not just in our view
        f.seek(1 << 20)
        assert f.read(4096) == b"w" * 4096
    if store.engine is not None:
        assert store.engine.requests > 0
    await store.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_read_past_a_shrunk_file_is_an_error_not_zeros(tmp_path: Path, engine: str) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine=engine)
    await store.write(0, b"x" * 8192)
    os.truncate(tmp_path / "d", 4096 + 512)  # a short read, then EOF
    buf = bytearray(8192)
    with pytest.raises(StoreTruncatedError):
        await store.readinto(0, memoryview(buf))
    await store.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_errors_carry_the_same_errno(tmp_path: Path, engine: str) -> None:
    """A failing syscall gives the OSError the thread path gives (so the
    same sense: devices/disk_sense.py maps errno)."""
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine=engine)
    os.close(store._fd)
    store._fd = os.open(tmp_path / "d", os.O_WRONLY)  # reads now fail with EBADF
    store._nowait_reads = False
    store.inline_writes = False
    with pytest.raises(OSError) as info:
        await store.readinto(0, memoryview(bytearray(512)))
    assert info.value.errno == errno.EBADF
    await store.close()


@needs_uring
async def test_submissions_are_batched_per_tick(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    engine = store.engine
    assert engine is not None
    await store.write(0, os.urandom(1 << 20))
    store.inline_writes = False
    await store.flush()
    # cold: each read stays in the kernel a while, so the first is submitted
    # alone (nothing of ours in flight) and the others batch behind it
    _drop_cache(store)
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        buf = bytearray(4096)
        await store.readinto(i * 4096, memoryview(buf))
        results[i] = bytes(buf)

    before = engine.submits
    async with trio.open_nursery() as nursery:
        for i in range(32):
            nursery.start_soon(one, i)
    with open(tmp_path / "d", "rb") as f:
        whole = f.read()
    assert all(results[i] == whole[i * 4096 : (i + 1) * 4096] for i in range(32))
    assert engine.submits - before < 8  # 32 requests, a few io_uring_enter calls
    await store.close()


@needs_uring
async def test_a_cancelled_read_is_cancelled_in_the_kernel_and_waited_for() -> None:
    """A read that would never complete (an empty pipe): the abort cancels it
    in the kernel, and the task leaves only once its completion arrived."""
    engine = UringEngine.create("t")
    r, w = os.pipe()
    try:
        buf = bytearray(4096)
        with trio.move_on_after(0.05) as scope:
            await engine.read(r, memoryview(buf), -1)
        assert scope.cancelled_caught
        assert engine.in_flight == 0  # the CQE was consumed before the task left
        os.write(w, b"late")  # nobody reads it into the old buffer any more
        await trio.sleep(0.01)
        assert buf == bytes(4096)
    finally:
        await engine.aclose()
        os.close(r)
        os.close(w)


@needs_uring
async def test_a_cancelled_write_waits_for_its_completion() -> None:
    engine = UringEngine.create("t")
    r, w = os.pipe()
    try:
        fill_pipe(w)  # the next write waits
        data = bytearray(b"d" * 4096)
        with trio.move_on_after(0.05) as scope:
            await engine.write(w, memoryview(data), -1)  # the pipe is full: blocks
        assert scope.cancelled_caught and engine.in_flight == 0
        os.set_blocking(r, False)
        drained = b""
        try:
            while chunk := os.read(r, 65536):
                drained += chunk
        except BlockingIOError:
            pass
        assert b"d" not in drained  # cancelled in the kernel, not written late
    finally:
        await engine.aclose()
        os.close(r)
        os.close(w)


@needs_uring
async def test_close_with_requests_in_flight_cancels_them() -> None:
    engine = UringEngine.create("t")
    r, w = os.pipe()
    results: list[BaseException | int] = []

    async def reader() -> None:
        try:
            results.append(await engine.read(r, memoryview(bytearray(16)), -1))
        except OSError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.02)
        await engine.aclose()
    assert engine.in_flight == 0
    assert len(results) == 1 and isinstance(results[0], OSError)
    os.close(r)
    os.close(w)


@needs_uring
async def test_a_ring_that_breaks_falls_back_to_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    engine = store.engine
    assert engine is not None
    await store.write(0, b"a" * 4096, fua=True)

    def broken(wait: int = 0) -> int:
        raise OSError(errno.EIO, "injected")

    engine._ring.submit = broken  # type: ignore[method-assign]
    await store.write(4096, b"b" * 4096, fua=True)  # redone through a thread
    _drop_cache(store)
    buf = bytearray(8192)
    await store.readinto(0, memoryview(buf))
    assert buf == b"a" * 4096 + b"b" * 4096
    assert store.engine is None and "io_uring failed" in store.engine_note
    assert "io_uring failed" in caplog.text
    with pytest.raises(EngineFailedError):
        await engine.fsync(store.fileno)
    await store.flush()
    await store.close()
    await engine.aclose()


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IO_ENGINE_ENV, raising=False)
    engine, note = make_engine("threads", "x")
    assert engine is None and note == "threads (configured)"
    monkeypatch.setenv(IO_ENGINE_ENV, "threads")
    assert make_engine("uring", "x") == (None, "threads (configured)")
    monkeypatch.setenv(IO_ENGINE_ENV, "bogus")
    with pytest.raises(ValueError, match="io_engine"):
        make_engine("auto", "x")


def test_io_uring_disabled_by_sysctl(monkeypatch: pytest.MonkeyPatch) -> None:
    """kernel.io_uring_disabled = 2 (or seccomp, ENOSYS): auto says why and
    uses threads; uring refuses to open the store."""
    monkeypatch.delenv(IO_ENGINE_ENV, raising=False)
    monkeypatch.setattr(uring, "_read_disabled", lambda: 2)
    engine, note = make_engine("auto", "x")
    assert engine is None
    assert note == "threads (io_uring unavailable: kernel.io_uring_disabled = 2)"
    with pytest.raises(OSError, match='io_engine = "uring"'):
        make_engine("uring", "x")
    assert uring.probe() == "kernel.io_uring_disabled = 2"


def test_setup_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """io_uring_setup failing (EPERM from seccomp, ENOSYS) is "unavailable"."""
    monkeypatch.delenv(IO_ENGINE_ENV, raising=False)
    monkeypatch.setattr(uring, "_SYS_SETUP", -1)  # syscall(-1): ENOSYS
    engine, note = make_engine("auto", "x")
    assert engine is None and note.startswith("threads (io_uring unavailable: ")


@needs_uring
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["w", "wf", "r", "d", "drop"]),
            st.integers(0, 63),
            st.integers(1, 8),
        ),
        max_size=30,
    )
)
def test_uring_store_matches_a_model(tmp_path: Path, ops: list[tuple[str, int, int]]) -> None:
    """Random writes, FUA writes, reads, punches and cache drops: the store
    always reads what a bytearray model holds."""
    size = 64 * 4096

    async def run() -> None:
        path = tmp_path / "m"
        path.unlink(missing_ok=True)
        store = await FileStore.open(path, size=size, io_engine="uring")
        store.inline_writes = False  # every write through the ring
        store._nowait_writes = store._nowait_reads = False
        model = bytearray(size)
        try:
            for i, (kind, block, count) in enumerate(ops):
                off, n = block * 4096, min(count, 64 - block) * 4096
                if kind in ("w", "wf"):
                    data = bytes([i + 1]) * n
                    await store.write(off, data, fua=kind == "wf")
                    model[off : off + n] = data
                elif kind == "d":
                    await store.discard(off, n)
                    model[off : off + n] = bytes(n)
                elif kind == "drop":
                    _drop_cache(store)
                else:
                    buf = bytearray(n)
                    await store.readinto(off, memoryview(buf))
                    assert buf == model[off : off + n]
            whole = bytearray(size)
            await store.readinto(0, memoryview(whole))
            assert whole == model
        finally:
            await store.close()

    trio.run(run)


@needs_uring
async def test_a_cold_streak_skips_the_inline_try_but_probes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After COLD_STREAK misses in a row, read_now stops trying RWF_NOWAIT
    (each miss would start a disk read from the loop) except every
    COLD_PROBE-th time; one hit makes it try every time again."""
    import pyscst.devices.stores as stores

    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    tries: list[int] = []
    hit = False
    real = os.preadv

    def fake(fd: int, bufs: list[memoryview], offset: int, flags: int = 0) -> int:
        if fd == store.fileno and flags:
            tries.append(offset)
            if not hit:
                raise BlockingIOError(errno.EAGAIN, "would block")
        return real(fd, bufs, offset, flags)

    monkeypatch.setattr(stores.os, "preadv", fake)
    buf = memoryview(bytearray(512))
    for _ in range(stores.COLD_STREAK):
        assert not store.read_now(0, buf)
    assert len(tries) == stores.COLD_STREAK
    for _ in range(stores.COLD_PROBE * 2):
        assert not store.read_now(0, buf)
    assert len(tries) == stores.COLD_STREAK + 2  # two probes in 32 reads
    hit = True
    while not store.read_now(0, buf):  # until the next probe finds the page
        pass
    before = len(tries)
    assert store.read_now(0, buf) and store.read_now(0, buf)
    assert len(tries) == before + 2  # warm again: every read tries inline
    await store.close()


@needs_uring
async def test_an_occasional_hit_does_not_bring_back_the_inline_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random cold workload hits now and then (readahead of earlier reads):
    one hit in eight reads must not keep the store trying RWF_NOWAIT on
    every read (a hit used to wipe the miss score); it settles on the ring,
    probing one read in COLD_PROBE."""
    import pyscst.devices.stores as stores

    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    tries = 0
    real = os.preadv

    def fake(fd: int, bufs: list[memoryview], offset: int, flags: int = 0) -> int:
        nonlocal tries
        if fd == store.fileno and flags:
            tries += 1
            if tries % 8:  # seven misses, then a hit, over and over
                raise BlockingIOError(errno.EAGAIN, "would block")
        return real(fd, bufs, offset, flags)

    monkeypatch.setattr(stores.os, "preadv", fake)
    buf = memoryview(bytearray(512))
    for _ in range(200):
        store.read_now(0, buf)
    before = tries
    reads = 32 * stores.COLD_PROBE
    for _ in range(reads):
        store.read_now(0, buf)
    assert tries - before < reads // 4  # (was every read: each hit reset the score)
    await store.close()


# -- callback requests (start_read): a cache-missing READ without a task -----


@needs_uring
async def test_start_read_completes_through_its_callback_once(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    payload = os.urandom(64 << 10)
    await store.write(4096, payload, fua=True)
    _drop_cache(store)
    got: list[ReadResult] = []
    bufs = [bytearray(4096) for _ in range(16)]
    for i, buf in enumerate(bufs):
        assert store.start_read(4096 + i * 4096, buf, got.append) is not None
    assert got == []  # never from inside start_read
    await until(lambda: len(got) == 16)
    await trio.sleep(0.01)
    assert len(got) == 16  # once each
    assert sorted(map(id, got)) == sorted(map(id, bufs))  # each filled buffer, as given
    assert b"".join(bufs) == payload
    await store.close()


@needs_uring
async def test_start_read_short_read_asks_for_a_redo_and_errors_keep_their_errno(
    tmp_path: Path,
) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    await store.write(0, b"x" * 8192)
    os.truncate(tmp_path / "d", 4096 + 512)
    got: list[ReadResult] = []
    store.start_read(0, bytearray(8192), got.append)
    await until(lambda: bool(got))
    assert got == [None]  # short: readinto redoes it (and finds the file shrank)
    os.close(store._fd)
    store._fd = os.open(tmp_path / "d", os.O_WRONLY)
    store.start_read(0, bytearray(512), got.append)
    await until(lambda: len(got) == 2)
    assert isinstance(got[1], OSError) and got[1].errno == errno.EBADF
    await store.close()


@needs_uring
async def test_a_cancelled_callback_read_keeps_its_buffer_until_the_completion() -> None:
    """Cancel asks the kernel to stop; the buffer stays pinned (it cannot be
    resized, hence not freed) until the completion, which comes once."""
    engine = UringEngine.create("t")
    r, w = os.pipe()
    try:
        buf = bytearray(4096)
        got: list[int | BaseException] = []
        request = engine.start_read(r, memoryview(buf), -1, got.append)
        await trio.sleep(0.01)
        assert got == [] and engine.in_flight == 1
        with pytest.raises(BufferError):
            buf.extend(b"x")  # pinned while the kernel may write into it
        request.cancel()
        await until(lambda: bool(got))
        assert got == [-errno.ECANCELED] and engine.in_flight == 0
        buf.extend(b"x")  # released with the completion
        request.cancel()  # (after the end: nothing happens)
        os.write(w, b"late")
        await trio.sleep(0.01)
        assert got == [-errno.ECANCELED] and bytes(buf[:4]) == bytes(4)
    finally:
        await engine.aclose()
        os.close(r)
        os.close(w)


@needs_uring
async def test_callback_reads_of_a_ring_that_breaks_are_redone(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    engine = store.engine
    assert engine is not None

    def broken(wait: int = 0) -> int:
        raise OSError(errno.EIO, "injected")

    engine._ring.submit = broken  # type: ignore[method-assign]
    got: list[ReadResult] = []
    assert store.start_read(0, bytearray(512), got.append) is not None
    await until(lambda: bool(got))
    assert got == [None]  # never submitted: redo (through threads now)
    assert store.engine is None
    assert store.start_read(0, bytearray(512), got.append) is None  # no engine: use readinto
    await store.close()


@needs_uring
async def test_direct_store_reads_into_aligned_buffers_of_its_own() -> None:
    with loop_device(4 << 20) as dev:
        store = await DirectStore.open_direct(
            dev, key="devices.d1", size=4 << 20, block_size=512, roots=(dev.parent,)
        )
        try:
            payload = os.urandom(8192)
            await store.write(8192, payload)
            assert is_aligned(memoryview(store.read_buffer(4096)))
            got: list[ReadResult] = []
            given = bytearray(8192)
            assert store.start_read(8192, given, got.append) is not None
            await until(lambda: bool(got))
            result = got[0]
            assert isinstance(result, memoryview) and is_aligned(result)
            assert bytes(result) == payload and given == bytes(8192)  # no bounce copy
        finally:
            await store.close()


@needs_uring
@pytest.mark.parametrize("fua", [False, True])
async def test_start_write_lands_and_fua_syncs(tmp_path: Path, fua: bool) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="uring")
    engine = store.engine
    assert engine is not None
    got: list[WriteResult] = []
    before = engine.requests
    data = os.urandom(8192)
    assert store.start_write(4096, data, fua, got.append) is not None
    await until(lambda: bool(got))
    assert got == [True]
    # FUA: the data went into the cache inline and only the fdatasync was
    # queued; otherwise the write itself was
    assert engine.requests - before == 1
    with open(tmp_path / "d", "rb") as f:
        f.seek(4096)
        assert f.read(8192) == data
    await store.close()


@needs_uring
@pytest.mark.parametrize("fua", [False, True])
async def test_direct_start_write_links_its_sync_and_reports_the_write_error(fua: bool) -> None:
    with loop_device(4 << 20) as dev:
        store = await DirectStore.open_direct(
            dev, key="devices.d1", size=4 << 20, block_size=512, roots=(dev.parent,)
        )
        try:
            payload = os.urandom(4096 + 512)
            unaligned = memoryview(bytearray(b"\0" * 16) + payload)[16:]  # bounced
            got: list[WriteResult] = []
            assert store.start_write(512, unaligned, fua, got.append) is not None
            await until(lambda: bool(got))
            assert got == [True]
            with open(dev, "rb") as f:
                f.seek(512)
                assert f.read(len(payload)) == payload
            os.close(store._fd)  # a descriptor that cannot write: EBADF
            store._fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
            store.start_write(0, bytes(512), fua, got.append)
            await until(lambda: len(got) == 2)
            # the write's own error, not the linked sync's -ECANCELED
            assert isinstance(got[1], OSError) and got[1].errno == errno.EBADF
        finally:
            await store.close()


@needs_uring
async def test_a_linked_write_whose_sync_is_refused_ends_once_with_both_completions() -> None:
    """fdatasync of a pipe is refused (EINVAL), which cancels the whole link:
    ``done`` comes once, after both completions (its buffer is free then),
    with the write's result, and a cancel afterwards does nothing."""
    engine = UringEngine.create("t")
    r, w = os.pipe()
    try:
        got: list[int | BaseException] = []
        request = engine.start_write(w, memoryview(bytearray(4096)), -1, got.append, True)
        await until(lambda: bool(got))
        await trio.sleep(0.01)
        assert got == [-errno.ECANCELED] and engine.in_flight == 0
        request.cancel()
        await trio.sleep(0.01)
        assert got == [-errno.ECANCELED]
    finally:
        await engine.aclose()
        os.close(r)
        os.close(w)


@needs_uring
async def test_submit_queued_submits_every_ring_at_once_without_a_loop_tick() -> None:
    """What a transport's chunk queued goes to the kernel from submit_queued
    itself (no checkpoint, one io_uring_enter per ring); without it the
    flusher takes the requests at its turn, as before."""
    batch = SubmissionBatch()
    one = UringEngine.create("one", batch=batch)
    two = UringEngine.create("two", batch=batch)
    r, w = os.pipe()
    try:
        got: list[int | BaseException] = []
        one.start_read(r, memoryview(bytearray(8)), -1, got.append)
        one.start_read(r, memoryview(bytearray(8)), -1, got.append)
        two.start_read(r, memoryview(bytearray(8)), -1, got.append)
        assert one.submits == two.submits == 0
        batch.submit_queued()  # (no checkpoint in between)
        assert (one.submits, two.submits) == (1, 1)
        assert one.in_flight == 2 and two.in_flight == 1
        batch.submit_queued()  # nothing left: no system call
        assert (one.submits, two.submits) == (1, 1)
        # queued outside a transport's chunk: the flusher's turn
        one.start_read(r, memoryview(bytearray(8)), -1, got.append)
        assert one.submits == 1
        await trio.sleep(0.01)
        assert one.submits == 2 and one.in_flight == 3
        os.write(w, b"a" * 32)
        await until(lambda: len(got) == 4)
        assert got == [8, 8, 8, 8]
    finally:
        await one.aclose()
        await two.aclose()
        os.close(r)
        os.close(w)


@needs_uring
async def test_submit_queued_skips_a_closed_or_broken_ring() -> None:
    """An engine closed or broken after it queued is never submitted through
    (its ring may be gone): submit_queued neither raises nor calls into it."""
    batch = SubmissionBatch()
    engine = UringEngine.create("t", batch=batch)
    r, w = os.pipe()
    try:
        got: list[int | BaseException] = []
        engine.start_read(r, memoryview(bytearray(8)), -1, got.append)
        engine._fail("injected")
        assert len(got) == 1 and isinstance(got[0], EngineFailedError)
        batch.submit_queued()
        assert engine.submits == 0
    finally:
        await engine.aclose()
        os.close(r)
        os.close(w)


@needs_uring
async def test_a_registered_reader_wakes_no_flusher_other_tasks_do() -> None:
    """What a registered reader queues waits for its submit_queued (no
    flusher step for it); what another task queues meanwhile still has the
    flusher submit it at its turn."""
    batch = SubmissionBatch()
    async with engine_on_pipe("t", batch) as (engine, r, w, got):  # (its pumps started)
        me = trio.lowlevel.current_task()
        os.write(w, b"a" * 8)
        await until(lambda: len(got) == 1)
        got.clear()
        submits = engine.submits
        batch.register_reader(me)
        engine.start_read(r, memoryview(bytearray(8)), -1, got.append)
        await trio.sleep(0.01)  # (a reader never checkpoints here: the flusher stayed asleep)
        assert engine.submits == submits and engine.in_flight == 1
        batch.submit_queued()
        assert engine.submits == submits + 1

        async def other() -> None:
            engine.start_read(r, memoryview(bytearray(8)), -1, got.append)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
        await trio.sleep(0.01)
        assert engine.submits == submits + 2 and engine.in_flight == 2  # the flusher took it
        batch.submit_queued()  # (nothing left: no system call)
        assert engine.submits == submits + 2
        batch.unregister_reader(me)
        engine.start_read(r, memoryview(bytearray(8)), -1, got.append)
        await trio.sleep(0.01)
        assert engine.submits == submits + 3  # not a reader any more: the flusher's
        os.write(w, b"a" * 24)
        await until(lambda: len(got) == 3)
        assert got == [8, 8, 8]


@needs_uring
async def test_a_request_queued_by_a_completion_inside_submit_queued_is_not_stranded() -> None:
    """A registered reader's submit_queued completes a read inline whose
    callback queues another request (from the reader's own task, so no
    flusher is woken for it): that one is submitted too, before the call
    returns, and never waits for the reader's next chunk."""
    batch = SubmissionBatch()
    async with engine_on_pipe("t", batch) as (engine, r, w, got):  # (its pumps started)
        me = trio.lowlevel.current_task()
        os.write(w, b"a" * 8)
        await until(lambda: len(got) == 1)
        submits = engine.submits
        chained: list[int | BaseException] = []

        def then_another(res: int | BaseException) -> None:
            got.append(res)
            engine.start_read(r, memoryview(bytearray(8)), -1, chained.append)

        os.write(w, b"b" * 8)  # (the first read completes at once)
        batch.register_reader(me)
        engine.start_read(r, memoryview(bytearray(8)), -1, then_another)
        batch.submit_queued()
        batch.unregister_reader(me)
        assert got[-1] == 8
        assert engine.submits == submits + 2 and engine.in_flight == 1  # the chained one is in
        os.write(w, b"c" * 8)
        await until(lambda: bool(chained))
        assert chained == [8]


@needs_uring
async def test_a_chain_longer_than_submit_queued_goes_round_is_left_to_the_flusher() -> None:
    """Completions whose callbacks keep queuing (each read completing inline)
    are followed a few rounds by submit_queued, then by the flusher: the
    chain runs to its end, none of it stranded behind the reader."""
    batch = SubmissionBatch()
    async with engine_on_pipe("t", batch) as (engine, r, w, got):  # (its pumps started)
        me = trio.lowlevel.current_task()
        os.write(w, b"a" * 8)
        await until(lambda: len(got) == 1)
        links: list[int | BaseException] = []

        def link(res: int | BaseException) -> None:
            links.append(res)
            if len(links) < 10:
                engine.start_read(r, memoryview(bytearray(8)), -1, link)

        os.write(w, b"b" * 80)  # every read of the chain completes at once
        batch.register_reader(me)
        engine.start_read(r, memoryview(bytearray(8)), -1, link)
        batch.submit_queued()
        batch.unregister_reader(me)
        assert 1 <= len(links) < 10  # (only a few rounds from in there)
        await until(lambda: len(links) == 10)
        assert links == [8] * 10 and engine.in_flight == 0
