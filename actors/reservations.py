"""Reservation state of one logical unit: SPC-2 RESERVE/RELEASE (PR to come).

The LU actor owns one instance and consults it for every command before the
device handler runs: a command that conflicts with a reservation held through
another I_T nexus ends in RESERVATION CONFLICT without touching the medium.
"""

from __future__ import annotations

from scsi.cdb import OpSpec, ResvClass
from scsi.command import Nexus
from scsi.sense import ScsiError


class Reservations:
    """SPC-2 reservation holder (a nexus or nobody)."""

    def __init__(self) -> None:
        self.holder: Nexus | None = None

    def check(self, spec: OpSpec, cdb: bytes, nexus: Nexus) -> None:
        """RESERVATION CONFLICT unless ``nexus`` may run this command now."""
        if self.holder is None or self.holder == nexus:
            return
        if spec.reservation_class(cdb) is not ResvClass.ALLOWED:
            raise ScsiError.reservation_conflict()

    def reserve(self, nexus: Nexus) -> None:
        if self.holder is not None and self.holder != nexus:
            raise ScsiError.reservation_conflict()
        self.holder = nexus

    def release(self, nexus: Nexus) -> None:
        if self.holder == nexus:
            self.holder = None

    def reset(self) -> None:
        self.holder = None

    def nexus_lost(self, nexus: Nexus) -> None:
        self.release(nexus)
