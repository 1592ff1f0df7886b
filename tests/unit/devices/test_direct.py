"""vdisk_blockio's DirectStore: O_DIRECT on a loop device and a file, its refusals."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from pyscst.devices.direct import (
    BounceBuffers,
    DirectIoRefusedError,
    DirectStore,
    _aligned_at,
    aligned_buffer,
    aligned_window,
    is_aligned,
)
from pyscst.devices.stores import StoreReadOnlyError
from tests.loopdev import loop_device

MIB = 1 << 20


async def _open(path: Path, block_size: int = 512, **kw: object) -> DirectStore:
    return await DirectStore.open_direct(
        path, key="devices.d1", size=kw.pop("size", 8 * MIB), block_size=block_size,  # type: ignore[arg-type]
        roots=(path.parent,), **kw,  # type: ignore[arg-type]
    )


def test_aligned_buffer_is_page_aligned() -> None:
    assert is_aligned(aligned_buffer(8192))
    assert not is_aligned(memoryview(bytearray(8192))[16:4112])


def _address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_aligned_window_gives_the_address_of_its_buffer() -> None:
    view, addr = aligned_window(4096)
    assert len(view) == 4096 and not view.readonly and addr == _address(view)
    assert addr % 4096 == 0 and bytes(view) == bytes(4096)


def test_aligned_at_takes_aligned_data_as_is_and_bounces_the_rest() -> None:
    """What a BLOCKIO write hands the ring: the data itself when O_DIRECT can
    take it, else an aligned copy; the address given is the buffer's own."""
    good = aligned_buffer(8192)
    good[:] = os.urandom(8192)
    view, addr, bounced = _aligned_at(good)
    assert view.obj is good.obj and addr == _address(good) and not bounced  # no copy
    cases: list[memoryview | bytes] = [
        memoryview(bytearray(8192 + 16))[16:8208],  # misaligned address
        memoryview(bytearray(8192)).toreadonly(),  # read-only
        bytes(8192),  # read-only exporter
        aligned_buffer(8192)[:700],  # not whole 512-byte blocks
    ]
    for data in cases:
        src = memoryview(data).cast("B")
        view, addr, bounced = _aligned_at(data)
        assert addr == _address(view) and addr % 4096 == 0 and bounced
        assert bytes(view) == bytes(src)
    empty, addr, _ = _aligned_at(b"")  # (nothing to write: still a valid answer)
    assert len(empty) == 0


def test_aligned_at_gathers_the_pieces_of_a_write_into_one_aligned_buffer() -> None:
    """A write whose data-out came in pieces: one copy, into the aligned
    buffer, in order; a lone piece is taken as one buffer is."""
    pieces: list[bytes | memoryview] = [os.urandom(1000), memoryview(os.urandom(3096)), b"z" * 4096]
    view, addr, bounced = _aligned_at(pieces)  # type: ignore[arg-type]
    assert addr == _address(view) and addr % 4096 == 0 and not view.readonly and bounced
    assert bytes(view) == b"".join(bytes(p) for p in pieces)
    good = aligned_buffer(4096)
    view, addr, bounced = _aligned_at([good])
    assert view.obj is good.obj and addr == _address(good) and not bounced  # no copy


def test_bounce_buffers_are_reused_by_size_and_bounded() -> None:
    """A buffer given back serves the next write of its size (no new, zero-filled
    one); one not given back is never handed out twice; idle bytes stay under
    the limit."""
    pool = BounceBuffers(limit=3 * 8192)
    first = pool.take(8192)
    second = pool.take(8192)  # the first is still in flight: a different buffer
    assert first[1] != second[1] and first[1] % 4096 == 0 and second[1] % 4096 == 0
    first[0][:] = b"x" * 8192
    pool.give(first)
    again = pool.take(8192)
    assert again[1] == first[1] and again[0].obj is first[0].obj  # reused, not zero-filled
    assert pool.take(4096)[1] not in (first[1], second[1])  # sizes do not mix
    for window in (again, second, pool.take(8192), pool.take(8192)):
        pool.give(window)
    assert pool.idle_bytes == 3 * 8192  # the fourth was dropped
    view, _, bounced = _aligned_at([b"a" * 1000, b"b" * 7192], pool.take)
    assert bounced and bytes(view) == b"a" * 1000 + b"b" * 7192 and pool.idle_bytes == 2 * 8192


