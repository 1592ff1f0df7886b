"""The library model alone: layout, the move rules, the operator's imports and
exports, and the inventory's JSON round trip (property-tested)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyscst.devices.library import (
    FIRST_DATA_TRANSFER,
    FIRST_IMPORT_EXPORT,
    FIRST_STORAGE,
    FIRST_TRANSPORT,
    ElementType,
    Library,
    LibraryLayout,
    MoveRefused,
    OperatorRefused,
    Refusal,
    check_barcode,
)


def lib(slots: int = 4, mail: int = 1, drives: tuple[str, ...] = ("t0", "t1")) -> Library:
    library = Library(LibraryLayout(drives=drives, slots=slots, mail_slots=mail))
    for i, barcode in enumerate(("A00001", "A00002")):
        library.add_to_shelf(barcode)
        library.place(barcode, FIRST_STORAGE + i)
    return library


def test_layout_addresses_and_types() -> None:
    library = lib()
    kinds = [(e.address, e.kind) for e in library.elements()]
    assert kinds == [
        (FIRST_TRANSPORT, ElementType.TRANSPORT),
        (FIRST_IMPORT_EXPORT, ElementType.IMPORT_EXPORT),
        (FIRST_DATA_TRANSFER, ElementType.DATA_TRANSFER),
        (FIRST_DATA_TRANSFER + 1, ElementType.DATA_TRANSFER),
        *((FIRST_STORAGE + i, ElementType.STORAGE) for i in range(4)),
    ]
    assert library.drive_element("t1") is not None
    assert library.drive_element("t1").address == FIRST_DATA_TRANSFER + 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"slots": 0}, "slots"),
        ({"mail_slots": 241}, "mail_slots"),
        ({"drives": ("a", "a")}, "twice"),
    ],
)
def test_layout_limits(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        LibraryLayout(**kwargs)  # type: ignore[arg-type]


def test_move_rules() -> None:
    library = lib()
    with pytest.raises(MoveRefused) as refused:
        library.check_move(0x9999, FIRST_STORAGE + 3)
    assert refused.value.refusal is Refusal.NO_SUCH_ELEMENT and refused.value.role == "source"
    with pytest.raises(MoveRefused) as refused:
        library.check_move(FIRST_STORAGE, 0x0002)
    assert refused.value.role == "destination"
    with pytest.raises(MoveRefused) as refused:
        library.check_move(FIRST_STORAGE + 3, FIRST_STORAGE + 2)
    assert refused.value.refusal is Refusal.SOURCE_EMPTY
    with pytest.raises(MoveRefused) as refused:
        library.check_move(FIRST_STORAGE, FIRST_STORAGE + 1)
    assert refused.value.refusal is Refusal.DESTINATION_FULL
    library.move(FIRST_STORAGE, FIRST_DATA_TRANSFER)
    drive = library.element(FIRST_DATA_TRANSFER)
    assert drive is not None and drive.barcode == "A00001" and drive.source == FIRST_STORAGE
    assert library.where("A00001") is drive
    mail = library.element(FIRST_IMPORT_EXPORT)
    assert mail is not None
    mail.door_open = True
    with pytest.raises(MoveRefused) as refused:
        library.check_move(FIRST_DATA_TRANSFER, FIRST_IMPORT_EXPORT)
    assert refused.value.refusal is Refusal.DOOR_OPEN


def test_exchange_rules() -> None:
    library = lib()
    a, b = FIRST_STORAGE, FIRST_STORAGE + 1
    src, one, two = library.check_exchange(a, b, a)  # a swap
    assert (src.barcode, one.barcode, two is src) == ("A00001", "A00002", True)
    with pytest.raises(MoveRefused) as refused:
        library.check_exchange(a, FIRST_STORAGE + 2, FIRST_STORAGE + 3)
    assert refused.value.refusal is Refusal.SOURCE_EMPTY
    assert refused.value.role == "first destination"
    with pytest.raises(MoveRefused) as refused:
        library.check_exchange(a, b, b + 10_000)
    assert refused.value.refusal is Refusal.NO_SUCH_ELEMENT


def test_operator_import_export() -> None:
    library = lib()
    library.add_to_shelf("NEW001")
    with pytest.raises(OperatorRefused, match="already exists"):
        library.add_to_shelf("NEW001")
    element = library.import_cartridge("NEW001")
    assert element.kind is ElementType.IMPORT_EXPORT and element.imported
    library.add_to_shelf("NEW002")
    with pytest.raises(OperatorRefused, match="no free mail slot"):
        library.import_cartridge("NEW002")
    with pytest.raises(OperatorRefused, match="already in the library"):
        library.import_cartridge("A00001")
    with pytest.raises(OperatorRefused, match="not in a mail slot"):
        library.export_cartridge("A00001")
    library.export_cartridge("NEW001")
    assert "NEW001" in library.shelf and library.where("NEW001") is None
    with pytest.raises(OperatorRefused):
        library.storage_address(5)


@pytest.mark.parametrize("bad", ["", ".", "..", ".hidden", "a/b", "x" * 33, "sp ace"])
def test_barcodes_that_cannot_name_a_cartridge(bad: str) -> None:
    with pytest.raises(ValueError, match="barcode"):
        check_barcode(bad)


def test_from_json_refuses_what_is_not_an_inventory() -> None:
    layout = LibraryLayout(drives=("t0",), slots=2)
    docs: list[object] = [[], {"version": 99}, {"version": 1, "elements": 5},
                {"version": 1, "elements": [{"address": FIRST_STORAGE, "barcode": 7}]},
                {"version": 1, "elements": [{"address": FIRST_STORAGE, "barcode": "A"},
                                            {"address": FIRST_STORAGE + 1, "barcode": "A"}]},
                {"version": 1, "shelf": ["../../etc"]}]  # fmt: skip
    for doc in docs:
        with pytest.raises(ValueError):
            Library.from_json(layout, doc)


def test_from_json_rehomes_cartridges_of_removed_elements() -> None:
    big = lib(slots=4)
    big.move(FIRST_STORAGE + 1, FIRST_STORAGE + 3)
    small, notes = Library.from_json(LibraryLayout(drives=("t0", "t1"), slots=2), big.to_json())
    assert small.where("A00002") is not None and len(notes) == 1
    tiny, notes = Library.from_json(LibraryLayout(drives=(), slots=1), big.to_json())
    assert "A00002" in tiny.shelf and "shelf" in notes[0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=40))
def test_any_sequence_of_moves_keeps_each_cartridge_once_and_round_trips(
    moves: list[tuple[int, int]],
) -> None:
    library = lib(slots=6, mail=2)
    addresses = [e.address for e in library.elements()]
    for s, d in moves:
        try:
            library.move(addresses[s % len(addresses)], addresses[d % len(addresses)])
        except MoveRefused:
            pass
        barcodes = [e.barcode or "" for e in library.elements() if e.full]
        assert sorted(barcodes) == ["A00001", "A00002"]
    again, notes = Library.from_json(library.layout, library.to_json())
    assert notes == []
    assert [(e.address, e.barcode, e.source) for e in again.elements()] == [
        (e.address, e.barcode, e.source) for e in library.elements()
    ]
