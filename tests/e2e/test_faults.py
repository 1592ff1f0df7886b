"""Every fault action, seen by a real initiator over iSCSI, and the daemon healthy after.

Each test runs the real daemon tree in-process (devices, LUs, portal, control
ops) with a file-backed disk, arms one rule (from ``[[faults]]`` config text or
live through the ``fault.*`` ops), and drives it with our Trio initiator: the
initiator must see exactly the configured failure, and a later command on a
fresh or the same session must succeed.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.admin.control.protocol import OpError
from pyscst.scsi.command import TaskAttribute
from pyscst.supervision.daemon import Daemon
from pyscst.transports.iscsi.initiator import ConnectionLost, Initiator, LoginError, Result
from pyscst.transports.iscsi.pdu import AsyncMessage, ProtocolError
from tests.cdbs import TUR, read10, write10
from tests.daemon import in_process_daemon

F, R = TmfFunction, TmfResponse  # TMF function and response codes, by name

TARGET = "iqn.2026-11.org.pyscst:faults"
INITIATOR = "iqn.2026-11.org.example:host1"
BS = 512
GOOD, CHECK_CONDITION = 0x00, 0x02
MEDIUM_ERROR, HARDWARE_ERROR, ABORTED_COMMAND, UNIT_ATTENTION = 0x3, 0x4, 0xB, 0x6


def sense_of(result: Result) -> tuple[int, int, int, int | None]:
    """(key, asc, ascq, INFORMATION or None) from fixed-format sense."""
    s = result.sense
    info = struct.unpack_from(">I", s, 3)[0] if s[0] & 0x80 else None
    return s[2] & 0x0F, s[12], s[13], info


@asynccontextmanager
async def daemon_with(
    tmp_path: Path, faults_toml: str = "", luns: str = '{ lun = 0, device = "disk0" }',
    extra: str = "", portals: str = '"127.0.0.1:@PORT@"',
) -> AsyncIterator[tuple[Daemon, int]]:
    """The daemon with ``disk0`` on ``TARGET`` (or ``luns``), ``extra`` config (``@PORT@``: the
    portal port) and the ``[[faults]]`` text."""
    body = f"""
[devices.disk0]
handler = "vdisk_fileio"
size = "4MiB"
[targets."{TARGET}"]
portals = [{portals}]
luns = [{luns}]
{extra}
{faults_toml}
"""
    async with in_process_daemon(tmp_path, body) as running:
        yield running


@asynccontextmanager
async def login(port: int, **kwargs: Any) -> AsyncIterator[Initiator]:
    """A logged-in session whose power-on unit attention is already consumed."""
    ini = await Initiator.connect(
        "127.0.0.1", port, initiator_name=INITIATOR, target_name=TARGET, **kwargs
    )
    async with ini:
        await settle(ini)
        yield ini


async def settle(ini: Initiator) -> None:
    """Consume the power-on / reset unit attentions."""
    for _ in range(5):
        if (await ini.execute(0, TUR)).status == GOOD:
            return
    raise AssertionError("TEST UNIT READY never GOOD")


async def healthy(port: int) -> None:
    """A fresh session can read and write: the daemon survived the fault."""
    async with login(port) as ini:
        assert (await ini.execute(0, write10(2000), data_out=b"h" * BS)).status == GOOD
        r = await ini.execute(0, read10(2000), read_length=BS)
        assert r.status == GOOD and r.data == b"h" * BS


async def cleared_and_healthy(daemon: Daemon, port: int) -> None:
    """Remove every rule, then a fresh session must read and write, and once the
    sessions are gone no logical unit may keep a task (hung, dropped, aborted)."""
    for rule in await op(daemon, "fault.list", {}):
        await op(daemon, "fault.remove", {"id": rule["id"]})
    await healthy(port)
    units: list[Any] = [daemon.units[name] for name in daemon.unit_children]
    with trio.move_on_after(5):
        while any(lu.task_count() for lu in units):
            await trio.sleep(0.01)
    assert {lu.name: lu.task_count() for lu in units if lu.task_count()} == {}


async def op(daemon: Daemon, name: str, args: Mapping[str, Any]) -> Any:
    return await daemon.control_ops[name](args)


# -- CHECK CONDITION and statuses ----------------------------------------------------


async def test_check_condition_with_information_at_first_failing_lba(tmp_path: Path) -> None:
    rules = """
