"""The handler registry: handler name -> (device type, backing store).

SCST names a device by its handler (``vdisk_fileio``, ``vdisk_nullio``, ...);
here each name is one :class:`HandlerInfo` row that says which device type
it builds, over which store, and what its configuration may say. Config
validation (admin/config/files.py), console completion (admin/client/console/attrs.py),
``pyscst admin`` help and the README's handler table all read this table,
and the device actor builds devices through it, so adding a handler (a new
store under the disk, or a new device type) is one :func:`_register` call
here, or one entry point of a plugin package (devices/plugin_api.py).

The registry is built once at import (reading the installed plugins) and
never changes afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import trio

from pyscst.devices.cdrom import CdromDevice, empty_tray
from pyscst.devices.changer import ChangerDevice
from pyscst.devices.confine import dir_beneath
from pyscst.devices.device_type import DeviceType
from pyscst.devices.direct import DirectStore
from pyscst.devices.handler_info import (
    DeviceBuilder,
    DeviceSettings,
    HandlerInfo,
    PathRule,
    StoreOpener,
)
from pyscst.devices.library_store import LibraryStore
from pyscst.devices.passthrough import build_passthrough, no_store
from pyscst.devices.plugin_api import Note, build_disk, load_plugins
from pyscst.devices.stores import BackingStore, FileStore, NullStore
from pyscst.devices.tape import TapeDevice, empty_drive
from pyscst.devices.tape_cartridge import CartridgeError, TapeCartridge, open_cartridge

__all__ = [
    "BUILTIN_HANDLERS", "HANDLERS", "PLUGIN_NOTES", "DeviceBuilder", "DeviceSettings",
    "HandlerInfo", "PathRule", "StoreOpener", "handler_names", "lookup",
]  # fmt: skip


async def _open_file(
    cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool
) -> BackingStore:
    assert cfg.path is not None
    return await FileStore.open(
        cfg.path,
        size=cfg.size,
        read_only=cfg.read_only,
        roots=roots if roots is not None else (cfg.path.parent,),
        grow=grow,
        io_engine=cfg.io_engine,
    )


async def _open_null(
    cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool
) -> BackingStore:
    return NullStore(cfg.size, read_only=cfg.read_only)


async def _open_direct(
    cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool
) -> BackingStore:
    assert cfg.path is not None
    return await DirectStore.open_direct(
        cfg.path,
        key=f"devices.{cfg.name}",
        size=cfg.size,
        block_size=cfg.block_size,
        read_only=cfg.read_only,
        roots=roots if roots is not None else (cfg.path.parent,),
        grow=grow,
        io_engine=cfg.io_engine,
    )


_disk = build_disk


async def _open_image(
    cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool
) -> BackingStore:
    if cfg.path is None:
        return empty_tray()
    return await FileStore.open(
        cfg.path,
        size=None,
        read_only=True,
        create=False,
        roots=roots if roots is not None else (cfg.path.parent,),
        io_engine=cfg.io_engine,
    )


def _cdrom(cfg: DeviceSettings, store: BackingStore) -> DeviceType:
    return CdromDevice(
        cfg.name, store if cfg.path is not None else None, serial=cfg.serial or None
    )


async def _open_cartridge(
    cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool
) -> BackingStore:
    """The cartridge at ``path`` (a cartridge directory), or an empty drive."""
    if cfg.path is None:
        return empty_drive()
    path = cfg.path

    def _open() -> TapeCartridge:
        with dir_beneath(path, roots if roots is not None else (path.parent,)) as walked:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=walked)
        try:
            return open_cartridge(path, dir_fd=fd)  # read_only is the drive's (below)
        except CartridgeError as exc:
            raise ValueError(str(exc)) from None

    return await trio.to_thread.run_sync(_open)


def _tape(cfg: DeviceSettings, store: BackingStore) -> DeviceType:
    cartridge = store if isinstance(store, TapeCartridge) else None
    drive = TapeDevice(cfg.name, cartridge, serial=cfg.serial or None)
    drive.read_only = cfg.read_only
    return drive


async def _open_library(
    cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool
) -> BackingStore:
    settings = cfg.library
    if settings is None or cfg.path is None:
        raise ValueError(f"devices.{cfg.name}: a vchanger needs a library table and a path")
    path = cfg.path
    confined = roots if roots is not None else (path.parent, settings.state_file.parent)
    return await trio.to_thread.run_sync(LibraryStore.open, settings, path, confined)


def _changer(cfg: DeviceSettings, store: BackingStore) -> DeviceType:
    assert isinstance(store, LibraryStore)
    return ChangerDevice(cfg.name, store, serial=cfg.serial or None)


def _registry(*infos: HandlerInfo) -> Mapping[str, HandlerInfo]:
    table: dict[str, HandlerInfo] = {}
    for info in infos:
        if info.name in table:
            raise ValueError(f"handler {info.name} registered twice")
        table[info.name] = info
    return MappingProxyType(table)


DISK_BLOCK_SIZES = (512, 4096)

#: the handlers pyscst itself ships
BUILTIN_HANDLERS = (
    HandlerInfo(
        "vdisk_fileio", "SBC disk on a file or block device, through the page cache",
        "disk", PathRule.FILE, DISK_BLOCK_SIZES, _open_file, _disk, file_backed=True,
    ),
    HandlerInfo(
        "vdisk_blockio", "SBC disk on a block device or file, direct I/O (O_DIRECT, no page cache)",
        "disk", PathRule.FILE, DISK_BLOCK_SIZES, _open_direct, _disk, file_backed=True,
    ),
    HandlerInfo(
        "vdisk_nullio", "SBC disk with no storage: reads return zeros, writes vanish",
        "disk", PathRule.NONE, DISK_BLOCK_SIZES, _open_null, _disk, file_backed=False,
    ),
    HandlerInfo(
        "vcdrom", "CD/DVD-ROM drive with an ISO image (read-only; eject and load live)",
        "cdrom", PathRule.IMAGE, (2048,), _open_image, _cdrom, file_backed=True,
        writable=False, removable_medium=True,
    ),
    HandlerInfo(
        "vtape", "SSC tape drive with a file-backed cartridge (load, eject, changer-driven)",
        "tape", PathRule.IMAGE, (512,), _open_cartridge, _tape, file_backed=False,
        removable_medium=True,
    ),
    HandlerInfo(
        "vchanger", "SMC medium changer of a tape library (its drives are vtape devices)",
        "changer", PathRule.DIRECTORY, (512,), _open_library, _changer, file_backed=False,
        writable=False,
    ),
    HandlerInfo(
        "passthrough", "another device server's LU (an iSCSI target's LUN, or SG_IO), "
        "exported one to many", "passthrough", PathRule.BACKEND, (512,), no_store,
        build_passthrough, file_backed=False, backend=True,
    ),
)  # fmt: skip

#: every handler the daemon knows, by name: the built-in ones, then those of
#: installed plugins (entry points ``pyscst.handlers``, devices/plugin_api.py)
_PLUGINS, _NOTES = load_plugins(info.name for info in BUILTIN_HANDLERS)
HANDLERS: Mapping[str, HandlerInfo] = _registry(*BUILTIN_HANDLERS, *_PLUGINS)
#: what loading the plugins found (logged by the daemon at start)
PLUGIN_NOTES: tuple[Note, ...] = tuple(_NOTES)


def handler_names() -> list[str]:
    return list(HANDLERS)


def lookup(name: str) -> HandlerInfo:
    """The handler registered as ``name`` (KeyError if none)."""
    return HANDLERS[name]
