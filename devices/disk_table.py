"""The SBC disk's command table: every opcode the disk answers, in one place.

Each row's mask is the CDB USAGE DATA RSOC reports and the set of bits the
LU's field check lets through; e.g. READ(10)'s byte 1 mask 0x18 allows DPO and
FUA (advertised by DPOFUA in MODE SENSE) and nothing of RDPROTECT, so a
non-zero RDPROTECT is INVALID FIELD IN CDB at byte 1 bit 7 without handler code.
The rows every device type shares (INQUIRY, REQUEST SENSE, TEST UNIT READY,
MODE SENSE/SELECT, PREVENT ALLOW MEDIUM REMOVAL) come from the SPC layer
(devices/spc.py) that this table overlays; REPORT LUNS, reservations and
RSOC are the LU's (actors/core_table.py) and get merged in by it.
"""

from __future__ import annotations

import attrs

from pyscst.devices import disk_atomic as atomic
from pyscst.devices import disk_info as info
from pyscst.devices import disk_io as io
from pyscst.devices import disk_sanitize as sanitize
from pyscst.devices import disk_write_ext as wx
from pyscst.devices import disk_xcopy as xcopy
from pyscst.devices.spc import type_table
from pyscst.scsi.cdb import OpFlags, OpSpec, ResvClass, rw6, rw10, rw12, rw16
from pyscst.scsi.command import DataDirection
from pyscst.scsi.opcodes import Op, ServiceActionIn16

F = OpFlags
R = ResvClass
IN = DataDirection.READ
OUT = DataDirection.WRITE
NONE = DataDirection.NONE

_RW_TIMEOUTS = (30, 60)
_SHORT_TIMEOUTS = (5, 10)
_FLUSH_TIMEOUTS = (60, 120)
_SANITIZE_TIMEOUTS = (3600, 7200)
#: ORWRITE(16); not in the shared Op enum
ORWRITE_16 = 0x8B


def _mask(hexdigits: str) -> bytes:
    return bytes.fromhex(hexdigits.replace(" ", ""))


def _start_stop_resv(cdb: bytes) -> ResvClass:
    return R.PR_ALLOWED if cdb[4] & 0x01 and not cdb[4] >> 4 else R.WRITE


