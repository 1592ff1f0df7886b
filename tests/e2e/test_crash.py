"""Issue 11's network triggers, against the real daemon (D1, D3, D5).

Each test does what a hostile or broken initiator did to kill the daemon or
a connection, then checks the specific answer, that the daemon still serves
a new login, and that its log holds no traceback.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.admin.client.connection import AsyncClient
from pyscst.transports.iscsi import pdu_types as P
from pyscst.transports.iscsi.initiator import Initiator
from pyscst.transports.iscsi.pdu_codec import parse_sense_segment
from pyscst.transports.iscsi.pdu_constants import RejectReason
from tests.cdbs import TUR, write10
from tests.daemon import RunningDaemon, running_daemon_async
from tests.wire import GOOD, Wire, wire

F, R = TmfFunction, TmfResponse  # TMF function and response codes, by name

TARGET = "iqn.2026-11.org.pyscst:crash"
TARGET2 = "iqn.2026-11.org.pyscst:crash2"
BS = 512
TWO_DISKS = {
    "disk0": {"handler": "vdisk_fileio", "size": "16MiB"},
    "disk1": {"handler": "vdisk_fileio", "size": "16MiB"},
}


async def still_serving(d: RunningDaemon) -> None:
    """A fresh session logs in and runs a command; the log has no traceback."""
    async with wire(d.host, d.port, TARGET) as w:
        await w.settle()
        assert (await w.execute(w.command(TUR))).status == GOOD
    log = d.stderr_text()
    assert "Traceback" not in log, log[-3000:]


async def outstanding_write(
    w: Wire, blocks: int = 128, lun: int = 0, patience: float = 5.0, lba: int = 0
) -> P.ScsiCommand:
    """A WRITE the LU is running, waiting for its Data-Out (its R2T came).
    (A reset from an earlier connection may still reach this nexus: as a
    unit attention, or as the silent abort of this very write; then the
    next try.)"""
    for _ in range(4):
        cmd = w.command(write10(lba, blocks), lun=lun, write=blocks * BS)
        await w.send(cmd)
        try:
            answer = await w.recv_for(cmd.itt, patience)
        except trio.TooSlowError:
            continue
        if isinstance(answer, P.R2T):
            return cmd
        assert isinstance(answer, P.ScsiResponse) and answer.status == 2, answer
    raise AssertionError("no WRITE got its R2T")


async def device_stats(d: RunningDaemon) -> dict[str, int]:
    async with await AsyncClient.connect(d.state_dir / "pyscst.sock") as client:
        stats: dict[str, int] = await client.call("stats", device="disk0")
    return stats


# -- D1: a reply to a party that went away ------------------------------------------


async def test_task_management_then_tcp_reset_never_kills_the_daemon(tmp_path: Path) -> None:
    """LUN RESET / ABORT TASK SET / CLEAR TASK SET with a task outstanding, then
    at once a TCP reset, 20 times in a few seconds: the LU answered a caller
    that was gone, crashed, and after five crashes the daemon exited.
    (Two targets with one LU each, taken in turn, so a reset still on its
    way from one round seldom aborts the next round's commands; when it does,
    they are retried. One LU per session keeps its teardown as short as the
    race needs.)"""
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=TWO_DISKS, luns=({"lun": 0, "device": "disk0"},),
        extra_targets={TARGET2: {"luns": [{"lun": 0, "device": "disk1"}]}},
    ) as d:  # fmt: skip
        functions = (F.LOGICAL_UNIT_RESET, F.ABORT_TASK_SET, F.CLEAR_TASK_SET)
        with trio.fail_after(90):
            for i in range(20):
                w = await Wire.login(d.host, d.port, (TARGET, TARGET2)[i % 2])
                await w.settle(patience=1.0)
                await outstanding_write(w, patience=1.0)
                await w.send(w.tmf(functions[i % 3]))
                w.reset()
        await still_serving(d)


# -- D3: PDUs that have no place in full feature phase ------------------------------


#: NOP-Out, SCSI Command, TMF, Text, Data-Out, Logout, SNACK
FULL_FEATURE_OPCODES = {0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x10}
#: what only a target sends (RFC 7143 11.2.1.2)
TARGET_OPCODES = {0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3F}


def raw_header(opcode: int, *, itt: int, cmdsn: int, immediate: bool = True) -> bytes:
    """A 48-byte header with ``opcode`` and nothing else of note."""
    return struct.pack(
        ">BBBBIQIIII16s", opcode | (0x40 if immediate else 0), 0x80, 0, 0, 0, 0, itt,
        0xFFFFFFFF, cmdsn, 0, bytes(16),
    )  # fmt: skip


def login_request(w: Wire) -> P.LoginRequest:
    return P.LoginRequest(
        transit=True, csg=1, nsg=3, isid=w.ini.isid, tsih=w.ini.tsih, itt=w.next_itt(),
        cmdsn=w.cmdsn, expstatsn=w.expstatsn,
        data=b"InitiatorName=iqn.2026-11.org.example:x\x00",
    )  # fmt: skip


async def rejected(w: Wire, itt: int) -> P.Reject:
    while True:
        got = await w.recv()
        if isinstance(got, P.Reject) and got.data[16:20] == struct.pack(">I", itt):
            return got


@pytest.mark.parametrize("digests", [False, True], ids=["plain", "crc32c"])
async def test_pdus_illegal_in_full_feature_phase_get_a_reject(
    tmp_path: Path, digests: bool
) -> None:
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        async with wire(
            d.host, d.port, TARGET, header_digest=digests, data_digest=digests
        ) as w:
            await w.settle()
            # a Login Request after login: Reject, protocol error (was AttributeError)
            login = login_request(w)
            await w.send(login)
            reject = await rejected(w, login.itt)
            assert reject.reason == RejectReason.PROTOCOL_ERROR
            assert bytes(reject.data) == w.encode(login)[:48]  # the header as sent
            # every other opcode but the seven an initiator may send now: a
            # target-only one is a protocol error, any other one unsupported
            for opcode in sorted(set(range(64)) - FULL_FEATURE_OPCODES - {0x03}):
                itt = w.next_itt()
                header = raw_header(opcode, itt=itt, cmdsn=w.cmdsn)
                await w.send_header(header)
                reject = await rejected(w, itt)
                expected = (
                    RejectReason.PROTOCOL_ERROR
                    if opcode in TARGET_OPCODES
                    else RejectReason.COMMAND_NOT_SUPPORTED
                )
                assert (reject.reason, bytes(reject.data)) == (expected, header), hex(opcode)
            # the same connection carries on, its window untouched
            before = (w.expcmdsn, w.maxcmdsn)
            answer = await w.execute(w.command(TUR))
            assert answer.status == GOOD
            assert (answer.expcmdsn, answer.maxcmdsn) == (before[0] + 1, before[1] + 1)
        await still_serving(d)


async def test_login_request_in_a_discovery_session_is_rejected(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        w = Wire(await Initiator.connect(d.host, d.port))  # a discovery session
        try:
            login = login_request(w)
            await w.send(login)
            reject = await rejected(w, login.itt)
            assert reject.reason == RejectReason.PROTOCOL_ERROR
            # the discovery session carries on
            text = P.TextRequest(
                final=True, itt=w.next_itt(), ttt=0xFFFFFFFF, cmdsn=w.number(False),
                expstatsn=w.expstatsn, data=b"SendTargets=All\x00",
            )  # fmt: skip
            await w.send(text)
            answer = await w.recv_for(text.itt)
            assert isinstance(answer, P.TextResponse) and TARGET.encode() in answer.data
        finally:
            await w.aclose()
        await still_serving(d)


# -- found in the fuzzing audit: a Data-Out naming another task's R2T -------------------


async def test_data_out_with_the_ttt_of_another_tasks_r2t(tmp_path: Path) -> None:
    """It wrote into the other command's buffer (or crashed the connection on a
    read-only one); now it is a Reject and a data phase error for its own task."""
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        async with wire(d.host, d.port, TARGET) as w:
            await w.settle()
            solicited = w.command(write10(0, 8), write=8 * BS)  # needs an R2T
            held = w.command(write10(0, 1), write=BS, data=b"h" * BS)  # waits behind it
            await w.send(solicited, held)
            r2t = await w.r2t_for(solicited.itt)
            stray = P.DataOut(
                final=True, itt=held.itt, ttt=r2t.ttt, expstatsn=w.expstatsn,
                buffer_offset=0, data=b"x" * BS,
            )  # fmt: skip
            await w.send(stray)
            reject = await rejected(w, held.itt)
            assert reject.reason == RejectReason.PROTOCOL_ERROR
            # the R2T's own task gets its data and completes
            await w.send(w.data_out(r2t, b"s" * 8 * BS))
            assert (await w.recv_for(solicited.itt)).status == GOOD
            failed = await w.recv_for(held.itt)
            assert failed.status == 2
            sense = parse_sense_segment(failed.data)
            assert (sense[2] & 0x0F, sense[12], sense[13]) == (0x0B, 0x4B, 0x00)  # data phase
            read = w.command(bytes((0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0)), read=8 * BS)
            assert (await w.execute(read)).status == GOOD
            assert bytes(w.data_in[read.itt]) == b"s" * 8 * BS  # nothing of "x" landed
        await still_serving(d)


async def test_data_out_for_an_aborted_write_writes_nothing(tmp_path: Path) -> None:
    """ABORT TASK of a write whose R2T is out (it waits in its LU without a
    task of its own): COMPLETE, no status ever, and the Data-Out that answers
    the R2T afterwards lands nowhere; the session carries on."""
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        async with wire(d.host, d.port, TARGET) as w:
            await w.settle()
            write = w.command(write10(16, 8), write=8 * BS)
            await w.send(write)
            r2t = await w.r2t_for(write.itt)
            abort = w.tmf(F.ABORT_TASK, ref=write.itt, refcmdsn=write.cmdsn)
            await w.send(abort)
            assert (await w.recv_for(abort.itt)).response == R.COMPLETE
            await w.send(w.data_out(r2t, b"z" * 8 * BS))
            read = w.command(bytes((0x28, 0, 0, 0, 0, 16, 0, 0, 8, 0)), read=8 * BS)
            assert (await w.execute(read)).status == GOOD
            assert bytes(w.data_in[read.itt]) == bytes(8 * BS)
            assert write.itt not in w.data_in
            with trio.move_on_after(0.2):
                got = await w.recv_for(write.itt)
                raise AssertionError(f"the aborted write was answered: {got}")
        await still_serving(d)


async def test_data_out_outside_its_r2t_ends_the_write_with_a_data_phase_error(
    tmp_path: Path,
) -> None:
    """The write waiting for that R2T's data is answered ABORTED COMMAND /
    DATA PHASE ERROR (from the reader, no task of its own) and writes nothing."""
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        async with wire(d.host, d.port, TARGET) as w:
            await w.settle()
            write = w.command(write10(32, 8), write=8 * BS)
            await w.send(write)
            r2t = await w.r2t_for(write.itt)
            bad = P.DataOut(
                final=True, itt=write.itt, ttt=r2t.ttt, expstatsn=w.expstatsn,
                buffer_offset=r2t.buffer_offset + BS, data=b"q" * BS,
            )  # fmt: skip
            await w.send(bad)
            assert (await rejected(w, write.itt)).reason == RejectReason.PROTOCOL_ERROR
            failed = await w.recv_for(write.itt)
            assert failed.status == 2
            sense = parse_sense_segment(failed.data)
            assert (sense[2] & 0x0F, sense[12], sense[13]) == (0x0B, 0x4B, 0x00)
            read = w.command(bytes((0x28, 0, 0, 0, 0, 32, 0, 0, 8, 0)), read=8 * BS)
            assert (await w.execute(read)).status == GOOD
            assert bytes(w.data_in[read.itt]) == bytes(8 * BS)
        await still_serving(d)


# -- D5: a write whose connection dropped while it waited for Data-Out ---------------


async def test_write_waiting_for_data_out_when_the_connection_drops(tmp_path: Path) -> None:
    """Aborted, nothing more: no HARDWARE ERROR, no ERROR line or traceback in
    the log, no device error counted."""
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        async with wire(d.host, d.port, TARGET) as w:
            await w.settle()  # one error: the power-on UA
        before = await device_stats(d)
        for i in range(20):
            w = await Wire.login(d.host, d.port, TARGET)
            await w.settle()  # a GOOD TUR (each new nexus also has its UA first)
            for n in range(4):  # (disjoint: overlapping writes would wait in turn)
                await outstanding_write(w, blocks=8, lba=8 * n)
            if i % 2:
                w.reset()
            else:
                await w.aclose()
        with trio.fail_after(10):
            while True:
                after = await device_stats(d)
                # 20 x (UA + TUR + 4 writes)
                if after["commands"] - before["commands"] == 20 * 6:
                    break
                await trio.sleep(0.05)
        assert after["errors"] - before["errors"] == 20  # the 20 power-on UAs only
        assert after["bytes_written"] == before["bytes_written"]
        log = d.stderr_text()
        assert " ERROR " not in log and "HARDWARE" not in log, log[-3000:]
        await still_serving(d)
