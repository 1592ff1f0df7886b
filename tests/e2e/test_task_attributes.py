"""Task attributes over the wire, with two initiators sharing one task set.

SAM-5 8.6: the LU has one task set for all I_T nexuses (the control page's
TST=000), so an ORDERED command holds back every later SIMPLE command, whoever
sent it, while a HEAD OF QUEUE command runs at once. A fault rule that hangs
one READ keeps the oldest task in the set for as long as the test wants.
ACA needs an ACA condition, which this target never establishes (NormACA=0):
an ACA task and a CDB with NACA=1 are refused.
"""

from __future__ import annotations

from pathlib import Path

import trio

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.scsi.command import TaskAttribute
from pyscst.transports.iscsi.initiator import Initiator
from tests.e2e.test_tmf import (
    BS,
    GOOD,
    NAME_A,
    NAME_B,
    TUR,
    connect,
    hang,
    read10,
    running,
    settle,
    tmf_daemon,
)

F, R = TmfFunction, TmfResponse  # TMF function and response codes, by name

ILLEGAL_REQUEST, CHECK_CONDITION = 0x5, 0x02


async def in_task_set(ini: Initiator, itt: int) -> None:
    with trio.fail_after(2):
        while await ini.task_management(F.QUERY_TASK, 0, itt) != R.SUCCEEDED:
            await trio.sleep(0.01)


async def test_ordered_holds_back_later_commands_and_head_of_queue_overtakes(
    tmp_path: Path,
) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[300], times=1)
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            held = await running(a, 0, 300)
            ordered = a.submit(0, read10(301), read_length=BS, attr=TaskAttribute.ORDERED)
            await in_task_set(a, ordered)  # two connections: make the arrival order sure
            simple_b = b.submit(0, read10(302), read_length=BS)
            await in_task_set(b, simple_b)
            finished: list[str] = []

            async def wait(ini: Initiator, itt: int, name: str) -> None:
                result = await ini.wait(itt)
                assert result.status == GOOD
                finished.append(name)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait, a, ordered, "ordered")
                nursery.start_soon(wait, b, simple_b, "simple from B")
                with trio.fail_after(2):  # head of queue: runs now, past all of them
                    r = await a.execute(0, read10(303), read_length=BS,
                                        attr=TaskAttribute.HEAD_OF_QUEUE)  # fmt: skip
                assert r.status == GOOD
                await trio.sleep(0.2)
                assert finished == []  # the ORDERED one waits for the held task, B for it
                await in_task_set(a, ordered)
                await in_task_set(b, simple_b)
                assert await a.task_management(F.ABORT_TASK, 0, held) == R.COMPLETE
            assert finished == ["ordered", "simple from B"]


async def test_simple_commands_of_two_initiators_do_not_wait_for_each_other(
    tmp_path: Path,
) -> None:
    async with tmf_daemon(tmp_path) as (daemon, port):
        await hang(daemon, lba=[310], times=1)
        async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
            await settle(a)
            await settle(b)
            held = await running(a, 0, 310)
            with trio.fail_after(2):
                assert (await b.execute(0, read10(311), read_length=BS)).status == GOOD
                assert (await a.execute(0, read10(312), read_length=BS)).status == GOOD
            assert await a.task_management(F.ABORT_TASK, 0, held) == R.COMPLETE


async def test_aca_task_and_naca_bit_are_refused(tmp_path: Path) -> None:
    async with tmf_daemon(tmp_path) as (_daemon, port):
        async with await connect(port, NAME_A) as a:
            await settle(a)
            r = await a.execute(0, TUR, attr=TaskAttribute.ACA)
            assert r.status == CHECK_CONDITION
            assert (r.sense[2] & 0x0F, r.sense[12], r.sense[13]) == (ILLEGAL_REQUEST, 0x49, 0)
            r = await a.execute(0, bytes((0, 0, 0, 0, 0, 0x04)))  # TUR, control byte NACA=1
            assert r.status == CHECK_CONDITION
            assert (r.sense[2] & 0x0F, r.sense[12], r.sense[13]) == (ILLEGAL_REQUEST, 0x24, 0)
            assert (await a.execute(0, TUR)).status == GOOD
