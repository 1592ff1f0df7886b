"""SBC data-path handlers: READ, WRITE, VERIFY, WRITE AND VERIFY, PRE-FETCH, SYNC.

These run on every I/O, so each does the minimum: readiness, one range check,
one store call. READ reads straight into a fresh bytearray that is handed to
the transport as is (no further copies); ``bytearray(n)`` is calloc-backed, so
large buffers cost page faults only (BLOCKIO's store hands out page-aligned
windows of one, for O_DIRECT). A read that misses the page cache of a store
with an io_uring engine is queued right from the fast path and the command
answered from its completion (scsi.cdb.Pending): no task per cache miss.
Write handlers take the data-out through ``cmd.receive_data``; when the
initiator's expected transfer length is shorter than the CDB's, only the
whole blocks it did send are written (the transport reports the overflow
residual), as SCST and LIO do and libiscsi's residual tests expect; a
partial block is INVALID FIELD IN INFORMATION UNIT.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyscst.devices.direct import DirectStore
from pyscst.devices.disk_sense import io_error, miscompare, short_data_out
from pyscst.devices.stores import FileStore
from pyscst.scsi.cdb import NEEDS_AWAIT, NeedsAwait, Pending, rw6, rw10, rw12, rw16
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.sense import ScsiError

if TYPE_CHECKING:
    from pyscst.devices.disk import DiskDevice

_READ_10 = 0x28
_WRITE_10 = 0x2A
#: READ(10)/WRITE(10)'s LBA, group and TRANSFER LENGTH (what rw10 decodes)
_RW10_FIELDS = struct.Struct(">IBH").unpack_from

#: where each CDB size keeps its TRANSFER LENGTH (for the field pointer)
_LENGTH_BYTE = {6: 4, 10: 7, 12: 6, 16: 10}


def _lba_and_length(cdb: bytes) -> tuple[int, int]:
    op = cdb[0]
    if op < 0x20:
        return rw6(cdb)
    if op < 0x80:
        return rw10(cdb)
    if op < 0xA0:
        return rw16(cdb)
    return rw12(cdb)


def _cdb_size(op: int) -> int:
    if op < 0x20:
        return 6
    if op < 0x80:
        return 10
    if op < 0xA0:
        return 16
    return 12


def check_range(dev: DiskDevice, cdb: bytes, lba: int, n: int, limit: bool = True) -> None:
    """MAXIMUM TRANSFER LENGTH (INVALID FIELD IN CDB) then LBA OUT OF RANGE."""
    if limit and n > dev.max_transfer_blocks:
        raise ScsiError.invalid_field_in_cdb(_LENGTH_BYTE[_cdb_size(cdb[0])])
    blocks = dev.blocks
    if lba >= blocks or lba + n > blocks:
        raise ScsiError.lba_out_of_range()


async def read_blocks(dev: DiskDevice, lba: int, n: int) -> bytearray | memoryview:
    store = dev.store
    # (a store may want its own buffers: BLOCKIO's are page aligned)
    make = getattr(store, "read_buffer", bytearray)
    buf = make(n << dev.block_shift)
    try:
        await store.readinto(lba << dev.block_shift, memoryview(buf))
    except OSError as exc:
        raise io_error(exc, lba, writing=False) from exc
    return buf


async def _receive(cmd: ScsiCommand, nbytes: int) -> memoryview:
    data = await cmd.receive_data(nbytes)
    if len(data) < nbytes:
        raise short_data_out()
    return data[:nbytes]


def _check_writable(dev: DiskDevice, ctx: ExecContext) -> None:
    if dev.write_protected(ctx.read_only):
        raise ScsiError.write_protected()


def _read_extent(dev: DiskDevice, cmd: ScsiCommand) -> tuple[int, int]:
    """A READ's checks, the same on both paths: ready, LBA range."""
    cdb = cmd.cdb
    lba, n = _lba_and_length(cdb)
    check_range(dev, cdb, lba, n)
    return lba, n


