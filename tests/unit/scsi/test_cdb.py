"""CDB table machinery: lookup, field checks, RSOC and REPORT TMF."""

from __future__ import annotations

import struct
import time

import pytest

from pyscst.devices.disk import DiskDevice
from pyscst.scsi.cdb import (
    OpFlags,
    OpSpec,
    OpTable,
    ResvClass,
    build_report_tmf,
    build_rsoc,
    rw6,
    rw10,
    rw12,
    rw16,
)
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.sense import Asc, FieldPointer, ScsiError, SenseKey

SBC = DiskDevice.table


async def _noop(dev: object, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    return None


def _core() -> OpTable:
    return OpTable(
        [
            OpSpec(0xA0, None, "REPORT LUNS", 12, bytes.fromhex("a000ff00 0000ffffffff0000"),
                   DataDirection.READ, _noop, OpFlags.UA_EXEMPT, ResvClass.ALLOWED),
            OpSpec(0xA3, 0x0C, "REPORT SUPPORTED OPERATION CODES", 12,
                   bytes.fromhex("a30c87ffffffffffffff0000"), DataDirection.READ, _noop,
                   OpFlags.NONE, ResvClass.ALLOWED, timeouts=(1, 2)),
            OpSpec(0xA3, 0x0D, "REPORT SUPPORTED TMFS", 12,
                   bytes.fromhex("a30d8000 0000ffffffff0000"), DataDirection.READ, _noop,
                   OpFlags.NONE, ResvClass.ALLOWED),
        ]
    )


FULL = SBC.merged(_core())


def _err(cdb: bytes, table: OpTable = FULL) -> ScsiError:
    with pytest.raises(ScsiError) as info:
        table.lookup(cdb)
    return info.value


def test_lookup_returns_the_spec_for_known_opcodes() -> None:
    assert SBC.lookup(bytes.fromhex("28000000000000000100")).name == "READ(10)"
    assert FULL.lookup(bytes.fromhex("a30c") + bytes(10)).name.startswith("REPORT SUPPORTED OP")
    # iSCSI pads CDBs to 16 bytes: bytes past the CDB length are not checked
    assert SBC.lookup(bytes.fromhex("00") + bytes(15)).name == "TEST UNIT READY"


def test_unknown_opcode_is_invalid_command_operation_code() -> None:
    err = _err(bytes.fromhex("ff") + bytes(15))
    assert err.sense is not None
    assert (err.sense.key, err.sense.asc, err.sense.ascq) == (
        SenseKey.ILLEGAL_REQUEST,
        *Asc.INVALID_COMMAND_OPERATION_CODE.value,
    )


def test_unknown_service_action_points_at_byte_1_bit_4() -> None:
    err = _err(bytes.fromhex("9e11") + bytes(14))
    assert err.sense is not None
    assert (err.sense.asc, err.sense.ascq) == Asc.INVALID_FIELD_IN_CDB.value
    assert err.sense.field_pointer == FieldPointer(1, 4)


@pytest.mark.parametrize(
    ("cdb_hex", "byte", "bit"),
    [
        ("28200000000000000100", 1, 5),  # RDPROTECT=001
        ("28e00000000000000100", 1, 7),  # RDPROTECT=111: highest bit
        ("28010000000000000100", 1, 0),  # obsolete bit
        ("28000000000020000100", 6, 5),  # reserved bit above GROUP NUMBER
        ("28000000000000000104", 9, 2),  # NACA
        ("28000000000000000101", 9, 0),  # LINK
        ("28000000000000000180", 9, 7),  # vendor bits of CONTROL
        ("1202000000ff", 1, 1),  # INQUIRY CMDDT
        ("0000000000040000", 5, 2),  # TEST UNIT READY NACA
        ("9e10010000000000000000000000000000", 2, 0),  # RC16 obsolete LBA
    ],
)
def test_bits_outside_the_mask_give_a_field_pointer(cdb_hex: str, byte: int, bit: int) -> None:
    err = _err(bytes.fromhex(cdb_hex))
    assert err.sense is not None
    assert (err.sense.key, err.sense.asc, err.sense.ascq) == (
        SenseKey.ILLEGAL_REQUEST,
        *Asc.INVALID_FIELD_IN_CDB.value,
    )
    assert err.sense.field_pointer == FieldPointer(byte, bit)


def test_first_offending_byte_wins() -> None:
    err = _err(bytes.fromhex("28e00000000020000104"))
    assert err.sense is not None and err.sense.field_pointer == FieldPointer(1, 7)


def test_short_cdb_is_invalid_field() -> None:
    err = _err(bytes.fromhex("2800000000"))
    assert err.sense is not None and err.sense.asc == 0x24


def test_duplicate_opcodes_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        SBC.merged(SBC)


def test_spec_validates_mask_shape() -> None:
    with pytest.raises(ValueError):
        OpSpec(0x28, None, "bad", 10, bytes(9), DataDirection.READ, _noop)
    with pytest.raises(ValueError):
        OpSpec(0x9E, None, "no SA", 16, b"\x9e" + bytes(15), DataDirection.READ, _noop)
    with pytest.raises(ValueError):
        OpSpec(0x9E, 0x10, "SA not in mask", 16, b"\x9e" + bytes(15), DataDirection.READ, _noop)


def test_lookup_is_fast() -> None:
    cdb = bytes.fromhex("28000000100000000800") + bytes(6)
    lookup = SBC.lookup
    n = 20000
    start = time.perf_counter()
    for _ in range(n):
        lookup(cdb)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 5e-6, per_call  # ~0.5-1 µs on a normal machine


def test_transfer_length_helpers() -> None:
    assert rw6(bytes.fromhex("081234560000")) == (0x123456 & 0x1FFFFF, 256)
    assert rw6(bytes.fromhex("08000010 0700")) == (0x10, 7)
    assert rw10(bytes.fromhex("28000100000000000200")) == (0x01000000, 2)
    assert rw12(bytes.fromhex("a800000000050000000300 00")) == (5, 3)
    assert rw16(bytes.fromhex("880000000000000000090000000400 00")) == (9, 4)


def test_reservation_class_may_depend_on_the_cdb() -> None:
    prevent = SBC.lookup(bytes.fromhex("1e0000000100"))
    assert prevent.reservation_class(bytes.fromhex("1e0000000100")) is ResvClass.WRITE
    assert prevent.reservation_class(bytes.fromhex("1e0000000000")) is ResvClass.ALLOWED
    read = SBC.lookup(bytes.fromhex("28000000000000000100"))
    assert read.reservation_class(read.mask) is ResvClass.READ
    assert read.lba_range is not None
    assert read.lba_range(bytes.fromhex("28000000002000000300")) == (0x20, 3)


def test_flags_mark_medium_writers() -> None:
    writers = {s.name for s in SBC if s.flags & OpFlags.WRITES_MEDIUM}
    assert writers == {
        "WRITE(6)", "WRITE(10)", "WRITE(12)", "WRITE(16)",
        "WRITE AND VERIFY(10)", "WRITE AND VERIFY(12)", "WRITE AND VERIFY(16)",
        "WRITE SAME(10)", "WRITE SAME(16)", "UNMAP", "COMPARE AND WRITE", "ORWRITE(16)",
        "WRITE ATOMIC(16)", "SANITIZE OVERWRITE", "SANITIZE BLOCK ERASE",
        "SANITIZE EXIT FAILURE MODE",
    }
    assert {s.name for s in SBC if s.atomic} == {"WRITE ATOMIC(16)"}
    exempt = {s.name for s in FULL if s.flags & OpFlags.UA_EXEMPT}
    assert exempt == {"INQUIRY", "REQUEST SENSE", "REPORT LUNS"}


# --- REPORT SUPPORTED OPERATION CODES ---------------------------------------


def _rsoc_cdb(options: int, opcode: int = 0, sa: int = 0, alloc: int = 65535,
              rctd: bool = False) -> bytes:
    return struct.pack(">BBBBHIBB", 0xA3, 0x0C, (0x80 if rctd else 0) | options, opcode, sa,
                       alloc, 0, 0)


def _parse_all(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    (length,) = struct.unpack_from(">I", data)
    assert length == len(data) - 4
    out = []
    pos = 4
    while pos < len(data):
        op, _r, sa, _r2, flags, cdblen = struct.unpack_from(">BBHBBH", data, pos)
        pos += 8
        timeouts = b""
        if flags & 0x02:
            timeouts = data[pos : pos + 12]
            pos += 12
        out.append((op, sa, flags, cdblen, timeouts))
    return out


def test_rsoc_all_lists_every_command_once() -> None:
    descs = _parse_all(build_rsoc(FULL, _rsoc_cdb(0)))
    assert len(descs) == len(FULL)
    seen = {(op, sa if flags & 1 else None) for op, sa, flags, _l, _t in descs}
    assert seen == {(s.opcode, s.service_action) for s in FULL}
    for op, sa, flags, cdblen, timeouts in descs:
        assert not flags & 0x02 and timeouts == b""
        if not flags & 0x01:
            assert sa == 0
        spec = FULL.get(op, sa if flags & 1 else None)
        assert spec is not None and spec.cdb_length == cdblen


def test_rsoc_rctd_adds_timeout_descriptors() -> None:
    descs = _parse_all(build_rsoc(FULL, _rsoc_cdb(0, rctd=True)))
    for op, sa, flags, _cdblen, timeouts in descs:
        assert flags & 0x02
        length, _r, _cs, nominal, recommended = struct.unpack(">HBBII", timeouts)
        assert length == 0x0A
        spec = FULL.get(op, sa if flags & 1 else None)
        assert spec is not None
        assert (nominal, recommended) == (spec.timeouts or (0, 0))


def test_rsoc_one_command_reports_usage_data() -> None:
    data = build_rsoc(FULL, _rsoc_cdb(1, 0x28))
    assert data[1] & 0x07 == 0b011
    assert struct.unpack_from(">H", data, 2)[0] == 10
    assert data[4:14] == bytes.fromhex("2818ffffffff1fffff00")
    assert data[5] & 0x18 == 0x18  # DPO/FUA usable, matching MODE SENSE DPOFUA


def test_rsoc_service_action_command() -> None:
    data = build_rsoc(FULL, _rsoc_cdb(2, 0x9E, 0x10))
    assert data[1] & 0x07 == 0b011
    assert data[4] == 0x9E and data[5] & 0x1F == 0x10
    data3 = build_rsoc(FULL, _rsoc_cdb(3, 0x9E, 0x10))
    assert data3 == data
    # an opcode without service actions through option 011 ignores SA
    assert build_rsoc(FULL, _rsoc_cdb(3, 0x28, 7)) == build_rsoc(FULL, _rsoc_cdb(1, 0x28))


def test_rsoc_unsupported_command_reports_support_001() -> None:
    assert build_rsoc(FULL, _rsoc_cdb(1, 0xFF)) == bytes((0, 0b001, 0, 0))
    assert build_rsoc(FULL, _rsoc_cdb(2, 0x9E, 0x1F)) == bytes((0, 0b001, 0, 0))


@pytest.mark.parametrize(
    ("cdb", "byte"),
    [
        (_rsoc_cdb(1, 0x9E, 0x10), 3),  # opcode has service actions
        (_rsoc_cdb(1, 0x28, 1), 4),  # SA given for a plain opcode
        (_rsoc_cdb(2, 0x28, 0), 3),  # option 010 for a plain opcode
        (_rsoc_cdb(5), 2),  # reserved reporting option
    ],
)
def test_rsoc_invalid_requests(cdb: bytes, byte: int) -> None:
    with pytest.raises(ScsiError) as info:
        build_rsoc(FULL, cdb)
    sense = info.value.sense
    assert sense is not None and sense.asc == 0x24
    assert sense.field_pointer is not None and sense.field_pointer.byte == byte
    assert sense.field_pointer.byte != 1  # libiscsi reads byte 1 as "not implemented"


def test_rsoc_truncates_to_allocation_length() -> None:
    full = build_rsoc(FULL, _rsoc_cdb(0))
    assert build_rsoc(FULL, _rsoc_cdb(0, alloc=10)) == full[:10]
    assert build_rsoc(FULL, _rsoc_cdb(0, alloc=0)) == b""


# --- REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS ------------------------------


def _tmf_cdb(repd: bool = False, alloc: int = 16) -> bytes:
    return struct.pack(">BBBBHIBB", 0xA3, 0x0D, 0x80 if repd else 0, 0, 0, alloc, 0, 0)


def test_report_tmf_bits() -> None:
    data = build_report_tmf(_tmf_cdb(), {"ABORT_TASK", "LOGICAL_UNIT_RESET", "I_T_NEXUS_RESET"})
    assert data == bytes((0x88, 0x01, 0, 0))
    ext = build_report_tmf(_tmf_cdb(repd=True), {"TARGET_RESET", "QUERY_TASK"})
    assert len(ext) == 16 and ext[0] == 0x06 and ext[3] == 0x0C


def test_report_tmf_allocation_checks() -> None:
    with pytest.raises(ScsiError) as info:
        build_report_tmf(_tmf_cdb(alloc=3), {"ABORT_TASK"})
    assert info.value.sense is not None
    assert info.value.sense.field_pointer == FieldPointer(6)
    assert len(build_report_tmf(_tmf_cdb(repd=True, alloc=4), {"ABORT_TASK"})) == 4
    with pytest.raises(ValueError):
        build_report_tmf(_tmf_cdb(), {"NOT_A_TMF"})