[[faults]]
id = "unreadable"
action = "check_condition"
op_class = "read"
lba = [100, 199]
sense_key = "medium_error"
asc = 0x11
ascq = 0x00
"""
    async with daemon_with(tmp_path, rules) as (daemon, port):
        async with login(port) as ini:
            r = await ini.execute(0, read10(90, 16), read_length=16 * BS)
            assert r.status == CHECK_CONDITION
            assert sense_of(r) == (MEDIUM_ERROR, 0x11, 0x00, 100)
            assert (await ini.execute(0, read10(0, 16), read_length=16 * BS)).status == GOOD
            assert (await ini.execute(0, read10(200), read_length=BS)).status == GOOD
            # writes to the range are not matched (op_class = read)
            assert (await ini.execute(0, write10(150), data_out=bytes(BS))).status == GOOD
        [stats] = await op(daemon, "fault.stats", {"id": "unreadable"})
        assert stats["injections"] == 1 and stats["matches"] == 1
        assert stats["recent"][0]["lba"] == 90 and stats["recent"][0]["opcode"] == 0x28
        await healthy(port)


async def test_hardware_error_on_one_initiator_only(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        await op(daemon, "fault.add", {
            "action": "check_condition", "initiator": "*:host1", "sense_key": "hardware_error",
            "asc": 0x44, "ascq": 0, "opcodes": [0x00],
        })  # fmt: skip
        async with await Initiator.connect(
            "127.0.0.1", port, initiator_name=INITIATOR, target_name=TARGET
        ) as ini:
            r = await ini.execute(0, TUR)  # the power-on UA still comes first
            assert sense_of(r)[0] == UNIT_ATTENTION
            r = await ini.execute(0, TUR)
            assert r.status == CHECK_CONDITION and sense_of(r)[:3] == (HARDWARE_ERROR, 0x44, 0)
        other = "iqn.2026-11.org.example:host2"
        async with await Initiator.connect(
            "127.0.0.1", port, initiator_name=other, target_name=TARGET
        ) as ini2:
            await settle(ini2)
        await cleared_and_healthy(daemon, port)


@pytest.mark.parametrize(
    ("name", "code"),
    [("busy", 0x08), ("task_set_full", 0x28), ("reservation_conflict", 0x18), ("aca_active", 0x30)],
)
async def test_status_instead_of_execution(tmp_path: Path, name: str, code: int) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {
                "id": "s", "action": "status", "status": name, "op_class": "write", "times": 1,
            })  # fmt: skip
            r = await ini.execute(0, write10(7), data_out=b"x" * BS)
            assert r.status == code and r.sense == b""
            # not executed: the block still reads as zeros; the next write goes through
            assert (await ini.execute(0, read10(7), read_length=BS)).data == bytes(BS)
            assert (await ini.execute(0, write10(7), data_out=b"x" * BS)).status == GOOD
        await healthy(port)


# -- delays and hangs ------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["before", "after"])
async def test_delay(tmp_path: Path, phase: str) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {
                "action": "delay", "delay": 0.3, "jitter": 0.1, "phase": phase, "lba": [5],
            })  # fmt: skip
            t0 = trio.current_time()
            assert (await ini.execute(0, read10(5), read_length=BS)).status == GOOD
            slow = trio.current_time() - t0
            t0 = trio.current_time()
            assert (await ini.execute(0, read10(6), read_length=BS)).status == GOOD
            fast = trio.current_time() - t0
            assert 0.3 <= slow < 1.0 and fast < 0.2
        await cleared_and_healthy(daemon, port)


@pytest.mark.parametrize(("phase", "landed_early"), [("before", False), ("after", True)])
async def test_delay_phase_decides_when_the_write_lands(
    tmp_path: Path, phase: str, landed_early: bool
) -> None:
    """Delay before execution: nothing written while the initiator waits. Delay
    before the response: the data is on the medium, only the status is late.
    A HEAD OF QUEUE read (it may overtake the overlapping write) looks meanwhile."""
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {
                "action": "delay", "delay": 0.6, "phase": phase, "direction": "write",
            })  # fmt: skip
            t0 = trio.current_time()
            itt = ini.submit(0, write10(10), data_out=b"n" * BS)
            await trio.sleep(0.3)
            hoq = TaskAttribute.HEAD_OF_QUEUE
            peek = await ini.execute(0, read10(10), read_length=BS, attr=hoq)
            assert peek.status == GOOD and peek.data == (b"n" * BS if landed_early else bytes(BS))
            assert (await ini.wait(itt)).status == GOOD
            assert trio.current_time() - t0 >= 0.6
            assert (await ini.execute(0, read10(10), read_length=BS)).data == b"n" * BS
        await op(daemon, "fault.remove", {"id": "fault-1"})
        await healthy(port)


async def test_hang_until_abort_task(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"action": "hang", "lba": [42], "times": 1})
            itt = ini.submit(0, read10(42), read_length=BS)
            with trio.move_on_after(0.5) as timeout:
                await ini.wait(itt)
            assert timeout.cancelled_caught
            assert await ini.task_management(F.ABORT_TASK, 0, itt) == R.COMPLETE
            assert (await ini.execute(0, read10(42), read_length=BS)).status == GOOD
        await healthy(port)


async def test_hang_until_lun_reset(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"action": "hang", "op_class": "write", "times": 2})
            itts = [ini.submit(0, write10(n), data_out=bytes(BS)) for n in (1, 2)]
            await trio.sleep(0.2)
            assert await ini.task_management(F.LOGICAL_UNIT_RESET, 0) == R.COMPLETE
            r = await ini.execute(0, TUR)
            assert sense_of(r)[:3] == (UNIT_ATTENTION, 0x29, 0x03)
            assert (await ini.execute(0, TUR)).status == GOOD
            for itt in itts:  # no answer ever comes for the aborted commands
                with trio.move_on_after(0.1) as silent:
                    await ini.wait(itt)
                assert silent.cancelled_caught
        await healthy(port)


# -- connection and session drops -------------------------------------------------------


async def test_drop_connection_before_execution(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        await op(daemon, "fault.add", {"action": "drop_connection", "lba": [300], "times": 1})
        async with login(port) as ini:
            with pytest.raises(ConnectionLost):
                await ini.execute(0, write10(300), data_out=b"d" * BS)
        async with login(port) as ini:  # not written: dropped before execution
            assert (await ini.execute(0, read10(300), read_length=BS)).data == bytes(BS)
        await healthy(port)


async def test_drop_connection_after_execution(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        await op(daemon, "fault.add", {
            "action": "drop_connection", "phase": "after", "lba": [301], "times": 1,
        })  # fmt: skip
        async with login(port) as ini:
            with pytest.raises(ConnectionLost):
                await ini.execute(0, write10(301), data_out=b"e" * BS)
        async with login(port) as ini:  # executed, only the answer was lost
            assert (await ini.execute(0, read10(301), read_length=BS)).data == b"e" * BS
        await healthy(port)


async def test_drop_session_announces_it(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        await op(daemon, "fault.add", {"action": "drop_session", "opcodes": [0x00], "times": 1})
        async with await Initiator.connect(
            "127.0.0.1", port, initiator_name=INITIATOR, target_name=TARGET
        ) as ini:
            await ini.execute(0, read10(0), read_length=BS)  # the power-on UA
            with pytest.raises(ConnectionLost):
                await ini.execute(0, TUR)
            event = await ini.recv_pdu()
            assert isinstance(event, AsyncMessage) and event.async_event == 3
        await healthy(port)


async def test_drop_session_after_execution(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        await op(daemon, "fault.add", {
            "action": "drop_session", "phase": "after", "lba": [302], "times": 1,
        })  # fmt: skip
        async with login(port) as ini:
            with pytest.raises(ConnectionLost):
                await ini.execute(0, write10(302), data_out=b"s" * BS)
            event = await ini.recv_pdu()
            assert isinstance(event, AsyncMessage) and event.async_event == 3
        async with login(port) as ini:  # executed before the session went
            assert (await ini.execute(0, read10(302), read_length=BS)).data == b"s" * BS
        await cleared_and_healthy(daemon, port)


# -- data faults -----------------------------------------------------------------------


async def test_corrupt_read_flips_exactly_the_configured_bits(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            pattern = bytes(range(256)) * 16  # 8 blocks
            assert (await ini.execute(0, write10(400, 8), data_out=pattern)).status == GOOD
            await op(daemon, "fault.add", {
                "id": "rot", "action": "corrupt_read", "bits": 3, "seed": 11, "lba": [400, 407],
            })  # fmt: skip
            seen = []
            for _ in range(2):
                r = await ini.execute(0, read10(400, 8), read_length=len(pattern))
                assert r.status == GOOD
                diff = int.from_bytes(r.data, "big") ^ int.from_bytes(pattern, "big")
                assert 1 <= diff.bit_count() <= 3  # 3 flips (two may coincide)
                seen.append(diff)
            await op(daemon, "fault.remove", {"id": "rot"})
            clean = await ini.execute(0, read10(400, 8), read_length=len(pattern))
            assert clean.data == pattern  # the medium itself was never touched
            # the same seed replays the same corruption
            await op(daemon, "fault.add", {
                "id": "rot", "action": "corrupt_read", "bits": 3, "seed": 11, "lba": [400, 407],
            })  # fmt: skip
            r = await ini.execute(0, read10(400, 8), read_length=len(pattern))
            assert int.from_bytes(r.data, "big") ^ int.from_bytes(pattern, "big") == seen[0]
        await cleared_and_healthy(daemon, port)


@pytest.mark.parametrize("blocks", [8, 1024])  # immediate data; 512 KiB: R2Ts
async def test_torn_write(tmp_path: Path, blocks: int) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            keep = blocks * 3 // 8
            await op(daemon, "fault.add", {"action": "torn_write", "blocks": keep, "times": 1})
            data = b"".join(bytes([n % 251 + 1]) * BS for n in range(blocks))
            r = await ini.execute(0, write10(500, blocks), data_out=data)
            assert r.status == CHECK_CONDITION
            assert sense_of(r) == (MEDIUM_ERROR, 0x0C, 0x00, 500 + keep)
            r = await ini.execute(0, read10(500, blocks), read_length=len(data))
            assert r.data == data[: keep * BS] + bytes((blocks - keep) * BS)
            assert (await ini.execute(0, write10(500, blocks), data_out=data)).status == GOOD
            r = await ini.execute(0, read10(500, blocks), read_length=len(data))
            assert r.data == data
        await healthy(port)


async def test_bad_blocks_fail_until_rewritten(tmp_path: Path) -> None:
    rules = """
