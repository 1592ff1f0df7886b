"""A minimal io_uring binding (ctypes): the rings, the few opcodes a store needs.

Why not a worker thread per blocking I/O: on one core, a ``trio.to_thread``
round trip plus its GIL hand-offs costs ~60 us of CPU, more than the read it
carries. With io_uring the event loop itself queues a request (a 64-byte
``struct.pack_into`` into shared memory), one ``io_uring_enter`` per loop tick
submits every request queued in that tick, and the kernel completes them
without a thread of ours (buffered cold reads wait on the page cache in the
kernel). Completions are read straight from the shared completion ring.

Why ctypes rather than PyPI ``liburing``: we need five opcodes and three
syscalls; the binding is ~200 lines with no build step and no dependency,
and measured cheaper per request than the PyPI wrapper (README, dependency
table). Only Linux >= 5.6 (IORING_OP_READ/WRITE/FALLOCATE) is supported;
:func:`probe` says why not elsewhere and the store keeps its thread path.

This module is synchronous and knows nothing about Trio; devices/io_engine.py
drives it from the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import platform
import struct
from collections.abc import Callable

#: syscall numbers (the same on every architecture since 5.1's unification)
_SYS_SETUP, _SYS_ENTER, _SYS_REGISTER = 425, 426, 427

# opcodes (include/uapi/linux/io_uring.h)
OP_NOP = 0
OP_FSYNC = 3
OP_ASYNC_CANCEL = 14
OP_FALLOCATE = 17
OP_READ = 22
OP_WRITE = 23
#: IORING_FSYNC_DATASYNC: fdatasync rather than fsync
FSYNC_DATASYNC = 1
#: SQE flag IOSQE_IO_LINK: the next SQE starts only after this one succeeded
#: (a failed or short one completes the rest with -ECANCELED)
SQE_IO_LINK = 1 << 2
#: io_uring_enter flag: wait for completions
_ENTER_GETEVENTS = 1
#: io_uring_register opcode: signal an eventfd on every completion. (Not
#: EVENTFD_ASYNC: that one signals only for io-wq completions, and a buffered
#: cold read completes through task_work in our own thread: it would never
#: wake the loop.)
_REGISTER_EVENTFD = 4
#: mmap offsets of the three shared regions
_OFF_SQ_RING, _OFF_CQ_RING, _OFF_SQES = 0, 0x8000000, 0x10000000
#: features: one mmap for both rings; no dropped completions
_FEAT_SINGLE_MMAP = 1 << 0
_FEAT_NODROP = 1 << 1

#: io_uring_setup flags: COOP_TASKRUN. A completion (e.g. a cold buffered read
#: whose page arrived) is finished by task_work in our thread; by default the
#: kernel interrupts the thread with an IPI for it, a VM exit on a guest. With
#: this flag it only marks the thread (waking it if it sleeps in epoll_wait)
#: and the work runs at its next syscall, which the event loop makes anyway.
SETUP_FLAGS = 1 << 8
#: struct io_uring_params: 10 u32, sq offsets (7 u32 + u32 + u64), cq offsets (same)
_PARAMS = struct.Struct("<10I 7I I Q 8I Q")
#: struct io_uring_sqe (64 bytes): opcode, flags, ioprio, fd, off, addr, len,
#: op flags, user_data, buf_index, personality, splice_fd_in, addr3, pad
SQE = struct.Struct("<BBHiQQIIQHHiQQ")
#: struct io_uring_cqe (16 bytes): user_data, res, flags
_CQE = struct.Struct("<QiI")
_U32 = struct.Struct("<I")
#: an offset of -1 ("the file position", for pipes) as the u64 the kernel reads
_U64_MASK = (1 << 64) - 1


class UringUnavailableError(OSError):
    """io_uring cannot be used here (kernel, seccomp, sysctl, architecture)."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


