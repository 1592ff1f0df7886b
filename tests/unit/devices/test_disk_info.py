"""SBC disk non-data commands: INQUIRY/VPD, REQUEST SENSE, capacity, start/stop, prevent."""

from __future__ import annotations

import struct

import pytest

from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore, NullStore
from pyscst.scsi.cdb import OpFlags
from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import Asc, FieldPointer, Sense, SenseKey, Status
from tests.fakes import DEFAULT_NEXUS, FakeContext, run_cdb
from tests.unit.devices.test_disk_io import assert_sense, read10

BS = 512
BLOCKS = 4096


def disk(**kw: object) -> DiskDevice:
    return DiskDevice("disk1", MemoryStore(BLOCKS * BS), **kw)  # type: ignore[arg-type]


def inquiry(evpd: int, page: int, alloc: int) -> bytes:
    return struct.pack(">BBBHB", 0x12, evpd, page, alloc, 0)


def ssu(start: int, loej: int = 0, pc: int = 0, immed: int = 0, no_flush: int = 0) -> bytes:
    return bytes((0x1B, immed, 0, 0, (pc << 4) | (no_flush << 2) | (loej << 1) | start, 0))


def prevent(p: int) -> bytes:
    return bytes((0x1E, 0, 0, 0, p, 0))


TUR = bytes(6)


async def test_standard_inquiry() -> None:
    out = await run_cdb(disk(), inquiry(0, 0, 260))
    data = out.data
    assert data is not None and len(data) == 96
    assert data[0] == 0x00 and data[1] == 0x00  # connected disk, not removable
    assert data[2] == 0x06  # SPC-4
    assert data[3] == 0x12  # HiSup, RDF 2
    assert data[4] == len(data) - 5
    assert data[7] & 0x02  # CmdQue
    assert data[8:16] == b"PYSCST  "
    assert all(c == 0 or 0x20 <= c < 0x7F for c in data[8:36])
    descriptors = {struct.unpack_from(">H", data, 58 + 2 * i)[0] for i in range(8)}
    assert {0x0460, 0x04C0, 0x0960}.issubset(descriptors)
    assert not data[3] & 0xC0  # no AERC/TRMTSK


async def test_inquiry_allocation_lengths_truncate() -> None:
    d = disk()
    full = (await run_cdb(d, inquiry(0, 0, 512))).data
    for n in (0, 5, 36, 95):
        assert (await run_cdb(d, inquiry(0, 0, n))).data == (full or b"")[:n]
    assert (await run_cdb(d, inquiry(0, 0, 511))).data == full


async def test_removable_inquiry_sets_rmb() -> None:
    out = await run_cdb(disk(removable=True), inquiry(0, 0, 96))
    assert out.data is not None and out.data[1] == 0x80


async def test_page_code_without_evpd_is_invalid() -> None:
    out = await run_cdb(disk(), inquiry(0, 0x80, 255))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(2))


async def test_unknown_vpd_page_is_invalid() -> None:
    out = await run_cdb(disk(), inquiry(1, 0xC7, 255))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(2))


async def test_cmddt_is_invalid() -> None:
    out = await run_cdb(disk(), inquiry(2, 0, 255))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value,
                 FieldPointer(1, 1))


async def test_supported_vpd_pages_all_answer_and_are_sorted() -> None:
    d = disk()
    out = await run_cdb(d, inquiry(1, 0, 255))
    data = out.data
    assert data is not None
    pages = list(data[4 : 4 + struct.unpack_from(">H", data, 2)[0]])
    assert pages == sorted(pages)
    assert {0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2}.issubset(pages)
    for page in pages:
        got = await run_cdb(d, inquiry(1, page, 255))
        assert got.data is not None and got.data[1] == page
        assert len(got.data) == 4 + struct.unpack_from(">H", got.data, 2)[0]


