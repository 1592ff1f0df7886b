"""The session actor's transport-independent half: one I_T nexus and its LUN map.

A target driver (iSCSI connection) owns the wire; this object owns what SAM
says about the nexus: which LUNs this initiator sees (LUN masking), REPORT
LUNS, the answers for LUNs it does not see, and routing of commands and task
management to the logical units. It never touches an LU's state: commands go
through ``LogicalUnit.submit`` and task management through LU mailboxes.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from pyscst.actors.lun import LogicalUnit
from pyscst.actors.messages import (
    AbortTask,
    AbortTaskSet,
    ClearTaskSet,
    NexusLoss,
    QueryTask,
    QueryTaskSet,
    ResetLogicalUnit,
    TmfFunction,
    TmfResponse,
    call,
)
from pyscst.scsi.alua import PortAccess
from pyscst.scsi.command import Nexus, ScsiCommand
from pyscst.scsi.lun import encode_lun
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status

log = logging.getLogger(__name__)

_INQUIRY = 0x12
_REQUEST_SENSE = 0x03
_REPORT_LUNS = 0xA0
_EXTENDED_COPY = 0x83


@attrs.frozen
class LunMapping:
    lu: LogicalUnit
    read_only: bool = False


class Session:
    """One I_T nexus, as the middle level sees it."""

    def __init__(
        self,
        nexus: Nexus,
        luns: Mapping[int, LunMapping],
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        target_reset: Callable[[Nexus, Asc], Awaitable[None]] | None = None,
        report_luns_validator: Callable[[bytes], None] | None = None,
        port_group: PortAccess | None = None,
    ) -> None:
        self.nexus = nexus
        #: the ALUA target port group of this nexus' target port (None: no ALUA);
        #: every command carries it to the LU, which checks it against the state
        self.port_group = port_group
        self.luns = dict(luns)
        self._spawn = spawn
        self._target_reset = target_reset
        self._validate_report_luns = report_luns_validator
        self.closed = False

    # -- commands -------------------------------------------------------------
    def dispatch(self, cmd: ScsiCommand) -> None:
        """Route one command (atomic: never awaits)."""
        cmd.port_group = self.port_group
        opcode = cmd.cdb[0]
        if opcode == _REPORT_LUNS:
            self._spawn(lambda: self._respond(cmd, self._report_luns))
            return
        lun = cmd.lun
        mapping = self.luns.get(lun)
        if mapping is None:
            self._spawn(lambda: self._respond(cmd, self._no_such_lun))
            return
        if opcode == _EXTENDED_COPY:
            cmd.copy_targets = self.copy_target
        try:
            mapping.lu.submit(cmd, lun, mapping.read_only)
        except ScsiError as exc:
            error = exc
            self._spawn(lambda: self._fail(cmd, error))

    def copy_target(self, designation: bytes) -> tuple[object, bool] | None:
        """EXTENDED COPY's resolver: the device among *this nexus'* LUN map
        whose Device Identification page carries ``designation`` (header +
        designator), with the mapping's read-only flag; None when this
        initiator cannot address such an LU (CVE-2020-28374)."""
        for mapping in self.luns.values():
            device = mapping.lu.current_device()
            if device is not None and device.vpd.designates(designation):
                return device, mapping.read_only
        return None

    async def _respond(self, cmd: ScsiCommand, handler: Callable[[ScsiCommand], bytes]) -> None:
        try:
            data = handler(cmd)
        except ScsiError as exc:
            await self._fail(cmd, exc)
            return
        try:
            await cmd.transport.send_response(cmd, Status.GOOD, None, data)
        finally:
            cmd.transport.command_finished(cmd)

    async def _fail(self, cmd: ScsiCommand, exc: ScsiError) -> None:
        sense = exc.sense.encode() if exc.sense is not None else None
        try:
            await cmd.transport.send_response(cmd, exc.status, sense, None)
        finally:
            cmd.transport.command_finished(cmd)

    def _report_luns(self, cmd: ScsiCommand) -> bytes:
        cdb = cmd.cdb
        if self._validate_report_luns is not None:
            self._validate_report_luns(cdb)
        select = cdb[2]
        if select not in (0x00, 0x01, 0x02, 0x10, 0x11, 0x12):
            raise ScsiError.invalid_field_in_cdb(2)
        alloc = struct.unpack_from(">I", cdb, 6)[0]
        if alloc < 16:
            raise ScsiError.invalid_field_in_cdb(6)
        if select in (0x01, 0x10):  # well-known LUNs only: we have none
            numbers: list[int] = []
        elif select == 0x11 and cmd.lun != 0:
            numbers = []
        else:
            numbers = sorted(self.luns)
        body = b"".join(encode_lun(n) for n in numbers)
        data = struct.pack(">II", len(body), 0) + body
        return data[:alloc]

    def _no_such_lun(self, cmd: ScsiCommand) -> bytes:
        op = cmd.cdb[0]
        if op == _INQUIRY:
            cdb = cmd.cdb
            if cdb[1] & 0x01 or cdb[2]:
                raise ScsiError.lun_not_supported()
            alloc = struct.unpack_from(">H", cdb, 3)[0]
            data = bytearray(36)
            data[0] = 0x7F  # peripheral qualifier 011b: no LU here; type 1Fh
            data[2] = 0x06  # SPC-4
            data[3] = 0x02
            data[4] = 31
            return bytes(data[:alloc])
        if op == _REQUEST_SENSE:
            desc = bool(cmd.cdb[1] & 0x01)
            alloc = cmd.cdb[4]
            sense = Sense.of(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED)
            return sense.encode(desc)[:alloc]
        raise ScsiError.lun_not_supported()

    # -- admin edits -----------------------------------------------------------------
    def update_luns(self, luns: Mapping[int, LunMapping]) -> bool:
        """Adopt a new LUN map (a live admin edit; atomic, never awaits).

        When anything changed, every LU still mapped queues REPORTED LUNS DATA
        HAS CHANGED (3F/0E) for this nexus, one whose mapping turned read-only
        or writable also MODE PARAMETERS CHANGED (2A/01: the WP bit MODE SENSE
        reports), and LUs no longer mapped at all forget the nexus (their tasks
        from it end). Returns whether it changed.
        """
        new = dict(luns)
        if self.closed or new == self.luns:
            return False
        old, self.luns = self.luns, new
        kept: dict[int, LogicalUnit] = {id(m.lu): m.lu for m in new.values()}
        for lu in kept.values():
            lu.unit_attention(Asc.REPORTED_LUNS_DATA_HAS_CHANGED, self.nexus)
        for number, mapping in new.items():
            before = old.get(number)
            if before is not None and before.lu is mapping.lu:
                if before.read_only != mapping.read_only:
                    mapping.lu.unit_attention(Asc.MODE_PARAMETERS_CHANGED, self.nexus)
        gone: dict[int, LogicalUnit] = {
            id(m.lu): m.lu for m in old.values() if id(m.lu) not in kept
        }
        nexus = self.nexus
        for lu in gone.values():
            self._spawn(functools.partial(lu.mailbox.send, NexusLoss(nexus)))
        return True

    # -- task management -----------------------------------------------------------
    async def task_management(self, function: int, lun: int, tag: int) -> TmfResponse:
        nexus = self.nexus
        if function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            if self._target_reset is None:
                return TmfResponse.NOT_SUPPORTED
            # SAM: a target reset is the old BUS DEVICE RESET (29/03); a cold
            # reset is a power cycle as far as the initiators can tell (29/01).
            asc = (
                Asc.POWER_ON_OCCURRED
                if function == TmfFunction.TARGET_COLD_RESET
                else Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED
            )
            await self._target_reset(nexus, asc)
            return TmfResponse.COMPLETE
        if function == TmfFunction.I_T_NEXUS_RESET:
            units = {id(m.lu): m.lu for m in self.luns.values()}
            for lu in units.values():
                await lu.reset_nexus(nexus)
            return TmfResponse.COMPLETE
        if function == TmfFunction.TASK_REASSIGN:
            return TmfResponse.REASSIGNMENT_NOT_SUPPORTED
        if function == TmfFunction.QUERY_ASYNC_EVENT:
            # SAM-5 7.8: "succeeded" when a UNIT ATTENTION (or deferred error,
            # which we never have) waits for this I_T_L nexus
            queried = self.luns.get(lun)
            if queried is None:
                return TmfResponse.LUN_DOES_NOT_EXIST
            pending = queried.lu.has_unit_attention(nexus)
            return TmfResponse.SUCCEEDED if pending else TmfResponse.COMPLETE
        mapping = self.luns.get(lun)
        if mapping is None:
            return TmfResponse.LUN_DOES_NOT_EXIST
        message: Any
        if function == TmfFunction.ABORT_TASK:
            message = AbortTask(nexus, tag)
        elif function == TmfFunction.ABORT_TASK_SET:
            message = AbortTaskSet(nexus)
        elif function == TmfFunction.CLEAR_TASK_SET:
            message = ClearTaskSet(nexus)
        elif function == TmfFunction.LOGICAL_UNIT_RESET:
            message = ResetLogicalUnit(nexus)
        elif function == TmfFunction.QUERY_TASK:
            message = QueryTask(nexus, tag)
        elif function == TmfFunction.QUERY_TASK_SET:
            message = QueryTaskSet(nexus)
        elif function == TmfFunction.CLEAR_ACA:
            return TmfResponse.COMPLETE
        else:
            return TmfResponse.NOT_SUPPORTED
        result: TmfResponse = await call(mapping.lu.mailbox, message)
        return result

    async def close(self) -> None:
        """The nexus is gone: every LU drops its tasks and per-nexus state."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True):
            for each in self.luns.values():
                await each.lu.mailbox.send(NexusLoss(self.nexus))
