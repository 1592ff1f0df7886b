"""WRITE SAME, UNMAP, COMPARE AND WRITE and ORWRITE through the SBC table."""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

import pytest

from pyscst.devices.disk import MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BLOCKS, DiskDevice
from pyscst.devices.stores import FileStore, MemoryStore, NullStore
from pyscst.scsi.sense import Asc, FieldPointer, SenseKey, Status
from tests.fakes import FakeContext, run_cdb
from tests.unit.devices.test_disk_io import BLOCKS, BS, assert_sense, cdb16, disk, read10, write10


def ws10(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x41, flags, lba, 0, n, 0)


def ws16(lba: int, n: int, flags: int = 0) -> bytes:
    return cdb16(0x93, lba, n, flags)


def unmap(length: int, anchor: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x42, anchor, 0, 0, length, 0)


def unmap_params(*ranges: tuple[int, int]) -> bytes:
    descs = b"".join(struct.pack(">QII", lba, n, 0) for lba, n in ranges)
    return struct.pack(">HHI", 6 + len(descs), len(descs), 0) + descs


def caw(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQ3xBBB", 0x89, flags, lba, n, 0, 0)


def orwrite(lba: int, n: int, flags: int = 0) -> bytes:
    return cdb16(0x8B, lba, n, flags)


async def read(d: DiskDevice, lba: int, n: int) -> bytes:
    out = await run_cdb(d, read10(lba, n))
    assert out.status == Status.GOOD and out.data is not None
    return out.data


async def fill(d: DiskDevice, lba: int, data: bytes) -> None:
    out = await run_cdb(d, write10(lba, len(data) // BS), data_out=data)
    assert out.status == Status.GOOD


# --- WRITE SAME ---------------------------------------------------------------


@pytest.mark.parametrize("make", [ws10, ws16])
async def test_write_same_replicates_one_block(make: object) -> None:
    d = disk()
    block = os.urandom(BS)
    out = await run_cdb(d, make(10, 5), data_out=block)  # type: ignore[operator]
    assert out.status == Status.GOOD
    assert out.cmd.transport.requests == [BS]  # type: ignore[attr-defined]
    assert await read(d, 10, 5) == block * 5
    assert await read(d, 9, 1) == bytes(BS) and await read(d, 15, 1) == bytes(BS)


@pytest.mark.parametrize("make", [ws10, ws16])
async def test_write_same_unmap_reads_back_zeros(make: object) -> None:
    d = disk()
    await fill(d, 0, b"\xff" * (8 * BS))
    # the data-out block is not zeros: the range is still unmapped (LBPRZ=1)
    out = await run_cdb(d, make(2, 4, 0x08), data_out=b"\xaa" * BS)  # type: ignore[operator]
    assert out.status == Status.GOOD
    assert await read(d, 0, 8) == b"\xff" * (2 * BS) + bytes(4 * BS) + b"\xff" * (2 * BS)


async def test_write_same_16_ndob_writes_zeros_without_data_out() -> None:
    d = disk()
    await fill(d, 0, b"\x11" * (4 * BS))
    out = await run_cdb(d, ws16(1, 2, 0x01), data_out=b"\x22" * BS)
    assert out.status == Status.GOOD
    assert out.cmd.transport.requests == []  # type: ignore[attr-defined]
    assert await read(d, 0, 4) == b"\x11" * BS + bytes(2 * BS) + b"\x11" * BS


async def test_write_same_zero_blocks_means_to_the_end() -> None:
    d = disk()
    out = await run_cdb(d, ws10(BLOCKS - 3, 0), data_out=b"\x5a" * BS)
    assert out.status == Status.GOOD
    assert await read(d, BLOCKS - 4, 4) == bytes(BS) + b"\x5a" * (3 * BS)
    # to the end would exceed MAXIMUM WRITE SAME LENGTH on a larger disk
    big = DiskDevice("big", NullStore((MAX_WRITE_SAME_BLOCKS + 10) * BS))
    out = await run_cdb(big, ws10(0, 0), data_out=bytes(BS))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value,
                 FieldPointer(7))
    assert (await run_cdb(big, ws10(10, 0), data_out=bytes(BS))).status == Status.GOOD


async def test_write_same_errors() -> None:
    d = disk()
    block = bytes(BS)
    for cdb in (ws10(BLOCKS - 1, 2), ws16(BLOCKS, 0), ws16(2**63, 1), ws16(2**64 - 1, 0)):
        assert_sense(await run_cdb(d, cdb, data_out=block), SenseKey.ILLEGAL_REQUEST,
                     Asc.LBA_OUT_OF_RANGE.value)
    big = DiskDevice("big", NullStore((MAX_WRITE_SAME_BLOCKS + 10) * BS))
    assert_sense(await run_cdb(big, ws16(0, MAX_WRITE_SAME_BLOCKS + 1), data_out=block),
                 SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(10))
    # ANCHOR (no ANC_SUP), PBDATA, LBDATA, WRPROTECT: invalid fields
    for flags, bit in ((0x10, 4), (0x04, 2), (0x02, 1), (0x20, 5)):
        assert_sense(await run_cdb(d, ws10(0, 1, flags), data_out=block),
                     SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value,
                     FieldPointer(1, bit))
    # NDOB is WRITE SAME(16) only
    assert_sense(await run_cdb(d, ws10(0, 1, 0x01), data_out=block),
                 SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(1, 0))
    # less than one block of data-out
    out = await run_cdb(d, ws16(0, 4), data_out=block, expected_length=BS // 2)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_INFORMATION_UNIT.value)
    # write protected: nothing written
    out = await run_cdb(d, ws10(0, 1), data_out=b"\x01" * BS, ctx=FakeContext(read_only=True))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)
    assert await read(d, 0, 1) == bytes(BS)


# --- UNMAP ------------------------------------------------------------------


async def test_unmap_ranges_read_back_zeros() -> None:
    d = disk()
    await fill(d, 0, b"\xee" * (16 * BS))
    params = unmap_params((1, 2), (8, 0), (10, 3))
    out = await run_cdb(d, unmap(len(params)), data_out=params)
    assert out.status == Status.GOOD
    expect = bytearray(b"\xee" * (16 * BS))
    expect[BS : 3 * BS] = bytes(2 * BS)
    expect[10 * BS : 13 * BS] = bytes(3 * BS)
    assert await read(d, 0, 16) == expect


async def test_unmap_empty_list_and_zero_length() -> None:
    d = disk()
    assert (await run_cdb(d, unmap(0))).status == Status.GOOD
    header = unmap_params()
    assert (await run_cdb(d, unmap(len(header)), data_out=header)).status == Status.GOOD
    # a partial trailing descriptor is ignored
    params = unmap_params((0, 1))[:-4]
    assert (await run_cdb(d, unmap(len(params)), data_out=params)).status == Status.GOOD


async def test_unmap_parameter_errors_change_nothing() -> None:
    d = disk()
    await fill(d, 0, b"\xee" * BS)
    out = await run_cdb(d, unmap(7), data_out=bytes(7))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR.value)
    # a good descriptor followed by one past the end: nothing is unmapped
    params = unmap_params((0, 1), (BLOCKS - 1, 2))
    out = await run_cdb(d, unmap(len(params)), data_out=params)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE.value)
    assert await read(d, 0, 1) == b"\xee" * BS
    too_many = unmap_params(*[(i, 1) for i in range(MAX_UNMAP_DESCRIPTORS + 1)])
    out = await run_cdb(d, unmap(len(too_many)), data_out=too_many)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST.value)
    big = DiskDevice("big", NullStore(BS << 32))
    limit = big.vpd.info.max_unmap_blocks
    params = unmap_params((0, limit), (limit, 1))
    out = await run_cdb(big, unmap(len(params)), data_out=params)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST.value)
    # ANCHOR is not supported
    out = await run_cdb(d, unmap(24, anchor=1), data_out=unmap_params((0, 1)))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value,
                 FieldPointer(1, 0))
    out = await run_cdb(d, unmap(24), data_out=unmap_params((0, 1)),
                        ctx=FakeContext(read_only=True))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)
    assert await read(d, 0, 1) == b"\xee" * BS


