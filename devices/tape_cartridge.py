"""A file-backed tape cartridge: records, filemarks, end-of-data, partitions and MAM.

A virtual tape library needs cartridges that outlive the daemon, move between
drives (a changer loads them) and can be inspected and repaired with ordinary
tools, so a cartridge is one directory per barcode:

``<dir>/cartridge.json``
    ``{"format": "pyscst-tape", "version": 1, "barcode": ..., "worm": bool,
    "write_protected": bool, "partitions": [capacity bytes, ...], "mam": {...},
    "attributes": {"<id hex>": [format, "<value hex>"], ...}}``: the medium's
    identity and flags, each partition's capacity, the MAM counters the drive
    keeps (load count, bytes written and read, ...) and the attributes an
    initiator stored with WRITE ATTRIBUTE. Replaced atomically (temp file,
    fsync, rename) whenever it changes.
``<dir>/p<N>.records``
    Partition N: its logical objects in order from beginning of partition,
    each a 16-byte header then the payload::

        magic  b"\\xa5T"  (2)    kind  1 = record, 2 = filemark  (1)
        reserved 0       (1)    length of the payload, bytes    (4, big-endian)
        object number    (4, its index in the partition, modulo 2**32)
        CRC-32 of the 12 bytes before it (4)

    End-of-data is the end of the valid objects, or (version 2) a header of
    kind 3, an end-of-data marker, after which the bytes are stale. Nothing
    else is stored: the block address of an object is its index, the file
    number the count of filemarks before it, both rebuilt by one scan of the
    headers at open.

Format version 2 (new cartridges); version 1 (no markers) is read, and kept
as version 1: never marked, so an older reader still reads it. A reader
refuses any other ``version``. Version 2 on a memory filesystem overwrites in
place (:meth:`Partition.truncate`, :meth:`Partition.append_many`).

Damage is reported, never fatal: a header that fails its check, a payload
cut short or an object number out of sequence ends the valid objects there;
everything from that point is a damaged region (``damaged`` on the partition)
that the drive reads as MEDIUM ERROR, and writing at that point (end-of-data)
replaces it. A missing or unreadable ``cartridge.json`` refuses the open
(:class:`CartridgeError`), which the drive reports as a load failure.

What survives what: every object is written with one ``pwritev`` before the
drive reports the command done, so an acknowledged WRITE or WRITE FILEMARKS
survives ``kill -9`` of the daemon (the page cache is the kernel's). The drive
calls :meth:`TapeCartridge.sync` (``fdatasync``) where SSC makes buffered data
reach the medium: WRITE FILEMARKS with IMMED=0 (a count of 0 is the SSC
"synchronize" operation), REWIND, LOCATE, LOAD/UNLOAD, READ POSITION after
writes, and eject/close; after those, the data also survives a power loss.
A write after the last sync that a power loss tears is dropped by the scan
at the next open (it was never acknowledged as synchronized). Writing in the
middle of a partition truncates the file at that object first, as a tape
drive loses everything after the point it writes (in place: a marker there).

Pure file I/O, no Trio: the drive (devices/tape.py) decides what runs inline
and what in a worker thread.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import re
import struct
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyscst.devices.stores import INLINE_WRITE_MAX, MEMORY_FILESYSTEMS, filesystem_type
from pyscst.scsi.command import Buffer

FORMAT_NAME = "pyscst-tape"
#: what new cartridges are written as; version 1 (no end-of-data markers) is
#: still read, and written as version 1 (truncated, never marked)
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
META_FILE = "cartridge.json"
HEADER = struct.Struct(">2sBBII")
HEADER_SIZE = HEADER.size + 4
MAGIC = b"\xa5T"
#: barcodes: what a volume tag (SMC primary volume tag, 32 bytes) can carry
BARCODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
#: the largest record a drive accepts (READ BLOCK LIMITS maximum)
MAX_RECORD = (1 << 24) - 1
#: objects per pwritev (two iovecs each, under IOV_MAX 1024)
_BATCH = 500
#: preadv flag: fail instead of waiting for the disk (0 where unsupported)
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


class Kind(enum.IntEnum):
    """The logical objects a partition holds."""

    RECORD = 1
    FILEMARK = 2


#: header kind of an end-of-data marker (version 2): the valid objects end
#: here; the bytes after it are stale (an earlier pass over the tape)
_END = 3


class CartridgeError(Exception):
    """A cartridge that cannot be created or opened (its message says why)."""


class Pieces:
    """One record given as the pieces its data-out arrived in (immediate
    data, Data-Out segments): written by the pwritev that writes its header,
    never copied into one buffer first."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: Sequence[Buffer]) -> None:
        self.parts = list(parts)
        self.size = sum(map(len, self.parts))

    def __len__(self) -> int:
        return self.size


