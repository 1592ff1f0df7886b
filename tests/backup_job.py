"""The tape library's end-to-end backup job, one script for every library the
tests drive: pyscst's own ``vchanger`` + ``vtape`` (tests/e2e/test_vchanger.py)
and tgt's ``smc`` changer + ``ssc`` drives exported through pyscst
``passthrough`` devices (tests/e2e/test_passthrough_library.py).

The job: the changer loads a cartridge into drive 0; tar archives are written
as variable 256 KiB records with a filemark after each; rewind, SPACE to the
third file and read it back; go to the second file and read it back; the
application unloads, the changer carries the cartridge to drive 1 and every
archive reads back there; the changer's inventory shows where the cartridges
are. What a library cannot do is said by :class:`Library` and replaced by the
nearest thing it can (tgt's quirks: docs/tape.md).
"""

from __future__ import annotations

import struct

import attrs

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, sense_triplet
from tests.e2e.test_vtape import RECORD, REWIND, c6, read_position, write_file

GOOD, CHECK = 0, 2
MEDIUM_CHANGED = (0x6, 0x28, 0x00)
NO_MEDIUM = (0x2, 0x3A, 0x00)
FILEMARK, ILI = 0x80, 0x20
STORAGE, DATA_TRANSFER = 2, 4


def move(src: int, dst: int) -> bytes:
    """MOVE MEDIUM from element ``src`` to ``dst`` (picker 0: the default)."""
    return struct.pack(">BBHHHHBB", 0xA5, 0, 0, src, dst, 0, 0, 0)


def res(kind: int = 0, start: int = 0, count: int = 0xFFFF, allocation: int = 0xFFFF) -> bytes:
    """READ ELEMENT STATUS with VOLTAG of element type ``kind`` (0: all)."""
    return (struct.pack(">BBHHB", 0xB8, 0x10 | kind, start, count, 1)
            + allocation.to_bytes(3, "big") + b"\x00\x00")  # fmt: skip


def tags(data: bytes, cut_short: bool = False) -> dict[int, str]:
    """READ ELEMENT STATUS (VOLTAG) -> address: barcode of every full element.
    ``cut_short``: the changer may send less than its pages announce (tgt's
    smc always drops its last descriptor): read the whole descriptors only."""
    out: dict[int, str] = {}
    at = 8
    while at < len(data):
        length = struct.unpack_from(">H", data, at + 2)[0]
        size = int.from_bytes(data[at + 5 : at + 8], "big")
        end = at + 8 + size
        if cut_short:
            end = min(end, len(data))
        else:
            assert end <= len(data), f"page at {at} announces {size} bytes, {len(data)} sent"
        for d in range(at + 8, end - length + 1, length):
            if data[d + 2] & 0x01:
                out[struct.unpack_from(">H", data, d)[0]] = data[d + 12 : d + 44].decode().strip()
        at += 8 + size
    return out


@attrs.frozen
class Library:
    """Where the job finds a library, and what it can do."""

    #: the changer's LUN and the two drives' LUNs
    changer: int
    drives: tuple[int, int]
    #: element addresses: the first cartridge's slot, the two drives' elements
    slot: int
    drive_elements: tuple[int, int]
    #: the drives answer READ POSITION with the logical object and file number
    #: and know LOCATE (tgt's ssc: zeros, and LOCATE is 20/00)
    positions: bool = True
    #: a cartridge the changer loads raises NOT READY TO READY CHANGE on the
    #: drive (tgt's smc: the drive's initiators hear nothing)
    announces_load: bool = True
    #: READ ELEMENT STATUS may send less than it announces (tgt's smc)
    cuts_reports: bool = False
    #: the READ(6) length of a restore: tgt's ssc sends only (request - record)
    #: bytes of a shorter record (and the record's length as the residual), so
    #: it is asked for twice the longest record
    read_size: int = RECORD


