"""SBC disk handlers that describe or steer the device rather than move blocks.

READ CAPACITY, START STOP UNIT and READ DEFECT DATA. (INQUIRY, REQUEST
SENSE, TEST UNIT READY, MODE SENSE/SELECT and PREVENT ALLOW MEDIUM REMOVAL
are the shared SPC layer's: devices/spc.py.) Readiness (NOT READY without
medium or while stopped) is checked by the LU from the table's flags before
any of these runs.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyscst.devices.disk_sense import removal_prevented
from pyscst.devices.medium import MediumLocked
from pyscst.scsi.cdb import alloc_len
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.sense import Asc, ScsiError

if TYPE_CHECKING:
    from pyscst.devices.disk import DiskDevice


async def handle_read_capacity_10(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    cdb = cmd.cdb
    if not cdb[8] & 0x01 and any(cdb[2:6]):
        raise ScsiError.invalid_field_in_cdb(2)  # LBA without PMI (SBC-3 5.15)
    last = dev.blocks - 1
    return struct.pack(">II", min(last, 0xFFFFFFFF), dev.block_size)


async def handle_read_capacity_16(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    allocation = alloc_len(cmd.cdb, 10, 4)
    # LBPME, and LBPRZ: an unmapped block reads as zeros
    info = dev.limits
    lbpme = (0x80 if info.provisioning else 0) | (0x40 if info.lbprz else 0)
    data = struct.pack(
        ">QIBBH", dev.blocks - 1, dev.block_size, 0, dev.lbppbe & 0x0F, lbpme << 8
    ) + bytes(16)
    return data[:allocation]


async def handle_start_stop_unit(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """START STOP UNIT.

    A POWER CONDITION other than START_VALID (0) is accepted and changes
    nothing (we have no power states). LOEJ on a removable device loads
    (START=1; the other nexuses get NOT READY TO READY CHANGE) or ejects
    (START=0) unless some nexus prevents removal. Without
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
    medium = dev.medium
    if not start and not no_flush and medium.present:
        await dev.store.flush()
    if dev.removable:
        if loej:
            try:
                loaded = medium.load() if start else medium.eject()
            except MediumLocked:
                raise removal_prevented() from None
            dev.started = True
            if start and loaded:
                ctx.notify_others(Asc.NOT_READY_TO_READY_CHANGE)
        return None
    dev.started = start
    return None


async def handle_read_defect_data(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """READ DEFECT DATA (10/12): an empty list in the requested format."""
    cdb = cmd.cdb
    if cdb[0] == 0x37:
        flags = cdb[2] & 0x1F
        data = bytes((0, flags, 0, 0))
        allocation = alloc_len(cdb, 7, 2)
    else:
        flags = cdb[1] & 0x1F
        data = bytes((0, flags, 0, 0, 0, 0, 0, 0))
        allocation = alloc_len(cdb, 6, 4)
    return data[:allocation]
