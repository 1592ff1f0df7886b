"""Every iSCSI task management function, seen by two initiators of our own.

The real daemon tree runs in-process (devices, LUs, portal) with two file-backed
disks on one target. A command is kept "running" by a fault rule that hangs it
(``hang`` sleeps until the task is cancelled), so each test controls exactly
which commands are in the task set when the TMF arrives. The tests check the
TMF response code (RFC 7143 11.6.1, RFC 7144), that aborted commands send no
response (or TASK ABORTED when the control page's TAS asks for it), and the
UNIT ATTENTION each nexus sees afterwards (29/xx after resets, 2F/00 for
commands cleared by another initiator).
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.supervision.daemon import Daemon
from pyscst.transports.iscsi.initiator import ConnectionLost, Initiator, Result
from tests.cdbs import TUR, read10
from tests.daemon import in_process_daemon

F, R = TmfFunction, TmfResponse  # TMF function and response codes, by name

TARGET = "iqn.2026-11.org.pyscst:tmf"
NAME_A = "iqn.2026-11.org.example:a"
NAME_B = "iqn.2026-11.org.example:b"
BS = 512
GOOD, CHECK_CONDITION, TASK_ABORTED = 0x00, 0x02, 0x40
UNIT_ATTENTION = 0x6


def ua_of(result: Result) -> tuple[int, int, int]:
    assert result.status == CHECK_CONDITION, result
    s = result.sense
    return s[2] & 0x0F, s[12], s[13]


@asynccontextmanager
async def tmf_daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, int]]:
    """disk0 at LUN 0 and disk1 at LUN 1 of TARGET, for everyone."""
    body = f"""
[devices.disk0]
handler = "vdisk_fileio"
size = "4MiB"
[devices.disk1]
handler = "vdisk_fileio"
size = "4MiB"
[targets."{TARGET}"]
portals = ["127.0.0.1:@PORT@"]
luns = [{{ lun = 0, device = "disk0" }}, {{ lun = 1, device = "disk1" }}]
"""
    async with in_process_daemon(tmp_path, body) as running:
        yield running


async def connect(port: int, name: str) -> Initiator:
    return await Initiator.connect("127.0.0.1", port, initiator_name=name, target_name=TARGET)


async def settle(ini: Initiator, luns: tuple[int, ...] = (0, 1)) -> None:
    """Consume the power-on unit attentions on ``luns``."""
    for lun in luns:
        for _ in range(5):
            if (await ini.execute(lun, TUR)).status == GOOD:
                break
        else:
            raise AssertionError(f"TEST UNIT READY never GOOD on LUN {lun}")


async def hang(daemon: Daemon, **match: Any) -> None:
    """Commands matching ``match`` hang until aborted."""
    await daemon.control_ops["fault.add"]({"action": "hang", **match})


async def running(ini: Initiator, lun: int, lba: int) -> int:
    """Submit a READ that a hang rule holds; wait until the LU has it."""
    itt = ini.submit(lun, read10(lba), read_length=BS)
    with trio.fail_after(2):
        while await ini.task_management(F.QUERY_TASK, lun, itt) != R.SUCCEEDED:
            await trio.sleep(0.01)
    return itt


async def assert_silent(ini: Initiator, itt: int, wait: float = 0.2) -> None:
    """No response ever comes for an aborted command."""
    with trio.move_on_after(wait) as silent:
        await ini.wait(itt)
    assert silent.cancelled_caught, "an aborted command answered"


async def mode_select_tas(ini: Initiator, lun: int, tas: bool) -> None:
    """Set the control mode page's TAS bit through MODE SELECT(6)."""
    sense = await ini.execute(lun, bytes((0x1A, 0x08, 0x0A, 0, 255, 0)), read_length=255)
    assert sense.status == GOOD
    data = sense.data
    page = bytearray(data[4 + data[3] :][:12])
    page[0] &= 0x3F  # PS is reserved in MODE SELECT
    page[5] = (page[5] | 0x40) if tas else (page[5] & ~0x40)
    params = bytes(4) + bytes(page)
    r = await ini.execute(lun, bytes((0x15, 0x10, 0, 0, len(params), 0)), data_out=params)
    assert r.status == GOOD, r


# -- ABORT TASK, QUERY TASK ---------------------------------------------------------------


