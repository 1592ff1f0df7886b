"""BLOCKIO: direct I/O (O_DIRECT) to a block device or a file, no page cache.

Why a separate store: FileStore's whole design (inline RWF_NOWAIT page-cache
hits, timed inline writes) assumes the page cache. Under O_DIRECT every
request goes to the device, so nothing is done inline: each read and write is
a request on the store's io_uring ring (devices/io_engine.py), or a worker
thread where io_uring is unavailable or ``io_engine = "threads"``.

O_DIRECT wants the buffer address, the offset and the length aligned to the
device's logical block size. Offsets and lengths are whole blocks of the
configured ``block_size``, which open refuses when it is smaller than the
device's logical block size. Buffers: reads go into a page-aligned window of
a slightly larger ``bytearray`` (:func:`aligned_buffer`, from
:meth:`DirectStore.read_buffer`), which the transport then sends as the
command's data: no copy, no pool to return it to (the memoryview keeps its
bytearray alive until the Data-In is sent; a buffer the kernel may still fill
stays pinned by the request until its completion). A buffer that is not
aligned (received Data-Out, whose alignment the receive path decides) is
bounced through an aligned one: one memory copy. Those copy buffers are the
store's own (:class:`BounceBuffers`): taken for a write, given back when the
kernel answers it, and reused, because a fresh ``bytearray`` is zero-filled
first (a 128 KiB write paid a 132 KiB memset before its copy).

Semantics: FUA = the write, then an fdatasync of that range (on the ring);
SYNCHRONIZE CACHE = fdatasync (flushes the device's volatile cache, which
O_DIRECT alone does not). UNMAP: a hole punched in a file; on a block device
fallocate(PUNCH_HOLE), which the kernel turns into WRITE ZEROES with unmap
allowed and no fallback (a loop device punches its backing file), else
BLKZEROOUT (zeros, written if need be). Either way an unmapped range reads
back as zeros, as the disk's LBPRZ promises (BLKDISCARD gives no such promise
on real devices). A block device cannot report its holes, so the store keeps
the ranges it deallocated (``deallocated``) for GET LBA STATUS.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from pyscst.devices import uring
from pyscst.devices.io_engine import EngineFailedError
from pyscst.devices.range_set import RangeSet
from pyscst.devices.stores import (
    Extent,
    FileStore,
    ReadResult,
    StoreReadOnlyError,
    WriteResult,
    punch_hole,
)
from pyscst.scsi.command import Buffer

#: ioctls of linux/fs.h: logical block size; zero a byte range
BLKSSZGET = 0x1268
BLKZEROOUT = 0x127F
#: buffers are aligned to this (covers every logical block size up to a page)
ALIGN = mmap.PAGESIZE
_addressof = ctypes.addressof
_c_char = ctypes.c_char


class DirectIoRefusedError(ValueError):
    """The filesystem or device refuses O_DIRECT, or the block size is too small."""


def aligned_buffer(n: int) -> memoryview:
    """A zeroed, page-aligned, writable buffer of ``n`` bytes: a window of a
    bytearray one page larger (calloc: cheaper than an mmap per command, and
    freed by reference counting like any other read buffer)."""
    return aligned_window(n)[0]


def aligned_window(n: int) -> tuple[memoryview, int]:
    """:func:`aligned_buffer` and its address (the one ctypes look-up it
    needs anyway, so the engine does not make a second)."""
    view = memoryview(bytearray(n + ALIGN))
    addr = ctypes.addressof(ctypes.c_char.from_buffer(view))
    start = -addr % ALIGN
    return view[start : start + n], addr + start


def is_aligned(buf: memoryview, align: int = ALIGN) -> bool:
    if buf.readonly or not buf.c_contiguous or len(buf) % 512:
        return False
    addr, _pin = uring.buffer_address(buf)
    return addr % align == 0


def _aligned(data: Buffer) -> memoryview:
    """``data`` itself when O_DIRECT can take it, else an aligned copy."""
    view = memoryview(data).cast("B")
    if is_aligned(view):
        return view
    bounce = aligned_buffer(len(view))
    bounce[:] = view
    return bounce


#: a read of at least this many bytes goes into a buffer that is not zero-filled
#: first (below it the fill costs less than the C call that skips it)
UNINITIALIZED_FROM = 32 * 1024
#: a bytearray of the given size whose bytes are whatever the allocator had:
#: for buffers the kernel then fills whole (``bytearray(n)`` zero-fills, 3 µs for
#: 132 KiB here, a tenth of that without); never for anything sent unfilled
_uninitialized_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
_uninitialized_bytearray.restype = ctypes.py_object
_uninitialized_bytearray.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)

#: bytes of idle copy buffers one store keeps for reuse (in-flight ones not counted)
BOUNCE_SPARE_LIMIT = 8 << 20

#: an aligned window and its address, as :func:`_bounce` returns them
Window = tuple[memoryview, int]


def _aligned_at(
    data: Buffer | list[Buffer], take: Callable[[int], Window] | None = None
) -> tuple[memoryview, int, bool]:
    """As :func:`_aligned`, with the address of what it returns (looked up
    once: the engine takes it as is) and whether it is a copy buffer from
    ``take`` (default: a new one), which the caller may give back once the
    kernel is done with it. ``data`` may be the pieces a write's data-out
    arrived in (``ScsiCommand.data_segments_now``): they are copied into the
    aligned buffer one after the other, the one copy O_DIRECT needs anyway,
    where joining them first would copy every byte twice."""
    if type(data) is list:
        if len(data) != 1:
            return _gathered_at(data, take or _bounce)
        data = data[0]
    view = memoryview(data).cast("B")  # type: ignore[arg-type]
    n = len(view)
    if n and not n % 512 and not view.readonly and view.c_contiguous:
        addr = _addressof(_c_char.from_buffer(view))
        if not addr % ALIGN:
            return view, addr, False
    bounce, addr = (take or _bounce)(n)
    bounce[:] = view
    return bounce, addr, True


def _bounce(n: int) -> Window:
    """An aligned window of ``n`` bytes and its address (aligned_window
    written out: every unaligned BLOCKIO write comes here)."""
    whole = memoryview(bytearray(n + ALIGN))
    addr = _addressof(_c_char.from_buffer(whole))
    start = -addr % ALIGN
    return whole[start : start + n], addr + start


def _gathered_at(
    pieces: list[Buffer], take: Callable[[int], Window]
) -> tuple[memoryview, int, bool]:
    """Pieces copied one after the other into one aligned buffer from ``take``."""
    bounce, addr = take(sum(map(len, pieces)))
    at = 0
    for piece in pieces:
        end = at + len(piece)
        bounce[at:end] = piece
        at = end
    return bounce, addr, True


class BounceBuffers:
    """One store's idle aligned copy buffers, by size, for its writes to reuse.

    Why: every BLOCKIO write whose data is not aligned is copied into an
    aligned buffer, and a new ``bytearray`` is zero-filled before the copy
    overwrites it. Writes come in a few sizes, so a buffer given back when its
    request completes serves the next write of that size without the fill.
    A buffer is given back only for a real completion (an ``int`` result):
    until then the kernel may still be reading it. At most ``limit`` bytes
    wait idle; more are left to the garbage collector."""

    __slots__ = ("_idle", "_idle_bytes", "limit")

    def __init__(self, limit: int = BOUNCE_SPARE_LIMIT) -> None:
        self._idle: dict[int, list[Window]] = {}
        self._idle_bytes = 0
        self.limit = limit

    def take(self, n: int) -> Window:
        """An aligned window of ``n`` bytes: an idle one, else a new one."""
        idle = self._idle.get(n)
        if idle:
            self._idle_bytes -= n
            return idle.pop()
        return _bounce(n)

    def give(self, window: Window) -> None:
        """``window`` is free again (its request completed)."""
        n = len(window[0])
        if n and self._idle_bytes + n <= self.limit:
            self._idle.setdefault(n, []).append(window)
            self._idle_bytes += n

    @property
    def idle_bytes(self) -> int:
        return self._idle_bytes


def logical_block_size(fd: int, block_device: bool) -> int:
    """The device's logical block size (BLKSSZGET); 512 for a file (probed below)."""
    if not block_device:
        return 512
    out = fcntl.ioctl(fd, BLKSSZGET, struct.pack("i", 0))
    return int(struct.unpack("i", out)[0])


