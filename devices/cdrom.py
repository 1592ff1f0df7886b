"""The virtual CD/DVD-ROM device type (``vcdrom``): an ISO image in a drive.

A :class:`CdromDevice` is peripheral device type 5 with removable medium and
2048-byte blocks, always read-only. Its :class:`Medium` is the disc: the
image can be ejected and loaded by an initiator (START STOP UNIT with LOEJ)
or by the operator, who may also load a different image (the device actor
opens it and hands it over with :meth:`CdromDevice.load`); either way every
other nexus hears NOT READY TO READY CHANGE (28/00), and nothing is ejected
while an initiator prevents removal. An empty drive answers NOT READY, MEDIUM
NOT PRESENT (3A/00). Its commands are the SPC layer plus devices/mmc.py.
"""

from __future__ import annotations

from typing import ClassVar

from pyscst.devices.disk import DEFAULT_MAX_TRANSFER_BYTES
from pyscst.devices.medium import Medium
from pyscst.devices.mmc import MMC_TABLE
from pyscst.devices.spc import ControlPageState, MediumHooks, ReadinessSense, RemovableIdentity
from pyscst.devices.stores import BackingStore, NullStore
from pyscst.scsi.cdb import OpTable, Readiness
from pyscst.scsi.mode import ModePages, PageDef, spc_mode_page_defs
from pyscst.scsi.sense import Sense

PERIPHERAL_CD_DVD = 0x05
BLOCK_SIZE = 2048
#: MMC-6 version descriptor
VERSION_MMC6 = 0x0580
CAPABILITIES_PAGE = 0x2A

#: GET EVENT STATUS NOTIFICATION media event codes
EVENT_NONE = 0
EVENT_NEW_MEDIA = 2
EVENT_MEDIA_REMOVAL = 3


def empty_tray() -> BackingStore:
    """What the store is while no image is loaded (never read: no medium)."""
    return NullStore(BLOCK_SIZE, read_only=True)


def _capabilities_page() -> PageDef:
    """MM Capabilities and Mechanical Status (0x2A): reads CD-R/RW and DVD-ROM,
    writes nothing; a lockable, ejectable tray."""
    page = bytearray(22)
    page[0], page[1] = CAPABILITIES_PAGE, 20
    page[2] = 0x08 | 0x02 | 0x01  # DVD-ROM, CD-RW, CD-R read
    page[6] = 0x20 | 0x08 | 0x01  # tray loading mechanism, eject, lock
    return PageDef(CAPABILITIES_PAGE, 0, bytes(page), bytes(22))


class CdromDevice(RemovableIdentity, ControlPageState, ReadinessSense, MediumHooks):
    """One MMC CD/DVD-ROM drive over an image (or empty)."""

    table: ClassVar[OpTable] = MMC_TABLE

    def __init__(
        self,
        name: str,
        image: BackingStore | None,
        *,
        serial: str | None = None,
        product: str = "pyscst cdrom",
        revision: str = "0001",
    ) -> None:
        self.name = name
        self.store: BackingStore = image if image is not None else empty_tray()
        self.block_size = BLOCK_SIZE
        self.block_shift = BLOCK_SIZE.bit_length() - 1
        self.read_only = True
        self.removable = True
        self.set_identity(name, serial, PERIPHERAL_CD_DVD, product, revision, VERSION_MMC6)
        self.max_transfer_blocks = DEFAULT_MAX_TRANSFER_BYTES // BLOCK_SIZE
        self.mode = ModePages([*spc_mode_page_defs(), _capabilities_page()])
        self.medium = Medium(present=image is not None)
        self.unavailable: Sense | None = None
        self._media_event = EVENT_NONE

    # --- geometry -------------------------------------------------------------

    @property
    def blocks(self) -> int:
        return self.store.size >> self.block_shift

    async def resize(self, new_size: int) -> None:
        raise ValueError(f"{self.name}: a CD-ROM's size is its image's; load another image")

    # --- what the LU reads ------------------------------------------------------


    def mode_parameters(self, read_only: bool) -> tuple[int, int, int]:
        return 0, self.blocks if self.medium.present else 0, BLOCK_SIZE

    def check_ready(self, readiness: Readiness = Readiness.READY) -> None:
        self.medium.check_present()

    # --- the disc ----------------------------------------------------------------

    @property
    def has_image(self) -> bool:
        """An image is in the drive or on its tray (loading needs no path)."""
        return not isinstance(self.store, NullStore)

    def take_media_event(self) -> int:
        """The media event not yet reported by GET EVENT STATUS NOTIFICATION."""
        event, self._media_event = self._media_event, EVENT_NONE
        return event

    def eject(self) -> bool:
        changed = self.medium.eject()
        if changed:
            self._media_event = EVENT_MEDIA_REMOVAL
        return changed

    def load(self, image: BackingStore | None = None) -> bool:
        """Close the tray (with ``image``: a different disc, the operator's).
        True if the disc in the drive changed. MediumLocked while prevented;
        ValueError when there is no image to load."""
        if image is None and not self.has_image:
            raise ValueError(f"{self.name}: no image to load; give a path")
        if image is not None:
            if self.medium.locked:
                self.medium.load()  # raises MediumLocked
            self.medium.eject()
            self.store = image
        changed = self.medium.load()
        if changed:
            self._media_event = EVENT_NEW_MEDIA
        return changed

    def __repr__(self) -> str:
        state = f"{self.blocks}x{BLOCK_SIZE}" if self.medium.present else "empty"
        return f"<CdromDevice {self.name} {state}>"