async def test_serial_and_device_identification() -> None:
    d = disk(serial="SER123")
    serial = (await run_cdb(d, inquiry(1, 0x80, 255))).data
    assert serial is not None and serial[4:] == b"SER123"
    nexus = Nexus.iscsi("iqn.i", 1, "iqn.2024-01.org.pyscst:t1", 3, relative_port=7)
    data = (await run_cdb(d, inquiry(1, 0x83, 1024), ctx=FakeContext(nexus=nexus))).data
    assert data is not None
    descs = []
    pos = 4
    while pos < len(data):
        length = data[pos + 3]
        descs.append((data[pos], data[pos + 1], data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    assert pos == len(data)
    by_type = {(b1 & 0x0F, (b1 >> 4) & 3): (b0, b1, v) for b0, b1, v in descs}
    naa = by_type[(3, 0)][2]
    assert len(naa) == 8 and naa[0] >> 4 == 3
    assert by_type[(1, 0)][2].startswith(b"PYSCST  ")
    rel = by_type[(4, 1)]
    assert rel[0] >> 4 == 5 and rel[1] & 0x80 and rel[2] == b"\x00\x00\x00\x07"
    port_name = by_type[(8, 1)][2]
    assert port_name.rstrip(b"\x00") == b"iqn.2024-01.org.pyscst:t1,t,0x0003"
    assert len(port_name) % 4 == 0
    assert by_type[(8, 2)][2].rstrip(b"\x00") == b"iqn.2024-01.org.pyscst:t1"
    # stable across devices with the same name, different for another name
    again = (await run_cdb(disk(), inquiry(1, 0x83, 1024), ctx=FakeContext(nexus=nexus))).data
    assert again is not None and again[8:16] == naa
    other = DiskDevice("disk2", MemoryStore(BLOCKS * BS))
    odata = (await run_cdb(other, inquiry(1, 0x83, 1024))).data
    assert odata is not None and odata[8:16] != naa


async def test_block_limits_and_characteristics() -> None:
    d = DiskDevice("x", MemoryStore(BLOCKS * BS), block_size=512, max_transfer_bytes=1 << 20)
    b0 = (await run_cdb(d, inquiry(1, 0xB0, 255))).data
    assert b0 is not None and b0[3] == 0x3C and len(b0) == 64
    assert struct.unpack_from(">I", b0, 8)[0] == 2048 == d.max_transfer_blocks
    assert b0[5] == 255  # MAXIMUM COMPARE AND WRITE LENGTH
    # MAXIMUM UNMAP LBA COUNT, MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
    assert struct.unpack_from(">II", b0, 20) == (1 << 20, 256)
    assert struct.unpack_from(">Q", b0, 36)[0] == 0xFFFF  # MAXIMUM WRITE SAME LENGTH
    b2 = (await run_cdb(d, inquiry(1, 0xB2, 255))).data
    # LBPU, LBPWS, LBPWS10, LBPRZ (as READ CAPACITY(16) says); thin provisioned
    assert b2 is not None and b2[5] & 0xE4 == 0xE4 and b2[6] & 0x07 == 0x02
    b1 = (await run_cdb(d, inquiry(1, 0xB1, 255))).data
    assert b1 is not None and struct.unpack_from(">H", b1, 4)[0] == 1
    ext = (await run_cdb(d, inquiry(1, 0x86, 255))).data
    assert ext is not None and ext[5] & 0x07 == 0x07 and ext[6] & 0x01


async def test_read_capacity_10_and_16() -> None:
    d = disk(lbppbe=3)
    rc10 = (await run_cdb(d, bytes((0x25,)) + bytes(9))).data
    assert rc10 == struct.pack(">II", BLOCKS - 1, BS)
    rc16 = (await run_cdb(d, struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0))).data
    assert rc16 is not None and len(rc16) == 32
    last, size, prot, exp, lbp = struct.unpack_from(">QIBBH", rc16)
    # LBPME and LBPRZ: thin provisioned, unmapped blocks read as zeros
    assert (last, size, prot, exp & 0x0F, lbp & 0xC000) == (BLOCKS - 1, BS, 0, 3, 0xC000)
    for alloc in range(16):
        out = await run_cdb(d, struct.pack(">BBQIBB", 0x9E, 0x10, 0, alloc, 0, 0))
        assert out.status == Status.GOOD and out.data == rc16[:alloc]


async def test_read_capacity_10_large_disk_and_lba_without_pmi() -> None:
    big = DiskDevice("big", NullStore(BS << 33), block_size=512)
    rc10 = (await run_cdb(big, bytes((0x25,)) + bytes(9))).data
    assert rc10 == struct.pack(">II", 0xFFFFFFFF, BS)
    rc16 = (await run_cdb(big, struct.pack(">BBQIBB", 0x9E, 0x10, 0, 12, 0, 0))).data
    assert rc16 == struct.pack(">QI", (1 << 33) - 1, BS)
    out = await run_cdb(big, bytes.fromhex("25000000000100000000"))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(2))
    out = await run_cdb(big, bytes.fromhex("25000000000100000100"))
    assert out.status == Status.GOOD


async def test_resize_changes_capacity() -> None:
    d = disk()
    await d.resize(BLOCKS * BS * 2 + 100)
    assert d.blocks == BLOCKS * 2
    rc10 = (await run_cdb(d, bytes((0x25,)) + bytes(9))).data
    assert rc10 == struct.pack(">II", 2 * BLOCKS - 1, BS)


