"""A RAM disk store with a memory limit, registered as a pyscst handler plugin.

Why sparse chunks rather than one bytearray of the device's size: a RAM disk
larger than what it holds is the useful case (scratch space, CI images), and
a limit on memory actually used is what keeps the daemon alive when an
initiator fills it; a full disk answers with sense, never with an OOM kill.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from pyscst.devices.plugin_api import (
    API_VERSION,
    BackingStore,
    DeviceSettings,
    HandlerInfo,
    PathRule,
    Plugin,
    StoreReadOnlyError,
    build_disk,
)

#: memory is taken in chunks of this many bytes
CHUNK = 64 * 1024
#: the environment variable that sets each device's memory limit
LIMIT_ENV = "PYSCST_RAMDISK_MAX_MEMORY"
_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = _SUFFIX.get(text[-1:], 1)
    return int(text[:-1] if scale != 1 else text) * scale


def default_limit() -> int:
    """A quarter of the machine's memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


class RamDiskStore:
    """Blocks in memory, in CHUNK-sized pieces allocated on first non-zero write."""

    def __init__(self, size: int, max_memory: int, read_only: bool = False) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self._size = size
        self.max_memory = max_memory
        self._read_only = read_only
        self._chunks: dict[int, bytearray] = {}

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def memory_used(self) -> int:
        return len(self._chunks) * CHUNK

    def _pieces(self, offset: int, length: int) -> list[tuple[int, int, int, int]]:
        """(chunk index, offset in chunk, position in the request, length) runs."""
        out = []
        pos = 0
        while pos < length:
            index, inner = divmod(offset + pos, CHUNK)
            n = min(CHUNK - inner, length - pos)
            out.append((index, inner, pos, n))
            pos += n
        return out

    def read_now(self, offset: int, buf: memoryview) -> bool:
        for index, inner, pos, n in self._pieces(offset, len(buf)):
            chunk = self._chunks.get(index)
            if chunk is None:
                buf[pos : pos + n] = bytes(n)
            else:
                buf[pos : pos + n] = chunk[inner : inner + n]
        return True

    async def readinto(self, offset: int, buf: memoryview) -> None:
        self.read_now(offset, buf)

    def write_now(self, offset: int, data: bytes | bytearray | memoryview) -> bool:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only")
        view = memoryview(data).cast("B")
        pieces = self._pieces(offset, len(view))
        new = sum(
            1 for index, _, pos, n in pieces
            if index not in self._chunks and any(view[pos : pos + n])
        )  # fmt: skip
        if new and self.memory_used + new * CHUNK > self.max_memory:
            # all or nothing: the command fails with nothing written
            raise OSError(errno.ENOSPC, f"RAM disk memory limit ({self.max_memory} bytes) reached")
        for index, inner, pos, n in pieces:
            chunk = self._chunks.get(index)
            part = view[pos : pos + n]
            if chunk is None:
                if not any(part):
                    continue  # zeros over an unallocated chunk: nothing to keep
                chunk = self._chunks[index] = bytearray(CHUNK)
            chunk[inner : inner + n] = part
        return True

    async def write(
        self, offset: int, data: bytes | bytearray | memoryview, fua: bool = False
    ) -> None:
        self.write_now(offset, data)

    async def flush(self) -> None:
        return None

    async def discard(self, offset: int, length: int) -> None:
        if self._read_only:
            raise StoreReadOnlyError(errno.EROFS, "store is read-only")
        for index, inner, _pos, n in self._pieces(offset, length):
            chunk = self._chunks.get(index)
            if chunk is None:
                continue
            if n == CHUNK:
                del self._chunks[index]
            else:
                chunk[inner : inner + n] = bytes(n)

    async def extents(self, offset: int, length: int, limit: int) -> list[tuple[int, int, bool]]:
        runs: list[tuple[int, int, bool]] = []
        for index, _inner, pos, n in self._pieces(offset, length):
            mapped = index in self._chunks
            if runs and runs[-1][2] == mapped:
                start, size, _ = runs[-1]
                runs[-1] = (start, size + n, mapped)
            elif len(runs) == limit:
                break
            else:
                runs.append((offset + pos, n, mapped))
        return runs

    async def resize(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        if size < self._size:
            await self.discard(size, self._size - size)
            last = size // CHUNK
            for index in [i for i in self._chunks if i > last]:
                del self._chunks[index]
        self._size = size

    async def close(self) -> None:
        self._chunks.clear()


async def open_ramdisk(
    cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool
) -> BackingStore:
    text = os.environ.get(LIMIT_ENV)
    try:
        limit = parse_size(text) if text else default_limit()
    except ValueError:
        raise ValueError(f"{LIMIT_ENV}={text!r}: expected a size such as 512M") from None
    return RamDiskStore(cfg.size, limit, read_only=cfg.read_only)


#: what the entry point ``pyscst.handlers: ramdisk`` names
PLUGIN = Plugin(
    api_version=API_VERSION,
    handlers=(
        HandlerInfo(
            "vdisk_ramdisk",
            "SBC disk in the daemon's memory, capped by PYSCST_RAMDISK_MAX_MEMORY (plugin)",
            "disk",
            PathRule.NONE,
            (512, 4096),
            open_ramdisk,
            build_disk,
            file_backed=False,
        ),
    ),
)