async def test_unmap_punches_holes_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "thin.img"
    store = await FileStore.open(path, size=BLOCKS * BS)
    d = DiskDevice("f", store)
    try:
        await fill(d, 0, os.urandom(1024 * BS))
        allocated = os.stat(path).st_blocks
        params = unmap_params((0, 1024))
        assert (await run_cdb(d, unmap(len(params)), data_out=params)).status == Status.GOOD
        assert await read(d, 0, 1024) == bytes(1024 * BS)
        if store.can_punch:
            assert os.stat(path).st_blocks < allocated
        assert os.stat(path).st_size == BLOCKS * BS
    finally:
        await d.close()


# --- COMPARE AND WRITE ------------------------------------------------------


async def test_compare_and_write_writes_when_equal() -> None:
    d = disk()
    old, new = b"A" * (2 * BS), b"B" * (2 * BS)
    await fill(d, 5, old)
    out = await run_cdb(d, caw(5, 2), data_out=old + new)
    assert out.status == Status.GOOD
    assert await read(d, 5, 2) == new


async def test_compare_and_write_miscompare_reports_offset_and_writes_nothing() -> None:
    d = disk()
    old = b"A" * (2 * BS)
    await fill(d, 5, old)
    verify = bytearray(old)
    verify[BS + 17] = ord("X")
    out = await run_cdb(d, caw(5, 2), data_out=bytes(verify) + b"B" * (2 * BS))
    assert_sense(out, SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY.value)
    assert out.sense is not None and out.sense.information == BS + 17
    assert await read(d, 5, 2) == old


