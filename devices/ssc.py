"""The SSC command set of the virtual tape drive: its handlers and table rows.

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

import struct
from typing import TYPE_CHECKING

from pyscst.devices import tape_mam
from pyscst.devices.disk_sense import removal_prevented, short_data_out
from pyscst.devices.medium import MediumLocked
from pyscst.devices.spc import SHORT_TIMEOUTS, mask, type_table
from pyscst.devices.tape_cartridge import Kind
from pyscst.devices.tape_pages import (
    DEVICE_CONFIGURATION,
    LOG_PAGES,
    MAX_PARTITIONS,
    MEDIUM_PARTITION,
    READ_ERROR_COUNTERS,
    SEQUENTIAL_ACCESS,
    SUPPORTED_LOG_PAGES,
    TAPE_ALERT,
    WRITE_ERROR_COUNTERS,
    counters_page,
    log_page,
    log_parameter,
)
from pyscst.devices.tape_sense import (
    GRANULARITY,
    MAX_BLOCK,
    MIN_BLOCK,
    beginning_of_partition,
    early_warning,
    end_of_data,
    filemark_detected,
    incorrect_length,
    stream_error,
)
from pyscst.scsi.cdb import OpFlags, OpSpec, Readiness, ResvClass, alloc_len
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.mode import PC_CHANGEABLE, PC_SAVED
from pyscst.scsi.opcodes import Op
from pyscst.scsi.sense import Asc, FieldPointer, ScsiError, SenseKey

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
LOG_SENSE = 0x4D
WRITE_FILEMARKS_16 = 0x80
READ_ATTRIBUTE = 0x8C
WRITE_ATTRIBUTE = 0x8D
SPACE_16 = 0x91
LOCATE_16 = 0x92

#: the largest fixed-mode transfer (blocks x block length) in bytes
MAX_FIXED_TRANSFER = 16 << 20
MIB = 1 << 20


def _count24(cdb: bytes) -> int:
    return int.from_bytes(cdb[2:5], "big")


# --- READ, WRITE, VERIFY ------------------------------------------------------------


def _read_variable(dev: TapeDevice, n: int, sili: bool) -> Buffer:
    """One record of up to ``n`` bytes (READ / VERIFY with FIXED=0)."""
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
    length = part.length(pos)
    buf = bytearray(min(n, length))
    dev.read_record(memoryview(buf))
    data = buf
    if length == n:
        return data
    if length < n:
        if sili:
            return data
        raise incorrect_length(n - length, bytes(buf))
    if sili and not dev.block_size:
        return data
    raise incorrect_length(n - length, bytes(buf))


def _read_fixed(dev: TapeDevice, count: int) -> Buffer:
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
            dev.read_record(memoryview(scratch))
            raise incorrect_length(count - i, bytes(out[: i * bs]))
        dev.read_record(view[i * bs : (i + 1) * bs])
    return out


def _transfer(dev: TapeDevice, cdb: bytes, fixed: bool) -> tuple[int, int]:
    """(count, bytes) of a READ/WRITE/VERIFY(6) transfer length, checked
    against the block limits (INVALID FIELD IN CDB at byte 2 when over)."""
    n = _count24(cdb)
    if fixed:
        if not dev.block_size:
            raise ScsiError.invalid_field_in_cdb(1, 0)
        total = n * dev.block_size
        if total > MAX_FIXED_TRANSFER:
            raise ScsiError.invalid_field_in_cdb(2)
        return n, total
    if n > MAX_BLOCK:
        raise ScsiError.invalid_field_in_cdb(2)
    return n, n


async def handle_read_6(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """READ(6): one variable record, or ``count`` fixed blocks."""
    cdb = cmd.cdb
    fixed = bool(cdb[1] & 0x01)
    sili = bool(cdb[1] & 0x02)
    if fixed and sili:
        raise ScsiError.invalid_field_in_cdb(1, 1)
    count, total = _transfer(dev, cdb, fixed)
    cmd.transfer_length = total
    if count == 0:
        return None
    await dev.synchronize()
    if fixed:
        return _read_fixed(dev, count)
    return _read_variable(dev, count, sili)


async def handle_write_6(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """WRITE(6): one variable record, or ``count`` fixed blocks, at the
    current position (which becomes end-of-data)."""
    cdb = cmd.cdb
    fixed = bool(cdb[1] & 0x01)
    count, total = _transfer(dev, cdb, fixed)
    if count == 0:
        return None
    dev.check_writable()
    data = await cmd.receive_data(total)
    if len(data) < total:
        raise short_data_out()
    dev.check_ready()  # the operator may have ejected it meanwhile
    if fixed:
        bs = dev.block_size
        records = [data[i * bs : (i + 1) * bs] for i in range(count)]
    else:
        records = [data]
    if dev.write_objects(Kind.RECORD, records):
        raise early_warning()
    return None


async def handle_verify_6(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """VERIFY(6): read (and with BYTCMP compare against data-out) without
    returning data; the position moves as a READ's would."""
    cdb = cmd.cdb
    fixed = bool(cdb[1] & 0x01)
    bytcmp = bool(cdb[1] & 0x02)
    count, total = _transfer(dev, cdb, fixed)
    if count == 0:
        return None
    expected = None
    if bytcmp:
        expected = bytes(await cmd.receive_data(total))
        if len(expected) < total:
            raise short_data_out()
        dev.check_ready()
    await dev.synchronize()
    try:
        got = _read_fixed(dev, count) if fixed else _read_variable(dev, count, False)
    except ScsiError as exc:
        exc.data = None
        raise
    if expected is not None and bytes(got) != expected:
        at = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
        residue = (count - at // dev.block_size) if fixed else count - at
        raise stream_error(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=residue)
    return None


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
    count = _count24(cdb)
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
    partition erased, the same here). WORM refuses unless at end-of-data."""
    dev.check_writable()
    part = dev.part
    part.truncate(dev.position)
    dev.unsynced = True
    await dev.synchronize()
    return None


async def handle_format_medium(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """FORMAT MEDIUM: FORMAT 0 one partition of the whole capacity; 1 the
    partitions the Medium Partition page asks for; 2 both (SSC-4 6.3).
    Only at the beginning of partition 0; never on WORM or protected media."""
    cdb = cmd.cdb
    fmt = cdb[2] & 0x0F
    if fmt > 2:
        raise ScsiError.invalid_field_in_cdb(2, 3)
    cart = dev.cartridge
    assert cart is not None
    if dev.write_protected:
        raise ScsiError.write_protected()
    if cart.worm:
        raise ScsiError.check(SenseKey.DATA_PROTECT, Asc.WORM_MEDIUM_OVERWRITE_ATTEMPTED)
    if dev.partition or dev.position:
        raise ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.POSITION_PAST_BEGINNING_OF_MEDIUM)
    total = cart.capacity
    sizes = [total] if fmt == 0 else partition_sizes(dev, total)
    await dev.motion()
    try:
        cart.reformat(sizes)
    except OSError as exc:
        raise ScsiError.check(SenseKey.MEDIUM_ERROR, Asc.MEDIUM_FORMAT_CORRUPTED) from exc
    mam = cart.mam
    mam["initialization_count"] = int(mam.get("initialization_count", 0)) + 1
    cart.note_changed()
    dev.partition = dev.position = 0
    dev.unsynced = False
    return None


def partition_sizes(dev: TapeDevice, total: int) -> list[int]:
    """The partition capacities the current Medium Partition page asks for:
    FDP two partitions (5% and the rest), SDP equal partitions, IDP the
    initiator's sizes in MB (0xFFFF: the remainder). ILLEGAL REQUEST when
    they cannot be laid out (PARAMETER VALUE INVALID)."""
    page = dev.mode.current(MEDIUM_PARTITION)
    extra = page[3]
    flags = page[4]
    if flags & 0x80:  # FDP
        first = max(total // 20, MIB)
        return [first, total - first]
    if flags & 0x40:  # SDP
        n = extra + 1
        return [total // n] * n
    if not flags & 0x20 or extra == 0:  # IDP not set: one partition
        return [total]
    sizes = [struct.unpack_from(">H", page, 8 + 2 * i)[0] for i in range(extra + 1)]
    rest = [i for i, s in enumerate(sizes) if s == 0xFFFF]
    fixed = sum(s * MIB for s in sizes if s != 0xFFFF)
    out = [s * MIB for s in sizes]
    if len(rest) > 1 or fixed > total:
        raise ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_VALUE_INVALID)
    if rest:
        out[rest[0]] = total - fixed
    elif not out[-1]:
        out[-1] = total - fixed
    if any(s < MIB for s in out):
        raise ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_VALUE_INVALID)
    return out


# --- positioning ----------------------------------------------------------------------


async def handle_rewind(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """REWIND: synchronize, then to the beginning of the current partition."""
    await dev.synchronize()
    await dev.motion()
    dev.position = 0
    return None


async def handle_load_unload(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """LOAD UNLOAD: LOAD=1 threads the cartridge at BOP of partition 0;
    LOAD=0 synchronizes, rewinds and unthreads it (EOT and RETEN: refused;
    HOLD: the cartridge stays in the drive either way)."""
    b4 = cmd.cdb[4]
    if b4 & 0x04:
        raise ScsiError.invalid_field_in_cdb(4, 2)  # EOT
    if b4 & 0x02:
        raise ScsiError.invalid_field_in_cdb(4, 1)  # RETEN
    await dev.synchronize()
    await dev.motion()
    if b4 & 0x01:
        try:
            dev.load()
        except MediumLocked:
            raise removal_prevented() from None
        dev.partition = dev.position = 0
    else:
        dev.unload()
    return None


def space(dev: TapeDevice, code: int, count: int, code_at: tuple[int, int]) -> None:
    """SPACE over ``count`` (negative: toward BOP) blocks (code 0), filemarks
    (1) or sequential filemarks (2), or to end-of-data (3)."""
    part = dev.part
    pos = dev.position
    marks = part.filemarks
    if code == 3:
        dev.position = part.eod
        return
    if count == 0:
        return
    if code == 0:
        if count > 0:
            fm = part.filemark_after(pos)
            target = pos + count
            if fm is not None and fm < target:
                dev.position = fm + 1
                raise filemark_detected(count - (fm - pos))
            if target > part.eod:
                dev.position = part.eod
                if part.damaged:
                    raise ScsiError.check(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR)
                raise end_of_data(count - (part.eod - pos))
            dev.position = target
            return
        n = -count
        fm = part.filemark_before(pos)
        target = pos - n
        if fm is not None and fm >= target:
            dev.position = fm
            raise filemark_detected(n - (pos - fm - 1))
        if target < 0:
            dev.position = 0
            raise beginning_of_partition(n - pos)
        dev.position = target
        return
    if code == 1:
        before = part.files_before(pos)
        if count > 0:
            if before + count <= len(marks):
                dev.position = marks[before + count - 1] + 1
                return
            dev.position = part.eod
            raise end_of_data(count - (len(marks) - before))
        n = -count
        if before - n >= 0:
            dev.position = marks[before - n]
            return
        dev.position = 0
        raise beginning_of_partition(n - before)
    if code == 2:
        _space_sequential(dev, count)
        return
    raise ScsiError.invalid_field_in_cdb(*code_at)


def _space_sequential(dev: TapeDevice, count: int) -> None:
    """SPACE to the first (count > 0: after the position, ending past it;
    count < 0: before it, at its BOP side) run of |count| consecutive filemarks."""
    part = dev.part
    marks = list(part.filemarks)
    n = abs(count)
    runs: list[int] = []  # start index of every run of n consecutive filemarks
    for i in range(len(marks) - n + 1):
        if marks[i + n - 1] - marks[i] == n - 1:
            runs.append(marks[i])
    if count > 0:
        ahead = [r for r in runs if r >= dev.position]
        if ahead:
            dev.position = ahead[0] + n
            return
        dev.position = part.eod
        raise end_of_data(None)
    behind = [r for r in runs if r + n <= dev.position]
    if behind:
        dev.position = behind[-1]
        return
    dev.position = 0
    raise beginning_of_partition(0)


async def handle_space_6(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    cdb = cmd.cdb
    raw = _count24(cdb)
    count = raw - (1 << 24) if raw & 0x800000 else raw
    await dev.synchronize()
    space(dev, cdb[1] & 0x0F, count, (1, 3))
    return None


async def handle_space_16(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    cdb = cmd.cdb
    (count,) = struct.unpack_from(">q", cdb, 4)
    await dev.synchronize()
    space(dev, cdb[1] & 0x0F, count, (1, 3))
    return None


def _change_partition(dev: TapeDevice, partition: int, at: int) -> None:
    cart = dev.cartridge
    assert cart is not None
    if partition >= len(cart.partitions):
        raise ScsiError.invalid_field_in_cdb(at)
    dev.partition = partition
    page = bytearray(dev.mode.current(DEVICE_CONFIGURATION))
    page[3] = partition  # ACTIVE PARTITION
    dev.mode.store(DEVICE_CONFIGURATION, bytes(page))


async def _locate(dev: TapeDevice, target: int) -> None:
    await dev.motion()
    part = dev.part
    if target > part.eod:
        dev.position = part.eod
        raise end_of_data(None)
    dev.position = target


async def handle_locate_10(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """LOCATE(10): to a logical object (BT: the same address), in another
    partition with CP."""
    cdb = cmd.cdb
    await dev.synchronize()
    if cdb[1] & 0x02:
        _change_partition(dev, cdb[8], 8)
    await _locate(dev, struct.unpack_from(">I", cdb, 3)[0])
    return None


async def handle_locate_16(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """LOCATE(16): DEST_TYPE 0 a logical object, 1 a logical file (the first
    object after filemark N-1), 3 end-of-data."""
    cdb = cmd.cdb
    dest = (cdb[1] >> 3) & 0x07
    if dest not in (0, 1, 3):
        raise ScsiError.invalid_field_in_cdb(1, 5)
    await dev.synchronize()
    if cdb[1] & 0x02:
        _change_partition(dev, cdb[3], 3)
    ident = struct.unpack_from(">Q", cdb, 4)[0]
    part = dev.part
    if dest == 3:
        await _locate(dev, part.eod)
    elif dest == 1:
        if ident == 0:
            await _locate(dev, 0)
        elif ident <= len(part.filemarks):
            await _locate(dev, part.filemarks[ident - 1] + 1)
        else:
            await dev.motion()
            dev.position = part.eod
            raise end_of_data(None)
    else:
        await _locate(dev, ident)
    return None


def _position_flags(dev: TapeDevice) -> int:
    part = dev.part
    flags = 0x80 if dev.position == 0 else 0  # BOP
    if dev.position >= part.eod and dev.early_warning(part):
        flags |= 0x40 | 0x01  # EOP (past early warning), BPEW
    return flags


async def handle_read_position(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """READ POSITION: short (00h, 01h), long (06h) and extended (08h) forms.
    Nothing is ever buffered: first and last object are the position, the
    buffer counts 0."""
    cdb = cmd.cdb
    sa = cdb[1] & 0x1F
    allocation = alloc_len(cdb, 7, 2)
    if sa not in (0x00, 0x01, 0x06, 0x08):
        raise ScsiError.invalid_field_in_cdb(1, 4)
    if sa != 0x08 and allocation:
        raise ScsiError.invalid_field_in_cdb(7)
    await dev.synchronize()
    pos = dev.position
    flags = _position_flags(dev)
    if sa in (0x00, 0x01):
        data = bytearray(20)
        data[0] = flags
        data[1] = dev.partition
        if pos > 0xFFFFFFFF:
            data[0] |= 0x04 | 0x02  # LOLU, PERR: does not fit
        else:
            struct.pack_into(">II", data, 4, pos, pos)
        return bytes(data)
    if sa == 0x06:
        data = bytearray(32)
        data[0] = flags & 0xC1
        struct.pack_into(">IQQ", data, 4, dev.partition, pos, dev.file_number())
        return bytes(data)
    data = bytearray(32)
    data[0] = flags
    data[1] = dev.partition
    struct.pack_into(">H", data, 2, 0x1C)
    struct.pack_into(">QQ", data, 8, pos, pos)
    return bytes(data[:allocation])


# --- limits, density, log, attributes ----------------------------------------------------


async def handle_read_block_limits(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    return bytes((GRANULARITY,)) + MAX_BLOCK.to_bytes(3, "big") + struct.pack(">H", MIN_BLOCK)


async def handle_report_density_support(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """REPORT DENSITY SUPPORT: the one density (MEDIA=1: the mounted medium's,
    which needs one)."""
    cdb = cmd.cdb
    if cdb[1] & 0x01:
        dev.check_ready()
    allocation = alloc_len(cdb, 7, 2)
    cart = dev.cartridge
    capacity = (cart.capacity if cart is not None else 0) // 1_000_000
    desc = bytearray(52)
    desc[0] = desc[1] = dev.density
    desc[2] = 0x80 | 0x20 | 0x01  # WRTOK, DEFLT, DLV
    struct.pack_into(">H", desc, 3, len(desc) - 5)
    struct.pack_into(">HI", desc, 8, 127, capacity)  # MEDIA WIDTH (0.1 mm), CAPACITY (MB)
    struct.pack_into(">H", desc, 10, 1)  # TRACKS
    struct.pack_into(">I", desc, 12, capacity)
    desc[16:24] = b"PYSCST  "
    desc[24:32] = b"VTAPE   "
    desc[32:52] = b"pyscst virtual tape ".ljust(20)
    data = struct.pack(">HH", len(desc) + 2, 0) + bytes(desc)
    return data[:allocation]


def _log_page(dev: TapeDevice, page: int, pointer: int) -> bytes:
    c = dev.counters
    if page == SUPPORTED_LOG_PAGES:
        body = bytes(LOG_PAGES)
        return struct.pack(">BBH", 0, 0, len(body)) + body
    if page == WRITE_ERROR_COUNTERS:
        return counters_page(page, [0, 0, 0, 0, 0, c.bytes_written, c.write_errors])
    if page == READ_ERROR_COUNTERS:
        return counters_page(page, [0, 0, 0, 0, 0, c.bytes_read, c.read_errors])
    if page == SEQUENTIAL_ACCESS:
        values = [c.bytes_written, c.bytes_written, c.bytes_read, c.bytes_read]
        params = [log_parameter(i, struct.pack(">Q", v)) for i, v in enumerate(values)]
        params.append(log_parameter(0x0100, bytes((1 if dev.needs_cleaning else 0,))))
        return log_page(page, [p for p in params if struct.unpack_from(">H", p)[0] >= pointer])
    assert page == TAPE_ALERT
    flags = dev.tapealert
    params = [log_parameter(n, bytes(((flags >> (n - 1)) & 1,))) for n in range(1, 65)
              if n >= pointer]  # fmt: skip
    dev.tapealert = 0  # read and cleared (SSC-4 8.2.3)
    return log_page(page, params)


async def handle_log_sense(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """LOG SENSE: supported pages, write/read error counters, sequential
    access, TapeAlert. Cumulative values only; no saving (SP=1 refused)."""
    cdb = cmd.cdb
    if cdb[1] & 0x01:
        raise ScsiError.invalid_field_in_cdb(1, 0)
    pc = cdb[2] >> 6
    page = cdb[2] & 0x3F
    if pc not in (1, 3):  # only cumulative values: current and default cumulative
        raise ScsiError.invalid_field_in_cdb(2, 7)
    if cdb[3]:
        raise ScsiError.invalid_field_in_cdb(3)
    if page not in LOG_PAGES:
        raise ScsiError.invalid_field_in_cdb(2, 5)
    pointer = struct.unpack_from(">H", cdb, 5)[0]
    if page in (WRITE_ERROR_COUNTERS, READ_ERROR_COUNTERS) and pointer > 6:
        raise ScsiError.invalid_field_in_cdb(5)
    allocation = alloc_len(cdb, 7, 2)
    if pc == 3:
        saved, dev.counters = dev.counters, type(dev.counters)()
        alerts, dev.tapealert = dev.tapealert, 0
        try:
            data = _log_page(dev, page, pointer)
        finally:
            dev.counters, dev.tapealert = saved, alerts
    else:
        data = _log_page(dev, page, pointer)
    return data[:allocation]


async def handle_read_attribute(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    cdb = cmd.cdb
    allocation = alloc_len(cdb, 10, 4)
    if allocation < 4:
        raise ScsiError.invalid_field_in_cdb(10)
    return tape_mam.read_attribute(dev, cdb)[:allocation]


async def handle_write_attribute(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    cdb = cmd.cdb
    length = alloc_len(cdb, 10, 4)
    if length > tape_mam.MAM_SPACE + 4096:
        raise ScsiError.parameter_list_length_error()
    cart = dev.cartridge
    assert cart is not None
    if length == 0:
        return None
    data = bytes(await cmd.receive_data(length))
    if len(data) < length:
        raise short_data_out()
    dev.check_ready(Readiness.PRESENT)
    if cart is not dev.cartridge or (cart.read_only and not cart.write_protected):
        raise ScsiError.check(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)
    tape_mam.write_attribute(dev, cdb, data)
    try:
        cart.save_meta()
    except OSError as exc:
        raise ScsiError.check(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR) from exc
    return None


# --- MODE SENSE / SELECT --------------------------------------------------------------------


def _refresh_partition_page(dev: TapeDevice) -> None:
    """The Medium Partition page shows the mounted cartridge's partitions."""
    cart = dev.cartridge
    if cart is None:
        return
    page = bytearray(dev.mode.current(MEDIUM_PARTITION))
    page[3] = len(cart.partitions) - 1
    for i in range(MAX_PARTITIONS):
        size = cart.partitions[i].capacity // MIB if i < len(cart.partitions) else 0
        struct.pack_into(">H", page, 8 + 2 * i, min(size, 0xFFFE))
    dev.mode.store(MEDIUM_PARTITION, bytes(page))


