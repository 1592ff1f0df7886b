"""A plugin's store behind a guard: a bug in it crashes its device, nothing else.

Why: built-in stores fail with OSError, which the disk maps to sense
(devices/disk_sense.py). A handler plugin's store is code we did not write;
any other exception from it is a bug, and a store with a bug should not keep
answering as if healthy. The guard lets the exception through (the command
ends with HARDWARE ERROR, INTERNAL TARGET FAILURE, 44/00, as for any handler
bug) and calls ``on_fault``, which the device actor sets to its own
``crash``: the device's supervisor then restarts it, reopening the store,
and once the device's restart budget (``max_restarts``) is spent the device
goes offline (actors/device_unit.py). The daemon and every other device go on.
"""

from __future__ import annotations

from collections.abc import Callable

from pyscst.devices.stores import BackingStore, Extent
from pyscst.scsi.command import Buffer


class GuardedStore:
    """Delegates to a plugin's store; reports any non-OSError exception."""

    def __init__(self, inner: BackingStore, plugin: str) -> None:
        self.inner = inner
        self.plugin = plugin
        #: called (no await) when the plugin's store raised a bug
        self.on_fault: Callable[[], object] | None = None
        self.faults = 0

    def _fault(self) -> None:
        self.faults += 1
        if self.on_fault is not None:
            self.on_fault()

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def read_only(self) -> bool:
        return self.inner.read_only

    def read_now(self, offset: int, buf: memoryview) -> bool:
        try:
            return self.inner.read_now(offset, buf)
        except OSError:
            raise
        except Exception:
            self._fault()
            raise

    async def readinto(self, offset: int, buf: memoryview) -> None:
        try:
            await self.inner.readinto(offset, buf)
        except OSError:
            raise
        except Exception:
            self._fault()
            raise

    def write_now(self, offset: int, data: Buffer) -> bool:
        try:
            return self.inner.write_now(offset, data)
        except OSError:
            raise
        except Exception:
            self._fault()
            raise

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        try:
            await self.inner.write(offset, data, fua)
        except OSError:
            raise
        except Exception:
            self._fault()
            raise

    async def flush(self) -> None:
        try:
            await self.inner.flush()
        except OSError:
            raise
        except Exception:
            self._fault()
            raise

    async def discard(self, offset: int, length: int) -> None:
        try:
            await self.inner.discard(offset, length)
        except OSError:
            raise
        except Exception:
            self._fault()
            raise

    async def extents(self, offset: int, length: int, limit: int) -> list[Extent]:
        try:
            return await self.inner.extents(offset, length, limit)
        except OSError:
            raise
        except Exception:
            self._fault()
            raise

    async def resize(self, size: int) -> None:
        await self.inner.resize(size)  # (ValueError: the operator's request refused)

    async def close(self) -> None:
        await self.inner.close()
