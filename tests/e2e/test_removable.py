"""Removable disks, physical_block_size and rotational, end to end.

The real daemon, a real initiator, ``pyscst admin``: a ``removable = true``
disk says RMB in INQUIRY, ejects and loads from the operator (3A/00 while
empty, 28/00 to every nexus on load), refuses the eject while an initiator
holds PREVENT ALLOW MEDIUM REMOVAL, and a fixed disk refuses eject outright.
``physical_block_size`` reaches READ CAPACITY(16) LBPPBE and the Block Limits
unmap granularity; ``rotational`` reaches VPD 0xB1.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10, sense_triplet
from tests.daemon import RunningDaemon, running_daemon_async
from tests.e2e.test_admin_cli import Admin, admin_for

TARGET = "iqn.2026-11.org.pyscst:removable"
LUNS = ({"lun": 0, "device": "rdisk"}, {"lun": 1, "device": "fixed"})
DEVICES = {
    "rdisk": {"handler": "vdisk_nullio", "size": "4MiB", "removable": True},
    "fixed": {
        "handler": "vdisk_nullio", "size": "4MiB", "physical_block_size": 4096,
        "rotational": True,
    },
}
GOOD, CHECK = 0, 2
MEDIUM_NOT_PRESENT = (0x2, 0x3A, 0x00)
MEDIUM_CHANGED = (0x6, 0x28, 0x00)
DEVICE_INTERNAL_RESET = (0x6, 0x29, 0x04)
PREVENT = bytes((0x1E, 0, 0, 0, 1, 0))
ALLOW = bytes((0x1E, 0, 0, 0, 0, 0))
INQUIRY = bytes((0x12, 0, 0, 0, 96, 0))
READ_CAPACITY_16 = struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)


def vpd(page: int) -> bytes:
    return bytes((0x12, 1, page, 0, 255, 0))


@asynccontextmanager
async def login(d: RunningDaemon, name: str, target: str = TARGET) -> AsyncIterator[Initiator]:
    """A session to ``target`` past the power-on UA of LUNs 0 and 1."""
    connecting = Initiator.connect(d.host, d.port, initiator_name=name, target_name=target)
    async with await connecting as ini:
        for lun in (0, 1):
            r = await ini.execute(lun, TUR)  # the power-on UA
            assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)
        yield ini


async def test_eject_and_load_live_with_prevent(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        async with login(d, "iqn.2026-11.org.example:a") as a, login(
            d, "iqn.2026-11.org.example:b"
        ) as b:
            r = await a.execute(0, INQUIRY, read_length=96)
            assert r.status == GOOD and r.data is not None and r.data[1] & 0x80  # RMB
            r = await a.execute(1, INQUIRY, read_length=96)
            assert r.status == GOOD and r.data is not None and not r.data[1] & 0x80
            shown = await admin.ok("device", "show", "rdisk")
            assert shown["removable"] is True and shown["medium"] == "present"

            # an initiator's PREVENT keeps the operator from ejecting
            assert (await b.execute(0, PREVENT)).status == GOOD
            refused = await admin.fails(1, "device", "eject", "rdisk")
            assert "prevents medium removal" in refused
            assert (await a.execute(0, TUR)).status == GOOD
            assert (await b.execute(0, ALLOW)).status == GOOD

            reply = await admin.ok("device", "eject", "rdisk")
            assert reply["medium"] == "absent"
            for ini in (a, b):
                r = await ini.execute(0, TUR)
                assert r.status == CHECK and sense_triplet(r.sense) == MEDIUM_NOT_PRESENT
                r = await ini.execute(0, read10(0), read_length=512)
                assert sense_triplet(r.sense) == MEDIUM_NOT_PRESENT
                r = await ini.execute(0, READ_CAPACITY_16, read_length=32)
                assert sense_triplet(r.sense) == MEDIUM_NOT_PRESENT
            assert (await admin.ok("device", "show", "rdisk"))["medium"] == "absent"
            # ejecting an empty drive changes nothing and says so
            assert "already" in (await admin.ok("device", "eject", "rdisk"))["message"]

            await admin.ok("device", "load", "rdisk")
            for ini in (a, b):  # every nexus hears the medium may have changed, once
                r = await ini.execute(0, TUR)
                assert r.status == CHECK and sense_triplet(r.sense) == MEDIUM_CHANGED
                assert (await ini.execute(0, TUR)).status == GOOD
            # the other LUN saw nothing of it
            assert (await a.execute(1, TUR)).status == GOOD

            # a fixed disk has nothing to eject
            refused = await admin.fails(1, "device", "eject", "fixed")
            assert "not removable" in refused
            assert (await a.execute(1, TUR)).status == GOOD


async def test_physical_block_size_and_rotational_reach_the_initiator(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        async with login(d, "iqn.2026-11.org.example:a") as ini:
            r = await ini.execute(1, READ_CAPACITY_16, read_length=32)
            assert r.status == GOOD and r.data is not None
            assert r.data[13] & 0x0F == 3  # LBPPBE: 8 logical blocks per physical block
            r = await ini.execute(1, vpd(0xB0), read_length=255)
            assert r.status == GOOD and r.data is not None
            granularity, alignment = struct.unpack_from(">II", r.data, 28)
            assert struct.unpack_from(">H", r.data, 6)[0] == 8  # optimal transfer granularity
            assert granularity == 8 and alignment == 0x80000000  # UGAVALID, aligned at 0
            r = await ini.execute(1, vpd(0xB1), read_length=255)
            assert r.status == GOOD and r.data is not None
            assert struct.unpack_from(">H", r.data, 4)[0] == 0  # rotating: rate not reported
            # the defaults are unchanged: one block per physical block, non-rotating
            r = await ini.execute(0, READ_CAPACITY_16, read_length=32)
            assert r.data is not None and r.data[13] & 0x0F == 0
            r = await ini.execute(0, vpd(0xB1), read_length=255)
            assert r.data is not None and struct.unpack_from(">H", r.data, 4)[0] == 1
            r = await ini.execute(0, vpd(0xB0), read_length=255)
            assert r.data is not None and struct.unpack_from(">II", r.data, 28) == (1, 0)


async def crash_device(admin: Admin, ini: Initiator, lun: int, device: str) -> None:
    """Crash ``device``'s actor through a ``crash_device`` fault rule (an INQUIRY
    sets it off: it needs no medium) and wait until its supervisor has
    restarted it."""
    crashes = (await admin.ok("device", "show", device))["crashes"]
    await admin.ok("fault", "add", f"id=crash-{device}", "action=crash_device",
                   f"device={device}", "opcodes=18", "times=1")  # fmt: skip
    r = await ini.execute(lun, INQUIRY, read_length=96)
    assert r.status == CHECK and sense_triplet(r.sense)[0] == 0xB, r  # ABORTED COMMAND
    with trio.fail_after(10):
        while True:
            shown = await admin.ok("device", "show", device)
            if shown["crashes"] == crashes + 1 and shown["state"] == "online":
                break
            await trio.sleep(0.05)
    await admin.run("fault", "remove", f"crash-{device}")  # (times=1: it may be gone)


async def after_restart(ini: Initiator, lun: int) -> tuple[int, int, int] | None:
    """What TEST UNIT READY says once the restart's unit attention is taken:
    None for GOOD, else the sense."""
    r = await ini.execute(lun, TUR)
    assert r.status == CHECK and sense_triplet(r.sense) == DEVICE_INTERNAL_RESET, r
    r = await ini.execute(lun, TUR)
    return None if r.status == GOOD else sense_triplet(r.sense)


async def test_ejected_medium_survives_a_device_restart_prevent_does_not(
    tmp_path: Path,
) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        async with login(d, "iqn.2026-11.org.example:a") as a, login(
            d, "iqn.2026-11.org.example:b"
        ) as b:
            # b prevents removal; the actor crashes: a restart is a reset to
            # every nexus, which ends the prevention (the medium stays in)
            assert (await b.execute(0, PREVENT)).status == GOOD
            assert "prevents medium removal" in await admin.fails(1, "device", "eject", "rdisk")
            await crash_device(admin, a, 0, "rdisk")
            for ini in (a, b):
                assert await after_restart(ini, 0) is None
            reply = await admin.ok("device", "eject", "rdisk")
            assert reply["medium"] == "absent"
            for ini in (a, b):
                assert sense_triplet((await ini.execute(0, TUR)).sense) == MEDIUM_NOT_PRESENT

            # ejected, then restarted (twice): still no medium, and no
            # MEDIUM MAY HAVE CHANGED (nothing changed)
            for _ in range(2):
                await crash_device(admin, a, 0, "rdisk")
                for ini in (a, b):
                    assert await after_restart(ini, 0) == MEDIUM_NOT_PRESENT
                r = await a.execute(0, read10(0), read_length=512)
                assert sense_triplet(r.sense) == MEDIUM_NOT_PRESENT
                assert (await admin.ok("device", "show", "rdisk"))["medium"] == "absent"
            # the other LUN only heard of its own device's business: nothing
            assert (await a.execute(1, TUR)).status == GOOD

            await admin.ok("device", "load", "rdisk")
            for ini in (a, b):
                assert sense_triplet((await ini.execute(0, TUR)).sense) == MEDIUM_CHANGED
                assert (await ini.execute(0, TUR)).status == GOOD
