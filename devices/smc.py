"""The SMC-3 command set of the virtual medium changer: its table rows and handlers.

What backup software (and the Linux ``ch``/``mtx`` tools) sends to a tape
library's robot: READ ELEMENT STATUS (SMC-3 r15 6.12), MOVE MEDIUM, EXCHANGE
MEDIUM, INITIALIZE ELEMENT STATUS and ... WITH RANGE, POSITION TO ELEMENT,
OPEN/CLOSE IMPORT/EXPORT ELEMENT and the mode pages of SMC-3 7.3 (element
address assignment 0x1D, 7.3.4; transport geometry 0x1E, 7.3.5; device
capabilities 0x1F, 7.3.2). The rows overlay the shared SPC layer
(devices/spc.py), whose PREVENT ALLOW MEDIUM REMOVAL locks the mail slots.
:func:`element_status` is pure (property-tested).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pyscst.devices.library import (
    FIRST_TRANSPORT,
    Element,
    ElementType,
    Library,
    LibraryLayout,
)
from pyscst.devices.smc_sense import invalid_element_address, removal_prevented
from pyscst.devices.spc import SHORT_TIMEOUTS, mask, type_table
from pyscst.scsi.cdb import OpFlags, OpSpec, ResvClass, alloc_len
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.mode import ModePages, PageDef, build_mode_sense, spc_mode_page_defs
from pyscst.scsi.opcodes import Op
from pyscst.scsi.sense import ScsiError

if TYPE_CHECKING:
    from pyscst.devices.changer import ChangerDevice

F = OpFlags
R = ResvClass
IN = DataDirection.READ
NONE = DataDirection.NONE
#: a move may wait for a drive to load or unload a cartridge
_MOVE_TIMEOUTS = (60, 300)

INITIALIZE_ELEMENT_STATUS = 0x07
OPEN_CLOSE_IMPORT_EXPORT_ELEMENT = 0x1B
POSITION_TO_ELEMENT = 0x2B
INITIALIZE_ELEMENT_STATUS_WITH_RANGE = 0x37
MOVE_MEDIUM = 0xA5
EXCHANGE_MEDIUM = 0xA6
READ_ELEMENT_STATUS = 0xB8

ELEMENT_ADDRESS_PAGE = 0x1D
TRANSPORT_GEOMETRY_PAGE = 0x1E
DEVICE_CAPABILITIES_PAGE = 0x1F

#: SMC-3 element descriptor: the fixed part before the volume tags
_DESCRIPTOR_BASE = 12
_VOLUME_TAG = 36
#: DVCID identifier: vendor (8) + product (16) + serial number (16), ASCII
IDENTIFIER_LENGTH = 40

# element descriptor byte 2 (SMC-3 tables 'Medium transport/Storage/Import export/
# Data transfer element descriptor')
_FULL = 0x01
_IMPEXP = 0x02
_EXCEPT = 0x04
_ACCESS = 0x08
_EXENAB = 0x10
_INENAB = 0x20
# byte 9
_SVALID = 0x80
_DATA_MEDIUM = 0x01


# --- mode pages (SMC-3 7.3) --------------------------------------------------------


def changer_mode_pages(layout: LibraryLayout) -> ModePages:
    """The SPC pages plus SMC's three, which describe the (fixed) library."""
    address = bytearray(20)
    address[0], address[1] = ELEMENT_ADDRESS_PAGE, 18
    order = {ElementType.TRANSPORT: 2, ElementType.STORAGE: 6,
             ElementType.IMPORT_EXPORT: 10, ElementType.DATA_TRANSFER: 14}  # fmt: skip
    for kind, first, count in layout.ranges():
        struct.pack_into(">HH", address, order[kind], first if count else 0, count)
    geometry = bytes((TRANSPORT_GEOMETRY_PAGE, 2, 0, 0))  # one transport, no ROTATE
    capabilities = bytearray(20)
    capabilities[0], capabilities[1] = DEVICE_CAPABILITIES_PAGE, 18
    every = 0x0F  # to/from MT, ST, I/E and DT
    capabilities[2] = every  # StorDT StorI/E StorST StorMT: every element type stores media
    capabilities[4:8] = bytes((every,) * 4)  # MT, ST, I/E, DT -> any (MOVE MEDIUM)
    capabilities[12:16] = bytes((every,) * 4)  # the same for EXCHANGE MEDIUM
    return ModePages([
        *spc_mode_page_defs(),
        PageDef(ELEMENT_ADDRESS_PAGE, 0, bytes(address), bytes(20)),
        PageDef(TRANSPORT_GEOMETRY_PAGE, 0, geometry, bytes(4)),
        PageDef(DEVICE_CAPABILITIES_PAGE, 0, bytes(capabilities), bytes(20)),
    ])  # fmt: skip


