"""The handler registry: handler name -> (device type, backing store).

SCST names a device by its handler (``vdisk_fileio``, ``vdisk_nullio``, ...);
here each name is one :class:`HandlerInfo` row that says which device type
it builds, over which store, and what its configuration may say. Config
validation (admin/config/files.py), console completion (admin/client/console/attrs.py),
``pyscst admin`` help and the README's handler table all read this table,
and the device actor builds devices through it, so adding a handler (a new
store under the disk, or a new device type) is one :func:`_register` call
here, or one entry point for a plugin package later.

The registry is built once at import and never changes afterwards.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import attrs

from pyscst.devices.cdrom import CdromDevice, empty_tray
from pyscst.devices.device_type import DeviceType
from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import BackingStore, FileStore, NullStore


class DeviceSettings(Protocol):
    """What a handler reads of a device's configuration (admin's DeviceConfig)."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def path(self) -> Path | None: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def write_cache(self) -> bool: ...
    @property
    def serial(self) -> str: ...
    @property
    def rotational(self) -> bool: ...
    @property
    def removable(self) -> bool: ...
    @property
    def physical_block_size(self) -> int: ...
    @property
    def io_engine(self) -> str: ...


class PathRule(enum.Enum):
    """What a handler's ``path`` key may be."""

    #: a backing file, defaulting to state_dir/<name>.img
    FILE = "file"
    #: no backing file: ``path`` is an error
    NONE = "none"
    #: a read-only image that may be absent (empty or no ``path``: an empty
    #: drive); the size is the image's, and the operator may load another
    IMAGE = "image"


StoreOpener = Callable[[DeviceSettings, Sequence[Path] | None, bool], Awaitable[BackingStore]]
DeviceBuilder = Callable[[DeviceSettings, BackingStore], DeviceType]


@attrs.frozen
class HandlerInfo:
    """One registered handler."""

    name: str
    #: one line for help texts and the README
    summary: str
    #: the device type it builds (SCSI peripheral device type name)
    device_type: str
    path: PathRule
    #: logical block sizes the configuration may choose
    block_sizes: tuple[int, ...]
    open_store: StoreOpener
    build: DeviceBuilder
    #: the store is a file the device actor should watch and may grow
    file_backed: bool
    #: the device may be writable (False: always read-only, e.g. a CD-ROM)
    writable: bool = True
    #: the medium is always removable (a CD-ROM); else only with ``removable``
    removable_medium: bool = False


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


def _lbppbe(cfg: DeviceSettings) -> int:
    """LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT from physical_block_size."""
    physical = cfg.physical_block_size or cfg.block_size
    return (physical // cfg.block_size).bit_length() - 1


def _disk(cfg: DeviceSettings, store: BackingStore) -> DeviceType:
    return DiskDevice(
        cfg.name,
        store,
        block_size=cfg.block_size,
        read_only=cfg.read_only,
        write_cache=cfg.write_cache,
        serial=cfg.serial or None,
        removable=cfg.removable,
        rotational=cfg.rotational,
        lbppbe=_lbppbe(cfg),
    )


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


def _registry(*infos: HandlerInfo) -> Mapping[str, HandlerInfo]:
    table: dict[str, HandlerInfo] = {}
    for info in infos:
        if info.name in table:
            raise ValueError(f"handler {info.name} registered twice")
        table[info.name] = info
    return MappingProxyType(table)


DISK_BLOCK_SIZES = (512, 4096)

#: every handler the daemon knows, by name
HANDLERS: Mapping[str, HandlerInfo] = _registry(
    HandlerInfo(
        "vdisk_fileio", "SBC disk on a file or block device, through the page cache",
        "disk", PathRule.FILE, DISK_BLOCK_SIZES, _open_file, _disk, file_backed=True,
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
)  # fmt: skip


def handler_names() -> list[str]:
    return list(HANDLERS)


def lookup(name: str) -> HandlerInfo:
    """The handler registered as ``name`` (KeyError if none)."""
    return HANDLERS[name]
