"""MODE SENSE / MODE SELECT on the SBC disk: pages, PC values, descriptors, changes."""

from __future__ import annotations

import struct

import pytest

from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.sense import Asc, FieldPointer, SenseKey, Status
from tests.fakes import FakeContext, Outcome, run_cdb
from tests.unit.devices.test_disk_io import assert_sense, write10

BS = 512
BLOCKS = 1000


def disk(**kw: object) -> DiskDevice:
    return DiskDevice("m", MemoryStore(BLOCKS * BS), **kw)  # type: ignore[arg-type]


def sense6(
    page: int = 0x3F, pc: int = 0, sub: int = 0, alloc: int = 255, dbd: bool = False
) -> bytes:
    return bytes((0x1A, 0x08 if dbd else 0, (pc << 6) | page, sub, alloc, 0))


def sense10(page: int = 0x3F, pc: int = 0, sub: int = 0, alloc: int = 1024,
            dbd: bool = False, llbaa: bool = False) -> bytes:
    flags = (0x08 if dbd else 0) | (0x10 if llbaa else 0)
    return struct.pack(">BBBBBBBHB", 0x5A, flags, (pc << 6) | page, sub, 0, 0, 0, alloc, 0)


def select6(length: int, pf: bool = True, sp: bool = False) -> bytes:
    return bytes((0x15, (0x10 if pf else 0) | (0x01 if sp else 0), 0, 0, length, 0))


def select10(length: int) -> bytes:
    return struct.pack(">BBBBBBBHB", 0x55, 0x10, 0, 0, 0, 0, 0, length, 0)


def pages_of(data: bytes, start: int) -> dict[int, bytes]:
    out = {}
    pos = start
    while pos < len(data):
        code = data[pos] & 0x3F
        length = data[pos + 1]
        out[code] = data[pos : pos + 2 + length]
        pos += 2 + length
    assert pos == len(data)
    return out


async def current_page(d: DiskDevice, code: int) -> bytes:
    data = (await run_cdb(d, sense6(code, dbd=True))).data
    assert data is not None
    return data[4:]


async def test_mode_sense6_all_pages() -> None:
    d = disk()
    data = (await run_cdb(d, sense6())).data
    assert data is not None
    assert data[0] == len(data) - 1
    assert data[2] == 0x10  # DPOFUA, not write protected
    assert data[3] == 8
    assert struct.unpack(">I", data[4:8])[0] == BLOCKS
    assert int.from_bytes(data[9:12], "big") == BS
    pages = pages_of(data, 12)
    assert sorted(pages) == [0x01, 0x08, 0x0A, 0x1C]
    assert pages[0x08][2] & 0x04  # WCE on by default
    assert pages[0x0A][2] & 0x04 == 0  # fixed-format sense by default


async def test_mode_sense_write_protect_follows_mapping() -> None:
    d = disk()
    data = (await run_cdb(d, sense6(), ctx=FakeContext(read_only=True))).data
    assert data is not None and data[2] == 0x90
    ro = disk(read_only=True)
    data = (await run_cdb(ro, sense10())).data
    assert data is not None and data[3] == 0x90


async def test_mode_sense10_long_lba_descriptor_and_dbd() -> None:
    d = disk()
    data = (await run_cdb(d, sense10(llbaa=True))).data
    assert data is not None
    length, _mt, dsp, longlba, _r, bdl = struct.unpack_from(">HBBBBH", data)
    assert (length, dsp, longlba, bdl) == (len(data) - 2, 0x10, 1, 16)
    assert struct.unpack_from(">QII", data, 8) == (BLOCKS, 0, BS)
    nodesc = (await run_cdb(d, sense10(dbd=True))).data
    assert nodesc is not None and struct.unpack_from(">H", nodesc, 6)[0] == 0
    assert nodesc[8:] == data[24:]


async def test_mode_sense_page_control_values() -> None:
    d = disk()
    changeable = (await run_cdb(d, sense6(0x0A, pc=1, dbd=True))).data
    assert changeable is not None
    page = changeable[4:]
    assert page[:2] == b"\x0a\x0a"
    assert page[2] == 0x04 and page[3] == 0xF0 and page[4] == 0x08 and page[5] == 0x40
    default = (await run_cdb(d, sense6(0x08, pc=2, dbd=True))).data
    assert default is not None and default[4 + 2] & 0x04
    out = await run_cdb(d, sense6(pc=3))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED.value)


@pytest.mark.parametrize(
    ("cdb", "pointer"),
    [
        (sense6(0x05), FieldPointer(2, 5)),
        (sense6(0x08, sub=1), FieldPointer(3)),
        (sense6(0x3F, sub=7), FieldPointer(3)),
        (sense6(0x21, sub=0xFF), FieldPointer(2, 5)),
    ],
)
async def test_mode_sense_invalid_pages(cdb: bytes, pointer: FieldPointer) -> None:
    out = await run_cdb(disk(), cdb)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, pointer)


async def test_mode_sense_all_subpages_and_truncation() -> None:
    d = disk()
    a = (await run_cdb(d, sense6(0x3F, sub=0xFF))).data
    b = (await run_cdb(d, sense6(0x3F))).data
    assert a == b  # no subpages defined
    short = (await run_cdb(d, sense6(alloc=4))).data
    assert short is not None and short == (b or b"")[:4]


