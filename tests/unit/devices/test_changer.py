"""The medium changer without a daemon: every SMC command against a library on
disk, with fake drive links standing in for the drives' actors."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pyscst.devices.changer import ChangerDevice, DriveOccupied, DriveUnavailable
from pyscst.devices.library import (
    FIRST_DATA_TRANSFER,
    FIRST_IMPORT_EXPORT,
    FIRST_STORAGE,
    ElementType,
    Library,
    LibraryLayout,
    OperatorRefused,
)
from pyscst.devices.library_store import CartridgeSpec, LibrarySettings, LibraryStore
from pyscst.devices.medium import MediumLocked
from pyscst.devices.smc import element_status
from pyscst.devices.tape_cartridge import create_blank
from pyscst.scsi.sense import SenseKey
from tests.fakes import DEFAULT_NEXUS, Outcome, run_cdb

MIB = 1 << 20
S0, S1, S2 = FIRST_STORAGE, FIRST_STORAGE + 1, FIRST_STORAGE + 2
D0, D1 = FIRST_DATA_TRANSFER, FIRST_DATA_TRANSFER + 1
MAIL = FIRST_IMPORT_EXPORT


class FakeDrive:
    """A drive link: records loads and unloads; can be locked, occupied or down."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loaded: Path | None = None
        self.locked = False
        #: empty but prevented: the vtape refuses a load (its medium is locked)
        self.refuses_load = False
        self.up = True
        self.log: list[str] = []

    async def load(self, cartridge: Path) -> None:
        if not self.up:
            raise DriveUnavailable(self.name)
        if self.loaded is not None:
            raise DriveOccupied(self.name)
        if self.refuses_load:
            raise MediumLocked("prevented")
        self.loaded = cartridge
        self.log.append(f"load {cartridge.name}")

    async def unload(self) -> None:
        if not self.up:
            raise DriveUnavailable(self.name)
        if self.locked:
            raise MediumLocked("prevented")
        self.log.append(f"unload {self.loaded.name if self.loaded else None}")
        self.loaded = None

    def available(self) -> bool:
        return self.up

    def holds(self) -> Path | None:
        return self.loaded

    def identifier(self) -> bytes | None:
        return b"PYSCST  pyscst tape      SER" + self.name.encode()


def settings(tmp_path: Path, slots: int = 4) -> LibrarySettings:
    return LibrarySettings(
        LibraryLayout(drives=("t0", "t1"), slots=slots, mail_slots=1),
        tmp_path / "state" / "library" / "lib.json",
        (CartridgeSpec("A00001", 2 * MIB), CartridgeSpec("A00002", 2 * MIB, worm=True, slot=3)),
    )


def changer(tmp_path: Path) -> tuple[ChangerDevice, dict[str, FakeDrive]]:
    store = LibraryStore.open(settings(tmp_path), tmp_path / "lib", (tmp_path,))
    device = ChangerDevice("lib", store)
    drives = {"t0": FakeDrive("t0"), "t1": FakeDrive("t1")}
    device.attach_drives(drives)
    return device, drives


def move(src: int, dst: int, transport: int = 0, invert: int = 0) -> bytes:
    return struct.pack(">BBHHHHBB", 0xA5, 0, transport, src, dst, 0, invert, 0)


def exchange(src: int, one: int, two: int) -> bytes:
    return struct.pack(">BBHHHHBB", 0xA6, 0, 0, src, one, two, 0, 0)


def res(
    kind: int = 0,
    start: int = 0,
    count: int = 0xFFFF,
    voltag: bool = True,
    dvcid: bool = False,
    allocation: int = 0xFFFFFF,
) -> bytes:
    return (struct.pack(">BBHHB", 0xB8, kind | (0x10 if voltag else 0), start, count,
                        1 if dvcid else 0)
            + allocation.to_bytes(3, "big") + b"\x00\x00")  # fmt: skip


def check(out: Outcome, key: SenseKey, asc: int, ascq: int, byte: int | None = None) -> None:
    sense = out.sense
    assert sense is not None, "expected CHECK CONDITION"
    assert (sense.key, sense.asc, sense.ascq) == (key, asc, ascq)
    if byte is not None:
        assert sense.field_pointer is not None and sense.field_pointer.byte == byte


