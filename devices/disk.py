"""The SBC disk device type (SCST's vdisk_fileio / vdisk_nullio): state and policy.

A :class:`DiskDevice` owns a backing store and the per-LU state SBC asks for:
block geometry, mode pages, start/stop, and its :class:`Medium` (present or
ejected when removable; locked by PREVENT ALLOW MEDIUM REMOVAL per I_T
nexus). Command handlers live in ``disk_io.py`` (the data path),
``disk_info.py`` and the shared SPC layer (``spc.py``); the class-level
:attr:`DiskDevice.table` from ``disk_table.py`` maps CDBs to them. The
logical-unit actor drives it through the :class:`DeviceType` protocol
(devices/device_type.py); it never reaches into the handlers.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

from pyscst.devices.disk_atomic import atomic_unit_blocks, max_atomic_blocks
from pyscst.devices.disk_sanitize import SanitizeState, sanitize_failed
from pyscst.devices.disk_sense import not_ready_stopped
from pyscst.devices.disk_table import SBC_TABLE
from pyscst.devices.disk_xcopy import THIRD_PARTY_COPY_VPD, CopyResults, third_party_copy_page
from pyscst.devices.medium import Medium
from pyscst.devices.spc import ControlPageState, MediumHooks, ReadinessSense
from pyscst.devices.stores import BackingStore
from pyscst.scsi.cdb import OpTable, Readiness
from pyscst.scsi.inquiry import StandardInquiry
from pyscst.scsi.mode import CACHING, CONTROL, ModePages, sbc_mode_pages
from pyscst.scsi.sense import Sense
from pyscst.scsi.vpd import VpdInfo, VpdPages
from pyscst.scsi.vpd_sbc import SbcVpdInfo, sbc_vpd_pages

#: default MAXIMUM TRANSFER LENGTH, in bytes (converted to blocks per device)
DEFAULT_MAX_TRANSFER_BYTES = 8 * 1024 * 1024
#: Block Limits VPD: UNMAP and WRITE SAME bounds (the whole LBA range is thin)
MAX_UNMAP_BLOCKS = 1 << 20
MAX_UNMAP_DESCRIPTORS = 256
MAX_WRITE_SAME_BLOCKS = 0xFFFF


class DiskDevice(ControlPageState, ReadinessSense, MediumHooks):
    """One SBC direct-access block device over a :class:`BackingStore`."""

    table: ClassVar[OpTable] = SBC_TABLE

    def __init__(
        self,
        name: str,
        store: BackingStore,
        *,
        block_size: int = 512,
        read_only: bool = False,
        write_cache: bool = True,
        removable: bool = False,
        serial: str | None = None,
        device_id: str | None = None,
        product: str = "pyscst disk",
        revision: str = "0001",
        lbppbe: int = 0,
        rotational: bool = False,
        max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
    ) -> None:
        if block_size not in (512, 1024, 2048, 4096):
            raise ValueError(f"unsupported block size {block_size}")
        if store.size < block_size:
            raise ValueError(f"{name}: store smaller than one block")
        self.name = name
        self.store = store
        self.block_size = block_size
        self.block_shift = block_size.bit_length() - 1
        self.read_only = read_only or store.read_only
        self.removable = removable
        self.device_id = device_id or f"pyscst:{name}"
        self.serial = serial or hashlib.sha256(self.device_id.encode()).hexdigest()[:16]
        self.lbppbe = lbppbe
        self.max_transfer_blocks = max(1, max_transfer_bytes // block_size)
        self.inquiry = StandardInquiry(
            removable=removable, product=product, revision=revision, third_party_copy=True
        )
        #: EXTENDED COPY results held for RECEIVE COPY RESULTS
        self.copy_results = CopyResults()
        atomic_unit = atomic_unit_blocks(block_size, lbppbe)
        atomic_max = max_atomic_blocks(block_size, self.max_transfer_blocks, lbppbe)
        #: what the SBC VPD pages advertise and the handlers enforce
        self.limits = SbcVpdInfo(
            block_size=block_size,
            max_transfer_blocks=self.max_transfer_blocks,
            optimal_granularity=1 << lbppbe,
            lbpu=True,
            lbpws=True,
            lbpws10=True,
            lbprz=True,
            max_unmap_blocks=MAX_UNMAP_BLOCKS,
            max_unmap_descriptors=MAX_UNMAP_DESCRIPTORS,
            max_write_same_blocks=MAX_WRITE_SAME_BLOCKS,
            max_compare_write_blocks=min(255, self.max_transfer_blocks),
            non_rotating=not rotational,
            max_atomic_blocks=atomic_max,
            block_erase=True,
            atomic_alignment=atomic_unit if atomic_max else 0,
            atomic_granularity=atomic_unit if atomic_max else 0,
        )
        self.vpd = VpdPages(
            VpdInfo(device_id=self.device_id, serial=self.serial),
            {**sbc_vpd_pages(self.limits),
             THIRD_PARTY_COPY_VPD: lambda nexus: third_party_copy_page()},
        )
        self.mode = sbc_mode_pages(write_cache)
        #: the Caching and Control pages as MODE SELECT keeps them (WCE and
        #: SWP: every write reads them)
        self._caching = self.mode.live(CACHING)
        self._control = self.mode.live(CONTROL)
        #: False after START STOP UNIT with START=0 (non-removable devices)
        self.started = True
        #: ejected and loaded only when removable; locked by PREVENT either way
        self.medium = Medium()
        #: SANITIZE failure mode (the running operation's sense is medium.busy)
        self.sanitize_state = SanitizeState()
        #: set by the device actor while this device is down (restarting or
        #: offline): what REQUEST SENSE reports then (only INQUIRY and REQUEST
        #: SENSE reach a device that is down)
        self.unavailable: Sense | None = None

    # --- geometry ---------------------------------------------------------

    @property
    def blocks(self) -> int:
        """Capacity in logical blocks."""
        return self.store.size >> self.block_shift

    async def resize(self, new_size: int) -> None:
        """Change the capacity (bytes, rounded down to whole blocks).

        The caller (the LU) raises CAPACITY DATA HAS CHANGED for every nexus.
        """
        size = new_size - new_size % self.block_size
        if size < self.block_size:
            raise ValueError("new size is smaller than one block")
        await self.store.resize(size)

    # --- mode-page backed state -------------------------------------------

    @property
    def write_cache(self) -> bool:
        """Caching page WCE."""
        return self._caching[2] & 0x04 != 0

    def write_protected(self, mapping_read_only: bool) -> bool:
        # (software_write_protect, read from the live page: once per write)
        return self.read_only or mapping_read_only or self._control[4] & 0x08 != 0

    def mode_parameters(self, read_only: bool) -> tuple[int, int, int]:
        """MODE SENSE header and block descriptor: WP (per mapping) and DPOFUA."""
        specific = (0x80 if self.write_protected(read_only) else 0) | 0x10
        return specific, self.blocks, self.block_size

    # --- readiness --------------------------------------------------------

    def check_ready(self, readiness: Readiness = Readiness.READY) -> None:
        """NOT READY when the medium is absent or (for media access) stopped."""
        medium = self.medium
        if medium.busy is not None:
            medium.check_not_busy()
        if not medium.present:
            medium.check_present()
        if not self.started and readiness is Readiness.READY:
            raise not_ready_stopped()
        if self.sanitize_state.failed and readiness is Readiness.READY:
            raise sanitize_failed()

    # --- medium removal ---------------------------------------------------

    @property
    def removal_prevented(self) -> bool:
        return self.medium.locked

    def eject(self) -> bool:
        """The operator's eject (console, ``pyscst admin``); True if a medium
        was there. ValueError on a fixed disk; MediumLocked while prevented."""
        if not self.removable:
            raise ValueError(f"{self.name} is not removable")
        return self.medium.eject()

    def load(self, image: BackingStore | None = None) -> bool:
        """The operator's load: the backing store is the medium again."""
        if not self.removable:
            raise ValueError(f"{self.name} is not removable")
        if image is not None:
            raise ValueError(f"{self.name}: a disk's medium is its backing file; no path")
        self.started = True
        return self.medium.load()

    # --- hooks for the logical-unit actor (MediumHooks: PREVENT ends at nexus
    # loss and reset, SPC-4 6.13; power on also resets the mode pages) -----

    def power_on(self) -> None:
        """Power-on defaults: mode pages, started, prevention cleared."""
        super().power_on()
        self.started = True

    def __repr__(self) -> str:
        return f"<DiskDevice {self.name} {self.blocks}x{self.block_size}>"



__all__ = ["DiskDevice", "ModePages"]
