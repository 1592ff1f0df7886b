"""Sense conditions specific to the SBC disk, named as SBC/SPC name them.

One function per condition the disk reports, built from the shared ``Asc``
names, so a call site says which condition it means and not how to encode it.
"""

from __future__ import annotations

import errno

from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status


def _check(key: SenseKey, asc: int, ascq: int) -> ScsiError:
    return ScsiError(Status.CHECK_CONDITION, Sense(key, asc, ascq))


def not_ready_stopped() -> ScsiError:
    """NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (04/02)."""
    return ScsiError.check(SenseKey.NOT_READY, Asc.LUN_NOT_READY_INITIALIZING_COMMAND_REQUIRED)


def medium_not_present() -> ScsiError:
    """NOT READY, MEDIUM NOT PRESENT (3A/00)."""
    return ScsiError.check(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)


def removal_prevented() -> ScsiError:
    """ILLEGAL REQUEST, MEDIUM REMOVAL PREVENTED (53/02)."""
    return ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.MEDIUM_REMOVAL_PREVENTED)


def short_data_out() -> ScsiError:
    """ILLEGAL REQUEST, INVALID FIELD IN INFORMATION UNIT (0E/03).

    Used when the initiator's expected data transfer length is shorter than
    the data the CDB describes: nothing is written (FCP-4 / libiscsi option b).
    """
    return ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_INFORMATION_UNIT)


def data_out_length_mismatch() -> ScsiError:
    """ILLEGAL REQUEST, INVALID FIELD IN INFORMATION UNIT (0E/03), for a
    command whose data-out must be exactly what the CDB describes (WRITE
    SAME: one block; COMPARE AND WRITE: twice the blocks) and is longer."""
    return _check(SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03)


def miscompare(offset: int) -> ScsiError:
    """MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION; INFORMATION = byte offset."""
    return ScsiError.check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=offset)


def io_error(exc: OSError, lba: int, writing: bool) -> ScsiError:
    """Map a store failure to sense: ENOSPC on a thin file is a space problem."""
    if exc.errno == errno.ENOSPC:
        return ScsiError.check(SenseKey.DATA_PROTECT, Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT)
    if exc.errno == errno.EROFS:
        return ScsiError.write_protected()
    asc = Asc.WRITE_ERROR if writing else Asc.UNRECOVERED_READ_ERROR
    return ScsiError.medium_error(asc, lba)
