"""The virtual medium changer device type (``vchanger``): a tape library's robot.

A :class:`ChangerDevice` is peripheral device type 8 (SMC-3). It owns the
library's inventory (devices/library.py, persisted by
devices/library_store.py) and carries out the moves its commands
(devices/smc.py) ask for. Its drives are other devices (``vtape``) with
their own LUNs and their own actors: the changer never touches them. The
actor layer hands it one :class:`DriveLink` per drive
(actors/drive_link.py), through which a move into a drive loads the
cartridge there (the drive's device actor opens it; the drive's initiators
hear NOT READY TO READY CHANGE) and a move out of a drive unloads it (refused
while an initiator of that drive prevents medium removal). Devices never
import actors: the link is the narrow way across.

The changer's own :class:`Medium` is always present; PREVENT ALLOW MEDIUM
REMOVAL on it locks the mail slots against the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar, Protocol

import attrs
import trio

from pyscst.devices.library import (
    Element,
    ElementType,
    Library,
    MoveRefused,
    OperatorRefused,
    describe,
)
from pyscst.devices.library_store import LibraryStore
from pyscst.devices.medium import Medium, MediumLocked
from pyscst.devices.smc import SMC_TABLE, changer_mode_pages
from pyscst.devices.smc_sense import (
    destination_full,
    positioning_error,
    refusal_sense,
    removal_prevented,
    state_not_saved,
)
from pyscst.devices.spc import (
    ControlPageState,
    MediumHooks,
    ReadinessSense,
    RemovableIdentity,
)
from pyscst.devices.stores import BackingStore
from pyscst.scsi.cdb import OpTable, Readiness
from pyscst.scsi.sense import ScsiError, Sense

log = logging.getLogger(__name__)

PERIPHERAL_MEDIUM_CHANGER = 0x08
#: SMC-3 version descriptor (SPC-4 table 31: SMC-3 (no version claimed))
VERSION_SMC3 = 0x0480


class DriveUnavailable(Exception):
    """The drive cannot take part in a move now (offline, restarting, gone)."""


class DriveOccupied(Exception):
    """The drive holds a medium the library did not put there (an operator's load)."""


class DriveLink(Protocol):
    """What the changer needs of one of its drives (the actor layer supplies it)."""

    async def load(self, cartridge: Path) -> None:
        """Load the cartridge at ``cartridge`` into the drive. DriveUnavailable,
        DriveOccupied, or the drive's own refusal (ValueError, OSError)."""
        ...

    async def unload(self) -> None:
        """Take the cartridge out. MediumLocked while an initiator of the drive
        prevents removal; DriveUnavailable."""
        ...

    def available(self) -> bool:
        """The drive is running (READ ELEMENT STATUS: ACCESS, or EXCEPT)."""
        ...

    def holds(self) -> Path | None:
        """The cartridge the drive has loaded now (None: empty, or not known)."""
        ...

    def identifier(self) -> bytes | None:
        """DVCID: T10 vendor ID (8), product ID (16), serial number, ASCII."""
        ...


@attrs.frozen
class _NoDrive:
    """The link of a drive nobody attached (unit tests, a changer alone)."""

    name: str

    async def load(self, cartridge: Path) -> None:
        raise DriveUnavailable(f"drive {self.name} is not connected")

    async def unload(self) -> None:
        raise DriveUnavailable(f"drive {self.name} is not connected")

    def available(self) -> bool:
        return False

    def holds(self) -> Path | None:
        return None

    def identifier(self) -> bytes | None:
        return None


class ChangerDevice(ControlPageState, ReadinessSense, RemovableIdentity, MediumHooks):
    """One SMC medium changer over its library."""

    table: ClassVar[OpTable] = SMC_TABLE

    def __init__(
        self,
        name: str,
        store: LibraryStore,
        *,
        serial: str | None = None,
        product: str = "pyscst changer",
        revision: str = "0001",
    ) -> None:
        self.name = name
        #: what the device actor opens and closes: the inventory's store
        self.store: BackingStore = store
        #: the same object, as what it is: the inventory and the cartridges' directory
        self.state = store
        self.library: Library = store.library
        self.read_only = False
        self.set_identity(name, serial, PERIPHERAL_MEDIUM_CHANGER, product, revision, VERSION_SMC3)
        self.mode = changer_mode_pages(self.library.layout)
        #: always present; PREVENT locks the mail slots against the operator
        self.medium = Medium(present=True)
        self.unavailable: Sense | None = None
        self._links: dict[str, DriveLink] = {d: _NoDrive(d) for d in self.library.layout.drives}
        #: one move at a time, SCSI or operator (the picker is one robot)
        self._robot = trio.Lock()

    # --- the drives ------------------------------------------------------------

    def attach_drives(self, links: Mapping[str, DriveLink]) -> None:
        """The actor layer's links to this library's drives, by device name."""
        for name in self.library.layout.drives:
            if name in links:
                self._links[name] = links[name]

    def link(self, element: Element) -> DriveLink:
        assert element.drive is not None
        return self._links[element.drive]

    def drive_facts(self, element: Element) -> tuple[bool, bytes | None]:
        """READ ELEMENT STATUS: is the drive there, and its DVCID identifier."""
        link = self.link(element)
        return link.available(), link.identifier()

    async def recheck(self, elements: Iterable[Element]) -> None:
        """INITIALIZE ELEMENT STATUS: a cartridge whose directory vanished from
        the library directory is logged (the element keeps its barcode: an
        operator removed the file, not the cartridge from the element)."""
        held = [(e, self.state.cartridge_path(e.barcode)) for e in elements if e.barcode]

        def missing() -> list[Element]:
            return [e for e, path in held if not path.is_dir()]

        for element in await trio.to_thread.run_sync(missing):
            log.warning("%s: %s holds %s, whose cartridge directory is missing",
                        self.name, describe(element), element.barcode)  # fmt: skip

    async def set_door(self, element: Element, open_: bool) -> None:
        """OPEN/CLOSE IMPORT/EXPORT ELEMENT (saved: an open door stays open)."""
        async with self._robot:
            if element.door_open != open_:
                element.door_open = open_
                await self._save()

    async def restore_drives(self) -> None:
        """After a start: make the drives hold what the inventory says. A drive
        the inventory fills is loaded (the drives may still be starting: retried
        for a while); one that holds another cartridge of this library, which
        the inventory puts elsewhere (a crash between a drive's load and the
        inventory's write), is unloaded, so no cartridge is open in two drives.
        A drive already holding its cartridge is left alone (its initiators may
        be using it), as is a medium that is not this library's."""
        for element in list(self.library.elements(ElementType.DATA_TRANSFER)):
            link = self.link(element)
            wanted = None if element.barcode is None else self.state.cartridge_path(element.barcode)
            for _ in range(100):
                try:
                    async with self._robot:  # not while a move is under way
                        await self._restore(element, link, wanted)
                    break
                except DriveUnavailable:
                    await trio.sleep(0.1)
                except (MediumLocked, ValueError, OSError) as exc:
                    log.warning("%s: cannot make %s hold %s: %s", self.name, describe(element),
                                element.barcode or "nothing", exc)  # fmt: skip
                    break

    async def _restore(self, element: Element, link: DriveLink, wanted: Path | None) -> None:
        if not link.available():
            raise DriveUnavailable(f"drive {element.drive} is not running")
        held = link.holds()
        if held == wanted:
            return
        if held is not None and held.parent == self.state.directory:
            log.warning("%s: %s holds %s, which the inventory puts elsewhere: unloading it",
                        self.name, describe(element), held.name)  # fmt: skip
            await link.unload()
        if wanted is not None:
            try:
                await link.load(wanted)
                log.info("%s: %s reloaded into %s", self.name, element.barcode,
                         describe(element))  # fmt: skip
            except DriveOccupied:
                log.warning("%s: %s holds a medium that is not this library's; %s stays "
                            "recorded there", self.name, describe(element), element.barcode)

    # --- moves -----------------------------------------------------------------

    async def move(self, source: int, destination: int, fields: Mapping[str, int]) -> None:
        """MOVE MEDIUM: the rules, the drives, then the inventory (saved). Once
        the robot moves, an abort waits for it to finish: a move is never left
        half-way between the drives and the inventory."""
        async with self._robot:
            try:
                src, dst = self.library.check_move(source, destination)
            except MoveRefused as exc:
                raise refusal_sense(exc, fields) from None
            with trio.CancelScope(shield=True):
                await self._step(src, dst, fields.get("destination", 6))
                await self._save()

    async def exchange(
        self, source: int, first: int, second: int, fields: Mapping[str, int]
    ) -> None:
        """EXCHANGE MEDIUM: first's cartridge goes to the picker, source's to
        first, then the picker's to second (which may be the source). A step
        that fails undoes the ones before it where it can (shielded, as a move)."""
        async with self._robot:
            try:
                src, one, two = self.library.check_exchange(source, first, second)
            except MoveRefused as exc:
                raise refusal_sense(exc, fields) from None
            picker = self.library.transport
            if picker.full:  # a cartridge left there by an exchange that failed twice
                raise positioning_error()
            with trio.CancelScope(shield=True):
                await self._step(one, picker)
                try:
                    await self._step(src, one, fields.get("first destination", 6))
                except ScsiError:
                    await self._undo(picker, one)
                    raise
                try:
                    await self._step(picker, two, fields.get("second destination", 8))
                except ScsiError:
                    await self._undo(picker, src)  # the source is empty now
                    raise
                two.source = one.address  # where it came from, not the picker it passed
                await self._save()

    async def _step(self, src: Element, dst: Element, dst_byte: int = 6) -> None:
        """One move of the robot: the drives, then the inventory (not yet saved)."""
        await self._carry(src, dst, dst_byte)
        self.library.move(src.address, dst.address)

    async def _undo(self, picker: Element, back: Element) -> None:
        """Put the picker's cartridge into ``back`` after a failed step; if even
        that fails, it stays in the picker (READ ELEMENT STATUS shows it)."""
        try:
            await self._step(picker, back)
        except ScsiError:
            log.error("%s: exchange failed half-way; %s holds %s", self.name,
                      describe(picker), picker.barcode)  # fmt: skip
        await self._save(quiet=True)

    async def _carry(self, src: Element, dst: Element, dst_byte: int = 6) -> None:
        """The drive half of a move: unload the source drive, load the destination."""
        barcode = src.barcode
        assert barcode is not None
        if src.kind is ElementType.DATA_TRANSFER:
            try:
                await self.link(src).unload()
            except MediumLocked:
                raise removal_prevented() from None
            except DriveUnavailable as exc:
                log.warning("%s: unload from %s failed: %s", self.name, describe(src), exc)
                raise positioning_error() from None
        if dst.kind is ElementType.DATA_TRANSFER:
            try:
                await self.link(dst).load(self.state.cartridge_path(barcode))
            except DriveOccupied:
                raise destination_full(dst_byte) from None
            except (MediumLocked, DriveUnavailable, ValueError, OSError) as exc:
                log.warning("%s: loading %s into %s failed: %s", self.name, barcode,
                            describe(dst), exc)  # fmt: skip
                if src.kind is ElementType.DATA_TRANSFER:
                    with trio.CancelScope(shield=True):
                        try:  # the cartridge goes back where it came from
                            await self.link(src).load(self.state.cartridge_path(barcode))
                        except (MediumLocked, DriveUnavailable, DriveOccupied, ValueError,
                                OSError):  # fmt: skip
                            pass
                if isinstance(exc, MediumLocked):  # an initiator of that drive holds PREVENT
                    raise removal_prevented() from None
                raise positioning_error() from None

    async def _save(self, quiet: bool = False) -> None:
        """Write the inventory; HARDWARE ERROR 44/00 if it cannot be (``quiet``:
        only log it, for a failure path that already answers with its own)."""
        try:
            await self.state.save()
        except OSError as exc:
            log.error("%s: cannot save the library state: %s", self.name, exc)
            if not quiet:
                raise state_not_saved() from None

    # --- the operator ---------------------------------------------------------------

    async def operate(self, action: str, barcode: str, **options: object) -> Element | None:
        """An operator's change (console, ``pyscst admin library ...``):
        ``create`` a blank cartridge on the shelf (``capacity``, ``worm``),
        ``import`` one through a mail slot (one copied into the library
        directory is adopted first), ``export`` one from a mail slot,
        ``delete`` one from the shelf. OperatorRefused says why not."""
        async with self._robot:
            if action in ("import", "export") and self.medium.locked:
                raise OperatorRefused(
                    "an initiator prevents medium removal (PREVENT ALLOW MEDIUM REMOVAL): "
                    "the mail slots are locked"
                )
            element: Element | None = None
            if action == "create":
                capacity = options.get("capacity")
                assert isinstance(capacity, int)
                await self.state.create_cartridge(barcode, capacity, bool(options.get("worm")))
            elif action == "import":
                if not self.library.knows(barcode):  # copied in: adopt it first
                    await trio.to_thread.run_sync(self.state.adopt, barcode)
                element = self.library.import_cartridge(barcode)
            elif action == "export":
                element = self.library.export_cartridge(barcode)
            elif action == "delete":
                await self.state.delete_cartridge(barcode)
            else:
                raise OperatorRefused(f"unknown library action {action!r}")
            await self.state.save()
            return element

    def inventory(self) -> dict[str, object]:
        """What is loaded where, for the admin plane (JSON-able)."""
        elements = []
        for element in self.library.elements():
            entry: dict[str, object] = {
                "address": element.address,
                "type": element.kind.name.lower(),
                "barcode": element.barcode,
            }
            if element.drive is not None:
                entry["drive"] = element.drive
            if element.kind is ElementType.IMPORT_EXPORT:
                entry["open"] = element.door_open
            elements.append(entry)
        return {
            "elements": elements,
            "shelf": list(self.library.shelf),
            "locked": self.medium.locked,
            "directory": str(self.state.directory),
        }

    # --- what the LU reads ------------------------------------------------------------

    def mode_parameters(self, read_only: bool) -> tuple[int, int, int]:
        return 0, 0, 0

    def check_ready(self, readiness: Readiness = Readiness.READY) -> None:
        return None

    async def resize(self, new_size: int) -> None:
        raise ValueError(f"{self.name}: a medium changer has no capacity")

    def eject(self) -> bool:
        raise ValueError(
            f"{self.name}: a medium changer has no medium to eject; "
            "export cartridges through its mail slots"
        )

    def load(self, image: object = None) -> bool:
        raise ValueError(
            f"{self.name}: a medium changer has no medium to load; "
            "import cartridges through its mail slots"
        )

    def __repr__(self) -> str:
        return f"<ChangerDevice {self.name} {self.library.layout}>"
