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
