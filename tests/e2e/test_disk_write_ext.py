"""COMPARE AND WRITE, UNMAP and WRITE SAME over iSCSI against the real daemon.

COMPARE AND WRITE is what clustered initiators (VMFS's ATS) use as a lock, so
the test uses it as one: several sessions increment a shared counter block
with compare-and-swap retries. Any non-atomic window between the compare and
the write would let two sessions swap the same old value and lose an update.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.daemon import running_daemon_async
from tests.unit.devices.test_disk_write_ext import caw, unmap, unmap_params, ws16

BS = 512
DEVICES = {"disk0": {"handler": "vdisk_fileio", "size": "16MiB"}}
TUR = bytes(6)
GOOD, CHECK_CONDITION, MISCOMPARE = 0x00, 0x02, 0x0E
SESSIONS, INCREMENTS = 4, 25


def read16(lba: int, n: int) -> bytes:
    return struct.pack(">BBQIBB", 0x88, 0, lba, n, 0, 0)


def write16(lba: int, n: int) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0, lba, n, 0, 0)


def counter_block(value: int) -> bytes:
    return struct.pack(">Q", value) * (BS // 8)


def sense_key(sense: bytes) -> int:
    # fixed (0x70) or descriptor (0x72) format
    return sense[2] & 0x0F if sense[0] & 0x7F in (0x70, 0x71) else sense[1] & 0x0F


async def connect(host: str, port: int, target: str, name: str) -> Initiator:
    return await Initiator.connect(host, port, target_name=target, initiator_name=name)


async def test_compare_and_write_is_atomic_across_sessions(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, devices=DEVICES) as d:
        misses = 0

        async def incrementer(i: int) -> None:
            nonlocal misses
            name = f"iqn.2026-12.org.example:caw{i}"
            async with await connect(d.host, d.port, d.target, name) as ini:
                await ini.execute(0, TUR)  # the power-on UA
                value = 0
                done = 0
                while done < INCREMENTS:
                    r = await ini.execute(
                        0, caw(7, 1), counter_block(value) + counter_block(value + 1)
                    )
                    if r.status == GOOD:
                        done += 1
                        value += 1
                        continue
                    assert r.status == CHECK_CONDITION and sense_key(r.sense) == MISCOMPARE
                    misses += 1
                    r = await ini.execute(0, read16(7, 1), read_length=BS)
                    assert r.status == GOOD
                    value = struct.unpack_from(">Q", r.data)[0]

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(SESSIONS):
                    nursery.start_soon(incrementer, i)
        async with await connect(d.host, d.port, d.target, "iqn.2026-12.org.example:x") as ini:
            await ini.execute(0, TUR)
            r = await ini.execute(0, read16(7, 1), read_length=BS)
        assert bytes(r.data) == counter_block(SESSIONS * INCREMENTS)  # no lost update
        assert misses > 0  # the sessions did contend


async def test_unmap_and_write_same_over_the_wire(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, devices=DEVICES) as d:
        async with await connect(d.host, d.port, d.target, "iqn.2026-12.org.example:u") as ini:
            await ini.execute(0, TUR)
            data = os.urandom(64 * BS)
            assert (await ini.execute(0, write16(100, 64), data)).status == GOOD
            params = unmap_params((100, 16), (140, 8))
            r = await ini.execute(0, unmap(len(params)), params)
            assert r.status == GOOD, r.sense
            block = b"\xa5" * BS
            r = await ini.execute(0, ws16(150, 4), block)
            assert r.status == GOOD, r.sense
            r = await ini.execute(0, ws16(160, 2, 0x08), block)  # UNMAP bit
            assert r.status == GOOD, r.sense
            r = await ini.execute(0, read16(100, 64), read_length=64 * BS)
        expect = bytearray(data)
        expect[0 : 16 * BS] = bytes(16 * BS)
        expect[40 * BS : 48 * BS] = bytes(8 * BS)
        expect[50 * BS : 54 * BS] = block * 4
        expect[60 * BS : 62 * BS] = bytes(2 * BS)
        assert r.status == GOOD and bytes(r.data) == expect
