"""The SSC command set of the virtual tape drive: its table, and the data commands.

The rows here are the tape's whole command set; READ, WRITE, VERIFY, WRITE
FILEMARKS and ERASE are handled in this module, positioning in
devices/ssc_position.py, what the drive reports and how it is set in
devices/ssc_settings.py.

The rows overlay the shared SPC layer (devices/spc.py); MODE SENSE/SELECT are
overridden because a tape's block descriptor carries a density code and the
fixed-block length, not a capacity. Every row that reads, writes or moves the
medium is SERIALIZING: a tape has one position, so its commands run one at a
time in arrival order whatever their task attributes (two nexuses
interleaving commands still see each command whole).

The stream-command sense (SSC-4 4.2, 6): a READ or SPACE that meets a
filemark ends with NO SENSE, FILEMARK and 00/01; at end-of-data BLANK CHECK
00/05; at beginning of partition NO SENSE, EOM, 00/04; an incorrect-length
record NO SENSE with ILI. INFORMATION is the residue: the requested count
minus what was done (bytes for a variable READ, which may be negative for an
overlength record; blocks, filemarks or records otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pyscst.devices.disk_sense import short_data_out
from pyscst.devices.spc import SHORT_TIMEOUTS, mask, type_table
from pyscst.devices.ssc_position import (
    handle_load_unload,
    handle_locate_10,
    handle_locate_16,
    handle_read_position,
    handle_rewind,
    handle_space_6,
    handle_space_16,
)
from pyscst.devices.ssc_settings import (
    handle_format_medium,
    handle_log_select,
    handle_log_sense,
    handle_mode_select,
    handle_mode_sense,
    handle_read_attribute,
    handle_read_block_limits,
    handle_report_density_support,
    handle_write_attribute,
)
from pyscst.devices.tape_cartridge import MAX_PIECES, Kind, Pieces, Record
from pyscst.devices.tape_sense import (
    MAX_BLOCK,
    MAX_FIXED_TRANSFER,
    count24,
    early_warning,
    end_of_data,
    filemark_detected,
    incorrect_length,
    stream_error,
)
from pyscst.scsi.cdb import NEEDS_AWAIT, NeedsAwait, OpFlags, OpSpec, ResvClass
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.opcodes import Op
from pyscst.scsi.sense import Asc, ScsiError, SenseKey

if TYPE_CHECKING:
    from pyscst.devices.tape import TapeDevice

F = OpFlags
R = ResvClass
IN = DataDirection.READ
OUT = DataDirection.WRITE
NONE = DataDirection.NONE
_MOTION = (60, 600)
_RW = (60, 300)

REWIND = 0x01
FORMAT_MEDIUM = 0x04
READ_BLOCK_LIMITS = 0x05
WRITE_FILEMARKS_6 = 0x10
SPACE_6 = 0x11
VERIFY_6 = 0x13
ERASE_6 = 0x19
LOAD_UNLOAD = 0x1B
LOCATE_10 = 0x2B
READ_POSITION = 0x34
REPORT_DENSITY_SUPPORT = 0x44
LOG_SELECT = 0x4C
LOG_SENSE = 0x4D
WRITE_FILEMARKS_16 = 0x80
READ_ATTRIBUTE = 0x8C
WRITE_ATTRIBUTE = 0x8D
READ_16 = 0x88
WRITE_16 = 0x8A
VERIFY_16 = 0x8F
SPACE_16 = 0x91
LOCATE_16 = 0x92

MIB = 1 << 20


# --- READ, WRITE, VERIFY ------------------------------------------------------------


def _variable_length(dev: TapeDevice, n: int) -> int:
    """The length of the record a variable READ of ``n`` bytes is about to
    read; raises what meets it instead (damage, end-of-data, a filemark,
    which is passed over)."""
    err = dev.medium_error_here(n)
    if err is not None:
        raise err
    part = dev.part
    pos = dev.position
    if pos >= part.eod:
        raise end_of_data(n)
    if part.is_filemark(pos):
        dev.position += 1
        raise filemark_detected(n)
    return part.length(pos)


def _variable_result(dev: TapeDevice, n: int, sili: bool, buf: Buffer, length: int) -> Buffer:
    """The READ's answer once the record is in ``buf``: the data, or ILI
    with the residue (and the data) for an incorrect length."""
    if length == n:
        return buf
    if length < n:
        if sili:
            return buf
        raise incorrect_length(n - length, bytes(buf))
    if sili and not dev.block_size:
        return buf
    raise incorrect_length(n - length, bytes(buf))


async def _read_variable(dev: TapeDevice, n: int, sili: bool) -> Buffer:
    """One record of up to ``n`` bytes (READ / VERIFY with FIXED=0)."""
    length = _variable_length(dev, n)
    buf = bytearray(min(n, length))
    await dev.read_record(memoryview(buf))
    return _variable_result(dev, n, sili, buf, length)


async def _read_fixed(dev: TapeDevice, count: int) -> Buffer:
    """``count`` blocks of the fixed block length (READ / VERIFY with FIXED=1)."""
    bs = dev.block_size
    out = bytearray(count * bs)
    view = memoryview(out)
    part = dev.part
    for i in range(count):
        err = dev.medium_error_here(count - i)
        if err is not None:
            err.data = bytes(out[: i * bs])
            raise err
        pos = dev.position
        if pos >= part.eod:
            raise end_of_data(count - i, bytes(out[: i * bs]))
        if part.is_filemark(pos):
            dev.position += 1
            raise filemark_detected(count - i, bytes(out[: i * bs]))
        length = part.length(pos)
        if length != bs:
            scratch = bytearray(min(length, bs))
            await dev.read_record(memoryview(scratch))
            raise incorrect_length(count - i, bytes(out[: i * bs]))
        await dev.read_record(view[i * bs : (i + 1) * bs])
    return out


def _transfer(dev: TapeDevice, cdb: bytes, fixed: bool) -> tuple[int, int]:
    """(count, bytes) of a READ/WRITE/VERIFY(6) transfer length, checked
    against the block limits (INVALID FIELD IN CDB at byte 2 when over)."""
    return _transfer_of(dev, count24(cdb), fixed, 2)


def _transfer_of(dev: TapeDevice, n: int, fixed: bool, at: int) -> tuple[int, int]:
    """(count, bytes) of transfer length ``n`` (its field at CDB byte ``at``)."""
    if fixed:
        if not dev.block_size:
            raise ScsiError.invalid_field_in_cdb(1, 0)
        total = n * dev.block_size
        if total > MAX_FIXED_TRANSFER:
            raise ScsiError.invalid_field_in_cdb(at)
        return n, total
    if n > MAX_BLOCK:
        raise ScsiError.invalid_field_in_cdb(at)
    return n, n


def _transfer_16(dev: TapeDevice, cdb: bytes, fixed: bool) -> tuple[int, int]:
    """(count, bytes) of a READ/WRITE/VERIFY(16): its PARTITION and LOGICAL
    OBJECT IDENTIFIER must name the current position (INVALID FIELD IN CDB
    at byte 3 or 4, as for WRITE FILEMARKS(16)); TRANSFER LENGTH at bytes
    12-14."""
    _check_here(dev, cdb, 3, 4)
    return _transfer_of(dev, int.from_bytes(cdb[12:15], "big"), fixed, 12)


#: reads a READ/WRITE/VERIFY CDB's transfer length: (count, bytes)
Transfer = Callable[["TapeDevice", bytes, bool], tuple[int, int]]


async def handle_read_6(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """READ(6): one variable record, or ``count`` fixed blocks."""
    return await _read(dev, cmd, _transfer)


async def handle_read_16(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """READ(16): READ(6), naming the position it reads at."""
    return await _read(dev, cmd, _transfer_16)


async def _read(dev: TapeDevice, cmd: ScsiCommand, transfer: Transfer) -> Buffer | None:
    """READ(6) and READ(16) alike, once ``transfer`` has read the CDB's length."""
    cdb = cmd.cdb
    fixed = bool(cdb[1] & 0x01)
    sili = bool(cdb[1] & 0x02)
    if fixed and sili:
        raise ScsiError.invalid_field_in_cdb(1, 1)
    count, total = transfer(dev, cdb, fixed)
    cmd.transfer_length = total
    if count == 0:
        return None
    await dev.synchronize()
    if fixed:
        return await _read_fixed(dev, count)
    return await _read_variable(dev, count, sili)