#: a record to write: one buffer, or the pieces it came in
Record = Buffer | Pieces
#: the most pieces a record is written from (more are joined: IOV_MAX is 1024)
MAX_PIECES = 64


def _header(kind: int, length: int, number: int) -> bytes:
    head = HEADER.pack(MAGIC, kind, 0, length, number & 0xFFFFFFFF)
    return head + struct.pack(">I", zlib.crc32(head))


class Partition:
    """One partition: its file and the index of its objects."""

    def __init__(
        self, number: int, path: Path, capacity: int, fd: int, memory_backed: bool = False
    ) -> None:
        self.number = number
        self.path = path
        self.capacity = capacity
        self.fd = fd
        #: on tmpfs and friends: a read never waits for a disk, but RWF_NOWAIT
        #: is refused (EOPNOTSUPP), so records up to INLINE_WRITE_MAX are read
        #: inline instead of by a worker thread each (as FileStore does)
        self.memory_backed = memory_backed
        #: file offset of each object's header
        self.offsets = array("Q")
        #: payload length of each object; -1 for a filemark
        self.lengths = array("q")
        #: indexes of the filemarks, ascending
        self.filemarks = array("Q")
        #: bytes of valid objects (where the next one goes)
        self.end = 0
        #: bytes past ``end`` that are not valid objects (a damaged region)
        self.damaged = 0
        #: overwrite in place (version 2 on a memory filesystem): a write
        #: before the file's end ends its objects with an end-of-data marker
        #: instead of truncating the file (see ``append_many``)
        self.in_place = False
        #: bytes in the file: more than ``end`` when stale bytes follow a marker
        self.file_size = 0

    @property
    def eod(self) -> int:
        """The object number of end-of-data (the count of valid objects)."""
        return len(self.offsets)

    @property
    def used(self) -> int:
        return self.end

    @property
    def remaining(self) -> int:
        return max(0, self.capacity - self.end)

    def is_filemark(self, index: int) -> bool:
        return self.lengths[index] < 0

    def length(self, index: int) -> int:
        """Payload length of object ``index`` (-1: a filemark)."""
        return self.lengths[index]

    def files_before(self, index: int) -> int:
        """Filemarks before object ``index`` (the logical file identifier)."""
        return bisect_left(self.filemarks, index)

    def filemark_after(self, index: int) -> int | None:
        """The first filemark at or after ``index`` (None: none before EOD)."""
        i = bisect_left(self.filemarks, index)
        return self.filemarks[i] if i < len(self.filemarks) else None

    def filemark_before(self, index: int) -> int | None:
        """The last filemark before ``index`` (None: none after BOP)."""
        i = bisect_left(self.filemarks, index)
        return self.filemarks[i - 1] if i > 0 else None

    def read(self, index: int, buf: memoryview, nowait: bool = False) -> int | None:
        """Read up to ``len(buf)`` bytes of record ``index``'s payload into
        ``buf``; the count read. With ``nowait``, None when that would wait
        for the disk (not all in the page cache: RWF_NOWAIT). OSError when the
        file no longer holds the record."""
        want = min(len(buf), self.lengths[index])
        if want <= 0:
            return 0
        offset = self.offsets[index] + HEADER_SIZE
        if nowait and not (self.memory_backed and want <= INLINE_WRITE_MAX):
            if not _NOWAIT:
                return None
            try:
                got = os.preadv(self.fd, [buf[:want]], offset, _NOWAIT)
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL):
                    return None
                raise
            if 0 < got < want:
                return None  # partly cached: the rest waits for the disk
        else:
            got = os.preadv(self.fd, [buf[:want]], offset)
        if got != want:
            raise OSError(errno.EIO, f"{self.path}: record {index} cut short on disk")
        return got

    def read_inline(self, index: int, limit: int) -> bytes | None:
        """The first ``limit`` bytes of record ``index``'s payload as new
        bytes, when reading never waits (a memory filesystem, a record up to
        INLINE_WRITE_MAX); None otherwise (use :meth:`read`). The kernel
        fills the bytes object: no buffer is zero-filled first (a 256 KiB
        record's memset cost as many instructions as the rest of the READ)."""
        if not self.memory_backed:
            return None
        want = min(limit, self.lengths[index])
        if want > INLINE_WRITE_MAX:
            return None
        if want <= 0:
            return b""
        data = os.pread(self.fd, want, self.offsets[index] + HEADER_SIZE)
        if len(data) != want:
            raise OSError(errno.EIO, f"{self.path}: record {index} cut short on disk")
        return data

    def scan(self) -> None:
        """Rebuild the index from the file: every valid object up to the first
        damage (see the module docstring)."""
        self.offsets = array("Q")
        self.lengths = array("q")
        self.filemarks = array("Q")
        size = os.fstat(self.fd).st_size
        pos = 0
        marked = False
        with open(self.fd, "rb", buffering=1 << 20, closefd=False) as f:
            while pos + HEADER_SIZE <= size:
                f.seek(pos)
                raw = f.read(HEADER_SIZE)
                if len(raw) < HEADER_SIZE:
                    break
                magic, kind, _res, length, number = HEADER.unpack_from(raw)
                (crc,) = struct.unpack_from(">I", raw, HEADER.size)
                if magic != MAGIC or crc != zlib.crc32(raw[: HEADER.size]):
                    break
                if number != self.eod & 0xFFFFFFFF:
                    break
                if kind == _END and not length:
                    marked = True
                    break
                if kind not in (Kind.RECORD, Kind.FILEMARK):
                    break
                if kind == Kind.FILEMARK and length:
                    break
                end = pos + HEADER_SIZE + length
                if end > size:
                    break
                if kind == Kind.FILEMARK:
                    self.filemarks.append(self.eod)
                self.offsets.append(pos)
                self.lengths.append(length if kind == Kind.RECORD else -1)
                pos = end
        self.end = pos
        self.file_size = size
        self.damaged = 0 if marked else size - pos

    def truncate(self, index: int, physical: bool = False) -> None:
        """Drop object ``index`` and everything after it (a write there).
        In place (and not ``physical``, as ERASE is), the file keeps its
        bytes and an end-of-data marker goes at the cut: rewriting a tape
        then overwrites pages the file has, where truncating made every
        write of the next pass allocate (and zero) new ones."""
        if index >= self.eod and not self.damaged:
            if physical and self.file_size > self.end:
                os.ftruncate(self.fd, self.end)  # (stale bytes after a marker)
                self.file_size = self.end
            return
        cut = self.offsets[index] if index < self.eod else self.end
        if self.in_place and not physical:
            self._mark(cut, index)
        else:
            os.ftruncate(self.fd, cut)
            self.file_size = cut
        del self.offsets[index:]
        del self.lengths[index:]
        del self.filemarks[bisect_left(self.filemarks, index) :]
        self.end = cut
        self.damaged = 0

    def _mark(self, at: int, number: int) -> None:
        """Write an end-of-data marker (object ``number``) at offset ``at``."""
        if os.pwrite(self.fd, _header(_END, 0, number), at) != HEADER_SIZE:
            raise OSError(errno.ENOSPC, f"{self.path}: short write")
        self.file_size = max(self.file_size, at + HEADER_SIZE)

    def append(self, kind: Kind, data: Buffer = b"") -> None:
        """Write one object at end-of-data (one pwritev: header and payload)."""
        self.append_many(kind, [data] if kind == Kind.RECORD else 1)

    def append_many(self, kind: Kind, records: Sequence[Record] | int) -> None:
        """Write records (or ``records`` filemarks) at end-of-data, as few
        pwritev calls as the iovec limit allows. On a short write (disk full)
        the partial tail is cut off again and OSError raised: the objects
        before it stay written and indexed.

        Over stale bytes (``file_size`` > ``end``: an end-of-data marker at
        ``end``, see ``truncate``) a batch is written in two steps, so that
        no crash can make the stale objects after it valid again: first
        everything but the first header, with a new marker after the batch
        when stale bytes remain beyond it, then the first header over the
        old marker (a torn header fails its CRC). Until that header is in,
        the old marker ends the objects; a torn first step is never reached.
        """
        if self.file_size > self.end:
            if not self.in_place:
                os.ftruncate(self.fd, self.end)  # (stale bytes of an in-place life)
                self.file_size = self.end
            elif self.damaged:
                self._mark(self.end, self.eod)  # (a torn header there could fit later)
                self.damaged = 0
        count = records if isinstance(records, int) else len(records)
        # (a record's pieces are iovecs too: such records go one per pwritev)
        single = (count > 1 and not isinstance(records, int)
                  and any(isinstance(r, Pieces) for r in records))  # fmt: skip
        i = 0
        while i < count:
            batch = 1 if single else min(count - i, _BATCH)
            parts: list[Buffer] = []
            entries: list[tuple[int, int]] = []
            offset = self.end
            eod = len(self.offsets)
            record = kind == Kind.RECORD
            for j in range(i, i + batch):
                data = b"" if isinstance(records, int) else records[j]
                length = len(data) if record else 0
                parts.append(_header(kind, length, eod + len(entries)))
                if length:
                    if isinstance(data, Pieces):
                        parts.extend(data.parts)
                    else:
                        parts.append(data)
                entries.append((offset, length if record else -1))
                offset += HEADER_SIZE + length
            total = offset - self.end
            if self.file_size > self.end:
                self._overwrite(parts, total, eod + batch)
            else:
                written = os.pwritev(self.fd, parts, self.end)
                if written != total:
                    os.ftruncate(self.fd, self.end)
                    raise OSError(errno.ENOSPC, f"{self.path}: short write")
                self.file_size = self.end + total
            for off, length in entries:
                if length < 0:
                    self.filemarks.append(len(self.offsets))
                self.offsets.append(off)
                self.lengths.append(length)
            self.end = offset
            i += batch

    def _overwrite(self, parts: list[Buffer], total: int, after: int) -> None:
        """``append_many``'s two steps over stale bytes (see there); ``after``:
        the object number following the batch."""
        start = self.end
        new_end = start + total
        tail = parts[1:]
        if new_end < self.file_size:
            tail.append(_header(_END, 0, after))
        want = total - HEADER_SIZE + (HEADER_SIZE if new_end < self.file_size else 0)
        written = os.pwritev(self.fd, tail, start + HEADER_SIZE) if tail else 0
        self.file_size = max(self.file_size, start + HEADER_SIZE + written)
        if written != want:
            raise OSError(errno.ENOSPC, f"{self.path}: short write")  # (the marker stays)
        if os.pwrite(self.fd, parts[0], start) != HEADER_SIZE:
            raise OSError(errno.EIO, f"{self.path}: short write")


