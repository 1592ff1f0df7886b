"""The handler plugin API: how a package outside pyscst adds a handler.

SCST serves device kinds it does not ship through user-space handlers; here a
handler (a device type, a store, or both) can live in another installed
package. The package declares an entry point in the group ``pyscst.handlers``
whose object is a :class:`Plugin`::

    [project.entry-points."pyscst.handlers"]
    ramdisk = "pyscst_ramdisk:PLUGIN"

The daemon reads the group once, when the registry is built at start
(devices/registry.py). A plugin whose ``api_version`` differs from
:data:`API_VERSION`, whose import or object is broken, or whose handler name
is already taken is logged and skipped; the daemon starts without it, and a
configuration naming its handler gets the usual "unknown handler" error at
``devices.NAME.handler``. At run time a plugin's store and device are served
by a supervised device actor like any built-in one. Its store should fail
with OSError (mapped to sense like a file's: ENOSPC is 27/07, EIO a medium
error); any other exception is a bug: the command ends with 44/00 and the
device actor crashes and is restarted by its supervisor, and once its
restart budget is spent the device goes offline (devices/guarded_store.py).

Stability promise for ``API_VERSION = 1``: the names exported here
(:class:`Plugin`, :class:`HandlerInfo`, :class:`PathRule`,
:class:`DeviceSettings`, :class:`BackingStore`, :class:`DeviceType`,
:func:`build_disk`, :class:`StoreReadOnlyError`) keep their meaning and
fields; fields added later get defaults. Anything that breaks a plugin raises
the version, and a plugin built for another version is refused, never half
loaded. Plugin-specific settings are not configuration keys in version 1 (a
plugin reads its own environment or files).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import attrs

from pyscst.devices.device_type import DeviceType
from pyscst.devices.disk import DiskDevice
from pyscst.devices.guarded_store import GuardedStore
from pyscst.devices.handler_info import DeviceSettings, HandlerInfo, PathRule
from pyscst.devices.stores import BackingStore, StoreReadOnlyError

__all__ = [
    "API_VERSION", "ENTRY_POINT_GROUP", "BackingStore", "DeviceSettings", "DeviceType",
    "HandlerInfo", "Note", "PathRule", "Plugin", "StoreReadOnlyError", "build_disk", "load_plugins",
]  # fmt: skip

#: the version of this API; a plugin must declare the same
API_VERSION = 1
#: the entry-point group plugins register in
ENTRY_POINT_GROUP = "pyscst.handlers"


@attrs.frozen
class Plugin:
    """What an entry point of ``pyscst.handlers`` names."""

    #: the API_VERSION the plugin was written for
    api_version: int
    #: the handlers it adds (each a device type over a store)
    handlers: tuple[HandlerInfo, ...]


def build_disk(cfg: DeviceSettings, store: BackingStore) -> DeviceType:
    """An SBC disk over ``store``, configured as the built-in vdisk handlers are
    (a plugin that only adds a store uses this as its ``build``)."""
    physical = cfg.physical_block_size or cfg.block_size
    return DiskDevice(
        cfg.name,
        store,
        block_size=cfg.block_size,
        read_only=cfg.read_only,
        write_cache=cfg.write_cache,
        serial=cfg.serial or None,
        removable=cfg.removable,
        rotational=cfg.rotational,
        lbppbe=(physical // cfg.block_size).bit_length() - 1,
    )


def _load_one(ep: EntryPoint) -> tuple[HandlerInfo, ...]:
    """The handlers of one entry point; raises ValueError saying why not."""
    try:
        plugin = ep.load()
    except Exception as exc:  # a plugin's import may raise anything
        raise ValueError(f"import failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(plugin, Plugin):
        raise ValueError(f"{ep.value} is a {type(plugin).__name__}, not a pyscst Plugin")
    if plugin.api_version != API_VERSION:
        raise ValueError(
            f"written for plugin API version {plugin.api_version}, this pyscst has {API_VERSION}"
        )
    if not all(isinstance(h, HandlerInfo) for h in plugin.handlers):
        raise ValueError("handlers must be HandlerInfo rows")
    return tuple(_guarded(info, ep.name) for info in plugin.handlers)


def _guarded(info: HandlerInfo, plugin: str) -> HandlerInfo:
    """``info`` with its store behind a guard (devices/guarded_store.py)."""
    opener = info.open_store

    async def open_guarded(
        cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool
    ) -> BackingStore:
        return GuardedStore(await opener(cfg, roots, grow), plugin)

    return attrs.evolve(info, open_store=open_guarded)


#: (logging level, message): what loading the plugins found, for the daemon
#: to log once logging is set up (the registry loads them at import)
Note = tuple[int, str]


def load_plugins(taken: Iterable[str]) -> tuple[list[HandlerInfo], list[Note]]:
    """Every handler the installed plugins register, skipping broken plugins
    and names already in ``taken``; and the notes saying what was loaded or
    skipped and why."""
    names = set(taken)
    found: list[HandlerInfo] = []
    notes: list[Note] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            handlers = _load_one(ep)
        except ValueError as exc:
            notes.append((logging.ERROR, f"handler plugin {ep.name} ({ep.value}) skipped: {exc}"))
            continue
        for info in handlers:
            if info.name in names:
                notes.append(
                    (logging.ERROR,
                     f"handler plugin {ep.name}: handler {info.name} already exists; skipped")
                )  # fmt: skip
                continue
            names.add(info.name)
            notes.append(
                (logging.INFO, f"handler plugin {ep.name}: handler {info.name} ({info.summary})")
            )
            found.append(info)
    return found, notes
