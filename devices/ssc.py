"""The SSC command set of the virtual tape drive: its handlers and table rows.

The rows overlay the shared SPC layer (devices/spc.py). Every row that reads,
writes or moves the medium is SERIALIZING: a tape has one position, so its
commands run one at a time in arrival order whatever their task attributes
(two nexuses interleaving commands still see each command whole).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyscst.devices.disk_sense import removal_prevented
from pyscst.devices.medium import MediumLocked
from pyscst.devices.spc import mask, type_table
from pyscst.scsi.cdb import OpFlags, OpSpec, ResvClass
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.sense import ScsiError

if TYPE_CHECKING:
    from pyscst.devices.tape import TapeDevice

F = OpFlags
R = ResvClass
IN = DataDirection.READ
OUT = DataDirection.WRITE
NONE = DataDirection.NONE
_MOTION = (60, 600)

REWIND = 0x01
LOAD_UNLOAD = 0x1B


async def handle_rewind(dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """REWIND: synchronize, then to the beginning of the current partition."""
    await dev.synchronize()
    await dev.motion()
    dev.position = 0
    return None


async def handle_load_unload(
    dev: TapeDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """LOAD UNLOAD: LOAD=1 threads the cartridge at BOP of partition 0;
    LOAD=0 synchronizes, rewinds and unthreads it (EOT and RETEN: refused,
    HOLD: the cartridge stays in the drive either way)."""
    b4 = cmd.cdb[4]
    if b4 & 0x04:
        raise ScsiError.invalid_field_in_cdb(4, 2)  # EOT
    if b4 & 0x02:
        raise ScsiError.invalid_field_in_cdb(4, 1)  # RETEN
    await dev.synchronize()
    await dev.motion()
    if b4 & 0x01:
        try:
            dev.load()
        except MediumLocked:
            raise removal_prevented() from None
    else:
        dev.unload()
    return None


def _specs() -> list[OpSpec]:
    media = F.NEEDS_MEDIUM | F.SERIALIZING
    return [
        OpSpec(REWIND, None, "REWIND", 6, mask("01 01 00 00 00 00"),
               NONE, handle_rewind, media, R.READ, timeouts=_MOTION),
        OpSpec(LOAD_UNLOAD, None, "LOAD UNLOAD", 6, mask("1b 01 00 00 0f 00"),
               NONE, handle_load_unload, F.NEEDS_PRESENT | F.SERIALIZING, R.WRITE,
               timeouts=_MOTION),
    ]  # fmt: skip


#: every command the tape drive answers: SPC layer + these
SSC_TABLE = type_table(_specs())
