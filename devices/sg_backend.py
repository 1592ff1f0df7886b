"""The SG_IO backend: a local SCSI device (``/dev/sgN`` or a block device) passed through.

A ``passthrough`` device with ``backend = "/dev/sgN"`` hands each command to
the kernel's SCSI generic driver with the SG_IO ioctl: one ``sg_io_hdr_t``
(linux/include/scsi/sg.h, built here with ctypes) carrying the CDB, the data
buffer and a sense buffer, answered with SCSI status, sense, residual and the
host adapter's and driver's status. The ioctl blocks, so it runs in a worker
thread; at most ``queue_depth`` at once.

How the answer is read (:func:`decode`): a host status other than OK (no
connect, bus busy, time-out, reset, ...) or an ioctl error means the command
did not complete: :class:`BackendDown` (retryable). Otherwise the SCSI status
and the sense the device wrote are passed on unchanged, with the residual.

Tested only against a fake ioctl (tests/unit/devices/test_sg_backend.py: the
structure's layout, what the fake reads through its pointers, status, sense,
residual, time-outs and errors): the machines this was written on have no
SCSI devices. It has not run against real hardware.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pyscst.devices.backend import (
    RECONNECT_FIRST,
    RECONNECT_MAX,
    BackendDown,
    BackendFault,
    BackendReply,
    BackendSpec,
    LinkState,
)
from pyscst.scsi.command import Buffer, DataDirection, TaskAttribute

log = logging.getLogger(__name__)

SG_IO = 0x2285
SG_SCSI_RESET = 0x2284
SG_SCSI_RESET_DEVICE = 1
SG_DXFER_NONE = -1
SG_DXFER_TO_DEV = -2
SG_DXFER_FROM_DEV = -3
#: host_status values (DID_*) that mean the command never completed
DID_OK = 0x00
DID_TIME_OUT = 0x03
#: driver_status: the sense buffer is valid
DRIVER_SENSE = 0x08
DRIVER_TIMEOUT = 0x06
SENSE_MAX = 252


class SgIoHdr(ctypes.Structure):
    """``struct sg_io_hdr`` (linux/include/uapi/scsi/sg.h), native layout."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


class Request:
    """One SG_IO call's memory: the header and the buffers it points into
    (kept alive together for as long as the kernel may use them)."""

    def __init__(self, cdb: bytes, data_out: Buffer, read_length: int, timeout_ms: int) -> None:
        if not 1 <= len(cdb) <= 255:
            raise ValueError(f"CDB of {len(cdb)} bytes")
        self.cdb = ctypes.create_string_buffer(bytes(cdb), len(cdb))
        self.sense = ctypes.create_string_buffer(SENSE_MAX)
        if len(data_out):
            self.data = ctypes.create_string_buffer(bytes(data_out), len(data_out))
            direction, length = SG_DXFER_TO_DEV, len(data_out)
        elif read_length:
            self.data = ctypes.create_string_buffer(read_length)
            direction, length = SG_DXFER_FROM_DEV, read_length
        else:
            self.data = ctypes.create_string_buffer(0)
            direction, length = SG_DXFER_NONE, 0
        self.hdr = SgIoHdr(
            interface_id=ord("S"), dxfer_direction=direction, cmd_len=len(cdb),
            mx_sb_len=SENSE_MAX, dxfer_len=length,
            dxferp=ctypes.cast(self.data, ctypes.c_void_p) if length else None,
            cmdp=ctypes.cast(self.cdb, ctypes.c_void_p),
            sbp=ctypes.cast(self.sense, ctypes.c_void_p), timeout=timeout_ms,
        )  # fmt: skip


def decode(request: Request) -> BackendReply:
    """What the device answered, from the header the ioctl filled in."""
    hdr = request.hdr
    if hdr.host_status != DID_OK:
        timed_out = hdr.host_status == DID_TIME_OUT
        raise BackendDown("SG_IO: timed out" if timed_out
                          else f"SG_IO: host status {hdr.host_status:#x}")  # fmt: skip
    if hdr.driver_status & 0x0F == DRIVER_TIMEOUT:
        raise BackendDown("SG_IO: driver timed out")
    resid = hdr.resid
    if resid < 0 or resid > hdr.dxfer_len:
        raise BackendFault(f"SG_IO: residual {resid} of a {hdr.dxfer_len}-byte transfer")
    sense = request.sense.raw[: min(hdr.sb_len_wr, SENSE_MAX)]
    data = b""
    if hdr.dxfer_direction == SG_DXFER_FROM_DEV:
        data = request.data.raw[: hdr.dxfer_len - resid]
    return BackendReply(hdr.status, sense, data, resid)


Ioctl = Callable[[int, int, Any], int]


def _ioctl(fd: int, request: int, arg: Any) -> int:
    result: int = fcntl.ioctl(fd, request, arg)
    return result


class SgBackend(LinkState):
    """A local SCSI device through SG_IO, as a pass-through device's backend."""

    def __init__(self, spec: BackendSpec, ioctl: Ioctl = _ioctl) -> None:
        assert spec.path is not None
        super().__init__(str(spec.path))
        self.spec = spec
        self._ioctl = ioctl
        self._fd: int | None = None
        self._slots = trio.CapacityLimiter(max(1, spec.queue_depth))
        self._lost = trio.Event()

    @property
    def connected(self) -> bool:
        return self._up and self._fd is not None

    async def _serve(self, on_connect: Callable[[], Awaitable[None]]) -> None:
        delay = RECONNECT_FIRST
        while True:
            try:
                self._fd = os.open(str(self.spec.path), os.O_RDWR | os.O_CLOEXEC)
                await on_connect()
            except (OSError, BackendDown, BackendFault) as exc:
                self._close_fd()
                self._down(str(exc))
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            self._back_up()
            delay = RECONNECT_FIRST
            await self._lost.wait()
            self._lost = trio.Event()
            self._up = False
            self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def execute(
        self, cdb: bytes, data_out: Buffer, read_length: int, attr: TaskAttribute,
        direction: DataDirection | None = None,
    ) -> BackendReply:
        fd = self._fd
        if fd is None:
            raise BackendDown(self._reason or "not open")
        try:
            request = Request(cdb, data_out, read_length,
                              int(self.spec.command_timeout * 1000))  # fmt: skip
        except ValueError as exc:
            raise BackendFault(str(exc)) from None
        # the kernel owns the buffers until the ioctl returns: never abandoned
        try:
            await trio.to_thread.run_sync(self._ioctl, fd, SG_IO, request.hdr,
                                          limiter=self._slots)  # fmt: skip
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO, errno.EBADF):
                self._reason = f"device gone: {exc}"
                self._lost.set()
            raise BackendDown(f"SG_IO: {exc}") from None
        return decode(request)

    def reset_lu(self) -> None:
        """SG_SCSI_RESET (device), soon, in a thread; its outcome is only logged."""
        fd, nursery = self._fd, self._nursery
        if fd is not None and nursery is not None:
            nursery.start_soon(self._reset, fd)

    async def _reset(self, fd: int) -> None:
        arg = ctypes.c_int(SG_SCSI_RESET_DEVICE)
        try:
            await trio.to_thread.run_sync(self._ioctl, fd, SG_SCSI_RESET, arg)
        except OSError as exc:
            log.warning("pass-through backend %s: reset failed: %s", self.spec.path, exc)

    async def close(self) -> None:
        self._up = False
        self._close_fd()
