"""Commands the middle level answers itself, whatever the device type.

SCST's core, not its device handlers, owns REPORT LUNS, reservations, the
target port groups (ALUA) and the reports about what the LU supports; they
live in this table and are merged with the device handler's table per LU, so
CDB checking and REPORT SUPPORTED OPERATION CODES treat both alike. REPORT
LUNS is answered by the session (it depends on the initiator's LUN map); its
row here serves CDB checking and RSOC.
"""

from __future__ import annotations

from typing import Any

from pyscst.actors.alua_handlers import alua_specs
from pyscst.actors.pr_handlers import pr_specs
from pyscst.scsi.cdb import OpFlags, OpSpec, OpTable, ResvClass, build_report_tmf, build_rsoc
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.opcodes import MaintenanceIn, Op

#: task management functions the session and LU implement (actors/session.py)
SUPPORTED_TMFS = {
    "ABORT_TASK",
    "ABORT_TASK_SET",
    "CLEAR_ACA",
    "CLEAR_TASK_SET",
    "LOGICAL_UNIT_RESET",
    "TARGET_RESET",
    "QUERY_TASK",
    "QUERY_TASK_SET",
    "QUERY_ASYNCHRONOUS_EVENT",
    "I_T_NEXUS_RESET",
}


def _lu(ctx: ExecContext) -> Any:
    return ctx.lu  # type: ignore[attr-defined]


async def _report_luns(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    raise AssertionError("REPORT LUNS is answered by the session")


async def _rsoc(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    return build_rsoc(_lu(ctx).table(device), cmd.cdb)


async def _report_tmf(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    return build_report_tmf(cmd.cdb, SUPPORTED_TMFS)


async def _reserve(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    await _lu(ctx).reserve(ctx.nexus)
    return None


async def _release(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    await _lu(ctx).release(ctx.nexus)
    return None


def _mask(*values: int) -> bytes:
    return bytes(values)


CORE_TABLE = OpTable(
    [
        OpSpec(
            Op.REPORT_LUNS, None, "REPORT LUNS", 12,
            _mask(Op.REPORT_LUNS, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00),
            DataDirection.READ, _report_luns, OpFlags.UA_EXEMPT, ResvClass.ALLOWED,
        ),
        OpSpec(
            Op.MAINTENANCE_IN, MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES,
            "REPORT SUPPORTED OPERATION CODES", 12,
            _mask(Op.MAINTENANCE_IN, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0),
            DataDirection.READ, _rsoc, OpFlags.NONE, ResvClass.ALLOWED,
        ),
        OpSpec(
            Op.MAINTENANCE_IN, MaintenanceIn.REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS,
            "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", 12,
            _mask(Op.MAINTENANCE_IN, 0x0D, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0),
            DataDirection.READ, _report_tmf, OpFlags.NONE, ResvClass.ALLOWED,
        ),
        OpSpec(
            Op.RESERVE_6, None, "RESERVE(6)", 6, _mask(Op.RESERVE_6, 0, 0, 0, 0, 0),
            DataDirection.NONE, _reserve, OpFlags.NONE, ResvClass.SPECIAL,
        ),
        OpSpec(
            Op.RELEASE_6, None, "RELEASE(6)", 6, _mask(Op.RELEASE_6, 0, 0, 0, 0, 0),
            DataDirection.NONE, _release, OpFlags.NONE, ResvClass.ALLOWED,
        ),
        OpSpec(
            Op.RESERVE_10, None, "RESERVE(10)", 10,
            _mask(Op.RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0),
            DataDirection.NONE, _reserve, OpFlags.NONE, ResvClass.SPECIAL,
        ),
        OpSpec(
            Op.RELEASE_10, None, "RELEASE(10)", 10,
            _mask(Op.RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0),
            DataDirection.NONE, _release, OpFlags.NONE, ResvClass.ALLOWED,
        ),
        *pr_specs(),
        *alua_specs(),
    ]
)  # fmt: skip
