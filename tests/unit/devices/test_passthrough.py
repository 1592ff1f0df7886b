"""The pass-through device in a real LogicalUnit, over a scripted backend.

What the middle level owes a backend that sees one initiator: the command
set learnt from the backend, reservations checked before forwarding, the
backend's UAs delivered to every nexus once, LUN reset passed on without a
doubled 29/03, ABORT TASK reaching the backend, commands lost with the
backend ending retryable, its sense passed through byte for byte, and
VPD 0x83 naming our port. (The real iSCSI backend against tgtd:
tests/e2e/test_passthrough.py.)
"""

from __future__ import annotations

import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.lowlevel
from hypothesis import example, given
from hypothesis import strategies as st

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.messages import AbortTask, ResetLogicalUnit, TmfResponse, call
from pyscst.devices.backend import BackendReply
from pyscst.devices.passthrough import (
    PassthroughDevice,
    merge_device_identification,
    passthrough_table,
)
from pyscst.scsi.command import DataDirection, Nexus, TaskAttribute
from pyscst.scsi.sense import Asc, ScsiError, Status
from tests.cdbs import TUR, read10, sense_triplet, write10
from tests.fake_backend import FakeBackend, QueuingFakeBackend
from tests.unit.actors.test_task_set import NEXUS_A, NEXUS_B, Recorder, command, wait_answers

RESERVE6 = bytes((0x16, 0, 0, 0, 0, 0))
WRITE_SAME10 = bytes((0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0))
VENDOR = bytes((0xC5, 0, 0, 0, 0, 0))


#: the backend ``passthrough_lu`` makes: every test runs with both (autouse fixture)
FAKE: type[FakeBackend] = FakeBackend


@pytest.fixture(autouse=True, params=["task", "queued"])
def backend_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: over a backend the device awaits (a task per
    command), and over one that queues commands synchronously (the iSCSI
    backend's ``start``: the LU's fast path, answered through a Pending).
    The middle level's duties must not depend on which."""
    kind: str = request.param
    monkeypatch.setattr(sys.modules[__name__], "FAKE",
                        QueuingFakeBackend if kind == "queued" else FakeBackend)  # fmt: skip
    return kind


@asynccontextmanager
async def passthrough_lu(
    backend: FakeBackend | None = None,
) -> AsyncIterator[tuple[LogicalUnit, PassthroughDevice, FakeBackend]]:
    backend = backend or FAKE()
    device = PassthroughDevice("pt", backend)
    lu = LogicalUnit("pt", lambda: device, CORE_TABLE)
    async with trio.open_nursery() as nursery:
        if isinstance(backend, QueuingFakeBackend):
            await nursery.start(backend.run, device.on_connect)
            while device.probe is None:
                await trio.lowlevel.checkpoint()
        else:
            await device.on_connect()
        await nursery.start(lu.run)
        yield lu, device, backend
        nursery.cancel_scope.cancel()


async def one(lu: LogicalUnit, cdb: bytes, nexus: Nexus = NEXUS_A, data_out: bytes = b"",
              attr: TaskAttribute = TaskAttribute.SIMPLE) -> tuple[Status, bytes | None, bytes]:
    t = Recorder(data_out)
    cmd = command(t, cdb, 1, attr=attr, nexus=nexus)
    if cdb[0] in (0x12, 0x88, 0x9E, 0xA3):
        cmd.direction = DataDirection.READ
    if data_out:
        cmd.expected_length = len(data_out)
    lu.submit(cmd, 0, False)
    await wait_answers(t, 1)
    r = t.responses[0]
    return r.status, r.sense, r.data or b""


async def clear(lu: LogicalUnit, *nexuses: Nexus) -> None:
    for nexus in nexuses:
        status, sense, _ = await one(lu, TUR, nexus)
        assert status == Status.CHECK_CONDITION and sense is not None
        assert sense_triplet(sense) == (6, 0x29, 0x00)


