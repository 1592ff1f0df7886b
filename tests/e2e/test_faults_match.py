"""Every matcher and every trigger of a fault rule, seen by a real initiator.

The engine tests prove the logic on hand-made command facts; these prove that
the facts the daemon builds from a live iSCSI command (target, LUN, data
direction, ...) and the clock it passes make a rule fire on exactly the
commands and at exactly the times configured, and that each injection is
logged with the command it hit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.transports.iscsi.initiator import ConnectionLost, Initiator, LoginError
from tests.daemon import free_port
from tests.e2e.test_faults import (
    BS,
    CHECK_CONDITION,
    GOOD,
    INITIATOR,
    TARGET,
    TUR,
    cleared_and_healthy,
    daemon_with,
    login,
    op,
    read10,
    sense_of,
    settle,
    write10,
)

OTHER_TARGET = "iqn.2026-11.org.pyscst:other"
TWO_LUNS = '{ lun = 0, device = "disk0" }, { lun = 1, device = "disk1" }'
DISK1_AND_OTHER_TARGET = f"""
[devices.disk1]
handler = "vdisk_fileio"
size = "4MiB"
[targets."{OTHER_TARGET}"]
portals = ["127.0.0.1:@PORT@"]
luns = [{{ lun = 0, device = "disk1" }}]
"""
ABORTED_COMMAND = 0x0B


async def statuses(ini: Initiator, lun: int, cdbs: list[bytes]) -> list[int]:
    out = []
    for cdb in cdbs:
        if cdb[0] == 0x2A:
            r = await ini.execute(lun, cdb, data_out=bytes(BS))
        else:
            r = await ini.execute(lun, cdb, read_length=BS if cdb[0] == 0x28 else 0)
        out.append(r.status)
    return out


async def test_lun_and_target_match(tmp_path: Path) -> None:
    async with daemon_with(tmp_path, luns=TWO_LUNS, extra=DISK1_AND_OTHER_TARGET) as (daemon, port):
        await op(daemon, "fault.add", {"id": "lun1", "action": "status", "status": "busy",
                                       "lun": 1})  # fmt: skip
        await op(daemon, "fault.add", {"id": "other", "action": "status", "status": "task_set_full",
                                  "target": OTHER_TARGET.upper()})  # fmt: skip
        async with login(port) as ini:
            await ini.execute(1, TUR)  # LUN 1's own power-on UA comes before any fault
            assert await statuses(ini, 0, [read10(0), TUR]) == [GOOD, GOOD]
            assert await statuses(ini, 1, [read10(0), TUR]) == [0x08, 0x08]
        # disk1 is LUN 0 of the other target: the LUN rule does not apply there, the
        # target rule does
        async with await Initiator.connect(
            "127.0.0.1", port, initiator_name=INITIATOR, target_name=OTHER_TARGET
        ) as ini:
            await ini.execute(0, TUR)
            assert await statuses(ini, 0, [read10(0), TUR]) == [0x28, 0x28]
        listed = {r["id"]: r["injections"] for r in await op(daemon, "fault.list", {})}
        assert listed == {"lun1": 2, "other": 2}
        await cleared_and_healthy(daemon, port)


@pytest.mark.parametrize(
    ("direction", "expected"),
    [("none", [GOOD, GOOD, CHECK_CONDITION]), ("read", [CHECK_CONDITION, GOOD, GOOD]),
     ("write", [GOOD, CHECK_CONDITION, GOOD])],
)  # fmt: skip
async def test_direction_match(tmp_path: Path, direction: str, expected: list[int]) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"action": "check_condition", "direction": direction,
                                           "sense_key": "aborted_command", "asc": 0x47})
            assert await statuses(ini, 0, [read10(3), write10(3), TUR]) == expected
        await cleared_and_healthy(daemon, port)


async def test_opcode_list_and_other_class(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"id": "r16", "action": "status", "status": "busy",
                                           "opcodes": [0x88]})  # fmt: skip
            read16 = bytes([0x88, 0]) + (7).to_bytes(8, "big") + (1).to_bytes(4, "big") + bytes(2)
            assert (await ini.execute(0, read16, read_length=BS)).status == 0x08
            assert (await ini.execute(0, read10(7), read_length=BS)).status == GOOD
            await op(daemon, "fault.remove", {"id": "r16"})
            await op(daemon, "fault.add", {"action": "status", "status": "busy",
                                           "op_class": "other"})  # fmt: skip
            assert await statuses(ini, 0, [read10(1), write10(1), TUR]) == [GOOD, GOOD, 0x08]
        await cleared_and_healthy(daemon, port)


async def test_after_every_times_from_an_initiator(tmp_path: Path) -> None:
    """Skip the first 2 matches, then every 3rd, at most 3 times: matches 5, 8, 11."""
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"id": "t", "action": "check_condition",
                                           "op_class": "read", "after": 2, "every": 3,
                                           "times": 3})  # fmt: skip
            failed = []
            for n in range(1, 21):
                await ini.execute(0, TUR)  # not a read: never counted as a match
                if (await ini.execute(0, read10(n), read_length=BS)).status != GOOD:
                    failed.append(n)
            assert failed == [5, 8, 11]
        [stats] = await op(daemon, "fault.stats", {"id": "t"})
        assert stats["matches"] == 20 and stats["injections"] == 3
        assert [hit["lba"] for hit in stats["recent"]] == [5, 8, 11]
        await cleared_and_healthy(daemon, port)


async def test_time_window(tmp_path: Path) -> None:
    """A rule live from 0.4 s to 0.8 s after it was added, and again after enable."""
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"id": "w", "action": "status", "status": "busy",
                                           "opcodes": [0x00], "window": [0.4, 0.8]})
            start = trio.current_time()
            # (sent, answered, status), seconds since the rule was armed: the rule
            # looked at the clock somewhere between sending and the answer
            seen: list[tuple[float, float, int]] = []
            while (sent := trio.current_time() - start) < 1.1:
                status = (await ini.execute(0, TUR)).status
                seen.append((sent, trio.current_time() - start, status))
                await trio.sleep(0.05)
            eps = 0.01
            assert all(s == GOOD for t0, t1, s in seen if t1 < 0.4 - eps or t0 > 0.8 + eps)
            assert all(s == 0x08 for t0, t1, s in seen if t0 > 0.4 + eps and t1 < 0.8 - eps)
            assert any(s == 0x08 for _, _, s in seen)
            await op(daemon, "fault.disable", {"id": "w"})
            await op(daemon, "fault.enable", {"id": "w"})  # the window starts again
            assert (await ini.execute(0, TUR)).status == GOOD
            await trio.sleep(0.5)
            assert (await ini.execute(0, TUR)).status == 0x08
        await cleared_and_healthy(daemon, port)


async def test_every_injection_is_logged_with_its_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyscst.actors.faults")
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"id": "logged", "action": "check_condition",
                                           "lba": [33, 40], "times": 2})  # fmt: skip
            itt = ini.submit(0, read10(30, 8), read_length=8 * BS)
            r = await ini.wait(itt)
            assert sense_of(r)[3] == 33
            await ini.execute(0, write10(40), data_out=bytes(BS))
        lines = [r.getMessage() for r in caplog.records if "fault logged" in r.getMessage()]
        assert len(lines) == 2
        assert f"initiator={INITIATOR}" in lines[0] and f"target={TARGET}" in lines[0]
        assert "lun=0" in lines[0] and "opcode=0x28" in lines[0] and "lba=30" in lines[0]
        assert f"tag={itt:#x}" in lines[0] and "#1" in lines[0]
        assert "opcode=0x2a" in lines[1] and "lba=40" in lines[1] and "#2" in lines[1]
        await cleared_and_healthy(daemon, port)


async def test_first_enabled_rule_wins(tmp_path: Path) -> None:
    rules = """
