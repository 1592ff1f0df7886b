"""The loadable medium (devices/medium.py): what a restarted device keeps of it."""

from __future__ import annotations

from pyscst.devices.medium import Medium
from pyscst.scsi.command import Nexus


def test_carry_over_keeps_the_medium_out_but_not_the_prevention() -> None:
    nexus = Nexus.iscsi("iqn.2026-11.org.x:a", 1, "iqn.2026-11.org.pyscst:t", 1)
    before = Medium()
    before.set_prevent(nexus, True)
    fresh = Medium()
    fresh.carry_over(before)
    assert fresh.present and not fresh.locked  # a restart is a reset: PREVENT ends
    before.unlock_all()
    before.eject()
    fresh = Medium()
    fresh.carry_over(before)
    assert not fresh.present
    # a drive that comes back empty (e.g. a CD-ROM with no image) stays empty
    empty = Medium(present=False)
    empty.carry_over(Medium())
    assert not empty.present