async def test_probe_learns_type_and_command_set_from_the_backend() -> None:
    async with passthrough_lu() as (lu, device, backend):
        assert device.probe is not None and device.probe.peripheral_type == 0
        assert device.blocks == backend.blocks
        await clear(lu, NEXUS_A)
        # listed by the backend's RSOC: forwarded with data and task attribute
        payload = bytes(range(256)) * 2
        status, _, _ = await one(lu, write10(3), data_out=payload, attr=TaskAttribute.ORDERED)
        assert status == Status.GOOD
        assert backend.seen[-1][1] == payload and backend.seen[-1][3] == TaskAttribute.ORDERED
        status, _, data = await one(lu, read10(3))
        assert status == Status.GOOD and data == payload
        # ours, but not the backend's (RSOC does not list it): refused here
        sent = len(backend.seen)
        status, sense, _ = await one(lu, WRITE_SAME10)
        assert sense is not None and sense_triplet(sense) == (5, 0x20, 0x00)
        status, sense, _ = await one(lu, VENDOR)
        assert sense is not None and sense_triplet(sense) == (5, 0x20, 0x00)
        # LBA beyond the backend's capacity: LBA OUT OF RANGE, never forwarded
        status, sense, _ = await one(lu, read10(backend.blocks))
        assert sense is not None and sense_triplet(sense) == (5, 0x21, 0x00)
        assert len(backend.seen) == sent


async def test_a_backend_without_rsoc_gets_unknown_commands_forwarded() -> None:
    backend = FakeBackend()
    backend.script = lambda cdb, data, n: (
        BackendReply(Status.CHECK_CONDITION, bytes.fromhex("70000500000000000a000000200000000000"))
        if cdb[0] == 0xA3 else None
    )
    async with passthrough_lu(backend) as (lu, device, _):
        assert device.probe is not None and device.probe.supported is None
        await clear(lu, NEXUS_A)
        backend.script = None
        status, _, _ = await one(lu, VENDOR)
        assert status == Status.GOOD and backend.seen[-1][0] == VENDOR


async def test_reservations_are_ours_and_conflicts_never_reach_the_backend() -> None:
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A, NEXUS_B)
        assert (await one(lu, RESERVE6, NEXUS_A))[0] == Status.GOOD
        assert not any(seen[0][0] == 0x16 for seen in backend.seen)
        sent = len(backend.seen)
        status, _, _ = await one(lu, write10(0), NEXUS_B, data_out=bytes(512))
        assert status == Status.RESERVATION_CONFLICT
        assert len(backend.seen) == sent
        assert (await one(lu, write10(0), NEXUS_A, data_out=bytes(512)))[0] == Status.GOOD


async def test_backend_unit_attention_reaches_every_nexus_once() -> None:
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A, NEXUS_B)
        backend.pending_ua = [Asc.MODE_PARAMETERS_CHANGED]
        _status, sense, _ = await one(lu, TUR, NEXUS_A)
        assert sense is not None and sense_triplet(sense) == (6, 0x2A, 0x01)
        assert (await one(lu, TUR, NEXUS_A))[0] == Status.GOOD  # once for A
        sent = len(backend.seen)
        _status, sense, _ = await one(lu, TUR, NEXUS_B)  # B hears it from pyscst
        assert sense is not None and sense_triplet(sense) == (6, 0x2A, 0x01)
        assert len(backend.seen) == sent
        assert (await one(lu, TUR, NEXUS_B))[0] == Status.GOOD


async def test_uas_captured_at_a_reconnection_go_to_every_nexus() -> None:
    async with passthrough_lu() as (lu, device, backend):
        await clear(lu, NEXUS_A, NEXUS_B)
        backend.pending_ua = [Asc.POWER_ON_OCCURRED]
        backend.blocks *= 2
        await device.on_connect()  # the backend came back (restarted, and bigger)
        assert backend.pending_ua == []  # the probe consumed it
        for nexus in (NEXUS_A, NEXUS_B):
            _status, sense, _ = await one(lu, TUR, nexus)
            assert sense is not None and sense_triplet(sense) == (6, 0x29, 0x01)
            _status, sense, _ = await one(lu, TUR, nexus)
            assert sense is not None and sense_triplet(sense) == (6, 0x2A, 0x09)
            assert (await one(lu, TUR, nexus))[0] == Status.GOOD


