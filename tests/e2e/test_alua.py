"""ALUA seen by real initiators over iSCSI: one target, two portals, two port groups.

Portal 1 is group "a" (id 1, active/optimized), portal 2 group "b" (id 2,
standby). The same initiator (same name, same ISID) logs in through both,
as a multipath host does: two I_T nexuses, one per target port. Covers what
each port allows, REPORT / SET TARGET PORT GROUPS (and their hostile
inputs), the 2A/06 the other nexus gets, the operator's and the fault
rules' transitions, and state changes racing with commands in flight.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from pyscst.admin.client.connection import Client
from pyscst.scsi.sense import Status
from pyscst.transports.iscsi.initiator import Initiator, Result
from tests.daemon import (
    REPO_ROOT,
    RunningDaemon,
    alua_portals,
    free_ports,
    start_daemon,
    stop_daemon,
    write_config,
)

HOST = "127.0.0.1"
TARGET = "iqn.2026-11.org.pyscst:alua"
NAME = "iqn.2026-11.org.example:multipath-host"
ISID = 0x23D000000A1A
BS = 512

NOT_READY, HARDWARE_ERROR, ILLEGAL_REQUEST, UNIT_ATTENTION = 0x2, 0x4, 0x5, 0x6
AO, ANO, STANDBY, UNAVAILABLE, OFFLINE, TRANSITIONING = 0, 1, 2, 3, 0xE, 0xF


@contextlib.asynccontextmanager
async def running(workdir: Path, **target_extra: Any) -> AsyncIterator[tuple[RunningDaemon, int]]:
    """The daemon, and the port of its second portal."""
    port, port_b = free_ports(HOST, 2)
    config = write_config(
        workdir,
        port=port,
        host=HOST,
        target=TARGET,
        devices={"disk0": {"handler": "vdisk_fileio", "size": "4MiB"}},
        target_extra={
            **alua_portals(HOST, (port, port_b), ("active/optimized", "standby")),
            "alua_transition_time": 7,
            **target_extra,
        },
    )
    proc, info = await trio.to_thread.run_sync(
        lambda: start_daemon(config, host=HOST, port=port, target=TARGET)
    )
    try:
        yield info, port_b
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stop_daemon, proc, info)


@contextlib.asynccontextmanager
async def login(port: int) -> AsyncIterator[Initiator]:
    async with await Initiator.connect(
        HOST, port, initiator_name=NAME, target_name=TARGET, isid=ISID
    ) as ini:
        await drain_unit_attentions(ini)
        yield ini


async def drain_unit_attentions(ini: Initiator) -> list[tuple[int, int]]:
    """REQUEST SENSE until no UNIT ATTENTION is left (works in every state)."""
    seen: list[tuple[int, int]] = []
    for _ in range(20):
        r = await ini.execute(0, bytes((0x03, 0, 0, 0, 252, 0)), read_length=252)
        assert r.status == Status.GOOD, r
        if r.data[2] & 0x0F != UNIT_ATTENTION:
            return seen
        seen.append((r.data[12], r.data[13]))
    raise AssertionError(f"unit attentions never stop: {seen}")


def sense(r: Result) -> tuple[int, int, int]:
    assert r.status == Status.CHECK_CONDITION, r
    return r.sense[2] & 0x0F, r.sense[12], r.sense[13]


async def read(ini: Initiator, lba: int = 1) -> Result:
    return await ini.execute(0, struct.pack(">BBIBHB", 0x28, 0, lba, 0, 1, 0), read_length=BS)


async def tur(ini: Initiator) -> Result:
    return await ini.execute(0, bytes(6))


async def rtpg(ini: Initiator, alloc: int = 1024, extended: bool = True) -> Result:
    cdb = struct.pack(">BBxxxxIxx", 0xA3, (0x20 if extended else 0) | 0x0A, alloc)
    return await ini.execute(0, cdb, read_length=alloc)


def groups_of(data: bytes, extended: bool = True) -> dict[int, tuple[int, int, list[int]]]:
    """{group id: (state, status code, relative ports)} from RTPG data."""
    (length,) = struct.unpack_from(">I", data)
    at = 8 if extended else 4
    end = 4 + length
    out = {}
    while at < end:
        state, supported, gid, _, status, _, count = struct.unpack_from(">BBHBBBB", data, at)
        assert supported == 0xCF  # T O U S AN AO supported, no LBD
        ports = [struct.unpack_from(">HH", data, at + 8 + 4 * i)[1] for i in range(count)]
        out[gid] = (state & 0x0F, status, ports)
        at += 8 + 4 * count
    assert at == end
    return out


async def stpg(ini: Initiator, params: bytes, length: int | None = None) -> Result:
    n = len(params) if length is None else length
    cdb = struct.pack(">BBxxxxIxx", 0xA4, 0x0A, n)
    return await ini.execute(0, cdb, data_out=params)


def stpg_list(*pairs: tuple[int, int]) -> bytes:
    return bytes(4) + b"".join(struct.pack(">BxH", state, gid) for gid, state in pairs)


def vpd83_ids(data: bytes) -> tuple[int | None, int | None]:
    """(relative target port, target port group) designators of VPD page 0x83."""
    relative = group = None
    at = 4
    while at + 4 <= len(data):
        kind, length = data[at + 1] & 0x3F, data[at + 3]
        value = data[at + 4 : at + 4 + length]
        if kind == 0x14:
            relative = struct.unpack_from(">H", value, 2)[0]
        if kind == 0x15:
            group = struct.unpack_from(">H", value, 2)[0]
        at += 4 + length
    return relative, group


async def test_two_ports_two_groups_report_set_and_unit_attention(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as (info, port_b),
        login(info.port) as a,
        login(port_b) as b,
    ):
        # standard INQUIRY: TPGS 11b (implicit and explicit) on both ports
        for ini in (a, b):
            r = await ini.execute(0, bytes((0x12, 0, 0, 0, 96, 0)), read_length=96)
            assert r.status == Status.GOOD and r.data[5] & 0x30 == 0x30
        # VPD 0x83: each port names its relative port and its group
        for ini, expected in ((a, (1, 1)), (b, (2, 2))):
            r = await ini.execute(0, bytes((0x12, 1, 0x83, 1, 0, 0)), read_length=256)
            assert vpd83_ids(r.data) == expected
        # the standby port: no READ, no TEST UNIT READY; INQUIRY, RTPG still answer
        assert sense(await read(b)) == (NOT_READY, 0x04, 0x0B)
        assert sense(await tur(b)) == (NOT_READY, 0x04, 0x0B)
        assert (await read(a)).status == Status.GOOD
        r = await rtpg(b)
        assert r.status == Status.GOOD
        assert r.data[4] == 0x10 and r.data[5] == 7  # extended header, transition time
        assert groups_of(r.data) == {1: (AO, 0, [1]), 2: (STANDBY, 0, [2])}
        # SET TPGS through the standby port swaps them
        assert (await stpg(b, stpg_list((2, AO), (1, STANDBY)))).status == Status.GOOD
        # the other nexus hears of it, the one that asked does not
        assert sense(await tur(a)) == (UNIT_ATTENTION, 0x2A, 0x06)
        assert sense(await read(a)) == (NOT_READY, 0x04, 0x0B)
        assert (await read(b)).status == Status.GOOD
        r = await rtpg(a, extended=False)
        assert groups_of(r.data, extended=False) == {1: (STANDBY, 1, [1]), 2: (AO, 1, [2])}


async def test_hostile_set_and_report_target_port_groups(tmp_path: Path) -> None:
    async with running(tmp_path) as (info, _), login(info.port) as a:
        before = (await rtpg(a)).data
        # lengths that are not a header plus whole descriptors
        for params in (b"\0\0\0", bytes(6), bytes(4 + 5)):
            assert sense(await stpg(a, params)) == (ILLEGAL_REQUEST, 0x1A, 0x00)
        # an unknown group id: the field pointer names its bytes (C/D=0)
        r = await stpg(a, stpg_list((1, STANDBY), (9, AO)))
        assert sense(r) == (ILLEGAL_REQUEST, 0x26, 0x00)
        assert r.sense[15] == 0x80 and struct.unpack_from(">H", r.sense, 16)[0] == 10
        # states one cannot ask for: transitioning, LBA dependent, reserved
        for code in (TRANSITIONING, 0x4, 0x7):
            r = await stpg(a, stpg_list((2, code)))
            assert sense(r) == (ILLEGAL_REQUEST, 0x26, 0x00)
            assert r.sense[15] == 0x80 | 0x08 | 3  # SKSV, BPV, bit 3 of byte 4
            assert struct.unpack_from(">H", r.sense, 16)[0] == 4
        # the same group twice; reserved bits set
        assert sense(await stpg(a, stpg_list((1, AO), (1, STANDBY)))) == (ILLEGAL_REQUEST, 0x26, 0)
        assert sense(await stpg(a, bytes(4) + b"\x20\x00\x00\x01")) == (ILLEGAL_REQUEST, 0x26, 0)
        # a parameter list length beyond any valid list
        assert sense(await stpg(a, b"", length=0x7FFFFFFF)) == (ILLEGAL_REQUEST, 0x24, 0x00)
        # the CDB announces more than the initiator sends: nothing is applied
        short = await stpg(a, stpg_list((1, STANDBY)), length=12)
        assert sense(short) == (ILLEGAL_REQUEST, 0x0E, 0x03)
        # a refused list changed nothing (the first, valid descriptor neither)
        assert (await rtpg(a)).data == before
        # zero length: nothing to do
        assert (await stpg(a, b"")).status == Status.GOOD
        # REPORT TPGS: every tiny allocation length gets that prefix, no more
        full = (await rtpg(a)).data
        for alloc in (0, 1, 3, 4, 5, 8, 9, len(full) - 1):
            r = await rtpg(a, alloc)
            assert r.status == Status.GOOD and r.data == full[:alloc], alloc
        # a reserved PARAMETER DATA FORMAT
        cdb = struct.pack(">BBxxxxIxx", 0xA3, 0x40 | 0x0A, 64)
        assert sense(await a.execute(0, cdb, read_length=64)) == (ILLEGAL_REQUEST, 0x24, 0)


async def test_operator_states_transitions_and_faults(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as (info, port_b),
        login(info.port) as a,
        login(port_b) as b,
    ):
        client = Client(info.state_dir / "pyscst.sock")

        async def admin(op: str, **args: Any) -> Any:
            return await trio.to_thread.run_sync(lambda: client.call(op, **args))

        sessions = await admin("session.list", target=TARGET)
        assert sorted((s["port_group"], s["relative_port"]) for s in sessions) == [(1, 1), (2, 2)]
        shown = await admin("alua.show", target=TARGET)
        assert [(g["name"], g["state"]) for g in shown[0]["port_groups"]] == [
            ("a", "active/optimized"), ("b", "standby"),
        ]
        reply = await admin("alua.set", target=TARGET, group="b", state="unavailable")
        assert "standby -> unavailable" in reply["message"]
        assert await drain_unit_attentions(a) == [(0x2A, 0x06)]
        assert await drain_unit_attentions(b) == [(0x2A, 0x06)]
        assert sense(await read(b)) == (NOT_READY, 0x04, 0x0C)
        # unavailable still takes SET TPGS: the initiator moves its own port back
        assert (await stpg(b, stpg_list((2, ANO)))).status == Status.GOOD
        assert (await read(b)).status == Status.GOOD
        await admin("alua.set", target=TARGET, group="2", state="offline")
        await drain_unit_attentions(b)
        assert sense(await read(b)) == (NOT_READY, 0x04, 0x12)
        assert sense(await stpg(b, stpg_list((2, AO)))) == (NOT_READY, 0x04, 0x12)
        # a timed transitioning window: 04/0A meanwhile, the new state after
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: admin("alua.set", target=TARGET, group="a", state="standby",
                              transition=1.5)
            )
            with trio.fail_after(5):
                while True:
                    r = await read(a)
                    if r.status == Status.CHECK_CONDITION and r.sense[12] == 0x2A:
                        continue  # the 2A/06 of entering transitioning
                    if r.status != Status.GOOD:
                        break
                    await trio.sleep(0.05)
            assert sense(r) == (NOT_READY, 0x04, 0x0A)
            assert groups_of((await rtpg(a)).data)[1][0] == TRANSITIONING
        await drain_unit_attentions(a)
        assert sense(await read(a)) == (NOT_READY, 0x04, 0x0B)
        # fault rules: SET TPGS refused once, then slowed down
        await admin("fault.add", action="refuse_stpg", target=TARGET, times=1)
        r = await stpg(a, stpg_list((1, AO)))
        assert sense(r) == (HARDWARE_ERROR, 0x67, 0x0A)
        await admin("fault.add", action="slow_transition", target=TARGET, delay=0.5)
        started = trio.current_time()
        assert (await stpg(a, stpg_list((1, AO)))).status == Status.GOOD
        assert trio.current_time() - started >= 0.45
        assert (await read(a)).status == Status.GOOD
        # a forced transition: after two READs through a, group a goes standby
        await admin("fault.add", action="alua_transition", target=TARGET, op_class="read",
                    after=2, times=1, state="standby")
        await drain_unit_attentions(a)
        assert (await read(a)).status == Status.GOOD
        assert (await read(a)).status == Status.GOOD
        assert sense(await read(a)) == (NOT_READY, 0x04, 0x0B)
        shown = await admin("alua.show", target=TARGET)
        assert shown[0]["port_groups"][0]["state"] == "standby"
        assert shown[0]["port_groups"][0]["status"] == "altered_by_implicit_alua"


async def test_state_changes_racing_with_commands_in_flight(tmp_path: Path) -> None:
    """Many READs in flight on port a while its group flips between states: each
    gets GOOD, its state's NOT READY or the 2A/06 of a change, never anything
    else, and the daemon keeps serving."""
    async with running(tmp_path) as (info, _), login(info.port) as a:
        client = Client(info.state_dir / "pyscst.sock")
        outcomes: dict[str, int] = {}

        def flip() -> None:
            for i in range(20):
                states = ("standby", "active/optimized", "unavailable", "active/non-optimized")
                state = states[i % 4]
                client.call("alua.set", target=TARGET, group="a", state=state)

        async def reader(lba: int) -> None:
            for _ in range(20):
                r = await read(a, lba)
                if r.status == Status.GOOD:
                    key = "good"
                else:
                    key = "{:x}/{:02x}/{:02x}".format(*sense(r))
                outcomes[key] = outcomes.get(key, 0) + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, flip)
            for lba in range(8):
                nursery.start_soon(reader, lba)
        assert set(outcomes) <= {"good", "2/04/0b", "2/04/0c", "6/2a/06"}, outcomes
        assert sum(outcomes.values()) == 8 * 20
        client.call("alua.set", target=TARGET, group="a", state="active/optimized")
        await drain_unit_attentions(a)
        assert (await read(a)).status == Status.GOOD


async def test_discovery_cli_and_reload(tmp_path: Path) -> None:
    """SendTargets gives each portal its group's tag; ``pyscst admin alua`` shows
    and sets; a reload applies a group's changed configured state, nothing else."""
    async with running(tmp_path) as (info, port_b), login(info.port) as a:
        async with await Initiator.connect(HOST, info.port, initiator_name=NAME) as disc:
            found = dict(await disc.send_targets())
        assert sorted(found[TARGET]) == sorted(
            [f"{HOST}:{info.port},1", f"{HOST}:{port_b},2"]
        )
        socket_path = str(info.state_dir / "pyscst.sock")

        def admin(*args: str) -> subprocess.CompletedProcess[str]:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                              env.get("PYTHONPATH")]))
            command = [sys.executable, "-m", "pyscst", "admin", "--socket", socket_path, *args]
            return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

        shown = await trio.to_thread.run_sync(admin, "alua", "show", TARGET)
        assert shown.returncode == 0, shown.stderr
        assert "ALUA implicit and explicit, transition time 7 s" in shown.stdout
        assert any(ln.split()[:4] == ["b", "2", "2", "standby"] for ln in shown.stdout.splitlines())
        done = await trio.to_thread.run_sync(admin, "alua", "set", TARGET, "a", "unavailable")
        assert done.returncode == 0 and "active/optimized -> unavailable" in done.stdout
        assert sense(await tur(a)) == (UNIT_ATTENTION, 0x2A, 0x06)
        assert sense(await read(a)) == (NOT_READY, 0x04, 0x0C)
        # refusals name what is wrong and exit 1
        for args, words in (
            (("a", "sleepy"), "expected one of"),
            (("zz", "standby"), "has no port group zz"),
            (("a", "transitioning"), "passes through transitioning"),
        ):
            refused = await trio.to_thread.run_sync(admin, "alua", "set", TARGET, *args)
            assert refused.returncode == 1 and words in refused.stderr, refused
        # reload: b's state in the file changes (applied), a's does not (live state kept)
        text = info.config_path.read_text()
        assert text.count('state = "standby"') == 1
        changed = text.replace('state = "standby"', 'state = "active/non-optimized"')
        info.config_path.write_text(changed)
        client = Client(info.state_dir / "pyscst.sock")
        await trio.to_thread.run_sync(lambda: client.call("config.reload"))
        states = {g["name"]: g["state"] for g in client.call("alua.show")[0]["port_groups"]}
        assert states == {"a": "unavailable", "b": "active/non-optimized"}
