"""Tape cartridges on disk: the format round-trips, damage is contained,
and a drive loads, unloads and ejects them (devices/tape_cartridge.py,
devices/tape.py)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyscst.devices.medium import MediumLocked
from pyscst.devices.tape import TapeDevice
from pyscst.devices.tape_cartridge import (
    HEADER_SIZE,
    CartridgeError,
    Kind,
    Partition,
    TapeCartridge,
    create_blank,
    open_cartridge,
    set_write_protect,
)
from pyscst.scsi.sense import Asc, SenseKey
from tests.fakes import DEFAULT_NEXUS

MIB = 1 << 20


def blank(tmp_path: Path, barcode: str = "A00001L8", **kw: object) -> Path:
    return create_blank(tmp_path / barcode, barcode, 8 * MIB, **kw)  # type: ignore[arg-type]


def test_objects_survive_reopen_and_index_is_rebuilt(tmp_path: Path) -> None:
    path = blank(tmp_path)
    cart = open_cartridge(path)
    p = cart.partitions[0]
    p.append(Kind.RECORD, b"a" * 100)
    p.append(Kind.FILEMARK)
    p.append(Kind.RECORD, b"b" * 7)
    cart.close_now()
    again = open_cartridge(path)
    q = again.partitions[0]
    assert q.eod == 3 and q.damaged == 0
    assert [q.length(i) for i in range(3)] == [100, -1, 7]
    assert q.files_before(2) == 1 and q.filemark_after(0) == 1
    buf = bytearray(7)
    assert q.read(2, memoryview(buf)) == 7 and bytes(buf) == b"b" * 7
    assert q.end == 3 * HEADER_SIZE + 107
    again.close_now()


def test_truncated_tail_is_a_damaged_region_not_a_crash(tmp_path: Path) -> None:
    path = blank(tmp_path)
    cart = open_cartridge(path)
    cart.partitions[0].append(Kind.RECORD, b"x" * 1000)
    cart.partitions[0].append(Kind.RECORD, b"y" * 1000)
    cart.close_now()
    records = path / "p0.records"
    os.truncate(records, records.stat().st_size - 10)
    cart = open_cartridge(path)
    p = cart.partitions[0]
    assert p.eod == 1 and p.damaged == HEADER_SIZE + 990
    p.truncate(1)  # writing at EOD replaces the damage
    assert p.damaged == 0 and records.stat().st_size == HEADER_SIZE + 1000
    cart.close_now()


def test_corrupt_header_in_the_middle_stops_the_scan(tmp_path: Path) -> None:
    path = blank(tmp_path)
    cart = open_cartridge(path)
    for _ in range(3):
        cart.partitions[0].append(Kind.RECORD, b"z" * 10)
    cart.close_now()
    with open(path / "p0.records", "r+b") as f:
        f.seek(HEADER_SIZE + 10 + 5)
        f.write(b"\xff")
    cart = open_cartridge(path)
    assert cart.partitions[0].eod == 1 and cart.partitions[0].damaged > 0
    cart.close_now()


def test_bad_metadata_and_versions_are_refused(tmp_path: Path) -> None:
    path = blank(tmp_path)
    meta = json.loads((path / "cartridge.json").read_text())
    meta["version"] = 99
    (path / "cartridge.json").write_text(json.dumps(meta))
    with pytest.raises(CartridgeError, match="version 99"):
        open_cartridge(path)
    (path / "cartridge.json").write_text("{not json")
    with pytest.raises(CartridgeError):
        open_cartridge(path)
    with pytest.raises(CartridgeError):
        open_cartridge(tmp_path / "nothing-here")
    with pytest.raises(CartridgeError, match="barcode"):
        create_blank(tmp_path / "x", "bad barcode!", 8 * MIB)
    with pytest.raises(CartridgeError, match="exists"):
        create_blank(path, "A00001L8", 8 * MIB)


def test_write_protect_and_worm_flags_persist(tmp_path: Path) -> None:
    path = blank(tmp_path, worm=True)
    set_write_protect(path, True)
    cart = open_cartridge(path)
    assert cart.worm and cart.write_protected and not cart.read_only  # the tab, not the files
    cart.close_now()
    os.chmod(path / "p0.records", 0o444)
    if os.geteuid() != 0:  # root writes anyway: the fallback is untestable as root
        cart = open_cartridge(path)
        assert cart.read_only and cart.write_protected
        cart.close_now()
    ro = open_cartridge(path, read_only=True)
    assert ro.read_only and ro.write_protected
    ro.close_now()


def test_drive_load_unload_eject_and_mam_load_count(tmp_path: Path) -> None:
    path = blank(tmp_path)
    drive = TapeDevice("t0", None)
    assert not drive.medium.present
    err = drive.not_ready_sense()
    assert err is not None and (err.asc, err.ascq) == Asc.MEDIUM_NOT_PRESENT.value
    assert drive.load(open_cartridge(path))
    assert drive.cartridge is not None and drive.cartridge.mam["load_count"] == 1
    assert drive.not_ready_sense() is None
    drive.unload()
    err = drive.not_ready_sense()
    assert err is not None and err.key == SenseKey.NOT_READY
    assert (err.asc, err.ascq) == Asc.LUN_NOT_READY_INITIALIZING_COMMAND_REQUIRED.value
    assert drive.load() and not drive.load()  # threads it again, once
    drive.medium.set_prevent(DEFAULT_NEXUS, True)
    with pytest.raises(MediumLocked):
        drive.eject()
    drive.medium.set_prevent(DEFAULT_NEXUS, False)
    cart = drive.cartridge
    assert drive.eject() and cart.closed and drive.cartridge is None
    assert not drive.eject()
    again = open_cartridge(path)
    assert again.mam["load_count"] == 1  # saved on load
    assert drive.load(again) and again.mam["load_count"] == 2
    moved = drive.take_cartridge()
    assert moved is again and not moved.closed and drive.cartridge is None
    moved.close_now()


def test_load_refuses_what_is_not_a_cartridge() -> None:
    from pyscst.devices.stores import MemoryStore

    drive = TapeDevice("t0", None)
    with pytest.raises(ValueError, match="not a tape cartridge"):
        drive.load(MemoryStore(4096))
    with pytest.raises(ValueError, match="no cartridge"):
        drive.load()


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, int]]:
    ops = draw(st.lists(st.tuples(st.sampled_from(["record", "filemark", "truncate"]),
                                  st.integers(0, 3000)), max_size=25))  # fmt: skip
    return ops


@settings(max_examples=60, deadline=None)
@given(operations(), st.integers(0, 1 << 30), st.integers(0, 255), st.booleans())
def test_reopen_matches_a_model_and_damage_only_shortens(
    ops: list[tuple[str, int]], where: int, byte: int, in_place: bool
) -> None:
    """Any sequence of appends and truncations reads back the same after a
    reopen, truncating or overwriting in place (end-of-data markers, stale
    bytes after them); one damaged byte anywhere, stale bytes included,
    never raises and keeps a prefix."""
    with tempfile.TemporaryDirectory() as tmp:
        path = create_blank(Path(tmp) / "P", "P00001L8", 8 * MIB)
        cart = open_cartridge(path)
        p = cart.partitions[0]
        p.in_place = in_place
        model: list[int] = []  # payload length per object, -1 a filemark
        for op, n in ops:
            if op == "record":
                p.append(Kind.RECORD, bytes((n % 256,)) * n)
                model.append(n)
            elif op == "filemark":
                p.append(Kind.FILEMARK)
                model.append(-1)
            else:
                cut = n % (len(model) + 1)
                p.truncate(cut)
                del model[cut:]
        cart.close_now()
        again = open_cartridge(path)
        q = again.partitions[0]
        assert [q.length(i) for i in range(q.eod)] == model and q.damaged == 0
        assert list(q.filemarks) == [i for i, n in enumerate(model) if n < 0]
        again.close_now()
        size = (path / "p0.records").stat().st_size
        if size:
            with open(path / "p0.records", "r+b") as f:
                f.seek(where % size)
                old = f.read(1)
                f.seek(where % size)
                f.write(bytes((byte,)))
            damaged = open_cartridge(path)
            d = damaged.partitions[0]
            lengths = [d.length(i) for i in range(d.eod)]
            if old != bytes((byte,)):
                assert lengths == model[: d.eod]  # a prefix survives, never garbage
            damaged.close_now()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a tmpfs at /dev/shm")
def test_a_record_on_tmpfs_is_read_inline_not_by_a_thread() -> None:
    """tmpfs refuses RWF_NOWAIT (EOPNOTSUPP), yet never waits for a disk: a
    record up to the inline limit reads at once (before, every READ hopped to
    a worker thread); a larger one still goes to a thread."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as where:
        cart = open_cartridge(blank(Path(where)))
        try:
            p = cart.partitions[0]
            assert p.memory_backed
            p.append(Kind.RECORD, b"r" * 256 * 1024)
            p.append(Kind.RECORD, b"s" * (256 * 1024 + 1))
            buf = bytearray(300 * 1024)
            assert p.read(0, memoryview(buf), nowait=True) == 256 * 1024
            assert bytes(buf[: 256 * 1024]) == b"r" * 256 * 1024
            assert p.read(1, memoryview(buf), nowait=True) is None
            assert p.read(1, memoryview(buf)) == 256 * 1024 + 1
        finally:
            cart.close_now()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a tmpfs at /dev/shm")
