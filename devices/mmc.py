"""The MMC command set of the virtual CD/DVD-ROM: its handlers and table rows.

What initiators send to a read-only optical drive (Linux sr, Windows, qemu):
READ TOC/PMA/ATIP, GET CONFIGURATION, GET EVENT STATUS NOTIFICATION, READ DISC
INFORMATION, MECHANISM STATUS, READ(10/12), READ CAPACITY, START STOP UNIT with
LOEJ. The rows overlay the shared SPC layer (devices/spc.py); READ and READ
CAPACITY reuse the disk's handlers, which only need blocks, a block size and a
store. The disc is one data track in one complete session, as an ISO image is.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyscst.devices import disk_info, disk_io
from pyscst.devices.disk_sense import removal_prevented
from pyscst.devices.medium import MediumLocked
from pyscst.devices.spc import mask, type_table
from pyscst.scsi.cdb import OpFlags, OpSpec, ResvClass, alloc_len, rw10, rw12
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.opcodes import Op
from pyscst.scsi.sense import Asc, ScsiError, SenseKey

if TYPE_CHECKING:
    from pyscst.devices.cdrom import CdromDevice

F = OpFlags
R = ResvClass
IN = DataDirection.READ
NONE = DataDirection.NONE
_SHORT = (5, 10)
_RW = (30, 60)

READ_TOC = 0x43
GET_CONFIGURATION = 0x46
GET_EVENT_STATUS_NOTIFICATION = 0x4A
READ_DISC_INFORMATION = 0x51
MECHANISM_STATUS = 0xBD

#: MMC profiles (MMC-6 table 91)
PROFILE_NONE = 0x0000
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010
#: the largest CD (80 minutes of 2048-byte sectors); anything bigger is a DVD
CD_MAX_BLOCKS = 80 * 60 * 75
LEAD_OUT = 0xAA
_TRACK_CONTROL = 0x14  # ADR 1 (Q sub-channel position), CONTROL 4 (data track)


def current_profile(dev: CdromDevice) -> int:
    if not dev.medium.present:
        return PROFILE_NONE
    return PROFILE_CD_ROM if dev.blocks <= CD_MAX_BLOCKS else PROFILE_DVD_ROM


def _address(lba: int, msf: bool) -> bytes:
    """A TOC address: LBA, or MSF (minute/second/frame after the 2 s pre-gap)."""
    if not msf:
        return struct.pack(">I", lba)
    frames = lba + 150
    minutes, rest = divmod(frames, 60 * 75)
    return bytes((0, min(minutes, 0xFF), rest // 75, rest % 75))


async def handle_read_toc(dev: CdromDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """READ TOC/PMA/ATIP, formats 0 (TOC) and 1 (session information)."""
    cdb = cmd.cdb
    msf = bool(cdb[1] & 0x02)
    fmt = cdb[2] & 0x0F
    track = cdb[6]
    allocation = alloc_len(cdb, 7, 2)
    if fmt == 0:
        if track > 1 and track != LEAD_OUT:
            raise ScsiError.invalid_field_in_cdb(6)
        descriptors = b""
        if track <= 1:
            descriptors += bytes((0, _TRACK_CONTROL, 1, 0)) + _address(0, msf)
        descriptors += bytes((0, _TRACK_CONTROL, LEAD_OUT, 0)) + _address(dev.blocks, msf)
        data = struct.pack(">HBB", 2 + len(descriptors), 1, 1) + descriptors
    elif fmt == 1:
        data = struct.pack(">HBB", 10, 1, 1) + bytes((0, _TRACK_CONTROL, 1, 0)) + _address(0, msf)
    else:
        raise ScsiError.invalid_field_in_cdb(2, 3)
    return data[:allocation]


def _feature(code: int, body: bytes, current: bool, version: int = 0) -> bytes:
    flags = (version << 2) | 0x02 | (0x01 if current else 0)  # PERSISTENT, CURRENT
    return struct.pack(">HBB", code, flags, len(body)) + body


def _features(dev: CdromDevice) -> list[tuple[int, bool, bytes]]:
    """(feature code, current, descriptor) of every feature the drive has."""
    profile = current_profile(dev)
    present = dev.medium.present
    profiles = b"".join(
        struct.pack(">HBB", p, 0x01 if p == profile else 0, 0)
        for p in (PROFILE_DVD_ROM, PROFILE_CD_ROM)
    )
    dvd = profile == PROFILE_DVD_ROM
    out = [
        (0x0000, True, _feature(0x0000, profiles, True)),  # Profile List
        (0x0001, True, _feature(0x0001, struct.pack(">IBBH", 0, 0, 0, 0), True, 1)),  # Core
        (0x0002, True, _feature(0x0002, bytes((0x02, 0, 0, 0)), True, 1)),  # Morphing: OCEvent
        # Removable Medium: tray, ejectable, lockable
        (0x0003, True, _feature(0x0003, bytes((0x29, 0, 0, 0)), True)),
        # Random Readable: block size, blocking (16 for DVD ECC blocks, 1 for CD)
        (0x0010, present,
         _feature(0x0010, struct.pack(">IHBB", dev.block_size, 16 if dvd else 1, 0, 0), present)),
    ]  # fmt: skip
    return out


async def handle_get_configuration(
    dev: CdromDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """GET CONFIGURATION: RT 0 (all features from STARTING FEATURE NUMBER),
    1 (the current ones), 2 (exactly that one)."""
    cdb = cmd.cdb
    rt = cdb[1] & 0x03
    start = struct.unpack_from(">H", cdb, 2)[0]
    allocation = alloc_len(cdb, 7, 2)
    if rt == 3:
        raise ScsiError.invalid_field_in_cdb(1, 1)
    chosen = []
    for code, current, descriptor in _features(dev):
        if rt == 2 and code != start:
            continue
        if code < start or (rt == 1 and not current):
            continue
        chosen.append(descriptor)
    body = b"".join(chosen)
    header = struct.pack(">IHH", 4 + len(body), 0, current_profile(dev))
    return (header + body)[:allocation]


#: GET EVENT STATUS NOTIFICATION classes (bit numbers in the request byte)
_MEDIA_CLASS = 4


async def handle_get_event_status(
    dev: CdromDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """GET EVENT STATUS NOTIFICATION, polled, media class: reports (once) a
    new medium or a removal, and whether a medium is present."""
    cdb = cmd.cdb
    if not cdb[1] & 0x01:
        raise ScsiError.invalid_field_in_cdb(1, 0)  # asynchronous operation: not supported
    requested = cdb[4]
    allocation = alloc_len(cdb, 7, 2)
    supported = 1 << _MEDIA_CLASS
    if not requested & supported:
        data = struct.pack(">HBB", 2, 0x80, supported)  # NEA: no event available
    else:
        event = dev.take_media_event()
        status = 0x02 if dev.medium.present else 0x01  # MEDIA PRESENT / TRAY OPEN
        data = struct.pack(">HBB", 6, _MEDIA_CLASS, supported) + bytes((event, status, 0, 0))
    return data[:allocation]


async def handle_read_disc_information(
    dev: CdromDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """READ DISC INFORMATION, standard type: one complete session, one track."""
    cdb = cmd.cdb
    if cdb[1] & 0x07:
        raise ScsiError.invalid_field_in_cdb(1, 2)
    allocation = alloc_len(cdb, 7, 2)
    data = bytearray(34)
    struct.pack_into(">H", data, 0, 32)
    data[2] = 0x0E  # last session complete, disc complete, not erasable
    data[3] = 1  # first track on disc
    data[4] = 1  # number of sessions
    data[5] = 1  # first track in last session
    data[6] = 1  # last track in last session
    data[8] = 0x00  # CD-DA or CD-ROM disc
    struct.pack_into(">II", data, 16, 0xFFFFFFFF, 0xFFFFFFFF)  # no more sessions can start
    return bytes(data[:allocation])


async def handle_mechanism_status(
    dev: CdromDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """MECHANISM STATUS: no changer, idle, tray open while empty."""
    allocation = alloc_len(cmd.cdb, 8, 2)
    door_open = 0x10 if not dev.medium.present else 0
    return bytes((0, door_open, 0, 0, 0, 0, 0, 0))[:allocation]


async def handle_start_stop_unit(
    dev: CdromDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """START STOP UNIT: with LOEJ, eject (START=0) or load (START=1) the disc,
    unless an initiator prevents removal; without LOEJ nothing changes."""
    b4 = cmd.cdb[4]
    if b4 >> 4 or not b4 & 0x02:
        return None
    try:
        if b4 & 0x01:
            if not dev.has_image:
                raise ScsiError.check(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)
            if dev.load():
                ctx.notify_others(Asc.NOT_READY_TO_READY_CHANGE)
        else:
            dev.eject()
    except MediumLocked:
        raise removal_prevented() from None
    return None


def _start_stop_resv(cdb: bytes) -> ResvClass:
    return R.PR_ALLOWED if cdb[4] & 0x01 and not cdb[4] >> 4 else R.WRITE


def _specs() -> list[OpSpec]:
    media = F.NEEDS_MEDIUM
    present = F.NEEDS_PRESENT
    return [
        OpSpec(Op.START_STOP_UNIT, None, "START STOP UNIT", 6, mask("1b 01 00 0f f3 00"),
               NONE, handle_start_stop_unit, F.SERIALIZING, R.WRITE, timeouts=_SHORT,
               resv_of=_start_stop_resv),
        OpSpec(Op.READ_CAPACITY_10, None, "READ CAPACITY(10)", 10,
               mask("25 00 ff ff ff ff 00 00 01 00"),
               IN, disk_info.handle_read_capacity_10, present, R.PR_ALLOWED, timeouts=_SHORT),
        OpSpec(Op.READ_10, None, "READ(10)", 10, mask("28 18 ff ff ff ff 00 ff ff 00"),
               IN, disk_io.handle_read, media, R.READ, rw10, _RW, fast=disk_io.read_now),
        OpSpec(READ_TOC, None, "READ TOC/PMA/ATIP", 10, mask("43 02 0f 00 00 00 ff ff ff c0"),
               IN, handle_read_toc, present, R.READ, timeouts=_SHORT),
        OpSpec(GET_CONFIGURATION, None, "GET CONFIGURATION", 10,
               mask("46 03 ff ff 00 00 00 ff ff 00"),
               IN, handle_get_configuration, F.NONE, R.ALLOWED, timeouts=_SHORT),
        OpSpec(GET_EVENT_STATUS_NOTIFICATION, None, "GET EVENT STATUS NOTIFICATION", 10,
               mask("4a 01 00 00 ff 00 00 ff ff 00"),
               IN, handle_get_event_status, F.NONE, R.ALLOWED, timeouts=_SHORT),
        OpSpec(READ_DISC_INFORMATION, None, "READ DISC INFORMATION", 10,
               mask("51 07 00 00 00 00 00 ff ff 00"),
               IN, handle_read_disc_information, present, R.READ, timeouts=_SHORT),
        OpSpec(Op.READ_12, None, "READ(12)", 12, mask("a8 18 ffffffff ffffffff 00 00"),
               IN, disk_io.handle_read, media, R.READ, rw12, _RW, fast=disk_io.read_now),
        OpSpec(MECHANISM_STATUS, None, "MECHANISM STATUS", 12,
               mask("bd 00 00 00 00 00 00 00 ff ff 00 00"),
               IN, handle_mechanism_status, F.NONE, R.ALLOWED, timeouts=_SHORT),
    ]  # fmt: skip


#: every command the CD-ROM answers: SPC layer + these
MMC_TABLE = type_table(_specs())