async def handle_mode_sense(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """MODE SENSE (6/10): header with WP and BUFFERED MODE, a block descriptor
    of density code and block length (none with DBD), then the pages."""
    cdb = cmd.cdb
    ten = cdb[0] == Op.MODE_SENSE_10
    dbd = bool(cdb[1] & 0x08)
    pc = cdb[2] >> 6
    if pc == PC_SAVED:
        raise ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED,
                              field_pointer=FieldPointer(2, 7))  # fmt: skip
    _refresh_partition_page(dev)
    body = dev.mode.render(cdb[2] & 0x3F, cdb[3], pc)
    if dbd:
        desc = b""
    elif pc == PC_CHANGEABLE:
        desc = bytes((0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF))
    else:
        desc = bytes((dev.density, 0, 0, 0, 0)) + dev.block_size.to_bytes(3, "big")
    specific = dev.device_specific(ctx.read_only)
    if ten:
        total = 8 + len(desc) + len(body)
        head = struct.pack(">HBBBBH", total - 2, 0, specific, 0, 0, len(desc))
        allocation = alloc_len(cdb, 7, 2)
    else:
        total = 4 + len(desc) + len(body)
        if total > 0xFF:
            raise ScsiError.invalid_field_in_cdb(2, 5)
        head = bytes((total - 1, 0, specific, len(desc)))
        allocation = cdb[4]
    return (head + desc + body)[:allocation]