[[faults]]
id = "first"
action = "status"
status = "busy"
opcodes = [0x00]
times = 1
[[faults]]
id = "second"
action = "check_condition"
sense_key = "aborted_command"
opcodes = [0x00]
"""
    async with daemon_with(tmp_path, rules) as (daemon, port):
        async with await Initiator.connect(
            "127.0.0.1", port, initiator_name=INITIATOR, target_name=TARGET
        ) as ini:
            await ini.execute(0, read10(0), read_length=BS)  # the power-on UA
            assert (await ini.execute(0, TUR)).status == 0x08
            r = await ini.execute(0, TUR)  # "first" is used up: the next rule decides
            assert sense_of(r)[0] == ABORTED_COMMAND
            await op(daemon, "fault.disable", {"id": "second"})
            await settle(ini)
        await cleared_and_healthy(daemon, port)


async def test_seeded_rule_from_config_replays_across_daemon_runs(tmp_path: Path) -> None:
    """The same config and the same command sequence: the same commands fail, with
    the same jittered delays, in a second daemon process tree."""
    rules = """
[[faults]]
id = "flaky"
action = "check_condition"
op_class = "read"
probability = 0.2
seed = 2026
[[faults]]
id = "jittery"
action = "delay"
op_class = "write"
jitter = 0.02
probability = 0.5
"""

    async def run(n: int) -> tuple[list[int], list[tuple[int, float]]]:
        async with daemon_with(tmp_path / str(n), rules) as (daemon, port):
            async with login(port) as ini:
                failed = []
                for lba in range(40):
                    await ini.execute(0, write10(lba), data_out=bytes(BS))
                    if (await ini.execute(0, read10(lba), read_length=BS)).status != GOOD:
                        failed.append(lba)
            [stats] = await op(daemon, "fault.stats", {"id": "jittery"})
            return failed, [(hit["lba"], hit["delay"]) for hit in stats["recent"]]

    first, second = await run(1), await run(2)
    assert first == second
    assert 2 <= len(first[0]) <= 20 and 5 <= len(first[1]) <= 20
    delays = [delay for _, delay in first[1]]
    assert all(0 <= d <= 0.02 for d in delays) and len(set(delays)) == len(delays)  # uniform


async def lu_designators(ini: Initiator) -> list[bytes]:
    """The logical unit's own designators in VPD page 83h (association 0): what
    multipath tools group paths by."""
    r = await ini.execute(0, bytes([0x12, 1, 0x83, 0, 255, 0]), read_length=255)
    assert r.status == GOOD
    page, out, off = r.data, [], 4
    while off + 4 <= len(page):
        length = page[off + 3]
        if (page[off + 1] >> 4) & 3 == 0:
            out.append(bytes(page[off : off + 4 + length]))
        off += 4 + length
    return out


async def test_path_failure_for_multipath(tmp_path: Path) -> None:
    """Two paths to one disk (two targets exporting disk0, as dm-multipath sees
    them: same device identifier). Path B fails (its connection drops, logins to
    it are refused) while path A keeps serving; removing the rules restores B,
    which sees what was written through A meanwhile."""
    path_b = "iqn.2026-11.org.pyscst:path-b"
    extra = f"""