def _specs() -> list[OpSpec]:
    media = F.NEEDS_MEDIUM
    present = F.NEEDS_PRESENT
    writes = F.NEEDS_MEDIUM | F.WRITES_MEDIUM
    # SANITIZE runs in sanitize failure mode (it is how one leaves it)
    erases = F.NEEDS_PRESENT | F.WRITES_MEDIUM
    s: list[OpSpec] = [
        OpSpec(Op.START_STOP_UNIT, None, "START STOP UNIT", 6, _mask("1b 01 00 0f f7 00"),
               NONE, info.handle_start_stop_unit, F.SERIALIZING, R.WRITE,
               timeouts=_FLUSH_TIMEOUTS, resv_of=_start_stop_resv),
        OpSpec(Op.READ_6, None, "READ(6)", 6, _mask("08 1f ff ff ff 00"),
               IN, io.handle_read, media, R.READ, rw6, _RW_TIMEOUTS),
        OpSpec(Op.WRITE_6, None, "WRITE(6)", 6, _mask("0a 1f ff ff ff 00"),
               OUT, io.handle_write, writes, R.WRITE, rw6, _RW_TIMEOUTS),
        OpSpec(Op.READ_CAPACITY_10, None, "READ CAPACITY(10)", 10,
               _mask("25 00 ff ff ff ff 00 00 01 00"),
               IN, info.handle_read_capacity_10, present, R.PR_ALLOWED, timeouts=_SHORT_TIMEOUTS),
        OpSpec(Op.READ_10, None, "READ(10)", 10, _mask("28 18 ff ff ff ff 1f ff ff 00"),
               IN, io.handle_read, media, R.READ, rw10, _RW_TIMEOUTS),
        OpSpec(Op.WRITE_10, None, "WRITE(10)", 10, _mask("2a 18 ff ff ff ff 1f ff ff 00"),
               OUT, io.handle_write, writes, R.WRITE, rw10, _RW_TIMEOUTS),
        OpSpec(Op.WRITE_AND_VERIFY_10, None, "WRITE AND VERIFY(10)", 10,
               _mask("2e 12 ff ff ff ff 1f ff ff 00"),
               OUT, io.handle_write_and_verify, writes, R.WRITE, rw10, _RW_TIMEOUTS),
        OpSpec(Op.VERIFY_10, None, "VERIFY(10)", 10, _mask("2f 16 ff ff ff ff 1f ff ff 00"),
               OUT, io.handle_verify, media, R.READ, rw10, _RW_TIMEOUTS),
        OpSpec(Op.PRE_FETCH_10, None, "PRE-FETCH(10)", 10, _mask("34 02 ff ff ff ff 1f ff ff 00"),
               NONE, io.handle_prefetch, media, R.READ, rw10, _RW_TIMEOUTS),
        OpSpec(Op.SYNCHRONIZE_CACHE_10, None, "SYNCHRONIZE CACHE(10)", 10,
               _mask("35 06 ff ff ff ff 1f ff ff 00"),
               NONE, io.handle_synchronize_cache, media, R.WRITE, rw10, _FLUSH_TIMEOUTS),
        OpSpec(Op.READ_DEFECT_DATA_10, None, "READ DEFECT DATA(10)", 10,
               _mask("37 00 1f 00 00 00 00 ff ff 00"),
               IN, info.handle_read_defect_data, present, R.READ, timeouts=_SHORT_TIMEOUTS),
        OpSpec(Op.WRITE_SAME_10, None, "WRITE SAME(10)", 10, _mask("41 08 ff ff ff ff 1f ff ff 00"),
               OUT, wx.handle_write_same, writes, R.WRITE, wx.write_same_range, _RW_TIMEOUTS),
        OpSpec(Op.UNMAP, None, "UNMAP", 10, _mask("42 00 00 00 00 00 1f ff ff 00"),
               OUT, wx.handle_unmap, writes, R.WRITE, timeouts=_RW_TIMEOUTS),
        OpSpec(Op.SANITIZE, sanitize.SA_OVERWRITE, "SANITIZE OVERWRITE", 10,
               _mask("48 a1 00 00 00 00 00 ff ff 00"),
               OUT, sanitize.handle_sanitize, erases, R.WRITE, timeouts=_SANITIZE_TIMEOUTS),
        OpSpec(Op.SANITIZE, sanitize.SA_BLOCK_ERASE, "SANITIZE BLOCK ERASE", 10,
               _mask("48 a2 00 00 00 00 00 ff ff 00"),
               OUT, sanitize.handle_sanitize, erases, R.WRITE, timeouts=_SANITIZE_TIMEOUTS),
        OpSpec(Op.SANITIZE, sanitize.SA_EXIT_FAILURE_MODE, "SANITIZE EXIT FAILURE MODE", 10,
               _mask("48 bf 00 00 00 00 00 ff ff 00"),
               OUT, sanitize.handle_sanitize, erases, R.WRITE, timeouts=_SHORT_TIMEOUTS),
        OpSpec(Op.EXTENDED_COPY, xcopy.SA_LID1, "EXTENDED COPY(LID1)", 16,
               _mask("83 00 0000000000000000 ffffffff 00 00"),
               OUT, xcopy.handle_extended_copy, F.NEEDS_MEDIUM, R.WRITE,
               timeouts=_FLUSH_TIMEOUTS),
        OpSpec(Op.RECEIVE_COPY_RESULTS, xcopy.SA_COPY_STATUS, "RECEIVE COPY STATUS(LID1)", 16,
               _mask("84 00 ff 00000000000000 ffffffff 00 00"),
               IN, xcopy.handle_receive_copy_results, F.NONE, R.READ,
               timeouts=_SHORT_TIMEOUTS),
        OpSpec(Op.RECEIVE_COPY_RESULTS, xcopy.SA_OPERATING_PARAMETERS,
               "RECEIVE COPY OPERATING PARAMETERS", 16,
               _mask("84 03 00 00000000000000 ffffffff 00 00"),
               IN, xcopy.handle_receive_copy_results, F.NONE, R.READ,
               timeouts=_SHORT_TIMEOUTS),
        OpSpec(Op.READ_16, None, "READ(16)", 16,
               _mask("88 18 ffffffffffffffff ffffffff 1f 00"),
               IN, io.handle_read, media, R.READ, rw16, _RW_TIMEOUTS),
        OpSpec(Op.COMPARE_AND_WRITE, None, "COMPARE AND WRITE", 16,
               _mask("89 18 ffffffffffffffff 000000 ff 1f 00"),
               OUT, wx.handle_compare_and_write, writes, R.WRITE, wx.compare_and_write_range,
               _RW_TIMEOUTS),
        OpSpec(ORWRITE_16, None, "ORWRITE(16)", 16, _mask("8b 18 ffffffffffffffff ffffffff 1f 00"),
               OUT, wx.handle_orwrite, writes, R.WRITE, rw16, _RW_TIMEOUTS),
        OpSpec(Op.WRITE_16, None, "WRITE(16)", 16,
               _mask("8a 18 ffffffffffffffff ffffffff 1f 00"),
               OUT, io.handle_write, writes, R.WRITE, rw16, _RW_TIMEOUTS),
        OpSpec(Op.WRITE_AND_VERIFY_16, None, "WRITE AND VERIFY(16)", 16,
               _mask("8e 12 ffffffffffffffff ffffffff 1f 00"),
               OUT, io.handle_write_and_verify, writes, R.WRITE, rw16, _RW_TIMEOUTS),
        OpSpec(Op.VERIFY_16, None, "VERIFY(16)", 16,
               _mask("8f 16 ffffffffffffffff ffffffff 1f 00"),
               OUT, io.handle_verify, media, R.READ, rw16, _RW_TIMEOUTS),
        OpSpec(Op.PRE_FETCH_16, None, "PRE-FETCH(16)", 16,
               _mask("90 02 ffffffffffffffff ffffffff 1f 00"),
               NONE, io.handle_prefetch, media, R.READ, rw16, _RW_TIMEOUTS),
        OpSpec(Op.SYNCHRONIZE_CACHE_16, None, "SYNCHRONIZE CACHE(16)", 16,
               _mask("91 06 ffffffffffffffff ffffffff 1f 00"),
               NONE, io.handle_synchronize_cache, media, R.WRITE, rw16, _FLUSH_TIMEOUTS),
        OpSpec(Op.WRITE_SAME_16, None, "WRITE SAME(16)", 16,
               _mask("93 09 ffffffffffffffff ffffffff 1f 00"),
               OUT, wx.handle_write_same, writes, R.WRITE, wx.write_same_range, _RW_TIMEOUTS),
        OpSpec(atomic.WRITE_ATOMIC_16, None, "WRITE ATOMIC(16)", 16,
               _mask("9c 18 ffffffffffffffff ffff ffff 1f 00"),
               OUT, atomic.handle_write_atomic, writes | F.ATOMIC, R.WRITE,
               atomic.write_atomic_range, _RW_TIMEOUTS),
        OpSpec(Op.SERVICE_ACTION_IN_16, ServiceActionIn16.READ_CAPACITY_16, "READ CAPACITY(16)",
               16, _mask("9e 10 0000000000000000 ffffffff 00 00"),
               IN, info.handle_read_capacity_16, present, R.PR_ALLOWED, timeouts=_SHORT_TIMEOUTS),
        OpSpec(Op.SERVICE_ACTION_IN_16, ServiceActionIn16.GET_LBA_STATUS, "GET LBA STATUS",
               16, _mask("9e 12 ffffffffffffffff ffffffff 00 00"),
               IN, wx.handle_get_lba_status, media, R.READ, timeouts=_SHORT_TIMEOUTS),
        OpSpec(Op.READ_12, None, "READ(12)", 12, _mask("a8 18 ffffffff ffffffff 1f 00"),
               IN, io.handle_read, media, R.READ, rw12, _RW_TIMEOUTS),
        OpSpec(Op.WRITE_12, None, "WRITE(12)", 12, _mask("aa 18 ffffffff ffffffff 1f 00"),
               OUT, io.handle_write, writes, R.WRITE, rw12, _RW_TIMEOUTS),
        OpSpec(Op.WRITE_AND_VERIFY_12, None, "WRITE AND VERIFY(12)", 12,
               _mask("ae 12 ffffffff ffffffff 1f 00"),
               OUT, io.handle_write_and_verify, writes, R.WRITE, rw12, _RW_TIMEOUTS),
        OpSpec(Op.VERIFY_12, None, "VERIFY(12)", 12, _mask("af 16 ffffffff ffffffff 1f 00"),
               OUT, io.handle_verify, media, R.READ, rw12, _RW_TIMEOUTS),
        OpSpec(Op.READ_DEFECT_DATA_12, None, "READ DEFECT DATA(12)", 12,
               _mask("b7 1f ffffffff ffffffff 00 00"),
               IN, info.handle_read_defect_data, present, R.READ, timeouts=_SHORT_TIMEOUTS),
    ]
    fast = {io.handle_read: io.read_now, io.handle_write: io.write_now}
    return [attrs.evolve(spec, fast=fast[spec.handler]) if spec.handler in fast else spec
            for spec in s]  # fmt: skip


SBC_TABLE = type_table(_specs())