def test_read_inline_gives_new_bytes_on_tmpfs_only_up_to_the_inline_limit(
    tmp_path: Path,
) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as where:
        cart = open_cartridge(blank(Path(where)))
        try:
            p = cart.partitions[0]
            p.append(Kind.RECORD, b"r" * 1000)
            p.append(Kind.FILEMARK, b"")
            p.append(Kind.RECORD, b"s" * (256 * 1024 + 1))
            assert p.read_inline(0, 1 << 20) == b"r" * 1000
            assert p.read_inline(0, 10) == b"r" * 10  # (a short READ: the head)
            assert p.read_inline(1, 1000) == b""  # a filemark has no payload
            assert p.read_inline(2, 1 << 20) is None  # over the limit: read()
            assert p.read_inline(2, 256 * 1024) == b"s" * 256 * 1024
            os.ftruncate(p.fd, p.offsets[0] + HEADER_SIZE + 10)  # damage under it
            with pytest.raises(OSError):
                p.read_inline(0, 1000)
        finally:
            cart.close_now()
    cart = open_cartridge(blank(tmp_path))
    try:
        p = cart.partitions[0]
        p.append(Kind.RECORD, b"r" * 10)
        if not p.memory_backed:
            assert p.read_inline(0, 10) is None  # a disk filesystem: read()
    finally:
        cart.close_now()


