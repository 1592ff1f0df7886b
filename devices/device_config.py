"""What one exported device is: the validated ``[devices.NAME]`` record.

The device actor (``actors/device.py``) opens its backing store from this
record, so it lives below the middle level: the actors never import the admin
plane. The configuration model (``admin/config/model.py``) builds these records
from TOML and re-exports them.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from pyscst.devices.backend import BackendSpec
from pyscst.devices.library_store import LibrarySettings

__all__ = ["DeviceConfig"]


@attrs.frozen
class DeviceConfig:
    """One exported device ([devices.NAME])."""

    name: str
    #: a name registered in devices/registry.py (vdisk_fileio, vdisk_nullio, vcdrom)
    handler: str
    size: int  # bytes, a multiple of block_size (0 for vcdrom: its image's)
    block_size: int = 512
    path: Path | None = None  # absolute; None for vdisk_nullio
    read_only: bool = False
    write_cache: bool = True
    serial: str = ""
    rotational: bool = False
    #: RMB: initiators (START STOP UNIT LOEJ) and the operator may eject/load
    removable: bool = False
    #: bytes per physical block (a power-of-two multiple of block_size); 0: block_size
    physical_block_size: int = 0
    #: the device's restart budget: more crashes than this within
    #: ``restart_period`` seconds and it goes offline (actors/device_unit.py)
    max_restarts: int = 5
    restart_period: float = 60.0
    #: how blocking I/O is done: "auto" (io_uring if it works, else worker
    #: threads), "uring" (io_uring or refuse to start), "threads"
    io_engine: str = "auto"
    #: a medium changer's library (``[devices.NAME.library]``; vchanger only)
    library: LibrarySettings | None = None
    #: pass-through devices: where their commands go (devices/backend.py)
    backend: BackendSpec | None = None

    @property
    def block_count(self) -> int:
        return self.size // self.block_size