async def test_abort_task_ends_one_command_silently(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[42], times=1)
        async with await connect(port, NAME_A) as a:
            await settle(a)
            held = await running(a, 0, 42)
            other = a.submit(0, read10(7), read_length=BS)
            assert (await a.wait(other)).status == GOOD  # the task set is not blocked
            assert await a.task_management(F.ABORT_TASK, 0, held) == R.COMPLETE
            await assert_silent(a, held)
            assert await a.task_management(F.QUERY_TASK, 0, held) == R.COMPLETE  # gone
            assert await a.task_management(F.ABORT_TASK, 0, 0x7777) == R.TASK_DOES_NOT_EXIST
            r = await a.execute(0, TUR)
            assert r.status == GOOD  # ABORT TASK raises no unit attention


# -- ABORT TASK SET, QUERY TASK SET ---------------------------------------------------------


async def test_abort_task_set_spares_other_initiators(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[40, 49])
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            mine = [await running(a, 0, 40), await running(a, 0, 41)]
            theirs = await running(b, 0, 45)
            assert await a.task_management(F.QUERY_TASK_SET, 0) == R.SUCCEEDED
            assert await a.task_management(F.ABORT_TASK_SET, 0) == R.COMPLETE
            for itt in mine:
                await assert_silent(a, itt, 0.1)
            assert await a.task_management(F.QUERY_TASK_SET, 0) == R.COMPLETE
            assert await b.task_management(F.QUERY_TASK, 0, theirs) == R.SUCCEEDED
            assert await b.task_management(F.QUERY_TASK_SET, 0) == R.SUCCEEDED
            assert (await b.execute(0, TUR)).status == GOOD  # B hears nothing
            assert (await a.execute(0, TUR)).status == GOOD
            assert await b.task_management(F.ABORT_TASK_SET, 0) == R.COMPLETE
            await assert_silent(b, theirs, 0.1)


# -- CLEAR TASK SET and TAS -----------------------------------------------------------------------


async def test_clear_task_set_tells_the_other_initiator_commands_cleared(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[50])
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            theirs = await running(b, 0, 50)
            assert await a.task_management(F.CLEAR_TASK_SET, 0) == R.COMPLETE
            await assert_silent(b, theirs)  # TAS=0: no status for the cleared command
            assert ua_of(await b.execute(0, TUR)) == (UNIT_ATTENTION, 0x2F, 0x00)
            assert (await b.execute(0, TUR)).status == GOOD
            assert (await a.execute(0, TUR)).status == GOOD  # the issuer gets no UA
            assert (await b.execute(1, TUR)).status == GOOD  # nor does another LU


async def test_tas_answers_task_aborted_to_the_other_initiator(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[60])
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            await mode_select_tas(a, 0, True)
            # the other nexus learns that the mode parameters changed; the issuer does not
            assert ua_of(await b.execute(0, TUR)) == (UNIT_ATTENTION, 0x2A, 0x01)
            assert (await a.execute(0, TUR)).status == GOOD
            theirs = await running(b, 0, 60)
            mine = await running(a, 0, 60)
            assert await a.task_management(F.CLEAR_TASK_SET, 0) == R.COMPLETE
            with trio.fail_after(2):
                assert (await b.wait(theirs)).status == TASK_ABORTED
            await assert_silent(a, mine)  # the issuer's own aborted task stays silent
            assert (await b.execute(0, TUR)).status == GOOD  # TAS=1: no 2F/00 as well


# -- resets -------------------------------------------------------------------------------------


async def test_lun_reset_aborts_every_task_and_releases_reserve6(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[70, 79])
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            assert (await b.execute(0, bytes((0x16, 0, 0, 0, 0, 0)))).status == GOOD  # RESERVE(6)
            assert (await a.execute(0, read10(1), read_length=BS)).status == 0x18  # conflict
            held = [await running(b, 0, 70), await running(b, 1, 71)]
            assert await a.task_management(F.LOGICAL_UNIT_RESET, 0) == R.COMPLETE
            await assert_silent(b, held[0])
            # LUN 1 untouched
            assert await b.task_management(F.QUERY_TASK, 1, held[1]) == R.SUCCEEDED
            for ini in (a, b):
                assert ua_of(await ini.execute(0, TUR)) == (UNIT_ATTENTION, 0x29, 0x03)
                assert (await ini.execute(1, TUR)).status == GOOD
            assert (await a.execute(0, read10(1), read_length=BS)).status == GOOD  # released
            assert await b.task_management(F.LOGICAL_UNIT_RESET, 1) == R.COMPLETE
            await assert_silent(b, held[1])


