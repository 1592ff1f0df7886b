"""How a medium changer reaches its drives: through their actors, by message.

A library's drives are devices of their own (``vtape``), each under its own
supervisor with its own LU. The changer (devices/changer.py) must load and
unload them without touching their state, and devices never import actors,
so the changer's device actor hands it one :class:`ActorDriveLink` per drive.
A link finds the drive's actor and LU by name when it is used (a drive may
start after the changer, restart or be removed meanwhile), sends the drive's
device actor the same ``ChangeMedium`` request the operator's ``device
load``/``eject`` sends (an unload also makes the drive forget the cartridge,
so that a restart of the drive does not bring back one the changer has put
elsewhere), awaits its answer, and on a load tells every nexus
of the drive's LU NOT READY TO READY CHANGE (28/00), as the operator's path
does (admin/control/ops/runtime.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs

from pyscst.devices.changer import DriveOccupied, DriveUnavailable
from pyscst.scsi.inquiry import ascii_field
from pyscst.scsi.sense import Asc

if TYPE_CHECKING:
    from pyscst.actors.device import DeviceActor


class UnitAttentionSink(Protocol):
    """What the link needs of a drive's LU."""

    def unit_attention(self, asc: Asc) -> None: ...


#: a device name -> its device actor and LU (None: no such device now)
PeerLookup = Callable[[str], "tuple[DeviceActor, UnitAttentionSink] | None"]


@attrs.frozen
class ActorDriveLink:
    """One drive of a library, as its changer sees it."""

    name: str
    peers: PeerLookup

    def _peer(self) -> tuple[DeviceActor, UnitAttentionSink]:
        peer = self.peers(self.name)
        if peer is None:
            raise DriveUnavailable(f"drive {self.name} does not exist")
        if not peer[0].running:
            raise DriveUnavailable(f"drive {self.name} is not running")
        return peer

    async def load(self, cartridge: Path) -> None:
        actor, lu = self._peer()
        if actor.medium_present():
            raise DriveOccupied(f"drive {self.name} already holds a medium")
        try:
            changed = await actor.change_medium(True, cartridge)
        except ValueError:
            if not actor.running:  # it went down while we asked
                raise DriveUnavailable(f"drive {self.name} went down") from None
            raise
        if changed:
            lu.unit_attention(Asc.NOT_READY_TO_READY_CHANGE)

    async def unload(self) -> None:
        actor, _ = self._peer()
        try:
            await actor.change_medium(False, forget=True)
        except ValueError:
            if not actor.running:
                raise DriveUnavailable(f"drive {self.name} went down") from None
            raise

    def available(self) -> bool:
        peer = self.peers(self.name)
        return peer is not None and peer[0].running

    def holds(self) -> Path | None:
        peer = self.peers(self.name)
        if peer is None or not peer[0].medium_present():
            return None
        return peer[0].cfg.path

    def identifier(self) -> bytes | None:
        peer = self.peers(self.name)
        if peer is None:
            return None
        actor = peer[0]
        device = actor.last_device()
        if device is None:
            return None
        inquiry = device.inquiry
        return (ascii_field(inquiry.vendor, 8) + ascii_field(inquiry.product, 16)
                + ascii_field(actor.cfg.serial, 16))  # fmt: skip
