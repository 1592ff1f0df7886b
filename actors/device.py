"""The device-handler actor: owns one backing store and the device emulation on it.

It opens the store when it starts (creating a sparse file on first start),
and flushes and closes it when it stops, whatever the reason, so a clean
shutdown or a supervisor restart never loses acknowledged writes. Commands
reach the device through the LU, which asks ``current()`` for it; while the
actor is down that answers NOT READY instead of touching a closed file
(04/00 while its supervisor restarts it, ``offline`` once it has retired it:
actors/device_unit.py). INQUIRY and REQUEST SENSE keep working while it
is down through ``standby()``: the last device, which still knows its
identity and why it is not ready.
Live admin edits (resize, read-only, a loaded image) arrive as messages on its
mailbox, and it remembers them so a restart reopens the store as last
configured; an ejected medium stays ejected across a restart (PREVENT does
not survive it: to the initiators a restart is a reset), and a block device's
record of what its store deallocated (for GET LBA STATUS) carries over.
While it runs it checks once a second that its backing file is still the
file it serves (devices/store_health.py); ``on_trouble`` hears when not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from pyscst.actors.drive_link import ActorDriveLink, PeerLookup
from pyscst.actors.faults import CrashDevice, DeviceCrashed
from pyscst.actors.messages import (
    ChangeMedium,
    Envelope,
    OperateLibrary,
    ResizeDevice,
    SetDeviceReadOnly,
    reply_to,
)
from pyscst.devices.backend import BackendConnector
from pyscst.devices.changer import ChangerDevice
from pyscst.devices.device_config import DeviceConfig
from pyscst.devices.device_type import DeviceType
from pyscst.devices.direct import DirectStore
from pyscst.devices.guarded_store import GuardedStore
from pyscst.devices.io_engine import SubmissionBatch
from pyscst.devices.passthrough import BackendStore, PassthroughDevice, open_backend
from pyscst.devices.range_set import RangeSet
from pyscst.devices.registry import HANDLERS, PathRule
from pyscst.devices.store_health import CHECK_INTERVAL
from pyscst.devices.stores import BackingStore, FileStore
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status

log = logging.getLogger(__name__)

#: what a device being restarted answers (its supervisor brings it back soon)
RESTARTING = Sense.of(SenseKey.NOT_READY, Asc.LUN_NOT_READY_CAUSE_NOT_REPORTABLE)
#: how long an admin request waits for the actor's answer (seconds)
REQUEST_TIMEOUT = 30.0


async def open_store(
    cfg: DeviceConfig, roots: Sequence[Path] | None = None, grow: bool = True
) -> BackingStore:
    """The device's store, as its handler's registration opens it; a file
    path must lie below ``roots`` (state_dir and allowed_dirs) and is opened
    without following symlinks (devices.confine)."""
    return await HANDLERS[cfg.handler].open_store(cfg, roots, grow)


class DeviceActor:
    """Supervised owner of one device's backing store."""

    def __init__(
        self,
        cfg: DeviceConfig,
        roots: Sequence[Path] | None = None,
        grow: bool = True,
        peers: PeerLookup | None = None,
        backends: BackendConnector | None = None,
        io_batch: SubmissionBatch | None = None,
    ) -> None:
        self.name = f"device {cfg.name}"
        self.cfg = cfg
        #: the daemon's submission batch, handed to every store this actor
        #: opens (its connections submit the ring's requests per chunk)
        self._io_batch = io_batch
        #: how a pass-through device reaches an iSCSI backend (the daemon's:
        #: transports/iscsi/backend.py); None: only SG_IO backends
        self._backends = backends
        #: where the backing file may be (state_dir and allowed_dirs)
        self._roots = tuple(roots) if roots is not None else None
        #: may the first open extend an existing, smaller file? (no for admin
        #: adds without --grow); later opens restore the size it already had
        self._grow = grow
        self._device: DeviceType | None = None
        self._standby: DeviceType | None = None
        self._store: BackingStore | None = None
        self._mailbox_send, self._mailbox_recv = trio.open_memory_channel[Envelope[Any]](16)
        self._crash_listeners: list[Callable[[], None]] = []
        self._crash_pending = False
        #: the sense commands get while the actor is down and retired (offline);
        #: None while it runs or is being restarted
        self.offline: Sense | None = None
        #: told (atomically) what is wrong with the backing file when a check finds it
        self.on_trouble: Callable[[str], None] | None = None
        #: the size the backing file had when last served (a reopen that finds
        #: it shorter says so: the missing tail comes back as zeros)
        self._served_size = 0
        #: the other devices by name (a medium changer reaches its drives so)
        self._peers = peers
        #: a block device's deallocated ranges when its store last closed: the
        #: reopened store serves them on (nothing wrote the device in between)
        self._deallocated: tuple[str, RangeSet] | None = None

    @property
    def mailbox(self) -> trio.MemorySendChannel[Envelope[Any]]:
        return self._mailbox_send

    @property
    def running(self) -> bool:
        return self._device is not None

    def on_crash(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (atomically, no await) whenever this actor crashes."""
        self._crash_listeners.append(listener)

    def crash(self) -> bool:
        """Fault injection: make the actor fail so its supervisor restarts it.
        False when it is not running (nothing to crash)."""
        if self._crash_pending:
            return True  # one crash is on its way: every command hitting it ends with it
        if self._device is None:
            return False
        reply, _ = trio.open_memory_channel[Any](1)
        try:
            self._mailbox_send.send_nowait(Envelope(CrashDevice(), reply))
        except trio.WouldBlock:
            log.warning("%s: mailbox full, crash not injected", self.name)
            return False
        self._crash_pending = True
        return True

    def current(self) -> DeviceType:
        device = self._device
        if device is None:
            raise ScsiError(Status.CHECK_CONDITION, self.offline or RESTARTING)
        return device

    def standby(self) -> DeviceType | None:
        """While down: the last device, for INQUIRY and REQUEST SENSE (which
        then reports why it is not ready). None if it never started."""
        device = self._standby
        if device is not None:
            device.unavailable = self.offline or RESTARTING
        return device

    async def request(self, message: Any) -> object:
        """An admin edit (resize, read-only) or query (a library's inventory): to
        the running actor's mailbox, answered with its result or the exception
        that refused it; while it is down, an edit is kept in the configuration
        it will reopen with."""
        if self._device is None:
            if isinstance(message, ResizeDevice):
                self.cfg = attrs.evolve(self.cfg, size=message.size)
            elif isinstance(message, SetDeviceReadOnly):
                self.cfg = attrs.evolve(self.cfg, read_only=message.read_only)
            return None
        reply_send, reply_recv = trio.open_memory_channel[Any](1)
        await self._mailbox_send.send(Envelope(message, reply_send))
        # (an actor that crashes or goes offline before it gets to the request
        # must not hang the admin plane, which holds its edit lock meanwhile)
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                result: object = await reply_recv.receive()
            except trio.EndOfChannel:
                return ValueError(f"{self.name} stopped before it answered")
            return result
        return TimeoutError(f"{self.name} did not answer within {REQUEST_TIMEOUT:g} s")

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        self._warn_if_shrunk(cfg)
        store: BackingStore
        if HANDLERS[cfg.handler].backend:
            store = open_backend(cfg, self._backends)
        else:
            store = await open_store(cfg, self._roots, self._grow)
        self._store = store
        self._adopt(store)
        if isinstance(store, FileStore):  # (which engine: the startup log names it)
            log.info("%s: io engine %s", self.name, store.engine_note)
        kept, self._deallocated = self._deallocated, None
        if isinstance(store, DirectStore) and kept is not None and kept[0] == store.path:
            store.deallocated = kept[1]
        elif isinstance(store, GuardedStore):  # a plugin's bug crashes this actor
            store.on_fault = self.crash
        self._grow = True
        self._crash_pending = False
        try:
            device = HANDLERS[cfg.handler].build(cfg, store)
            if self._standby is not None:  # a restart: the medium as it was
                device.medium.carry_over(self._standby.medium)
            self._device = device
            self._served_size = store.size
            log.info(
                "%s: %s, %d bytes, block size %d%s",
                self.name,
                cfg.handler,
                store.size,
                cfg.block_size,
                " (read-only)" if cfg.read_only else "",
            )
            task_status.started()
            crashed = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_backing_file)
                device = self._device
                if isinstance(device, ChangerDevice) and self._peers is not None:
                    peers = self._peers
                    device.attach_drives(
                        {n: ActorDriveLink(n, peers) for n in device.library.layout.drives}
                    )
                    nursery.start_soon(device.restore_drives)
                if isinstance(store, BackendStore) and isinstance(device, PassthroughDevice):
                    # the backend's actor: a child of this one, supervised with it
                    nursery.start_soon(store.backend.run, device.on_connect)
                async for envelope in self._mailbox_recv:
                    if isinstance(envelope.message, CrashDevice):
                        crashed = True
                        break
                    try:
                        result = await self._handle(envelope.message)
                    except Exception as exc:  # the requester reports it; the device lives on
                        log.warning("%s: %r refused: %s", self.name, envelope.message, exc)
                        reply_to(envelope.reply, exc)
                    except BaseException:
                        # stopped mid-request (offline, shutdown): the requester
                        # hears at once that no answer comes, not after its timeout
                        envelope.reply.close()
                        raise
                    else:
                        reply_to(envelope.reply, result)
                nursery.cancel_scope.cancel()
            if crashed:
                raise DeviceCrashed(f"{self.name}: crash injected")
        except Exception:
            for listener in self._crash_listeners:
                listener()
            raise
        finally:
            self._standby = self._device
            self._device = None
            store = self._store or store
            self._store = None
            if isinstance(store, DirectStore) and store.block_device:
                self._deallocated = (store.path, store.deallocated)
            with trio.CancelScope(shield=True):
                try:
                    await store.flush()
                except OSError as exc:  # e.g. the file went away: the rest still closes
                    log.warning("%s: flush on close failed: %s", self.name, exc)
                finally:
                    await store.close()

    def _warn_if_shrunk(self, cfg: DeviceConfig) -> None:
        """A reopen after the backing file was truncated grows it back with
        zeros (the blocks are gone either way): say so, once, loudly."""
        if not self._served_size or cfg.path is None or not HANDLERS[cfg.handler].file_backed:
            return
        try:
            actual = os.stat(cfg.path).st_size
        except OSError:
            actual = 0
        if actual < min(self._served_size, cfg.size):
            log.warning(
                "%s: backing file %s holds %d bytes, it held %d when last served: "
                "the missing blocks now read as zeros",
                self.name, cfg.path, actual, self._served_size,
            )  # fmt: skip

    def _adopt(self, store: BackingStore) -> None:
        """A store this actor opened: named after it in logs, and its ring
        (if any) submitted by the daemon's batch."""
        if isinstance(store, FileStore):
            store.label = self.name
            if store.engine is not None:
                store.engine.label = self.name
            if self._io_batch is not None:
                store.use_batch(self._io_batch)

    async def _load_image(self, device: DeviceType, path: Path) -> bool:
        """The operator loads another image: open it (confined like any
        backing file), hand it to the device, close the one it replaces."""
        if HANDLERS[self.cfg.handler].path is not PathRule.IMAGE:
            raise ValueError(f"{self.cfg.handler}: the medium is the backing file; no path")
        cfg = attrs.evolve(self.cfg, path=path)
        image = await open_store(cfg, self._roots, grow=False)
        self._adopt(image)
        old = self._store
        try:
            changed = device.load(image)
        except BaseException:
            with trio.CancelScope(shield=True):
                await image.close()
            raise
        self._store, self.cfg = image, cfg
        if old is not None and old is not image:
            with trio.CancelScope(shield=True):
                await old.close()
        log.info("%s: image %s loaded", self.name, path)
        return changed

    async def _watch_backing_file(self) -> None:
        """Once a second, one fstat: is the backing file truncated or unlinked?"""
        while True:
            await trio.sleep(CHECK_INTERVAL)
            store = self._store
            problem = store.problem() if isinstance(store, FileStore) else None
            if problem is not None:
                log.warning("%s: %s", self.name, problem)
                if self.on_trouble is not None:
                    self.on_trouble(problem)
                return

    def last_device(self) -> DeviceType | None:
        """The device, running or last run (its identity), None if it never ran."""
        return self._device or self._standby

    def backend_state(self) -> str | None:
        """A pass-through device's backend: where, and up or down (and why)."""
        device = self.last_device()
        return device.backend.describe() if isinstance(device, PassthroughDevice) else None

    def medium_present(self) -> bool | None:
        """Is there a medium in the device (None: it never ran)?"""
        device = self._device or self._standby
        return None if device is None else device.medium.present

    async def change_medium(
        self, load: bool, path: Path | None = None, forget: bool = False
    ) -> bool:
        """Eject or load (the operator's): True if the medium's presence changed.
        Raises what refused it: ValueError (not removable, device down) or
        MediumLocked (an initiator holds PREVENT ALLOW MEDIUM REMOVAL)."""
        if self._device is None:
            raise ValueError(f"{self.name} is not running")
        reply_send, reply_recv = trio.open_memory_channel[Any](1)
        message = ChangeMedium(load, path, forget)
        await self._mailbox_send.send(Envelope(message, reply_send))
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                result = await reply_recv.receive()
            except trio.EndOfChannel:
                raise ValueError(f"{self.name} stopped before it answered") from None
            if isinstance(result, Exception):
                raise result
            return bool(result)
        raise ValueError(f"{self.name} did not answer within {REQUEST_TIMEOUT:g} s")

    async def _handle(self, message: Any) -> object:
        device = self._device
        assert device is not None
        if isinstance(message, ChangeMedium):
            if message.path is not None:
                return await self._load_image(device, message.path)
            changed = device.load() if message.load else device.eject()
            if message.forget and not message.load:
                # a restart reopens cfg.path: it must not bring this medium back
                self.cfg = attrs.evolve(self.cfg, path=None)
            if changed:
                log.info("%s: medium %s", self.name, "loaded" if message.load else "ejected")
            return changed
        if isinstance(message, OperateLibrary):
            if not isinstance(device, ChangerDevice):
                raise ValueError(f"{self.name} is a {self.cfg.handler} device, not a vchanger")
            if message.action == "list":
                return device.inventory()
            return await device.operate(message.action, message.barcode, **dict(message.options))
        if isinstance(message, ResizeDevice):
            await device.resize(message.size)
            self.cfg = attrs.evolve(self.cfg, size=device.store.size)
            log.info("%s: resized to %d bytes", self.name, device.store.size)
        elif isinstance(message, SetDeviceReadOnly):
            if not message.read_only and not HANDLERS[self.cfg.handler].writable:
                raise ValueError(f"{self.cfg.handler} devices are always read-only")
            store = self._store
            assert store is not None
            if not message.read_only and store.read_only:
                # the store was opened read-only: reopen it writable first
                writable = await open_store(attrs.evolve(self.cfg, read_only=False), self._roots)
                self._adopt(writable)
                device.store, self._store = writable, writable
                with trio.CancelScope(shield=True):
                    await store.close()
            device.read_only = message.read_only
            self.cfg = attrs.evolve(self.cfg, read_only=message.read_only)
            log.info("%s: %s", self.name, "read-only" if message.read_only else "writable")
        else:
            raise ValueError(f"unknown request {message!r}")
        return None
