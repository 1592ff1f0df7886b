"""vdisk_blockio end to end: a real daemon serving a loop device with O_DIRECT.

The data an initiator writes must be on the block device itself (read back
past the daemon, after it stopped), FUA and SYNCHRONIZE CACHE must succeed,
UNMAP must leave zeros, and the device node must still be confined: without
``allowed_dirs = ["/dev"]`` the configuration is refused naming the key.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import tomli_w
import trio

from pyscst.admin.config.files import ConfigError, parse_config
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10, write10
from tests.daemon import running_daemon_async
from tests.loopdev import loop_device

BS = 512
SIZE = 32 << 20
SYNC_CACHE10 = bytes((0x35,)) + bytes(9)


def _unmap(lba: int, blocks: int) -> tuple[bytes, bytes]:
    desc = struct.pack(">QI4x", lba, blocks)
    params = struct.pack(">HH4x", 6 + len(desc), len(desc)) + desc
    return bytes((0x42, 0, 0, 0, 0, 0, 0)) + struct.pack(">H", len(params)) + b"\0", params


def _devices(dev: Path) -> dict[str, dict[str, object]]:
    return {"disk0": {"handler": "vdisk_blockio", "size": SIZE, "path": str(dev)}}


async def test_blockio_on_a_loop_device_serves_and_persists(tmp_path: Path) -> None:
    payloads = {lba: os.urandom(BS * n) for lba, n in ((0, 1), (8, 8), (64, 256), (4000, 3))}
    with loop_device(SIZE) as dev:
        async with running_daemon_async(
            tmp_path, devices=_devices(dev), extra={"allowed_dirs": ["/dev"]}
        ) as d:
            async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
                await ini.execute(0, TUR)  # the power-on UA
                for i, (lba, data) in enumerate(payloads.items()):
                    r = await ini.execute(0, write10(lba, len(data) // BS, fua=i % 2 == 1), data)
                    assert r.status == 0, r.sense
                r = await ini.execute(0, SYNC_CACHE10)
                assert r.status == 0, r.sense
                for lba, data in payloads.items():
                    r = await ini.execute(0, read10(lba, len(data) // BS), read_length=len(data))
                    assert r.status == 0 and bytes(r.data) == data
                cdb, params = _unmap(64, 128)
                r = await ini.execute(0, cdb, params)
                assert r.status == 0, r.sense
                r = await ini.execute(0, read10(64, 256), read_length=256 * BS)
                assert bytes(r.data[: 128 * BS]) == bytes(128 * BS)
                assert bytes(r.data[128 * BS :]) == payloads[64][128 * BS :]
            assert "vdisk_blockio" in d.stderr_text()
        with open(dev, "rb") as f:  # on the device itself
            for lba, data in payloads.items():
                f.seek(lba * BS)
                got = f.read(len(data))
                if lba == 64:
                    assert got[128 * BS :] == data[128 * BS :]
                else:
                    assert got == data


def test_a_device_node_needs_allowed_dirs(tmp_path: Path) -> None:
    doc = {
        "state_dir": str(tmp_path / "state"),
        "devices": {"disk0": {"handler": "vdisk_blockio", "size": SIZE, "path": "/dev/loop0"}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(tomli_w.dumps(doc), tmp_path)
    assert any("devices.disk0.path" in str(p) for p in info.value.problems), info.value.problems


def _lba_status(lba: int) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, 4096, 0, 0)


def _descriptors(data: bytes) -> list[tuple[int, int, int]]:
    """GET LBA STATUS descriptors: (lba, blocks, provisioning status)."""
    (length,) = struct.unpack_from(">I", data)
    return [(lba, n, status & 0x0F)
            for lba, n, status in struct.iter_unpack(">QIB3x", data[8 : 4 + length])]  # fmt: skip


async def test_deallocated_ranges_survive_a_device_actor_restart(tmp_path: Path) -> None:
    """GET LBA STATUS on a block device reports what the store deallocated; a
    crash of the device's actor (its supervisor reopens the device) keeps that."""
    from tests.cdbs import sense_triplet
    from tests.e2e.test_admin_cli import admin_for

    with loop_device(SIZE) as dev:
        async with running_daemon_async(
            tmp_path, devices=_devices(dev), extra={"allowed_dirs": ["/dev"]}
        ) as d:
            admin = admin_for(d)
            async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
                await ini.execute(0, TUR)  # the power-on UA
                r = await ini.execute(0, write10(0, 1024), os.urandom(1024 * BS))
                assert r.status == 0, r.sense
                cdb, params = _unmap(256, 512)
                assert (await ini.execute(0, cdb, params)).status == 0
                expected = [(0, 256, 0), (256, 512, 1), (768, SIZE // BS - 768, 0)]
                r = await ini.execute(0, _lba_status(0), read_length=4096)
                assert r.status == 0 and _descriptors(bytes(r.data)) == expected

                await admin.ok("fault", "add", "id=crash", "action=crash_device",
                               "device=disk0", "opcodes=18", "times=1")  # fmt: skip
                r = await ini.execute(0, bytes((0x12, 0, 0, 0, 96, 0)), read_length=96)
                assert r.status == 2 and sense_triplet(r.sense)[0] == 0xB  # ABORTED COMMAND
                r = await ini.execute(0, TUR)
                assert sense_triplet(r.sense) == (0x6, 0x29, 0x04)  # DEVICE INTERNAL RESET
                with trio.fail_after(10):  # NOT READY while the supervisor restarts it
                    while (await ini.execute(0, TUR)).status != 0:
                        await trio.sleep(0.05)
                r = await ini.execute(0, _lba_status(0), read_length=4096)
                assert r.status == 0 and _descriptors(bytes(r.data)) == expected
