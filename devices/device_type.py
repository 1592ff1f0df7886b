"""What the logical unit needs of a device type: the :class:`DeviceType` protocol.

The LU (actors/lun.py) serves any device type (an SBC disk, a CD-ROM, later
tape or a medium changer) through this protocol and nothing else: the type's
command table (the shared SPC layer overlaid with its own command set), its
identity, its readiness, the mode-page state the middle level reads (sense
format, TAS, queue algorithm) and the reset / nexus-loss / power-on hooks.
A new device type implements it and registers a handler name in
``devices/registry.py``; the LU needs no change.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from pyscst.devices.medium import Medium
from pyscst.devices.stores import BackingStore
from pyscst.scsi.cdb import OpSpec, OpTable, Readiness
from pyscst.scsi.command import Nexus
from pyscst.scsi.inquiry import StandardInquiry
from pyscst.scsi.mode import ModePages
from pyscst.scsi.sense import Sense
from pyscst.scsi.vpd import VpdPages


@runtime_checkable
class DeviceType(Protocol):
    """One emulated SCSI device, as the logical-unit actor drives it."""

    #: every command the device answers (SPC layer + the type's own rows)
    table: ClassVar[OpTable]
    name: str
    #: standard INQUIRY data (peripheral device type, RMB, version descriptors)
    inquiry: StandardInquiry
    #: the VPD pages (SPC pages plus the type's own)
    vpd: VpdPages
    #: the mode pages (SPC pages plus the type's own)
    mode: ModePages
    #: the medium (a fixed disk's is always present; PREVENT locks it)
    medium: Medium
    #: where the blocks live (the device actor opens, swaps and closes it)
    store: BackingStore
    #: the device refuses every command that writes the medium
    read_only: bool
    #: set by the device actor while the device is down: what REQUEST SENSE says
    unavailable: Sense | None

    @property
    def descriptor_sense(self) -> bool:
        """Sense format: descriptor (True) or fixed (Control page D_SENSE)."""
        ...

    @property
    def tas(self) -> bool:
        """Control page TAS: aborted tasks of other nexuses answer TASK ABORTED."""
        ...

    @property
    def queue_algorithm_modifier(self) -> int:
        """Control page QUEUE ALGORITHM MODIFIER (1: unrestricted reordering)."""
        ...

    def check_ready(self, readiness: Readiness = Readiness.READY) -> None:
        """Raise the NOT READY condition that keeps a command of this
        readiness class from running (medium absent, unit stopped, ...)."""
        ...

    def not_ready_sense(self) -> Sense | None:
        """What REQUEST SENSE reports when no unit attention is pending."""
        ...

    def mode_parameters(self, read_only: bool) -> tuple[int, int, int]:
        """MODE SENSE/SELECT: (device-specific parameter, blocks, block size)
        for the header and block descriptor, as seen through a mapping."""
        ...

    async def resize(self, new_size: int) -> None:
        """Change the capacity (an admin edit); ValueError if the type cannot."""
        ...

    def eject(self) -> bool:
        """The operator's eject: True if a medium was there. ValueError for a
        type or device without removable medium, MediumLocked while prevented."""
        ...

    def load(self, image: BackingStore | None = None) -> bool:
        """The operator's load (with ``image``: a different medium, for types
        whose medium is not their backing store): True if the medium changed
        (then every nexus must hear NOT READY TO READY CHANGE). Same refusals
        as ``eject``; ValueError for an ``image`` the type cannot take."""
        ...

    def reset(self) -> None:
        """Logical unit reset / hard reset."""
        ...

    def nexus_lost(self, nexus: Nexus) -> None:
        """I_T nexus loss: what the nexus held on the device ends."""
        ...

    def power_on(self) -> None:
        """Power-on defaults (a cold reset)."""
        ...

    def arm_fault(self, event: str, record: int, after_bytes: int, alerts: frozenset[int]) -> bool:
        """A ``tape`` fault rule fired on this device (actors/faults_lu.py):
        arm ``event`` (a MEDIUM ERROR at ``record`` on read or write, early
        end of medium after ``after_bytes``, TapeAlert ``alerts``, cleaning).
        True if armed; a type without tape mechanics injects nothing and
        returns False (the default every type gets from ``NoTapeFaults``)."""
        ...


class NoTapeFaults:
    """The ``arm_fault`` hook of a type with no tape mechanics to fail: a
    ``tape`` fault rule matching its commands injects nothing."""

    def arm_fault(self, event: str, record: int, after_bytes: int, alerts: frozenset[int]) -> bool:
        return False

    async def close(self) -> None: ...


def check_ready_for(device: DeviceType, spec: OpSpec) -> None:
    """The LU's single readiness check: the one a command's table flags ask for
    (and, while the medium is busy with a sanitize, NOT READY for all but the
    UA-exempt rows)."""
    if device.medium.busy is not None and not spec.ua_exempt:
        device.medium.check_not_busy()
    if spec.readiness:
        device.check_ready(spec.readiness)