def _default_mam(barcode: str, capacities: Sequence[int]) -> dict[str, Any]:
    return {
        "medium_serial": barcode,
        "load_count": 0,
        "total_written": 0,
        "total_read": 0,
        "written_this_load": 0,
        "read_this_load": 0,
        "last_drives": [],
    }


class TapeCartridge:
    """An opened cartridge. Shaped as a backing store (size, read_only,
    flush, close) so the device actor can open, hand over and close it like
    any medium; it has no byte addressing (readinto/write refuse)."""

    def __init__(self, path: Path, dir_fd: int, meta: dict[str, Any],
                 partitions: list[Partition], read_only: bool) -> None:  # fmt: skip
        self.path = path
        #: the cartridge directory, open: every file is reached relative to it
        self.dir_fd = dir_fd
        self._meta = meta
        self.partitions = partitions
        self._read_only = read_only
        self._dirty = False
        self.closed = False

    # --- identity and flags ------------------------------------------------------

    @property
    def barcode(self) -> str:
        return str(self._meta["barcode"])

    @property
    def worm(self) -> bool:
        return bool(self._meta["worm"])

    @property
    def write_protected(self) -> bool:
        """The cartridge's write-protect tab (or opened read-only)."""
        return self._read_only or bool(self._meta["write_protected"])

    @property
    def read_only(self) -> bool:
        """Opened read-only (its files could not be opened for writing). The
        store's view: a drive made read-only by the operator keeps its
        cartridge open for writing and refuses writes itself, so toggling
        ``read_only`` live never reopens the medium under the drive."""
        return self._read_only

    @property
    def mam(self) -> dict[str, Any]:
        """The drive-kept MAM counters (mutable; :meth:`save_meta` persists)."""
        mam: dict[str, Any] = self._meta["mam"]
        return mam

    @property
    def attributes(self) -> dict[int, tuple[int, bytes]]:
        """Host-written MAM attributes: id -> (format, value)."""
        raw: dict[str, list[Any]] = self._meta.get("attributes", {})
        return {int(k, 16): (int(v[0]), bytes.fromhex(v[1])) for k, v in raw.items()}

    def set_attribute(self, ident: int, fmt: int, value: bytes | None) -> None:
        """Store (``value`` None or empty: delete) a host attribute."""
        raw: dict[str, list[Any]] = self._meta.setdefault("attributes", {})
        key = f"{ident:04x}"
        if not value:
            raw.pop(key, None)
        else:
            raw[key] = [fmt, value.hex()]
        self._dirty = True

    @property
    def capacity(self) -> int:
        return sum(p.capacity for p in self.partitions)

    @property
    def size(self) -> int:
        """Bytes written on the cartridge (all partitions)."""
        return sum(p.end for p in self.partitions)

    def note_changed(self) -> None:
        """The MAM counters changed: save them at the next :meth:`save_meta`."""
        self._dirty = True

    # --- persistence --------------------------------------------------------------

    def save_meta(self) -> None:
        """Replace cartridge.json atomically (if anything changed)."""
        if not self._dirty or self._read_only:
            return
        _write_meta(self.dir_fd, self._meta)
        self._dirty = False

    def sync(self) -> None:
        """Make every object written so far durable (fdatasync each partition)."""
        if self._read_only or self.closed:
            return
        for p in self.partitions:
            os.fdatasync(p.fd)

    def reformat(self, capacities: Sequence[int]) -> None:
        """FORMAT MEDIUM: erase everything and lay out these partitions."""
        if self.write_protected:
            raise CartridgeError(f"{self.path}: write-protected")
        for p in self.partitions:
            os.close(p.fd)
        self.partitions = []
        for name in os.listdir(self.dir_fd):
            if name.endswith(".records"):
                os.unlink(name, dir_fd=self.dir_fd)
        self._meta["partitions"] = list(capacities)
        self._meta["version"] = FORMAT_VERSION  # (every file is new)
        self.partitions = _open_partitions(self.path, self.dir_fd, list(capacities),
                                           read_only=False, create=True)  # fmt: skip
        self._dirty = True
        self.save_meta()

    # --- the backing-store shape --------------------------------------------------

    async def flush(self) -> None:
        if self.closed:
            return
        self.save_meta()
        self.sync()

    def close_now(self) -> None:
        """Save the MAM and close the partition files (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.save_meta()
        finally:
            for p in self.partitions:
                os.close(p.fd)
            os.close(self.dir_fd)

    async def close(self) -> None:
        self.close_now()

    def problem(self) -> str | None:
        return None

    async def readinto(self, offset: int, buf: memoryview) -> None:
        raise OSError(errno.EINVAL, "a tape cartridge has no byte addressing")

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        raise OSError(errno.EINVAL, "a tape cartridge has no byte addressing")

    def read_now(self, offset: int, buf: memoryview) -> bool:
        return False

    def write_now(self, offset: int, data: Buffer) -> bool:
        return False

    async def discard(self, offset: int, length: int) -> None:
        raise OSError(errno.EINVAL, "a tape cartridge has no byte addressing")

    async def extents(self, offset: int, length: int, limit: int) -> list[Any]:
        raise OSError(errno.EINVAL, "a tape cartridge has no byte addressing")

    async def resize(self, size: int) -> None:
        raise OSError(errno.EINVAL, "a cartridge's capacity is fixed when it is created")

    def __repr__(self) -> str:
        return f"<TapeCartridge {self.barcode} {self.path}>"


def _write_meta(dir_fd: int, meta: dict[str, Any]) -> None:
    tmp = META_FILE + ".tmp"
    data = json.dumps(meta, indent=1, sort_keys=True).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, META_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def open_dir(path: str | os.PathLike[str]) -> int:
    """A cartridge directory's descriptor (the last component not a symlink)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _open_partitions(path: Path, dir_fd: int, capacities: list[int], read_only: bool,
                     create: bool = False, version: int = FORMAT_VERSION,
                     ) -> list[Partition]:  # fmt: skip
    flags = os.O_RDONLY if read_only else os.O_RDWR
    if create:
        flags |= os.O_CREAT
    parts: list[Partition] = []
    memory = filesystem_type(str(path)) in MEMORY_FILESYSTEMS
    try:
        for n, cap in enumerate(capacities):
            file = path / f"p{n}.records"
            fd = os.open(file.name, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
            part = Partition(n, file, cap, fd, memory)
            # (a version 1 reader would take a marker for damage)
            part.in_place = memory and version >= 2
            parts.append(part)
            part.scan()
    except OSError:
        for p in parts:
            os.close(p.fd)
        raise
    return parts


def create_blank(
    path: str | os.PathLike[str],
    barcode: str,
    capacity: int,
    *,
    worm: bool = False,
    partitions: Sequence[int] | None = None,
) -> Path:
    """Create a blank cartridge directory at ``path`` (it must not exist):
    ``capacity`` bytes in one partition, or the capacities in ``partitions``.
    Returns the path. CartridgeError for a bad barcode, capacity or path."""
    if not BARCODE_RE.match(barcode):
        raise CartridgeError(f"barcode {barcode!r}: 1-32 letters, digits, '_', '.', '-'")
    caps = list(partitions) if partitions else [capacity]
    if not 1 <= len(caps) <= 4 or any(c < 1 << 20 for c in caps):
        raise CartridgeError("1-4 partitions of at least 1 MiB each")
    where = Path(path)
    try:
        where.mkdir(parents=False)
    except OSError as exc:
        raise CartridgeError(f"{where}: {exc.strerror}") from None
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "barcode": barcode,
        "worm": worm,
        "write_protected": False,
        "partitions": caps,
        "mam": _default_mam(barcode, caps),
        # the label a library's barcode reader would see, as MAM's BARCODE (0806h)
        "attributes": {"0806": [1, barcode.encode().ljust(32).hex()]},
    }
    dir_fd = open_dir(where)
    try:
        for p in _open_partitions(where, dir_fd, caps, read_only=False, create=True):
            os.fsync(p.fd)
            os.close(p.fd)
        _write_meta(dir_fd, meta)
    finally:
        os.close(dir_fd)
    return where


