"""The tape library (``vchanger`` + ``vtape``) end to end: the real daemon, a real
initiator on the changer's and the drives' LUNs, ``pyscst admin library``, fault
injection on MOVE MEDIUM, a restart that keeps the inventory, and a corrupt
inventory that stops the start with an error naming the file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.backup_job import Library, backup_job, move, res, tags
from tests.cdbs import TUR, sense_triplet
from tests.daemon import DaemonError, RunningDaemon, running_daemon_async
from tests.e2e.test_admin_cli import admin_for
from tests.e2e.test_vtape import RECORD, tar_archive

TARGET = "iqn.2026-11.org.pyscst:vtl"
INITIATOR = "iqn.2026-11.org.example:backup"
CHANGER, T0, T1 = 0, 1, 2
LUNS = ({"lun": 0, "device": "lib0"}, {"lun": 1, "device": "t0"}, {"lun": 2, "device": "t1"})
S0, S1, S2, S3 = 0x0400, 0x0401, 0x0402, 0x0403
D0, D1 = 0x0100, 0x0101
MAIL = 0x0010
GOOD = 0
MEDIUM_CHANGED = (0x6, 0x28, 0x00)
IE_ACCESSED = (0x6, 0x28, 0x01)
NO_MEDIUM = (0x2, 0x3A, 0x00)
PREVENT = bytes((0x1E, 0, 0, 0, 1, 0))
ALLOW = bytes((0x1E, 0, 0, 0, 0, 0))


def devices() -> dict[str, dict[str, object]]:
    return {
        "t0": {"handler": "vtape"},
        "t1": {"handler": "vtape", "max_restarts": 0},
        "lib0": {
            "handler": "vchanger",
            "library": {
                "drives": ["t0", "t1"],
                "slots": 4,
                "mail_slots": 1,
                "cartridges": [
                    {"barcode": "A00001L8", "capacity": "16M"},
                    {"barcode": "A00002L8", "capacity": "16M", "slot": 3},
                ],
            },
        },
    }


@asynccontextmanager
async def library(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon_async(tmp_path, target=TARGET, devices=devices(), luns=LUNS) as d:
        yield d


@asynccontextmanager
async def login(d: RunningDaemon) -> AsyncIterator[Initiator]:
    connecting = Initiator.connect(d.host, d.port, initiator_name=INITIATOR, target_name=TARGET)
    async with await connecting as ini:
        for lun in (CHANGER, T0, T1):
            r = await ini.execute(lun, TUR)
            assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)
        yield ini


async def inventory(ini: Initiator) -> dict[int, str]:
    r = await ini.execute(CHANGER, res(), read_length=0xFFFF)
    assert r.status == GOOD and r.data is not None
    return tags(r.data)


async def test_moves_load_and_unload_the_drives(tmp_path: Path) -> None:
    async with library(tmp_path) as d, login(d) as ini:
        r = await ini.execute(CHANGER, bytes((0x12, 0, 0, 0, 96, 0)), read_length=96)
        assert r.data is not None and r.data[0] == 0x08 and r.data[1] & 0x80
        # REPORT SUPPORTED OPERATION CODES comes from the same table
        rsoc = struct.pack(">BBBBHIBB", 0xA3, 0x0C, 0, 0, 0, 4096, 0, 0)
        r = await ini.execute(CHANGER, rsoc, read_length=4096)
        assert r.status == GOOD and r.data is not None
        listed = {r.data[i] for i in range(4, 4 + struct.unpack_from(">I", r.data)[0], 8)}
        assert {0x07, 0x1B, 0x1E, 0x2B, 0x37, 0xA5, 0xA6, 0xB8} <= listed
        assert not {0x28, 0x2A, 0x08, 0x0A} & listed  # no block or stream I/O
        assert await inventory(ini) == {S0: "A00001L8", S2: "A00002L8"}
        r = await ini.execute(T0, TUR)
        assert sense_triplet(r.sense) == NO_MEDIUM
        # slot -> drive: the drive's initiators hear the medium change
        r = await ini.execute(CHANGER, move(S0, D0))
        assert r.status == GOOD, sense_triplet(r.sense)
        r = await ini.execute(T0, TUR)
        assert sense_triplet(r.sense) == MEDIUM_CHANGED
        assert (await ini.execute(T0, TUR)).status == GOOD
        assert (await inventory(ini))[D0] == "A00001L8"
        # an initiator of the drive prevents removal: the changer cannot take it
        assert (await ini.execute(T0, PREVENT)).status == GOOD
        r = await ini.execute(CHANGER, move(D0, S1))
        assert sense_triplet(r.sense) == (0x5, 0x53, 0x02)
        assert (await ini.execute(T0, ALLOW)).status == GOOD
        r = await ini.execute(CHANGER, move(D0, D1))  # drive to drive
        assert r.status == GOOD
        assert sense_triplet((await ini.execute(T0, TUR)).sense) == NO_MEDIUM
        assert sense_triplet((await ini.execute(T1, TUR)).sense) == MEDIUM_CHANGED
        # hostile: bad addresses, empty source, full destination
        r = await ini.execute(CHANGER, move(0x7777, S1))
        assert sense_triplet(r.sense) == (0x5, 0x21, 0x01) and r.sense[15:18] == b"\xc0\x00\x04"
        r = await ini.execute(CHANGER, move(S0, S1))
        assert sense_triplet(r.sense) == (0x5, 0x3B, 0x0E)
        r = await ini.execute(CHANGER, move(S2, D1))
        assert sense_triplet(r.sense) == (0x5, 0x3B, 0x0D)
        # tiny allocation lengths and huge counts
        for allocation in (0, 3, 8, 17):
            r = await ini.execute(CHANGER, res(allocation=allocation), read_length=0xFFFF)
            assert r.status == GOOD and r.data is not None and len(r.data) == allocation
        r = await ini.execute(CHANGER, res(kind=2, start=S2, count=0xFFFF), read_length=0xFFFF)
        assert r.data is not None and tags(r.data) == {S2: "A00002L8"}

    # a restart keeps the inventory and puts the cartridge back into its drive
    async with library(tmp_path) as d, login(d) as ini:
        assert await inventory(ini) == {D1: "A00001L8", S2: "A00002L8"}
        for _ in range(50):
            r = await ini.execute(T1, TUR)
            if r.status == GOOD or sense_triplet(r.sense) != NO_MEDIUM:
                break
            await trio.sleep(0.1)
        assert r.status == GOOD or sense_triplet(r.sense) == MEDIUM_CHANGED
        assert (await ini.execute(T1, TUR)).status == GOOD


async def test_operator_imports_and_exports_through_the_mail_slot(tmp_path: Path) -> None:
    async with library(tmp_path) as d, login(d) as ini:
        admin = admin_for(d)
        reply = await admin.ok("library", "create", "lib0", "NEW001", "--capacity", "8M", "--worm")
        assert "NEW001" in reply["message"]
        reply = await admin.ok("library", "import", "lib0", "NEW001")
        assert reply["address"] == MAIL
        r = await ini.execute(CHANGER, TUR)
        assert sense_triplet(r.sense) == IE_ACCESSED  # SMC: re-read the element status
        assert (await inventory(ini))[MAIL] == "NEW001"
        r = await ini.execute(CHANGER, move(MAIL, S1))
        assert r.status == GOOD
        r = await ini.execute(CHANGER, move(S0, MAIL))
        assert r.status == GOOD
        # the application locks the mail slots: the operator cannot take it out
        assert (await ini.execute(CHANGER, PREVENT)).status == GOOD
        stderr = await admin.fails(1, "library", "export", "lib0", "A00001L8")
        assert "prevents medium removal" in stderr
        assert (await ini.execute(CHANGER, ALLOW)).status == GOOD
        await admin.ok("library", "export", "lib0", "A00001L8")
        listing = await admin.ok("library", "list", "lib0")
        assert listing["shelf"] == ["A00001L8"]
        held = {e["address"]: e["barcode"] for e in listing["elements"] if e["barcode"]}
        assert held == {S1: "NEW001", S2: "A00002L8"}
        stderr = await admin.fails(1, "library", "import", "lib0", "NOPE")
        assert "no cartridge NOPE" in stderr
        stderr = await admin.fails(1, "library", "create", "lib0", "../evil")
        assert "barcode" in stderr
        await admin.fails(1, "library", "list", "t0")  # not a changer


async def test_move_faults_and_a_drive_gone_mid_move(tmp_path: Path) -> None:
    async with library(tmp_path) as d, login(d) as ini:
        admin = admin_for(d)
        await admin.ok("fault", "add", "id=robot", "action=check_condition", "device=lib0",
                       "opcodes=0xa5", "sense_key=hardware_error", "asc=0x15", "ascq=0x01",
                       "times=1")  # fmt: skip
        r = await ini.execute(CHANGER, move(S0, D0))
        assert sense_triplet(r.sense) == (0x4, 0x15, 0x01)
        assert (await inventory(ini))[S0] == "A00001L8"  # nothing moved
        assert sense_triplet((await ini.execute(T0, TUR)).sense) == NO_MEDIUM
        # a cartridge whose files someone removed: the drive refuses it, it stays put
        shutil.rmtree(d.state_dir / "lib0" / "A00002L8")
        r = await ini.execute(CHANGER, move(S2, D0))
        assert sense_triplet(r.sense) == (0x4, 0x15, 0x01)
        assert (await inventory(ini))[S2] == "A00002L8"
        assert sense_triplet((await ini.execute(T0, TUR)).sense) == NO_MEDIUM
        # a slow robot: the move takes its time, then succeeds
        await admin.ok("fault", "add", "id=slow", "action=delay", "device=lib0", "opcodes=0xa5",
                       "delay=0.6", "times=1")  # fmt: skip
        began = trio.current_time()
        assert (await ini.execute(CHANGER, move(S2, S1))).status == GOOD
        assert trio.current_time() - began >= 0.6
        assert (await ini.execute(CHANGER, move(S1, S2))).status == GOOD
        # the drive goes offline (a crash beyond its restart budget of 0): the
        # move fails, the cartridge stays where it was
        await admin.ok("fault", "add", "id=down", "action=crash_device", "device=t1", "times=1")
        with trio.move_on_after(2):  # (answered by nothing: the device crashes under it)
            await ini.execute(T1, bytes((0x12, 0, 0, 0, 96, 0)), read_length=96)
        for _ in range(50):
            if (await admin.ok("device", "show", "t1"))["state"] == "offline":
                break
            await trio.sleep(0.1)
        assert (await admin.ok("device", "show", "t1"))["state"] == "offline", d.stderr_text()
        r = await ini.execute(CHANGER, move(S0, D1))
        assert sense_triplet(r.sense) == (0x4, 0x15, 0x01)
        assert (await inventory(ini))[S0] == "A00001L8"
        r = await ini.execute(CHANGER, res(kind=4), read_length=0xFFFF)
        assert r.data is not None
        length = struct.unpack_from(">H", r.data, 10)[0]
        assert r.data[16 + 2] == 0x08  # t0: ACCESS
        assert r.data[16 + length + 2] & 0x04  # t1 (offline): EXCEPT
        assert r.data[16 + length + 4 : 16 + length + 6] == b"\x04\x03"


async def test_corrupt_inventory_stops_the_start_naming_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state" / "library"
    state.mkdir(parents=True)
    (state / "lib0.json").write_text('{"version": 1, "elements": [{"address": "x"')
    with pytest.raises(DaemonError) as failed:
        async with library(tmp_path):
            pass
    assert "lib0.json" in str(failed.value) and "corrupt" in str(failed.value)
    assert json.loads((state / "lib0.json").read_text() + '}]}') is not None or True


async def test_backup_job_through_the_changer(tmp_path: Path) -> None:
    """Issue 14's backup job: tar archives as variable 256 KiB records with a
    filemark after each, rewind, SPACE to the third file, LOCATE by block, read
    back and verify; then the changer moves the cartridge to the other drive
    (the application unloads it first, as backup software does) and every
    archive reads back there."""
    archives = [tar_archive(i, (3 * RECORD) // 2 + 1000 * i) for i in range(4)]
    async with library(tmp_path) as d, login(d) as ini:
        await backup_job(ini, Library(CHANGER, (T0, T1), S0, (D0, D1)), archives)
        assert await inventory(ini) == {D1: "A00001L8", S2: "A00002L8"}


async def test_a_drive_restarting_comes_back_with_what_the_inventory_says(tmp_path: Path) -> None:
    """A drive's own supervisor restart reopens the cartridge the changer last
    loaded there, and none once the changer has taken it elsewhere."""
    inquiry = bytes((0x12, 0, 0, 0, 96, 0))

    async def crash_and_wait(ini: Initiator, admin: Any, rule: str) -> None:
        await admin.ok("fault", "add", f"id={rule}", "action=crash_device", "device=t0",
                       "times=1")  # fmt: skip
        with trio.move_on_after(2):
            await ini.execute(T0, inquiry, read_length=96)

    async def settle(ini: Initiator) -> tuple[int, int, int] | None:
        for _ in range(100):  # past the restart (04/00) and the unit attentions
            r = await ini.execute(T0, TUR)
            if r.status == GOOD:
                return None
            if r.sense[2] & 0x0F != 0x6 and sense_triplet(r.sense) != (0x2, 0x04, 0x00):
                return sense_triplet(r.sense)
            await trio.sleep(0.05)
        raise AssertionError("the drive never settled")

    async with library(tmp_path) as d, login(d) as ini:
        admin = admin_for(d)
        assert (await ini.execute(CHANGER, move(S0, D0))).status == GOOD
        await crash_and_wait(ini, admin, "first")
        assert await settle(ini) is None  # the cartridge is back in the drive
        assert (await ini.execute(CHANGER, move(D0, S1))).status == GOOD
        await crash_and_wait(ini, admin, "second")
        assert await settle(ini) == NO_MEDIUM  # it was carried away: nothing comes back


async def test_reload_with_a_bigger_library_keeps_the_inventory(tmp_path: Path) -> None:
    async with library(tmp_path) as d, login(d) as ini:
        assert (await ini.execute(CHANGER, move(S0, D0))).status == GOOD
        doc = tomllib.loads(d.config_path.read_text())
        doc["devices"]["lib0"]["library"]["slots"] = 6
        d.config_path.write_text(tomli_w.dumps(doc))
        reply = await admin_for(d).ok("reload", "--force")
        assert reply["changes"]["devices_replaced"] == ["lib0"]
        for _ in range(50):  # the replaced changer comes back
            r = await ini.execute(CHANGER, res(kind=2), read_length=0xFFFF)
            if r.status == GOOD:
                break
            await trio.sleep(0.1)
        assert r.data is not None and struct.unpack_from(">H", r.data, 2)[0] == 6
        assert await inventory(ini) == {D0: "A00001L8", S2: "A00002L8"}
        assert (await ini.execute(T0, TUR)).status in (GOOD, 2)
        r = await ini.execute(CHANGER, move(D0, S0 + 5))  # into a new slot
        assert r.status == GOOD, sense_triplet(r.sense)


async def test_every_answered_move_survives_kill_9(tmp_path: Path) -> None:
    """The inventory is written before MOVE MEDIUM answers: after kill -9 the
    next start knows every move that was answered, and loads the drive again."""
    answered: list[tuple[int, int]] = []
    with pytest.raises(DaemonError):  # it did not exit cleanly: it was killed
        async with library(tmp_path) as d, login(d) as ini:
            for src, dst in ((S0, S1), (S2, S3), (S1, D1), (S3, S0)):
                assert (await ini.execute(CHANGER, move(src, dst))).status == GOOD
                answered.append((src, dst))
            os.kill(d.pid, signal.SIGKILL)
    assert len(answered) == 4
    doc = json.loads((tmp_path / "state" / "library" / "lib0.json").read_text())
    held = {e["address"]: e["barcode"] for e in doc["elements"]}
    assert held == {D1: "A00001L8", S0: "A00002L8"}
    async with library(tmp_path) as d, login(d) as ini:
        assert await inventory(ini) == {D1: "A00001L8", S0: "A00002L8"}
        for _ in range(50):  # the drive is loaded again as the changer starts
            r = await ini.execute(T1, TUR)
            if r.status == GOOD:
                break
            await trio.sleep(0.1)
        assert r.status == GOOD


async def test_operator_cannot_eject_or_load_a_library_drive_nor_add_a_changer(
    tmp_path: Path,
) -> None:
    """A library's drives get cartridges only from its changer: the operator's
    ``device eject`` / ``device load`` on one is refused naming the library and
    what to use, and the drive and the inventory are untouched. A vchanger
    cannot be added live (its library table lives in the file): refused, saying
    how. An eject of a drive of no library still works."""
    async with library(tmp_path) as d, login(d) as ini:
        admin = admin_for(d)
        assert (await ini.execute(CHANGER, move(S0, D0))).status == GOOD
        assert sense_triplet((await ini.execute(T0, TUR)).sense) == MEDIUM_CHANGED
        stderr = await admin.fails(1, "device", "eject", "t0")
        assert "drive of library lib0" in stderr and "MOVE MEDIUM" in stderr
        assert "library import|export lib0" in stderr
        stderr = await admin.fails(1, "device", "load", "t1", "--path", "A00002L8")
        assert "device t1 is a drive of library lib0" in stderr
        assert (await ini.execute(T0, TUR)).status == GOOD  # still loaded, no UA
        assert sense_triplet((await ini.execute(T1, TUR)).sense) == NO_MEDIUM
        assert await inventory(ini) == {D0: "A00001L8", S2: "A00002L8"}
        stderr = await admin.fails(1, "device", "add", "lib1", "--handler", "vchanger")
        assert "[devices.lib1.library] table" in stderr and "admin reload" in stderr
        assert "lib1" not in d.config_path.read_text()
        await admin.ok("device", "add", "t9", "--handler", "vtape")
        assert (await admin.ok("device", "eject", "t9"))["medium"] == "absent"
