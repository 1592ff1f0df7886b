"""The iSCSI backend actor against a small scripted target that misbehaves.

The target logs anyone in (no keys: the RFC defaults) and answers SCSI
commands like a 1 MiB disk, unless told to send garbage, to drop the
connection half way through a PDU, or to send more data than asked. Whatever
it does, the backend must neither crash nor pass it on: the command ends
with BackendDown (retryable) or BackendFault, and the backend reconnects.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio

from pyscst.devices.backend import BackendDown, BackendFault, parse_backend
from pyscst.devices.passthrough import PassthroughDevice
from pyscst.scsi.command import TaskAttribute
from pyscst.transports.iscsi import pdu
from pyscst.transports.iscsi.backend import IscsiBackend
from pyscst.transports.iscsi.pdu import DataIn, LoginRequest, LoginResponse, PduReader, ScsiResponse
from pyscst.transports.iscsi.pdu import ScsiCommand as ScsiCommandPdu

TARGET = "iqn.2026-11.test:hostile"
INQUIRY = bytes((0x12, 0, 0, 0, 96, 0))
READ10 = bytes((0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0))

#: what the target does with a command: None answers normally
Mischief = Callable[[ScsiCommandPdu], bytes | None]


class HostileTarget:
    def __init__(self) -> None:
        self.mischief: Mischief | None = None
        self.logins = 0
        self.commands: list[bytes] = []

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
                if not isinstance(event, ScsiCommandPdu):
                    continue
                self.commands.append(bytes(event.cdb[:1]))
                statsn += 1
                wire = self.mischief(event) if self.mischief is not None else None
                if wire is None:
                    wire = self.answer(event, statsn)
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
