"""A loadable medium: present or absent, locked while an initiator prevents removal.

Removable disks and the CD-ROM (and, next, tape cartridges) share one model
of the thing in the drive: it is loaded or not, and any I_T nexus may hold a
PREVENT ALLOW MEDIUM REMOVAL lock on it (held per nexus, ended by ALLOW from
that nexus, nexus loss and reset: SPC-4 / SBC-3 5.13). Eject and load are
the same operation whether an initiator asks (START STOP UNIT with LOEJ) or
the operator does (console ``eject``/``load``, ``pyscst admin device eject``);
both are refused while the medium is locked. Who must hear of a change (a
NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED unit attention, 28/00)
is the caller's business: the medium only says whether anything changed.
"""

from __future__ import annotations

from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status


class MediumLocked(Exception):
    """Eject or load refused: an initiator prevents medium removal."""


def _key(nexus: Nexus) -> tuple[str, str]:
    return (nexus.initiator_port, nexus.target_port)


class Medium:
    """The medium of one removable-medium device."""

    def __init__(self, present: bool = True) -> None:
        #: a medium is in the drive (read it; change it through eject/load).
        #: A plain attribute: readiness reads it on every command
        self.present = present
        #: an operation on the whole medium is running (SANITIZE): every
        #: command but the UA-exempt ones (INQUIRY, REPORT LUNS, REQUEST
        #: SENSE) answers this NOT READY sense (with its progress)
        self.busy: Sense | None = None
        self._preventers: set[tuple[str, str]] = set()

    # --- state ------------------------------------------------------------

    @property
    def locked(self) -> bool:
        """Some I_T nexus prevents removal."""
        return bool(self._preventers)

    def check_not_busy(self) -> None:
        """NOT READY with the running operation's sense (e.g. 04/1B)."""
        if self.busy is not None:
            raise ScsiError(Status.CHECK_CONDITION, self.busy)

    def check_present(self) -> None:
        """NOT READY, MEDIUM NOT PRESENT (3A/00) without a medium."""
        if not self.present:
            raise ScsiError.check(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)

    # --- eject and load ---------------------------------------------------

    def eject(self) -> bool:
        """Take the medium out; True if one was there. Refused while locked."""
        if self._preventers:
            raise MediumLocked("an initiator prevents medium removal")
        changed = self.present
        self.present = False
        return changed

    def load(self) -> bool:
        """Put a medium in; True if the drive was empty. Refused while locked
        (the tray stays shut while an initiator holds PREVENT)."""
        if self._preventers:
            raise MediumLocked("an initiator prevents medium removal")
        changed = not self.present
        self.present = True
        return changed

    def carry_over(self, before: Medium) -> None:
        """A restarted device (its actor crashed, or the operator restarted it)
        is the same drive: a medium that had been taken out stays out. What it
        held as PREVENT does not carry over: a restart is a reset to every
        nexus (SPC-4: a reset ends every prevention), and a running SANITIZE
        ended with the actor."""
        if not before.present:
            self.present = False

    # --- PREVENT ALLOW MEDIUM REMOVAL, per I_T nexus -----------------------

    def set_prevent(self, nexus: Nexus, prevent: bool) -> None:
        if prevent:
            self._preventers.add(_key(nexus))
        else:
            self._preventers.discard(_key(nexus))

    def nexus_lost(self, nexus: Nexus) -> None:
        self._preventers.discard(_key(nexus))

    def unlock_all(self) -> None:
        """Reset and power on: every prevention ends."""
        self._preventers.clear()