async def test_compare_and_write_errors() -> None:
    d = disk()
    data = bytes(4 * BS)
    assert (await run_cdb(d, caw(0, 0), expected_length=0)).status == Status.GOOD
    # a count of 256 does not fit the field: data-out with 0 blocks is refused
    assert_sense(await run_cdb(d, caw(0, 0), data_out=data), SenseKey.ILLEGAL_REQUEST,
                 Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(13))
    small = disk(max_transfer_bytes=4 * BS)
    assert_sense(await run_cdb(small, caw(0, 5), data_out=bytes(10 * BS)),
                 SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(13))
    assert_sense(await run_cdb(d, caw(BLOCKS - 1, 2), data_out=data),
                 SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE.value)
    # the data-out must hold both halves
    out = await run_cdb(d, caw(0, 2), data_out=data, expected_length=3 * BS)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_INFORMATION_UNIT.value)
    out = await run_cdb(d, caw(0, 2), data_out=data, ctx=FakeContext(read_only=True))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)
    assert_sense(await run_cdb(d, caw(0, 1, 0x20), data_out=data[: 2 * BS]),
                 SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(1, 5))


async def test_compare_and_write_on_a_file_with_fua(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "caw.img", size=BLOCKS * BS)
    d = DiskDevice("f", store)
    try:
        await fill(d, 3, b"A" * BS)
        out = await run_cdb(d, caw(3, 1, 0x08), data_out=b"A" * BS + b"C" * BS)
        assert out.status == Status.GOOD
        assert await read(d, 3, 1) == b"C" * BS
        out = await run_cdb(d, caw(3, 1), data_out=b"A" * BS + b"D" * BS)
        assert_sense(out, SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY.value)
        assert out.sense is not None and out.sense.information == 0
    finally:
        await d.close()
    with open(tmp_path / "caw.img", "rb") as f:
        f.seek(3 * BS)
        assert f.read(BS) == b"C" * BS


# --- ORWRITE ------------------------------------------------------------------


async def test_orwrite_ors_into_the_medium() -> None:
    d = disk()
    await fill(d, 7, b"\x0f" * BS + b"\x80" * BS)
    out = await run_cdb(d, orwrite(7, 2), data_out=b"\xf0" * BS + b"\x01" * BS)
    assert out.status == Status.GOOD
    assert await read(d, 7, 2) == b"\xff" * BS + b"\x81" * BS


