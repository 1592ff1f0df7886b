"""The tape library a medium changer manages: a sans-I/O model of its elements.

A library (SMC-3 4.1) is a set of elements, each at a 16-bit element address:
the medium transport (the picker), storage elements (slots), import/export
elements (mail slots, through which the operator puts cartridges in and
takes them out) and data transfer elements (the tape drives). Each element
is empty or holds one cartridge, known by its barcode. This module is only
that bookkeeping and its rules (what may move where, and why not); it does
no I/O: the changer (devices/changer.py) loads and unloads drives and
persists the state (devices/library_store.py) around the moves it allows.

Element addresses follow the layout most libraries (and mhVTL) use, so that
backup software recognises it: the picker at 0x0001, mail slots from 0x0010,
drives from 0x0100, storage slots from 0x0400 (reported by MODE SENSE page
0x1D).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

FIRST_TRANSPORT = 0x0001
FIRST_IMPORT_EXPORT = 0x0010
FIRST_DATA_TRANSFER = 0x0100
FIRST_STORAGE = 0x0400
MAX_IMPORT_EXPORT = FIRST_DATA_TRANSFER - FIRST_IMPORT_EXPORT
MAX_DATA_TRANSFER = FIRST_STORAGE - FIRST_DATA_TRANSFER
MAX_STORAGE = 0x10000 - FIRST_STORAGE

#: a barcode (SMC-3 primary volume tag: up to 32 characters); it names its
#: cartridge's directory, so letters, digits and _ . - only, never a leading
#: dot ("." and ".." are not cartridges)
BARCODE_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,31}$")


def check_barcode(barcode: str) -> str:
    """``barcode`` if it is a valid volume tag, else ValueError saying why."""
    if BARCODE_RE.match(barcode) is None:
        raise ValueError(
            f'barcode "{barcode}": expected 1-32 of A-Z a-z 0-9 _ . - (not starting with .)'
        )
    return barcode


class ElementType(enum.IntEnum):
    """SMC-3 element type codes (READ ELEMENT STATUS, table 'Element type code')."""

    ALL = 0
    TRANSPORT = 1
    STORAGE = 2
    IMPORT_EXPORT = 3
    DATA_TRANSFER = 4


@attrs.frozen
class LibraryLayout:
    """The shape of a library: how many of each element, which drive is which."""

    #: device names of the drives (``vtape`` devices), in element order
    drives: tuple[str, ...] = ()
    slots: int = 10
    mail_slots: int = 1

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.slots <= MAX_STORAGE:
            raise ValueError(f"slots: expected 1..{MAX_STORAGE}, got {self.slots}")
        if not 0 <= self.mail_slots <= MAX_IMPORT_EXPORT:
            raise ValueError(f"mail_slots: expected 0..{MAX_IMPORT_EXPORT}, got {self.mail_slots}")
        if len(self.drives) > MAX_DATA_TRANSFER:
            raise ValueError(f"drives: at most {MAX_DATA_TRANSFER}")
        if len(set(self.drives)) != len(self.drives):
            raise ValueError("drives: a drive is listed twice")

    def ranges(self) -> list[tuple[ElementType, int, int]]:
        """(type, first address, count) of every element type, by address."""
        return [
            (ElementType.TRANSPORT, FIRST_TRANSPORT, 1),
            (ElementType.IMPORT_EXPORT, FIRST_IMPORT_EXPORT, self.mail_slots),
            (ElementType.DATA_TRANSFER, FIRST_DATA_TRANSFER, len(self.drives)),
            (ElementType.STORAGE, FIRST_STORAGE, self.slots),
        ]


@attrs.define
class Element:
    """One element and what it holds."""

    address: int
    kind: ElementType
    #: the cartridge in it (None: empty)
    barcode: str | None = None
    #: where that cartridge was before it came here (SVALID / SOURCE STORAGE
    #: ELEMENT ADDRESS); None when unknown (an import, a configured cartridge)
    source: int | None = None
    #: a data transfer element: the drive's device name
    drive: str | None = None
    #: an import/export element: the operator opened it (OPEN/CLOSE IMPORT
    #: EXPORT ELEMENT); the picker cannot reach it meanwhile
    door_open: bool = False
    #: an import/export element: its cartridge was put there by the operator
    #: (IMPEXP = 1) rather than by the picker (0)
    imported: bool = False

    @property
    def full(self) -> bool:
        return self.barcode is not None


class Refusal(enum.Enum):
    """Why the library refuses a move (the changer maps each to its sense)."""

    NO_SUCH_ELEMENT = "no such element"
    SOURCE_EMPTY = "source element empty"
    DESTINATION_FULL = "destination element full"
    DOOR_OPEN = "import/export element open"


class MoveRefused(Exception):
    """A move the library's rules refuse; ``role`` names the CDB field at fault."""

    def __init__(self, refusal: Refusal, role: str, address: int) -> None:
        super().__init__(f"{refusal.value}: {role} element {address:#06x}")
        self.refusal = refusal
        self.role = role
        self.address = address