async def test_target_warm_reset_resets_every_lu_for_everyone(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[80, 89])
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            held = [await running(b, 0, 80), await running(b, 1, 81), await running(a, 1, 82)]
            assert await a.task_management(F.TARGET_WARM_RESET, 0) == R.COMPLETE
            await assert_silent(b, held[0], 0.1)
            await assert_silent(b, held[1], 0.1)
            await assert_silent(a, held[2], 0.1)
            for ini in (a, b):
                for lun in (0, 1):
                    assert ua_of(await ini.execute(lun, TUR)) == (UNIT_ATTENTION, 0x29, 0x03)
                    assert (await ini.execute(lun, TUR)).status == GOOD


async def test_target_cold_reset_ends_every_session_of_the_target(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[90])
        async with await connect(port, NAME_B) as b:
            await settle(b)
            theirs = await running(b, 0, 90)
            async with await connect(port, NAME_A) as a:
                await settle(a)
                assert await a.task_management(F.TARGET_COLD_RESET, 0) == R.COMPLETE
                for ini in (a, b):  # RFC 7143 11.5.1: the target closes every connection
                    with trio.fail_after(5), pytest.raises(ConnectionLost):
                        while True:
                            await ini.execute(0, TUR)
                            await trio.sleep(0.05)
                with pytest.raises(ConnectionLost):  # the held command never answered
                    await b.wait(theirs)
        for name in (NAME_A, NAME_B):  # new nexuses, as after power-on
            async with await connect(port, name) as again:
                assert ua_of(await again.execute(0, TUR)) == (UNIT_ATTENTION, 0x29, 0x00)
                assert (await again.execute(0, TUR)).status == GOOD


async def test_i_t_nexus_reset_touches_only_the_issuing_nexus(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[100, 109])
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            mine = [await running(a, 0, 100), await running(a, 1, 101)]
            theirs = await running(b, 0, 102)
            assert await a.task_management(F.I_T_NEXUS_RESET, 0) == R.COMPLETE
            for itt in mine:
                await assert_silent(a, itt, 0.1)
            for lun in (0, 1):
                assert ua_of(await a.execute(lun, TUR)) == (UNIT_ATTENTION, 0x29, 0x07)
            assert await b.task_management(F.QUERY_TASK, 0, theirs) == R.SUCCEEDED
            assert (await b.execute(0, TUR)).status == GOOD
            assert (await b.execute(1, TUR)).status == GOOD


async def test_commands_held_for_cmdsn_order_are_tasks_too(tmp_path: Path) -> None:
    """A command received but held behind a CmdSN gap has not reached its LU, yet
    it is a task of the nexus: QUERY TASK and QUERY TASK SET find it, and
    I_T NEXUS RESET aborts it, so it never runs once the gap is filled."""
    async with tmf_daemon(tmp_path) as (daemon, port):
        async with await connect(port, NAME_A) as a:
            await settle(a)
            await daemon.control_ops["fault.add"](
                {"action": "pdu_drop", "pdus": ["scsi_command"], "times": 1}
            )
            lost_cmdsn = a.cmdsn
            lost = a.submit(0, read10(1), read_length=BS)  # dropped: a CmdSN gap
            held = a.submit(0, read10(2), read_length=BS)  # arrives, waits behind the gap
            with trio.fail_after(2):
                while await a.task_management(F.QUERY_TASK, 0, held) != R.SUCCEEDED:
                    await trio.sleep(0.01)
            assert await a.task_management(F.QUERY_TASK_SET, 0) == R.SUCCEEDED
            assert await a.task_management(F.QUERY_TASK, 1, held) == R.COMPLETE  # not that LUN
            assert await a.task_management(F.QUERY_TASK, 0, lost) == R.COMPLETE  # never received
            assert await a.task_management(F.I_T_NEXUS_RESET, 0) == R.COMPLETE
            assert await a.task_management(F.QUERY_TASK, 0, held) == R.COMPLETE  # gone
            assert await a.task_management(F.QUERY_TASK_SET, 0) == R.COMPLETE
            # ABORT TASK of the lost command fills the gap (RFC 7143 4.2.3.3):
            # the held one is released and must not run
            assert await a.task_management(F.ABORT_TASK, 0, lost, refcmdsn=lost_cmdsn) == R.COMPLETE
            await assert_silent(a, held)
            assert ua_of(await a.execute(0, TUR)) == (UNIT_ATTENTION, 0x29, 0x07)
            assert (await a.execute(0, TUR)).status == GOOD


