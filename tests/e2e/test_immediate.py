"""SCSI commands with the Immediate bit, end to end (issue 11, D2).

RFC 7143 3.2.2.1 lets an initiator mark any command for immediate delivery:
it carries the CmdSN the next numbered command will use, takes no place in
the CmdSN window, and is delivered at once. Such a command used to get no
answer and kill its connection (the window was asked to free a slot it never
gave). Here each kind of command goes with I=1 between numbered ones; the
answers, the ExpCmdSN/MaxCmdSN every response advertises, task management of
an immediate command, and the immediate budget (Reject 0x06 beyond
``queue_depth`` immediate commands in execution) are checked, and the
connection carries on throughout.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.transports.iscsi import pdu_types as P
from pyscst.transports.iscsi.cmdsn import sn_add
from pyscst.transports.iscsi.pdu_codec import parse_sense_segment
from pyscst.transports.iscsi.pdu_constants import RejectReason
from tests.cdbs import REPORT_LUNS, TUR, luns_of, read10, sense_triplet, write10
from tests.daemon import RunningDaemon, running_daemon_async
from tests.wire import GOOD, Wire, wire

F, R = TmfFunction, TmfResponse  # TMF function and response codes, by name

TARGET = "iqn.2026-11.org.pyscst:immediate"
BS = 512
CHECK_CONDITION = 0x02
DEPTH = 4
SYNC_CACHE_10 = bytes((0x35,)) + bytes(9)


def answer_sense(answer: Any) -> tuple[int, int, int]:
    return sense_triplet(parse_sense_segment(answer.data))


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    async with running_daemon_async(
        tmp_path, target=TARGET, iscsi={"queue_depth": DEPTH}
    ) as d:
        yield d


async def immediate(w: Wire, cmd: P.ScsiCommand) -> Any:
    """Run an I=1 command; check the window it advertises did not move."""
    assert cmd.immediate and cmd.cmdsn == w.cmdsn
    window = (w.expcmdsn, w.maxcmdsn)
    answer = await w.execute(cmd)
    assert not isinstance(answer, P.Reject), answer
    assert (answer.expcmdsn, answer.maxcmdsn) == window  # no number, no slot
    return answer


async def numbered(w: Wire, cmd: P.ScsiCommand) -> Any:
    """Run an I=0 command; it takes the next number and gives its slot back."""
    assert not cmd.immediate
    exp, mx = w.expcmdsn, w.maxcmdsn
    answer = await w.execute(cmd)
    assert (answer.expcmdsn, answer.maxcmdsn) == (sn_add(exp, 1), sn_add(mx, 1))
    return answer


@pytest.mark.parametrize("digests", [False, True], ids=["plain", "crc32c"])
async def test_each_kind_of_command_with_the_immediate_bit(
    daemon: RunningDaemon, digests: bool
) -> None:
    d = daemon
    payload = os.urandom(8 * BS)
    async with wire(d.host, d.port, TARGET, header_digest=digests, data_digest=digests) as w:
        # the power-on unit attention, reported to an immediate command too
        ua = await immediate(w, w.command(TUR, immediate=True))
        assert ua.status == CHECK_CONDITION and answer_sense(ua)[1] == 0x29
        assert (await immediate(w, w.command(TUR, immediate=True))).status == GOOD
        assert (await numbered(w, w.command(TUR))).status == GOOD
        # a WRITE with FUA, all its data immediate data
        fua = w.command(write10(16, 8, fua=True), immediate=True, write=len(payload),
                        data=payload)  # fmt: skip
        assert (await immediate(w, fua)).status == GOOD
        assert (await numbered(w, w.command(TUR))).status == GOOD
        # a WRITE whose data is solicited by R2T
        write = w.command(write10(32, 8), immediate=True, write=len(payload))
        window = (w.expcmdsn, w.maxcmdsn)
        await w.send(write)
        r2t = await w.r2t_for(write.itt)
        assert (r2t.expcmdsn, r2t.maxcmdsn) == window
        await w.send(w.data_out(r2t, payload))
        answer = await w.recv_for(write.itt)
        assert isinstance(answer, P.ScsiResponse) and answer.status == GOOD
        assert (answer.expcmdsn, answer.maxcmdsn) == window
        # READ, both ranges
        for lba in (16, 32):
            read = w.command(read10(lba, 8), immediate=True, read=len(payload))
            assert (await immediate(w, read)).status == GOOD
            assert bytes(w.data_in[read.itt]) == payload
        # SYNCHRONIZE CACHE, REPORT LUNS, a LUN nobody mapped
        assert (await immediate(w, w.command(SYNC_CACHE_10, immediate=True))).status == GOOD
        luns = w.command(REPORT_LUNS, immediate=True, read=256)
        assert (await immediate(w, luns)).status == GOOD
        assert luns_of(bytes(w.data_in[luns.itt])) == [0]
        stray = await immediate(w, w.command(TUR, lun=7, immediate=True))
        assert stray.status == CHECK_CONDITION and answer_sense(stray) == (0x5, 0x25, 0x00)
        # numbered commands carry on in order, and the connection lives on
        read = w.command(read10(16, 8), read=len(payload))
        assert (await numbered(w, read)).status == GOOD
        assert bytes(w.data_in[read.itt]) == payload
        nop = P.NopOut(immediate=True, itt=w.next_itt(), cmdsn=w.cmdsn, expstatsn=w.expstatsn)
        await w.send(nop)
        assert isinstance(await w.recv_for(nop.itt), P.NopIn)
    assert "Traceback" not in d.stderr_text()


async def test_immediate_commands_interleaved_with_a_full_window(daemon: RunningDaemon) -> None:
    """With every CmdSN slot taken (MaxCmdSN = ExpCmdSN - 1), immediate
    commands still run, and the window reopens only as numbered ones end."""
    d = daemon
    async with wire(d.host, d.port, TARGET) as w:
        await w.settle()
        # DEPTH numbered WRITEs waiting for their Data-Out: the window is closed
        writes = [w.command(write10(64 * n, 1), write=BS) for n in range(DEPTH)]
        await w.send(*writes)
        r2ts = [await w.recv_for(cmd.itt) for cmd in writes]
        assert all(isinstance(r, P.R2T) for r in r2ts)
        assert sn_add(r2ts[-1].maxcmdsn, 1) == r2ts[-1].expcmdsn  # closed
        closed = (w.expcmdsn, w.maxcmdsn)
        for cdb in (TUR, SYNC_CACHE_10, read10(500)):  # (no overlap: no wait)
            cmd = w.command(cdb, immediate=True, read=BS if cdb[0] == 0x28 else 0)
            assert (await immediate(w, cmd)).status == GOOD
        assert (w.expcmdsn, w.maxcmdsn) == closed
        for r2t in r2ts:
            await w.send(w.data_out(r2t, bytes(BS)))
        for cmd in writes:
            answer = await w.recv_for(cmd.itt)
            assert isinstance(answer, P.ScsiResponse) and answer.status == GOOD
        # (answers come in any order; the last one received has the last word)
        assert (w.expcmdsn, w.maxcmdsn) == (closed[0], sn_add(closed[1], DEPTH))


async def test_abort_and_query_of_an_immediate_command(daemon: RunningDaemon) -> None:
    d = daemon
    async with wire(d.host, d.port, TARGET) as w:
        await w.settle()
        write = w.command(write10(8, 4), immediate=True, write=4 * BS)
        await w.send(write)
        assert isinstance(await w.recv_for(write.itt), P.R2T)  # running, in the LU
        window = (w.expcmdsn, w.maxcmdsn)
        query = w.tmf(F.QUERY_TASK, ref=write.itt)
        await w.send(query)
        assert (await w.recv_for(query.itt)).response == R.SUCCEEDED
        abort = w.tmf(F.ABORT_TASK, ref=write.itt, refcmdsn=write.cmdsn)
        await w.send(abort)
        done = await w.recv_for(abort.itt)
        assert done.response == R.COMPLETE
        assert (done.expcmdsn, done.maxcmdsn) == window  # nothing freed, nothing taken
        query = w.tmf(F.QUERY_TASK, ref=write.itt)
        await w.send(query)
        assert (await w.recv_for(query.itt)).response == R.COMPLETE  # gone
        # aborting it again: no such task; its RefCmdSN (the TMF's own CmdSN, as
        # an immediate command carries the next number) or one beyond must not
        # be taken as a lost numbered command and consumed
        for refcmdsn in (write.cmdsn, sn_add(write.cmdsn, 1)):
            again = w.tmf(F.ABORT_TASK, ref=write.itt, refcmdsn=refcmdsn)
            await w.send(again)
            answer = await w.recv_for(again.itt)
            assert answer.response == R.TASK_DOES_NOT_EXIST and answer.expcmdsn == window[0]
        # no status ever comes for the aborted write; the session carries on
        assert (await numbered(w, w.command(TUR))).status == GOOD
        assert (await immediate(w, w.command(TUR, immediate=True))).status == GOOD
        assert write.itt not in w.data_in
    assert "Traceback" not in d.stderr_text()


async def test_too_many_immediate_commands_are_rejected_not_queued(
    daemon: RunningDaemon,
) -> None:
    """RFC 7143 3.2.2.1 lets a target refuse immediate commands it has no
    room for: beyond ``queue_depth`` in execution, Reject reason 0x06; one
    ending (answered or aborted) makes room for the next."""
    d = daemon
    async with wire(d.host, d.port, TARGET) as w:
        await w.settle()
        held = [w.command(write10(16 * n, 1), immediate=True, write=BS) for n in range(DEPTH)]
        await w.send(*held)
        r2ts = [await w.recv_for(cmd.itt) for cmd in held]
        assert all(isinstance(r, P.R2T) for r in r2ts)
        extra = w.command(TUR, immediate=True)
        refused = await w.execute(extra)
        assert isinstance(refused, P.Reject)
        assert refused.reason == RejectReason.IMMEDIATE_COMMAND_REJECT
        assert bytes(refused.data[16:20]) == struct.pack(">I", extra.itt)
        # numbered commands are not affected by the immediate budget
        assert (await numbered(w, w.command(TUR))).status == GOOD
        # one ends by its data, one by ABORT TASK: two places free again
        await w.send(w.data_out(r2ts[0], bytes(BS)))
        assert (await w.recv_for(held[0].itt)).status == GOOD
        abort = w.tmf(F.ABORT_TASK, ref=held[1].itt)
        await w.send(abort)
        assert (await w.recv_for(abort.itt)).response == R.COMPLETE
        with trio.fail_after(5):
            for _ in range(2):
                assert (await immediate(w, w.command(TUR, immediate=True))).status == GOOD
        for r2t, cmd in zip(r2ts[2:], held[2:], strict=True):
            await w.send(w.data_out(r2t, bytes(BS)))
            assert (await w.recv_for(cmd.itt)).status == GOOD
    assert "Traceback" not in d.stderr_text()
