"""WRITE ATOMIC(16): Block Limits atomic fields and every CDB check, with field pointers."""

from __future__ import annotations

import os
import struct

from pyscst.devices.disk import DiskDevice
from pyscst.devices.disk_atomic import MAX_ATOMIC_BYTES
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.sense import Asc, FieldPointer, SenseKey, Status
from tests.fakes import FakeContext, run_cdb
from tests.unit.devices.test_disk_io import BLOCKS, BS, assert_sense, disk, read10


def wa16(lba: int, n: int, flags: int = 0, boundary: int = 0) -> bytes:
    return struct.pack(">BBQHHBB", 0x9C, flags, lba, boundary, n, 0, 0)


def inquiry_b0() -> bytes:
    return bytes((0x12, 0x01, 0xB0, 0x00, 0xFF, 0x00))


async def read(d: DiskDevice, lba: int, n: int) -> bytes:
    out = await run_cdb(d, read10(lba, n))
    assert out.status == Status.GOOD and out.data is not None
    return out.data


async def test_block_limits_advertise_atomic_fields() -> None:
    d = disk()
    out = await run_cdb(d, inquiry_b0())
    assert out.status == Status.GOOD and out.data is not None
    page = out.data
    assert len(page) == 64
    max_xfer = struct.unpack_from(">I", page, 8)[0]
    max_atomic, align, gran, with_boundary, boundary = struct.unpack_from(">IIIII", page, 44)
    assert max_atomic == min(max_xfer, MAX_ATOMIC_BYTES // BS) and max_atomic >= 256
    # one 4096-byte page: what the page cache never tears; no boundaries
    assert (align, gran, with_boundary, boundary) == (8, 8, 0, 0)


async def test_write_atomic_writes_the_range() -> None:
    d = disk()
    data = os.urandom(8 * BS)
    for flags in (0, 0x08, 0x10, 0x18):  # DPO and FUA are accepted
        out = await run_cdb(d, wa16(96, 8, flags), data_out=data)
        assert out.status == Status.GOOD
        assert await read(d, 96, 8) == data
    assert (await run_cdb(d, wa16(0, 0))).status == Status.GOOD  # 0 blocks: nothing


async def test_write_atomic_field_checks_write_nothing() -> None:
    d = disk()
    most = d.limits.max_atomic_blocks
    cases = [
        (wa16(0, 8, boundary=8), FieldPointer(10)),  # no atomic boundaries
        (wa16(0, most + 8), FieldPointer(12)),  # beyond MAXIMUM ATOMIC TRANSFER LENGTH
        (wa16(0, 4), FieldPointer(12)),  # not a multiple of the granularity
        (wa16(4, 8), FieldPointer(2)),  # LBA not aligned
        (wa16(0, 8, 0x20), FieldPointer(1, 5)),  # WRPROTECT
        (wa16(0, 8, 0x04), FieldPointer(1, 2)),  # reserved bit
    ]
    for cdb, pointer in cases:
        n = struct.unpack_from(">H", cdb, 12)[0]
        out = await run_cdb(d, cdb, data_out=b"\x01" * (n * BS))
        assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, pointer)
    assert await read(d, 0, 1) == bytes(BS)


async def test_atomic_unit_is_a_physical_block_when_larger_than_a_page() -> None:
    d = DiskDevice("p", MemoryStore(1 << 22), block_size=512, lbppbe=4)  # 8 KiB physical
    assert (d.limits.atomic_alignment, d.limits.atomic_granularity) == (16, 16)
    out = await run_cdb(d, wa16(8, 16), data_out=bytes(16 * BS))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(2))
    assert (await run_cdb(d, wa16(16, 16), data_out=bytes(16 * BS))).status == Status.GOOD


async def test_write_atomic_range_protection_and_short_data() -> None:
    d = disk()
    for cdb in (wa16(BLOCKS - 8, 16), wa16(BLOCKS, 0), wa16(2**63, 0), wa16(2**64 - 8, 8)):
        assert_sense(await run_cdb(d, cdb, data_out=bytes(16 * BS)),
                     SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE.value)
    out = await run_cdb(d, wa16(0, 8), data_out=b"\x01" * 8 * BS,
                        ctx=FakeContext(read_only=True))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)
    # a truncated transfer is refused whole: not even its whole blocks land
    out = await run_cdb(d, wa16(0, 16), data_out=b"\x01" * (16 * BS), expected_length=8 * BS)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_INFORMATION_UNIT.value)
    assert await read(d, 0, 16) == bytes(16 * BS)


async def test_atomic_limit_follows_block_size_and_max_transfer() -> None:
    d = DiskDevice("d", MemoryStore(1 << 22), block_size=4096)
    assert d.limits.max_atomic_blocks == MAX_ATOMIC_BYTES // 4096
    small = DiskDevice("s", MemoryStore(1 << 20), max_transfer_bytes=68 * 512)
    assert small.limits.max_atomic_blocks == 64  # whole pages only
    tiny = DiskDevice("t", MemoryStore(1 << 20), max_transfer_bytes=2048)
    assert (tiny.limits.max_atomic_blocks, tiny.limits.atomic_alignment) == (0, 0)