class OperatorRefused(ValueError):
    """An operator's import, export or cartridge edit that cannot be done."""


class Library:
    """Every element of one library and the cartridge in each."""

    def __init__(self, layout: LibraryLayout) -> None:
        self.layout = layout
        self._elements: dict[int, Element] = {}
        for kind, first, count in layout.ranges():
            for i in range(count):
                address = first + i
                drive = layout.drives[i] if kind is ElementType.DATA_TRANSFER else None
                self._elements[address] = Element(address, kind, drive=drive)
        #: every element in address order (the layout never changes)
        self._ordered = [self._elements[a] for a in sorted(self._elements)]
        #: cartridges the library knows that are in no element (exported, or
        #: created but not imported yet): barcode -> nothing, ordered
        self.shelf: dict[str, None] = {}

    # --- looking ------------------------------------------------------------

    def element(self, address: int) -> Element | None:
        return self._elements.get(address)

    def elements(self, kind: ElementType = ElementType.ALL) -> Iterator[Element]:
        """Elements of ``kind`` (ALL: every one) in address order."""
        if kind is ElementType.ALL:
            yield from self._ordered
            return
        for element in self._ordered:
            if element.kind is kind:
                yield element

    def where(self, barcode: str) -> Element | None:
        """The element holding ``barcode`` (None: on the shelf or unknown)."""
        for element in self._elements.values():
            if element.barcode == barcode:
                return element
        return None

    def knows(self, barcode: str) -> bool:
        return barcode in self.shelf or self.where(barcode) is not None

    def drive_element(self, name: str) -> Element | None:
        for element in self.elements(ElementType.DATA_TRANSFER):
            if element.drive == name:
                return element
        return None

    def first_free(self, kind: ElementType) -> Element | None:
        return next((e for e in self.elements(kind) if not e.full and not e.door_open), None)

    def storage_address(self, slot: int) -> int:
        """The element address of storage slot number ``slot`` (1-based)."""
        if not 1 <= slot <= self.layout.slots:
            raise OperatorRefused(f"slot {slot}: the library has slots 1..{self.layout.slots}")
        return FIRST_STORAGE + slot - 1

    @property
    def transport(self) -> Element:
        return self._elements[FIRST_TRANSPORT]

    # --- moves (the changer's commands) --------------------------------------

    def resolve(self, address: int, role: str) -> Element:
        element = self._elements.get(address)
        if element is None:
            raise MoveRefused(Refusal.NO_SUCH_ELEMENT, role, address)
        return element

    def check_move(self, source: int, destination: int) -> tuple[Element, Element]:
        """The two elements of a MOVE MEDIUM, or why it cannot happen."""
        src = self.resolve(source, "source")
        dst = self.resolve(destination, "destination")
        for role, element in (("source", src), ("destination", dst)):
            if element.door_open:
                raise MoveRefused(Refusal.DOOR_OPEN, role, element.address)
        if not src.full:
            raise MoveRefused(Refusal.SOURCE_EMPTY, "source", source)
        if dst.full:
            raise MoveRefused(Refusal.DESTINATION_FULL, "destination", destination)
        return src, dst

    def check_exchange(
        self, source: int, first: int, second: int
    ) -> tuple[Element, Element, Element]:
        """EXCHANGE MEDIUM: source's cartridge to ``first``, first's to ``second``
        (which may be the source: a swap). Overlaps are the caller's check."""
        src = self.resolve(source, "source")
        one = self.resolve(first, "first destination")
        two = self.resolve(second, "second destination")
        for role, element in (("source", src), ("first destination", one),
                              ("second destination", two)):  # fmt: skip
            if element.door_open:
                raise MoveRefused(Refusal.DOOR_OPEN, role, element.address)
        if not src.full:
            raise MoveRefused(Refusal.SOURCE_EMPTY, "source", source)
        if not one.full:
            raise MoveRefused(Refusal.SOURCE_EMPTY, "first destination", first)
        if two is not src and two.full:
            raise MoveRefused(Refusal.DESTINATION_FULL, "second destination", second)
        return src, one, two

    def move(self, source: int, destination: int) -> None:
        """Record a move the changer performed (after :meth:`check_move`)."""
        src, dst = self.check_move(source, destination)
        dst.barcode, dst.source = src.barcode, src.address
        dst.imported = False
        src.barcode, src.source, src.imported = None, None, False

    # --- the operator (console, pyscst admin) ----------------------------------

    def add_to_shelf(self, barcode: str) -> None:
        check_barcode(barcode)
        if self.knows(barcode):
            raise OperatorRefused(f"cartridge {barcode} already exists")
        self.shelf[barcode] = None

    def place(self, barcode: str, address: int | None = None) -> Element:
        """Put a shelf cartridge straight into a storage slot (configuration)."""
        if barcode not in self.shelf:
            raise OperatorRefused(f"cartridge {barcode} is not on the shelf")
        if address is None:
            element = self.first_free(ElementType.STORAGE)
            if element is None:
                raise OperatorRefused(f"no free storage slot for {barcode}")
        else:
            found = self._elements.get(address)
            if found is None or found.kind is not ElementType.STORAGE:
                raise OperatorRefused(f"{address:#06x} is not a storage slot")
            if found.full:
                raise OperatorRefused(f"slot {address:#06x} already holds {found.barcode}")
            element = found
        del self.shelf[barcode]
        element.barcode, element.source = barcode, None
        return element

    def import_cartridge(self, barcode: str) -> Element:
        """The operator puts a shelf cartridge into a free mail slot."""
        if barcode not in self.shelf:
            where = self.where(barcode)
            if where is not None:
                raise OperatorRefused(
                    f"cartridge {barcode} is already in the library ({describe(where)})"
                )
            raise OperatorRefused(f"no cartridge {barcode}; create it first")
        element = self.first_free(ElementType.IMPORT_EXPORT)
        if element is None:
            raise OperatorRefused("no free mail slot (move its cartridges into the library first)")
        del self.shelf[barcode]
        element.barcode, element.source, element.imported = barcode, None, True
        return element

    def export_cartridge(self, barcode: str) -> Element:
        """The operator takes a cartridge out of a mail slot, onto the shelf."""
        element = self.where(barcode)
        if element is None:
            raise OperatorRefused(f"cartridge {barcode} is not in the library")
        if element.kind is not ElementType.IMPORT_EXPORT:
            raise OperatorRefused(
                f"cartridge {barcode} is in {describe(element)}, not in a mail slot: "
                "move it to a mail slot first (MOVE MEDIUM)"
            )
        element.barcode, element.source, element.imported = None, None, False
        self.shelf[barcode] = None
        return element

    def forget(self, barcode: str) -> None:
        """Drop a shelf cartridge from the inventory (its file is deleted)."""
        if barcode not in self.shelf:
            raise OperatorRefused(f"cartridge {barcode} is not on the shelf (export it first)")
        del self.shelf[barcode]

    # --- persistence ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "elements": [
                {
                    "address": e.address,
                    "barcode": e.barcode,
                    "source": e.source,
                    "imported": e.imported,
                }
                for e in self.elements()
                if e.full
            ],
            "open": [e.address for e in self.elements() if e.door_open],
            "shelf": list(self.shelf),
        }

    @classmethod
    def from_json(cls, layout: LibraryLayout, doc: object) -> tuple[Library, list[str]]:
        """The library a state file describes, and notes on what had to be
        fixed up because the layout changed since (cartridges of elements that
        no longer exist go to free slots). ValueError for anything malformed."""
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a library state (version {FORMAT_VERSION} expected)")
        library = cls(layout)
        notes: list[str] = []
        seen: set[str] = set()
        homeless: list[str] = []

        def barcode_of(value: object) -> str:
            if not isinstance(value, str):
                raise ValueError(f"barcode {value!r} is not a string")
            check_barcode(value)
            if value in seen:
                raise ValueError(f"cartridge {value} is in two places")
            seen.add(value)
            return value

        entries = _list(doc, "elements")
        for entry in entries:
            if not isinstance(entry, dict):
                raise ValueError("an element entry is not a table")
            barcode = barcode_of(entry.get("barcode"))
            address, source = entry.get("address"), entry.get("source")
            if not isinstance(address, int) or not (source is None or isinstance(source, int)):
                raise ValueError(f"cartridge {barcode}: address and source must be integers")
            element = library._elements.get(address)
            if element is None or element.full:
                homeless.append(barcode)
                continue
            element.barcode, element.source = barcode, source
            element.imported = bool(entry.get("imported", False))
        for address in _list(doc, "open"):
            element = library._elements.get(address) if isinstance(address, int) else None
            if element is not None and element.kind is ElementType.IMPORT_EXPORT:
                element.door_open = True
        for barcode in _list(doc, "shelf"):
            library.shelf[barcode_of(barcode)] = None
        for barcode in homeless:
            free = library.first_free(ElementType.STORAGE)
            if free is None:
                library.shelf[barcode] = None
                notes.append(
                    f"cartridge {barcode}: its element is gone and no slot is free; "
                    "put on the shelf"
                )
            else:
                free.barcode = barcode
                notes.append(
                    f"cartridge {barcode}: its element is gone; now in slot {free.address:#06x}"
                )
        return library, notes


FORMAT_VERSION = 1


def _list(doc: dict[str, Any], key: str) -> Sequence[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} is not a list")
    return value


def describe(element: Element) -> str:
    """An element as an operator reads it: "slot 0x0401", "drive tape0 (0x0100)"."""
    if element.kind is ElementType.DATA_TRANSFER:
        return f"drive {element.drive} ({element.address:#06x})"
    name = {
        ElementType.TRANSPORT: "picker",
        ElementType.STORAGE: "slot",
        ElementType.IMPORT_EXPORT: "mail slot",
    }[element.kind]
    return f"{name} {element.address:#06x}"
