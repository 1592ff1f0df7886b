"""Sense conditions specific to the SBC disk, named as SBC/SPC name them.

Several of these ASC/ASCQ pairs are not in the shared ``Asc`` enum, so they
are built here once instead of as raw numbers at each call site.
"""

from __future__ import annotations

import errno

from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status


def _check(key: SenseKey, asc: int, ascq: int) -> ScsiError:
    return ScsiError(Status.CHECK_CONDITION, Sense(key, asc, ascq))


def not_ready_stopped() -> ScsiError:
    """NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (04/02)."""
    return _check(SenseKey.NOT_READY, 0x04, 0x02)


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
    return _check(SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03)


def miscompare(offset: int) -> ScsiError:
    """MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION; INFORMATION = byte offset."""
    return ScsiError.check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, information=offset)


def io_error(exc: OSError, lba: int, writing: bool) -> ScsiError:
    """Map a store failure to sense: ENOSPC on a thin file is a space problem."""
    if exc.errno == errno.ENOSPC:
        # DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (27/07)
        return _check(SenseKey.DATA_PROTECT, 0x27, 0x07)
    if exc.errno == errno.EROFS:
        return ScsiError.write_protected()
    asc = Asc.WRITE_ERROR if writing else Asc.UNRECOVERED_READ_ERROR
    return ScsiError.medium_error(asc, lba)