def parse(data: bytes) -> list[tuple[int, int, int, str, int | None]]:
    """READ ELEMENT STATUS data -> (type, address, flags, tag, source) per element."""
    first, count, byte_count = struct.unpack_from(">HH", data)[0], data[2:4], data[5:8]
    assert int.from_bytes(byte_count, "big") == len(data) - 8
    out = []
    at = 8
    while at < len(data):
        kind, flags, length = data[at], data[at + 1], struct.unpack_from(">H", data, at + 2)[0]
        size = int.from_bytes(data[at + 5 : at + 8], "big")
        at += 8
        for d in range(at, at + size, length):
            desc = data[d : d + length]
            tag = desc[12:44].decode().rstrip() if flags & 0x80 else ""
            source = struct.unpack_from(">H", desc, 10)[0] if desc[9] & 0x80 else None
            out.append((kind, struct.unpack_from(">H", desc)[0], desc[2], tag, source))
        at += size
    assert not out or out[0][1] == first
    assert len(out) == struct.unpack(">H", count)[0]
    return out


async def test_configured_cartridges_are_created_placed_and_reported(tmp_path: Path) -> None:
    device, _ = changer(tmp_path)
    assert (tmp_path / "lib" / "A00002" / "cartridge.json").exists()
    out = await run_cdb(device, res())
    assert out.data is not None
    elements = parse(out.data)
    assert [(k, a) for k, a, *_ in elements][:4] == [(1, 1), (3, MAIL), (4, D0), (4, D1)]
    storage = {a: (flags & 1, tag) for k, a, flags, tag, _ in elements if k == 2}
    assert storage == {S0: (1, "A00001"), S1: (0, ""), S2: (1, "A00002"), S2 + 1: (0, "")}


