"""The device-handler actor: owns one backing store and the device emulation on it.

It opens the store when it starts (creating a sparse file on first start),
and flushes and closes it when it stops, whatever the reason, so a clean
shutdown or a supervisor restart never loses acknowledged writes. Commands
reach the device through the LU, which asks ``current()`` for it; while the
actor is down that answers NOT READY instead of touching a closed file.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio

from admin.config_model import DeviceConfig, Handler
from devices.disk import DiskDevice
from devices.stores import BackingStore, FileStore, NullStore
from scsi.sense import Asc, ScsiError, SenseKey

log = logging.getLogger(__name__)


async def open_store(cfg: DeviceConfig) -> BackingStore:
    if cfg.handler is Handler.VDISK_NULLIO:
        return NullStore(cfg.size, read_only=cfg.read_only)
    assert cfg.path is not None
    cfg.path.parent.mkdir(parents=True, exist_ok=True)
    return await FileStore.open(cfg.path, size=cfg.size, read_only=cfg.read_only)


class DeviceActor:
    """Supervised owner of one device's backing store."""

    def __init__(self, cfg: DeviceConfig) -> None:
        self.name = f"device {cfg.name}"
        self.cfg = cfg
        self._device: DiskDevice | None = None

    def current(self) -> DiskDevice:
        device = self._device
        if device is None:
            raise ScsiError.check(SenseKey.NOT_READY, Asc.LUN_NOT_READY_CAUSE_NOT_REPORTABLE)
        return device

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        store = await open_store(cfg)
        try:
            self._device = DiskDevice(
                cfg.name,
                store,
                block_size=cfg.block_size,
                read_only=cfg.read_only,
                write_cache=cfg.write_cache,
                serial=cfg.serial or None,
            )
            log.info(
                "%s: %s, %d bytes, block size %d%s",
                self.name,
                cfg.handler.value,
                store.size,
                cfg.block_size,
                " (read-only)" if cfg.read_only else "",
            )
            task_status.started()
            await trio.sleep(math.inf)
        finally:
            self._device = None
            with trio.CancelScope(shield=True):
                try:
                    await store.flush()
                finally:
                    await store.close()