async def handle_read(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """READ (6/10/12/16); DPO and FUA need nothing beyond the page cache."""
    lba, n = _read_extent(dev, cmd)
    if n == 0:
        return None
    cmd.transfer_length = n << dev.block_shift
    return await read_blocks(dev, lba, n)


def read_now(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | NeedsAwait | Pending | None:
    """READ's fast path: the same checks, then a read that must not block,
    or, where the store queues I/O (io_uring), that read queued: Pending."""
    # (_read_extent's checks, unrolled: this runs once per READ, and READ(10)
    # is nearly every one of them)
    cdb = cmd.cdb
    if cdb[0] == _READ_10:
        lba, _group, n = _RW10_FIELDS(cdb, 2)
    else:
        lba, n = _lba_and_length(cdb)
    blocks = dev.blocks
    if n > dev.max_transfer_blocks or lba >= blocks or lba + n > blocks:
        check_range(dev, cdb, lba, n)  # (raises the right one)
    if n == 0:
        return None
    nbytes = n << dev.block_shift
    store = dev.store
    offset = lba << dev.block_shift
    if type(store) is DirectStore:  # (BLOCKIO never reads inline: straight to its ring)
        return _queue_read(store.start_read_new, cmd, lba, offset, nbytes)
    buf = bytearray(nbytes)
    try:
        if not store.read_now(offset, memoryview(buf)):
            if type(store) is FileStore:  # (a cache miss: its completion straight in)
                return _queue_read(store.start_read, cmd, lba, offset, buf)
            start = getattr(store, "start_read", None)
            if start is None:
                return NEEDS_AWAIT
            return _start_read(start, cmd, lba, offset, len(buf), buf)
    except OSError as exc:
        raise io_error(exc, lba, writing=False) from exc
    cmd.transfer_length = nbytes
    return buf


def _start_read(
    start: Callable[..., Callable[[], object] | None],
    cmd: ScsiCommand,
    lba: int,
    offset: int,
    nbytes: int,
    buf: bytearray | None = None,
) -> Pending | NeedsAwait:
    """Queue the read through ``start`` (``start(offset, buf, done)``, or
    ``start(offset, nbytes, done)`` without ``buf``: the store brings its own
    buffer) and answer the command from its completion."""
    pending = Pending()

    def done(result: bytearray | memoryview | OSError | None) -> None:
        if result is None:
            pending.finish(NEEDS_AWAIT)  # (short read, ring gone: the task path)
        elif isinstance(result, OSError):
            pending.finish(io_error(result, lba, writing=False))
        else:
            cmd.transfer_length = nbytes
            pending.finish(result)

    cancel = start(offset, nbytes if buf is None else buf, done)
    if cancel is None:
        return NEEDS_AWAIT
    pending.on_cancel(cancel)
    return pending


def _queue_read(
    start: Callable[..., Callable[[], object] | None],
    cmd: ScsiCommand,
    lba: int,
    offset: int,
    what: int | bytearray,
) -> Pending | NeedsAwait:
    """:func:`_start_read` for FileStore and DirectStore, whose ``start``
    (``start_read(offset, buf, done, failed)`` or ``start_read_new(offset,
    nbytes, done, failed)``) takes a separate ``failed``: the filled buffer
    goes from the completion straight to ``Pending.finish`` (the transfer
    length is set now, as the task path's handle_read sets it before its
    read); only a failure takes a translating call."""
    nbytes = what if isinstance(what, int) else len(what)
    pending = Pending()

    def failed(result: bytearray | memoryview | OSError | None) -> None:
        if isinstance(result, OSError):
            pending.finish(io_error(result, lba, writing=False))
        else:
            pending.finish(NEEDS_AWAIT)  # (short read, ring gone: the task path)

    cancel = start(offset, what, pending.finish, failed)
    if cancel is None:
        return NEEDS_AWAIT
    cmd.transfer_length = nbytes
    pending.on_cancel(cancel)
    return pending


#: a write longer than this may have come in pieces (the rest of a first burst
#: by R2T; FirstBurstLength is 64 KiB unless an initiator lowers it) and goes to
#: a FILEIO or BLOCKIO store as those pieces; a shorter one came whole, and
#: asking for pieces would cost it more calls than a join of it saves
PIECES_FROM = 64 * 1024
_PIECE_STORES = (FileStore, DirectStore)


def write_now(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | NeedsAwait | Pending | None:
    """WRITE's fast path: all data arrived as immediate data and the store
    takes it into the cache without blocking, or (FUA, WCE off, a store that
    would block, BLOCKIO) queues it on its ring: Pending. Anything else (R2T
    needed, a short transfer, no ring) goes the awaiting way."""
    cdb = cmd.cdb
    store = dev.store
    fua = (cdb[0] >= 0x20 and cdb[1] & 0x08 != 0) or not dev.write_cache
    start = getattr(store, "start_write", None) if fua else None
    if fua and start is None:
        return NEEDS_AWAIT
    if dev.write_protected(ctx.read_only):
        raise ScsiError.write_protected()
    # (_lba_and_length and check_range, unrolled as in read_now)
    if cdb[0] == _WRITE_10:
        lba, _group, n = _RW10_FIELDS(cdb, 2)
    else:
        lba, n = _lba_and_length(cdb)
    blocks = dev.blocks
    if n > dev.max_transfer_blocks or lba >= blocks or lba + n > blocks:
        check_range(dev, cdb, lba, n)  # (raises the right one)
    if n == 0:
        return None
    nbytes = n << dev.block_shift
    offset = lba << dev.block_shift
    data: Buffer | list[Buffer]
    if nbytes > PIECES_FROM and type(store) in _PIECE_STORES:
        # the pieces the data-out came in (immediate data, each Data-Out's
        # segment): FILEIO writes them with one pwritev, BLOCKIO gathers them
        # into the aligned copy O_DIRECT needs; neither joins them first
        pieces = cmd.data_segments_now(nbytes)
        if pieces is None or sum(map(len, pieces)) < nbytes:
            return NEEDS_AWAIT
        data = pieces
    else:
        cmd.transfer_length = nbytes  # (what cmd.data_now does, without its frame)
        whole = cmd.transport.data_now(cmd, nbytes)
        if whole is None or len(whole) < nbytes:
            return NEEDS_AWAIT
        data = whole if len(whole) == nbytes else whole[:nbytes]
    try:
        if not fua:
            if store.write_now(offset, data):  # type: ignore[arg-type]
                return None
            start = getattr(store, "start_write", None)
            if start is None:
                return NEEDS_AWAIT
        assert start is not None
        return _start_write(start, lba, offset, data, fua)
    except OSError as exc:
        raise io_error(exc, lba, writing=True) from exc


def _start_write(
    start: Callable[..., Callable[[], object] | None],
    lba: int,
    offset: int,
    data: Buffer | list[Buffer],
    fua: bool,
) -> Pending | NeedsAwait:
    pending = Pending()

    def done(result: bool | OSError | None) -> None:
        if result is None:
            pending.finish(NEEDS_AWAIT)  # (short write, ring gone: the task path)
        elif isinstance(result, OSError):
            pending.finish(io_error(result, lba, writing=True))
        else:
            pending.finish(None)

    cancel = start(offset, data, fua, done)
    if cancel is None:
        return NEEDS_AWAIT
    pending.on_cancel(cancel)
    return pending


async def _write_checked(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> tuple[int, int, memoryview | None]:
    cdb = cmd.cdb
    _check_writable(dev, ctx)
    lba, n = _lba_and_length(cdb)
    check_range(dev, cdb, lba, n)
    if n == 0:
        return lba, 0, None
    data = await cmd.receive_data(n << dev.block_shift)
    if len(data) < n << dev.block_shift:
        if len(data) & (dev.block_size - 1):
            raise short_data_out()
        n = len(data) >> dev.block_shift
        if n == 0:
            return lba, 0, None
    # FUA is byte 1 bit 3 where the table allows it (not READ/WRITE(6), where
    # those bits are LBA, nor WRITE AND VERIFY, where the mask forbids it)
    fua = (cdb[0] >= 0x20 and bool(cdb[1] & 0x08)) or not dev.write_cache
    offset = lba << dev.block_shift
    try:
        # the data just arrived (an await): take it into the cache without
        # another trip through the scheduler when the store can
        if fua or not dev.store.write_now(offset, data):
            await dev.store.write(offset, data, fua=fua)
    except OSError as exc:
        raise io_error(exc, lba, writing=True) from exc
    return lba, n, data


async def handle_write(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """WRITE (6/10/12/16); FUA (or WCE=0) makes the write durable first."""
    await _write_checked(dev, cmd, ctx)
    return None


def first_difference(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview) -> int:
    """Offset of the first differing byte (a and b differ, equal lengths)."""
    lo, hi = 0, len(a)
    ma, mb = memoryview(a), memoryview(b)
    # binary search over equal prefixes: O(log n) slice compares
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if ma[lo:mid] == mb[lo:mid]:
            lo = mid
        else:
            hi = mid
    for i in range(lo, hi):
        if ma[i] != mb[i]:
            return i
    raise AssertionError("buffers are equal")


async def handle_write_and_verify(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """WRITE AND VERIFY (10/12/16): write, then read back and compare."""
    lba, n, data = await _write_checked(dev, cmd, ctx)
    if n == 0 or data is None:
        return None
    back = await read_blocks(dev, lba, n)
    if back != data:
        raise miscompare(first_difference(data, back))
    return None


async def handle_verify(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """VERIFY (10/12/16): BYTCHK 00 checks the range, 01 compares, 11 compares
    one block of data-out against every block of the range."""
    cdb = cmd.cdb
    bytchk = (cdb[1] >> 1) & 0x03
    if bytchk == 0b10:
        raise ScsiError.invalid_field_in_cdb(1, 2)
    lba, n = _lba_and_length(cdb)
    check_range(dev, cdb, lba, n)
    if n == 0:
        return None
    if bytchk == 0:
        await read_blocks(dev, lba, n)  # the medium must be readable
        return None
    bs = dev.block_size
    if bytchk == 0b01:
        expected = await _receive(cmd, n * bs)
    else:
        one = bytes(await _receive(cmd, bs))
        expected = memoryview(one * n)
    medium = await read_blocks(dev, lba, n)
    if medium != expected:
        offset = first_difference(expected, medium)
        raise miscompare(offset if bytchk == 0b01 else offset % bs)
    return None


async def handle_prefetch(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """PRE-FETCH (10/16): ask the kernel to read ahead; always GOOD.

    CONDITION MET is not reported: the page cache gives no guarantee that the
    blocks stay resident, which SBC allows by answering GOOD.
    """
    cdb = cmd.cdb
    lba, n = rw10(cdb) if cdb[0] == 0x34 else rw16(cdb)
    check_range(dev, cdb, lba, n, limit=False)
    fileno = getattr(dev.store, "fileno", None)
    if isinstance(fileno, int) and hasattr(os, "posix_fadvise"):
        bs = dev.block_size
        length = n * bs if n else 0
        try:
            os.posix_fadvise(fileno, lba * bs, length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
    return None


async def handle_synchronize_cache(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """SYNCHRONIZE CACHE (10/16): flush the whole store (a superset of the range).

    IMMED is accepted; the flush still completes before status, which SBC
    permits.
    """
    cdb = cmd.cdb
    lba, n = rw10(cdb) if cdb[0] == 0x35 else rw16(cdb)
    check_range(dev, cdb, lba, n, limit=False)
    try:
        await dev.store.flush()
    except OSError as exc:
        raise io_error(exc, lba, writing=True) from exc
    return None