async def test_request_sense_reports_pending_then_no_sense() -> None:
    d = disk()
    ctx = FakeContext()
    ctx.pending.append(Sense.of(SenseKey.UNIT_ATTENTION, Asc.POWER_ON_OCCURRED))
    out = await run_cdb(d, bytes((0x03, 0, 0, 0, 252, 0)), ctx=ctx)
    assert out.data is not None and out.data[0] == 0x70
    assert (out.data[2], out.data[12], out.data[13]) == (0x06, 0x29, 0x01)
    out = await run_cdb(d, bytes((0x03, 1, 0, 0, 252, 0)), ctx=ctx)
    assert out.data is not None and out.data[0] == 0x72 and out.data[1:4] == b"\x00\x00\x00"
    out = await run_cdb(d, bytes((0x03, 0, 0, 0, 8, 0)), ctx=ctx)
    assert out.data is not None and len(out.data) == 8


async def test_request_sense_reports_not_ready_condition() -> None:
    d = disk()
    await run_cdb(d, ssu(0))
    out = await run_cdb(d, bytes((0x03, 0, 0, 0, 18, 0)))
    assert out.data is not None and (out.data[2], out.data[12], out.data[13]) == (2, 4, 2)


async def test_stop_makes_media_access_not_ready_until_start() -> None:
    d = disk()
    assert (await run_cdb(d, ssu(0))).status == Status.GOOD
    assert_sense(await run_cdb(d, TUR), SenseKey.NOT_READY, (0x04, 0x02))
    assert_sense(await run_cdb(d, read10(0, 1)), SenseKey.NOT_READY, (0x04, 0x02))
    assert (await run_cdb(d, bytes((0x25,)) + bytes(9))).status == Status.GOOD
    assert (await run_cdb(d, ssu(1))).status == Status.GOOD
    assert (await run_cdb(d, TUR)).status == Status.GOOD


async def test_removable_eject_load_and_prevent() -> None:
    d = disk(removable=True)
    other = Nexus.iscsi("iqn.other", 2, "iqn.t", 1)
    # START without LOEJ changes nothing on removable media
    for cdb in (ssu(0), ssu(1), ssu(0, pc=1), ssu(1, loej=1, pc=3)):
        assert (await run_cdb(d, cdb)).status == Status.GOOD
        assert (await run_cdb(d, TUR)).status == Status.GOOD
    assert (await run_cdb(d, prevent(1))).status == Status.GOOD
    for nexus in (DEFAULT_NEXUS, other):
        out = await run_cdb(d, ssu(0, loej=1), nexus=nexus, ctx=FakeContext(nexus=nexus))
        assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.MEDIUM_REMOVAL_PREVENTED.value)
    # ALLOW from another nexus does not lift this nexus' prevention
    await run_cdb(d, prevent(0), ctx=FakeContext(nexus=other))
    assert d.removal_prevented
    await run_cdb(d, prevent(0))
    assert (await run_cdb(d, ssu(0, loej=1))).status == Status.GOOD
    assert_sense(await run_cdb(d, TUR), SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT.value)
    for cdb in (
        read10(0, 1),
        bytes((0x25,)) + bytes(9),
        struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0),
        bytes.fromhex("35000000000000000100"),
    ):
        assert_sense(await run_cdb(d, cdb), SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT.value)
    await run_cdb(d, prevent(1))
    assert_sense(await run_cdb(d, ssu(1, loej=1)), SenseKey.ILLEGAL_REQUEST,
                 Asc.MEDIUM_REMOVAL_PREVENTED.value)
    d.reset()  # LU reset clears prevention
    assert (await run_cdb(d, ssu(1, loej=1))).status == Status.GOOD
    assert (await run_cdb(d, TUR)).status == Status.GOOD


async def test_prevent_cleared_by_nexus_loss_and_invalid_values() -> None:
    d = disk(removable=True)
    await run_cdb(d, prevent(1))
    d.nexus_lost(DEFAULT_NEXUS)
    assert not d.removal_prevented
    for value in (2, 3):
        assert_sense(await run_cdb(d, prevent(value)), SenseKey.ILLEGAL_REQUEST,
                     Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(4, 1))


@pytest.mark.parametrize(
    ("cdb", "expected"),
    [
        (bytes.fromhex("37001800000000ffff00"), bytes((0, 0x18, 0, 0))),
        (bytes.fromhex("37000500000000000200"), bytes((0, 0x05))),
        (bytes.fromhex("b71d000000000000ffff0000"), bytes((0, 0x1D, 0, 0, 0, 0, 0, 0))),
    ],
)
async def test_read_defect_data(cdb: bytes, expected: bytes) -> None:
    out = await run_cdb(disk(), cdb)
    assert out.data == expected


def test_table_declares_medium_needs() -> None:
    table = DiskDevice.table
    spec = table.lookup(read10(0, 1))
    assert spec.flags & OpFlags.NEEDS_MEDIUM
    assert not table.lookup(inquiry(0, 0, 36)).flags & OpFlags.NEEDS_MEDIUM