def _select_descriptor(dev: TapeDevice, bd: bytes, at: int) -> int | None:
    """A MODE SELECT block descriptor: density 0 (keep) or the drive's; block
    length 0 (variable) or within the block limits. The new block length."""
    if bd[0] not in (0, dev.density, 0x7F):
        raise ScsiError.invalid_field_in_parameter_list(at)
    size = int.from_bytes(bd[5:8], "big")
    if size and not MIN_BLOCK <= size <= min(MAX_BLOCK, MAX_FIXED_TRANSFER):
        raise ScsiError.invalid_field_in_parameter_list(at + 5)
    return size


async def handle_mode_select(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """MODE SELECT (6/10): block descriptor (fixed block length, density),
    buffered mode, then the pages; all checked before any is applied."""
    cdb = cmd.cdb
    ten = cdb[0] == Op.MODE_SELECT_10
    if cdb[1] & 0x01:
        raise ScsiError.invalid_field_in_cdb(1, 0)
    length = alloc_len(cdb, 7, 2) if ten else cdb[4]
    if length == 0:
        return None
    raw = bytes(await cmd.receive_data(length))
    if len(raw) < length:
        raise short_data_out()
    hdr = 8 if ten else 4
    if len(raw) < hdr:
        raise ScsiError.parameter_list_length_error()
    specific = raw[3 if ten else 2]
    if (specific >> 4) & 0x07 > 1:
        raise ScsiError.invalid_field_in_parameter_list(3 if ten else 2, 6)
    bd_len = struct.unpack_from(">H", raw, 6)[0] if ten else raw[3]
    if bd_len not in (0, 8):
        raise ScsiError.invalid_field_in_parameter_list(6 if ten else 3)
    if hdr + bd_len > len(raw):
        raise ScsiError.parameter_list_length_error()
    size = _select_descriptor(dev, raw[hdr : hdr + 8], hdr) if bd_len else None
    before = dev.mode.current(MEDIUM_PARTITION)
    changed = dev.mode.select(raw[hdr + bd_len :], hdr + bd_len)
    if dev.mode.current(MEDIUM_PARTITION) != before:
        page = dev.mode.current(MEDIUM_PARTITION)
        if page[4] & 0xE0 and dev.cartridge is not None:
            try:
                partition_sizes(dev, dev.cartridge.capacity)
            except ScsiError:
                dev.mode.store(MEDIUM_PARTITION, before)
                raise
    if size is not None and size != dev.block_size:
        dev.block_size = size
        changed = True
    if changed:
        ctx.notify_others(Asc.MODE_PARAMETERS_CHANGED)
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
               IN, handle_read_6, media, R.READ, timeouts=_RW),
        OpSpec(Op.WRITE_6, None, "WRITE(6)", 6, mask("0a 01 ff ff ff 00"),
               OUT, handle_write_6, writes, R.WRITE, timeouts=_RW),
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
        OpSpec(SPACE_16, None, "SPACE(16)", 16,
               mask("91 0f 00 00 ffffffffffffffff 00 00 00 00"),
               NONE, handle_space_16, media, R.READ, timeouts=_MOTION),
        OpSpec(LOCATE_16, None, "LOCATE(16)", 16,
               mask("92 3b 00 ff ffffffffffffffff 00 00 00 00"),
               NONE, handle_locate_16, media, R.READ, timeouts=_MOTION),
    ]  # fmt: skip


#: every command the tape drive answers: SPC layer + these
SSC_TABLE = type_table(_specs())