async def test_lun_reset_resets_the_backend_and_its_29_03_is_not_doubled() -> None:
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A, NEXUS_B)
        answer = await call(lu.mailbox, ResetLogicalUnit(NEXUS_A))
        assert answer == TmfResponse.COMPLETE and backend.resets == 1
        for nexus in (NEXUS_A, NEXUS_B):
            _status, sense, _ = await one(lu, TUR, nexus)
            assert sense is not None and sense_triplet(sense) == (6, 0x29, 0x03)
        # the backend's own 29/03 (to pyscst) was swallowed and the command retried
        assert (await one(lu, TUR, NEXUS_A))[0] == Status.GOOD
        assert (await one(lu, TUR, NEXUS_B))[0] == Status.GOOD
        assert backend.pending_ua == []


async def held_at_backend(lu: LogicalUnit, backend: FakeBackend, cdb: bytes, tag: int) -> Recorder:
    """Submit ``cdb``; return once the backend holds it (until ``backend.hold`` is set)."""
    backend.hold = trio.Event()
    t = Recorder()
    lu.submit(command(t, cdb, tag), 0, False)
    with trio.fail_after(5):
        while not backend.seen or backend.seen[-1][0] != cdb:
            await trio.sleep(0.001)
    return t


async def test_abort_task_reaches_a_command_held_at_the_backend() -> None:
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A)
        t = await held_at_backend(lu, backend, read10(0), 7)
        assert await call(lu.mailbox, AbortTask(NEXUS_A, 7)) == TmfResponse.COMPLETE
        assert t.responses == []  # aborted: no status
        backend.hold = None


async def test_commands_lost_with_the_backend_end_retryable() -> None:
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A)
        t = await held_at_backend(lu, backend, read10(0), 7)
        backend.up = False  # the connection goes with the command outstanding
        assert backend.hold is not None
        backend.hold.set()
        backend.hold = None
        await wait_answers(t, 1)
        sense = t.responses[0].sense
        assert sense is not None and sense_triplet(sense) == (0x0B, 0x08, 0x00)
        _status, sense, _ = await one(lu, TUR)  # while down: becoming ready
        assert sense is not None and sense_triplet(sense) == (2, 0x04, 0x01)
        backend.up = True
        assert (await one(lu, TUR))[0] == Status.GOOD


async def test_backend_sense_and_status_pass_through_unchanged() -> None:
    odd = bytes.fromhex("720b5d06000000080206000080000000")  # descriptor, vendor ASC
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A)
        backend.script = lambda cdb, data, n: BackendReply(Status.CHECK_CONDITION, odd)
        status, sense, _ = await one(lu, read10(1))
        assert status == Status.CHECK_CONDITION and sense == odd
        backend.script = lambda cdb, data, n: BackendReply(Status.BUSY)
        assert (await one(lu, read10(1)))[0] == Status.BUSY
        backend.script = lambda cdb, data, n: BackendReply(Status.GOOD, data=bytes(512),
                                                           residual=-512)
        status, _, data = await one(lu, read10(1))
        assert status == Status.GOOD and len(data) == 1024  # overflow kept in the residual


async def test_device_identification_keeps_backend_lu_designators_and_names_our_port() -> None:
    async with passthrough_lu() as (lu, _, _):
        status, _, data = await one(lu, bytes((0x12, 1, 0x83, 0, 255, 0)))
        assert status == Status.GOOD
        designators = []
        at = 4
        while at < len(data):
            designators.append(data[at : at + 4 + data[at + 3]])
            at += 4 + data[at + 3]
        assert designators[0][4:] == bytes.fromhex("6001405abcdef012")  # the backend's NAA
        relative = [d for d in designators if d[1] & 0x0F == 4]
        assert [struct.unpack(">H", d[6:8])[0] for d in relative] == [NEXUS_A.relative_port]
        names = [d[4:].rstrip(b"\0") for d in designators if d[1] & 0x0F == 8]
        assert NEXUS_A.target_port.encode() in names


