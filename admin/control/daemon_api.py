"""What the control plane needs of the running daemon, as a protocol.

The admin operations act on the daemon that composes the actor tree
(``supervision/daemon.py``), which itself builds the control server: typing
the operations against that class made the two packages import each other.
The daemon satisfies this protocol structurally (mypy checks it where the
daemon hands itself to ``Controller``), so the control plane stays below it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pyscst.actors.device import DeviceActor
from pyscst.actors.device_unit import DeviceUnit
from pyscst.actors.faults import FaultEngine
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.supervisor import Child
from pyscst.actors.target import TargetDirectory
from pyscst.admin.config.model import Config, DeviceConfig
from pyscst.admin.control.server import OpHandler
from pyscst.transports.iscsi.portal import IscsiPortal


class DaemonApi(Protocol):
    """The running tree's handles and the edits the admin plane applies to it."""

    config: Config
    config_path: Path | None
    devices: dict[str, DeviceActor]
    units: dict[str, LogicalUnit]
    directory: TargetDirectory
    faults: FaultEngine
    control_ops: dict[str, OpHandler]
    #: device name -> the supervisor child running its DeviceUnit
    unit_children: dict[str, Child]
    #: configured address -> its listener
    portal_index: dict[tuple[str, int], tuple[IscsiPortal, Child]]

    async def add_device(
        self, dcfg: DeviceConfig, *, config: Config | None = None, grow: bool = True
    ) -> None: ...

    def device_unit(self, name: str) -> DeviceUnit | None: ...

    def apply_auth(self) -> None: ...

    async def remove_device(self, name: str) -> None: ...

    async def add_portal(self, host: str, port: int) -> IscsiPortal: ...

    async def remove_portal(self, host: str, port: int) -> None: ...

    def offer_iscsi_settings(self) -> None: ...
