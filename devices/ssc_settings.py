"""What the drive and its medium report and how they are set (SSC-4, SPC-4):
READ BLOCK LIMITS, REPORT DENSITY SUPPORT, LOG SENSE, READ / WRITE ATTRIBUTE,
MODE SENSE / SELECT (density, block length, partitions) and FORMAT MEDIUM.
The rows are in devices/ssc.py.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyscst.devices import tape_mam
from pyscst.devices.disk_sense import short_data_out
from pyscst.devices.tape_pages import (
    LOG_PAGES,
    MAX_PARTITIONS,
    MEDIUM_PARTITION,
    READ_ERROR_COUNTERS,
    SEQUENTIAL_ACCESS,
    SUPPORTED_LOG_PAGES,
    TAPE_ALERT,
    TAPE_CAPACITY,
    WRITE_ERROR_COUNTERS,
    counter_parameters,
    log_page,
    log_parameter,
)
from pyscst.devices.tape_sense import (
    GRANULARITY,
    MAX_BLOCK,
    MAX_FIXED_TRANSFER,
    MIN_BLOCK,
)
from pyscst.scsi.cdb import Readiness, alloc_len
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.mode import PC_CHANGEABLE, PC_SAVED, mode_parameter_data
from pyscst.scsi.opcodes import Op
from pyscst.scsi.sense import Asc, FieldPointer, ScsiError, SenseKey

if TYPE_CHECKING:
    from pyscst.devices.tape import TapeDevice


MIB = 1 << 20


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
    cart = dev.loaded()
    if dev.write_protected:
        raise ScsiError.write_protected()
    if cart.worm:
        raise ScsiError.check(SenseKey.DATA_PROTECT, Asc.WORM_MEDIUM_OVERWRITE_ATTEMPTED)
    if dev.partition or dev.position:
        raise ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.POSITION_PAST_BEGINNING_OF_MEDIUM)
    total = cart.capacity
    sizes = [total] if fmt == 0 else partition_sizes(dev, total)
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
    if page in (WRITE_ERROR_COUNTERS, READ_ERROR_COUNTERS):
        write = page == WRITE_ERROR_COUNTERS
        moved = c.bytes_written if write else c.bytes_read
        errors = c.write_errors if write else c.read_errors
        # corrected without / with delay, rewrites or rereads, total corrected,
        # times corrected, bytes processed, uncorrected
        return log_page(page, counter_parameters([0, 0, 0, 0, 0, moved, errors]), pointer)
    if page == SEQUENTIAL_ACCESS:
        values = [c.bytes_written, c.bytes_written, c.bytes_read, c.bytes_read]
        params = counter_parameters(values)
        params.append(log_parameter(0x0100, bytes((1 if dev.needs_cleaning else 0,))))
        return log_page(page, params, pointer)
    if page == TAPE_CAPACITY:
        return log_page(page, _capacity_parameters(dev), pointer)
    assert page == TAPE_ALERT
    flags = dev.tapealert
    params = [log_parameter(n, bytes(((flags >> (n - 1)) & 1,))) for n in range(1, 65)]
    dev.tapealert = 0  # TapeAlert flags are cleared when read
    return log_page(page, params, pointer)


def _capacity_parameters(dev: TapeDevice) -> list[bytes]:
    """Tape Capacity: remaining (1, 2) and maximum (3, 4) capacity of
    partitions 0 and 1 in megabytes (10^6 bytes); zeros without a medium."""
    cart = dev.cartridge
    parts = cart.partitions if cart is not None else []
    values = []
    for which in ("remaining", "capacity"):
        for i in (0, 1):
            n = getattr(parts[i], which) if i < len(parts) else 0
            values.append(min(n // 1_000_000, 0xFFFFFFFF))
    return [log_parameter(i + 1, struct.pack(">I", v)) for i, v in enumerate(values)]


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


async def handle_log_select(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """LOG SELECT: PCR=1 resets the counters and TapeAlert flags; no parameter
    values or thresholds can be set (a parameter list is refused)."""
    cdb = cmd.cdb
    if cdb[1] & 0x01:
        raise ScsiError.invalid_field_in_cdb(1, 0)  # SP: nothing is saved
    length = alloc_len(cdb, 7, 2)
    if length:
        if cdb[1] & 0x02:
            raise ScsiError.invalid_field_in_cdb(1, 1)  # PCR with a parameter list
        raise ScsiError.invalid_field_in_cdb(7)
    if cdb[1] & 0x02:
        dev.counters = type(dev.counters)()
        dev.tapealert = 0
        ctx.notify_others(Asc.PARAMETERS_CHANGED)
    return None


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
    cart = dev.loaded()
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
    return mode_parameter_data(cdb, desc, body, dev.device_specific(ctx.read_only))


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


