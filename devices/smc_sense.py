"""The sense a medium changer answers with, named as SMC-3 names each condition.

One function per condition (as devices/disk_sense.py does for the disk), so a
call site says which condition it means; built from raw codes so that the
shared ``Asc`` table only holds what the middle level itself raises.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyscst.devices.library import MoveRefused, Refusal
from pyscst.scsi.sense import FieldPointer, ScsiError, Sense, SenseKey, Status


def _sense(key: SenseKey, asc: int, ascq: int, byte: int | None = None) -> ScsiError:
    pointer = FieldPointer(byte) if byte is not None else None
    return ScsiError(Status.CHECK_CONDITION, Sense(key, asc, ascq, pointer))


def invalid_element_address(byte: int) -> ScsiError:
    """ILLEGAL REQUEST, INVALID ELEMENT ADDRESS (21/01), pointing at the field."""
    return _sense(SenseKey.ILLEGAL_REQUEST, 0x21, 0x01, byte)


def source_empty(byte: int) -> ScsiError:
    """ILLEGAL REQUEST, MEDIUM SOURCE ELEMENT EMPTY (3B/0E)."""
    return _sense(SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0E, byte)


def destination_full(byte: int) -> ScsiError:
    """ILLEGAL REQUEST, MEDIUM DESTINATION ELEMENT FULL (3B/0D)."""
    return _sense(SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0D, byte)


def door_open() -> ScsiError:
    """NOT READY, MEDIUM NOT PRESENT - TRAY OPEN (3A/02): a mail slot is open."""
    return _sense(SenseKey.NOT_READY, 0x3A, 0x02)


def removal_prevented() -> ScsiError:
    """ILLEGAL REQUEST, MEDIUM REMOVAL PREVENTED (53/02)."""
    return _sense(SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)


def positioning_error() -> ScsiError:
    """HARDWARE ERROR, MECHANICAL POSITIONING ERROR (15/01): the drive did not
    take or give the cartridge."""
    return _sense(SenseKey.HARDWARE_ERROR, 0x15, 0x01)


def state_not_saved() -> ScsiError:
    """HARDWARE ERROR, INTERNAL TARGET FAILURE (44/00): the inventory could
    not be written (the move happened; the next start may not know it)."""
    return _sense(SenseKey.HARDWARE_ERROR, 0x44, 0x00)


def refusal_sense(exc: MoveRefused, fields: Mapping[str, int]) -> ScsiError:
    """The sense for a move the library's rules refuse; ``fields``: role -> CDB byte."""
    byte = fields.get(exc.role)
    if exc.refusal is Refusal.NO_SUCH_ELEMENT:
        return invalid_element_address(byte if byte is not None else 0)
    if exc.refusal is Refusal.SOURCE_EMPTY:
        return source_empty(byte if byte is not None else 0)
    if exc.refusal is Refusal.DESTINATION_FULL:
        return destination_full(byte if byte is not None else 0)
    return door_open()