async def test_a_write_in_pieces_goes_to_the_ring_gathered_not_joined(tmp_path: Path) -> None:
    """BLOCKIO's fast write takes the data-out's pieces (the transport is
    never asked to join them) and what reaches the file is the whole write."""
    from pyscst.devices.disk import DiskDevice
    from pyscst.devices.disk_io import write_now
    from pyscst.scsi.cdb import NEEDS_AWAIT, Pending
    from pyscst.scsi.command import DataDirection
    from tests.fakes import FakeContext, PiecedTransport, make_cmd, until

    store = await _open(tmp_path / "d.img")
    try:
        if store.engine is None:
            pytest.skip("no io_uring here: BLOCKIO writes take the task path")
        dev = DiskDevice("d0", store)
        parts = [os.urandom(512 * 60 + 100), os.urandom(412), os.urandom(512 * 100)]
        whole = b"".join(parts)
        cdb = bytes([0x2A, 0]) + (8).to_bytes(4, "big") + bytes([0, 0, 161, 0])  # 161 at 8
        cmd = make_cmd(cdb, PiecedTransport(parts), direction=DataDirection.WRITE)
        pending = write_now(dev, cmd, FakeContext())
        assert isinstance(pending, Pending)
        results: list[object] = []
        pending.then(results.append)
        await until(lambda: results)
        assert results == [None]  # GOOD
        got = aligned_buffer(len(whole))
        await store.readinto(8 * 512, got)
        assert bytes(got) == whole
        short = make_cmd(cdb, PiecedTransport(parts[:2]), 161 * 512, DataDirection.WRITE)
        assert write_now(dev, short, FakeContext()) is NEEDS_AWAIT  # (not all there yet)
    finally:
        await store.close()


async def test_unaligned_writes_reuse_their_copy_buffer_only_once_completed(
    tmp_path: Path,
) -> None:
    """Two writes queued together get two copy buffers; once the kernel has
    answered both, both are idle, the next write takes one of them, and every
    write's own data reaches the file (no stale bytes from a reused buffer)."""
    from tests.fakes import until

    store = await _open(tmp_path / "d.img")
    try:
        if store.engine is None:
            pytest.skip("no io_uring here: BLOCKIO writes take the task path")
        n = 8192
        datas = [os.urandom(n) for _ in range(3)]
        results: list[object] = []
        # unaligned sources (a memoryview 16 bytes into a bytearray): each is copied
        sources = [memoryview(bytearray(16) + bytearray(d))[16:] for d in datas]
        assert store.start_write(0, sources[0], False, results.append) is not None
        assert store.start_write(n, sources[1], True, results.append) is not None
        assert store.bounces.idle_bytes == 0  # both in flight: nothing to reuse yet
        await until(lambda: len(results) == 2)
        assert results == [True, True] and store.bounces.idle_bytes == 2 * n
        assert store.start_write(2 * n, [sources[2][:100], sources[2][100:]], False,
                                 results.append) is not None  # fmt: skip
        assert store.bounces.idle_bytes == n  # one of the two idle ones was taken
        await until(lambda: len(results) == 3)
        assert results[2] is True and store.bounces.idle_bytes == 2 * n
        got = aligned_buffer(3 * n)
        await store.readinto(0, got)
        assert bytes(got) == b"".join(datas)
    finally:
        await store.close()


async def test_large_reads_fill_a_buffer_that_was_not_zeroed_and_only_a_full_one_is_handed_out(
    tmp_path: Path,
) -> None:
    """A BLOCKIO read of UNINITIALIZED_FROM bytes or more skips the zero fill:
    the buffer handed to ``done`` holds exactly the file's bytes; a read the
    kernel cannot complete (past the end of the file: a short read) hands no
    buffer out, only ``failed`` learns of it."""
    from pyscst.devices.direct import UNINITIALIZED_FROM
    from tests.fakes import until

    store = await _open(tmp_path / "d.img", size=1 * MIB)
    try:
        if store.engine is None:
            pytest.skip("no io_uring here: BLOCKIO reads take the task path")
        n = 2 * UNINITIALIZED_FROM
        data = os.urandom(n)
        src = aligned_buffer(n)
        src[:] = data
        await store.write(4096, src)
        got: list[object] = []
        failed: list[object] = []
        for offset in (4096, 4096 + 512):  # (any block-aligned offset)
            assert store.start_read_new(offset, n, got.append, failed.append) is not None
        await until(lambda: len(got) == 2)
        first, second = got
        assert isinstance(first, memoryview) and bytes(first) == data
        assert isinstance(second, memoryview) and bytes(second[: n - 512]) == data[512:]
        assert not failed
        # the file ends at 1 MiB: a read running past it comes back short
        assert store.start_read_new(1 * MIB - 4096, n, got.append, failed.append) is not None
        await until(lambda: failed)
        assert len(got) == 2 and failed == [None]  # (None: redo it the task way)
    finally:
        await store.close()


@pytest.mark.parametrize("engine", ["auto", "threads"])
async def test_loop_device_roundtrip_unaligned_buffers(engine: str) -> None:
    with loop_device(16 * MIB) as dev:
        store = await _open(dev, io_engine=engine)
        try:
            assert store.block_device and store.size == 16 * MIB
            assert store.read_now(0, memoryview(bytearray(512))) is False  # never inline
            payload = os.urandom(3 * 4096)
            buf = bytearray(len(payload) + 16)
            buf[16:] = payload  # a buffer O_DIRECT would refuse: bounced
            await store.write(4096, memoryview(buf)[16:], fua=True)
            got = bytearray(len(payload))
            await store.readinto(4096, memoryview(got))
            assert got == payload
            await store.flush()
            # what the device holds, read past our descriptor
            with open(dev, "rb") as f:
                f.seek(4096)
                assert f.read(len(payload)) == payload
        finally:
            await store.close()