_LIBC = _libc()
_syscall = _LIBC.syscall
_syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class Ring:
    """One io_uring instance: queue SQEs, submit, reap CQEs (not thread-safe).

    Every request carries a ``user_data`` key the caller chose; :meth:`reap`
    returns ``(user_data, res)`` pairs, ``res`` being the syscall's result or
    a negative errno.
    """

    def __init__(self, entries: int = 256) -> None:
        if platform.system() != "Linux":
            raise UringUnavailableError(errno.ENOSYS, "io_uring is Linux only")
        disabled = _read_disabled()
        if disabled == 2:
            raise UringUnavailableError(errno.EPERM, "kernel.io_uring_disabled = 2")
        fd = -1
        for flags in (SETUP_FLAGS, 0):  # (5.19+; older kernels say EINVAL)
            params = ctypes.create_string_buffer(_PARAMS.size)
            struct.pack_into("<I", params, 8, flags)
            fd = _syscall(_SYS_SETUP, ctypes.c_uint(entries), params)
            if fd >= 0 or ctypes.get_errno() != errno.EINVAL:
                break
        if fd < 0:
            err = ctypes.get_errno()
            raise UringUnavailableError(err, f"io_uring_setup: {os.strerror(err)}")
        self.fd = int(fd)
        self._eventfd = -1
        self._maps: list[mmap.mmap] = []
        try:
            self._map(bytes(params.raw))
        except BaseException:
            self.close()
            raise

    def _map(self, raw: bytes) -> None:
        p = _PARAMS.unpack(raw)
        sq_entries, cq_entries, features = p[0], p[1], p[5]
        sq_head, sq_tail, sq_mask, _, _, _, sq_array = p[10:17]
        cq_head, cq_tail, cq_mask, _, _, cqes = p[19:25]
        if not features & _FEAT_SINGLE_MMAP or not features & _FEAT_NODROP:
            raise UringUnavailableError(errno.ENOSYS, "kernel too old for io_uring (need 5.5+)")
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        ring_size = max(sq_array + sq_entries * 4, cqes + cq_entries * _CQE.size)
        rings = mmap.mmap(self.fd, ring_size, flags, prot, offset=_OFF_SQ_RING)
        self._maps.append(rings)
        sqes = mmap.mmap(self.fd, sq_entries * SQE.size, flags, prot, offset=_OFF_SQES)
        self._maps.append(sqes)
        self.sq_entries = sq_entries
        self._rings = rings
        self._sqes = sqes
        # (the params give offsets; the masks themselves live in the ring)
        self._sq_head, self._sq_tail = sq_head, sq_tail
        self._sq_mask = _U32.unpack_from(rings, sq_mask)[0]
        self._cq_head, self._cq_tail, self._cqes = cq_head, cq_tail, cqes
        self._cq_mask = _U32.unpack_from(rings, cq_mask)[0]
        # SQ index array: slot i always names SQE i (we fill SQEs in ring order)
        for i in range(sq_entries):
            _U32.pack_into(rings, sq_array + 4 * i, i)
        self._tail = _U32.unpack_from(rings, sq_tail)[0]
        self._pack_sqe = SQE.pack_into
        self.queued = 0  # SQEs written, not yet submitted

    # -- submission ---------------------------------------------------------
    def space(self) -> int:
        # (tail - head is what the kernel has not consumed: exactly what we
        # queued since the last submit, as io_uring_enter consumes SQEs
        # before it returns and no SQ poller thread is used)
        return self.sq_entries - self.queued

    def push(
        self,
        opcode: int,
        fd: int,
        off: int,
        addr: int,
        length: int,
        op_flags: int,
        user_data: int,
        sqe_flags: int = 0,
    ) -> None:
        """Queue one request (call :meth:`space` first: the SQ must not be full).

        Only the SQE is written here; the new tail is published to the kernel
        once per :meth:`submit` (no SQ poller thread reads it meanwhile), so a
        request costs one ``pack_into``, not two."""
        tail = self._tail
        self._pack_sqe(
            self._sqes, (tail & self._sq_mask) << 6,
            opcode, sqe_flags, 0, fd, off & _U64_MASK, addr, length, op_flags, user_data,
            0, 0, 0, 0, 0,
        )  # fmt: skip
        self._tail = (tail + 1) & 0xFFFFFFFF
        self.queued += 1

    def submit(self, wait: int = 0) -> int:
        """Hand every queued request to the kernel (one syscall); with ``wait``,
        block until that many completions exist. Returns how many were taken."""
        n = self.queued
        # the tail store is the release of every SQE written since the last
        # submit (pack_into is a plain memcpy; the kernel reads the tail with
        # acquire semantics in io_uring_enter)
        _U32.pack_into(self._rings, self._sq_tail, self._tail)
        flags = _ENTER_GETEVENTS if wait else 0
        while True:
            got = _syscall(
                _SYS_ENTER, self.fd, ctypes.c_uint(n), ctypes.c_uint(wait),
                ctypes.c_uint(flags), None, ctypes.c_size_t(0),
            )  # fmt: skip
            if got >= 0:
                break
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, f"io_uring_enter: {os.strerror(err)}")
        self.queued -= int(got)
        return int(got)

    # -- completion ---------------------------------------------------------
    def completed(self) -> bool:
        """Completions wait in the CQ (two loads from shared memory, no syscall)."""
        rings, load = self._rings, _U32.unpack_from
        return bool(load(rings, self._cq_head)[0] != load(rings, self._cq_tail)[0])

    def reap(self) -> list[tuple[int, int]]:
        """Every completion now in the CQ, oldest first (and consumes them)."""
        rings = self._rings
        head = _U32.unpack_from(rings, self._cq_head)[0]
        tail = _U32.unpack_from(rings, self._cq_tail)[0]
        if head == tail:
            return []
        out = []
        mask, base = self._cq_mask, self._cqes
        while head != tail:
            user_data, res, _ = _CQE.unpack_from(rings, base + (head & mask) * 16)
            out.append((user_data, res))
            head = (head + 1) & 0xFFFFFFFF
        _U32.pack_into(rings, self._cq_head, head)
        return out

    def register_eventfd(self) -> int:
        """An eventfd the kernel signals whenever a completion is posted."""
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        arg = ctypes.c_int(efd)
        try:
            _check(
                _syscall(_SYS_REGISTER, self.fd, ctypes.c_uint(_REGISTER_EVENTFD),
                         ctypes.byref(arg), ctypes.c_uint(1)),
                "io_uring_register(EVENTFD)",
            )  # fmt: skip
        except BaseException:
            os.close(efd)
            raise
        self._eventfd = efd
        return efd

    def close(self) -> None:
        for m in self._maps:
            m.close()
        self._maps.clear()
        if self._eventfd >= 0:
            os.close(self._eventfd)
            self._eventfd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_disabled(path: str = "/proc/sys/kernel/io_uring_disabled") -> int:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def probe(make: Callable[[], Ring] = Ring) -> str | None:
    """None when io_uring works here (a NOP round trip), else why not."""
    try:
        ring = make()
    except OSError as exc:
        return str(exc.strerror or exc)
    try:
        ring.push(OP_NOP, -1, 0, 0, 0, 0, 1)
        ring.submit(wait=1)
        done = ring.reap()
        if done != [(1, 0)]:
            return f"NOP answered {done!r}"
        return None
    except OSError as exc:
        return str(exc.strerror or exc)
    finally:
        ring.close()


def buffer_address(buf: memoryview) -> tuple[int, object]:
    """The address of a writable, contiguous buffer and the ctypes object that
    pins it (the exporter cannot be resized or freed while it lives)."""
    # (one c_char, not an array of the buffer's size: no array type to build
    # per call, and the export it holds pins the whole buffer just the same)
    if not buf.nbytes:
        empty = (ctypes.c_char * 0).from_buffer(buf)
        return ctypes.addressof(empty), empty
    pin = ctypes.c_char.from_buffer(buf)
    return ctypes.addressof(pin), pin
