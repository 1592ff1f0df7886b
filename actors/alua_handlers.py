"""REPORT / SET TARGET PORT GROUPS rows of the core command table, and their handlers.

The access states belong to the target's port groups (``actors/alua.py``), not
to a device, so these commands join REPORT LUNS and the reservations in
``core_table``. Both reach the groups through the command's own port
(``ScsiCommand.port_group``, set by the session): a target without port
groups has no ALUA, and both commands are then INVALID COMMAND OPERATION
CODE, as SET TPGS is on a target that allows implicit transitions only.
The wire formats and the checks are the sans-I/O half in ``scsi/alua.py``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio

from pyscst.actors.alua import Cause, PortGroup, PortGroups
from pyscst.actors.faults_lu import portal_of
from pyscst.devices.disk_sense import short_data_out
from pyscst.scsi.alua import (
    AccessState,
    parse_set_target_port_groups,
    report_target_port_groups,
    stpg_failed,
)
from pyscst.scsi.cdb import OpFlags, OpSpec, ResvClass, alloc_len
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.opcodes import MaintenanceIn, MaintenanceOut, Op
from pyscst.scsi.sense import ScsiError

_TIMEOUTS = (5, 10)
#: a SET TPGS list longer than a header plus one descriptor per possible group
#: id cannot be valid (each group may be named once): refused before any data moves
MAX_SET_LIST = 4 + 4 * 0xFFFF


def _groups(cmd: ScsiCommand) -> tuple[PortGroup, PortGroups]:
    port = cmd.port_group
    if not isinstance(port, PortGroup):
        raise ScsiError.invalid_opcode()
    return port, port.owner


async def handle_report_tpgs(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    _, groups = _groups(cmd)
    return report_target_port_groups(cmd.cdb, groups.reports(), groups.transition_time)


async def handle_set_tpgs(device: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """Validate the whole list first (nothing changes if any of it is wrong),
    then move every named group; returns once they have all arrived."""
    _, groups = _groups(cmd)
    if not groups.explicit:
        raise ScsiError.invalid_opcode()
    length = alloc_len(cmd.cdb, 6, 4)
    if length == 0:
        return None
    if length > MAX_SET_LIST:
        raise ScsiError.invalid_field_in_cdb(6)
    data = await cmd.receive_data(length)
    if len(data) < length:
        raise short_data_out()
    requests = parse_set_target_port_groups(data, groups.ids())
    nexus = ctx.nexus
    seconds = 0.0
    faults = groups.faults
    if faults is not None and faults.alua_armed:
        now = trio.current_time()
        where = (nexus.initiator_name, groups.target_name, portal_of(cmd.transport), now)
        if faults.on_stpg(*where) is not None:
            raise stpg_failed()
        seconds = faults.transition_delay(*where)
    if seconds <= 0:
        for group_id, state in requests:
            groups.set_state(group_id, state, cause=Cause.EXPLICIT, by=nexus)
        return None
    async def move(group_id: int, state: AccessState) -> None:
        with contextlib.suppress(KeyError):  # the group was removed by a reload meanwhile
            await groups.transition(group_id, state, seconds, cause=Cause.EXPLICIT, by=nexus)

    async with trio.open_nursery() as nursery:
        for group_id, state in requests:
            nursery.start_soon(move, group_id, state)
    return None


def alua_specs() -> list[OpSpec]:
    return [
        OpSpec(
            Op.MAINTENANCE_IN, MaintenanceIn.REPORT_TARGET_PORT_GROUPS,
            "REPORT TARGET PORT GROUPS", 12,
            bytes((Op.MAINTENANCE_IN, 0xE0 | MaintenanceIn.REPORT_TARGET_PORT_GROUPS,
                   0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0)),
            DataDirection.READ, handle_report_tpgs, OpFlags.NONE, ResvClass.ALLOWED,
            timeouts=_TIMEOUTS,
        ),
        OpSpec(
            Op.MAINTENANCE_OUT, MaintenanceOut.SET_TARGET_PORT_GROUPS,
            "SET TARGET PORT GROUPS", 12,
            bytes((Op.MAINTENANCE_OUT, MaintenanceOut.SET_TARGET_PORT_GROUPS,
                   0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0)),
            DataDirection.WRITE, handle_set_tpgs, OpFlags.NONE, ResvClass.WRITE,
            timeouts=_TIMEOUTS,
        ),
    ]  # fmt: skip
