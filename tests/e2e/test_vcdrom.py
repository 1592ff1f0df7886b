"""The virtual CD-ROM (``vcdrom``) end to end: the real daemon, a real initiator,
``pyscst admin``, and qemu-img reading the image back byte for byte.

An image is any file of 2048-byte sectors (random bytes here: what is checked
is that the initiator gets the file's bytes, and the MMC answers about it).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10, sense_triplet, write10
from tests.conformance.test_qemu_img import _qemu_img_with_iscsi
from tests.daemon import RunningDaemon, running_daemon_async
from tests.e2e.test_admin_cli import admin_for
from tests.e2e.test_removable import after_restart, crash_device
from tests.e2e.test_removable import login as removable_login

TARGET = "iqn.2026-11.org.pyscst:cdrom"
LUNS = ({"lun": 0, "device": "cd0"}, {"lun": 1, "device": "cd1"})
SECTOR = 2048
SECTORS = 300
GOOD, CHECK = 0, 2
MEDIUM_NOT_PRESENT = (0x2, 0x3A, 0x00)
MEDIUM_CHANGED = (0x6, 0x28, 0x00)
INVALID_OPCODE = (0x5, 0x20, 0x00)
REMOVAL_PREVENTED = (0x5, 0x53, 0x02)
INQUIRY = bytes((0x12, 0, 0, 0, 96, 0))
READ_CAPACITY_10 = bytes((0x25,)) + bytes(9)
PREVENT = bytes((0x1E, 0, 0, 0, 1, 0))
ALLOW = bytes((0x1E, 0, 0, 0, 0, 0))
EJECT = bytes((0x1B, 0, 0, 0, 0x02, 0))
LOAD = bytes((0x1B, 0, 0, 0, 0x03, 0))


def read_toc(msf: bool = False, fmt: int = 0, track: int = 0) -> bytes:
    return bytes((0x43, 0x02 if msf else 0, fmt, 0, 0, 0, track, 0, 255, 0))


def get_configuration(rt: int = 0, start: int = 0) -> bytes:
    return struct.pack(">BBHBBBHB", 0x46, rt, start, 0, 0, 0, 255, 0)


GESN = bytes((0x4A, 0x01, 0, 0, 0x10, 0, 0, 0, 8, 0))  # polled, media class
DISC_INFO = bytes((0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0))
MECHANISM_STATUS = bytes((0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0))


def make_image(path: Path, sectors: int = SECTORS) -> bytes:
    data = os.urandom(sectors * SECTOR)
    path.write_bytes(data)
    return data


@asynccontextmanager
async def cdrom_daemon(tmp_path: Path) -> AsyncIterator[tuple[RunningDaemon, bytes, bytes]]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    first = make_image(state / "first.iso")
    second = make_image(state / "second.iso", 40)
    devices = {
        "cd0": {"handler": "vcdrom", "path": "first.iso"},
        "cd1": {"handler": "vcdrom"},  # an empty drive
    }
    async with running_daemon_async(tmp_path, target=TARGET, devices=devices, luns=LUNS) as d:
        yield d, first, second


def login(d: RunningDaemon, name: str) -> AbstractAsyncContextManager[Initiator]:
    return removable_login(d, name, TARGET)


async def test_cdrom_answers_mmc_and_serves_its_image(tmp_path: Path) -> None:
    async with cdrom_daemon(tmp_path) as (d, first, _), login(d, "iqn.2026-11.org.x:a") as ini:
        r = await ini.execute(0, INQUIRY, read_length=96)
        assert r.data is not None and r.data[0] == 0x05 and r.data[1] & 0x80
        r = await ini.execute(0, READ_CAPACITY_10, read_length=8)
        assert r.data == struct.pack(">II", SECTORS - 1, SECTOR)
        r = await ini.execute(0, read10(10, 4), read_length=4 * SECTOR)
        assert r.status == GOOD and r.data == first[10 * SECTOR : 14 * SECTOR]
        r = await ini.execute(0, bytes((0xA8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0)),
                              read_length=SECTOR)  # READ(12)
        assert r.data == first[:SECTOR]
        # read-only: nothing writes
        r = await ini.execute(0, write10(0), data_out=bytes(SECTOR))
        assert sense_triplet(r.sense) == INVALID_OPCODE
        r = await ini.execute(0, read10(SECTORS - 1, 2), read_length=2 * SECTOR)
        assert sense_triplet(r.sense) == (0x5, 0x21, 0x00)
        # TOC: track 1 at 0, lead-out at the end (LBA and MSF with its 2 s pre-gap)
        r = await ini.execute(0, read_toc(), read_length=255)
        assert r.data is not None and r.data[:4] == bytes((0, 18, 1, 1))
        assert r.data[4:12] == bytes((0, 0x14, 1, 0, 0, 0, 0, 0))
        assert r.data[12:20] == bytes((0, 0x14, 0xAA, 0)) + struct.pack(">I", SECTORS)
        r = await ini.execute(0, read_toc(msf=True), read_length=255)
        frames = SECTORS + 150
        assert r.data is not None and r.data[16:20] == bytes(
            (0, frames // 4500, frames // 75 % 60, frames % 75))
        r = await ini.execute(0, read_toc(fmt=1), read_length=255)
        assert r.data is not None and r.data[:4] == bytes((0, 10, 1, 1))
        for bad in (read_toc(fmt=5), read_toc(track=2)):
            r = await ini.execute(0, bad, read_length=255)
            assert sense_triplet(r.sense) == (0x5, 0x24, 0x00)
        # GET CONFIGURATION: CD-ROM profile current
        r = await ini.execute(0, get_configuration(), read_length=255)
        assert r.data is not None and struct.unpack_from(">H", r.data, 6)[0] == 0x0008
        r = await ini.execute(0, get_configuration(rt=2, start=0x0003), read_length=255)
        assert r.data is not None and struct.unpack_from(">H", r.data, 8)[0] == 0x0003
        assert len(r.data) == 8 + 8
        r = await ini.execute(0, get_configuration(rt=3), read_length=255)
        assert sense_triplet(r.sense) == (0x5, 0x24, 0x00)
        r = await ini.execute(0, DISC_INFO, read_length=34)
        assert r.data is not None and r.data[2] == 0x0E and len(r.data) == 34
        r = await ini.execute(0, MECHANISM_STATUS, read_length=8)
        assert r.data == bytes(8)
        r = await ini.execute(0, GESN, read_length=8)
        assert r.data is not None and r.data[4:6] == bytes((0, 0x02))  # no event, present
        r = await ini.execute(0, bytes((0x4A, 0, 0, 0, 0x10, 0, 0, 0, 8, 0)), read_length=8)
        assert sense_triplet(r.sense) == (0x5, 0x24, 0x00)  # asynchronous GESN
        r = await ini.execute(0, bytes((0x1A, 0, 0x2A, 0, 255, 0)), read_length=255)
        assert r.status == GOOD and r.data is not None and r.data[12] == 0x2A  # after BD


async def test_empty_drive_eject_and_load_live(tmp_path: Path) -> None:
    async with cdrom_daemon(tmp_path) as (d, first, second):
        admin = admin_for(d)
        async with login(d, "iqn.2026-11.org.x:a") as a, login(d, "iqn.2026-11.org.x:b") as b:
            for cdb in (TUR, read10(0), READ_CAPACITY_10, read_toc(), DISC_INFO):
                r = await a.execute(1, cdb, read_length=SECTOR)
                assert sense_triplet(r.sense) == MEDIUM_NOT_PRESENT, cdb.hex()
            r = await a.execute(1, get_configuration(), read_length=255)
            assert r.data is not None and struct.unpack_from(">H", r.data, 6)[0] == 0
            r = await a.execute(1, MECHANISM_STATUS, read_length=8)
            assert r.data is not None and r.data[1] & 0x10  # tray open
            # an initiator cannot load a drive that never had an image
            r = await a.execute(1, LOAD)
            assert sense_triplet(r.sense) == MEDIUM_NOT_PRESENT
            refused = await admin.fails(1, "device", "load", "cd1")
            assert "no image" in refused

            await admin.ok("device", "load", "cd1", "--path", "second.iso")
            for ini in (a, b):
                r = await ini.execute(1, TUR)
                assert sense_triplet(r.sense) == MEDIUM_CHANGED
                r = await ini.execute(1, read10(0, 40), read_length=40 * SECTOR)
                assert r.status == GOOD and r.data == second
            r = await a.execute(1, GESN, read_length=8)
            assert r.data is not None and r.data[4:6] == bytes((0x02, 0x02))  # new media
            r = await a.execute(1, GESN, read_length=8)
            assert r.data is not None and r.data[4] == 0  # reported once

            # PREVENT from b: neither the operator nor initiator a may eject
            assert (await b.execute(0, PREVENT)).status == GOOD
            assert "prevents medium removal" in await admin.fails(1, "device", "eject", "cd0")
            r = await a.execute(0, EJECT)
            assert sense_triplet(r.sense) == REMOVAL_PREVENTED
            refused = await admin.fails(1, "device", "load", "cd0", "--path", "second.iso")
            assert "prevents medium removal" in refused
            r = await a.execute(0, read10(0), read_length=SECTOR)
            assert r.data == first[:SECTOR]  # still the first disc
            assert (await b.execute(0, ALLOW)).status == GOOD

            # the initiator ejects and loads its own disc
            assert (await a.execute(0, EJECT)).status == GOOD
            r = await b.execute(0, TUR)
            assert sense_triplet(r.sense) == MEDIUM_NOT_PRESENT
            assert (await a.execute(0, LOAD)).status == GOOD
            r = await b.execute(0, TUR)
            assert sense_triplet(r.sense) == MEDIUM_CHANGED
            assert (await a.execute(0, TUR)).status == GOOD

            # hostile loads: outside the allowed directories, missing, a directory
            outside = tmp_path / "outside.iso"
            make_image(outside, 4)
            for path, words in ((str(outside), "outside"), ("missing.iso", "No such file"),
                                ("../state", "")):
                refused = await admin.fails(1, "device", "load", "cd0", "--path", path)
                assert "device cd0" in refused and words in refused, refused
            r = await a.execute(0, read10(0), read_length=SECTOR)
            assert r.data == first[:SECTOR]  # a refused load leaves the disc in
            # a CD-ROM cannot be resized or made writable
            assert (await admin.run("device", "resize", "cd0", "1M")).returncode != 0
            shown = await admin.ok("device", "show", "cd0")
            assert shown["read_only"] is True and shown["medium"] == "present"


async def test_loaded_or_ejected_disc_survives_a_device_restart(tmp_path: Path) -> None:
    """The disc the operator loaded stays in the drive when the device's actor
    crashes and is restarted; a disc an initiator ejected stays out; PREVENT
    ends with the restart (a reset)."""
    async with cdrom_daemon(tmp_path) as (d, first, second):
        admin = admin_for(d)
        async with login(d, "iqn.2026-11.org.x:a") as a, login(d, "iqn.2026-11.org.x:b") as b:
            await admin.ok("device", "load", "cd1", "--path", "second.iso")
            assert sense_triplet((await a.execute(1, TUR)).sense) == MEDIUM_CHANGED
            assert sense_triplet((await b.execute(1, TUR)).sense) == MEDIUM_CHANGED
            assert (await b.execute(1, PREVENT)).status == GOOD
            await crash_device(admin, a, 1, "cd1")
            for ini in (a, b):
                assert await after_restart(ini, 1) is None  # the loaded disc, still in
            r = await a.execute(1, read10(0, 40), read_length=40 * SECTOR)
            assert r.status == GOOD and r.data == second
            assert (await a.execute(1, EJECT)).status == GOOD  # b's PREVENT ended

            await crash_device(admin, a, 1, "cd1")
            for ini in (a, b):
                assert await after_restart(ini, 1) == MEDIUM_NOT_PRESENT
            shown = await admin.ok("device", "show", "cd1")
            assert shown["medium"] == "absent"
            assert (await a.execute(1, LOAD)).status == GOOD  # the tray closes on it again
            assert sense_triplet((await b.execute(1, TUR)).sense) == MEDIUM_CHANGED
            r = await b.execute(1, read10(0, 40), read_length=40 * SECTOR)
            assert r.status == GOOD and r.data == second
            r = await a.execute(0, read10(0), read_length=SECTOR)
            assert r.data == first[:SECTOR]  # the other drive: untouched


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.skipif(_qemu_img_with_iscsi() is None, reason="qemu-img without iscsi driver")
async def test_qemu_img_convert_reproduces_the_iso(tmp_path: Path) -> None:
    tool = _qemu_img_with_iscsi()
    assert tool is not None
    async with cdrom_daemon(tmp_path) as (d, first, _):
        out = tmp_path / "copy.iso"
        url = f"iscsi://{d.host}:{d.port}/{TARGET}/0"
        proc = await trio.run_process([tool, "convert", "-f", "raw", "-O", "raw", url, str(out)],
                                      capture_stdout=True, capture_stderr=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        assert _sha(out.read_bytes()) == _sha(first)