# -- queries and the rest ----------------------------------------------------------------------


async def test_query_async_event_reports_a_pending_unit_attention(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (_daemon, port):
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            assert await b.task_management(F.QUERY_ASYNC_EVENT, 0) == R.COMPLETE
            await mode_select_tas(a, 0, True)  # a change: raises 2A/01 for B
            assert await b.task_management(F.QUERY_ASYNC_EVENT, 0) == R.SUCCEEDED
            assert await b.task_management(F.QUERY_ASYNC_EVENT, 1) == R.COMPLETE  # per LU
            assert await a.task_management(F.QUERY_ASYNC_EVENT, 0) == R.COMPLETE
            assert ua_of(await b.execute(0, TUR)) == (UNIT_ATTENTION, 0x2A, 0x01)
            assert await b.task_management(F.QUERY_ASYNC_EVENT, 0) == R.COMPLETE
            assert await b.task_management(F.QUERY_ASYNC_EVENT, 5) == R.LUN_DOES_NOT_EXIST


async def test_clear_aca_reassign_unknown_luns_and_functions(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (_daemon, port):
        async with await connect(port, NAME_A) as a:
            await settle(a)
            assert await a.task_management(F.CLEAR_ACA, 0) == R.COMPLETE  # no ACA: nothing to do
            reassign = await a.task_management(F.TASK_REASSIGN, 0, 0x1234)
            assert reassign == R.REASSIGNMENT_NOT_SUPPORTED
            for function in (F.ABORT_TASK_SET, F.CLEAR_TASK_SET, F.LOGICAL_UNIT_RESET,
                             F.QUERY_TASK_SET):  # fmt: skip
                assert await a.task_management(function, 9) == R.LUN_DOES_NOT_EXIST
            for code in (13, 0x7F):  # undefined function codes
                assert await a.task_management(code, 0) == R.NOT_SUPPORTED
            assert (await a.execute(0, TUR)).status == GOOD  # the session goes on


# -- many commands, many aborts ------------------------------------------------------------


async def test_aborts_and_resets_amid_traffic_leave_no_task_behind(tmp_path: Path) -> None:
    """Two initiators keep commands in flight (every command delayed 20-80 ms)
    while ABORT TASKs and a LUN RESET land at random points: each command is
    answered or, if a TMF took it, silent; nothing is lost or left running."""
    rng = random.Random(7)
    async with tmf_daemon(tmp_path) as (daemon, port):
        await daemon.control_ops["fault.add"]({"action": "delay", "delay": 0.02, "jitter": 0.06})
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            answered: dict[tuple[str, int], int] = {}
            issued: list[tuple[str, Initiator, int]] = []
            aborted: set[tuple[str, int]] = set()

            async def collect(name: str, ini: Initiator, itt: int) -> None:
                answered[(name, itt)] = (await ini.wait(itt)).status

            async with trio.open_nursery() as nursery:
                for round_ in range(6):
                    for name, ini in (("a", a), ("b", b)):
                        for _ in range(8):
                            lba = rng.randrange(0, 4096)
                            if rng.random() < 0.5:
                                itt = ini.submit(0, read10(lba), read_length=BS)
                            else:
                                cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, 1, 0)
                                itt = ini.submit(0, cdb, data_out=bytes([round_]) * BS)
                            issued.append((name, ini, itt))
                            nursery.start_soon(collect, name, ini, itt)
                    await trio.sleep(0.01)
                    for name, ini, itt in rng.sample(issued[-16:], 3):
                        response = await ini.task_management(F.ABORT_TASK, 0, itt)
                        assert response in (R.COMPLETE, R.TASK_DOES_NOT_EXIST)
                        if response == R.COMPLETE:
                            aborted.add((name, itt))
                    if round_ == 3:
                        assert await b.task_management(F.LOGICAL_UNIT_RESET, 0) == R.COMPLETE
                        aborted.update((n, i) for n, _, i in issued if (n, i) not in answered)
                await trio.sleep(0.5)  # everything not aborted has long finished
                nursery.cancel_scope.cancel()
            silent = {(n, i) for n, _, i in issued} - set(answered)
            assert silent <= aborted  # only aborted commands may stay unanswered
            assert silent  # the reset did land on commands in flight
            assert all(s in (GOOD, CHECK_CONDITION) for s in answered.values())
            assert daemon.units["disk0"].task_count() == 0
            # both sessions still work (after the reset's unit attention)
            for ini in (a, b):
                await settle(ini, (0,))
