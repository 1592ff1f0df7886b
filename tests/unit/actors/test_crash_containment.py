"""The logical unit outlives the parties it answers (issue 11, D1 and D5).

A task management request whose caller went away (its connection reset right
after it sent a LOGICAL UNIT RESET) must not take the LU down when the answer
is ready: the reply is dropped. A command whose connection dropped while it
waited for data-out is an aborted task: no HARDWARE ERROR, no error logged,
no device error counted.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from pyscst.actors.messages import (
    AbortTask,
    AbortTaskSet,
    ClearTaskSet,
    Envelope,
    QueryTask,
    QueryTaskSet,
    ResetLogicalUnit,
    TmfResponse,
    call,
)
from pyscst.scsi.command import ScsiCommand, TransportGone
from pyscst.scsi.sense import Status
from tests.cdbs import TUR, write10
from tests.fakes import until
from tests.unit.actors.test_task_set import (
    BS,
    NEXUS_A,
    Recorder,
    clear_power_on_ua,
    command,
    running_lu,
    wait_answers,
)


def gone_caller() -> trio.MemorySendChannel[Any]:
    """A reply channel whose requester has gone (``call`` closes its end when
    it is cancelled, e.g. with its connection)."""
    send, recv = trio.open_memory_channel[Any](1)
    recv.close()
    return send


@pytest.mark.parametrize(
    "tmf",
    [
        ResetLogicalUnit(NEXUS_A),
        AbortTaskSet(NEXUS_A),
        ClearTaskSet(NEXUS_A),
        AbortTask(NEXUS_A, 7),
    ],
    ids=["lun-reset", "abort-task-set", "clear-task-set", "abort-task"],
)
async def test_tmf_reply_to_a_caller_that_went_away_is_dropped(tmf: Any) -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        t = Recorder(b"z" * BS)
        store.gate(9)  # never opened: the write is outstanding until aborted
        lu.submit(command(t, write10(9), 7), 0, False)
        await until(lambda: lu.task_count() == 1)
        await lu.mailbox.send(Envelope(tmf, gone_caller()))
        await until(lambda: lu.task_count() == 0)
        assert t.answered == []  # aborted: no status
        # the answers given at once, to callers that are gone too
        for query in (QueryTask(NEXUS_A, 7), QueryTaskSet(NEXUS_A), AbortTask(NEXUS_A, 99)):
            await lu.mailbox.send(Envelope(query, gone_caller()))
        # the LU is alive and answers the next caller and the next command
        with trio.fail_after(5):
            assert await call(lu.mailbox, QueryTaskSet(NEXUS_A)) == TmfResponse.COMPLETE
        lu.submit(command(t, TUR, 8), 0, False)
        lu.submit(command(t, TUR, 9), 0, False)
        await wait_answers(t, 2)
        assert dict(t.answered)[9] == Status.GOOD  # (8 took any reset's UA)


class GoneTransport(Recorder):
    """A connection that dropped while its write waited for Data-Out."""

    def data_now(self, cmd: ScsiCommand, length: int) -> memoryview | None:
        return None  # the data is not here yet: the command must wait for it

    async def receive_data(self, cmd: ScsiCommand, length: int) -> memoryview:
        await trio.lowlevel.checkpoint()
        raise TransportGone()


async def test_write_whose_connection_dropped_is_an_aborted_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)  # one command, one error (the power-on UA)
        before = lu.stats()
        t = GoneTransport()
        caplog.set_level(logging.DEBUG, logger="pyscst.actors.lun")
        lu.submit(command(t, write10(3), 5), 0, False)
        await until(lambda: len(t.finished) == 1)
        assert t.answered == []  # no HARDWARE ERROR, no status at all
        assert bytes(store.data[3 * BS : 4 * BS]) == bytes(BS)
        after = lu.stats()
        assert (after.commands, after.errors) == (before.commands + 1, before.errors)
        assert after.bytes_written == before.bytes_written
        noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert noisy == []
        assert any("connection is gone" in r.getMessage() for r in caplog.records)
