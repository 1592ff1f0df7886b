"""Backing stores: FILEIO semantics, NULLIO, and cancellation safety."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from pyscst.devices.stores import (
    FileStore,
    MemoryStore,
    NullStore,
    StoreReadOnlyError,
    filesystem_type,
)
from pyscst.scsi.command import Buffer


async def test_filestore_creates_sparse_file_of_given_size(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    store = await FileStore.open(path, size=1 << 30)
    try:
        assert store.size == 1 << 30
        st = os.stat(path)
        assert st.st_size == 1 << 30
        assert st.st_blocks * 512 < 1 << 20  # sparse
        buf = bytearray(4096)
        await store.readinto((1 << 30) - 4096, memoryview(buf))
        assert buf == bytes(4096)
    finally:
        await store.close()


async def test_filestore_write_read_roundtrip(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20)
    try:
        payload = os.urandom(8192)
        await store.write(4096, payload)
        await store.write(65536, payload[:512], fua=True)
        buf = bytearray(8192)
        await store.readinto(4096, memoryview(buf))
        assert buf == payload
        await store.readinto(65536, memoryview(buf)[:512])
        assert buf[:512] == payload[:512]
        await store.flush()
    finally:
        await store.close()
    with open(tmp_path / "d", "rb") as f:
        f.seek(4096)
        assert f.read(8192) == payload


async def test_filestore_thread_fallback_paths(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "d", size=1 << 20)
    store._nowait_reads = False
    store._nowait_writes = False
    try:
        await store.write(0, b"x" * 4096)
        buf = bytearray(4096)
        await store.readinto(0, memoryview(buf))
        assert buf == b"x" * 4096
    finally:
        await store.close()


async def test_filestore_existing_file_keeps_size_and_grows(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.write_bytes(b"a" * 8192)
    store = await FileStore.open(path)
    assert store.size == 8192
    await store.resize(16384)
    assert store.size == 16384 and os.path.getsize(path) == 16384
    await store.close()
    # a larger configured size extends an existing file only when asked
    with pytest.raises(ValueError, match="16384 bytes, smaller than the configured size 32768"):
        await FileStore.open(path, size=32768)
    assert os.path.getsize(path) == 16384
    store = await FileStore.open(path, size=32768, grow=True)
    assert store.size == 32768
    await store.close()


async def test_filestore_missing_without_create_or_size(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await FileStore.open(tmp_path / "nope", size=4096, create=False)
    with pytest.raises(ValueError):
        await FileStore.open(tmp_path / "empty")


async def test_filestore_read_only(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.write_bytes(b"z" * 4096)
    store = await FileStore.open(path, read_only=True)
    try:
        assert store.read_only
        with pytest.raises(StoreReadOnlyError):
            await store.write(0, b"a" * 512)
        buf = bytearray(512)
        await store.readinto(0, memoryview(buf))
        assert buf == b"z" * 512
    finally:
        await store.close()


async def test_cancelled_write_is_never_half_done(tmp_path: Path) -> None:
    """A write stuck in its worker thread completes even when cancelled."""
    store = await FileStore.open(tmp_path / "d", size=1 << 20)
    store._nowait_writes = False
    real = store._write_blocking

    def slow(offset: int, data: memoryview | list[Buffer], flags: int) -> None:
        time.sleep(0.2)
        real(offset, data, flags)

    store._write_blocking = slow  # type: ignore[method-assign]
    payload = b"n" * 65536
    start = trio.current_time()
    with trio.move_on_after(0.05) as scope:
        await store.write(0, payload)
        await trio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert trio.current_time() - start >= 0.2  # waited for the thread
    buf = bytearray(65536)
    store._write_blocking = real  # type: ignore[method-assign]
    await store.readinto(0, memoryview(buf))
    assert buf == payload
    await store.close()


async def test_nullstore_reads_zeros_and_discards_writes() -> None:
    store = NullStore(1 << 40)
    buf = bytearray(b"\xff" * (3 << 20))
    await store.write(0, b"abc")
    await store.readinto(12345, memoryview(buf))
    assert buf == bytes(len(buf))
    assert store.size == 1 << 40
    with pytest.raises(StoreReadOnlyError):
        await NullStore(4096, read_only=True).write(0, b"a")


async def test_memorystore_roundtrip_and_resize() -> None:
    store = MemoryStore(8192)
    await store.write(512, b"q" * 512)
    buf = bytearray(1024)
    await store.readinto(0, memoryview(buf))
    assert buf[512:] == b"q" * 512 and buf[:512] == bytes(512)
    await store.resize(4096)
    assert store.size == 4096


async def test_inline_write_stall_sends_writes_to_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyscst.devices.stores as stores

    store = await FileStore.open(tmp_path / "d", size=1 << 20, io_engine="threads")
    store._nowait_writes = False  # as on ext4
    monkeypatch.setattr(stores, "STALL_LIMIT", -1.0)  # every inline write "stalls"
    calls: list[int] = []
    real = store._write_blocking

    def spy(offset: int, data: memoryview | list[Buffer], flags: int) -> None:
        calls.append(offset)
        real(offset, data, flags)

    store._write_blocking = spy  # type: ignore[method-assign]
    await store.write(0, b"a" * 4096)
    assert store.stalls == 1
    await store.write(4096, b"b" * 4096)  # within the backoff: thread path, not timed
    assert store.stalls == 1 and calls == [0, 4096]
    buf = bytearray(8192)
    await store.readinto(0, memoryview(buf))
    assert buf == b"a" * 4096 + b"b" * 4096
    await store.close()


def test_filesystem_type_takes_the_longest_mount_point(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "23 22 0:20 / /dev/shm rw shared:2 - tmpfs tmpfs rw\n"
        "24 22 0:21 / /srv/my\\040disks rw shared:3 - xfs /dev/sdb1 rw\n"
        "25 22 0:22 / /dev/shmx rw shared:4 - nfs4 srv:/x rw\n"
    )
    assert filesystem_type("/dev/shm/pyscst/disk.img", str(info)) == "tmpfs"
    assert filesystem_type("/dev/shmx/disk.img", str(info)) == "nfs4"
    assert filesystem_type("/srv/my disks/a.img", str(info)) == "xfs"
    assert filesystem_type("/var/lib/a.img", str(info)) == "ext4"
    assert filesystem_type("/x", str(tmp_path / "missing")) is None


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this machine")
async def test_store_on_tmpfs_never_backs_off_to_threads(tmp_path: Path) -> None:
    if filesystem_type("/dev/shm") != "tmpfs":
        pytest.skip("/dev/shm is not tmpfs here")
    path = Path("/dev/shm") / f"pyscst-test-{os.getpid()}.img"
    store = await FileStore.open(path, size=1 << 20)
    try:
        assert store.memory_backed
        store._timed(time.monotonic() - 1.0)  # a 1 s "stall" (preempted, say)
        assert store.stalls == 0 and store.read_now(0, memoryview(bytearray(4096)))
    finally:
        await store.close()
        path.unlink()
    disk = await FileStore.open(tmp_path / "d.img", size=1 << 20)
    try:
        if filesystem_type(str(tmp_path)) not in ("tmpfs", "ramfs"):
            assert not disk.memory_backed
            disk._timed(time.monotonic() - 1.0)
            assert disk.stalls == 1  # a real stall on a disk-backed file does back off
    finally:
        await disk.close()


async def test_filestore_writes_pieces_with_one_pwritev_and_finishes_a_short_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write's data-out pieces go to the file as they are (one pwritev, no
    join); a short pwritev of pieces (rare) is finished from the rest."""
    store = await FileStore.open(tmp_path / "d", size=1 << 20)
    try:
        pieces: list[Buffer] = [b"a" * 1000, memoryview(b"b" * 3000), bytearray(b"c" * 96)]
        calls: list[int] = []
        real = os.pwritev

        def counting(fd: int, buffers: list[Buffer], offset: int, flags: int = 0) -> int:
            calls.append(len(buffers))
            return real(fd, buffers, offset, flags)

        monkeypatch.setattr(os, "pwritev", counting)
        assert store.write_now(8192, pieces)
        assert calls and set(calls) == {3}  # (a refused RWF_NOWAIT try, then the write)
        got = bytearray(4096)
        await store.readinto(8192, memoryview(got))
        assert bytes(got) == b"a" * 1000 + b"b" * 3000 + b"c" * 96

        def short(fd: int, buffers: list[Buffer], offset: int, flags: int = 0) -> int:
            if len(buffers) > 1:  # the kernel took only part of the pieces
                return real(fd, [memoryview(buffers[0])[:700]], offset, flags)
            return real(fd, buffers, offset, flags)

        monkeypatch.setattr(os, "pwritev", short)
        store._write_blocking(0, [b"x" * 1000, b"y" * 24], 0)
        head = bytearray(1024)
        await store.readinto(0, memoryview(head))
        assert bytes(head) == b"x" * 1000 + b"y" * 24
    finally:
        await store.close()


@pytest.mark.parametrize("n", [512, 4096, (1 << 20), (1 << 20) + 512, (3 << 20) + 4096])
def test_null_store_read_now_zeroes_whatever_the_buffer_held(n: int) -> None:
    buf = bytearray(b"\xff") * n
    assert NullStore(1 << 40).read_now(0, memoryview(buf))
    assert buf == bytes(n)