def read_6_now(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | NeedsAwait | None:
    """READ(6)'s fast path: a variable record already in the page cache with
    nothing left to synchronize; anything else awaits (nothing changed)."""
    cdb = cmd.cdb
    if cdb[1] & 0x01 or dev.unsynced:
        return NEEDS_AWAIT
    count = int.from_bytes(cdb[2:5], "big")  # (_transfer's check, inline)
    if count > MAX_BLOCK:
        raise ScsiError.invalid_field_in_cdb(2)
    cmd.transfer_length = count
    if count == 0:
        return None
    # the streaming case, a plain record here, looked up directly; anything
    # else (end-of-data, a filemark, damage, an armed read fault) by
    # _variable_length, which raises what meets the READ
    part = dev.part
    pos = dev.position
    length = part.lengths[pos] if pos < len(part.lengths) else -1
    if length < 0 or pos in dev.faults.read_error_at:
        length = _variable_length(dev, count)
    want = min(count, length)
    data: Buffer | None = dev.read_record_inline(want)
    if data is None:
        buf = bytearray(want)
        if dev.read_record_now(memoryview(buf)) is None:
            return NEEDS_AWAIT
        data = buf
    return _variable_result(dev, count, bool(cdb[1] & 0x02), data, length)


def _records(dev: TapeDevice, data: memoryview, fixed: bool, count: int) -> list[memoryview]:
    if not fixed:
        return [data]
    bs = dev.block_size
    return [data[i * bs : (i + 1) * bs] for i in range(count)]


def write_6_now(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | NeedsAwait | None:
    """WRITE(6)'s fast path: every byte came with the command (immediate
    data); anything else awaits its data-out."""
    cdb = cmd.cdb
    fixed = bool(cdb[1] & 0x01)
    count, total = _transfer(dev, cdb, fixed)
    if count == 0:
        return None
    # (DATA PROTECT before any data is solicited; once the data is all here,
    # write_objects makes the same check, once, right before it writes)
    records: Sequence[Record]
    if fixed:
        data = cmd.data_now(total)
        if data is None or len(data) < total:
            dev.check_writable()
            return NEEDS_AWAIT
        records = _records(dev, data, fixed, count)
    else:
        # one record: written from the pieces its data-out came in (no copy)
        pieces = cmd.data_segments_now(total)
        if pieces is None or sum(map(len, pieces)) < total:
            dev.check_writable()
            return NEEDS_AWAIT
        if len(pieces) == 1:
            records = [pieces[0]]
        elif len(pieces) <= MAX_PIECES:
            records = [Pieces(pieces)]
        else:
            records = [b"".join(pieces)]
    if dev.write_objects(Kind.RECORD, records):
        raise early_warning()
    return None


async def handle_write_6(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """WRITE(6): one variable record, or ``count`` fixed blocks, at the
    current position (which becomes end-of-data)."""
    await _write(dev, cmd, _transfer)
    return None


async def handle_write_16(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """WRITE(16): WRITE(6), naming the position it writes at."""
    await _write(dev, cmd, _transfer_16)
    return None


async def _write(dev: TapeDevice, cmd: ScsiCommand, transfer: Transfer) -> None:
    """WRITE(6) and WRITE(16) alike, once ``transfer`` has read the CDB's length."""
    fixed = bool(cmd.cdb[1] & 0x01)
    count, total = transfer(dev, cmd.cdb, fixed)
    if count == 0:
        return
    dev.check_writable()
    data = await cmd.receive_data(total)
    if len(data) < total:
        raise short_data_out()
    dev.check_ready()  # the operator may have ejected it meanwhile
    if dev.write_objects(Kind.RECORD, _records(dev, data, fixed, count)):
        raise early_warning()


async def handle_verify_6(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """VERIFY(6): read (and with BYTCMP compare against data-out) without
    returning data; the position moves as a READ's would."""
    await _verify(dev, cmd, _transfer)
    return None


async def handle_verify_16(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """VERIFY(16): VERIFY(6), naming the position it verifies at."""
    await _verify(dev, cmd, _transfer_16)
    return None


async def _verify(dev: TapeDevice, cmd: ScsiCommand, transfer: Transfer) -> None:
    """VERIFY(6) and VERIFY(16) alike, once ``transfer`` has read the CDB's length."""
    fixed = bool(cmd.cdb[1] & 0x01)
    count, total = transfer(dev, cmd.cdb, fixed)
    if count == 0:
        return
    bytcmp = bool(cmd.cdb[1] & 0x02)
    expected = None
    if bytcmp:
        expected = bytes(await cmd.receive_data(total))
        if len(expected) < total:
            raise short_data_out()
        dev.check_ready()
    await dev.synchronize()
    try:
        got = await (_read_fixed(dev, count) if fixed else _read_variable(dev, count, False))
    except ScsiError as exc:
        exc.data = None
        raise
    if expected is not None and bytes(got) != expected:
        at = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
        residue = (count - at // dev.block_size) if fixed else count - at
        raise stream_error(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=residue)


# --- filemarks, erase, format -----------------------------------------------------------


async def _write_filemarks(dev: TapeDevice, count: int, immed: bool) -> None:
    early = dev.write_objects(Kind.FILEMARK, count) if count else False
    if not immed:
        await dev.synchronize()
    if early:
        raise early_warning()


async def handle_write_filemarks_6(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """WRITE FILEMARKS(6): ``count`` filemarks; IMMED=0 also makes everything
    written durable first (a count of 0 only does that)."""
    cdb = cmd.cdb
    count = count24(cdb)
    if count:
        dev.check_writable()
    await _write_filemarks(dev, count, bool(cdb[1] & 0x01))
    return None


def _check_here(dev: TapeDevice, cdb: bytes, partition_at: int, object_at: int) -> None:
    """The PARTITION and LOGICAL OBJECT IDENTIFIER of a 16-byte CDB must name
    the current position (SSC-4 6.x: else INVALID FIELD IN CDB)."""
    if cdb[partition_at] != dev.partition:
        raise ScsiError.invalid_field_in_cdb(partition_at)
    if int.from_bytes(cdb[object_at : object_at + 8], "big") != dev.position:
        raise ScsiError.invalid_field_in_cdb(object_at)


async def handle_write_filemarks_16(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """WRITE FILEMARKS(16): as (6), at the position the CDB names."""
    cdb = cmd.cdb
    count = int.from_bytes(cdb[12:15], "big")
    _check_here(dev, cdb, 3, 4)
    if count:
        dev.check_writable()
    await _write_filemarks(dev, count, bool(cdb[1] & 0x01))
    return None


async def handle_erase_6(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """ERASE(6): end-of-data at the current position (LONG: the rest of the
    partition erased, the same here). WORM refuses unless at end-of-data.
    IMMED: the synchronize goes on after the status (a failure: deferred)."""
    dev.check_writable()
    part = dev.part
    part.truncate(dev.position, physical=True)  # (no stale bytes left behind)
    dev.unsynced = True
    dev.write_gen += 1
    if cmd.cdb[1] & 0x02:
        dev.synchronize_later(ctx)
    else:
        await dev.synchronize()
    return None


# --- the table ----------------------------------------------------------------------------


def _specs() -> list[OpSpec]:
    media = F.NEEDS_MEDIUM | F.SERIALIZING
    writes = media | F.WRITES_MEDIUM
    present = F.NEEDS_PRESENT | F.SERIALIZING
    short = SHORT_TIMEOUTS
    return [
        OpSpec(REWIND, None, "REWIND", 6, mask("01 01 00 00 00 00"),
               NONE, handle_rewind, media, R.READ, timeouts=_MOTION),
        OpSpec(FORMAT_MEDIUM, None, "FORMAT MEDIUM", 6, mask("04 01 0f 00 00 00"),
               NONE, handle_format_medium, writes, R.WRITE, timeouts=_MOTION),
        OpSpec(READ_BLOCK_LIMITS, None, "READ BLOCK LIMITS", 6, mask("05 00 00 00 00 00"),
               IN, handle_read_block_limits, F.NONE, R.READ, timeouts=short),
        OpSpec(Op.READ_6, None, "READ(6)", 6, mask("08 03 ff ff ff 00"),
               IN, handle_read_6, media, R.READ, timeouts=_RW, fast=read_6_now),
        OpSpec(Op.WRITE_6, None, "WRITE(6)", 6, mask("0a 01 ff ff ff 00"),
               OUT, handle_write_6, writes, R.WRITE, timeouts=_RW, fast=write_6_now),
        OpSpec(WRITE_FILEMARKS_6, None, "WRITE FILEMARKS(6)", 6, mask("10 01 ff ff ff 00"),
               NONE, handle_write_filemarks_6, writes, R.WRITE, timeouts=_RW),
        OpSpec(SPACE_6, None, "SPACE(6)", 6, mask("11 0f ff ff ff 00"),
               NONE, handle_space_6, media, R.READ, timeouts=_MOTION),
        OpSpec(VERIFY_6, None, "VERIFY(6)", 6, mask("13 07 ff ff ff 00"),
               OUT, handle_verify_6, media, R.READ, timeouts=_RW),
        OpSpec(Op.MODE_SELECT_6, None, "MODE SELECT(6)", 6, mask("15 11 00 00 ff 00"),
               OUT, handle_mode_select, F.SERIALIZING, R.WRITE, timeouts=short),
        OpSpec(Op.MODE_SENSE_6, None, "MODE SENSE(6)", 6, mask("1a 08 ff ff ff 00"),
               IN, handle_mode_sense, F.NONE, R.READ, timeouts=short),
        OpSpec(ERASE_6, None, "ERASE(6)", 6, mask("19 03 00 00 00 00"),
               NONE, handle_erase_6, writes, R.WRITE, timeouts=_MOTION),
        OpSpec(LOAD_UNLOAD, None, "LOAD UNLOAD", 6, mask("1b 01 00 00 0d 00"),
               NONE, handle_load_unload, present, R.WRITE, timeouts=_MOTION),
        OpSpec(LOCATE_10, None, "LOCATE(10)", 10, mask("2b 07 00 ff ff ff ff 00 ff 00"),
               NONE, handle_locate_10, media, R.READ, timeouts=_MOTION),
        OpSpec(READ_POSITION, None, "READ POSITION", 10, mask("34 1f 00 00 00 00 00 ff ff 00"),
               IN, handle_read_position, media, R.READ, timeouts=short),
        OpSpec(REPORT_DENSITY_SUPPORT, None, "REPORT DENSITY SUPPORT", 10,
               mask("44 01 00 00 00 00 00 ff ff 00"),
               IN, handle_report_density_support, F.NONE, R.READ, timeouts=short),
        OpSpec(LOG_SELECT, None, "LOG SELECT", 10, mask("4c 03 c0 00 00 00 00 ff ff 00"),
               OUT, handle_log_select, F.SERIALIZING, R.WRITE, timeouts=short),
        OpSpec(LOG_SENSE, None, "LOG SENSE", 10, mask("4d 01 ff ff 00 ff ff ff ff 00"),
               IN, handle_log_sense, F.SERIALIZING, R.READ, timeouts=short),
        OpSpec(Op.MODE_SELECT_10, None, "MODE SELECT(10)", 10,
               mask("55 11 00 00 00 00 00 ff ff 00"),
               OUT, handle_mode_select, F.SERIALIZING, R.WRITE, timeouts=short),
        OpSpec(Op.MODE_SENSE_10, None, "MODE SENSE(10)", 10,
               mask("5a 08 ff ff 00 00 00 ff ff 00"),
               IN, handle_mode_sense, F.NONE, R.READ, timeouts=short),
        OpSpec(WRITE_FILEMARKS_16, None, "WRITE FILEMARKS(16)", 16,
               mask("80 01 00 ff ffffffffffffffff ffffff 00"),
               NONE, handle_write_filemarks_16, writes, R.WRITE, timeouts=_RW),
        OpSpec(READ_ATTRIBUTE, None, "READ ATTRIBUTE", 16,
               mask("8c 1f 00 00 00 ff 00 ff ff ff ff ff ff ff 01 00"),
               IN, handle_read_attribute, present, R.READ, timeouts=short),
        OpSpec(WRITE_ATTRIBUTE, None, "WRITE ATTRIBUTE", 16,
               mask("8d 01 00 00 00 ff 00 ff 00 00 ff ff ff ff 00 00"),
               OUT, handle_write_attribute, present, R.WRITE, timeouts=short),
        OpSpec(READ_16, None, "READ(16)", 16, mask("88 03 00 ff ffffffffffffffff ffffff 00"),
               IN, handle_read_16, media, R.READ, timeouts=_RW),
        OpSpec(WRITE_16, None, "WRITE(16)", 16, mask("8a 01 00 ff ffffffffffffffff ffffff 00"),
               OUT, handle_write_16, writes, R.WRITE, timeouts=_RW),
        OpSpec(VERIFY_16, None, "VERIFY(16)", 16, mask("8f 07 00 ff ffffffffffffffff ffffff 00"),
               OUT, handle_verify_16, media, R.READ, timeouts=_RW),
        OpSpec(SPACE_16, None, "SPACE(16)", 16,
               mask("91 0f 00 00 ffffffffffffffff 00 00 00 00"),
               NONE, handle_space_16, media, R.READ, timeouts=_MOTION),
        OpSpec(LOCATE_16, None, "LOCATE(16)", 16,
               mask("92 3b 00 ff ffffffffffffffff 00 00 00 00"),
               NONE, handle_locate_16, media, R.READ, timeouts=_MOTION),
    ]  # fmt: skip


#: every command the tape drive answers: SPC layer + these
SSC_TABLE = type_table(_specs())
