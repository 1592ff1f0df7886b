"""PERSISTENT RESERVE IN/OUT rows of the core command table, and their handlers.

The LU (not the device handler) owns persistent reservations, so these rows
join REPORT LUNS and RESERVE/RELEASE in ``core_table``. Both commands are
``ResvClass.SPECIAL``: the reservation check only applies the SPC-2 rule
(every PR command conflicts while an SPC-2 reservation exists); the service
actions decide the rest. One row per service action, so an unsupported one
(PRIN 04h..1Fh, PROUT REPLACE LOST RESERVATION) is INVALID FIELD IN CDB.
"""

from __future__ import annotations

from typing import Any

from pyscst.scsi.cdb import OpFlags, OpSpec, ResvClass, alloc_len
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.opcodes import Op, PersistentReserveIn, PersistentReserveOut
from pyscst.scsi.sense import Asc, ScsiError, SenseKey

#: a parameter list longer than this is refused (SPEC_I_PT lists are small)
MAX_PARAMETER_LIST = 1 << 20
_TIMEOUTS = (5, 10)


def _lu(ctx: ExecContext) -> Any:
    return ctx.lu  # type: ignore[attr-defined]


async def handle_prin(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    data: bytes = _lu(ctx).persistent_reserve_in(cmd.cdb)
    return data


async def handle_prout(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    length = alloc_len(cmd.cdb, 5, 4)
    if length > MAX_PARAMETER_LIST:
        raise ScsiError.parameter_list_length_error()
    params = b""
    if length:
        data = await cmd.receive_data(length)
        if len(data) < length:  # the initiator expects to send less than the CDB says
            raise ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_INFORMATION_UNIT)
        params = bytes(data)
    await _lu(ctx).persistent_reserve_out(ctx.nexus, cmd.cdb, params)
    return None


def pr_specs() -> list[OpSpec]:
    """One row per PRIN and PROUT service action."""
    prin = [
        OpSpec(
            Op.PERSISTENT_RESERVE_IN,
            int(sa),
            f"PERSISTENT RESERVE IN ({sa.name})",
            10,
            bytes((Op.PERSISTENT_RESERVE_IN, sa, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0)),
            DataDirection.READ,
            handle_prin,
            OpFlags.NONE,
            ResvClass.SPECIAL,
            timeouts=_TIMEOUTS,
        )
        for sa in PersistentReserveIn
    ]
    prout = [
        OpSpec(
            Op.PERSISTENT_RESERVE_OUT,
            int(sa),
            f"PERSISTENT RESERVE OUT ({sa.name})",
            10,
            bytes((Op.PERSISTENT_RESERVE_OUT, sa, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0)),
            DataDirection.WRITE,
            handle_prout,
            OpFlags.NONE,
            ResvClass.SPECIAL,
            timeouts=_TIMEOUTS,
        )
        for sa in PersistentReserveOut
        if sa != PersistentReserveOut.REPLACE_LOST_RESERVATION
    ]
    return prin + prout
