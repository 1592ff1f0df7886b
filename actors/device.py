"""The device-handler actor: owns one backing store and the device emulation on it.

It opens the store when it starts (creating a sparse file on first start),
and flushes and closes it when it stops, whatever the reason, so a clean
shutdown or a supervisor restart never loses acknowledged writes. Commands
reach the device through the LU, which asks ``current()`` for it; while the
actor is down that answers NOT READY instead of touching a closed file.
Live admin edits (resize, read-only) arrive as messages on its mailbox, and
it remembers them so a restart reopens the store as last configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

from actors.faults import CrashDevice, DeviceCrashed
from actors.messages import Envelope, ResizeDevice, SetDeviceReadOnly, reply_to
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
        self._store: BackingStore | None = None
        self._mailbox_send, self._mailbox_recv = trio.open_memory_channel[Envelope[Any]](16)
        self._crash_listeners: list[Callable[[], None]] = []

    @property
    def mailbox(self) -> trio.MemorySendChannel[Envelope[Any]]:
        return self._mailbox_send

    def on_crash(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (atomically, no await) whenever this actor crashes."""
        self._crash_listeners.append(listener)

    def crash(self) -> None:
        """Fault injection: make the actor fail so its supervisor restarts it."""
        reply, _ = trio.open_memory_channel[Any](1)
        try:
            self._mailbox_send.send_nowait(Envelope(CrashDevice(), reply))
        except trio.WouldBlock:
            log.warning("%s: mailbox full, crash not injected", self.name)

    def current(self) -> DiskDevice:
        device = self._device
        if device is None:
            raise ScsiError.check(SenseKey.NOT_READY, Asc.LUN_NOT_READY_CAUSE_NOT_REPORTABLE)
        return device

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        store = self._store = await open_store(cfg)
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
            async for envelope in self._mailbox_recv:
                if isinstance(envelope.message, CrashDevice):
                    raise DeviceCrashed(f"{self.name}: crash injected")
                try:
                    await self._handle(envelope.message)
                except Exception as exc:  # the requester reports it; the device lives on
                    log.warning("%s: %r refused: %s", self.name, envelope.message, exc)
                    reply_to(envelope.reply, exc)
                else:
                    reply_to(envelope.reply, None)
        except Exception:
            for listener in self._crash_listeners:
                listener()
            raise
        finally:
            self._device = None
            store = self._store or store
            self._store = None
            with trio.CancelScope(shield=True):
                try:
                    await store.flush()
                finally:
                    await store.close()

    async def _handle(self, message: Any) -> None:
        device = self._device
        assert device is not None
        if isinstance(message, ResizeDevice):
            await device.resize(message.size)
            self.cfg = attrs.evolve(self.cfg, size=device.store.size)
            log.info("%s: resized to %d bytes", self.name, device.store.size)
        elif isinstance(message, SetDeviceReadOnly):
            store = self._store
            assert store is not None
            if not message.read_only and store.read_only:
                # the store was opened read-only: reopen it writable first
                writable = await open_store(attrs.evolve(self.cfg, read_only=False))
                device.store, self._store = writable, writable
                with trio.CancelScope(shield=True):
                    await store.close()
            device.read_only = message.read_only
            self.cfg = attrs.evolve(self.cfg, read_only=message.read_only)
            log.info("%s: %s", self.name, "read-only" if message.read_only else "writable")
        else:
            raise ValueError(f"unknown request {message!r}")
