"""SBC disk handlers that describe or steer the device rather than move blocks.

INQUIRY, TEST UNIT READY, REQUEST SENSE, READ CAPACITY, MODE SENSE/SELECT,
START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL and READ DEFECT DATA. Each
renders from the device's state objects (inquiry, vpd, mode) so the answers
stay consistent with the opcode table and with one another.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyscst.devices.disk_sense import removal_prevented, short_data_out
from pyscst.scsi.cdb import alloc_len
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.mode import build_mode_sense, parse_mode_select
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey

if TYPE_CHECKING:
    from pyscst.devices.disk import DiskDevice

_NO_SENSE = Sense.of(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE)


async def handle_inquiry(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    cdb = cmd.cdb
    allocation = alloc_len(cdb, 3, 2)
    if cdb[1] & 0x01:
        data = dev.vpd.render(cdb[2], ctx.nexus)
    else:
        if cdb[2]:
            raise ScsiError.invalid_field_in_cdb(2)
        data = dev.inquiry.encode()
    return data[:allocation]


async def handle_test_unit_ready(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    dev.check_ready()
    return None


async def handle_request_sense(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """Pending UNIT ATTENTION first, then the NOT READY condition, else NO SENSE."""
    cdb = cmd.cdb
    sense = ctx.take_sense() or dev.not_ready_sense() or _NO_SENSE
    data = sense.encode(descriptor=bool(cdb[1] & 0x01))
    return data[: cdb[4]]


async def handle_read_capacity_10(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    cdb = cmd.cdb
    if not cdb[8] & 0x01 and any(cdb[2:6]):
        raise ScsiError.invalid_field_in_cdb(2)  # LBA without PMI (SBC-3 5.15)
    dev.check_ready(media_access=False)
    last = dev.blocks - 1
    return struct.pack(">II", min(last, 0xFFFFFFFF), dev.block_size)


async def handle_read_capacity_16(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    allocation = alloc_len(cmd.cdb, 10, 4)
    dev.check_ready(media_access=False)
    # LBPME, and LBPRZ: an unmapped block reads as zeros
    info = dev.vpd.info
    lbpme = (0x80 if info.provisioning else 0) | (0x40 if info.lbprz else 0)
    data = struct.pack(
        ">QIBBH", dev.blocks - 1, dev.block_size, 0, dev.lbppbe & 0x0F, lbpme << 8
    ) + bytes(16)
    return data[:allocation]


def _device_specific(dev: DiskDevice, ctx: ExecContext) -> int:
    """MODE SENSE device-specific parameter: WP (per mapping) and DPOFUA."""
    return (0x80 if dev.write_protected(ctx.read_only) else 0) | 0x10


async def handle_mode_sense(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    return build_mode_sense(
        cmd.cdb,
        dev.mode,
        blocks=dev.blocks,
        block_size=dev.block_size,
        device_specific=_device_specific(dev, ctx),
    )


async def handle_mode_select(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """MODE SELECT (6/10): validate all, apply all, tell the other nexuses."""
    cdb = cmd.cdb
    length = cdb[4] if cdb[0] == 0x15 else alloc_len(cdb, 7, 2)
    if length == 0:
        return None
    data = await cmd.receive_data(length)
    if len(data) < length:
        raise short_data_out()
    if parse_mode_select(cdb, data, dev.mode, blocks=dev.blocks, block_size=dev.block_size):
        ctx.notify_others(Asc.MODE_PARAMETERS_CHANGED)
    return None


async def handle_start_stop_unit(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """START STOP UNIT.

    A POWER CONDITION other than START_VALID (0) is accepted and changes
    nothing (we have no power states). LOEJ on a removable device loads
    (START=1) or ejects (START=0) unless some nexus prevents removal. Without
    LOEJ, a non-removable device enters/leaves the stopped state (media access
    then answers NOT READY, INITIALIZING COMMAND REQUIRED); on a removable
    device START alone is a no-op, as MMC-style initiators expect.
    """
    b4 = cmd.cdb[4]
    if b4 >> 4:
        return None
    start = bool(b4 & 0x01)
    loej = bool(b4 & 0x02)
    no_flush = bool(b4 & 0x04)
    if not start and not no_flush and dev.medium_present:
        await dev.store.flush()
    if dev.removable:
        if loej:
            if dev.removal_prevented:
                raise removal_prevented()
            dev.medium_present = start
            dev.started = True
        return None
    dev.started = start
    return None


async def handle_prevent_allow(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """PREVENT ALLOW MEDIUM REMOVAL: prevention is held per I_T nexus."""
    prevent = cmd.cdb[4] & 0x03
    if prevent > 1:
        raise ScsiError.invalid_field_in_cdb(4, 1)
    dev.set_prevent(ctx.nexus, bool(prevent))
    return None


async def handle_read_defect_data(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """READ DEFECT DATA (10/12): an empty list in the requested format."""
    cdb = cmd.cdb
    dev.check_ready(media_access=False)
    if cdb[0] == 0x37:
        flags = cdb[2] & 0x1F
        data = bytes((0, flags, 0, 0))
        allocation = alloc_len(cdb, 7, 2)
    else:
        flags = cdb[1] & 0x1F
        data = bytes((0, flags, 0, 0, 0, 0, 0, 0))
        allocation = alloc_len(cdb, 6, 4)
    return data[:allocation]