def test_device_identification_merge_survives_truncated_pages() -> None:
    page = bytes((0, 0x83, 0, 40)) + bytes((1, 3, 0, 8)) + bytes(4)  # cut short
    merged = merge_device_identification(page, NEXUS_A)
    assert merged[:2] == page[:2]
    assert int.from_bytes(merged[2:4], "big") == len(merged) - 4
    assert merge_device_identification(b"\0", NEXUS_A) == b"\0"


def caw(lba: int, n: int = 1) -> bytes:
    return bytes((0x89, 0)) + lba.to_bytes(8, "big") + bytes((0, 0, 0, n, 0, 0))


async def test_compare_and_write_is_emulated_for_a_backend_without_it() -> None:
    async with passthrough_lu() as (lu, device, backend):
        await clear(lu, NEXUS_A)
        assert device.emulates_caw and device.caw_max_blocks == 255
        backend.data[512:1024] = b"a" * 512
        status, _, _ = await one(lu, caw(1), data_out=b"a" * 512 + b"b" * 512)
        assert status == Status.GOOD and backend.data[512:1024] == b"b" * 512
        assert not any(seen[0][0] == 0x89 for seen in backend.seen)  # never forwarded
        status, sense, _ = await one(lu, caw(1), data_out=b"b" * 100 + b"c" * 412 + bytes(512))
        assert sense is not None and sense_triplet(sense) == (0x0E, 0x1D, 0x00)
        assert sense[3:7] == (100).to_bytes(4, "big")  # INFORMATION: first difference
        assert backend.data[512:1024] == b"b" * 512
        backend.script = lambda cdb, data, n: (
            BackendReply(Status.GOOD, data=bytes(8) + (8).to_bytes(4, "big") + bytes(52))
            if cdb[:3] == bytes((0x12, 1, 0xB0)) else None
        )
        await device.on_connect()
        assert device.caw_max_blocks == 8
        status, _, data = await one(lu, bytes((0x12, 1, 0xB0, 0, 64, 0)))
        assert data[5] == 8
        backend.script = None
        status, sense, _ = await one(lu, caw(1, 9), data_out=bytes(9 * 1024))
        assert sense is not None and sense_triplet(sense) == (5, 0x24, 0x00)


async def test_fault_injection_works_on_a_passed_through_lun() -> None:
    """pyscst as a fault-injecting proxy: the same rules as on a local disk."""
    from pyscst.actors.faults import Action, ActionKind, FaultEngine, FaultRule, Match, Trigger

    engine = FaultEngine()
    backend = FakeBackend()
    device = PassthroughDevice("pt", backend)
    await device.on_connect()
    lu = LogicalUnit("pt", lambda: device, CORE_TABLE, faults=engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        await clear(lu, NEXUS_A)
        now = trio.current_time()
        # a medium error on reads of LBA 5: answered here, never forwarded
        engine.add(FaultRule("bad", Action(ActionKind.CHECK_CONDITION),
                             Match(lba=(5, 5)), Trigger(times=1)), now)  # fmt: skip
        sent = len(backend.seen)
        _status, sense, _ = await one(lu, read10(5))
        assert sense is not None and sense_triplet(sense) == (3, 0x11, 0x00)
        assert len(backend.seen) == sent
        # corrupt read: the backend's data with bits flipped on the way
        backend.data[6 * 512 : 7 * 512] = bytes(512)
        engine.add(FaultRule("flip", Action(ActionKind.CORRUPT_READ, bits=3),
                             Match(lba=(6, 6)), Trigger(times=1)), now)  # fmt: skip
        status, _, data = await one(lu, read10(6))
        assert status == Status.GOOD and sum(bin(b).count("1") for b in data) == 3
        # torn write: the first block reaches the backend, then MEDIUM ERROR
        engine.add(FaultRule("tear", Action(ActionKind.TORN_WRITE, blocks=1),
                             Match(lba=(8, 9)), Trigger(times=1)), now)  # fmt: skip
        t = Recorder(b"x" * 1024)
        cmd = command(t, write10(8, 2), 3)
        cmd.expected_length = 1024
        lu.submit(cmd, 0, False)
        await wait_answers(t, 1)
        sense = t.responses[0].sense
        assert sense is not None and sense_triplet(sense) == (3, 0x0C, 0x00)
        assert backend.data[8 * 512 : 9 * 512] == b"x" * 512
        assert backend.data[9 * 512 : 10 * 512] == bytes(512)
        nursery.cancel_scope.cancel()


async def test_data_moved_before_a_check_condition_is_passed_on_with_it() -> None:
    ili = bytes.fromhex("f0002000000f770a00000000000000000000")  # ILI, a short record
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A)
        backend.script = lambda cdb, data, n: BackendReply(Status.CHECK_CONDITION, ili,
                                                           b"\x01" * 137, 3959)
        status, sense, data = await one(lu, read10(1))
        assert (status, sense, data) == (Status.CHECK_CONDITION, ili, b"\x01" * 137)


