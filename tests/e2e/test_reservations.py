"""Persistent reservations seen from real initiators over iSCSI.

Several initiators (distinct iSCSI names) log in to a real ``pyscst serve``
and use PERSISTENT RESERVE IN/OUT: access under a reservation, the unit
attentions other initiators get, a device exported through two targets
sharing one reservation state, and APTPL reservations surviving a daemon
restart (and non-APTPL ones not).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import trio

from pyscst.actors import pr_transport_id as tid
from pyscst.scsi.sense import Status
from pyscst.transports.iscsi.initiator import Initiator, Result
from tests.daemon import RunningDaemon, free_port, start_daemon, stop_daemon, write_config

HOST = "127.0.0.1"
TARGET = "iqn.2026-11.org.pyscst:pr"
TARGET_2 = "iqn.2026-11.org.pyscst:pr2"
NAME_A = "iqn.2026-11.org.example:host-a"
NAME_B = "iqn.2026-11.org.example:host-b"
NAME_C = "iqn.2026-11.org.example:host-c"
ISID_A = 0x23D000000001
ISID_B = 0x23D000000002
ISID_C = 0x23D000000003
BS = 512

READ_KEYS, READ_RESERVATION, READ_FULL_STATUS = 0, 1, 3
REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT = 0, 1, 2, 3, 4
REGISTER_AND_IGNORE = 6
EA, WE_RO = 3, 5


@contextlib.contextmanager
def daemon(workdir: Path, *, two_targets: bool = False) -> Iterator[RunningDaemon]:
    """A daemon over ``workdir`` (state survives between uses of the same workdir)."""
    port = free_port(HOST)
    luns = [{"lun": 0, "device": "disk0"}]
    extra = {TARGET_2: {"portals": [f"{HOST}:{port}"], "luns": luns}} if two_targets else None
    config = write_config(
        workdir,
        port=port,
        host=HOST,
        target=TARGET,
        devices={"disk0": {"handler": "vdisk_fileio", "size": "4MiB"}},
        luns=luns,
        extra_targets=extra,
    )
    proc, info = start_daemon(config, host=HOST, port=port, target=TARGET)
    try:
        yield info
    finally:
        stop_daemon(proc, info)


@contextlib.asynccontextmanager
async def running(workdir: Path, **kw: Any) -> AsyncIterator[RunningDaemon]:
    manager = daemon(workdir, **kw)
    info = await trio.to_thread.run_sync(manager.__enter__)
    try:
        yield info
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(manager.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def login(
    info: RunningDaemon, name: str, isid: int, target: str = TARGET
) -> AsyncIterator[Initiator]:
    async with await Initiator.connect(
        HOST, info.port, initiator_name=name, target_name=target, isid=isid
    ) as ini:
        for _ in range(5):  # the new nexus' POWER ON UA (and any other) first
            if (await ini.execute(0, bytes(6))).status == Status.GOOD:
                break
        yield ini


def asc(result: Result) -> tuple[int, int]:
    assert result.status == Status.CHECK_CONDITION, result
    return result.sense[12], result.sense[13]


async def prout(
    ini: Initiator,
    sa: int,
    key: int = 0,
    sark: int = 0,
    ptype: int = 0,
    *,
    aptpl: bool = False,
    extra: bytes = b"",
    flags: int = 0,
) -> Result:
    data = struct.pack(">QQ4xBx2x", key, sark, flags | (0x01 if aptpl else 0)) + extra
    cdb = struct.pack(">BBBHIB", 0x5F, sa, ptype, 0, len(data), 0)
    return await ini.execute(0, cdb, data_out=data)


async def prin(ini: Initiator, sa: int, alloc: int = 4096) -> Result:
    cdb = struct.pack(">BB5xHB", 0x5E, sa, alloc, 0)
    return await ini.execute(0, cdb, read_length=alloc)


async def keys(ini: Initiator) -> list[int]:
    r = await prin(ini, READ_KEYS)
    assert r.status == Status.GOOD
    (length,) = struct.unpack_from(">I", r.data, 4)
    return [k for (k,) in struct.iter_unpack(">Q", r.data[8 : 8 + length])]


async def reservation(ini: Initiator) -> tuple[int, int] | None:
    r = await prin(ini, READ_RESERVATION)
    assert r.status == Status.GOOD
    (length,) = struct.unpack_from(">I", r.data, 4)
    if not length:
        return None
    return struct.unpack_from(">Q", r.data, 8)[0], r.data[21] & 0x0F


async def read(ini: Initiator, lba: int = 1) -> Result:
    return await ini.execute(0, struct.pack(">BBIBHB", 0x28, 0, lba, 0, 1, 0), read_length=BS)


async def write(ini: Initiator, lba: int = 1) -> Result:
    cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, 1, 0)
    return await ini.execute(0, cdb, data_out=b"\xa5" * BS)


async def test_registrants_only_reservation_between_three_initiators(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as info,
        login(info, NAME_A, ISID_A) as a,
        login(info, NAME_B, ISID_B) as b,
        login(info, NAME_C, ISID_C) as c,
    ):
        assert (await prout(a, REGISTER_AND_IGNORE, sark=0xA)).status == Status.GOOD
        assert (await prout(b, REGISTER, sark=0xB)).status == Status.GOOD
        assert (await prout(b, REGISTER, key=0, sark=0xBB)).status == Status.RESERVATION_CONFLICT
        assert (await prout(a, RESERVE, key=0xA, ptype=WE_RO)).status == Status.GOOD
        assert await reservation(c) == (0xA, WE_RO)
        assert sorted(await keys(c)) == [0xA, 0xB]
        # registrants write, the unregistered initiator only reads
        assert (await write(b)).status == Status.GOOD
        assert (await read(c)).status == Status.GOOD
        assert (await write(c)).status == Status.RESERVATION_CONFLICT
        assert (await prout(c, RESERVE, key=0, ptype=WE_RO)).status == Status.RESERVATION_CONFLICT
        # SPC-2 RESERVE conflicts while registrations exist
        assert (await c.execute(0, bytes([0x16, 0, 0, 0, 0, 0]))).status == (
            Status.RESERVATION_CONFLICT
        )
        # releasing a registrants-only reservation tells the other registrants
        assert (await prout(a, RELEASE, key=0xA, ptype=WE_RO)).status == Status.GOOD
        assert asc(await b.execute(0, bytes(6))) == (0x2A, 0x04)
        assert (await c.execute(0, bytes(6))).status == Status.GOOD  # not registered: no UA
        assert (await write(c)).status == Status.GOOD
        # CLEAR: everybody else learns RESERVATIONS PREEMPTED
        assert (await prout(a, CLEAR, key=0xA)).status == Status.GOOD
        assert asc(await b.execute(0, bytes(6))) == (0x2A, 0x03)
        assert await keys(a) == []


async def test_preempt_takes_over_and_tells_the_preempted(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as info,
        login(info, NAME_A, ISID_A) as a,
        login(info, NAME_B, ISID_B) as b,
    ):
        await prout(a, REGISTER, sark=1)
        await prout(b, REGISTER, sark=2)
        assert (await prout(a, RESERVE, key=1, ptype=EA)).status == Status.GOOD
        assert (await read(b)).status == Status.RESERVATION_CONFLICT
        assert (await prout(b, PREEMPT, key=2, sark=1, ptype=EA)).status == Status.GOOD
        assert asc(await read(a)) == (0x2A, 0x05)  # REGISTRATIONS PREEMPTED
        assert (await read(a)).status == Status.RESERVATION_CONFLICT
        assert (await read(b)).status == Status.GOOD
        assert await reservation(a) == (2, EA)
        full = await prin(a, READ_FULL_STATUS)
        (length,) = struct.unpack_from(">I", full.data, 4)
        assert length == 24 + len(tid.encode(NAME_B, ISID_B))
        assert full.data[8 + 12] == 0x01  # R_HOLDER
        port, _ = tid.parse(full.data, 8 + 24)
        assert port == tid.InitiatorPortId(NAME_B, ISID_B)


async def test_one_device_in_two_targets_shares_its_reservation(tmp_path: Path) -> None:
    async with (
        running(tmp_path, two_targets=True) as info,
        login(info, NAME_A, ISID_A, TARGET) as a,
        login(info, NAME_B, ISID_B, TARGET_2) as b,
        login(info, NAME_A, ISID_A, TARGET_2) as a_via_2,
    ):
        assert (await prout(a, REGISTER, sark=0xA)).status == Status.GOOD
        assert (await prout(a, RESERVE, key=0xA, ptype=EA)).status == Status.GOOD
        assert await keys(b) == [0xA]
        assert (await read(b)).status == Status.RESERVATION_CONFLICT
        # the same initiator port through the other target is another I_T nexus
        assert (await read(a_via_2)).status == Status.RESERVATION_CONFLICT
        assert (await read(a)).status == Status.GOOD
        # ALL_TG_PT registers through every target port at once
        assert (await prout(b, REGISTER, sark=0xB, flags=0x04)).status == Status.GOOD
        assert (await prout(b, PREEMPT, key=0xB, sark=0xA, ptype=EA)).status == Status.GOOD
        assert asc(await read(a)) == (0x2A, 0x05)
        assert (await read(b)).status == Status.GOOD


async def test_aptpl_reservation_survives_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path) as info, login(info, NAME_A, ISID_A) as a:
        assert (await prout(a, REGISTER, sark=0xAB, aptpl=True)).status == Status.GOOD
        assert (await prout(a, RESERVE, key=0xAB, ptype=EA)).status == Status.GOOD
        caps = await prin(a, 2)
        assert caps.data[3] & 0x01  # PTPL_A
    assert (tmp_path / "state" / "pr" / "disk0.json").exists()
    async with (
        running(tmp_path) as info,
        login(info, NAME_A, ISID_A) as a,
        login(info, NAME_B, ISID_B) as b,
    ):
        assert await keys(b) == [0xAB]
        assert await reservation(b) == (0xAB, EA)
        assert (await read(b)).status == Status.RESERVATION_CONFLICT
        assert (await read(a)).status == Status.GOOD
        # APTPL=0 on the next REGISTER: the state no longer survives power loss
        assert (await prout(a, REGISTER, key=0xAB, sark=0xAC)).status == Status.GOOD
    assert not (tmp_path / "state" / "pr" / "disk0.json").exists()
    async with running(tmp_path) as info, login(info, NAME_B, ISID_B) as b:
        assert await keys(b) == []
        assert await reservation(b) is None
        assert (await read(b)).status == Status.GOOD


async def test_a_logout_releases_reserve6_before_its_logout_response(tmp_path: Path) -> None:
    """An initiator that reads its Logout Response and at once goes on through
    another session (libiscsi's Sanitize.Reset after Sanitize.Reservations)
    finds the RESERVE(6) of the session it closed released, every time: the
    target answers the Logout only once every LU has the nexus loss queued."""
    reserve6 = bytes((0x16, 0, 0, 0, 0, 0))
    async with running(tmp_path) as info, login(info, NAME_A, ISID_A) as a:
        for _ in range(30):
            b = await Initiator.connect(
                HOST, info.port, initiator_name=NAME_B, target_name=TARGET, isid=ISID_B
            )
            async with b:
                for _ in range(5):  # the new nexus' UAs first
                    if (await b.execute(0, reserve6)).status == Status.GOOD:
                        break
                assert (await read(a)).status == Status.RESERVATION_CONFLICT
                assert (await b.logout()).response == 0
                # no pause: the next command through the other session
                assert (await read(a)).status == Status.GOOD
