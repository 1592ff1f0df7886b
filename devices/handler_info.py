"""What a handler registration is: :class:`HandlerInfo` and the types it names.

Kept apart from the registry (devices/registry.py) so that the plugin API
(devices/plugin_api.py) can hand these to plugin packages without importing
the registry, which imports the plugins.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from pyscst.devices.device_type import DeviceType
from pyscst.devices.library_store import LibrarySettings
from pyscst.devices.stores import BackingStore


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
    @property
    def library(self) -> LibrarySettings | None: ...


class PathRule(enum.Enum):
    """What a handler's ``path`` key may be."""

    #: a backing file, defaulting to state_dir/<name>.img
    FILE = "file"
    #: no backing file: ``path`` is an error
    NONE = "none"
    #: a read-only image that may be absent (empty or no ``path``: an empty
    #: drive); the size is the image's, and the operator may load another
    IMAGE = "image"
    #: a directory of media (a library's cartridges), defaulting to
    #: state_dir/<name>; no size
    DIRECTORY = "directory"
    #: no ``path`` and no ``size``: the device is another device server's,
    #: named by ``backend`` (pass-through)
    BACKEND = "backend"


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
    #: the device forwards to a backend (``backend`` key): the device actor
    #: connects it (devices/backend.py) instead of calling ``open_store``
    backend: bool = False
