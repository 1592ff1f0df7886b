"""Where the tape is: REWIND, LOAD UNLOAD, SPACE, LOCATE and READ POSITION (SSC-4).

Positions are logical object numbers in the current partition (records and
filemarks both count); moving synchronizes what was written first. A slow
mechanism is a ``delay`` fault rule on these opcodes (docs/tape.md). The rows
are in devices/ssc.py.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyscst.devices.tape_pages import DEVICE_CONFIGURATION
from pyscst.devices.tape_sense import (
    beginning_of_partition,
    count24,
    end_of_data,
    filemark_detected,
)
from pyscst.scsi.cdb import alloc_len
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.sense import Asc, ScsiError, SenseKey

if TYPE_CHECKING:
    from pyscst.devices.tape import TapeDevice




async def _settle(dev: TapeDevice, ctx: ExecContext, immed: bool) -> None:
    """The synchronize that precedes a motion: now, or with IMMED=1 beside
    the task set after the status (its failure a deferred error)."""
    if immed:
        dev.synchronize_later(ctx)
    else:
        await dev.synchronize()


async def handle_rewind(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """REWIND: synchronize, then to the beginning of the current partition
    (IMMED: the synchronize goes on after the status, see synchronize_later)."""
    await _settle(dev, ctx, bool(cmd.cdb[1] & 0x01))
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
    await _settle(dev, ctx, bool(cmd.cdb[1] & 0x01) and bool(b4 & 0x01))
    if b4 & 0x01:
        dev.loaded()  # LOAD threads the cartridge in the drive: none is NOT READY 3A/00
        if dev.load():  # threaded again: the other nexuses hear it (SPC-4 28/00)
            ctx.notify_others(Asc.NOT_READY_TO_READY_CHANGE)
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
    raw = count24(cdb)
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
    cart = dev.loaded()
    if partition >= len(cart.partitions):
        raise ScsiError.invalid_field_in_cdb(at)
    dev.partition = partition
    page = bytearray(dev.mode.current(DEVICE_CONFIGURATION))
    page[3] = partition  # ACTIVE PARTITION
    dev.mode.store(DEVICE_CONFIGURATION, bytes(page))


async def _locate(dev: TapeDevice, target: int) -> None:
    part = dev.part
    if target > part.eod:
        dev.position = part.eod
        raise end_of_data(None)
    dev.position = target


async def handle_locate_10(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """LOCATE(10): to a logical object (BT: the same address), in another
    partition with CP (IMMED: the synchronize before it goes on after the status)."""
    cdb = cmd.cdb
    await _settle(dev, ctx, bool(cdb[1] & 0x01))
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
    await _settle(dev, ctx, bool(cdb[1] & 0x01))
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