async def handle_mode_sense(
    dev: ChangerDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """MODE SENSE without a block descriptor: a changer has no blocks (SMC-3 r15 7.3)."""
    cdb = bytearray(cmd.cdb)
    cdb[1] |= 0x08  # DBD
    return build_mode_sense(bytes(cdb), dev.mode, blocks=0, block_size=0, device_specific=0)


# --- READ ELEMENT STATUS (SMC-3 r15 6.12) --------------------------------------------

#: what the descriptor builder needs of a drive: (available, DVCID identifier)
DriveFacts = Callable[[Element], tuple[bool, bytes | None]]


def _descriptor(element: Element, voltag: bool, dvcid: bool, facts: DriveFacts) -> bytes:
    kind = element.kind
    out = bytearray(_descriptor_length(kind, voltag, dvcid))
    struct.pack_into(">H", out, 0, element.address)
    flags = _FULL if element.full else 0
    if kind is ElementType.STORAGE:
        flags |= _ACCESS
    elif kind is ElementType.IMPORT_EXPORT:
        flags |= _INENAB | _EXENAB
        if not element.door_open:
            flags |= _ACCESS
        if element.full and element.imported:
            flags |= _IMPEXP
    identifier: bytes | None = None
    if kind is ElementType.DATA_TRANSFER:
        available, identifier = facts(element)
        if available:
            flags |= _ACCESS
        else:
            flags |= _EXCEPT
            out[4], out[5] = 0x04, 0x03  # LOGICAL UNIT NOT READY, MANUAL INTERVENTION
    out[2] = flags
    if element.full:
        out[9] = _DATA_MEDIUM
        if element.source is not None:
            out[9] |= _SVALID
            struct.pack_into(">H", out, 10, element.source)
    at = _DESCRIPTOR_BASE
    if voltag:
        tag = (element.barcode or "").encode("ascii")
        out[at : at + 32] = tag.ljust(32, b" ")
        at += _VOLUME_TAG
    if dvcid and kind is ElementType.DATA_TRANSFER:
        out[at] = 0x02  # CODE SET: ASCII
        out[at + 1] = 0x01  # IDENTIFIER TYPE: T10 vendor ID based
        if identifier:
            ident = identifier[:IDENTIFIER_LENGTH].ljust(IDENTIFIER_LENGTH, b" ")
            out[at + 3] = IDENTIFIER_LENGTH
            out[at + 4 : at + 4 + IDENTIFIER_LENGTH] = ident
    return bytes(out)


def _descriptor_length(kind: ElementType, voltag: bool, dvcid: bool) -> int:
    length = _DESCRIPTOR_BASE + (_VOLUME_TAG if voltag else 0)
    if dvcid and kind is ElementType.DATA_TRANSFER:
        length += 4 + IDENTIFIER_LENGTH
    return length


def element_status(
    library: Library,
    kind: ElementType,
    start: int,
    count: int,
    voltag: bool,
    dvcid: bool,
    facts: DriveFacts,
    limit: int | None = None,
) -> tuple[bytes, int]:
    """READ ELEMENT STATUS data and how many elements it reports.

    At most ``count`` elements of ``kind`` (ALL: every type) whose address is
    at least ``start``, in address order; one element status page per run of
    one type. The header's BYTE COUNT OF REPORT AVAILABLE covers all of it
    (SMC-3 r15 6.12.2: the allocation length truncates, it does not adjust),
    so it is counted, not rendered: only the first ``limit`` bytes (the
    allocation length; None: all) are built, and a 64 K-element library asked
    for 8 bytes costs no more than the walk over its elements."""
    chosen: list[Element] = []
    for element in library.elements(kind):
        if len(chosen) >= count:
            break
        if element.address >= start:
            chosen.append(element)
    runs: list[tuple[ElementType, list[Element]]] = []
    for element in chosen:
        if not runs or runs[-1][0] is not element.kind:
            runs.append((element.kind, []))
        runs[-1][1].append(element)
    lengths = [_descriptor_length(k, voltag, dvcid) for k, _ in runs]
    total = sum(8 + length * len(run) for length, (_, run) in zip(lengths, runs, strict=True))
    first = chosen[0].address if chosen else 0
    out = bytearray(struct.pack(">HHB", first, len(chosen), 0) + total.to_bytes(3, "big"))
    budget = 8 + total if limit is None else min(limit, 8 + total)
    for length, (page_kind, run) in zip(lengths, runs, strict=True):
        if len(out) >= budget:
            break
        out += struct.pack(">BBHB", page_kind, 0x80 if voltag else 0, length, 0)
        out += (length * len(run)).to_bytes(3, "big")
        for element in run:
            if len(out) >= budget:
                break
            out += _descriptor(element, voltag, dvcid, facts)
    return bytes(out[:budget]), len(chosen)


async def handle_read_element_status(
    dev: ChangerDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    cdb = cmd.cdb
    voltag = bool(cdb[1] & 0x10)
    type_code = cdb[1] & 0x0F
    if type_code > ElementType.DATA_TRANSFER:
        raise _invalid_field(1, 3)
    kind = ElementType(type_code)
    start, count = struct.unpack_from(">HH", cdb, 2)
    dvcid = bool(cdb[6] & 0x01)
    allocation = alloc_len(cdb, 7, 3)
    data, reported = element_status(dev.library, kind, start, count, voltag, dvcid, dev.drive_facts)
    if count and not reported:
        raise invalid_element_address(2)  # nothing of that type at or after it
    return data[:allocation]


# --- the moves ---------------------------------------------------------------------------


def _invalid_field(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError.invalid_field_in_cdb(byte, bit)


def _check_transport(dev: ChangerDevice, address: int) -> None:
    """MEDIUM TRANSPORT ADDRESS: 0 is the default transport, else it must be one."""
    if address not in (0, FIRST_TRANSPORT):
        raise invalid_element_address(2)


async def handle_move_medium(
    dev: ChangerDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    cdb = cmd.cdb
    transport, source, destination = struct.unpack_from(">HHH", cdb, 2)
    _check_transport(dev, transport)
    if cdb[10] & 0x01:
        raise _invalid_field(10, 0)  # INVERT: our media have one side
    await dev.move(source, destination, {"source": 4, "destination": 6})
    return None


async def handle_exchange_medium(
    dev: ChangerDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    cdb = cmd.cdb
    transport, source, first, second = struct.unpack_from(">HHHH", cdb, 2)
    _check_transport(dev, transport)
    if cdb[10] & 0x03:
        raise _invalid_field(10, 1 if cdb[10] & 0x02 else 0)  # INV1/INV2
    if first == source:
        raise _invalid_field(6)  # the first destination would be the source itself
    if second == first:
        raise _invalid_field(8)  # the second destination would be the first
    fields = {"source": 4, "first destination": 6, "second destination": 8}
    await dev.exchange(source, first, second, fields)
    return None


async def handle_position_to_element(
    dev: ChangerDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """POSITION TO ELEMENT: the picker goes there (nothing to see; addresses checked)."""
    cdb = cmd.cdb
    transport, destination = struct.unpack_from(">HH", cdb, 2)
    _check_transport(dev, transport)
    if dev.library.element(destination) is None:
        raise invalid_element_address(4)
    if cdb[8] & 0x01:
        raise _invalid_field(8, 0)
    return None


async def handle_initialize_element_status(
    dev: ChangerDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """INITIALIZE ELEMENT STATUS: the inventory is always exact; re-reading it
    is checking that every cartridge's directory is still there."""
    await dev.recheck(dev.library.elements())
    return None


async def handle_initialize_with_range(
    dev: ChangerDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """INITIALIZE ELEMENT STATUS WITH RANGE: RANGE=1 limits it to NUMBER OF
    ELEMENTS elements from STARTING ELEMENT ADDRESS (which must be one)."""
    cdb = cmd.cdb
    start, count = struct.unpack_from(">H", cdb, 2)[0], struct.unpack_from(">H", cdb, 6)[0]
    elements: Iterable[Element] = dev.library.elements()
    if cdb[1] & 0x01:
        if dev.library.element(start) is None:
            raise invalid_element_address(2)
        elements = [e for e in dev.library.elements() if e.address >= start][:count]
    await dev.recheck(elements)
    return None


async def handle_open_close(
    dev: ChangerDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """OPEN/CLOSE IMPORT/EXPORT ELEMENT: action 0 opens the mail slot for the
    operator (refused while removal is prevented), 1 closes it."""
    cdb = cmd.cdb
    address = struct.unpack_from(">H", cdb, 2)[0]
    element = dev.library.element(address)
    if element is None or element.kind is not ElementType.IMPORT_EXPORT:
        raise invalid_element_address(2)
    action = cdb[4] & 0x1F
    if action > 1:
        raise _invalid_field(4, 4)
    if action == 0 and dev.medium.locked:
        raise removal_prevented()
    await dev.set_door(element, open_=action == 0)
    return None


def _specs() -> list[OpSpec]:
    serial = F.SERIALIZING
    return [
        OpSpec(INITIALIZE_ELEMENT_STATUS, None, "INITIALIZE ELEMENT STATUS", 6,
               mask("07 00 00 00 00 00"), NONE, handle_initialize_element_status, serial,
               R.WRITE, timeouts=_MOVE_TIMEOUTS),
        OpSpec(Op.MODE_SENSE_6, None, "MODE SENSE(6)", 6, mask("1a 08 ff ff ff 00"),
               IN, handle_mode_sense, F.NONE, R.READ, timeouts=SHORT_TIMEOUTS),
        OpSpec(OPEN_CLOSE_IMPORT_EXPORT_ELEMENT, None, "OPEN/CLOSE IMPORT/EXPORT ELEMENT", 6,
               mask("1b 00 ff ff 1f 00"), NONE, handle_open_close, serial, R.WRITE,
               timeouts=SHORT_TIMEOUTS),
        OpSpec(POSITION_TO_ELEMENT, None, "POSITION TO ELEMENT", 10,
               mask("2b 00 ff ff ff ff 00 00 01 00"), NONE, handle_position_to_element,
               serial, R.WRITE, timeouts=_MOVE_TIMEOUTS),
        OpSpec(INITIALIZE_ELEMENT_STATUS_WITH_RANGE, None,
               "INITIALIZE ELEMENT STATUS WITH RANGE", 10,
               mask("37 03 ff ff 00 00 ff ff 00 00"), NONE, handle_initialize_with_range,
               serial, R.WRITE, timeouts=_MOVE_TIMEOUTS),
        OpSpec(Op.MODE_SENSE_10, None, "MODE SENSE(10)", 10, mask("5a 18 ff ff 00 00 00 ff ff 00"),
               IN, handle_mode_sense, F.NONE, R.READ, timeouts=SHORT_TIMEOUTS),
        OpSpec(MOVE_MEDIUM, None, "MOVE MEDIUM", 12, mask("a5 00 ff ff ff ff ff ff 00 00 01 00"),
               NONE, handle_move_medium, serial, R.WRITE, timeouts=_MOVE_TIMEOUTS),
        OpSpec(EXCHANGE_MEDIUM, None, "EXCHANGE MEDIUM", 12,
               mask("a6 00 ff ff ff ff ff ff ff ff 03 00"), NONE, handle_exchange_medium,
               serial, R.WRITE, timeouts=_MOVE_TIMEOUTS),
        OpSpec(READ_ELEMENT_STATUS, None, "READ ELEMENT STATUS", 12,
               mask("b8 1f ff ff ff ff 03 ff ff ff 00 00"), IN, handle_read_element_status,
               F.NONE, R.READ, timeouts=SHORT_TIMEOUTS),
    ]  # fmt: skip


#: every command the changer answers: SPC layer + these
SMC_TABLE = type_table(_specs())