async def read_archive(ini: Initiator, lun: int, size: int = RECORD) -> bytes:
    """Read variable records until the filemark: READ(6) of ``size`` bytes
    without SILI, a shorter record's length from ILI's INFORMATION (the
    residue)."""
    out = bytearray()
    while True:
        r = await ini.execute(lun, c6(0x08, 0, size), read_length=size)
        if r.status == GOOD:
            out += r.data
            continue
        assert r.status == CHECK and len(r.sense) >= 14, (r.status, bytes(r.sense))
        flags = r.sense[2]
        if flags & FILEMARK:
            assert sense_triplet(r.sense) == (0x0, 0x00, 0x01)
            return bytes(out)
        assert flags & ILI and r.sense[0] & 0x80, sense_triplet(r.sense)
        residue = struct.unpack_from(">i", r.sense, 3)[0]
        assert 0 < residue < size
        assert len(r.data) >= size - residue, f"{len(r.data)} bytes of a {size - residue} record"
        out += r.data[: size - residue]


async def inventory(ini: Initiator, lib: Library) -> dict[int, str]:
    """Barcode by element address of the full slots and drives."""
    out: dict[int, str] = {}
    for kind in (STORAGE, DATA_TRANSFER):
        r = await ini.execute(lib.changer, res(kind), read_length=0xFFFF)
        assert r.status == GOOD and r.data is not None, sense_triplet(r.sense)
        out.update(tags(bytes(r.data), cut_short=lib.cuts_reports))
    return out


async def _loaded(ini: Initiator, lun: int, lib: Library) -> None:
    """The drive the changer just loaded: its first TEST UNIT READY."""
    r = await ini.execute(lun, TUR)
    if lib.announces_load:
        assert sense_triplet(r.sense) == MEDIUM_CHANGED
    else:
        assert r.status == GOOD, sense_triplet(r.sense)


async def _go_to_file(ini: Initiator, lun: int, lib: Library, file: int, start: int) -> None:
    """Position at the start of ``file`` (a logical object ``start``): LOCATE
    where the drive knows it, else rewind and SPACE filemarks."""
    if lib.positions:
        locate = bytes((0x2B, 0, 0)) + struct.pack(">I", start) + bytes(3)
        assert (await ini.execute(lun, locate)).status == GOOD
        assert await read_position(ini, lun) == (0, start, file)
        return
    assert (await ini.execute(lun, REWIND)).status == GOOD
    if file:
        assert (await ini.execute(lun, c6(0x11, 0x01, file))).status == GOOD


def _records(data: bytes) -> int:
    return -(-len(data) // RECORD)


async def backup_job(ini: Initiator, lib: Library, archives: list[bytes]) -> None:
    """The job (module docstring); the cartridge in ``lib.slot`` ends in drive 1."""
    t0, t1 = lib.drives
    d0, d1 = lib.drive_elements
    r = await ini.execute(lib.changer, move(lib.slot, d0))
    assert r.status == GOOD, sense_triplet(r.sense)
    await _loaded(ini, t0, lib)
    starts: list[int] = []
    for data in archives:
        start = sum(_records(a) + 1 for a in archives[: len(starts)])  # and a filemark
        if lib.positions:
            assert (await read_position(ini, t0))[1] == start
        starts.append(start)
        assert await write_file(ini, t0, data) == _records(data)
    assert (await ini.execute(t0, REWIND)).status == GOOD
    assert (await ini.execute(t0, c6(0x11, 0x01, 2))).status == GOOD  # SPACE 2 filemarks
    if lib.positions:
        assert await read_position(ini, t0) == (0, starts[2], 2)
    assert await read_archive(ini, t0, lib.read_size) == archives[2]
    await _go_to_file(ini, t0, lib, 1, starts[1])
    assert await read_archive(ini, t0, lib.read_size) == archives[1]
    # the application unloads, the changer carries the cartridge to drive 1
    assert (await ini.execute(t0, c6(0x1B, 0, 0))).status == GOOD  # LOAD UNLOAD: unload
    r = await ini.execute(lib.changer, move(d0, d1))
    assert r.status == GOOD, sense_triplet(r.sense)
    assert sense_triplet((await ini.execute(t0, TUR)).sense) == NO_MEDIUM
    await _loaded(ini, t1, lib)
    if lib.positions:
        assert await read_position(ini, t1) == (0, 0, 0)
    for data in archives:
        assert await read_archive(ini, t1, lib.read_size) == data
