"""The hot data path end to end: the synchronous fast path and its fallbacks.

READs that hit the page cache and WRITEs whose data all came as immediate
data finish inside ``LogicalUnit.submit`` and answer with one Data-In (status
collapsed) or one SCSI Response; everything else (R2T-driven writes, FUA,
Data-In split by the initiator's MaxRecvDataSegmentLength, odd lengths that
need padding, digests) takes the awaiting path. Each combination must move
the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10, write10
from tests.daemon import running_daemon_async

BS = 512
DEVICES = {"disk0": {"handler": "vdisk_fileio", "size": "4MiB"}}


@pytest.mark.parametrize(
    "options",
    [
        {},  # immediate data, big segments: everything on the fast path
        {"initial_r2t": True, "immediate_data": False},  # every write needs R2Ts
        # R2Ts of 4 KiB: a 64 KiB write's Data-Out comes in 16 bursts, each
        # solicited as the one before completes (no task waits: data_later)
        {"initial_r2t": True, "max_burst_length": 4096, "first_burst_length": 4096},
        {"max_recv_data_segment_length": 512, "first_burst_length": 4096},  # split
        {"header_digest": True, "data_digest": True},
    ],
    ids=["fast", "r2t", "r2t-bursts", "small-segments", "digests"],
)
async def test_writes_then_reads_return_the_same_bytes(
    tmp_path: Path, options: dict[str, object]
) -> None:
    payloads = {lba: os.urandom(BS * n) for lba, n in ((0, 1), (8, 8), (64, 128), (400, 3))}
    async with running_daemon_async(tmp_path, devices=DEVICES) as d:
        async with await Initiator.connect(
            d.host, d.port, target_name=d.target, **options  # type: ignore[arg-type]
        ) as ini:
            await ini.execute(0, TUR)  # the power-on UA
            for i, (lba, data) in enumerate(payloads.items()):
                r = await ini.execute(0, write10(lba, len(data) // BS, fua=i == 1), data)
                assert r.status == 0, r.sense
            for lba, data in payloads.items():
                r = await ini.execute(0, read10(lba, len(data) // BS), read_length=len(data))
                assert r.status == 0 and r.residual_count == 0
                assert bytes(r.data) == data
            # many at once: queued commands take the same paths in any mix
            itts = [
                ini.submit(0, read10(lba, len(data) // BS), read_length=len(data))
                for lba, data in payloads.items()
            ]
            for itt, data in zip(itts, payloads.values(), strict=True):
                r = await ini.wait(itt)
                assert r.status == 0 and bytes(r.data) == data


async def test_odd_length_data_in_is_padded(tmp_path: Path) -> None:
    """Data segments are padded to 4 bytes; a fast single Data-In must be too."""
    async with running_daemon_async(tmp_path, devices=DEVICES) as d:
        async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
            for alloc in (1, 2, 3, 5, 37, 255):
                r = await ini.execute(0, bytes((0x12, 0, 0, 0, alloc, 0)), read_length=alloc)
                full = r.data[4] + 5 if alloc >= 5 else alloc
                assert r.status == 0 and len(r.data) == min(alloc, full)
                assert r.data[0] == 0x00  # direct-access block device
            r = await ini.execute(0, TUR)  # and the stream is still in step
            assert r.status == 2  # the power-on UA, now that INQUIRY let it wait
            r = await ini.execute(0, TUR)
            assert r.status == 0


async def test_short_and_long_allocation_residuals_on_reads(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, devices=DEVICES) as d:
        async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
            await ini.execute(0, TUR)
            # EDTL smaller than the transfer: overflow, only EDTL bytes sent
            r = await ini.execute(0, read10(0, 2), read_length=BS)
            assert r.status == 0 and r.residual_overflow and r.residual_count == BS
            assert len(r.data) == BS
            # EDTL larger: underflow
            r = await ini.execute(0, read10(0, 1), read_length=3 * BS)
            assert r.status == 0 and r.residual_underflow and r.residual_count == 2 * BS


async def test_large_reads_from_many_workers_keep_the_stream_in_order(tmp_path: Path) -> None:
    """32 x 128 KiB outstanding is more than a loopback socket buffer holds:
    the reader's direct write goes out in part and the writer task sends the
    rest, and nothing written later may overtake it."""
    size = 8 << 20
    image = os.urandom(size)
    devices = {"disk0": {"handler": "vdisk_fileio", "size": size}}
    chunk = 128 * 1024
    async with running_daemon_async(tmp_path, devices=devices) as d:
        async with await Initiator.connect(
            d.host, d.port, target_name=d.target, max_recv_data_segment_length=262144
        ) as ini:
            await ini.execute(0, TUR)
            for off in range(0, size, 1 << 20):
                blocks = (1 << 20) // BS
                r = await ini.execute(0, write10(off // BS, blocks), image[off : off + (1 << 20)])
                assert r.status == 0
            # iscsi-perf's shape: 16 workers, each sends its next read as soon
            # as the last one is answered, so commands keep arriving while
            # earlier answers still sit in the writer
            async def worker(n: int) -> None:
                for i in range(12):
                    off = ((n * 12 + i) * 7 % (size // chunk)) * chunk
                    r = await ini.execute(0, read10(off // BS, chunk // BS), read_length=chunk)
                    assert r.status == 0 and bytes(r.data) == image[off : off + chunk]

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for n in range(16):
                        nursery.start_soon(worker, n)


async def test_a_busy_connection_does_not_starve_another(tmp_path: Path) -> None:
    """The reader reads its socket directly while bytes keep coming and yields
    only every few reads: a second session must still be served promptly."""
    devices = {"null0": {"handler": "vdisk_nullio", "size": "64MiB"}}
    luns = ({"lun": 0, "device": "null0"},)
    async with running_daemon_async(tmp_path, devices=devices, luns=luns) as d:
        async with (
            await Initiator.connect(d.host, d.port, target_name=d.target) as busy,
            await Initiator.connect(d.host, d.port, target_name=d.target) as quiet,
        ):
            await busy.execute(0, TUR)
            await quiet.execute(0, TUR)
            stop = trio.Event()

            async def flood(n: int) -> None:
                while not stop.is_set():
                    r = await busy.execute(0, read10(n * 8, 8), read_length=8 * BS)
                    assert r.status == 0

            async with trio.open_nursery() as nursery:
                for n in range(32):
                    nursery.start_soon(flood, n)
                await trio.sleep(0.3)
                worst = 0.0
                for _ in range(20):
                    start = trio.current_time()
                    with trio.fail_after(5):
                        r = await quiet.execute(0, TUR)
                    assert r.status == 0
                    worst = max(worst, trio.current_time() - start)
                stop.set()
            # served in turn with the flood, not after it: far below the 5 s cap
            assert worst < 1.0, f"a TUR waited {worst:.2f} s behind a busy connection"