async def test_loop_device_discard_reads_zeros() -> None:
    with loop_device(16 * MIB) as dev:
        store = await _open(dev)
        try:
            await store.write(MIB, os.urandom(MIB))
            await store.discard(MIB, 512 * 1024)
            got = aligned_buffer(MIB)
            await store.readinto(MIB, got)
            assert bytes(got[: 512 * 1024]) == bytes(512 * 1024)
            assert any(got[512 * 1024 :])
        finally:
            await store.close()


def _backing_file_holes(dev: Path) -> list[tuple[int, int]]:
    """The holes of a loop device's backing file (what the device really deallocated)."""
    backing = Path(f"/sys/block/{dev.name}/loop/backing_file").read_text().strip()
    holes = []
    fd = os.open(backing, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            if hole >= end:
                break
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:
                data = end
            holes.append((hole, data))
            pos = data
    finally:
        os.close(fd)
    return holes


async def test_loop_device_discard_deallocates_and_extents_say_so() -> None:
    """UNMAP / BLOCK ERASE on a block device really deallocate (the loop device's
    file gets a hole), and GET LBA STATUS's extents report what the store
    deallocated until a write maps part of it again."""
    with loop_device(16 * MIB) as dev:
        store = await _open(dev)
        try:
            await store.write(0, os.urandom(4 * MIB))
            assert await store.extents(0, 4 * MIB, 8) == [(0, 4 * MIB, True)]  # unknown: mapped
            await store.discard(MIB, 2 * MIB)
            assert any(h <= MIB and d >= 3 * MIB for h, d in _backing_file_holes(dev))
            assert await store.extents(0, 4 * MIB, 8) == [
                (0, MIB, True), (MIB, 2 * MIB, False), (3 * MIB, MIB, True)
            ]
            await store.write(2 * MIB, os.urandom(4096))  # mapped again
            assert await store.extents(MIB, 2 * MIB, 8) == [
                (MIB, MIB, False), (2 * MIB, 4096, True), (2 * MIB + 4096, MIB - 4096, False)
            ]
            assert await store.extents(MIB, 2 * MIB, 2) == [
                (MIB, MIB, False), (2 * MIB, 4096, True)
            ]  # the limit: fewer runs, in order
        finally:
            await store.close()


async def test_block_size_below_logical_block_size_is_a_config_error() -> None:
    with loop_device(16 * MIB, logical_block_size=4096) as dev:
        with pytest.raises(DirectIoRefusedError, match=r"devices\.d1\.block_size: 512 .* 4096"):
            await _open(dev, block_size=512)
        store = await _open(dev, block_size=4096)  # whole device blocks: served
        await store.close()


def _tmpfs_takes_direct_io() -> bool:
    probe = Path("/dev/shm") / f"pyscst-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600))
        return True
    except OSError:
        return not Path("/dev/shm").is_dir()
    finally:
        probe.unlink(missing_ok=True)


@pytest.mark.skipif(
    _tmpfs_takes_direct_io(), reason="no tmpfs, or this kernel's tmpfs takes O_DIRECT (>= 6.6)"
)
async def test_tmpfs_refuses_direct_io_naming_the_key() -> None:
    shm = Path("/dev/shm")
    path = shm / f"pyscst-direct-{os.getpid()}.img"
    try:
        with pytest.raises(DirectIoRefusedError, match=r"devices\.d1\.path: .*O_DIRECT"):
            await _open(path)
    finally:
        path.unlink(missing_ok=True)


async def test_einval_at_direct_open_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a filesystem without O_DIRECT answers (EINVAL at open), wherever
    this kernel's tmpfs no longer does."""
    real_open = os.open

    def refusing_open(path: object, flags: int, *args: object, **kw: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(DirectIoRefusedError, match=r"devices\.d1\.path: .*refuses direct I/O"):
        await _open(tmp_path / "d.img")


async def test_file_roundtrip_fua_and_punch(tmp_path: Path) -> None:
    store = await _open(tmp_path / "d.img")
    try:
        assert not store.block_device
        payload = os.urandom(64 * 1024)
        await store.write(0, payload, fua=True)
        got = bytearray(len(payload))
        await store.readinto(0, memoryview(got))
        assert got == payload
        await store.discard(0, 64 * 1024)
        await store.readinto(0, memoryview(got))
        assert got == bytes(len(got))
    finally:
        await store.close()


async def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    (tmp_path / "ro.img").write_bytes(bytes(MIB))
    store = await _open(tmp_path / "ro.img", size=MIB, read_only=True)
    try:
        with pytest.raises(StoreReadOnlyError):
            await store.write(0, bytes(512))
    finally:
        await store.close()


async def test_path_confinement_applies(tmp_path: Path) -> None:
    outside = tmp_path / "outside.img"
    inside = tmp_path / "in"
    inside.mkdir()
    with pytest.raises(PermissionError):
        await DirectStore.open_direct(
            outside, key="devices.d1", size=MIB, block_size=512, roots=(inside,)
        )
    assert not outside.exists()