async def test_orwrite_errors() -> None:
    d = disk()
    assert (await run_cdb(d, orwrite(0, 0))).status == Status.GOOD
    assert_sense(await run_cdb(d, orwrite(BLOCKS - 1, 2), data_out=bytes(2 * BS)),
                 SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE.value)
    assert_sense(await run_cdb(d, orwrite(0, 1, 0x20), data_out=bytes(BS)),
                 SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(1, 5))
    out = await run_cdb(d, orwrite(0, 2), data_out=bytes(BS), expected_length=BS)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_INFORMATION_UNIT.value)
    out = await run_cdb(d, orwrite(0, 1), data_out=b"\x01" * BS, ctx=FakeContext(read_only=True))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)
    assert await read(d, 0, 1) == bytes(BS)


# --- stores -------------------------------------------------------------------


async def test_store_discard_zeroes_ranges(tmp_path: Path) -> None:
    mem = MemoryStore(8 * BS)
    mem.data[:] = b"\x77" * (8 * BS)
    await mem.discard(BS, 2 * BS)
    assert mem.data == b"\x77" * BS + bytes(2 * BS) + b"\x77" * (5 * BS)
    f = await FileStore.open(tmp_path / "z.img", size=8 * BS)
    try:
        await f.write(0, b"\x77" * (8 * BS))
        f.can_punch = False  # the zero-writing fallback
        await f.discard(BS, 2 * BS)
        buf = bytearray(8 * BS)
        await f.readinto(0, memoryview(buf))
        assert buf == b"\x77" * BS + bytes(2 * BS) + b"\x77" * (5 * BS)
    finally:
        await f.close()
    ro = MemoryStore(BS, read_only=True)
    with pytest.raises(OSError):
        await ro.discard(0, BS)


# --- GET LBA STATUS -------------------------------------------------------------


def get_lba_status(lba: int, alloc: int) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0)


def lba_status(data: bytes) -> list[tuple[int, int, int]]:
    length = struct.unpack_from(">I", data)[0]
    assert length + 4 == len(data)
    return [struct.unpack_from(">QIB", data, off) for off in range(8, len(data), 16)]


async def test_get_lba_status_reports_holes_of_the_file(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "gls.img", size=BLOCKS * BS)
    d = DiskDevice("f", store)
    try:
        await fill(d, 0, os.urandom(256 * BS))
        out = await run_cdb(d, get_lba_status(0, 1024))
        assert out.status == Status.GOOD and out.data is not None
        runs = lba_status(out.data)
        assert runs[0] == (0, 256, 0) and runs[-1][0] + runs[-1][1] == BLOCKS
        assert all(status == 1 for _, _, status in runs[1:])  # never written: a hole
        params = unmap_params((64, 64))
        assert (await run_cdb(d, unmap(len(params)), data_out=params)).status == Status.GOOD
        out = await run_cdb(d, get_lba_status(8, 1024))
        assert out.data is not None
        runs = lba_status(out.data)
        assert runs[:3] == [(8, 56, 0), (64, 64, 1), (128, 128, 0)]
        # descriptors are contiguous from the starting LBA
        assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(runs))
        # the allocation length truncates; a 24-byte answer has the first run
        out = await run_cdb(d, get_lba_status(70, 24))
        assert out.data is not None and len(out.data) == 24
        assert struct.unpack_from(">QIB", out.data, 8) == (70, 58, 1)
    finally:
        await d.close()


async def test_get_lba_status_memory_and_errors() -> None:
    d = disk()
    out = await run_cdb(d, get_lba_status(BLOCKS - 2, 64))
    assert out.data is not None and lba_status(out.data) == [(BLOCKS - 2, 2, 0)]
    assert_sense(await run_cdb(d, get_lba_status(BLOCKS, 64)), SenseKey.ILLEGAL_REQUEST,
                 Asc.LBA_OUT_OF_RANGE.value)
    out = await run_cdb(d, get_lba_status(0, 0))
    assert out.status == Status.GOOD and out.data == b""
