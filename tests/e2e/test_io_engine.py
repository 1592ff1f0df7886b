"""Cold data through the real daemon with each I/O engine (issue 17).

Data is written over iSCSI (plain and FUA), flushed with SYNCHRONIZE CACHE,
partly unmapped, then evicted from the page cache (POSIX_FADV_DONTNEED: no
root needed) so every read misses and goes through the engine under test:
io_uring or worker threads. Many reads are in flight at once (one session,
queue depth 16) so the io_uring run batches submissions. The log names the
engine the device uses.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import trio

from pyscst.devices import uring
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10, write10
from tests.daemon import running_daemon_async
from tests.unit.devices.test_disk_write_ext import unmap, unmap_params

BS = 512
BLOCKS = 8192  # 4 MiB
GOOD = 0
UNAVAILABLE = uring.probe()


def sync_cache10() -> bytes:
    return struct.pack(">BBIBHB", 0x35, 0, 0, 0, 0, 0)


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(
            "uring",
            marks=pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}"),
        ),
        "threads",
    ],
)
async def test_cold_reads_fua_sync_unmap(tmp_path: Path, engine: str) -> None:
    devices = {"disk0": {"handler": "vdisk_fileio", "size": "4MiB", "io_engine": engine}}
    async with running_daemon_async(tmp_path, devices=devices) as d:
        expected = bytearray(os.urandom(BLOCKS * BS))
        async with await Initiator.connect(
            d.host, d.port, target_name=d.target, initiator_name="iqn.2026-12.org.example:cold"
        ) as ini:
            await ini.execute(0, TUR)  # the power-on unit attention
            for lba in range(0, BLOCKS, 256):  # 128 KiB writes, every other one FUA
                chunk = expected[lba * BS : (lba + 256) * BS]
                cdb = write10(lba, 256, fua=bool(lba & 256))
                assert (await ini.execute(0, cdb, chunk)).status == GOOD
            assert (await ini.execute(0, sync_cache10())).status == GOOD
            params = unmap_params((1000, 24), (5000, 100))
            r = await ini.execute(0, unmap(len(params)), params)
            assert r.status == GOOD, r.sense
            expected[1000 * BS : 1024 * BS] = bytes(24 * BS)
            expected[5000 * BS : 5100 * BS] = bytes(100 * BS)
            drop_cache(d.state_dir / "disk0.img")
            got: dict[int, bytes] = {}

            async def reader(first: int) -> None:
                for lba in range(first, BLOCKS, 16 * 8):  # 16 readers, 4 KiB each, cold
                    r = await ini.execute(0, read10(lba, 8), read_length=8 * BS)
                    assert r.status == GOOD, r.sense
                    got[lba] = bytes(r.data)

            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(reader, i * 8)
        for lba, data in got.items():
            assert data == expected[lba * BS : (lba + 8) * BS], lba
        assert len(got) == BLOCKS // 8
    log = d.stderr_text()
    want = "io engine io_uring" if engine == "uring" else "io engine threads (configured)"
    assert f"device disk0: {want}" in log
