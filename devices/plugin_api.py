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
by a supervised device actor like any built-in one: an exception from its
I/O becomes sense for that command, repeated failures take only that device
offline.

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
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

import attrs

from pyscst.devices.device_type import DeviceType
from pyscst.devices.disk import DiskDevice
from pyscst.devices.handler_info import DeviceSettings, HandlerInfo, PathRule
from pyscst.devices.stores import BackingStore, StoreReadOnlyError

__all__ = [
    "API_VERSION", "ENTRY_POINT_GROUP", "BackingStore", "DeviceSettings", "DeviceType",
    "HandlerInfo", "PathRule", "Plugin", "StoreReadOnlyError", "build_disk", "load_plugins",
]  # fmt: skip

log = logging.getLogger(__name__)

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
    return tuple(plugin.handlers)


def load_plugins(taken: Iterable[str]) -> list[HandlerInfo]:
    """Every handler the installed plugins register, skipping (and logging)
    broken plugins and names already in ``taken``."""
    names = set(taken)
    found: list[HandlerInfo] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            handlers = _load_one(ep)
        except ValueError as exc:
            log.error("handler plugin %s (%s) skipped: %s", ep.name, ep.value, exc)
            continue
        for info in handlers:
            if info.name in names:
                log.error(
                    "handler plugin %s: handler %s already exists; skipped", ep.name, info.name
                )
                continue
            names.add(info.name)
            log.info("handler plugin %s: handler %s (%s)", ep.name, info.name, info.summary)
            found.append(info)
    return found
