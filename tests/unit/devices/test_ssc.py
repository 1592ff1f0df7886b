"""The SSC command set without a daemon: records, filemarks, positioning,
the stream sense (FILEMARK, EOM, ILI, INFORMATION), partitions, MAM, log
pages, and the hostile cases (bad fields, protected and WORM media, damage)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from pyscst.devices.tape import TapeDevice
from pyscst.devices.tape_cartridge import HEADER_SIZE, Kind, create_blank, open_cartridge
from pyscst.scsi.sense import Asc, SenseKey, Status
from tests.fakes import FakeContext, Outcome, run_cdb

MIB = 1 << 20


def drive(tmp_path: Path, capacity: int = 8 * MIB, **kw: object) -> TapeDevice:
    path = create_blank(tmp_path / "T1", "T00001L8", capacity, **kw)  # type: ignore[arg-type]
    return TapeDevice("t0", open_cartridge(path))


def c6(op: int, b1: int = 0, n: int = 0, b5: int = 0) -> bytes:
    return bytes((op, b1)) + n.to_bytes(3, "big") + bytes((b5,))


async def write(d: TapeDevice, data: bytes, fixed: bool = False) -> Outcome:
    n = len(data) // d.block_size if fixed else len(data)
    return await run_cdb(d, c6(0x0A, int(fixed), n), data_out=data)


async def read(d: TapeDevice, n: int, fixed: bool = False, sili: bool = False) -> Outcome:
    return await run_cdb(d, c6(0x08, int(fixed) | (2 if sili else 0), n))


async def filemarks(d: TapeDevice, n: int = 1, immed: bool = False) -> Outcome:
    return await run_cdb(d, c6(0x10, int(immed), n))


async def rewind(d: TapeDevice) -> None:
    assert (await run_cdb(d, c6(0x01))).status == Status.GOOD


async def space(d: TapeDevice, code: int, count: int) -> Outcome:
    return await run_cdb(d, c6(0x11, code, count & 0xFFFFFF))


def sense_of(out: Outcome) -> tuple[int, int, int, int, int | None]:
    """(key, asc, ascq, stream bits, INFORMATION as signed 32-bit)."""
    s = out.sense
    assert s is not None, "expected CHECK CONDITION"
    info = s.information
    if info is not None and info & 0x80000000:
        info -= 1 << 32
    return int(s.key), s.asc, s.ascq, s.stream, info


async def position(d: TapeDevice) -> tuple[int, int, int]:
    """(flags, partition, block) from the short form of READ POSITION."""
    out = await run_cdb(d, bytes((0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0)))
    assert out.data is not None and len(out.data) == 20
    flags, part = out.data[0], out.data[1]
    first, last = struct.unpack_from(">II", out.data, 4)
    assert first == last
    return flags, part, first


async def test_records_and_filemarks_round_trip_with_stream_sense(tmp_path: Path) -> None:
    d = drive(tmp_path)
    assert (await write(d, b"A" * 1000)).status == Status.GOOD
    assert (await write(d, b"B" * 10)).status == Status.GOOD
    assert (await filemarks(d, 1)).status == Status.GOOD
    assert (await write(d, b"C" * 300)).status == Status.GOOD
    assert await position(d) == (0, 0, 4)
    await rewind(d)
    assert await position(d) == (0x80, 0, 0)  # BOP
    out = await read(d, 1000)
    assert out.data == b"A" * 1000
    # a record shorter than asked: ILI, INFORMATION = requested - actual, data sent
    out = await read(d, 64)
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 0, 0x20, 54)
    assert out.error is not None and out.error.data == b"B" * 10
    out = await read(d, 64)  # the filemark: no data, position after it
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 1, 0x80, 64)
    assert (await position(d))[2] == 3
    # an overlength record: ILI, negative INFORMATION, truncated data
    out = await read(d, 100)
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 0, 0x20, -200)
    assert out.error is not None and out.error.data == b"C" * 100
    out = await read(d, 100)  # end of data
    assert sense_of(out) == (SenseKey.BLANK_CHECK, 0, 5, 0, 100)
    assert (await position(d))[2] == 4


async def test_sili_suppresses_the_underlength_condition(tmp_path: Path) -> None:
    d = drive(tmp_path)
    await write(d, b"x" * 10)
    await write(d, b"y" * 10)
    await rewind(d)
    out = await read(d, 100, sili=True)
    assert out.status == Status.GOOD and out.data == b"x" * 10
    out = await read(d, 5, sili=True)  # overlength in variable mode: no ILI either
    assert out.status == Status.GOOD and out.data == b"yyyyy"


async def test_fixed_block_mode(tmp_path: Path) -> None:
    d = drive(tmp_path)
    out = await read(d, 1, fixed=True)  # no block length selected yet
    assert out.sense is not None and out.sense.field_pointer is not None
    assert (out.sense.field_pointer.byte, out.sense.field_pointer.bit) == (1, 0)
    await mode_select_block_size(d, 512)
    assert d.block_size == 512
    data = bytes(range(256)) * 8  # 4 blocks
    assert (await write(d, data, fixed=True)).status == Status.GOOD
    await filemarks(d)
    assert (await position(d))[2] == 5  # each block is one object
    await rewind(d)
    out = await read(d, 6, fixed=True)  # 4 blocks then the filemark
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 1, 0x80, 2)
    assert out.error is not None and out.error.data == data
    out = await run_cdb(d, c6(0x08, 0x03, 1))  # FIXED and SILI together
    assert out.sense is not None and out.sense.field_pointer is not None
    assert out.sense.field_pointer.bit == 1


async def mode_select_block_size(d: TapeDevice, size: int, density: int = 0) -> Outcome:
    params = bytes((0, 0, 0x10, 8, density, 0, 0, 0, 0)) + size.to_bytes(3, "big")
    return await run_cdb(d, c6(0x15, 0x10, len(params) << 8 >> 8), data_out=params)


async def test_mode_sense_block_descriptor_and_select_garbage(tmp_path: Path) -> None:
    d = drive(tmp_path)
    out = await run_cdb(d, bytes((0x1A, 0, 0x3F, 0, 255, 0)))
    assert out.data is not None
    assert out.data[2] == 0x10 and out.data[3] == 8  # BUFFERED MODE 1, descriptor 8 bytes
    assert out.data[4] == d.density and out.data[9:12] == b"\0\0\0"
    pages = {out.data[12 + i] & 0x3F for i in _page_offsets(out.data[12:])}
    assert {0x0A, 0x0F, 0x10, 0x11} <= pages
    ctx = FakeContext()
    assert (await mode_select_block_size(d, 1024)).status == Status.GOOD
    out = await run_cdb(d, bytes((0x1A, 0, 0x10, 0, 255, 0)))
    assert out.data is not None and out.data[9:12] == (1024).to_bytes(3, "big")
    bad = await mode_select_block_size(d, 1024, density=0x13)  # a density we lack
    assert bad.sense is not None and bad.sense.field_pointer is not None
    assert bad.sense.field_pointer.byte == 4 and not bad.sense.field_pointer.in_cdb
    bad = await mode_select_block_size(d, (1 << 24) - 1)
    assert bad.sense is not None and bad.sense.asc == 0x26
    garbage = await run_cdb(d, c6(0x15, 0x10, 6), data_out=b"\0\0\0\x05\xff\xff", ctx=ctx)
    assert garbage.sense is not None and garbage.sense.key == SenseKey.ILLEGAL_REQUEST
    assert d.block_size == 1024  # nothing applied


def _page_offsets(body: bytes) -> list[int]:
    out, i = [], 0
    while i < len(body):
        out.append(i)
        i += 2 + body[i + 1]
    return out


async def test_space_blocks_filemarks_and_eod(tmp_path: Path) -> None:
    d = drive(tmp_path)
    for chunk in (b"a", b"b", b"c"):
        await write(d, chunk)
    await filemarks(d)
    for chunk in (b"d", b"e"):
        await write(d, chunk)
    await filemarks(d)
    await write(d, b"f")
    # objects: 0 a, 1 b, 2 c, 3 FM, 4 d, 5 e, 6 FM, 7 f, EOD 8
    await rewind(d)
    out = await space(d, 0, 5)  # meets the filemark after 3 blocks
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 1, 0x80, 2)
    assert (await position(d))[2] == 4
    out = await space(d, 0, -2)  # back over d, then the filemark: stop on its BOP side
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 1, 0x80, 2)
    assert (await position(d))[2] == 3
    out = await space(d, 0, -10)  # to BOP: EOM set, 00/04
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 4, 0x40, 7)
    assert (await position(d))[2] == 0
    assert (await space(d, 1, 2)).status == Status.GOOD
    assert (await position(d))[2] == 7
    assert (await space(d, 1, -1)).status == Status.GOOD
    assert (await position(d))[2] == 6
    out = await space(d, 1, 5)  # not that many filemarks: EOD
    assert sense_of(out) == (SenseKey.BLANK_CHECK, 0, 5, 0, 4)
    assert (await position(d))[2] == 8
    await rewind(d)
    assert (await space(d, 3, 0)).status == Status.GOOD
    assert (await position(d))[2] == 8
    out = await space(d, 0, 1)
    assert sense_of(out)[:3] == (SenseKey.BLANK_CHECK, 0, 5)
    out = await space(d, 7, 1)  # no such code
    assert out.sense is not None and out.sense.field_pointer is not None
    sp16 = bytes((0x91, 0, 0, 0)) + struct.pack(">q", -1) + bytes(4)
    assert (await run_cdb(d, sp16)).status == Status.GOOD
    assert (await position(d))[2] == 7
    sp16 = bytes((0x91, 0, 0, 0)) + struct.pack(">q", -3) + bytes(4)  # meets the filemark at 6
    assert sense_of(await run_cdb(d, sp16)) == (SenseKey.NO_SENSE, 0, 1, 0x80, 3)
    assert (await position(d))[2] == 6


async def test_locate_and_read_position_forms(tmp_path: Path) -> None:
    d = drive(tmp_path)
    for i in range(5):
        await write(d, bytes((i,)) * 10)
        await filemarks(d)
    loc10 = bytes((0x2B, 0, 0)) + struct.pack(">I", 4) + bytes(3)
    assert (await run_cdb(d, loc10)).status == Status.GOOD
    assert (await read(d, 10)).data == bytes((2,)) * 10
    out = await run_cdb(d, bytes((0x34, 0x06)) + bytes(8))  # long form
    assert out.data is not None
    part, obj, files = struct.unpack_from(">IQQ", out.data, 4)
    assert (part, obj, files) == (0, 5, 2)
    out = await run_cdb(d, bytes((0x34, 0x08, 0, 0, 0, 0, 0, 0, 32, 0)))  # extended
    assert out.data is not None and struct.unpack_from(">QQ", out.data, 8) == (5, 5)
    assert struct.unpack_from(">H", out.data, 2)[0] == 0x1C
    # LOCATE(16) to file 3 (after the third filemark), then to EOD
    loc16 = bytes((0x92, 0x08, 0, 0)) + struct.pack(">Q", 3) + bytes(4)
    assert (await run_cdb(d, loc16)).status == Status.GOOD
    assert (await read(d, 10)).data == bytes((3,)) * 10
    eod16 = bytes((0x92, 0x18, 0, 0)) + bytes(8) + bytes(4)
    assert (await run_cdb(d, eod16)).status == Status.GOOD
    assert (await position(d))[2] == 10
    beyond = bytes((0x2B, 0, 0)) + struct.pack(">I", 99) + bytes(3)
    out = await run_cdb(d, beyond)
    assert sense_of(out)[:3] == (SenseKey.BLANK_CHECK, 0, 5)
    assert (await position(d))[2] == 10
    # hostile: an unknown service action, an allocation length on the short form
    out = await run_cdb(d, bytes((0x34, 0x02)) + bytes(8))
    assert out.sense is not None and out.sense.field_pointer is not None
    out = await run_cdb(d, bytes((0x34, 0, 0, 0, 0, 0, 0, 0, 20, 0)))
    assert out.sense is not None and out.sense.field_pointer is not None
    assert out.sense.field_pointer.byte == 7
    out = await run_cdb(d, bytes((0x92, 0x10, 0, 0)) + bytes(12))  # DEST_TYPE 2
    assert out.sense is not None and out.sense.field_pointer is not None


async def test_overwrite_in_the_middle_truncates(tmp_path: Path) -> None:
    d = drive(tmp_path)
    for i in range(4):
        await write(d, bytes((i,)) * 100)
    await rewind(d)
    await space(d, 0, 1)
    await write(d, b"new")
    assert d.part.eod == 2
    cart = d.cartridge
    assert cart is not None
    assert os.path.getsize(d.part.path) == 2 * HEADER_SIZE + 103
    out = await read(d, 10)
    assert sense_of(out)[:3] == (SenseKey.BLANK_CHECK, 0, 5)


async def test_worm_refuses_overwrite_and_write_protect_refuses_writes(tmp_path: Path) -> None:
    d = drive(tmp_path, worm=True)
    await write(d, b"keep")
    await filemarks(d)
    await rewind(d)
    out = await write(d, b"over")
    assert sense_of(out)[:3] == (SenseKey.DATA_PROTECT, 0x30, 0x0C)
    out = await run_cdb(d, c6(0x19))  # ERASE at BOP of a WORM cartridge
    assert sense_of(out)[:3] == (SenseKey.DATA_PROTECT, 0x30, 0x0C)
    await space(d, 3, 0)
    assert (await write(d, b"append")).status == Status.GOOD
    d2 = TapeDevice("t1", None)
    p = create_blank(tmp_path / "WP", "WP0001L8", 8 * MIB)
    from pyscst.devices.tape_cartridge import set_write_protect

    set_write_protect(p, True)
    d2.load(open_cartridge(p))
    out = await write(d2, b"x")
    assert sense_of(out)[:3] == (SenseKey.DATA_PROTECT, 0x27, 0)
    out = await run_cdb(d2, bytes((0x1A, 0, 0x3F, 0, 255, 0)))
    assert out.data is not None and out.data[2] & 0x80  # WP in the header


async def test_early_warning_then_volume_overflow(tmp_path: Path) -> None:
    d = drive(tmp_path, capacity=MIB)
    record = b"r" * (60 * 1024)
    results = []
    for _ in range(20):
        out = await write(d, record)
        results.append(sense_of(out) if out.error else None)
        if out.error and out.error.sense and out.error.sense.key == SenseKey.VOLUME_OVERFLOW:
            break
    ew = [r for r in results if r and r[0] == SenseKey.NO_SENSE]
    assert ew and ew[0] == (SenseKey.NO_SENSE, 0, 2, 0x40, 0)
    assert results[-1] == (SenseKey.VOLUME_OVERFLOW, 0, 2, 0x40, len(record))
    assert d.part.end <= MIB
    out = await filemarks(d)  # a filemark still fits (16 bytes), past early warning
    assert sense_of(out)[:4] == (SenseKey.NO_SENSE, 0, 2, 0x40)


async def test_damaged_cartridge_reads_medium_error(tmp_path: Path) -> None:
    d = drive(tmp_path)
    await write(d, b"good")
    await write(d, b"bad" * 100)
    await filemarks(d)
    cart = d.cartridge
    assert cart is not None
    d.eject()
    path = tmp_path / "T1"
    os.truncate(path / "p0.records", HEADER_SIZE + 4 + 50)  # the second record torn
    d.load(open_cartridge(path))
    assert (await read(d, 4)).data == b"good"
    out = await read(d, 300)
    assert sense_of(out)[:3] == (SenseKey.MEDIUM_ERROR, 0x11, 0)
    out = await space(d, 0, 5)
    assert sense_of(out)[:3] == (SenseKey.MEDIUM_ERROR, 0x11, 0)
    assert (await write(d, b"rewritten")).status == Status.GOOD  # at EOD: replaces it
    await rewind(d)
    await space(d, 0, 1)
    assert (await read(d, 9)).data == b"rewritten"


async def test_record_file_vanishing_under_the_drive_is_a_medium_error(tmp_path: Path) -> None:
    d = drive(tmp_path)
    await write(d, b"x" * 100)
    await rewind(d)
    os.ftruncate(d.part.fd, 10)
    out = await read(d, 100)
    assert sense_of(out)[:3] == (SenseKey.MEDIUM_ERROR, 0x11, 0)


async def test_injected_read_and_write_errors(tmp_path: Path) -> None:
    d = drive(tmp_path)
    d.faults.write_error_at.add(1)
    assert (await write(d, b"0")).status == Status.GOOD
    out = await write(d, b"1")
    assert sense_of(out)[:3] == (SenseKey.MEDIUM_ERROR, 0x0C, 0)
    assert (await write(d, b"1")).status == Status.GOOD  # one-shot
    d.faults.read_error_at.add(0)
    await rewind(d)
    out = await read(d, 1)
    assert sense_of(out)[:3] == (SenseKey.MEDIUM_ERROR, 0x11, 0)
    assert (await read(d, 1)).data == b"1"  # the drive moved past it


async def test_log_sense_counters_and_tapealert(tmp_path: Path) -> None:
    d = drive(tmp_path)
    await write(d, b"z" * 4096)

    def log_sense(page: int, pc: int = 1) -> bytes:
        return bytes((0x4D, 0, (pc << 6) | page, 0, 0, 0, 0, 0x10, 0, 0))

    out = await run_cdb(d, log_sense(0))
    assert out.data is not None and list(out.data[4:]) == [0, 2, 3, 0x0C, 0x2E, 0x31]
    out = await run_cdb(d, log_sense(0x0C))
    assert out.data is not None
    code, _, length = struct.unpack_from(">HBB", out.data, 4)
    assert (code, length) == (0, 8) and struct.unpack_from(">Q", out.data, 8)[0] == 4096
    d.tapealert |= 1 << 19  # flag 20: clean now
    out = await run_cdb(d, log_sense(0x2E))
    assert out.data is not None and len(out.data) == 4 + 64 * 5
    assert [i + 1 for i in range(64) if out.data[4 + 5 * i + 4]] == [20]
    out = await run_cdb(d, log_sense(0x2E))  # read and cleared
    assert out.data is not None and not any(out.data[4 + 5 * i + 4] for i in range(64))
    out = await run_cdb(d, log_sense(0x31))  # tape capacity: remaining, maximum (MB)
    assert out.data is not None
    remaining, _, maximum, _ = (struct.unpack_from(">I", out.data, 4 + 8 * i + 4)[0]
                                for i in range(4))  # fmt: skip
    assert maximum == 8 * MIB // 1_000_000 and remaining == (8 * MIB - 4096 - 16) // 1_000_000
    pointer_past = bytes((0x4D, 0, 0x42, 0, 0, 0, 9, 0x10, 0, 0))  # page 2, pointer 9
    out = await run_cdb(d, pointer_past)
    assert out.sense is not None and out.sense.field_pointer is not None
    assert out.sense.field_pointer.byte == 5
    out = await run_cdb(d, log_sense(0x2F))
    assert out.sense is not None and out.sense.field_pointer is not None
    out = await run_cdb(d, bytes((0x4D, 1, 0x40, 0, 0, 0, 0, 0x10, 0, 0)))  # SP
    assert out.sense is not None and out.sense.field_pointer is not None


async def test_mam_read_and_write_attributes(tmp_path: Path) -> None:
    d = drive(tmp_path)

    def read_attr(sa: int = 0, first: int = 0, part: int = 0) -> bytes:
        return (bytes((0x8C, sa, 0, 0, 0, 0, 0, part)) + struct.pack(">H", first)
                + struct.pack(">I", 4096) + bytes(2))  # fmt: skip

    out = await run_cdb(d, read_attr(first=0x0401))
    assert out.data is not None
    ident, fmt, length = struct.unpack_from(">HBH", out.data, 4)
    assert ident == 0x0401 and fmt == 0x81 and out.data[9:9 + length].rstrip() == b"T00001L8"
    out = await run_cdb(d, read_attr(first=0x0003))
    assert out.data is not None and struct.unpack_from(">HBHQ", out.data, 4) == (3, 0x80, 8, 1)
    params = struct.pack(">HBH", 0x0801, 0x01, 32) + b"pyscst backup".ljust(32)
    params += struct.pack(">HBH", 0x1401, 0x00, 3) + b"\x01\x02\x03"
    wcdb = bytes((0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0)) + struct.pack(">I", len(params) + 4) + bytes(2)
    out = await run_cdb(d, wcdb, data_out=struct.pack(">I", len(params)) + params)
    assert out.status == Status.GOOD
    cart = d.cartridge
    assert cart is not None and cart.attributes[0x0801][1].startswith(b"pyscst backup")
    again = open_cartridge(tmp_path / "T1")  # persisted
    assert 0x1401 in again.attributes
    again.close_now()
    # a read-only attribute, a wrong length: refused, nothing stored
    bad = struct.pack(">HBH", 0x0808, 0x02, 4) + b"pool" + struct.pack(">HBH", 0x0003, 0, 8)
    bad += bytes(8)
    out = await run_cdb(d, wcdb[:10] + struct.pack(">I", len(bad) + 4) + bytes(2),
                        data_out=struct.pack(">I", len(bad)) + bad)  # fmt: skip
    assert out.sense is not None and out.sense.asc == 0x26
    assert out.sense.field_pointer is not None and out.sense.field_pointer.byte == 4 + 9
    assert 0x0808 not in cart.attributes
    out = await run_cdb(d, read_attr(sa=3))
    assert out.data == struct.pack(">HBB", 2, 0, 1)
    out = await run_cdb(d, read_attr(part=2))
    assert out.sense is not None and out.sense.field_pointer is not None


async def test_partitions_through_mode_select_and_format_medium(tmp_path: Path) -> None:
    d = drive(tmp_path, capacity=64 * MIB)
    out = await run_cdb(d, bytes((0x1A, 0x08, 0x11, 0, 255, 0)))
    assert out.data is not None
    page = bytearray(out.data[4:])
    assert page[0] == 0x11 and page[3] == 0
    page[3] = 1  # one additional partition
    page[4] = 0x20 | 0x10 | 0x04  # IDP, PSUM MB, POFM
    struct.pack_into(">HH", page, 8, 8, 0xFFFF)
    params = bytes(4) + bytes(page)
    out = await run_cdb(d, c6(0x15, 0x10, len(params)), data_out=params)
    assert out.status == Status.GOOD
    assert (await run_cdb(d, c6(0x04, 0, 0) [:2] + bytes((1, 0, 0, 0)))).status == Status.GOOD
    cart = d.cartridge
    assert cart is not None and [p.capacity for p in cart.partitions] == [8 * MIB, 56 * MIB]
    loc = bytes((0x2B, 0x02, 0)) + struct.pack(">I", 0) + bytes((0, 1, 0))
    assert (await run_cdb(d, loc)).status == Status.GOOD
    await write(d, b"index")
    assert await position(d) == (0, 1, 1)
    bad = bytes((0x2B, 0x02, 0)) + struct.pack(">I", 0) + bytes((0, 2, 0))
    out = await run_cdb(d, bad)
    assert out.sense is not None and out.sense.field_pointer is not None
    assert out.sense.field_pointer.byte == 8
    out = await run_cdb(d, bytes((0x04, 0, 1, 0, 0, 0)))  # not at BOP of partition 0
    assert sense_of(out)[:3] == (SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0C)


@pytest.mark.parametrize(
    "cdb",
    [
        c6(0x08, 0x04, 1),  # READ(6) reserved bit
        c6(0x0A, 0x02, 1),  # WRITE(6) reserved bit
        c6(0x10, 0x02, 1),  # WRITE FILEMARKS WSMK (setmarks)
        c6(0x01, 0x02),  # REWIND reserved bit
        c6(0x1B, 0, 0x02),  # LOAD UNLOAD RETEN
        c6(0x1B, 0, 0x04),  # LOAD UNLOAD EOT
        c6(0x05, 0x01),  # READ BLOCK LIMITS MLOC
        bytes((0x2B, 0x08, 0, 0, 0, 0, 0, 0, 0, 0)),  # LOCATE(10) reserved bit
        bytes((0x91, 0, 0, 0)) + bytes(8) + bytes((0, 1, 0, 0)),  # SPACE(16) parameter length
    ],
)
async def test_malformed_cdbs_get_a_field_pointer(tmp_path: Path, cdb: bytes) -> None:
    d = drive(tmp_path)
    from pyscst.scsi.sense import ScsiError

    try:
        spec = d.table.lookup(cdb)
        out = await run_cdb(d, cdb)
        err = out.error
    except ScsiError as exc:
        err, spec = exc, None
    assert err is not None and err.sense is not None, spec
    assert err.sense.key == SenseKey.ILLEGAL_REQUEST
    assert err.sense.field_pointer is not None


async def test_transfer_lengths_beyond_the_block_limits(tmp_path: Path) -> None:
    d = drive(tmp_path)
    out = await run_cdb(d, c6(0x05))
    assert out.data is not None
    max_block = int.from_bytes(out.data[1:4], "big")
    out = await run_cdb(d, c6(0x0A, 0, max_block + 1))
    assert out.sense is not None and out.sense.field_pointer is not None
    assert out.sense.field_pointer.byte == 2
    out = await read(d, max_block + 1)
    assert out.sense is not None and out.sense.field_pointer is not None
    out = await run_cdb(d, c6(0x0A, 0, 100), data_out=b"short")  # data-out too short
    assert out.sense is not None and out.sense.key == SenseKey.ILLEGAL_REQUEST


async def test_verify_reads_and_compares(tmp_path: Path) -> None:
    d = drive(tmp_path)
    await write(d, b"verify me")
    await rewind(d)
    assert (await run_cdb(d, c6(0x13, 0, 9))).status == Status.GOOD
    await rewind(d)
    out = await run_cdb(d, c6(0x13, 0x02, 9), data_out=b"verify ME")
    assert sense_of(out)[:3] == (SenseKey.MISCOMPARE, 0x1D, 0)


async def test_empty_drive_and_unloaded_cartridge_are_not_ready(tmp_path: Path) -> None:
    d = TapeDevice("t0", None)
    out = await run_cdb(d, c6(0x00))
    assert sense_of(out)[:3] == (SenseKey.NOT_READY, 0x3A, 0)
    assert (await run_cdb(d, c6(0x05))).status == Status.GOOD  # block limits: no medium needed
    p = create_blank(tmp_path / "U", "U00001L8", 8 * MIB)
    d.load(open_cartridge(p))
    assert (await run_cdb(d, c6(0x1B, 0, 0))).status == Status.GOOD  # unload
    out = await run_cdb(d, c6(0x00))
    needs_load = Asc.LUN_NOT_READY_INITIALIZING_COMMAND_REQUIRED.value
    assert sense_of(out)[:3] == (SenseKey.NOT_READY, *needs_load)
    ctx = FakeContext()
    assert (await run_cdb(d, c6(0x1B, 0, 1), ctx=ctx)).status == Status.GOOD  # load
    assert ctx.notified_others == [Asc.NOT_READY_TO_READY_CHANGE]
    assert (await run_cdb(d, c6(0x00))).status == Status.GOOD
    ctx = FakeContext()
    assert (await run_cdb(d, c6(0x1B, 0, 1), ctx=ctx)).status == Status.GOOD  # already
    assert ctx.notified_others == []


async def test_report_density_support(tmp_path: Path) -> None:
    d = drive(tmp_path)
    out = await run_cdb(d, bytes((0x44, 1, 0, 0, 0, 0, 0, 1, 0, 0)))
    assert out.data is not None and len(out.data) == 56
    assert struct.unpack_from(">H", out.data, 0)[0] == 54
    assert out.data[4] == d.density and out.data[6] & 0xA1 == 0xA1


async def test_barcode_attribute_and_descriptor_sense_stream_bits(tmp_path: Path) -> None:
    d = drive(tmp_path)
    ra = bytes((0x8C, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x06)) + struct.pack(">I", 64) + bytes(2)
    out = await run_cdb(d, ra)
    assert out.data is not None
    assert struct.unpack_from(">HBH", out.data, 4) == (0x0806, 0x01, 32)
    assert out.data[9:41] == b"T00001L8".ljust(32)
    await write(d, b"x" * 10)
    await rewind(d)
    out = await read(d, 64)
    assert out.sense is not None
    fixed = out.sense.encode(descriptor=False)
    assert fixed[2] == 0x20 and fixed[0] == 0xF0 and fixed[3:7] == (54).to_bytes(4, "big")
    desc = out.sense.encode(descriptor=True)
    assert desc[0] == 0x72 and bytes((0x04, 0x02, 0x00, 0x20)) in desc  # stream descriptor


async def test_sequential_filemarks_erase_and_filemarks_16(tmp_path: Path) -> None:
    d = drive(tmp_path)
    # objects: 0 a, 1 FM, 2 b, 3 FM, 4 FM, 5 c, 6 FM, 7 FM, EOD 8
    await write(d, b"a")
    await filemarks(d)
    await write(d, b"b")
    await filemarks(d, 2)
    await write(d, b"c")
    fm16 = bytes((0x80, 0, 0, 0)) + struct.pack(">Q", 6) + (2).to_bytes(3, "big") + b"\0"
    assert (await run_cdb(d, fm16)).status == Status.GOOD
    assert d.part.eod == 8
    wrong = bytes((0x80, 0, 0, 0)) + struct.pack(">Q", 3) + (1).to_bytes(3, "big") + b"\0"
    out = await run_cdb(d, wrong)  # not where the tape is
    assert out.sense is not None and out.sense.field_pointer is not None
    assert out.sense.field_pointer.byte == 4
    await rewind(d)
    assert (await space(d, 2, 2)).status == Status.GOOD  # the first pair: after object 4
    assert (await position(d))[2] == 5
    assert (await space(d, 2, 2)).status == Status.GOOD  # the next pair
    assert (await position(d))[2] == 8
    assert (await space(d, 2, -2)).status == Status.GOOD  # back: BOP side of 6-7
    assert (await position(d))[2] == 6
    out = await space(d, 2, 3)  # no run of three
    assert sense_of(out)[:3] == (SenseKey.BLANK_CHECK, 0, 5)
    # ERASE at object 2 leaves end-of-data there
    await rewind(d)
    await space(d, 0, 2)
    assert (await run_cdb(d, c6(0x19, 0x01))).status == Status.GOOD
    assert d.part.eod == 2 and d.part.filemarks.tolist() == [1]


async def test_read_position_reports_the_early_warning_zone(tmp_path: Path) -> None:
    d = drive(tmp_path, capacity=MIB)
    for _ in range(14):
        await write(d, bytes(60 * 1024))
    flags, _, block = await position(d)
    assert block == 14 and flags & 0x40 and flags & 0x01  # EOP, BPEW
    out = await run_cdb(d, bytes((0x34, 0x06)) + bytes(8))
    assert out.data is not None and out.data[0] & 0x41 == 0x41


async def test_fixed_verify_and_fixed_read_of_a_wrong_length_record(tmp_path: Path) -> None:
    d = drive(tmp_path)
    await write(d, b"v" * 100)  # a variable record
    await mode_select_block_size(d, 512)
    await write(d, bytes(1024), fixed=True)
    await rewind(d)
    out = await read(d, 2, fixed=True)  # the 100-byte record is not a 512-byte block
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 0, 0x20, 2)
    assert (await position(d))[2] == 1  # past the incorrect-length record
    assert (await run_cdb(d, c6(0x13, 0x01, 2))).status == Status.GOOD  # VERIFY fixed
    assert (await position(d))[2] == 3


async def test_uncached_reads_go_to_a_thread_with_the_same_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyscst.devices import tape_cartridge

    monkeypatch.setattr(tape_cartridge, "_NOWAIT", 0)  # as if nothing were cached
    d = drive(tmp_path)
    await write(d, b"cold" * 100)
    await write(d, b"x" * 10)
    await rewind(d)
    assert (await read(d, 400)).data == b"cold" * 100
    out = await read(d, 20)
    assert sense_of(out) == (SenseKey.NO_SENSE, 0, 0, 0x20, 10)
    assert out.error is not None and out.error.data == b"x" * 10


async def test_log_select_pcr_resets_the_counters(tmp_path: Path) -> None:
    d = drive(tmp_path)
    await write(d, b"z" * 4096)
    d.tapealert = 1 << 3
    ctx = FakeContext()
    out = await run_cdb(d, bytes((0x4C, 0x02, 0x40, 0, 0, 0, 0, 0, 0, 0)), ctx=ctx)
    assert out.status == Status.GOOD and d.counters.bytes_written == 0 and d.tapealert == 0
    assert ctx.notified_others == [Asc.PARAMETERS_CHANGED]
    out = await run_cdb(d, bytes((0x4C, 0x02, 0x40, 0, 0, 0, 0, 0, 8, 0)), data_out=bytes(8))
    assert out.sense is not None and out.sense.field_pointer is not None
    assert (out.sense.field_pointer.byte, out.sense.field_pointer.bit) == (1, 1)
    out = await run_cdb(d, bytes((0x4C, 0x01, 0x40, 0, 0, 0, 0, 0, 0, 0)))  # SP
    assert out.sense is not None and out.sense.field_pointer is not None


@pytest.mark.parametrize(
    "cdb",
    [bytes((0x2B, 0x02, 0, 0, 0, 0, 0, 0, 0, 0)), bytes((0x1B, 0, 0, 0, 0x01, 0))],
    ids=["LOCATE(10) CP", "LOAD"],
)
async def test_a_cartridge_moved_out_during_a_sync_ends_the_command_not_ready(
    tmp_path: Path, cdb: bytes
) -> None:
    """Found by the fuzz campaign: LOCATE with CP and LOAD wait for the sync of
    what was written; the changer took the cartridge out meanwhile, and they
    failed on an assertion / a ValueError (a logged traceback, HARDWARE ERROR)."""
    import trio

    d = drive(tmp_path)
    assert (await write(d, b"x" * 100)).status == Status.GOOD
    cart = d.cartridge
    assert cart is not None and d.unsynced
    plain_sync = cart.sync

    def sync_then_robot() -> None:
        plain_sync()
        cart.sync = plain_sync  # type: ignore[method-assign]
        trio.from_thread.run_sync(d.take_cartridge)  # the changer's MOVE MEDIUM

    cart.sync = sync_then_robot  # type: ignore[method-assign]
    out = await run_cdb(d, cdb)
    assert sense_of(out)[:3] == (SenseKey.NOT_READY, 0x3A, 0x00)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a tmpfs at /dev/shm")
async def test_read_6_fast_path_on_tmpfs_answers_as_the_awaiting_handler() -> None:
    """A cartridge in memory: READ(6) reads the record into new bytes (no
    zero-filled buffer first) with the same data, ILI residue and filemark
    as the awaiting handler gives."""
    import tempfile

    from pyscst.devices.ssc import read_6_now
    from pyscst.scsi.sense import ScsiError
    from tests.fakes import FakeTransport, make_cmd

    def fast(d: TapeDevice, n: int, sili: bool = False) -> object:
        cmd = make_cmd(c6(0x08, 2 if sili else 0, n), FakeTransport())
        try:
            return read_6_now(d, cmd, FakeContext())
        except ScsiError as exc:
            return exc

    with tempfile.TemporaryDirectory(dir="/dev/shm") as where:
        d = drive(Path(where))
        assert d.part.memory_backed
        records = [b"A" * 1000, b"B" * 10, bytes(range(256)) * 1024]
        for record in records:
            assert d.write_objects(Kind.RECORD, [memoryview(record)]) is False
        assert d.write_objects(Kind.FILEMARK, 1) is False
        await rewind(d)  # (synchronizes: the fast path reads nothing unsynchronized)
        got = fast(d, 1000)
        assert isinstance(got, bytes) and got == records[0]
        short = fast(d, 5)  # 10-byte record, 5 asked, no SILI: ILI, residue -5
        assert isinstance(short, ScsiError) and short.data == b"B" * 5
        assert short.sense is not None and short.sense.information == -5 & 0xFFFFFFFF
        assert fast(d, 1 << 18, sili=True) == records[2]
        mark = fast(d, 10)
        assert isinstance(mark, ScsiError) and mark.sense is not None
        assert mark.sense.stream & 0x80  # FILEMARK
        assert d.position == 4
        eod = fast(d, 10)  # end-of-data: BLANK CHECK 00/05
        assert isinstance(eod, ScsiError) and eod.sense is not None
        assert (eod.sense.key, eod.sense.asc, eod.sense.ascq) == (SenseKey.BLANK_CHECK, 0, 5)
        await rewind(d)
        d.faults.read_error_at.add(0)  # an armed fault on a plain record
        failed = fast(d, 1000)
        assert isinstance(failed, ScsiError) and failed.sense is not None
        assert (failed.sense.key, failed.sense.asc) == (SenseKey.MEDIUM_ERROR, 0x11)
        assert d.position == 1 and not d.faults.read_error_at  # one-shot, moved past
        too_long = fast(d, (1 << 24) - 1)  # over MAX_BLOCK: INVALID FIELD, nothing read
        assert isinstance(too_long, ScsiError) and too_long.sense is not None
        assert too_long.sense.key == SenseKey.ILLEGAL_REQUEST and d.position == 1
        assert d.cartridge is not None
        d.cartridge.close_now()


async def test_the_tape_fault_hook_arms_known_events_only(tmp_path: Path) -> None:
    """DeviceType.arm_fault on a drive: True and armed (a MEDIUM ERROR at the
    record); an event it does not know arms nothing and says so."""
    d = drive(tmp_path)
    for record in (b"a" * 10, b"b" * 10):
        assert (await write(d, record)).status == Status.GOOD
    await rewind(d)
    assert d.arm_fault("no_such_event", 0, 0, frozenset()) is False
    assert d.arm_fault("read_error", 1, 0, frozenset()) is True
    assert (await read(d, 10)).status == Status.GOOD
    key, asc, ascq, _stream, _info = sense_of(await read(d, 10))
    assert (key, asc, ascq) == (SenseKey.MEDIUM_ERROR, *Asc.UNRECOVERED_READ_ERROR.value)


# --- READ(16), WRITE(16), VERIFY(16) ---------------------------------------------------


def c16(op: int, b1: int, partition: int, ident: int, n: int, b2: int = 0) -> bytes:
    return (bytes((op, b1, b2, partition)) + ident.to_bytes(8, "big") + n.to_bytes(3, "big")
            + b"\0")  # fmt: skip


def field(out: Outcome) -> tuple[int, int, int, int | None]:
    s = out.sense
    assert s is not None and s.field_pointer is not None
    return int(s.key), s.asc, s.field_pointer.byte, s.field_pointer.bit


async def test_read_write_verify_16_name_the_position_they_start_at(tmp_path: Path) -> None:
    d = drive(tmp_path)
    for i, record in enumerate((b"a" * 10, b"b" * 20, b"c" * 30)):
        out = await run_cdb(d, c16(0x8A, 0, 0, i, len(record)), data_out=record)
        assert out.status == Status.GOOD
    await rewind(d)
    out = await run_cdb(d, c16(0x88, 0, 0, 0, 10))
    assert out.status == Status.GOOD and out.data == b"a" * 10
    out = await run_cdb(d, c16(0x8F, 0x02, 0, 1, 20), data_out=b"b" * 20)  # BYTCMP
    assert out.status == Status.GOOD and (await position(d))[2] == 2
    out = await run_cdb(d, c16(0x8F, 0x02, 0, 2, 30), data_out=b"c" * 29 + b"x")
    assert sense_of(out)[:3] == (SenseKey.MISCOMPARE, *Asc.MISCOMPARE_DURING_VERIFY.value)
    out = await run_cdb(d, c16(0x88, 0x02, 0, 3, 100))  # at end-of-data
    assert sense_of(out)[0] == SenseKey.BLANK_CHECK
    await rewind(d)
    assert (await run_cdb(d, c16(0x88, 0x02, 0, 0, 100))).data == b"a" * 10  # SILI
    # WRITE(16) at object 1: what followed it is gone, end-of-data after it
    out = await run_cdb(d, c16(0x8A, 0, 0, 1, 5), data_out=b"z" * 5)
    assert out.status == Status.GOOD and d.part.eod == 2
    assert (await run_cdb(d, c16(0x8A, 0, 0, 2, 0))).status == Status.GOOD  # zero: nothing


async def test_read_write_16_refuse_bad_fields_with_the_field_pointer(tmp_path: Path) -> None:
    d = drive(tmp_path)
    for record in (b"r" * 10, b"s" * 10):
        assert (await write(d, record)).status == Status.GOOD
    await rewind(d)
    illegal = (SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value[0])
    for op in (0x88, 0x8A, 0x8F):
        data = b"q" * 10 if op == 0x8A else b""
        # another partition (the cartridge has one), another object: not here
        out = await run_cdb(d, c16(op, 0, 1, 0, 10), data_out=data)
        assert field(out) == (*illegal, 3, None), hex(op)
        out = await run_cdb(d, c16(op, 0, 0, 1, 10), data_out=data)
        assert field(out) == (*illegal, 4, None), hex(op)
        out = await run_cdb(d, c16(op, 0, 0, 1 << 63, 0), data_out=data)  # even with 0
        assert field(out)[2] == 4, hex(op)
    assert field(await run_cdb(d, c16(0x88, 0, 0, 0, 10, b2=0x01)))[2] == 2  # reserved byte
    assert field(await run_cdb(d, c16(0x8A, 0x08, 0, 0, 10)))[2:] == (1, 3)  # FCS: refused
    assert field(await run_cdb(d, c16(0x88, 0x03, 0, 0, 1)))[2:] == (1, 1)  # FIXED + SILI
    assert field(await run_cdb(d, c16(0x88, 0x01, 0, 0, 1)))[2:] == (1, 0)  # FIXED, no size
    assert field(await run_cdb(d, c16(0x88, 0, 0, 0, 0xFFFFFF)))[2] == 12  # over the limit
    assert d.position == 0 and d.part.eod == 2  # nothing moved, nothing written


async def test_the_16_byte_transfers_are_rows_of_the_table_rsoc_reports(tmp_path: Path) -> None:
    """REPORT SUPPORTED OPERATION CODES is built from the table: the rows are
    there, 16 bytes long, with the CDB usage data the handlers check."""
    d = drive(tmp_path)
    for op, byte1 in ((0x88, 0x03), (0x8A, 0x01), (0x8F, 0x07)):
        spec = d.table.get(op)
        assert spec is not None and spec.cdb_length == 16, hex(op)
        out = await run_cdb(d, c16(op, byte1 ^ 0xFF, 0, 0, 1))  # any bit outside the mask
        assert field(out)[2] == 1


# --- IMMED: the synchronize goes on after the status; its failure is deferred -----------


def failing_sync(d: TapeDevice) -> None:
    cart = d.cartridge
    assert cart is not None

    def sync() -> None:
        raise OSError(5, "injected: the medium cannot be written")

    cart.sync = sync  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "cdb",
    [c6(0x01, 1), bytes((0x2B, 0x01, 0, 0, 0, 0, 0, 0, 0, 0)),
     bytes((0x92, 0x01)) + bytes(14), c6(0x19, 0x02)],
    ids=["rewind", "locate10", "locate16", "erase"],
)
async def test_immed_answers_first_and_a_failed_synchronize_is_a_deferred_error(
    tmp_path: Path, cdb: bytes
) -> None:
    d = drive(tmp_path)
    assert (await write(d, b"r" * 10)).status == Status.GOOD
    if cdb[0] == 0x19:
        await rewind(d)  # (ERASE at object 0: end-of-data there)
        assert (await write(d, b"s" * 10)).status == Status.GOOD
    failing_sync(d)
    ctx = FakeContext()
    out = await run_cdb(d, cdb, ctx=ctx)
    assert out.status == Status.GOOD  # validated: status now, the synchronize later
    assert len(ctx.background) == 1 and d.unsynced
    await ctx.background.pop()()
    out = await run_cdb(d, bytes(6))  # the next command hears of it
    assert out.sense is not None and out.sense.deferred
    assert (out.sense.key, out.sense.asc, out.sense.ascq) == (
        SenseKey.MEDIUM_ERROR, *Asc.WRITE_ERROR.value)
    assert out.sense.encode()[0] == 0x71 and out.sense.encode(descriptor=True)[0] == 0x73
    assert (await run_cdb(d, bytes(6))).status == Status.GOOD  # once


async def test_without_immed_the_failure_is_the_commands_own(tmp_path: Path) -> None:
    d = drive(tmp_path)
    assert (await write(d, b"r" * 10)).status == Status.GOOD
    failing_sync(d)
    ctx = FakeContext()
    out = await run_cdb(d, c6(0x01), ctx=ctx)
    assert out.sense is not None and not out.sense.deferred and out.sense.encode()[0] == 0x70
    assert out.sense.key == SenseKey.MEDIUM_ERROR and ctx.background == []


async def _deferred_rewind_failure(tmp_path: Path) -> TapeDevice:
    """A drive whose REWIND with IMMED was answered GOOD, and whose sync,
    run afterwards in the background, failed: a deferred error waits."""
    d = drive(tmp_path)
    assert (await write(d, b"r" * 10)).status == Status.GOOD
    failing_sync(d)
    ctx = FakeContext()
    assert (await run_cdb(d, c6(0x01, 1), ctx=ctx)).status == Status.GOOD
    await ctx.background.pop()()
    return d


async def test_request_sense_reports_the_deferred_error_once(tmp_path: Path) -> None:
    d = await _deferred_rewind_failure(tmp_path)
    sense = d.not_ready_sense()
    assert sense is not None and sense.deferred and sense.key == SenseKey.MEDIUM_ERROR
    assert d.not_ready_sense() is None


async def test_a_later_synchronize_waits_for_the_immed_one_and_newer_writes_stay_unsynced(
    tmp_path: Path,
) -> None:
    import threading

    import trio

    d = drive(tmp_path)
    assert (await write(d, b"r" * 10)).status == Status.GOOD
    cart = d.cartridge
    assert cart is not None
    real_sync = cart.sync
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_sync() -> None:
        calls.append("sync")
        started.set()
        release.wait(5)
        real_sync()

    cart.sync = slow_sync  # type: ignore[method-assign]
    ctx = FakeContext()
    assert (await run_cdb(d, c6(0x01, 1), ctx=ctx)).status == Status.GOOD
    background = ctx.background.pop()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(background)
        await trio.to_thread.run_sync(started.wait, 5)
        # written while the synchronize runs: not covered by it
        assert (await write(d, b"n" * 10)).status == Status.GOOD
        done: list[Outcome] = []

        async def rewind_now() -> None:  # IMMED=0: waits for the running one first
            done.append(await run_cdb(d, c6(0x01)))

        nursery.start_soon(rewind_now)
        await trio.sleep(0.05)
        assert done == [] and calls == ["sync"]
        release.set()
    assert done[0].status == Status.GOOD and calls == ["sync", "sync"]
    assert not d.unsynced and d.deferred is None


async def test_power_on_clears_a_deferred_error(tmp_path: Path) -> None:
    d = await _deferred_rewind_failure(tmp_path)
    assert d.deferred is not None
    d.power_on()
    assert d.deferred is None and (await run_cdb(d, bytes(6))).status == Status.GOOD


async def test_write_6_now_writes_the_data_out_pieces_with_one_pwritev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transport that keeps the data-out in the pieces it came in (the
    iSCSI connection after R2Ts): the record is written from them with one
    pwritev, header first, never joined (data_now is not asked); more pieces
    than MAX_PIECES are joined once; too few bytes await the data."""
    from pyscst.devices.ssc import write_6_now
    from pyscst.devices.tape_cartridge import MAX_PIECES
    from pyscst.scsi.cdb import NEEDS_AWAIT
    from tests.fakes import PiecedTransport as Pieced
    from tests.fakes import make_cmd

    calls: list[int] = []
    plain = os.pwritev

    def counting(fd: int, buffers: list[bytes], offset: int) -> int:
        calls.append(len(buffers))
        return plain(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", counting)
    d = drive(tmp_path)
    three = [b"a" * 100, b"b" * 50, b"c" * 7]
    many = [bytes((i,)) * 3 for i in range(MAX_PIECES + 1)]
    for parts in (three, many):
        record = b"".join(parts)
        cmd = make_cmd(c6(0x0A, 0, len(record)), Pieced(parts))
        assert write_6_now(d, cmd, FakeContext()) is None
    assert calls == [1 + 3, 1 + 1]  # (the header, then the pieces or the joined record)
    short = make_cmd(c6(0x0A, 0, 200), Pieced(three))  # 157 bytes of 200
    assert write_6_now(d, short, FakeContext()) is NEEDS_AWAIT
    await rewind(d)
    assert (await read(d, 157)).data == b"".join(three)
    assert (await read(d, 3 * (MAX_PIECES + 1))).data == b"".join(many)
    assert d.position == 2


async def test_write_6_now_refuses_a_protected_write_before_and_after_its_data(
    tmp_path: Path,
) -> None:
    """DATA PROTECT comes before any data-out is asked for (the data not all
    there: no NEEDS_AWAIT, so no R2T), and, once the data is there, before
    anything is written: software write protect (27/00) and a WORM
    overwrite (30/0C), the file untouched either way."""
    from pyscst.devices.ssc import write_6_now
    from pyscst.scsi.sense import ScsiError
    from tests.fakes import PiecedTransport as Pieced
    from tests.fakes import make_cmd

    (tmp_path / "swp").mkdir()
    (tmp_path / "worm").mkdir()
    swp = drive(tmp_path / "swp")
    worm = drive(tmp_path / "worm", worm=True)
    for d in (swp, worm):
        await write(d, b"keep")
        await rewind(d)
    page = swp.mode.current(0x0A)
    swp.mode.store(0x0A, page[:4] + bytes((page[4] | 0x08,)) + page[5:])
    assert swp.software_write_protect
    three = [b"a" * 100, b"b" * 50, b"c" * 7]
    for d, asc in ((swp, (0x27, 0)), (worm, (0x30, 0x0C))):
        size = os.path.getsize(d.part.path)
        for cdb in (c6(0x0A, 0, 200), c6(0x0A, 0, 157)):  # data still to come; all there
            with pytest.raises(ScsiError) as info:
                write_6_now(d, make_cmd(cdb, Pieced(three)), FakeContext())
            sense = info.value.sense
            assert sense is not None
            assert (sense.key, sense.asc, sense.ascq) == (SenseKey.DATA_PROTECT, *asc)
        assert os.path.getsize(d.part.path) == size and d.part.eod == 1 and d.position == 0
