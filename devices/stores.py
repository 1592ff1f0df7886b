"""Backing stores: where a disk's blocks live (SCST's FILEIO / NULLIO modes).

The event loop serves every session, so a store must never block it on disk
I/O; but a thread hop per command costs more than a page-cache copy. FileStore
therefore tries ``preadv``/``pwritev`` with ``RWF_NOWAIT`` inline first (a
page-cache hit completes without blocking) and only falls back to a worker
thread when the kernel says the call would block. Worker threads are never
abandoned on cancellation, so an aborted write leaves old or new data in each
block, never garbage, and no file descriptor leaks.

Many filesystems (ext4 among them) refuse ``RWF_NOWAIT`` for buffered writes.
Measured on the reference VM a thread hop costs ~200 us against ~4 us for a
page-cache ``pwrite``, so by default such small writes are done inline anyway
and timed: one that stalls the loop longer than ``STALL_LIMIT`` (dirty-page
throttling under heavy write load) sends all writes to threads for
``STALL_BACKOFF`` seconds. ``inline_writes=False`` turns this off.

Where io_uring works, "a worker thread" above is instead a request on the
store's ring (devices/io_engine.py): no thread hop, submissions batched per
event-loop tick. ``io_engine`` ("auto", "uring", "threads") chooses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import trio

from pyscst.devices import uring
from pyscst.devices.confine import open_beneath
from pyscst.devices.io_engine import (
    TRANSIENT_ERRORS,
    EngineFailedError,
    SubmissionBatch,
    UringEngine,
)
from pyscst.devices.store_health import RateLimitedWarning, file_problem
from pyscst.scsi.command import Buffer

log = logging.getLogger(__name__)

_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_DSYNC = getattr(os, "RWF_DSYNC", 0)

#: an inline write slower than this (seconds) counts as a loop stall
STALL_LIMIT = 0.002
#: after a stall, writes go through threads for this long (seconds)
STALL_BACKOFF = 1.0
#: writes larger than this never go inline without RWF_NOWAIT
INLINE_WRITE_MAX = 256 * 1024
#: filesystems whose pages live in memory: I/O on them never waits for a disk
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "hugetlbfs"})
#: fallocate(2) modes: deallocate a range, keep the file size
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
#: zeros written per call when a store cannot punch holes
ZERO_CHUNK = 1 << 20
#: a store with io_uring skips the inline RWF_NOWAIT read try, except one read
#: in COLD_PROBE, while its miss score is COLD_STREAK: a miss adds one, a hit
#: takes COLD_HIT_CREDIT off (see read_now)
COLD_STREAK = 8
#: (perf trace, cold 4K QD32: an RWF_NOWAIT try that misses spends ~50 us in
#: the loop, starting its disk read alone; a read in the ring's batch ~3 us)
COLD_PROBE = 64
#: Why a hit does not wipe the score: a random cold workload hits now and then
#: (pages an earlier read brought in with its readahead: ~15 % in the cold
#: 4K QD32 row), and a reset on each of them kept the store trying inline on
#: nearly every read, each miss a system call and a device kick of its own
#: outside the ring's plugged batch. A try pays when hits outnumber one in
#: (1 + credit) reads: a failed try costs about a third of what an inline hit
#: saves over the ring.
COLD_HIT_CREDIT = 3
#: (byte offset, byte length, mapped): one run of a store's allocation map
Extent = tuple[int, int, bool]
#: ``[devices.NAME] io_engine`` values: how a store does I/O that would block
IO_ENGINES = ("auto", "uring", "threads")
#: environment override of every store's io_engine (operators, tests)
IO_ENGINE_ENV = "PYSCST_IO_ENGINE"
#: what :meth:`FileStore.start_read` hands its ``done``: the filled buffer,
#: the error, or None: "redo it with readinto"
ReadResult = bytearray | memoryview | OSError | None
_T = TypeVar("_T")
#: what :meth:`FileStore.start_write` hands its ``done``: True (written),
#: the error, or None: "redo it with write"
WriteResult = bool | OSError | None


def make_engine(choice: str, label: str) -> tuple[UringEngine | None, str]:
    """The engine for a store and how to describe it in the log.

    ``threads``: worker threads (no io_uring). ``uring``: io_uring or an
    OSError saying why not. ``auto``: io_uring when it works here, else
    threads (and why). ``PYSCST_IO_ENGINE`` overrides the configured choice.
    """
    choice = os.environ.get(IO_ENGINE_ENV) or choice
    if choice not in IO_ENGINES:
        raise ValueError(f"io_engine: expected one of {', '.join(IO_ENGINES)}, got {choice!r}")
    if choice == "threads":
        return None, "threads (configured)"
    try:
        engine = UringEngine.create(label)
    except OSError as exc:
        if choice == "uring":
            raise OSError(exc.errno, f"io_engine = \"uring\": {exc.strerror or exc}") from exc
        return None, f"threads (io_uring unavailable: {exc.strerror or exc})"
    return engine, "io_uring"


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's fallocate(2) (os has only posix_fallocate), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    func.restype = ctypes.c_int
    result: Callable[[int, int, int, int], int] = func
    return result


_FALLOCATE = _load_fallocate()


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate ``length`` bytes at ``offset``; they then read as zeros.

    Raises OSError (EOPNOTSUPP when the filesystem or libc cannot do it)."""
    if _FALLOCATE is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate unavailable")
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if _FALLOCATE(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem holding ``path`` (longest mount point that
    contains it, per /proc/self/mountinfo), or None if that cannot be told."""
    real = os.path.realpath(path)
    best, kind = "", None
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if "-" not in fields:
                    continue
                dash = fields.index("-")
                if len(fields) <= dash + 1 or len(fields) < 5:
                    continue
                # octal escapes (\040 for a space) in mount points
                mount = fields[4].encode().decode("unicode_escape")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[dash + 1]
    except OSError:
        return None
    return kind


class BackingStore(Protocol):
    """What a device handler needs from the storage under it."""

    @property
    def size(self) -> int:
        """Capacity in bytes."""
        ...

    @property
    def read_only(self) -> bool: ...

    async def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from ``offset``; the range is within ``size``."""
        ...

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        """Write ``data`` at ``offset``; ``fua`` makes it durable before return."""
        ...

    def read_now(self, offset: int, buf: memoryview) -> bool:
        """Fill ``buf`` without blocking the event loop if that is possible now
        (page-cache hit, memory); False means "use :meth:`readinto`"."""
        ...

    def write_now(self, offset: int, data: Buffer) -> bool:
        """Write through the cache without blocking if possible now; False
        means "use :meth:`write`" (which may then write the range again)."""
        ...

    async def flush(self) -> None:
        """Make every completed write durable (SYNCHRONIZE CACHE)."""
        ...

    async def discard(self, offset: int, length: int) -> None:
        """Unmap a range (UNMAP, WRITE SAME with UNMAP): afterwards it reads
        as zeros; stores that cannot deallocate write zeros instead."""
        ...

    async def extents(self, offset: int, length: int, limit: int) -> list[Extent]:
        """At most ``limit`` (offset, length, mapped) runs from ``offset``,
        in order, none past ``offset + length`` (GET LBA STATUS)."""
        ...

    async def resize(self, size: int) -> None:
        """Change the capacity (grow or shrink)."""
        ...

    async def close(self) -> None: ...


class StoreReadOnlyError(OSError):
    """A write reached a store opened read-only (the device should have refused)."""


class StoreTruncatedError(OSError):
    """A read reached past the end of a backing file that shrank while served.

    Raised instead of handing out zeros: the blocks are gone, and zeros with
    GOOD status would be silent corruption. The device actor's next health
    check takes the device offline (devices/store_health.py)."""


def _total(pieces: list[Buffer]) -> int:
    """Bytes in all of a write's pieces."""
    return sum(map(len, pieces))


class FileStore:
    """FILEIO: a regular file or block device, through the page cache."""

    def __init__(
        self,
        fd: int,
        size: int,
        read_only: bool,
        path: str,
        block_device: bool,
        inline_writes: bool = True,
        engine: UringEngine | None = None,
        engine_note: str = "threads",
    ) -> None:
        self._fd = fd
        #: io_uring for I/O that would block, or None: worker threads
        self.engine = engine
        #: which engine serves this store and why (logged at start)
        self.engine_note = engine_note
        self._size = size
        self._read_only = read_only
        self.path = path
        self.block_device = block_device
        #: False once the kernel refused RWF_NOWAIT on buffered writes
        self._nowait_writes = bool(_NOWAIT)
        self._nowait_reads = bool(_NOWAIT)
        #: plain inline pwrite allowed when RWF_NOWAIT is not (see module doc)
        self.inline_writes = inline_writes
        #: tmpfs and friends: inline I/O copies memory and never stalls on a
        #: disk, so loop-time spent there (preemption on a busy machine) must
        #: not send I/O to threads
        self.memory_backed = not block_device and filesystem_type(path) in MEMORY_FILESYSTEMS
        self._threads_until = 0.0
        #: inline reads that missed the page cache in a row (capped), and a
        #: counter for the probes made while they are skipped
        self._read_misses = 0
        self._cold_probe = 0
        self.stalls = 0
        self._closed = False
        #: who this store serves, for log lines (the device actor sets its name)
        self.label = path
        self._nospace = RateLimitedWarning(log)

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        size: int | None = None,
        read_only: bool = False,
        create: bool = True,
        inline_writes: bool = True,
        *,
        roots: Sequence[Path] | None = None,
        grow: bool = False,
        io_engine: str = "auto",
    ) -> FileStore:
        """Open (and if missing and ``create``, make sparse at ``size``) a store.

        The path must lie below one of ``roots`` (default: its own directory)
        and is opened without following a symlink anywhere below that root
        (:mod:`pyscst.devices.confine`); a new file is created ``O_EXCL``, mode 0600.
        Only a regular file or a block device is served. An existing regular
        file smaller than ``size`` is grown only with ``grow``; otherwise
        ValueError names both sizes. ``size=None`` takes the current size.
        Block devices always report their own size. ``io_engine`` picks how
        I/O that would block is done (:func:`make_engine`).
        """
        p = Path(os.path.abspath(path))
        confined = tuple(roots) if roots is not None else (p.parent,)

        def _open() -> FileStore:
            flags = os.O_RDONLY if read_only else os.O_RDWR
            fd, created = open_beneath(
                p, confined, flags, create=create and not read_only, make_dirs=roots is not None
            )
            try:
                st = os.fstat(fd)
                block = stat.S_ISBLK(st.st_mode)
                if not block and not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"{p}: not a regular file or block device")
                if block:
                    actual = os.lseek(fd, 0, os.SEEK_END)
                else:
                    actual = st.st_size
                    if size is not None and size > actual:
                        if read_only:
                            raise ValueError(f"{p}: is {actual} bytes, smaller than {size}")
                        if not (grow or created):
                            raise ValueError(
                                f"{p}: the existing file is {actual} bytes, smaller than the "
                                f"configured size {size}; not extending it without grow "
                                "(pyscst admin device add --grow)"
                            )
                        os.ftruncate(fd, size)
                        actual = size
                    elif size is not None:
                        actual = size
                if actual <= 0:
                    raise ValueError(f"{p}: empty backing store (give a size)")
                engine, note = make_engine(io_engine, str(p))
                return cls(fd, actual, read_only, str(p), block, inline_writes, engine, note)
            except BaseException:
                os.close(fd)
                if created:  # leave nothing behind a refused open
                    p.unlink(missing_ok=True)
                raise

        return await trio.to_thread.run_sync(_open)

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def fileno(self) -> int:
        return self._fd

    def _read_blocking(self, offset: int, buf: memoryview) -> None:
        done = os.preadv(self._fd, [buf], offset)  # (all of it, nearly always)
        while done < len(buf):
            n = os.preadv(self._fd, [buf[done:]], offset + done)
            if n == 0:  # past EOF: the file shrank under us; never serve zeros
                raise StoreTruncatedError(
                    errno.EIO, f"backing file ends at byte {offset + done}", self.path
                )
            done += n

    def _inline_ok(self, size: int) -> bool:
        return (
            self.inline_writes
            and size <= INLINE_WRITE_MAX
            and time.monotonic() >= self._threads_until
        )

    def _timed(self, start: float) -> None:
        if self.memory_backed:
            return
        elapsed = time.monotonic() - start
        if elapsed > STALL_LIMIT:
            self.stalls += 1
            self._threads_until = start + elapsed + STALL_BACKOFF

    def _memory_inline(self, size: int) -> bool:
        """Memory-backed and inline allowed: no RWF_NOWAIT try, no timing."""
        return self.memory_backed and self.inline_writes and size <= INLINE_WRITE_MAX

    def _skip_nowait(self) -> bool:
        """Cold streak with io_uring: skip the inline RWF_NOWAIT try (a miss
        there starts the disk read in our thread, one device kick per command;
        the ring submits a whole tick's reads under one plug). Every
        ``COLD_PROBE``-th read still tries, so a workload turning warm is seen."""
        self._cold_probe += 1
        return self._cold_probe % COLD_PROBE != 0

    def read_now(self, offset: int, buf: memoryview) -> bool:
        if self._memory_inline(len(buf)):
            self._read_blocking(offset, buf)
            return True
        if self._nowait_reads:
            if self._read_misses >= COLD_STREAK and self.engine is not None and self._skip_nowait():
                return False
            try:
                done = os.preadv(self._fd, [buf], offset, _NOWAIT) == len(buf)
            except BlockingIOError:
                done = False
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self._nowait_reads = False
                done = None
            if done is not None:
                if done:
                    self._read_misses = max(0, self._read_misses - COLD_HIT_CREDIT)
                elif self._read_misses < COLD_STREAK:
                    self._read_misses += 1
                return done
        if self._inline_ok(len(buf)):
            # No RWF_NOWAIT here (tmpfs, some network filesystems): read
            # inline and time it, like buffered writes; a read that stalls the
            # event loop sends the next second's I/O to worker threads.
            start = time.monotonic()
            self._read_blocking(offset, buf)
            self._timed(start)
            return True
        return False

    def use_batch(self, batch: SubmissionBatch) -> None:
        """Let ``batch`` (the daemon's, handed over by the device actor)
        submit this store's ring: its connections' readers then submit the
        requests their chunks queued themselves (devices/io_engine.py)."""
        if self.engine is not None:
            self.engine.use_batch(batch)

    def _engine_failed(self) -> None:
        """The ring broke (devices/io_engine.py logged why): threads from now
        on. A ring that was only full (the kernel took nothing this time)
        still works: the one request goes by thread, the next ones by ring."""
        engine = self.engine
        if engine is not None and engine.broken is not None:
            self.engine = None
            self.engine_note = f"threads (io_uring failed: {engine.broken})"

    async def _read_uring(self, engine: UringEngine, offset: int, buf: memoryview) -> None:
        done = 0
        while done < len(buf):
            n = await engine.read(self._fd, buf[done:], offset + done)
            if n == 0:  # past EOF: the file shrank under us; never serve zeros
                raise StoreTruncatedError(
                    errno.EIO, f"backing file ends at byte {offset + done}", self.path
                )
            done += n

    def read_buffer(self, n: int) -> bytearray | memoryview:
        """A buffer for an ``n``-byte read of this store (handed to the
        transport as the command's data)."""
        return bytearray(n)

    def start_read(
        self,
        offset: int,
        buf: bytearray | memoryview,
        done: Callable[[ReadResult], object],
        failed: Callable[[ReadResult], object] | None = None,
    ) -> Callable[[], object] | None:
        """Queue a read of ``len(buf)`` bytes at ``offset`` on the ring and
        return its cancel function; ``done`` gets, from the loop, the filled
        buffer, an OSError, or None (redo it with :meth:`readinto`: a short
        read, a ring that broke). None, and ``done`` is never called: no
        engine here, use :meth:`readinto`. With ``failed``, ``done`` gets
        only the filled buffer and ``failed`` the rest (a caller's own
        completion goes straight in, no translating call per command)."""
        engine = self.engine
        if engine is None or engine.broken is not None:
            return None
        n = len(buf)

        def complete(res: int | BaseException) -> None:
            if res == n:
                done(buf)
            else:
                self._completion(n, buf, done if failed is None else failed)(res)

        addr, pin = uring.buffer_address(memoryview(buf))
        try:
            request = engine.queue(uring.OP_READ, self._fd, offset, addr, n, 0, pin, complete)
        except EngineFailedError:
            self._engine_failed()
            return None
        return request.cancel

    def _completion(
        self, n: int, ok: _T, done: Callable[[_T | OSError | None], object]
    ) -> Callable[[int | BaseException], None]:
        """A request's result as ``start_read``/``start_write``'s ``done``
        wants it: ``ok`` when all ``n`` bytes moved, the OSError, or None for
        "redo it the task way" (a short transfer: readinto reads the rest or
        finds the file shrank, write() writes it all again; a broken ring;
        EAGAIN or ENOMEM, which the task path's request retries)."""

        def complete(res: int | BaseException) -> None:
            if res == n:  # (the common case first: an exception never equals n)
                done(ok)
            elif isinstance(res, EngineFailedError):
                self._engine_failed()
                done(None)
            elif isinstance(res, int) and -res in TRANSIENT_ERRORS:
                done(None)  # (out of memory or slots for now: the task path retries)
            elif isinstance(res, BaseException) or res < 0:
                if isinstance(res, OSError):
                    exc = res
                elif isinstance(res, int):
                    exc = OSError(-res, os.strerror(-res))
                else:
                    exc = OSError(errno.EIO, str(res))
                self.failed(exc)
                done(exc)
            else:
                done(None)

        return complete

    def start_write(
        self,
        offset: int,
        data: Buffer | list[Buffer],
        fua: bool,
        done: Callable[[WriteResult], object],
    ) -> Callable[[], object] | None:
        """Queue a write of ``data`` at ``offset`` (``fua``: durable before
        ``done``) and return its cancel function; ``done`` gets, from the
        loop, True, an OSError, or None (redo it with :meth:`write`). None,
        and ``done`` is never called: use :meth:`write`. FUA is a cache write
        now and a ranged fdatasync on the ring, as in :meth:`write`. ``data``
        may be pieces (see :meth:`write_now`); the ring's write takes them
        joined."""
        engine = self.engine
        if engine is None or engine.broken is not None or self._read_only:
            return None
        try:
            if fua:
                if not self.write_now(offset, data):
                    return None
                synced = self._completion(0, True, done)
                n = _total(data) if type(data) is list else memoryview(data).nbytes  # type: ignore[arg-type]
                request = engine.start_fsync(self._fd, offset, n, synced)
            else:
                if type(data) is list:
                    data = b"".join(data) if len(data) > 1 else data[0]
                view = memoryview(data).cast("B")  # type: ignore[arg-type]
                n = len(view)
                written = self._completion(n, True, done)
                request = engine.start_write(self._fd, view, offset, written)
        except EngineFailedError:
            self._engine_failed()
            return None
        return request.cancel

    async def readinto(self, offset: int, buf: memoryview) -> None:
        engine = self.engine
        if engine is not None:
            # (the fast path already tried RWF_NOWAIT: a cached range
            # completes inline in io_uring_enter anyway)
            try:
                await self._read_uring(engine, offset, buf)
                return
            except EngineFailedError:
                self._engine_failed()
        if not self.read_now(offset, buf):
            await trio.to_thread.run_sync(self._read_blocking, offset, buf)

    def _write_blocking(self, offset: int, data: memoryview | list[Buffer], flags: int) -> None:
        if type(data) is list:  # (pieces: one pwritev; a short one, rare, ends as one buffer)
            done = os.pwritev(self._fd, data, offset, flags)
            whole = _total(data)
            if done == whole:
                return
            data = memoryview(b"".join(data))
        else:
            done = 0
        view: memoryview = data  # type: ignore[assignment]
        while done < len(view):
            done += os.pwritev(self._fd, [view[done:]], offset + done, flags)

    def write_now(self, offset: int, data: Buffer | list[Buffer]) -> bool:
        """(``data`` may be the pieces a write's data-out came in, from
        ``ScsiCommand.data_segments_now``: they go to the file with one
        pwritev, not joined into one buffer first.)"""
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only", self.path)
        if type(data) is list:
            views: list[Buffer] = data
            n = _total(data)
        else:
            view = memoryview(data).cast("B")  # type: ignore[arg-type]
            views = [view]
            n = len(view)
        try:  # (free unless it raises)
            if self._memory_inline(n):
                self._write_blocking(offset, views, 0)
                return True
            if self._nowait_writes:
                try:
                    return bool(os.pwritev(self._fd, views, offset, _NOWAIT) == n)
                except BlockingIOError:
                    return False
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    self._nowait_writes = False
            if self._inline_ok(n):
                start = time.monotonic()
                self._write_blocking(offset, views, 0)
                self._timed(start)
                return True
        except OSError as exc:
            self.failed(exc)
            raise
        return False

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        if not fua and self.write_now(offset, data):
            await trio.lowlevel.checkpoint()
            return
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only", self.path)
        view = memoryview(data).cast("B")
        flags = _DSYNC if fua else 0
        try:
            engine = self.engine
            if engine is not None:
                try:
                    # FUA: a cache write, then a ranged fdatasync. Not
                    # RWF_DSYNC: io_uring serializes buffered writes to one
                    # file in its workers, so DSYNC writes would go one by one,
                    # while concurrent fdatasyncs share journal commits.
                    if not (fua and self.write_now(offset, view)):
                        done = 0
                        while done < len(view):
                            done += await engine.write(self._fd, view[done:], offset + done)
                    if fua:
                        await engine.fsync(self._fd, True, offset, len(view))
                    return
                except EngineFailedError:
                    self._engine_failed()  # (rewriting what was written is harmless)
            await trio.to_thread.run_sync(self._write_blocking, offset, view, flags)
        except OSError as exc:
            self.failed(exc)
            raise

    def failed(self, exc: OSError) -> None:
        """Say in the log what the initiator learns from sense: a full filesystem
        (DATA PROTECT 27/07) is an operator's problem, so it gets a WARNING
        (at most one per device every few seconds)."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._nospace.warn(
                "%s: no space left for backing file %s (%s): writes fail with "
                "DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT",
                self.label, self.path, exc.strerror or exc,
            )

    def problem(self) -> str | None:
        """What is wrong with the backing file now (truncated, unlinked), or None."""
        if self._closed:
            return None
        return file_problem(self._fd, self.path, self._size)

    async def flush(self) -> None:
        if not self._read_only:
            engine = self.engine
            if engine is not None:
                try:
                    await engine.fsync(self._fd, datasync=True)
                    return
                except EngineFailedError:
                    self._engine_failed()
            await trio.to_thread.run_sync(os.fdatasync, self._fd)

    #: False once fallocate refused to punch holes in this store
    can_punch = True

    def _discard_blocking(self, offset: int, length: int) -> None:
        if self.can_punch:
            try:
                punch_hole(self._fd, offset, length)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
                    raise
                self.can_punch = False
        zeros = memoryview(bytes(min(length, ZERO_CHUNK)))
        done = 0
        while done < length:
            n = min(length - done, len(zeros))
            self._write_blocking(offset + done, zeros[:n], 0)
            done += n

    async def _punch_uring(self, offset: int, length: int) -> bool:
        """Punch the hole through io_uring; False: do it the thread way
        (no engine, or the filesystem cannot punch: then zeros are written)."""
        engine = self.engine
        if engine is None or not self.can_punch:
            return False
        try:
            await engine.fallocate(
                self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length
            )
        except EngineFailedError:
            self._engine_failed()
            return False
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
                raise
            self.can_punch = False
            return False
        return True

    async def discard(self, offset: int, length: int) -> None:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only", self.path)
        if length > 0:
            try:
                if await self._punch_uring(offset, length):
                    return
                await trio.to_thread.run_sync(self._discard_blocking, offset, length)
            except OSError as exc:
                self.failed(exc)
                raise

    def _extents_blocking(self, offset: int, length: int, limit: int) -> list[Extent]:
        end = offset + length
        runs: list[Extent] = []
        pos = offset
        while pos < end and len(runs) < limit:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: only a hole up to EOF
                    raise
                data = end
            if data > pos:
                runs.append((pos, min(data, end) - pos, False))
                pos = min(data, end)
                continue
            hole = os.lseek(self._fd, pos, os.SEEK_HOLE)
            runs.append((pos, min(hole, end) - pos, True))
            pos = min(hole, end)
        return runs

    async def extents(self, offset: int, length: int, limit: int) -> list[Extent]:
        if self.block_device or not hasattr(os, "SEEK_DATA"):
            return [(offset, length, True)]
        try:
            return await trio.to_thread.run_sync(self._extents_blocking, offset, length, limit)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            return [(offset, length, True)]  # no hole reporting: all mapped

    async def resize(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        if self.block_device:
            actual = os.lseek(self._fd, 0, os.SEEK_END)
            if size > actual:
                raise ValueError(f"{self.path}: block device holds only {actual} bytes")
        elif size > self._size:
            if self._read_only:
                raise StoreReadOnlyError(errno.EROFS, "cannot grow a read-only store", self.path)
            await trio.to_thread.run_sync(os.ftruncate, self._fd, size)
        self._size = size

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            engine, self.engine = self.engine, None
            if engine is not None:
                await engine.aclose()
            os.close(self._fd)


class NullStore:
    """NULLIO: reads return zeros, writes are discarded (datapath measurements)."""

    _ZERO_CHUNK = 1 << 20

    def __init__(self, size: int, read_only: bool = False) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self._size = size
        self._read_only = read_only
        self._zeros = bytes(self._ZERO_CHUNK)
        #: a view, so a read's slice of it is not a copy of its own first
        self._zero_view = memoryview(self._zeros)

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._read_only

    def read_now(self, offset: int, buf: memoryview) -> bool:
        n = len(buf)
        chunk = self._ZERO_CHUNK
        zeros = self._zero_view
        if n <= chunk:  # (the usual read: one piece)
            buf[:] = zeros[:n]
            return True
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            buf[start:end] = zeros[: end - start]
        return True

    async def readinto(self, offset: int, buf: memoryview) -> None:
        self.read_now(offset, buf)

    def write_now(self, offset: int, data: Buffer) -> bool:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only")
        return True

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        self.write_now(offset, data)

    async def flush(self) -> None:
        return None

    async def discard(self, offset: int, length: int) -> None:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only")

    async def extents(self, offset: int, length: int, limit: int) -> list[Extent]:
        return [(offset, length, True)]

    async def resize(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self._size = size

    async def close(self) -> None:
        return None


class MemoryStore:
    """A RAM disk: a bytearray; for tests and throwaway LUs."""

    def __init__(self, size: int, read_only: bool = False) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self.data = bytearray(size)
        self._read_only = read_only

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def read_only(self) -> bool:
        return self._read_only

    def read_now(self, offset: int, buf: memoryview) -> bool:
        buf[:] = memoryview(self.data)[offset : offset + len(buf)]
        return True

    async def readinto(self, offset: int, buf: memoryview) -> None:
        self.read_now(offset, buf)

    def write_now(self, offset: int, data: Buffer) -> bool:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only")
        view = memoryview(data).cast("B")
        self.data[offset : offset + len(view)] = view
        return True

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        self.write_now(offset, data)

    async def flush(self) -> None:
        return None

    async def discard(self, offset: int, length: int) -> None:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only")
        self.data[offset : offset + length] = bytes(length)

    async def extents(self, offset: int, length: int, limit: int) -> list[Extent]:
        return [(offset, length, True)]

    async def resize(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        if size > len(self.data):
            self.data.extend(bytes(size - len(self.data)))
        else:
            del self.data[size:]

    async def close(self) -> None:
        return None