async def test_move_into_and_out_of_drives(tmp_path: Path) -> None:
    device, drives = changer(tmp_path)
    assert (await run_cdb(device, move(S0, D1))).error is None
    assert drives["t1"].loaded == tmp_path / "lib" / "A00001"
    out = await run_cdb(device, res(kind=4))
    assert out.data is not None
    assert parse(out.data)[1] == (4, D1, 0x09, "A00001", S0)  # FULL, ACCESS, SVALID
    drives["t1"].locked = True
    check(await run_cdb(device, move(D1, S1)), SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
    assert drives["t1"].loaded is not None  # nothing moved
    drives["t1"].locked = False
    assert (await run_cdb(device, move(D1, D0))).error is None  # drive to drive
    assert drives["t0"].log == ["load A00001"] and drives["t1"].log[-1] == "unload A00001"
    # the inventory survives a restart
    store = LibraryStore.open(settings(tmp_path), tmp_path / "lib", (tmp_path,))
    element = store.library.where("A00001")
    assert element is not None and element.address == D0 and element.source == D1


async def test_move_refusals_point_at_the_field(tmp_path: Path) -> None:
    device, drives = changer(tmp_path)
    check(await run_cdb(device, move(0x7777, S1)), SenseKey.ILLEGAL_REQUEST, 0x21, 0x01, 4)
    check(await run_cdb(device, move(S0, 0x0002)), SenseKey.ILLEGAL_REQUEST, 0x21, 0x01, 6)
    check(await run_cdb(device, move(S0, S1, transport=5)), SenseKey.ILLEGAL_REQUEST, 0x21, 1, 2)
    check(await run_cdb(device, move(S1, S0)), SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0E, 4)
    check(await run_cdb(device, move(S0, S2)), SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0D, 6)
    check(await run_cdb(device, move(S0, S1, invert=1)), SenseKey.ILLEGAL_REQUEST, 0x24, 0, 10)
    check(
        await run_cdb(device, move(S0, S1)[:11] + b"\x40"), SenseKey.ILLEGAL_REQUEST, 0x24, 0, 11
    )  # EEPOS in the control byte: not supported
    drives["t0"].up = False  # the drive went offline: the cartridge stays put
    check(await run_cdb(device, move(S0, D0)), SenseKey.HARDWARE_ERROR, 0x15, 0x01)
    assert device.library.where("A00001").address == S0  # type: ignore[union-attr]
    out = await run_cdb(device, res(kind=4))
    assert out.data is not None and parse(out.data)[0][2] & 0x04  # EXCEPT
    drives["t1"].loaded = Path("/elsewhere")  # an operator's own load
    check(await run_cdb(device, move(S0, D1)), SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0D, 6)


async def test_a_prevented_destination_drive_answers_removal_prevented(tmp_path: Path) -> None:
    """Found by the fuzz campaign: an empty drive whose initiator holds PREVENT
    refused the load with an exception the changer did not expect (logged
    traceback, HARDWARE ERROR). Now 53/02, and the cartridge stays where it was."""
    device, drives = changer(tmp_path)
    drives["t0"].refuses_load = True
    check(await run_cdb(device, move(S0, D0)), SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
    assert device.library.where("A00001").address == S0  # type: ignore[union-attr]
    assert (await run_cdb(device, move(S0, D1))).error is None
    drives["t0"].refuses_load = True  # drive to drive: back into the source drive
    check(await run_cdb(device, move(D1, D0)), SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
    assert drives["t1"].loaded is not None and drives["t0"].loaded is None
    assert device.library.where("A00001").address == D1  # type: ignore[union-attr]


async def test_exchange(tmp_path: Path) -> None:
    device, drives = changer(tmp_path)
    assert (await run_cdb(device, move(S0, D0))).error is None
    assert (await run_cdb(device, exchange(S2, D0, S0))).error is None
    assert drives["t0"].loaded is not None and drives["t0"].loaded.name == "A00002"
    assert device.library.where("A00001").address == S0  # type: ignore[union-attr]
    assert device.library.where("A00001").source == D0  # type: ignore[union-attr]
    assert not device.library.transport.full
    assert (await run_cdb(device, exchange(S0, D0, S0))).error is None  # a swap
    assert device.library.where("A00002").address == S0  # type: ignore[union-attr]
    check(await run_cdb(device, exchange(S0, S0, S1)), SenseKey.ILLEGAL_REQUEST, 0x24, 0, 6)
    check(await run_cdb(device, exchange(S0, D0, D0)), SenseKey.ILLEGAL_REQUEST, 0x24, 0, 8)
    check(await run_cdb(device, exchange(S1, D0, S1)), SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0E, 4)
    check(await run_cdb(device, exchange(S0, S1, S2)), SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0E, 6)
    # S0: A00002, D0: A00001. The second drive is down: the last step fails
    # and the picker puts its cartridge into the (now empty) source
    drives["t1"].up = False
    check(await run_cdb(device, exchange(S0, D0, D1)), SenseKey.HARDWARE_ERROR, 0x15, 0x01)
    assert not device.library.transport.full
    assert device.library.where("A00001").address == S0  # type: ignore[union-attr]
    assert device.library.where("A00002").address == D0  # type: ignore[union-attr]
    assert drives["t0"].loaded is not None and drives["t0"].loaded.name == "A00002"
    # the first step's drive is down: nothing moves at all
    drives["t0"].up = False
    check(await run_cdb(device, exchange(S0, D0, S1)), SenseKey.HARDWARE_ERROR, 0x15, 0x01)
    assert device.library.where("A00001").address == S0  # type: ignore[union-attr]
    assert device.library.where("A00002").address == D0  # type: ignore[union-attr]
    check(await run_cdb(device, exchange(S0, S2, D0)), SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0E, 6)


async def test_read_element_status_ranges_and_allocation(tmp_path: Path) -> None:
    device, _ = changer(tmp_path)
    full = await run_cdb(device, res())
    assert full.data is not None
    for allocation in (0, 1, 7, 8, 9, 15, 100):
        out = await run_cdb(device, res(allocation=allocation))
        assert out.data == full.data[:allocation]  # truncated, never adjusted
    out = await run_cdb(device, res(kind=2, start=S1, count=2))
    assert out.data is not None
    assert [a for _, a, *_ in parse(out.data)] == [S1, S2]
    out = await run_cdb(device, res(kind=2, count=0))
    assert out.data == bytes(8)
    check(await run_cdb(device, res(kind=2, start=0xFFFF)), SenseKey.ILLEGAL_REQUEST, 0x21, 1, 2)
    check(await run_cdb(device, res(kind=5)), SenseKey.ILLEGAL_REQUEST, 0x24, 0, 1)
    out = await run_cdb(device, res(voltag=False))
    assert out.data is not None and len(out.data) == 8 + 4 * 8 + 8 * 12
    out = await run_cdb(device, res(kind=4, dvcid=True))
    assert out.data is not None
    length = struct.unpack_from(">H", out.data, 10)[0]
    first = out.data[16 : 16 + length]
    assert length == 12 + 36 + 4 + 40 and first[48:52] == b"\x02\x01\x00\x28"
    assert first[52:].rstrip() == b"PYSCST  pyscst tape      SERt0"


async def test_mail_slot_doors_prevention_and_operator(tmp_path: Path) -> None:
    device, _ = changer(tmp_path)
    open_, close = bytes((0x1B, 0, 0, MAIL, 0, 0)), bytes((0x1B, 0, 0, MAIL, 1, 0))
    check(
        await run_cdb(device, bytes((0x1B, 0, 0x04, 0x00, 0, 0))),
        SenseKey.ILLEGAL_REQUEST,
        0x21,
        0x01,
        2,
    )  # a storage slot is no mail slot
    check(
        await run_cdb(device, bytes((0x1B, 0, 0, MAIL, 2, 0))), SenseKey.ILLEGAL_REQUEST, 0x24, 0, 4
    )
    assert (await run_cdb(device, open_)).error is None
    check(await run_cdb(device, move(S0, MAIL)), SenseKey.NOT_READY, 0x3A, 0x02)
    assert (await run_cdb(device, close)).error is None
    assert (await run_cdb(device, move(S0, MAIL))).error is None
    assert (await run_cdb(device, bytes((0x1E, 0, 0, 0, 1, 0)))).error is None  # PREVENT
    check(await run_cdb(device, open_), SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
    with pytest.raises(OperatorRefused, match="prevents"):
        await device.operate("export", "A00001")
    device.nexus_lost(DEFAULT_NEXUS)  # prevention ends with the nexus
    assert (await device.operate("export", "A00001")) is not None
    await device.operate("create", "NEW01", capacity=2 * MIB, worm=False)
    element = await device.operate("import", "NEW01")
    assert element is not None and element.imported
    out = await run_cdb(device, res(kind=3))
    assert out.data is not None and parse(out.data)[0][2] == 0x3B  # full, IMPEXP, access, en
    with pytest.raises(OperatorRefused):
        await device.operate("delete", "NEW01")  # in the library: export it first
    doc = json.loads((tmp_path / "state" / "library" / "lib.json").read_text())
    assert doc["shelf"] == ["A00001"]


async def test_mode_pages_describe_the_library(tmp_path: Path) -> None:
    device, _ = changer(tmp_path)
    out = await run_cdb(device, bytes((0x1A, 0, 0x1D, 0, 255, 0)))
    assert out.data is not None and out.data[3] == 0  # no block descriptor
    page = out.data[4:]
    assert page[:2] == b"\x1d\x12"
    assert struct.unpack_from(">8H", page, 2) == (1, 1, S0, 4, MAIL, 1, D0, 2)
    out = await run_cdb(device, bytes((0x5A, 0, 0x3F, 0, 0, 0, 0, 1, 0, 0)))
    assert out.data is not None
    codes = []
    at = 8
    while at < len(out.data):
        codes.append(out.data[at] & 0x3F)
        at += 2 + out.data[at + 1]
    assert codes == [0x0A, 0x1C, 0x1D, 0x1E, 0x1F]


async def test_initialize_and_position(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    device, _ = changer(tmp_path)
    assert (await run_cdb(device, bytes((0x07, 0, 0, 0, 0, 0)))).error is None
    assert "missing" not in caplog.text
    shutil.rmtree(tmp_path / "lib" / "A00002")
    assert (await run_cdb(device, bytes((0x07, 0, 0, 0, 0, 0)))).error is None
    assert "holds A00002, whose cartridge directory is missing" in caplog.text
    ranged = struct.pack(">BBHHHBB", 0x37, 1, 0x7777, 0, 2, 0, 0)
    check(await run_cdb(device, ranged), SenseKey.ILLEGAL_REQUEST, 0x21, 0x01, 2)
    ranged = struct.pack(">BBHHHBB", 0x37, 1, S0, 0, 2, 0, 0)
    assert (await run_cdb(device, ranged)).error is None
    position = struct.pack(">BBHHHBB", 0x2B, 0, 0, D1, 0, 0, 0)
    assert (await run_cdb(device, position)).error is None
    position = struct.pack(">BBHHHBB", 0x2B, 0, 0, 0x3333, 0, 0, 0)
    check(await run_cdb(device, position), SenseKey.ILLEGAL_REQUEST, 0x21, 0x01, 4)


async def test_corrupt_state_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = settings(tmp_path).state_file
    path.parent.mkdir(parents=True)
    for text in ("{not json", '{"version": 1, "elements": [{"address": 1024}]}', "[]"):
        path.write_text(text)
        with pytest.raises(ValueError, match=str(path)):
            LibraryStore.open(settings(tmp_path), tmp_path / "lib", (tmp_path,))


async def test_moves_are_one_at_a_time(tmp_path: Path) -> None:
    device, drives = changer(tmp_path)
    outcomes: list[Outcome] = []

    async def one(cdb: bytes) -> None:
        outcomes.append(await run_cdb(device, cdb))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, move(S0, D0))
        nursery.start_soon(one, move(S0, D1))
    assert sorted(o.error is None for o in outcomes) == [False, True]
    assert (drives["t0"].loaded is None) != (drives["t1"].loaded is None)


def _walk(data: bytes) -> list[tuple[int, int, int]]:
    """(page type, descriptor length, address) of every descriptor, checking framing."""
    out = []
    assert int.from_bytes(data[5:8], "big") == len(data) - 8
    at = 8
    while at < len(data):
        kind, length = data[at], struct.unpack_from(">H", data, at + 2)[0]
        size = int.from_bytes(data[at + 5 : at + 8], "big")
        assert size % length == 0 and at + 8 + size <= len(data)
        for d in range(at + 8, at + 8 + size, length):
            out.append((kind, length, struct.unpack_from(">H", data, d)[0]))
        at += 8 + size
    return out


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(list(ElementType)),
    start=st.integers(0, 0xFFFF),
    count=st.integers(0, 0xFFFF),
    voltag=st.booleans(),
    dvcid=st.booleans(),
    slots=st.integers(1, 40),
    mail=st.integers(0, 4),
)
def test_element_status_framing_holds_for_any_request(
    kind: ElementType, start: int, count: int, voltag: bool, dvcid: bool, slots: int, mail: int
) -> None:
    library = Library(LibraryLayout(drives=("t0", "t1", "t2"), slots=slots, mail_slots=mail))
    data, reported = element_status(
        library, kind, start, count, voltag, dvcid, lambda e: (True, b"V" * 50)
    )
    walked = _walk(data)
    for limit in (0, 7, 8, 9, 20, 100, len(data), len(data) + 5):
        cut, _ = element_status(library, kind, start, count, voltag, dvcid,
                                lambda e: (True, b"V" * 50), limit)  # fmt: skip
        assert cut == data[:limit]  # rendered only as far as asked, same bytes
    wanted = [e.address for e in library.elements(kind) if e.address >= start][:count]
    assert [a for *_, a in walked] == wanted and reported == len(wanted)
    assert struct.unpack_from(">HH", data) == (wanted[0] if wanted else 0, len(wanted))
    for page_kind, length, _ in walked:
        base = 12 + (36 if voltag else 0)
        assert length == base + (44 if dvcid and page_kind == ElementType.DATA_TRANSFER else 0)


_OPCODES = sorted({spec.opcode for spec in ChangerDevice.table.specs})


@hypothesis_settings(max_examples=120, deadline=None)
@given(
    opcode=st.sampled_from(_OPCODES),
    body=st.binary(min_size=15, max_size=15),
    addresses=st.lists(st.sampled_from([0, 1, 0x10, D0, D1, S0, S1, S2, 0x7777, 0xFFFF]),
                       min_size=4, max_size=4),
)
def test_any_cdb_answers_with_a_status_and_keeps_each_cartridge_once(
    tmp_path_factory: pytest.TempPathFactory, opcode: int, body: bytes, addresses: list[int]
) -> None:
    """Hostile CDBs (random fields, addresses that exist or not, drives that
    refuse): every command ends GOOD or with sense, never an exception, and no
    cartridge is ever lost or duplicated."""
    device, drives = changer(tmp_path_factory.mktemp("lib"))
    drives["t1"].up = False
    cdb = bytearray(bytes((opcode,)) + body)
    for i, address in enumerate(addresses):  # the address fields of every SMC command
        struct.pack_into(">H", cdb, 2 + 2 * i, address)
    spec_length = next(s.cdb_length for s in ChangerDevice.table.specs if s.opcode == opcode)

    async def main() -> None:
        out = await run_cdb(device, bytes(cdb[:spec_length]))
        assert out.error is None or out.sense is not None or out.status != 0
        held = sorted(e.barcode or "" for e in device.library.elements() if e.full)
        assert held == ["A00001", "A00002"]

    trio.run(main)


async def test_restore_makes_the_drives_hold_what_the_inventory_says(tmp_path: Path) -> None:
    device, drives = changer(tmp_path)
    assert (await run_cdb(device, move(S0, D0))).error is None
    # a changer crash between t1's load and the inventory's write: t1 holds
    # A00002, which the inventory still puts in slot 3; t0 lost its cartridge
    drives["t1"].loaded = device.state.cartridge_path("A00002")
    drives["t0"].loaded = None
    await device.restore_drives()
    assert drives["t1"].loaded is None and drives["t1"].log[-1] == "unload A00002"
    assert drives["t0"].loaded == device.state.cartridge_path("A00001")
    # a drive already holding its cartridge is left alone; a foreign medium too
    drives["t0"].log.clear()
    drives["t1"].loaded = Path("/elsewhere/tape")
    await device.restore_drives()
    assert drives["t0"].log == [] and drives["t1"].loaded == Path("/elsewhere/tape")


async def test_an_abort_waits_for_the_robot(tmp_path: Path) -> None:
    """Cancelling MOVE MEDIUM (ABORT TASK, LUN RESET) while the drive loads
    leaves no half-move: the load, the inventory and its file all agree."""
    device, drives = changer(tmp_path)
    slow = drives["t0"]
    original = slow.load

    async def slow_load(cartridge: Path) -> None:
        await trio.sleep(0.2)
        await original(cartridge)

    slow.load = slow_load  # type: ignore[method-assign]
    began = trio.current_time()
    with trio.move_on_after(0.05):
        await run_cdb(device, move(S0, D0))
    assert trio.current_time() - began >= 0.2  # the cancel waited for the robot
    assert slow.loaded is not None and device.library.where("A00001").address == D0  # type: ignore[union-attr]
    saved = LibraryStore.open(settings(tmp_path), tmp_path / "lib", (tmp_path,))
    assert saved.library.where("A00001").address == D0  # type: ignore[union-attr]


async def test_import_adopts_a_cartridge_copied_into_the_directory(tmp_path: Path) -> None:
    device, _ = changer(tmp_path)
    create_blank(tmp_path / "lib" / "COPY01", "COPY01", 2 * MIB)
    element = await device.operate("import", "COPY01")
    assert element is not None and element.address == MAIL
    (tmp_path / "lib" / "JUNK01").mkdir()
    with pytest.raises(OperatorRefused, match="cannot be used"):
        await device.operate("import", "JUNK01")
    create_blank(tmp_path / "lib" / "WRONG1", "OTHER1", 2 * MIB)
    with pytest.raises(OperatorRefused, match="holds cartridge 'OTHER1'"):
        await device.operate("import", "WRONG1")
    with pytest.raises(OperatorRefused, match="create it first"):
        await device.operate("import", "NOPE01")
    assert "JUNK01" not in device.library.shelf and not device.library.knows("WRONG1")