def prevent(on: bool) -> bytes:
    return bytes((0x1E, 0, 0, 0, 1 if on else 0, 0))


async def test_prevent_is_held_per_nexus_and_only_the_union_reaches_the_backend() -> None:
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A, NEXUS_B)

        def sent() -> list[int]:
            return [seen[0][4] for seen in backend.seen if seen[0][0] == 0x1E]

        assert (await one(lu, prevent(True), NEXUS_A))[0] == Status.GOOD
        assert (await one(lu, prevent(True), NEXUS_B))[0] == Status.GOOD
        assert (await one(lu, prevent(False), NEXUS_A))[0] == Status.GOOD
        assert sent() == [1]  # B still prevents: the backend stays locked
        assert (await one(lu, prevent(False), NEXUS_B))[0] == Status.GOOD
        assert sent() == [1, 0]
        assert (await one(lu, prevent(True), NEXUS_A))[0] == Status.GOOD
        lu.unit_attention(Asc.I_T_NEXUS_LOSS_OCCURRED, NEXUS_B)  # B's queue, not A's
        await lu.reset_nexus(NEXUS_A)  # A's nexus goes: its PREVENT with it
        assert sent() == [1, 0, 1]
        await one(lu, TUR, NEXUS_B)
        assert (await one(lu, TUR, NEXUS_B))[0] == Status.GOOD
        assert sent() == [1, 0, 1, 0]  # ALLOW went before B's next command


async def test_before_the_backend_is_reached_inquiry_says_not_connected() -> None:
    backend = FakeBackend()
    device = PassthroughDevice("pt", backend)
    lu = LogicalUnit("pt", lambda: device, CORE_TABLE)
    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        status, _, data = await one(lu, bytes((0x12, 0, 0, 0, 96, 0)))
        assert status == Status.GOOD and data[0] == 0x3F and len(data) == 36
        await clear(lu, NEXUS_A)
        _status, sense, _ = await one(lu, TUR)
        assert sense is not None and sense_triplet(sense) == (2, 0x04, 0x01)
        await device.on_connect()  # the backend is reached at last
        _status, sense, _ = await one(lu, TUR)
        assert sense is not None and sense_triplet(sense) == (6, 0x3F, 0x03)
        status, _, data = await one(lu, bytes((0x12, 0, 0, 0, 96, 0)))
        assert data[0] == 0x00 and data[8:16] == b"FAKE    "  # the backend's now
        nursery.cancel_scope.cancel()


@given(st.binary(min_size=1, max_size=32), st.sampled_from([0x00, 0x01, 0x05, 0x08, 0x1F]),
       st.booleans())