async def _select(d: DiskDevice, page: bytes, ctx: FakeContext | None = None,
                  descriptor: bytes = b"") -> Outcome:
    params = bytes((0, 0, 0, len(descriptor))) + descriptor + page
    return await run_cdb(d, select6(len(params)), data_out=params, ctx=ctx)


async def test_mode_select_changes_wce_and_notifies_others() -> None:
    d = disk()
    ctx = FakeContext()
    page = bytearray(await current_page(d, 0x08))
    page[2] &= ~0x04
    out = await _select(d, bytes(page), ctx)
    assert out.status == Status.GOOD
    assert not d.write_cache
    assert ctx.notified_others == [Asc.MODE_PARAMETERS_CHANGED]
    # the same values again change nothing and notify nobody
    await _select(d, bytes(page), ctx)
    assert ctx.notified_others == [Asc.MODE_PARAMETERS_CHANGED]
    assert (await current_page(d, 0x08))[2] & 0x04 == 0


async def test_mode_select_d_sense_and_swp() -> None:
    d = disk()
    page = bytearray(await current_page(d, 0x0A))
    page[2] |= 0x04
    page[4] |= 0x08
    params = struct.pack(">HBBBBH", 0, 0, 0, 0, 0, 0) + bytes(page)
    out = await run_cdb(d, select10(len(params)), data_out=params)
    assert out.status == Status.GOOD
    assert d.descriptor_sense and d.software_write_protect
    out = await run_cdb(d, write10(0, 1), data_out=bytes(BS))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)
    data = (await run_cdb(d, sense6())).data
    assert data is not None and data[2] & 0x80


async def test_mode_select_rejects_non_changeable_bits_with_pointer() -> None:
    d = disk()
    page = bytearray(await current_page(d, 0x08))
    page[2] |= 0x80  # IC: not changeable
    out = await _select(d, bytes(page))
    # parameter list: 4-byte header, then the page: byte 2 of page is offset 6
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST.value,
                 FieldPointer(6, 7, in_cdb=False))
    assert d.write_cache  # nothing applied


async def test_mode_select_is_all_or_nothing() -> None:
    d = disk()
    cache = bytearray(await current_page(d, 0x08))
    cache[2] &= ~0x04
    bad = bytearray(await current_page(d, 0x01))
    bad[3] = 5  # read retry count: not changeable
    out = await _select(d, bytes(cache) + bytes(bad))
    assert out.status == Status.CHECK_CONDITION
    assert d.write_cache


@pytest.mark.parametrize(
    ("params", "asc", "pointer"),
    [
        (b"\x00\x00", Asc.PARAMETER_LIST_LENGTH_ERROR.value, None),
        (bytes((0, 0, 0, 0, 0x08, 0x12)) + bytes(10), Asc.PARAMETER_LIST_LENGTH_ERROR.value, None),
        (bytes((0, 0, 0, 0, 0x05, 0x02, 0, 0)), Asc.INVALID_FIELD_IN_PARAMETER_LIST.value,
         FieldPointer(4, 5, in_cdb=False)),
        (bytes((0, 0, 0, 0, 0x08, 0x10)) + bytes(16), Asc.INVALID_FIELD_IN_PARAMETER_LIST.value,
         FieldPointer(5, None, in_cdb=False)),
        (bytes((0, 3, 0, 0)), Asc.INVALID_FIELD_IN_PARAMETER_LIST.value,
         FieldPointer(1, None, in_cdb=False)),
        (bytes((0, 0, 0, 8)) + struct.pack(">I", BLOCKS) + b"\x00" + (4096).to_bytes(3, "big"),
         Asc.INVALID_FIELD_IN_PARAMETER_LIST.value, FieldPointer(9, None, in_cdb=False)),
        (bytes((0, 0, 0, 8)) + struct.pack(">I", 7) + b"\x00" + BS.to_bytes(3, "big"),
         Asc.INVALID_FIELD_IN_PARAMETER_LIST.value, FieldPointer(4, None, in_cdb=False)),
        (bytes((0, 0, 0, 6)) + bytes(6), Asc.INVALID_FIELD_IN_PARAMETER_LIST.value,
         FieldPointer(3, None, in_cdb=False)),
    ],
)
async def test_mode_select_parameter_list_errors(
    params: bytes, asc: tuple[int, int], pointer: FieldPointer | None
) -> None:
    out = await run_cdb(disk(), select6(len(params)), data_out=params)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, asc, pointer)


async def test_mode_select_block_descriptor_restating_geometry_is_accepted() -> None:
    d = disk()
    desc = struct.pack(">I", BLOCKS) + b"\x00" + BS.to_bytes(3, "big")
    out = await _select(d, b"", descriptor=desc)
    assert out.status == Status.GOOD


async def test_mode_select_sp_and_short_data() -> None:
    d = disk()
    out = await run_cdb(d, select6(4, sp=True), data_out=bytes(4))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(1, 0))
    out = await run_cdb(d, select6(16), data_out=bytes(16), expected_length=8)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, (0x0E, 0x03))
    assert (await run_cdb(d, select6(0))).status == Status.GOOD


async def test_descriptor_sense_default_and_power_on_reset() -> None:
    d = disk()
    assert not d.descriptor_sense
    page = bytearray(await current_page(d, 0x0A))
    page[2] |= 0x04
    await _select(d, bytes(page))
    assert d.descriptor_sense
    d.power_on()
    assert not d.descriptor_sense
