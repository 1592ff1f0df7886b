"""The iSCSI backend actor against a small scripted target that misbehaves.

The target logs anyone in (no keys: the RFC defaults) and answers SCSI
commands like a 1 MiB disk, unless told to send garbage, to drop the
connection half way through a PDU, or to send more data than asked. Whatever
it does, the backend must neither crash nor pass it on: the command ends
with BackendDown (retryable) or BackendFault, and the backend reconnects.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio

from pyscst.devices.backend import BackendDown, BackendFault, BackendReply, parse_backend
from pyscst.devices.passthrough import PassthroughDevice
from pyscst.scsi.command import DataDirection, TaskAttribute
from pyscst.transports.iscsi import pdu
from pyscst.transports.iscsi.backend import IscsiBackend
from pyscst.transports.iscsi.pdu import (
    RESERVED_TAG,
    DataIn,
    LoginRequest,
    LoginResponse,
    PduReader,
    ScsiResponse,
    TaskManagementRequest,
    TaskManagementResponse,
)
from pyscst.transports.iscsi.pdu import ScsiCommand as ScsiCommandPdu

TARGET = "iqn.2026-11.test:hostile"
INQUIRY = bytes((0x12, 0, 0, 0, 96, 0))
READ10 = bytes((0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0))
#: 128 KiB: 256 blocks
READ10_128K = bytes((0x28, 0, 0, 0, 0, 0, 0, 1, 0, 0))
TUR = bytes(6)
PATTERN = bytes(range(256)) * 512

#: what the target does with a command: None answers normally; a list is
#: sent piece by piece, apart (b"CLOSE" hangs up)
Mischief = Callable[[ScsiCommandPdu], bytes | list[bytes] | None]


class HostileTarget:
    def __init__(self) -> None:
        self.mischief: Mischief | None = None
        self.logins = 0
        self.commands: list[bytes] = []
        #: (function, referenced task tag) of every TMF received
        self.tmfs: list[tuple[int, int]] = []
        #: what TMFs are answered (None: never answered)
        self.tmf_response: int | None = 0
        #: ITTs of the commands received, in order
        self.itts: list[int] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        reader = PduReader()
        statsn = 0
        try:
            while True:
                event = reader.next_event()
                if event is None:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    reader.feed(data)
                    continue
                if isinstance(event, LoginRequest):
                    self.logins += 1
                    answer = LoginResponse(
                        transit=True, csg=event.csg, nsg=3, isid=event.isid, tsih=1,
                        itt=event.itt, statsn=statsn, expcmdsn=event.cmdsn,
                        maxcmdsn=event.cmdsn + 16,
                    )  # fmt: skip
                    await stream.send_all(pdu.encode_pdu(answer))
                    continue
                if isinstance(event, TaskManagementRequest):
                    self.tmfs.append((event.function, event.referenced_task_tag))
                    if self.tmf_response is not None:
                        statsn += 1
                        await stream.send_all(pdu.encode_pdu(TaskManagementResponse(
                            response=self.tmf_response, itt=event.itt, statsn=statsn,
                            expcmdsn=event.cmdsn, maxcmdsn=event.cmdsn + 16)))  # fmt: skip
                    continue
                if not isinstance(event, ScsiCommandPdu):
                    continue
                self.commands.append(bytes(event.cdb[:1]))
                self.itts.append(event.itt)
                statsn += 1
                wire = self.mischief(event) if self.mischief is not None else None
                if wire is None:
                    wire = self.answer(event, statsn)
                if isinstance(wire, list):  # pieces, each its own read at our end
                    for piece in wire:
                        if piece == b"CLOSE":
                            await stream.aclose()
                            return
                        await stream.send_all(piece)
                        await trio.sleep(0.05)
                    continue
                if wire.endswith(b"CLOSE"):  # send what comes before, then hang up
                    await stream.send_all(wire[:-5])
                    await stream.aclose()
                    return
                await stream.send_all(wire)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    @staticmethod
    def answer(cmd: ScsiCommandPdu, statsn: int, extra: int = 0) -> bytes:
        itt, expcmdsn, maxcmdsn = cmd.itt, cmd.cmdsn + 1, cmd.cmdsn + 16
        if not cmd.read:
            return pdu.encode_pdu(ScsiResponse(itt=itt, statsn=statsn, expcmdsn=expcmdsn,
                                               maxcmdsn=maxcmdsn))  # fmt: skip
        if cmd.cdb[0] == 0x12:
            data = bytearray(96)
            data[4] = 91
        elif cmd.cdb[0] == 0x9E:
            data = bytearray(struct.pack(">QI", 2047, 512) + bytes(20))
        else:
            data = bytearray(cmd.expected_data_transfer_length)
        data = data[: cmd.expected_data_transfer_length] + bytes(extra)
        return pdu.encode_pdu(DataIn(final=True, status_present=True, data=bytes(data), itt=itt,
                                     statsn=statsn, expcmdsn=expcmdsn, maxcmdsn=maxcmdsn))


@asynccontextmanager
async def hostile_backend(
    timeout: float = 30.0, queue_depth: int = 32,
) -> AsyncIterator[tuple[HostileTarget, IscsiBackend, PassthroughDevice]]:
    target = HostileTarget()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, target.serve, 0,
                                                host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        spec = parse_backend(f"iscsi://127.0.0.1:{port}/{TARGET}/0")
        backend = IscsiBackend(attrs.evolve(spec, command_timeout=timeout,
                                            queue_depth=queue_depth))
        device = PassthroughDevice("pt", backend)
        await nursery.start(backend.run, device.on_connect)
        with trio.fail_after(10):
            while not backend.connected:
                await trio.sleep(0.01)
        yield target, backend, device
        nursery.cancel_scope.cancel()


async def wait_reconnected(backend: IscsiBackend, logins: int) -> None:
    with trio.fail_after(10):
        while backend.logins <= logins or not backend.connected:
            await trio.sleep(0.01)


async def test_a_healthy_target_serves_and_the_probe_reads_it() -> None:
    async with hostile_backend() as (_, backend, device):
        assert device.probe is not None and device.probe.peripheral_type == 0
        assert device.blocks == 2048
        reply = await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
        assert reply.status == 0 and len(reply.data) == 512


async def test_garbage_from_the_target_drops_the_session_and_it_reconnects() -> None:
    # (a garbage header may announce a long data segment the reader then
    # waits for: the command timeout is what ends that session)
    async with hostile_backend(timeout=2.0) as (target, backend, _):
        target.mischief = lambda cmd: b"\xff" * 48 + b"junk" * 20
        logins = backend.logins
        with pytest.raises(BackendDown):  # garbage answers nothing
            await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
        target.mischief = None
        await wait_reconnected(backend, logins)
        assert (await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)).status == 0


async def test_a_target_dropping_mid_pdu_ends_the_command_retryable() -> None:
    async with hostile_backend() as (target, backend, _):
        target.mischief = lambda cmd: HostileTarget.answer(cmd, 1)[:30] + b"CLOSE"
        logins = backend.logins
        with trio.fail_after(10), pytest.raises(BackendDown):  # half a PDU answers nothing
            await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
        target.mischief = None
        await wait_reconnected(backend, logins)


async def test_oversized_data_in_is_refused_not_passed_on() -> None:
    async with hostile_backend() as (target, backend, _):
        target.mischief = lambda cmd: HostileTarget.answer(cmd, 1, extra=4096)
        with pytest.raises(BackendFault, match="past the buffer end"):
            await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
        target.mischief = None
        assert (await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)).status == 0


def data_ins(cmd: ScsiCommandPdu, *ranges: tuple[int, int], data: bytes = PATTERN,
             cuts: tuple[int, ...] = (48 + 1000, 48 + 70000)) -> list[bytes]:
    """Data-Ins of ``data[start:end]`` for each range (the last with GOOD
    status), the wire cut at ``cuts`` of each PDU: its segment straddles
    several reads of ours."""
    pieces: list[bytes] = []
    for n, (start, end) in enumerate(ranges):
        last = n == len(ranges) - 1
        wire = pdu.encode_pdu(DataIn(
            final=last, status_present=last, itt=cmd.itt, buffer_offset=start, datasn=n,
            statsn=1, expcmdsn=cmd.cmdsn + 1, maxcmdsn=cmd.cmdsn + 16, data=data[start:end],
        ))  # fmt: skip
        edges = [0, *(c for c in cuts if c < len(wire)), len(wire)]
        pieces += [wire[a:b] for a, b in itertools.pairwise(edges)]
    return pieces


async def test_a_data_in_straddling_reads_is_read_into_place_exactly() -> None:
    async with hostile_backend() as (target, backend, _):
        target.mischief = lambda cmd: data_ins(cmd, (0, 131072))
        reply = await backend.execute(READ10_128K, b"", 131072, TaskAttribute.SIMPLE)
        assert reply.status == 0 and bytes(reply.data) == PATTERN
        # read straight into a buffer of its own (not assembled by the PDU reader)
        assert isinstance(reply.data, memoryview) and not reply.data.readonly


async def test_data_in_in_several_pdus_each_straddling_reads_lands_in_place() -> None:
    async with hostile_backend() as (target, backend, _):
        target.mischief = lambda cmd: data_ins(cmd, (0, 65536), (65536, 98304),
                                               (98304, 131072), cuts=(48 + 10, 48 + 30000))
        reply = await backend.execute(READ10_128K, b"", 131072, TaskAttribute.SIMPLE)
        assert reply.status == 0 and bytes(reply.data) == PATTERN
        # out of order too (a backend may send Data-In in any order within the window)
        target.mischief = lambda cmd: data_ins(cmd, (65536, 131072), (0, 65536))
        reply = await backend.execute(READ10_128K, b"", 131072, TaskAttribute.SIMPLE)
        assert reply.status == 0 and bytes(reply.data) == PATTERN


async def test_a_straddling_data_in_past_the_buffer_end_is_refused_and_framing_holds() -> None:
    async with hostile_backend() as (target, backend, _):
        # 128 KiB + 4 KiB of data for a 128 KiB read, and the rest of the
        # session after it still parses
        target.mischief = lambda cmd: data_ins(cmd, (0, 135168), data=PATTERN + bytes(4096))
        with trio.fail_after(10), pytest.raises(BackendFault, match="past the buffer end"):
            await backend.execute(READ10_128K, b"", 131072, TaskAttribute.SIMPLE)
        # at an offset that runs past the end
        target.mischief = lambda cmd: data_ins(cmd, (0, 65536), (98304, 163840),
                                               data=PATTERN * 2)  # fmt: skip
        with trio.fail_after(10), pytest.raises(BackendFault, match="past the buffer end"):
            await backend.execute(READ10_128K, b"", 131072, TaskAttribute.SIMPLE)
        target.mischief = None
        logins = backend.logins
        assert (await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)).status == 0
        assert backend.logins == logins  # (the same session)


async def test_a_straddling_data_in_nobody_asked_for_is_skipped_whole() -> None:
    async with hostile_backend() as (target, backend, _):
        def stray(cmd: ScsiCommandPdu) -> list[bytes]:
            other = attrs.evolve(cmd, itt=cmd.itt + 1000)  # an ITT of nobody's
            return [*data_ins(other, (0, 131072)), HostileTarget.answer(cmd, 1)]

        target.mischief = stray
        logins = backend.logins
        reply = await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
        assert reply.status == 0 and backend.logins == logins


async def test_a_target_dropping_mid_segment_ends_the_read_retryable_and_reconnects() -> None:
    async with hostile_backend() as (target, backend, _):
        target.mischief = lambda cmd: [*data_ins(cmd, (0, 131072))[:2], b"CLOSE"]
        logins = backend.logins
        with trio.fail_after(10), pytest.raises(BackendDown):
            await backend.execute(READ10_128K, b"", 131072, TaskAttribute.SIMPLE)
        target.mischief = None
        await wait_reconnected(backend, logins)
        reply = await backend.execute(READ10_128K, b"", 131072, TaskAttribute.SIMPLE)
        assert reply.status == 0 and len(reply.data) == 131072


async def test_a_silent_target_times_out_and_is_reconnected() -> None:
    async with hostile_backend(timeout=0.5) as (target, backend, _):
        target.mischief = lambda cmd: b""  # says nothing
        logins = backend.logins
        with pytest.raises(BackendDown, match="in time"):
            await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
        target.mischief = None
        await wait_reconnected(backend, logins)


async def test_an_unreachable_target_is_retried_with_backoff_without_crashing() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = IscsiBackend(parse_backend(f"iscsi://127.0.0.1:{port}/{TARGET}/0"))
    device = PassthroughDevice("pt", backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(backend.run, device.on_connect)
        await trio.sleep(0.5)
        assert not backend.connected and "failed" in backend.describe()
        with pytest.raises(BackendDown):
            await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
        nursery.cancel_scope.cancel()


async def test_commands_in_flight_toward_the_backend_are_bounded() -> None:
    async with hostile_backend(timeout=1.0, queue_depth=2) as (target, backend, _):
        target.mischief = lambda cmd: b""  # holds every command
        sent = len(target.commands)
        outcomes: list[str] = []

        async def one() -> None:
            try:
                await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
            except BackendDown:
                outcomes.append("down")

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
            await trio.sleep(0.3)
            assert len(target.commands) - sent == 2  # the other three wait here
        assert outcomes == ["down"] * 5  # the hung session ends them all, retryably


# --- aborts: the backend sees one initiator (us) -------------------------------------
ABORT_TASK, ABORT_TASK_SET, LOGICAL_UNIT_RESET = 1, 2, 5


async def held(target: HostileTarget, backend: IscsiBackend, n: int) -> tuple[
    list[BackendReply | Exception], list[Callable[[], None]]
]:  # fmt: skip
    """``n`` reads queued with ``start`` and held by the target (no answer)."""
    target.mischief = lambda cmd: b""
    before = len(target.commands)
    outcomes: list[BackendReply | Exception] = []
    cancels = []
    for _ in range(n):
        cancel = backend.start(READ10, b"", 512, TaskAttribute.SIMPLE, DataDirection.READ,
                               outcomes.append)  # fmt: skip
        assert cancel is not None
        cancels.append(cancel)
    with trio.fail_after(5):
        while len(target.commands) < before + n:
            await trio.sleep(0.01)
    return outcomes, cancels


async def tmfs_settle(target: HostileTarget, count: int) -> None:
    with trio.fail_after(5):
        while len(target.tmfs) < count:
            await trio.sleep(0.01)
    await trio.sleep(0.1)  # (and nothing more comes)


async def test_every_outstanding_command_aborted_at_once_is_one_abort_task_set() -> None:
    async with hostile_backend() as (target, backend, _):
        outcomes, cancels = await held(target, backend, 3)
        for cancel in cancels:  # (a TMF cancels its task set in one step)
            cancel()
        assert [type(o) for o in outcomes] == [BackendDown] * 3  # answered at once
        await tmfs_settle(target, 1)
        assert target.tmfs == [(ABORT_TASK_SET, RESERVED_TAG)]
        assert backend.aborts_sent == {"task": 0, "task_set": 1}
        assert backend._ini is not None and backend._ini.sent_commands() == set()
        target.mischief = None  # the session serves on
        assert (await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)).status == 0


async def test_a_task_set_with_other_commands_outstanding_is_aborted_task_by_task() -> None:
    """Another nexus' command is outstanding at the backend too: ABORT TASK SET
    there would hit it, so each aborted command gets its own ABORT TASK."""
    async with hostile_backend() as (target, backend, _):
        outcomes, cancels = await held(target, backend, 3)
        itts = target.itts[-3:]
        cancels[0]()
        cancels[2]()
        await tmfs_settle(target, 2)
        assert sorted(target.tmfs) == sorted([(ABORT_TASK, itts[0]), (ABORT_TASK, itts[2])])
        assert backend._ini is not None and backend._ini.sent_commands() == {itts[1]}
        assert len(outcomes) == 2  # the third still runs at the backend
        cancels[1]()
        await tmfs_settle(target, 3)
        assert target.tmfs[-1] == (ABORT_TASK, itts[1])  # one left: ABORT TASK


async def test_abort_task_set_refused_by_the_backend_falls_back_to_abort_task() -> None:
    async with hostile_backend() as (target, backend, _):
        target.tmf_response = 5  # "function not supported"
        _, cancels = await held(target, backend, 2)
        itts = target.itts[-2:]
        for cancel in cancels:
            cancel()
        await tmfs_settle(target, 3)
        assert target.tmfs[0] == (ABORT_TASK_SET, RESERVED_TAG)
        assert sorted(target.tmfs[1:]) == sorted((ABORT_TASK, itt) for itt in itts)


async def test_a_lun_reset_ends_every_command_at_the_backend_without_aborting_each() -> None:
    """LOGICAL UNIT RESET at the backend ends our commands there without an
    answer: the aborted ones need no ABORT TASK, and one nobody aborted (the
    middle level's own I/O) ends BackendDown when the reset is complete,
    not when the watchdog gives up on it."""
    async with hostile_backend(timeout=30.0) as (target, backend, _):
        outcomes, cancels = await held(target, backend, 2)
        ended: list[str] = []

        async def own_io() -> None:
            try:
                await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
            except BackendDown:
                ended.append("down")

        async with trio.open_nursery() as nursery:
            sent = len(target.commands)
            nursery.start_soon(own_io)
            with trio.fail_after(5):
                while len(target.commands) == sent:
                    await trio.sleep(0.01)
            backend.reset_lu()  # as the LU does: reset first, then cancel its tasks
            for cancel in cancels:
                cancel()
            with trio.fail_after(5):  # not the 30 s watchdog
                while not ended:
                    await trio.sleep(0.01)
        assert target.tmfs == [(LOGICAL_UNIT_RESET, RESERVED_TAG)]
        assert [type(o) for o in outcomes] == [BackendDown] * 2
        assert backend._ini is not None and backend._ini.sent_commands() == set()


async def test_aborts_toward_a_backend_that_never_answers_them_do_not_hang() -> None:
    async with hostile_backend(timeout=0.5) as (target, backend, _):
        target.tmf_response = None  # TMFs unanswered, commands held
        logins = backend.logins
        outcomes, cancels = await held(target, backend, 2)
        cancels[0]()  # (synchronous: it cannot wait for the backend)
        assert [type(o) for o in outcomes] == [BackendDown]  # the caller is answered now
        # the held command and the unanswered abort: the watchdog drops the
        # session; the other command ends retryable, and service resumes
        with trio.fail_after(10):
            while len(outcomes) < 2:
                await trio.sleep(0.01)
        assert isinstance(outcomes[1], BackendDown)
        target.mischief, target.tmf_response = None, 0
        await wait_reconnected(backend, logins)


async def test_an_abort_after_the_session_is_gone_is_dropped() -> None:
    """A command cancelled after its session died (reconnecting): its caller
    heard BackendDown already; cancelling again, or late, does nothing."""
    async with hostile_backend() as (target, backend, _):
        outcomes, cancels = await held(target, backend, 1)
        logins = backend.logins
        ini = backend._ini
        assert ini is not None
        await ini.close()  # the connection drops
        with trio.fail_after(5):
            while not outcomes:
                await trio.sleep(0.01)
        assert isinstance(outcomes[0], BackendDown)
        cancels[0]()  # late: ignored
        cancels[0]()
        assert len(outcomes) == 1
        target.mischief = None
        await wait_reconnected(backend, logins)
        assert target.tmfs == []


async def test_a_command_not_yet_sent_is_withdrawn_not_aborted() -> None:
    """Queued behind a closed CmdSN window, never on the wire: cancelling it
    takes it back (an ABORT TASK could not reach it, and it must never be
    sent afterwards)."""
    async with hostile_backend() as (target, backend, _):
        ini = backend._ini
        assert ini is not None
        await held(target, backend, 1)
        ini.maxcmdsn = (ini.cmdsn - 1) & 0xFFFFFFFF  # the window closes
        late: list[BackendReply | Exception] = []
        cancel = backend.start(READ10, b"", 512, TaskAttribute.SIMPLE, DataDirection.READ,
                               late.append)  # fmt: skip
        assert cancel is not None
        cancel()
        assert [type(o) for o in late] == [BackendDown]
        sent = len(target.commands)
        ini.maxcmdsn = (ini.cmdsn + 16) & 0xFFFFFFFF
        ini._pump()
        await trio.sleep(0.2)
        assert len(target.commands) == sent and target.tmfs == []


@pytest.mark.parametrize("quick", [False, True], ids=["done", "quick"])
async def test_a_completion_that_raises_does_not_take_the_session_down(quick: bool) -> None:
    """Completions run in the initiator's reader: one that fails (a bug) is
    logged, and the reader, the session and the next commands go on. Both
    kinds: the generic ``done(result, error)`` and a read's quick
    ``(status, data)`` end."""
    async with hostile_backend() as (_, backend, _device):
        ini = backend._ini
        assert ini is not None
        heard: list[object] = []

        def broken(first: object, second: object) -> None:
            heard.append(first)
            raise RuntimeError("a bug in a completion")

        if quick:
            ini.submit(0, READ10, read_length=512, done=lambda r, e: None, quick=broken)
        else:
            ini.submit(0, READ10, read_length=512, done=broken)
        with trio.fail_after(5):
            while not heard:
                await trio.sleep(0.01)
        assert (await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)).status == 0
        assert backend._ini is ini  # same session


async def test_commands_given_up_during_a_refused_lun_reset_are_aborted_after_it() -> None:
    async with hostile_backend() as (target, backend, _):
        target.tmf_response = 5  # the backend refuses every TMF ("not supported")
        outcomes, cancels = await held(target, backend, 2)
        itts = target.itts[-2:]
        backend.reset_lu()
        for cancel in cancels:
            cancel()
        assert [type(o) for o in outcomes] == [BackendDown] * 2
        await tmfs_settle(target, 4)
        assert target.tmfs[:2] == [(LOGICAL_UNIT_RESET, RESERVED_TAG),
                                   (ABORT_TASK_SET, RESERVED_TAG)]  # fmt: skip
        assert sorted(target.tmfs[2:]) == sorted((ABORT_TASK, itt) for itt in itts)
        assert backend._ini is not None and backend._ini.sent_commands() == set()


# --- a read's usual end, without a Result (Initiator.submit's quick) ------------------


async def test_the_usual_read_ends_by_quick_and_anything_else_by_done() -> None:
    async with hostile_backend() as (target, backend, _device):
        ini = backend._ini
        assert ini is not None
        quick: list[tuple[int, bytes]] = []
        done: list[object] = []

        def on_done(result: object, error: object) -> None:
            done.append(result if error is None else error)

        async def submitted() -> None:
            ini.submit(0, READ10_128K, read_length=131072, done=on_done,
                       quick=lambda status, data: quick.append((status, bytes(data))))
            with trio.fail_after(5):
                while not (quick or done):
                    await trio.sleep(0.01)

        target.mischief = lambda cmd: data_ins(cmd, (0, 131072))
        await submitted()
        assert quick == [(0, PATTERN)] and done == []
        assert ini.sent_commands() == set() and not ini._tasks  # (untracked)
        quick.clear()
        # an underflow (the target had less): done, with the residual
        target.mischief = lambda cmd: pdu.encode_pdu(DataIn(
            final=True, status_present=True, underflow=True, residual_count=4096,
            itt=cmd.itt, statsn=1, expcmdsn=cmd.cmdsn + 1, maxcmdsn=cmd.cmdsn + 16,
            data=PATTERN[:126976]))  # fmt: skip
        await submitted()
        assert quick == [] and len(done) == 1
        result = done[0]
        assert getattr(result, "residual_underflow", False) and result.residual_count == 4096  # type: ignore[attr-defined]
        done.clear()
        # in two Data-Ins: done too
        target.mischief = lambda cmd: data_ins(cmd, (0, 65536), (65536, 131072))
        await submitted()
        assert quick == [] and len(done) == 1
        assert bytes(done[0].payload) == PATTERN  # type: ignore[attr-defined]


async def test_a_read_started_without_a_task_hears_its_data_and_residual() -> None:
    async with hostile_backend() as (target, backend, _device):
        outcomes: list[object] = []

        async def started() -> object:
            outcomes.clear()
            cancel = backend.start(READ10_128K, b"", 131072, TaskAttribute.SIMPLE,
                                   DataDirection.READ, outcomes.append)  # fmt: skip
            assert cancel is not None
            with trio.fail_after(5):
                while not outcomes:
                    await trio.sleep(0.01)
            return outcomes[0]

        target.mischief = lambda cmd: data_ins(cmd, (0, 131072))
        reply = await started()
        assert isinstance(reply, BackendReply) and reply.status == 0 and reply.residual == 0
        assert bytes(reply.data) == PATTERN
        target.mischief = lambda cmd: pdu.encode_pdu(DataIn(
            final=True, status_present=True, underflow=True, residual_count=4096,
            itt=cmd.itt, statsn=1, expcmdsn=cmd.cmdsn + 1, maxcmdsn=cmd.cmdsn + 16,
            data=PATTERN[:126976]))  # fmt: skip
        reply = await started()
        assert isinstance(reply, BackendReply) and reply.residual == 4096
        assert bytes(reply.data) == PATTERN[:126976]
        assert len(backend._started) == 0  # (slots and watchdog stamps given back)
        assert backend._slots.value == backend.spec.queue_depth


async def test_a_plain_scsi_response_ends_by_quick_and_one_with_more_by_done() -> None:
    """A SCSI Response with no sense, no residual and response 0 (a write's
    usual end, a TEST UNIT READY's, a read whose data came before it) ends
    by ``quick``; with sense, a residual or a response code, by ``done``
    with all of it in the Result."""
    async with hostile_backend() as (target, backend, _device):
        ini = backend._ini
        assert ini is not None
        quick: list[tuple[int, bytes]] = []
        done: list[object] = []

        async def submitted(cdb: bytes, read_length: int = 0) -> None:
            quick.clear()
            done.clear()
            ini.submit(0, cdb, read_length=read_length,
                       done=lambda result, error: done.append(result if error is None else error),
                       quick=lambda status, data: quick.append((status, bytes(data))))  # fmt: skip
            with trio.fail_after(5):
                while not (quick or done):
                    await trio.sleep(0.01)

        def response(cmd: ScsiCommandPdu, **kw: object) -> bytes:
            return pdu.encode_pdu(ScsiResponse(itt=cmd.itt, statsn=1, expcmdsn=cmd.cmdsn + 1,
                                               maxcmdsn=cmd.cmdsn + 16, **kw))  # type: ignore[arg-type]  # fmt: skip

        target.mischief = None  # a plain GOOD
        await submitted(TUR)
        assert quick == [(0, b"")] and done == [] and not ini._tasks
        target.mischief = lambda cmd: response(cmd, status=0x18)  # RESERVATION CONFLICT
        await submitted(TUR)
        assert quick == [(0x18, b"")] and done == []
        sense = bytes((0x70, 0, 6, 0, 0, 0, 0, 10)) + bytes(10)
        target.mischief = lambda cmd: response(
            cmd, status=2, data=len(sense).to_bytes(2, "big") + sense)
        await submitted(TUR)
        assert quick == [] and len(done) == 1
        assert done[0].status == 2 and done[0].sense == sense  # type: ignore[attr-defined]
        target.mischief = lambda cmd: response(cmd, underflow=True, residual_count=512)
        await submitted(TUR)
        assert quick == [] and done[0].residual_count == 512  # type: ignore[attr-defined]
        target.mischief = lambda cmd: response(cmd, response=1)
        await submitted(TUR)
        assert quick == [] and done[0].response == 1  # type: ignore[attr-defined]
        # a read in two Data-Ins without status, then a plain response: quick, all of it
        target.mischief = lambda cmd: [
            pdu.encode_pdu(DataIn(itt=cmd.itt, buffer_offset=a, datasn=n, data=PATTERN[a:b]))
            for n, (a, b) in enumerate(((0, 65536), (65536, 131072)))
        ] + [response(cmd)]
        await submitted(READ10_128K, 131072)
        assert quick == [(0, PATTERN)] and done == [] and not ini._tasks


async def test_a_data_in_buffer_is_reused_only_once_nothing_holds_it() -> None:
    """Large Data-Ins read straight from the socket go into buffers that are
    reused (no fresh 128 KiB zero-fill per read), but never one whose data
    someone still holds: a reply kept keeps its bytes."""
    async with hostile_backend() as (target, backend, _device):
        other = bytes(reversed(PATTERN))

        async def read(data: bytes) -> BackendReply:
            outcomes: list[object] = []
            target.mischief = lambda cmd: data_ins(cmd, (0, 131072), data=data)
            cancel = backend.start(READ10_128K, b"", 131072, TaskAttribute.SIMPLE,
                                   DataDirection.READ, outcomes.append)  # fmt: skip
            assert cancel is not None
            with trio.fail_after(5):
                while not outcomes:
                    await trio.sleep(0.01)
            reply = outcomes[0]
            assert isinstance(reply, BackendReply)
            return reply

        kept = await read(PATTERN)
        assert bytes(kept.data) == PATTERN
        ini = backend._ini
        assert ini is not None
        for n in range(8):
            data = other if n % 2 else PATTERN
            reply = await read(data)
            assert bytes(reply.data) == data and bytes(kept.data) == PATTERN  # (never reused)
            assert reply.data.obj is not kept.data.obj  # type: ignore[union-attr]
            assert any(reply.data.obj is b for b in ini._spares[131072])  # type: ignore[union-attr]
            del reply
        assert len(ini._spares[131072]) < 8  # (reused once let go: not one per read)


async def test_after_a_large_data_in_the_next_ones_segment_is_read_whole_into_place() -> None:
    """Right after a large Data-In the reader takes the next PDU's header
    alone: a second large Data-In's segment is then read, all of it,
    straight into its buffer (none of it read along with the header, to be
    copied there); a SCSI Response or a small Data-In after it is read as
    usual."""
    async with hostile_backend() as (target, backend, _device):
        ini = backend._ini
        assert ini is not None
        fills: list[tuple[int, int]] = []  # (segment length, bytes already read)
        fill = ini._fill

        async def recording(dest: memoryview, parts: list[memoryview]) -> bool:
            fills.append((len(dest), sum(map(len, parts))))
            return await fill(dest, parts)

        ini._fill = recording  # type: ignore[method-assign]
        other = bytes(reversed(PATTERN))
        outcomes: list[object] = []
        first = True

        def answer(cmd: ScsiCommandPdu) -> list[bytes] | bytes | None:
            nonlocal first
            if cmd.expected_data_transfer_length != 131072:
                return None
            if first:  # straddling reads: the reader detaches it
                first = False
                return data_ins(cmd, (0, 131072))
            return pdu.encode_pdu(DataIn(final=True, status_present=True, itt=cmd.itt,
                                         statsn=1, expcmdsn=cmd.cmdsn + 1,
                                         maxcmdsn=cmd.cmdsn + 16, data=other))  # fmt: skip

        target.mischief = answer
        for _ in range(2):
            assert backend.start(READ10_128K, b"", 131072, TaskAttribute.SIMPLE,
                                 DataDirection.READ, outcomes.append) is not None  # fmt: skip
        with trio.fail_after(5):
            while len(outcomes) < 2:
                await trio.sleep(0.01)
        replies = [o for o in outcomes if isinstance(o, BackendReply)]
        assert sorted(bytes(r.data) for r in replies) == sorted([PATTERN, other])
        assert fills[-1] == (131072, 0)  # the second: nothing read along, nothing copied
        # then a status-only response and a small read go as usual
        assert (await backend.execute(TUR, b"", 0, TaskAttribute.SIMPLE)).status == 0
        small = await backend.execute(READ10, b"", 512, TaskAttribute.SIMPLE)
        assert small.status == 0 and len(small.data) == 512