class DirectStore(FileStore):
    """BLOCKIO: a block device or file opened O_DIRECT (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: a block device's byte ranges this store deallocated and nobody has
        #: written since (a block device cannot report holes; see extents)
        self.deallocated = RangeSet()
        #: the aligned copy buffers of this store's unaligned writes, reused
        self.bounces = BounceBuffers()

    def read_buffer(self, n: int) -> memoryview:
        return aligned_buffer(n)

    def start_read(
        self,
        offset: int,
        buf: bytearray | memoryview,
        done: Callable[[ReadResult], object],
        failed: Callable[[ReadResult], object] | None = None,
    ) -> Callable[[], object] | None:
        """As FileStore's, but always into an aligned buffer of its own (the
        one ``done`` gets): ``buf`` only gives the length."""
        return self.start_read_new(offset, len(buf), done, failed)

    def start_read_new(
        self,
        offset: int,
        n: int,
        done: Callable[[ReadResult], object],
        failed: Callable[[ReadResult], object] | None = None,
    ) -> Callable[[], object] | None:
        """Queue an ``n``-byte read at ``offset`` into a new aligned buffer
        (the one ``done`` gets): :meth:`start_read` without a buffer to
        allocate first only to learn its length (disk_io's BLOCKIO READ).
        With ``failed``, ``done`` gets only the filled buffer and ``failed``
        the rest (an OSError, or None: redo it with readinto), so a caller
        can hand its own completion straight in (no translating call)."""
        engine = self.engine
        if engine is None or engine.broken is not None:
            return None
        # (aligned_window and _completion written out: this is every BLOCKIO
        # READ's path, and each call and tuple is paid per command). A large
        # buffer is not zero-filled: ``done`` gets it only when the kernel
        # read all n bytes into it; a short or failed read never sends it
        whole = memoryview(
            bytearray(n + ALIGN)
            if n < UNINITIALIZED_FROM
            else _uninitialized_bytearray(None, n + ALIGN)
        )
        addr = _addressof(_c_char.from_buffer(whole))
        start = -addr % ALIGN
        view = whole[start : start + n]

        def complete(res: int | BaseException) -> None:
            if res == n:
                done(view)
            else:
                self._completion(n, view, done if failed is None else failed)(res)

        try:
            request = engine.queue(uring.OP_READ, self._fd, offset, addr + start, n, 0, view,
                                   complete)  # fmt: skip
        except EngineFailedError:
            self._engine_failed()
            return None
        return request.cancel

    @classmethod
    async def open_direct(
        cls,
        path: str | os.PathLike[str],
        *,
        key: str,
        size: int | None,
        block_size: int,
        read_only: bool = False,
        roots: Sequence[Path] | None = None,
        grow: bool = False,
        io_engine: str = "auto",
    ) -> DirectStore:
        """Open like :meth:`FileStore.open` (same confinement and size rules),
        then reopen the same file O_DIRECT. ``key`` (``devices.NAME``) names
        the configuration in the error when O_DIRECT is refused (tmpfs: EINVAL)
        or ``block_size`` is below the device's logical block size."""
        store = await cls.open(
            path, size=size, read_only=read_only, roots=roots, grow=grow, io_engine=io_engine
        )
        assert isinstance(store, DirectStore)  # (FileStore.open builds cls)
        try:
            await trio.to_thread.run_sync(store._go_direct, key, block_size)
        except BaseException:
            await store.close()
            raise
        return store

    def _go_direct(self, key: str, block_size: int) -> None:
        flags = (os.O_RDONLY if self.read_only else os.O_RDWR) | os.O_DIRECT | os.O_CLOEXEC
        try:
            # the descriptor's own file (opened confined, no symlink followed)
            fd = os.open(f"/proc/self/fd/{self._fd}", flags)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise DirectIoRefusedError(
                    f"{key}.path: {self.path}: the filesystem refuses direct I/O (O_DIRECT); "
                    "use handler vdisk_fileio for this path"
                ) from None
            raise
        os.close(self._fd)
        self._fd = fd
        logical = logical_block_size(fd, self.block_device)
        if block_size < logical:
            raise DirectIoRefusedError(
                f"{key}.block_size: {block_size} is smaller than the logical block size "
                f"{logical} of {self.path}; direct I/O needs whole device blocks"
            )
        probe = aligned_buffer(block_size)
        try:
            os.preadv(fd, [probe], 0)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise DirectIoRefusedError(
                    f"{key}.block_size: {self.path} refuses direct I/O of {block_size}-byte "
                    "blocks (its logical block size is larger)"
                ) from None
            raise

    # -- nothing inline: every request goes to the device -----------------------

    def read_now(self, offset: int, buf: memoryview) -> bool:
        return False

    def write_now(self, offset: int, data: Buffer | list[Buffer]) -> bool:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only", self.path)
        return False

    async def readinto(self, offset: int, buf: memoryview) -> None:
        if is_aligned(buf):
            await super().readinto(offset, buf)
            return
        bounce = aligned_buffer(len(buf))
        await super().readinto(offset, bounce)
        buf[:] = bounce

    def start_write(
        self,
        offset: int,
        data: Buffer | list[Buffer],
        fua: bool,
        done: Callable[[WriteResult], object],
    ) -> Callable[[], object] | None:
        """The write on the ring (from an aligned copy if ``data`` is not
        aligned, or is the pieces the data-out came in), with FUA its ranged
        fdatasync linked behind it: one submission, one completion to answer
        from."""
        engine = self.engine
        if engine is None or engine.broken is not None or self._read_only:
            return None
        bounces = self.bounces
        view, addr, bounced = _aligned_at(data, bounces.take)
        n = len(view)
        if self.deallocated:
            self.deallocated.remove(offset, offset + n)  # mapped again

        def complete(res: int | BaseException) -> None:
            if bounced and type(res) is int:  # (the kernel is done with the buffer)
                bounces.give((view, addr))
            if res == n:
                done(True)
            else:
                self._completion(n, True, done)(res)

        try:
            if fua:
                request = engine.start_write_at(self._fd, addr, n, view, offset, complete, True)
            else:  # (the common case: straight to the ring, no start_write_at frame)
                request = engine.queue(uring.OP_WRITE, self._fd, offset, addr, n, 0, view,
                                       complete)  # fmt: skip
        except EngineFailedError:
            self._engine_failed()
            return None
        return request.cancel

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only", self.path)
        view = _aligned(data)
        if self.deallocated:
            self.deallocated.remove(offset, offset + len(view))  # mapped again
        try:
            engine = self.engine
            if engine is not None:
                try:
                    done = 0
                    while done < len(view):
                        done += await engine.write(self._fd, view[done:], offset + done)
                    if fua:
                        await engine.fsync(self._fd, True, offset, len(view))
                    return
                except EngineFailedError:
                    self._engine_failed()
            await trio.to_thread.run_sync(self._write_sync, offset, view, fua)
        except OSError as exc:
            self.failed(exc)
            raise

    def _write_sync(self, offset: int, view: memoryview, fua: bool) -> None:
        self._write_blocking(offset, view, 0)
        if fua:
            os.fdatasync(self._fd)

    async def discard(self, offset: int, length: int) -> None:
        if not self.block_device:
            await super().discard(offset, length)  # punch a hole (or write zeros)
            return
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only", self.path)
        if length > 0:
            try:
                unmapped = await trio.to_thread.run_sync(self._discard_device, offset, length)
            except OSError as exc:
                self.failed(exc)
                raise
            if unmapped:
                self.deallocated.add(offset, offset + length)
            else:
                self.deallocated.remove(offset, offset + length)

    def _discard_device(self, offset: int, length: int) -> bool:
        """Zero a block device's range, deallocating it where the device can:
        fallocate(PUNCH_HOLE) on a block device is WRITE ZEROES with unmap
        allowed and no fallback (zeros guaranteed; a loop device punches its
        file). Where that is refused, BLKZEROOUT (zeros, perhaps written).
        True when the range was deallocated."""
        if self.can_punch:
            try:
                punch_hole(self._fd, offset, length)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
                    raise
                self.can_punch = False
        fcntl.ioctl(self._fd, BLKZEROOUT, struct.pack("QQ", offset, length))
        return False

    async def extents(self, offset: int, length: int, limit: int) -> list[Extent]:
        """A file's holes (SEEK_HOLE); on a block device, what this store
        deallocated (the device actor hands the record on when it reopens the
        device). Anything else is reported mapped, which SBC-4's GET LBA STATUS
        allows for "mapped or unknown" (after a daemon restart the device's
        earlier deallocations are unknown)."""
        if not self.block_device:
            return await super().extents(offset, length, limit)
        return [(o, n, not inside)
                for o, n, inside in self.deallocated.split(offset, offset + length, limit)]
