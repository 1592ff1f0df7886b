"""A device that keeps crashing goes offline alone; everything else keeps serving.

The real daemon (``pyscst serve``) with two file-backed devices: ``crash_device``
on disk0, beyond its restart budget, while another session does continuous
verified I/O on disk1. disk1 must see no error at all; disk0 must go offline
(NOT READY, MANUAL INTERVENTION REQUIRED, 04/03, for everything but INQUIRY,
REPORT LUNS and REQUEST SENSE), show it in ``pyscst admin --json device
list/show`` and ``stats``, and come back with ``device restart`` (and a
POWER ON OCCURRED unit attention).
"""

from __future__ import annotations

import struct
from pathlib import Path

import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import READ_CAPACITY_10, REPORT_LUNS, TUR, luns_of, read10, sense_triplet, write10
from tests.daemon import running_daemon_async
from tests.e2e.test_admin_cli import admin_for

TARGET = "iqn.2026-11.org.pyscst:contain"
DEVICES = {
    "disk0": {"handler": "vdisk_fileio", "size": "4MiB", "max_restarts": 2},
    "disk1": {"handler": "vdisk_fileio", "size": "4MiB"},
}
LUNS = ({"lun": 0, "device": "disk0"}, {"lun": 1, "device": "disk1"})
INQUIRY = bytes((0x12, 0, 0, 0, 36, 0))
REQUEST_SENSE = bytes((0x03, 0, 0, 0, 252, 0))
GOOD, CHECK = 0, 2
OFFLINE = (0x2, 0x04, 0x03)
BS = 512


async def settle(ini: Initiator, lun: int) -> None:
    for _ in range(5):
        if (await ini.execute(lun, TUR)).status == GOOD:
            return
    raise AssertionError("TEST UNIT READY never GOOD")


async def verified_io(
    ini: Initiator, lun: int, stop: trio.Event, errors: list[str], rounds: list[int]
) -> None:
    """Write a fresh pattern, read it back, compare; every failure is recorded."""
    n = 0
    while not stop.is_set():
        n += 1
        lba = (n * 8) % 4096
        pattern = struct.pack(">I", n) * (8 * BS // 4)
        w = await ini.execute(lun, write10(lba, 8), data_out=pattern)
        if w.status != GOOD:
            errors.append(f"write {n}: status {w.status} sense {sense_triplet(w.sense)}")
            continue
        r = await ini.execute(lun, read10(lba, 8), read_length=8 * BS)
        if r.status != GOOD:
            errors.append(f"read {n}: status {r.status} sense {sense_triplet(r.sense)}")
        elif r.data != pattern:
            errors.append(f"read {n}: data differs")
        rounds[0] = n


async def test_crash_loop_takes_one_device_offline_and_spares_the_other(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        busy = await Initiator.connect(
            d.host, d.port, initiator_name="iqn.2026-11.org.example:busy", target_name=TARGET
        )
        victim = await Initiator.connect(
            d.host, d.port, initiator_name="iqn.2026-11.org.example:victim", target_name=TARGET
        )
        async with busy, victim, trio.open_nursery() as nursery:
            await settle(busy, 1)
            await settle(victim, 0)
            assert (await victim.execute(0, write10(7), data_out=b"k" * BS)).status == GOOD
            stop, errors, rounds = trio.Event(), list[str](), [0]
            nursery.start_soon(verified_io, busy, 1, stop, errors, rounds)

            await admin.ok("fault", "add", "id=storm", "action=crash_device", "device=disk0")
            seen: set[tuple[int, int, int]] = set()
            with trio.fail_after(60):
                while True:
                    r = await victim.execute(0, read10(1), read_length=BS)
                    if r.status == CHECK:
                        seen.add(sense_triplet(r.sense))
                        if sense_triplet(r.sense) == OFFLINE:
                            break
                    await trio.sleep(0.01)
            # on the way: retryable aborts, DEVICE INTERNAL RESET, NOT READY while restarting
            assert (0xB, 0x44, 0x00) in seen and (0x6, 0x29, 0x04) in seen
            await admin.ok("fault", "remove", "storm")
            before = rounds[0]

            shown = await admin.ok("device", "show", "disk0")
            assert shown["state"] == "offline" and shown["crashes"] == 3
            assert shown["offline_reason"].startswith("device disk0 crashed more than 2 times")
            assert isinstance(shown["last_error"], str) and "crash" in shown["last_error"]
            listed = {x["name"]: x["state"] for x in await admin.ok("device", "list")}
            assert listed == {"disk0": "offline", "disk1": "online"}
            assert (await admin.ok("stats", "--device", "disk0"))["state"] == "offline"
            tree = await admin.ok("tree")
            assert {x["name"]: x["state"] for x in tree["devices"]} == listed
            table = (await admin.run("device", "list")).stdout
            assert "offline" in table and "disk1" in table

            # offline: every command gets 04/03, except INQUIRY, REPORT LUNS, REQUEST SENSE
            for cdb, length in ((TUR, 0), (read10(7), BS), (READ_CAPACITY_10, 8)):
                r = await victim.execute(0, cdb, read_length=length)
                assert r.status == CHECK and sense_triplet(r.sense) == OFFLINE, cdb.hex()
            r = await victim.execute(0, write10(7), data_out=b"x" * BS)
            assert r.status == CHECK and sense_triplet(r.sense) == OFFLINE
            r = await victim.execute(0, INQUIRY, read_length=36)
            assert r.status == GOOD and r.data[0] == 0x00 and b"pyscst" in r.data
            r = await victim.execute(0, REQUEST_SENSE, read_length=252)
            assert r.status == GOOD and sense_triplet(r.data) == OFFLINE
            r = await victim.execute(0, REPORT_LUNS, read_length=256)
            assert r.status == GOOD and luns_of(r.data) == [0, 1]

            # the operator brings it back: a power cycle to the initiators
            reply = await admin.ok("device", "restart", "disk0")
            assert reply["state"] == "online"
            r = await victim.execute(0, TUR)
            assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)
            assert (await victim.execute(0, TUR)).status == GOOD
            r = await victim.execute(0, read10(7), read_length=BS)
            assert r.status == GOOD and r.data == b"k" * BS  # nothing acknowledged was lost
            assert (await admin.ok("device", "show", "disk0"))["state"] == "online"

            with trio.fail_after(30):
                while rounds[0] < before + 20:  # it went on all along, and still does
                    await trio.sleep(0.05)
            stop.set()
        assert errors == []
        assert rounds[0] > 40
        log = d.stderr_text()
        assert "device disk0 is offline" in log and "Traceback" in log  # the crashes, logged