def _read_small(dir_fd: int, name: str, limit: int = 1 << 20) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def read_meta(where: Path, dir_fd: int) -> dict[str, Any]:
    """A cartridge's cartridge.json, checked. CartridgeError if unusable."""
    try:
        meta = json.loads(_read_small(dir_fd, META_FILE))
    except (OSError, ValueError) as exc:
        raise CartridgeError(f"{where}: no readable {META_FILE}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CartridgeError(f"{where}: not a {FORMAT_NAME} cartridge")
    if meta.get("version") not in READ_VERSIONS:
        raise CartridgeError(f"{where}: format version {meta.get('version')!r} "
                             f"(this pyscst reads {READ_VERSIONS})")  # fmt: skip
    caps = meta.get("partitions")
    barcode = meta.get("barcode")
    if (not isinstance(caps, list) or not 1 <= len(caps) <= 4
            or not all(isinstance(c, int) and c > 0 for c in caps)):  # fmt: skip
        raise CartridgeError(f"{where}: bad partitions in {META_FILE}")
    if not isinstance(barcode, str) or not BARCODE_RE.match(barcode):
        raise CartridgeError(f"{where}: bad barcode in {META_FILE}")
    if not isinstance(meta.get("mam"), dict):
        meta["mam"] = _default_mam(barcode, caps)
    for key in ("worm", "write_protected"):
        meta[key] = bool(meta.get(key, False))
    if not isinstance(meta.get("attributes"), dict):
        meta["attributes"] = {}
    return meta


def open_cartridge(
    path: str | os.PathLike[str], read_only: bool = False, dir_fd: int | None = None
) -> TapeCartridge:
    """Open the cartridge at ``path`` (blocking: it scans every header); with
    ``dir_fd``, the directory already opened (confined by the caller; the
    cartridge takes it over). CartridgeError when it is missing or not a
    cartridge; damage inside a partition is not an error (module docstring)."""
    where = Path(path)
    try:
        fd = open_dir(where) if dir_fd is None else dir_fd
    except OSError as exc:
        raise CartridgeError(f"{where}: {exc.strerror or exc}") from None
    try:
        meta = read_meta(where, fd)
        try:
            parts = _open_partitions(where, fd, list(meta["partitions"]), read_only,
                                     version=meta["version"])  # fmt: skip
        except OSError as exc:
            if read_only or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            read_only = True  # a write-protected directory or filesystem
            parts = _open_partitions(where, fd, list(meta["partitions"]), read_only,
                                     version=meta["version"])  # fmt: skip
    except OSError as exc:
        os.close(fd)
        raise CartridgeError(f"{where}: {exc.strerror or exc}") from None
    except BaseException:
        os.close(fd)
        raise
    return TapeCartridge(where, fd, meta, parts, read_only)


def set_write_protect(path: str | os.PathLike[str], protect: bool) -> None:
    """Slide the write-protect tab of a cartridge that is not loaded."""
    where = Path(path)
    fd = open_dir(where)
    try:
        meta = read_meta(where, fd)
        meta["write_protected"] = protect
        _write_meta(fd, meta)
    finally:
        os.close(fd)