def test_a_cartridge_on_a_disk_filesystem_is_not_memory_backed(tmp_path: Path) -> None:
    from pyscst.devices.stores import MEMORY_FILESYSTEMS, filesystem_type

    cart = open_cartridge(blank(tmp_path))
    try:
        expected = filesystem_type(str(tmp_path)) in MEMORY_FILESYSTEMS
        assert cart.partitions[0].memory_backed is expected
    finally:
        cart.close_now()


def _in_place(tmp_path: Path) -> tuple[Path, TapeCartridge]:
    path = blank(tmp_path)
    cart = open_cartridge(path)
    cart.partitions[0].in_place = True  # (what a version 2 cartridge on tmpfs does)
    return path, cart


def test_in_place_rewrite_keeps_the_file_and_ends_with_a_marker(tmp_path: Path) -> None:
    """Rewriting from BOP overwrites the pages the file has (no truncation,
    no new pages): a marker ends the objects, and after a reopen the stale
    records behind it stay gone, though they have the expected numbers."""
    path, cart = _in_place(tmp_path)
    p = cart.partitions[0]
    for i in range(5):
        p.append(Kind.RECORD, bytes((i,)) * 1000)
    records = path / "p0.records"
    size = records.stat().st_size
    p.truncate(0)
    assert records.stat().st_size == size and p.eod == 0 and p.file_size == size
    p.append(Kind.RECORD, b"N" * 1000)  # same length: the stale record 1 lines up
    p.append(Kind.FILEMARK)
    assert records.stat().st_size == size
    cart.close_now()
    again = open_cartridge(path)
    q = again.partitions[0]
    assert q.eod == 2 and q.damaged == 0 and [q.length(i) for i in range(2)] == [1000, -1]
    assert q.read_inline(0, 1000) in (None, b"N" * 1000)
    buf = bytearray(1000)
    assert q.read(0, memoryview(buf)) == 1000 and bytes(buf) == b"N" * 1000
    again.close_now()