[targets."{path_b}"]
portals = ["127.0.0.1:@PORT@"]
luns = [{{ lun = 0, device = "disk0" }}]
"""

    def connect(target: str) -> Any:
        return Initiator.connect("127.0.0.1", port, initiator_name=INITIATOR, target_name=target)

    async with daemon_with(tmp_path, extra=extra) as (daemon, port):
        async with await connect(TARGET) as a, await connect(path_b) as b:
            await settle(a)
            await settle(b)
            assert await lu_designators(a) == await lu_designators(b) != []
            await op(daemon, "fault.add", {"id": "b-down", "action": "drop_connection",
                                           "target": path_b, "times": 1})  # fmt: skip
            await op(daemon, "fault.add", {"id": "b-refused", "action": "refuse_login",
                                           "target": path_b})  # fmt: skip
            with pytest.raises(ConnectionLost):
                await b.execute(0, read10(0), read_length=BS)
            with pytest.raises(LoginError):
                async with await connect(path_b):
                    pass
            assert (await a.execute(0, write10(77), data_out=b"A" * BS)).status == GOOD
            await op(daemon, "fault.remove", {"id": "b-refused"})
            async with await connect(path_b) as b2:
                await settle(b2)
                r = await b2.execute(0, read10(77), read_length=BS)
                assert r.status == GOOD and r.data == b"A" * BS
        await cleared_and_healthy(daemon, port)


def connect_on(port: int) -> Any:
    """A session with TARGET through the portal listening on ``port``."""
    return Initiator.connect("127.0.0.1", port, initiator_name=INITIATOR, target_name=TARGET)


async def test_transport_rules_match_one_portal(tmp_path: Path) -> None:
    """Transport rules take ``portal`` too: one path of a two-portal target
    refuses logins and leaves pings unanswered while the other path works."""
    port_b = free_port()
    portals = f'"127.0.0.1:@PORT@", "127.0.0.1:{port_b}"'
    async with daemon_with(tmp_path, portals=portals) as (daemon, port):

        async with await connect_on(port) as a, await connect_on(port_b) as b:
            await op(daemon, "fault.add", {"id": "b-mute", "action": "nop_stall",
                                           "portal": f"*:{port_b}"})  # fmt: skip
            await op(daemon, "fault.add", {"id": "b-refused", "action": "refuse_login",
                                           "portal": f"127.0.0.1:{port_b}"})  # fmt: skip
            assert await a.nop(b"a") == b"a"
            with trio.move_on_after(0.5) as stuck:
                await b.nop(b"b")
            assert stuck.cancelled_caught
        with pytest.raises(LoginError):
            async with await connect_on(port_b):
                pass
        async with await connect_on(port) as again:
            assert await again.nop(b"still") == b"still"
        for rule in ("b-mute", "b-refused"):
            [stats] = await op(daemon, "fault.stats", {"id": rule})
            assert [hit["portal"] for hit in stats["recent"]] == [f"127.0.0.1:{port_b}"]
        await cleared_and_healthy(daemon, port)


async def test_portal_match_fails_one_path_of_a_target(tmp_path: Path) -> None:
    """One target on two portals (two paths): commands arriving on the second
    portal hang, the first portal's keep being served; the log names the portal."""
    port_b = free_port()
    portals = f'"127.0.0.1:@PORT@", "127.0.0.1:{port_b}"'
    async with daemon_with(tmp_path, portals=portals) as (daemon, port):
        await op(daemon, "fault.add", {"id": "b-hangs", "action": "hang",
                                       "portal": f"*:{port_b}"})  # fmt: skip

        async with await connect_on(port) as a, await connect_on(port_b) as b:
            r = await b.execute(0, TUR)  # the power-on UA is reported before any fault
            assert sense_of(r)[:2] == (0x6, 0x29)
            itt = b.submit(0, read10(1), read_length=BS)
            with trio.move_on_after(0.5) as stuck:
                await b.wait(itt)
            assert stuck.cancelled_caught
            await settle(a)
            assert (await a.execute(0, read10(1), read_length=BS)).status == GOOD
        [stats] = await op(daemon, "fault.stats", {"id": "b-hangs"})
        assert [hit["portal"] for hit in stats["recent"]] == [f"127.0.0.1:{port_b}"]
        await cleared_and_healthy(daemon, port)