[[faults]]
id = "dust"
action = "bad_blocks"
lbas = [60, 64]
"""
    async with daemon_with(tmp_path, rules) as (daemon, port):
        async with login(port) as ini:
            r = await ini.execute(0, read10(58, 8), read_length=8 * BS)
            assert sense_of(r) == (MEDIUM_ERROR, 0x11, 0x00, 60)
            assert (await ini.execute(0, read10(50, 8), read_length=8 * BS)).status == GOOD
            assert (await ini.execute(0, write10(60), data_out=b"r" * BS)).status == GOOD
            r = await ini.execute(0, read10(58, 8), read_length=8 * BS)
            assert sense_of(r) == (MEDIUM_ERROR, 0x11, 0x00, 64)
            assert (await ini.execute(0, write10(64), data_out=b"r" * BS)).status == GOOD
            assert (await ini.execute(0, read10(58, 8), read_length=8 * BS)).status == GOOD
        [listed] = await op(daemon, "fault.list", {})
        assert listed["bad_blocks"] == [] and listed["injections"] == 2
        await cleared_and_healthy(daemon, port)


async def test_bad_blocks_grow(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        await op(daemon, "fault.add", {
            "id": "dying", "action": "bad_blocks", "grow": True, "every": 3, "lba": [0, 99],
        })  # fmt: skip
        async with login(port) as ini:
            outcomes = [
                (await ini.execute(0, read10(n * 10, 10), read_length=10 * BS)).status
                for n in range(9)
            ]
            assert outcomes.count(CHECK_CONDITION) == 3
        [listed] = await op(daemon, "fault.list", {})
        assert len(listed["bad_blocks"]) == 3
        assert all(0 <= lba <= 99 for lba in listed["bad_blocks"])
        await cleared_and_healthy(daemon, port)


# -- crashing the device handler --------------------------------------------------------


async def test_crash_device_handler(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"action": "hang", "lba": [800]})
            stuck = ini.submit(0, read10(800), read_length=BS)
            await trio.sleep(0.1)
            await op(daemon, "fault.add", {"action": "crash_device", "lba": [900], "times": 1})
            r = await ini.execute(0, read10(900), read_length=BS)
            assert r.status == CHECK_CONDITION and sense_of(r)[0] == ABORTED_COMMAND
            other = await ini.wait(stuck)  # the other in-flight command: retryable too
            assert other.status == CHECK_CONDITION and sense_of(other)[0] == ABORTED_COMMAND
            r = await ini.execute(0, TUR)
            assert sense_of(r)[:3] == (UNIT_ATTENTION, 0x29, 0x04)  # DEVICE INTERNAL RESET
            with trio.fail_after(5):  # NOT READY until the supervisor restarted it
                while (await ini.execute(0, TUR)).status != GOOD:
                    await trio.sleep(0.05)
            unit = daemon.device_unit("disk0")
            assert unit is not None and unit.crashes == 1 and unit.state.value == "online"
            await op(daemon, "fault.remove", {"id": "fault-1"})
            assert (await ini.execute(0, read10(800), read_length=BS)).status == GOOD
        await healthy(port)


async def test_unlimited_crash_rule_takes_the_device_offline_not_the_daemon(
    tmp_path: Path,
) -> None:
    """Without ``times`` a crash rule crashes the handler on every read: the engine
    no longer holds crashes back; the device's supervisor gives up beyond its
    budget and the device goes offline (NOT READY, MANUAL INTERVENTION REQUIRED)
    while the daemon keeps running; ``device.restart`` brings it back."""
    async with daemon_with(tmp_path) as (daemon, port):
        unit = daemon.device_unit("disk0")
        assert unit is not None
        async with login(port) as ini:
            await op(daemon, "fault.add", {"id": "storm", "action": "crash_device",
                                           "op_class": "read"})  # fmt: skip
            with trio.fail_after(30):
                while unit.state.value != "offline":
                    await ini.execute(0, read10(1), read_length=BS)
                    await trio.sleep(0.02)
            assert unit.crashes == unit.budget.max_restarts + 1
            await op(daemon, "fault.remove", {"id": "storm"})
            r = await ini.execute(0, TUR)
            while r.status == CHECK_CONDITION and sense_of(r)[0] == UNIT_ATTENTION:
                r = await ini.execute(0, TUR)
            assert sense_of(r)[:3] == (0x2, 0x04, 0x03)
            reply = await op(daemon, "device.restart", {"name": "disk0"})
            assert "online" in reply["message"]
            r = await ini.execute(0, TUR)
            assert sense_of(r)[:3] == (UNIT_ATTENTION, 0x29, 0x00)
            assert (await ini.execute(0, TUR)).status == GOOD
        await cleared_and_healthy(daemon, port)


# -- iSCSI transport faults ----------------------------------------------------------------


async def test_pdu_drop_loses_one_response(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {
                "action": "pdu_drop", "pdus": ["scsi_response"], "times": 1,
            })  # fmt: skip
            itt = ini.submit(0, TUR)
            with trio.move_on_after(0.5) as timeout:
                await ini.wait(itt)
            assert timeout.cancelled_caught
            assert (await ini.execute(0, TUR)).status == GOOD
        await cleared_and_healthy(daemon, port)


async def test_pdu_delay(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"action": "pdu_delay", "pdus": ["data_in"],
                                           "delay": 0.3})
            t0 = trio.current_time()
            assert (await ini.execute(0, read10(0), read_length=BS)).status == GOOD
            assert trio.current_time() - t0 >= 0.3
            t0 = trio.current_time()
            assert (await ini.execute(0, TUR)).status == GOOD  # no Data-In: not delayed
            assert trio.current_time() - t0 < 0.2
        await cleared_and_healthy(daemon, port)


async def test_incoming_pdu_delay(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"action": "pdu_delay", "pdus": ["scsi_command"],
                                           "delay": 0.3, "times": 1})
            t0 = trio.current_time()
            assert (await ini.execute(0, TUR)).status == GOOD
            assert trio.current_time() - t0 >= 0.3
        await cleared_and_healthy(daemon, port)


async def test_digest_error(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port, data_digest=True) as ini:
            await op(daemon, "fault.add", {"action": "digest_error", "pdus": ["data_in"],
                                           "times": 1})
            itt = ini.submit(0, read10(0), read_length=BS)
            with trio.fail_after(2):
                event = await ini.recv_pdu()
            assert isinstance(event, ProtocolError) and "data digest" in event.reason
            with trio.move_on_after(0.3):
                await ini.wait(itt)  # its status rode on the PDU that was discarded
            assert (await ini.execute(0, read10(0), read_length=BS)).status == GOOD
        await cleared_and_healthy(daemon, port)


@pytest.mark.parametrize("pdus", [["scsi_response"], []])
async def test_header_digest_error(tmp_path: Path, pdus: list[str]) -> None:
    """Without ``pdus`` the rule must not spend its one injection on the incoming
    SCSI Command (the target cannot break the digest of what it receives)."""
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port, header_digest=True) as ini:
            await op(daemon, "fault.add", {"action": "digest_error", "times": 1,
                                           **({"pdus": pdus} if pdus else {})})  # fmt: skip
            ini.submit(0, TUR)
            with trio.fail_after(2):
                event = await ini.recv_pdu()
            assert isinstance(event, ProtocolError) and "header digest" in event.reason
        await cleared_and_healthy(daemon, port)


async def test_lost_command_pdu(tmp_path: Path) -> None:
    """An incoming SCSI Command PDU vanishes: no answer for it (a CmdSN gap), and
    the daemon serves the next session normally."""
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"id": "lost", "action": "pdu_drop",
                                           "pdus": ["scsi_command"], "times": 1})  # fmt: skip
            itt = ini.submit(0, write10(600), data_out=b"L" * BS)
            with trio.move_on_after(0.5) as timeout:
                await ini.wait(itt)
            assert timeout.cancelled_caught
        [stats] = await op(daemon, "fault.stats", {"id": "lost"})
        assert stats["recent"][0]["pdu"] == "scsi_command"
        async with login(port) as ini:  # never executed
            assert (await ini.execute(0, read10(600), read_length=BS)).data == bytes(BS)
        await cleared_and_healthy(daemon, port)


async def test_nop_stall(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        async with login(port) as ini:
            await op(daemon, "fault.add", {"id": "mute", "action": "nop_stall"})
            with trio.move_on_after(0.5) as timeout:
                await ini.nop(b"ping")
            assert timeout.cancelled_caught
            await op(daemon, "fault.remove", {"id": "mute"})
            await op(daemon, "fault.add", {"action": "nop_stall", "delay": 0.3})
            t0 = trio.current_time()
            assert await ini.nop(b"late") == b"late"
            assert trio.current_time() - t0 >= 0.3
            assert (await ini.execute(0, TUR)).status == GOOD
        await cleared_and_healthy(daemon, port)


async def test_refuse_logins_for_a_while(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        await op(daemon, "fault.add", {"action": "refuse_login", "window": [0, 0.6]})
        with pytest.raises(LoginError) as refused:
            async with login(port):
                pass
        assert (refused.value.status_class, refused.value.status_detail) == (3, 1)
        await trio.sleep(0.7)
        await healthy(port)


# -- replay and control -------------------------------------------------------------------


async def failing_reads(daemon: Daemon, port: int, count: int) -> list[int]:
    async with login(port) as ini:
        return [
            n
            for n in range(count)
            if (await ini.execute(0, read10(n), read_length=BS)).status != GOOD
        ]


async def test_seeded_probability_replays(tmp_path: Path) -> None:
    rule = {"id": "flaky", "action": "check_condition", "op_class": "read",
            "probability": 0.3, "seed": 1234}  # fmt: skip
    async with daemon_with(tmp_path) as (daemon, port):
        await op(daemon, "fault.add", rule)
        first = await failing_reads(daemon, port, 60)
        await op(daemon, "fault.remove", {"id": "flaky"})
        await op(daemon, "fault.add", rule)
        second = await failing_reads(daemon, port, 60)
        await op(daemon, "fault.remove", {"id": "flaky"})
        await op(daemon, "fault.add", {**rule, "seed": 99})
        third = await failing_reads(daemon, port, 60)
        await cleared_and_healthy(daemon, port)
    assert first == second
    assert 5 <= len(first) <= 35
    assert third != first


async def test_control_ops(tmp_path: Path) -> None:
    async with daemon_with(tmp_path) as (daemon, port):
        added = await op(daemon, "fault.add", {"rule": {"action": "status", "status": "busy",
                                                        "opcodes": [0x00]}})
        assert added["id"] == "fault-1" and added["rule"]["status"] == "busy"
        async with await Initiator.connect(
            "127.0.0.1", port, initiator_name=INITIATOR, target_name=TARGET
        ) as ini:
            await ini.execute(0, TUR)  # power-on UA: not counted (UA comes first)
            assert (await ini.execute(0, TUR)).status == 0x08
            await op(daemon, "fault.disable", {"id": "fault-1"})
            assert (await ini.execute(0, TUR)).status == GOOD
            await op(daemon, "fault.enable", {"id": "fault-1"})
            assert (await ini.execute(0, TUR)).status == 0x08
        [stats] = await op(daemon, "fault.stats", {})
        assert stats["injections"] == 2 and len(stats["recent"]) == 2
        removed = await op(daemon, "fault.remove", {"id": "fault-1"})
        assert removed["injections"] == 2
        assert await op(daemon, "fault.list", {}) == []
        with pytest.raises(OpError) as bad:
            await op(daemon, "fault.add", {"action": "status", "status": "busy", "bits": 2})
        assert bad.value.path == "bits" and "does not apply" in bad.value.message
        with pytest.raises(OpError) as missing:
            await op(daemon, "fault.remove", {"id": "nope"})
        assert str(missing.value.code) == "not_found"
        with pytest.raises(OpError) as unknown:
            await op(daemon, "fault.add", {"action": "hang", "device": "disk9"})
        assert unknown.value.path == "device"
        await cleared_and_healthy(daemon, port)
