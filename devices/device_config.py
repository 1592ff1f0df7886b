"""What one exported device is: the validated ``[devices.NAME]`` record.

The device actor (``actors/device.py``) opens its backing store from this
record, so it lives below the middle level: the actors never import the admin
plane. The configuration model (``admin/config/model.py``) builds these records
from TOML and re-exports them.
"""

from __future__ import annotations

import enum
from pathlib import Path

import attrs

__all__ = ["DeviceConfig", "Handler"]


class Handler(enum.StrEnum):
    """Device handlers (SCST dev handler names)."""

    VDISK_FILEIO = "vdisk_fileio"  # a regular file or block device
    VDISK_NULLIO = "vdisk_nullio"  # no storage: reads return zeros, writes vanish


@attrs.frozen
class DeviceConfig:
    """One exported device ([devices.NAME])."""

    name: str
    handler: Handler
    size: int  # bytes, a multiple of block_size
    block_size: int = 512
    path: Path | None = None  # absolute; None for vdisk_nullio
    read_only: bool = False
    write_cache: bool = True
    serial: str = ""
    rotational: bool = False
    #: the device's restart budget: more crashes than this within
    #: ``restart_period`` seconds and it goes offline (actors/device_unit.py)
    max_restarts: int = 5
    restart_period: float = 60.0

    @property
    def block_count(self) -> int:
        return self.size // self.block_size