@example(b"\x9e", 0x00, False)  # a service-action opcode with no byte for the action
@example(b"\x7f", 0x01, False)
def test_any_cdb_gets_a_row_or_a_scsi_error(cdb: bytes, peripheral: int, known: bool) -> None:
    from tests.fake_backend import SUPPORTED

    table = passthrough_table(peripheral, frozenset(SUPPORTED) if known else None)
    try:
        spec = table.lookup(cdb)
    except ScsiError:
        return
    assert spec.opcode == cdb[0]


async def test_a_backend_that_queues_gets_reads_and_writes_without_a_task(
    backend_kind: str,
) -> None:
    """Over the iSCSI backend's ``start``: queued at once, answered from the
    backend's reply (no LU task); when it cannot queue (queue depth
    reached), the same command takes the task path and is answered the same."""
    async with passthrough_lu() as (lu, _, backend):
        await clear(lu, NEXUS_A)
        before = backend.started if isinstance(backend, QueuingFakeBackend) else 0
        assert (await one(lu, write10(3), data_out=b"\x07" * 512))[0] == Status.GOOD
        status, _, data = await one(lu, read10(3))
        assert status == Status.GOOD and bytes(data) == b"\x07" * 512
        if isinstance(backend, QueuingFakeBackend):
            assert backend.started == before + 2
            backend.refuse = True
            status, _, data = await one(lu, read10(3))
            assert status == Status.GOOD and bytes(data) == b"\x07" * 512
            assert backend.started == before + 2
        assert lu.task_count() == 0


@pytest.mark.parametrize("backend_kind", ["queued"], indirect=True)  # the queued path's own
async def test_a_queued_command_whose_caller_is_aborted_is_aborted_at_the_backend(
    backend_kind: str,
) -> None:
    async with passthrough_lu() as (lu, _, backend):
        assert isinstance(backend, QueuingFakeBackend)
        await clear(lu, NEXUS_A)
        t = await held_at_backend(lu, backend, read10(0), 7)
        assert await call(lu.mailbox, AbortTask(NEXUS_A, 7)) == TmfResponse.COMPLETE
        assert backend.aborted == 1 and t.responses == [] and lu.task_count() == 0


class _PiecedRecorder(Recorder):
    """A write's data-out in the pieces it came in (as the iSCSI connection
    keeps one whose data came by R2T); asking for it joined fails."""

    def __init__(self, parts: list[bytes]) -> None:
        super().__init__(b"".join(parts))
        self.parts = parts

    def data_now(self, cmd, length):  # type: ignore[no-untyped-def]
        raise AssertionError("joined: data_now was asked")

    def data_segments_now(self, cmd, length):  # type: ignore[no-untyped-def]
        return list(self.parts)


class _PiecesSeen(QueuingFakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.data_outs: list[object] = []

    def start(self, cdb, data_out, *args):  # type: ignore[no-untyped-def]
        self.data_outs.append(data_out)
        return super().start(cdb, data_out, *args)


@pytest.mark.parametrize("backend_kind", ["queued"], indirect=True)  # the queued path's own
async def test_a_queued_write_goes_to_the_backend_in_the_pieces_it_came_in(
    backend_kind: str,
) -> None:
    """The fast path hands the backend the data-out's pieces, not one
    buffer joined from them (a copy of every byte written)."""
    backend = _PiecesSeen()
    parts = [b"\x01" * 100, b"\x02" * 312, b"\x03" * 100]
    async with passthrough_lu(backend) as (lu, _, _):
        await clear(lu, NEXUS_A)
        t = _PiecedRecorder(parts)
        cmd = command(t, write10(3), 1)
        cmd.expected_length = 512
        lu.submit(cmd, 0, False)
        await wait_answers(t, 1)
        assert t.responses[0].status == Status.GOOD
        assert backend.data_outs[-1] == parts  # (as they came: not joined)
        status, _, data = await one(lu, read10(3))
        assert status == Status.GOOD and bytes(data) == b"".join(parts)
