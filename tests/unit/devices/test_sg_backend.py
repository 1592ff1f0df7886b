"""The SG_IO backend's ioctl layer against a fake kernel.

No SCSI device exists on these machines, so the ioctl is a fake that reads
the ``sg_io_hdr_t`` the way the kernel does (through its pointers) and fills
in what a device would answer. What this checks: the structure's layout
(its size and offsets on this ABI), what travels through the pointers (CDB,
data out, data in, sense), status, sense, residual, host/driver time-outs and
ioctl errors. It does not show that a real device answers as the fake does.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.devices.backend import BackendDown, BackendFault, parse_backend
from pyscst.devices.passthrough import PassthroughDevice
from pyscst.devices.sg_backend import (
    SG_DXFER_FROM_DEV,
    SG_DXFER_NONE,
    SG_DXFER_TO_DEV,
    SG_IO,
    SG_SCSI_RESET,
    SG_SCSI_RESET_DEVICE,
    Request,
    SgBackend,
    SgIoHdr,
    decode,
)
from pyscst.scsi.command import TaskAttribute
from pyscst.scsi.sense import Asc, Sense, SenseKey


def test_sg_io_hdr_layout_matches_the_kernel_abi() -> None:
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("offsets below are the LP64 ABI's")
    # sizeof(struct sg_io_hdr) and field offsets on x86_64/aarch64 (LP64)
    assert ctypes.sizeof(SgIoHdr) == 88
    offsets = {field[0]: getattr(SgIoHdr, field[0]).offset for field in SgIoHdr._fields_}
    assert offsets["dxfer_len"] == 12 and offsets["dxferp"] == 16 and offsets["cmdp"] == 24
    assert offsets["sbp"] == 32 and offsets["timeout"] == 40 and offsets["usr_ptr"] == 56
    assert offsets["status"] == 64 and offsets["sb_len_wr"] == 67
    assert offsets["host_status"] == 68 and offsets["resid"] == 72 and offsets["info"] == 80


class FakeKernel:
    """Plays the sg driver: reads the request through its pointers, answers."""

    def __init__(self) -> None:
        self.disk = bytearray(64 * 512)
        self.seen: list[tuple[bytes, int, int]] = []
        self.sense: bytes = b""
        self.status = 0
        self.host_status = 0
        self.driver_status = 0
        self.fail: int | None = None
        self.short = 0

    def ioctl(self, fd: int, request: int, hdr: Any) -> int:
        assert request == SG_IO and isinstance(hdr, SgIoHdr)
        if self.fail is not None:
            raise OSError(self.fail, "fake")
        assert hdr.interface_id == ord("S")
        cdb = ctypes.string_at(hdr.cmdp, hdr.cmd_len)
        self.seen.append((cdb, hdr.dxfer_direction, hdr.dxfer_len))
        hdr.status, hdr.host_status, hdr.driver_status = (
            self.status, self.host_status, self.driver_status)
        if self.sense:
            ctypes.memmove(hdr.sbp, self.sense, len(self.sense))
            hdr.sb_len_wr = len(self.sense)
        if cdb[0] == 0x28 and hdr.dxfer_direction == SG_DXFER_FROM_DEV:
            lba, n = struct.unpack_from(">IxH", cdb, 2)
            data = bytes(self.disk[lba * 512 : (lba + n) * 512])[: hdr.dxfer_len - self.short]
            ctypes.memmove(hdr.dxferp, data, len(data))
            hdr.resid = hdr.dxfer_len - len(data)
        elif cdb[0] == 0x2A and hdr.dxfer_direction == SG_DXFER_TO_DEV:
            lba = struct.unpack_from(">I", cdb, 2)[0]
            self.disk[lba * 512 : lba * 512 + hdr.dxfer_len] = ctypes.string_at(
                hdr.dxferp, hdr.dxfer_len)
        elif cdb[0] == 0x12 and hdr.dxfer_direction == SG_DXFER_FROM_DEV:
            inquiry = bytes((0x01,)) + bytes(95)  # a tape drive
            ctypes.memmove(hdr.dxferp, inquiry, min(96, hdr.dxfer_len))
            hdr.resid = max(0, hdr.dxfer_len - 96)
        return 0


async def started(nursery: trio.Nursery, backend: SgBackend, device: PassthroughDevice) -> None:
    await nursery.start(backend.run, device.on_connect)
    with trio.fail_after(5):
        while not backend.connected:
            await trio.sleep(0.01)


def _backend(tmp_path: Path, kernel: FakeKernel) -> SgBackend:
    dev = tmp_path / "sg0"
    dev.write_bytes(b"")
    return SgBackend(parse_backend(str(dev)), ioctl=kernel.ioctl)


def test_request_points_at_its_buffers_and_decode_reads_the_answer() -> None:
    request = Request(bytes((0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0)), b"", 1024, 5000)
    hdr = request.hdr
    assert hdr.dxfer_direction == SG_DXFER_FROM_DEV and hdr.dxfer_len == 1024
    assert ctypes.string_at(hdr.cmdp, hdr.cmd_len)[:2] == bytes((0x28, 0))
    assert hdr.timeout == 5000 and hdr.mx_sb_len == 252
    ctypes.memmove(hdr.dxferp, b"\xab" * 1000, 1000)
    hdr.resid = 24
    reply = decode(request)
    assert reply.data == b"\xab" * 1000 and reply.residual == 24
    assert Request(bytes(6), b"", 0, 1).hdr.dxfer_direction == SG_DXFER_NONE
    assert Request(bytes(6), b"xy", 0, 1).hdr.dxfer_direction == SG_DXFER_TO_DEV
    with pytest.raises(ValueError):
        Request(b"", b"", 0, 1)


@pytest.mark.parametrize(("host", "driver", "resid", "error"), [
    (0x03, 0, 0, BackendDown),  # DID_TIME_OUT
    (0x01, 0, 0, BackendDown),  # DID_NO_CONNECT
    (0, 0x06, 0, BackendDown),  # DRIVER_TIMEOUT
    (0, 0, 2000, BackendFault),  # a residual beyond the transfer
    (0, 0, -1, BackendFault),
])  # fmt: skip
def test_decode_refuses_what_did_not_complete(
    host: int, driver: int, resid: int, error: type[Exception]
) -> None:
    request = Request(bytes(10), b"", 1024, 1000)
    request.hdr.host_status, request.hdr.driver_status, request.hdr.resid = host, driver, resid
    with pytest.raises(error):
        decode(request)


async def test_commands_travel_through_sg_io_with_data_sense_and_status(tmp_path: Path) -> None:
    kernel = FakeKernel()
    backend = _backend(tmp_path, kernel)
    device = PassthroughDevice("sg", backend)
    async with trio.open_nursery() as nursery:
        await started(nursery, backend, device)
        assert device.probe is not None and device.probe.peripheral_type == 0x01  # the tape's
        block = bytes(range(256)) * 2
        write = bytes((0x2A, 0, 0, 0, 0, 3, 0, 0, 1, 0))
        assert (await backend.execute(write, block, 0, TaskAttribute.SIMPLE)).status == 0
        read = bytes((0x28, 0, 0, 0, 0, 3, 0, 0, 1, 0))
        reply = await backend.execute(read, b"", 512, TaskAttribute.SIMPLE)
        assert reply.data == block and reply.residual == 0
        kernel.short = 12
        reply = await backend.execute(read, b"", 512, TaskAttribute.SIMPLE)
        assert len(reply.data) == 500 and reply.residual == 12
        kernel.short = 0
        sense = Sense.of(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR).encode()
        kernel.status, kernel.sense = 0x02, sense
        reply = await backend.execute(read, b"", 512, TaskAttribute.SIMPLE)
        assert reply.status == 0x02 and reply.sense == sense  # unchanged
        kernel.status, kernel.sense = 0, b""
        kernel.fail = errno.ENODEV  # the device went away
        with pytest.raises(BackendDown):
            await backend.execute(read, b"", 512, TaskAttribute.SIMPLE)
        kernel.fail = None
        with trio.fail_after(5):  # reopened, probed again
            while not backend.connected or backend.describe().endswith("down"):
                await trio.sleep(0.01)
        assert (await backend.execute(read, b"", 512, TaskAttribute.SIMPLE)).data == block
        nursery.cancel_scope.cancel()


async def test_a_missing_device_is_retried_not_fatal(tmp_path: Path) -> None:
    backend = SgBackend(parse_backend(str(tmp_path / "nope")), ioctl=FakeKernel().ioctl)
    device = PassthroughDevice("sg", backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(backend.run, device.on_connect)
        await trio.sleep(0.3)
        assert not backend.connected and "No such file" in backend.describe()
        nursery.cancel_scope.cancel()


async def test_lun_reset_is_sg_scsi_reset_off_the_event_loop(tmp_path: Path) -> None:
    kernel = FakeKernel()
    calls: list[tuple[int, int]] = []

    def ioctl(fd: int, request: int, arg: Any) -> int:
        if request == SG_SCSI_RESET:
            calls.append((request, arg.value))
            return 0
        return kernel.ioctl(fd, request, arg)

    dev = tmp_path / "sg0"
    dev.write_bytes(b"")
    backend = SgBackend(parse_backend(str(dev)), ioctl=ioctl)
    device = PassthroughDevice("sg", backend)
    async with trio.open_nursery() as nursery:
        await started(nursery, backend, device)
        device.reset()
        with trio.fail_after(5):
            while not calls:
                await trio.sleep(0.01)
        assert calls == [(SG_SCSI_RESET, SG_SCSI_RESET_DEVICE)]
        nursery.cancel_scope.cancel()