def _back_to_one_record(p: Partition) -> None:
    """Two records of 100 bytes, then back to the first: the second is stale."""
    p.append(Kind.RECORD, b"a" * 100)
    p.append(Kind.RECORD, b"b" * 100)
    p.truncate(1)


def test_in_place_write_past_the_stale_bytes_leaves_no_marker(tmp_path: Path) -> None:
    path, cart = _in_place(tmp_path)
    p = cart.partitions[0]
    _back_to_one_record(p)
    p.append(Kind.RECORD, b"c" * 5000)  # covers the stale record and more
    assert p.file_size == p.end == (path / "p0.records").stat().st_size
    p.append(Kind.RECORD, b"d" * 10)  # an ordinary append again
    cart.close_now()
    again = open_cartridge(path)
    assert [again.partitions[0].length(i) for i in range(3)] == [100, 5000, 10]
    again.close_now()


def test_a_crash_inside_an_in_place_write_never_revives_stale_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 between the two steps of a write over stale bytes (the
    payload and the next marker in, the header not): the reopened partition
    ends where it ended before the write, not at the stale records that line
    up after it with the right numbers."""
    path, cart = _in_place(tmp_path)
    p = cart.partitions[0]
    for i in range(4):
        p.append(Kind.RECORD, bytes((65 + i,)) * 500)
    p.truncate(1)

    class Killed(BaseException):
        pass

    def killed(*args: object) -> int:
        raise Killed

    monkeypatch.setattr(os, "pwrite", killed)
    with pytest.raises(Killed):
        p.append(Kind.RECORD, b"X" * 500)
    monkeypatch.undo()
    os.close(p.fd)  # (the process died: nothing more is written)
    again = open_cartridge(path)
    q = again.partitions[0]
    assert q.eod == 1 and q.damaged == 0
    assert q.read(0, memoryview(buf := bytearray(500))) == 500 and bytes(buf) == b"A" * 500
    q.append(Kind.RECORD, b"Y" * 20)
    again.close_now()
    last = open_cartridge(path)
    assert [last.partitions[0].length(i) for i in range(last.partitions[0].eod)] == [500, 20]
    last.close_now()


def test_a_torn_in_place_header_ends_the_objects_there(tmp_path: Path) -> None:
    """The header written last, torn (half of it over the old marker): its
    CRC fails and the objects end before it, stale records unreachable."""
    path, cart = _in_place(tmp_path)
    p = cart.partitions[0]
    for _ in range(3):
        p.append(Kind.RECORD, b"s" * 64)
    p.truncate(1)
    at = p.end
    p.append(Kind.RECORD, b"t" * 64)
    cart.close_now()
    with open(path / "p0.records", "r+b") as f:
        f.seek(at + 8)
        f.write(b"\0" * 8)  # the second half of the header never made it
    again = open_cartridge(path)
    assert again.partitions[0].eod == 1
    again.close_now()


def test_version_1_cartridges_are_read_and_never_get_markers(tmp_path: Path) -> None:
    """A version 1 reader would take a marker for damage: a version 1
    cartridge is still truncated, even on a memory filesystem."""
    path = blank(tmp_path)
    meta = json.loads((path / "cartridge.json").read_text())
    assert meta["version"] == 2
    meta["version"] = 1
    (path / "cartridge.json").write_text(json.dumps(meta))
    where = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        moved = Path(tmp) / "v1"
        shutil.copytree(path, moved)
        cart = open_cartridge(moved)
        p = cart.partitions[0]
        assert not p.in_place
        _back_to_one_record(p)
        assert (moved / "p0.records").stat().st_size == HEADER_SIZE + 100
        cart.close_now()


def test_erase_cuts_the_stale_bytes_off(tmp_path: Path) -> None:
    path, cart = _in_place(tmp_path)
    p = cart.partitions[0]
    _back_to_one_record(p)
    assert (path / "p0.records").stat().st_size > p.end
    p.truncate(1, physical=True)
    assert (path / "p0.records").stat().st_size == p.end == p.file_size
    p.append(Kind.RECORD, b"c" * 100)
    p.truncate(0, physical=True)
    assert (path / "p0.records").stat().st_size == 0
    cart.close_now()
