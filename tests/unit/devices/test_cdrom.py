"""The CD-ROM device type without a daemon: MMC answers, their edge fields,
and the medium (empty drive, image swap, media events, prevention)."""

from __future__ import annotations

import struct

import pytest

from pyscst.devices.cdrom import EVENT_MEDIA_REMOVAL, EVENT_NEW_MEDIA, CdromDevice
from pyscst.devices.medium import MediumLocked
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.sense import Asc, SenseKey, Status
from tests.fakes import DEFAULT_NEXUS, FakeContext, run_cdb

SECTOR = 2048


def cd(sectors: int = 100) -> CdromDevice:
    return CdromDevice("cd", MemoryStore(sectors * SECTOR))


def gesn(classes: int = 0x10, polled: int = 1, allocation: int = 8) -> bytes:
    return struct.pack(">BBBBBBBHB", 0x4A, polled, 0, 0, classes, 0, 0, allocation, 0)


def get_configuration(rt: int, start: int = 0, allocation: int = 255) -> bytes:
    return struct.pack(">BBHBBBHB", 0x46, rt, start, 0, 0, 0, allocation, 0)


async def test_toc_lead_out_only_and_allocation_truncation() -> None:
    d = cd()
    out = await run_cdb(d, bytes((0x43, 0, 0, 0, 0, 0, 0xAA, 0, 255, 0)))
    assert out.data == struct.pack(">HBB", 10, 1, 1) + bytes((0, 0x14, 0xAA, 0)) + struct.pack(
        ">I", 100)
    out = await run_cdb(d, bytes((0x43, 0, 0, 0, 0, 0, 0, 0, 2, 0)))
    assert out.data == struct.pack(">H", 18)  # truncated to the allocation length
    out = await run_cdb(d, bytes((0x43, 0x01, 0, 0, 0, 0, 0, 0, 255, 0)))  # reserved bit
    assert out.sense is not None and out.sense.field_pointer is not None


async def test_get_configuration_current_features_follow_the_medium() -> None:
    d = cd()
    full = await run_cdb(d, get_configuration(1))
    d.eject()
    empty = await run_cdb(d, get_configuration(1))
    assert full.data is not None and empty.data is not None
    codes = [struct.unpack_from(">H", full.data, 8 + i)[0] for i in (0, 12, 24, 32, 40)]
    assert codes == [0x0000, 0x0001, 0x0002, 0x0003, 0x0010]
    assert len(empty.data) == len(full.data) - 12  # Random Readable is not current
    assert struct.unpack_from(">H", empty.data, 6)[0] == 0  # no current profile
    big = CdromDevice("dvd", MemoryStore(400_000 * SECTOR))
    out = await run_cdb(big, get_configuration(0))
    assert out.data is not None and struct.unpack_from(">H", out.data, 6)[0] == 0x0010
    out = await run_cdb(d, get_configuration(2, start=0x0042))  # no such feature
    assert out.data == struct.pack(">IHH", 4, 0, 0)


async def test_gesn_reports_media_events_once_and_nea_for_other_classes() -> None:
    d = cd()
    out = await run_cdb(d, gesn(classes=0x02))  # operational change only: not supported
    assert out.data == struct.pack(">HBB", 2, 0x80, 0x10)
    d.eject()
    out = await run_cdb(d, gesn())
    assert out.data is not None and out.data[4:6] == bytes((EVENT_MEDIA_REMOVAL, 0x01))
    d.load()
    out = await run_cdb(d, gesn())
    assert out.data is not None and out.data[4:6] == bytes((EVENT_NEW_MEDIA, 0x02))
    out = await run_cdb(d, gesn())
    assert out.data is not None and out.data[4] == 0
    out = await run_cdb(d, gesn(polled=0))
    assert out.sense is not None and out.sense.key == SenseKey.ILLEGAL_REQUEST


async def test_image_swap_respects_prevention_and_counts_as_a_change() -> None:
    d = cd()
    other = MemoryStore(10 * SECTOR)
    await run_cdb(d, bytes((0x1E, 0, 0, 0, 1, 0)))
    with pytest.raises(MediumLocked):
        d.load(other)
    assert d.blocks == 100
    d.medium.nexus_lost(DEFAULT_NEXUS)
    assert d.load(other) and d.blocks == 10
    out = await run_cdb(d, bytes((0x25,)) + bytes(9))
    assert out.data == struct.pack(">II", 9, SECTOR)


async def test_empty_drive_and_start_stop() -> None:
    d = CdromDevice("empty", None)
    out = await run_cdb(d, bytes((0x00,)) + bytes(5))
    assert out.sense is not None and (out.sense.asc, out.sense.ascq) == Asc.MEDIUM_NOT_PRESENT.value
    out = await run_cdb(d, bytes((0x1B, 0, 0, 0, 0x03, 0)))  # load: nothing to load
    assert out.sense is not None and out.sense.key == SenseKey.NOT_READY
    with pytest.raises(ValueError, match="no image"):
        d.load()
    ctx = FakeContext()
    loaded = cd()
    loaded.eject()
    out = await run_cdb(loaded, bytes((0x1B, 0, 0, 0, 0x03, 0)), ctx=ctx)
    assert out.status == Status.GOOD and loaded.medium.present
    out = await run_cdb(loaded, bytes((0x1B, 0, 0, 0, 0x01, 0)))  # START without LOEJ
    assert out.status == Status.GOOD and loaded.medium.present
    with pytest.raises(ValueError):
        await loaded.resize(1 << 20)
