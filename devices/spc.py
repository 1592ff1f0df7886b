"""The SPC layer every device type shares: its handlers and its table rows.

INQUIRY, REQUEST SENSE, TEST UNIT READY, MODE SENSE/SELECT and PREVENT ALLOW
MEDIUM REMOVAL mean the same thing on a disk, a CD-ROM or a tape drive; only
the data differs, and that comes from the :class:`DeviceType` (its inquiry,
VPD and mode pages, readiness, medium). A device type's table is
:func:`type_table` of its own rows: the SPC rows here, with the type's rows
added or overriding (tgt's spc.c vs sbc.c/mmc.c; LIO's spc_parse_cdb
fallback). The commands the middle level answers itself (REPORT LUNS, RSOC,
reservations) are the other half of SPC, in actors/core_table.py, and the LU
merges them in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pyscst.devices.device_type import DeviceType, NoTapeFaults
from pyscst.devices.disk_sense import short_data_out
from pyscst.devices.medium import Medium
from pyscst.devices.stores import BackingStore
from pyscst.scsi.cdb import OpFlags, OpSpec, OpTable, ResvClass, alloc_len
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, Nexus, ScsiCommand
from pyscst.scsi.inquiry import VERSION_ISCSI, VERSION_SAM5, VERSION_SPC4, StandardInquiry
from pyscst.scsi.mode import CONTROL, ModePages, build_mode_sense, parse_mode_select
from pyscst.scsi.opcodes import Op
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey
from pyscst.scsi.vpd import VpdInfo, VpdPages

F = OpFlags
R = ResvClass
IN = DataDirection.READ
OUT = DataDirection.WRITE
NONE = DataDirection.NONE
SHORT_TIMEOUTS = (5, 10)

_NO_SENSE = Sense.of(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE)


def mask(hexdigits: str) -> bytes:
    """A CDB usage mask written as hex bytes (spaces allowed)."""
    return bytes.fromhex(hexdigits.replace(" ", ""))


async def handle_inquiry(dev: DeviceType, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    cdb = cmd.cdb
    allocation = alloc_len(cdb, 3, 2)
    if cdb[1] & 0x01:
        data = dev.vpd.render(cdb[2], ctx.nexus)
    else:
        if cdb[2]:
            raise ScsiError.invalid_field_in_cdb(2)
        data = dev.inquiry.encode()
        port = cmd.port_group
        if port is not None:  # ALUA: TPGS, as the target the command came through has it
            data = data[:5] + bytes((data[5] | port.tpgs,)) + data[6:]
    return data[:allocation]


async def handle_test_unit_ready(
    dev: DeviceType, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """Readiness is the LU's check (the row's NEEDS_MEDIUM flag): nothing is left."""
    return None


async def handle_request_sense(
    dev: DeviceType, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """Pending UNIT ATTENTION first, then the NOT READY condition, else NO SENSE."""
    cdb = cmd.cdb
    sense = ctx.take_sense() or dev.not_ready_sense() or _NO_SENSE
    data = sense.encode(descriptor=bool(cdb[1] & 0x01))
    return data[: cdb[4]]


async def handle_mode_sense(dev: DeviceType, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    device_specific, blocks, block_size = dev.mode_parameters(ctx.read_only)
    return build_mode_sense(
        cmd.cdb, dev.mode, blocks=blocks, block_size=block_size, device_specific=device_specific
    )


async def handle_mode_select(
    dev: DeviceType, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """MODE SELECT (6/10): validate all, apply all, tell the other nexuses."""
    cdb = cmd.cdb
    length = cdb[4] if cdb[0] == 0x15 else alloc_len(cdb, 7, 2)
    if length == 0:
        return None
    data = await cmd.receive_data(length)
    if len(data) < length:
        raise short_data_out()
    _, blocks, block_size = dev.mode_parameters(ctx.read_only)
    if parse_mode_select(cdb, data, dev.mode, blocks=blocks, block_size=block_size):
        ctx.notify_others(Asc.MODE_PARAMETERS_CHANGED)
    return None


async def handle_prevent_allow(
    dev: DeviceType, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """PREVENT ALLOW MEDIUM REMOVAL: prevention is held per I_T nexus."""
    prevent = cmd.cdb[4] & 0x03
    if prevent > 1:
        raise ScsiError.invalid_field_in_cdb(4, 1)
    dev.medium.set_prevent(ctx.nexus, bool(prevent))
    return None


def _prevent_resv(cdb: bytes) -> ResvClass:
    return R.ALLOWED if cdb[4] & 0x03 == 0 else R.WRITE


#: the rows every device type starts from
SPC_SPECS: tuple[OpSpec, ...] = (
    OpSpec(Op.TEST_UNIT_READY, None, "TEST UNIT READY", 6, mask("00 00 00 00 00 00"),
           NONE, handle_test_unit_ready, F.NEEDS_MEDIUM, R.PR_ALLOWED, timeouts=SHORT_TIMEOUTS),
    OpSpec(Op.REQUEST_SENSE, None, "REQUEST SENSE", 6, mask("03 01 00 00 ff 00"),
           IN, handle_request_sense, F.UA_EXEMPT, R.ALLOWED, timeouts=SHORT_TIMEOUTS),
    OpSpec(Op.INQUIRY, None, "INQUIRY", 6, mask("12 01 ff ff ff 00"),
           IN, handle_inquiry, F.UA_EXEMPT, R.ALLOWED, timeouts=SHORT_TIMEOUTS),
    OpSpec(Op.MODE_SELECT_6, None, "MODE SELECT(6)", 6, mask("15 10 00 00 ff 00"),
           OUT, handle_mode_select, F.SERIALIZING, R.WRITE, timeouts=SHORT_TIMEOUTS),
    OpSpec(Op.MODE_SENSE_6, None, "MODE SENSE(6)", 6, mask("1a 08 ff ff ff 00"),
           IN, handle_mode_sense, F.NONE, R.READ, timeouts=SHORT_TIMEOUTS),
    OpSpec(Op.PREVENT_ALLOW_MEDIUM_REMOVAL, None, "PREVENT ALLOW MEDIUM REMOVAL", 6,
           mask("1e 00 00 00 03 00"), NONE, handle_prevent_allow, F.NONE, R.WRITE,
           timeouts=SHORT_TIMEOUTS, resv_of=_prevent_resv),
    OpSpec(Op.MODE_SELECT_10, None, "MODE SELECT(10)", 10, mask("55 10 00 00 00 00 00 ff ff 00"),
           OUT, handle_mode_select, F.SERIALIZING, R.WRITE, timeouts=SHORT_TIMEOUTS),
    OpSpec(Op.MODE_SENSE_10, None, "MODE SENSE(10)", 10, mask("5a 18 ff ff 00 00 00 ff ff 00"),
           IN, handle_mode_sense, F.NONE, R.READ, timeouts=SHORT_TIMEOUTS),
)  # fmt: skip

SPC_TABLE = OpTable(SPC_SPECS)


def type_table(rows: Iterable[OpSpec]) -> OpTable:
    """A device type's table: the SPC layer with ``rows`` added or overriding."""
    return SPC_TABLE.overlaid(rows)


class RemovableIdentity:
    """Who a removable-medium drive (CD-ROM, tape) says it is: device id,
    serial (derived from the name unless configured), standard INQUIRY with
    RMB and the type's command-set version, and the SPC VPD pages (no
    volatile cache: nothing to lose)."""

    device_id: str
    serial: str
    inquiry: StandardInquiry
    vpd: VpdPages

    def set_identity(
        self, name: str, serial: str | None, device_type: int, product: str, revision: str,
        command_set_version: int,
    ) -> None:  # fmt: skip
        self.device_id = f"pyscst:{name}"
        self.serial = serial or hashlib.sha256(self.device_id.encode()).hexdigest()[:16]
        self.inquiry = StandardInquiry(
            device_type=device_type,
            removable=True,
            product=product,
            revision=revision,
            version_descriptors=(VERSION_SAM5, VERSION_ISCSI, VERSION_SPC4, command_set_version),
        )
        info = VpdInfo(device_id=self.device_id, serial=self.serial, volatile_cache=False)
        self.vpd = VpdPages(info, device_type=device_type)


class ControlPageState:
    """The Control mode page bits the LU reads of any device type (SPC-4 7.5.8):
    one definition for every type that keeps its mode pages in ``self.mode``."""

    mode: ModePages

    @property
    def descriptor_sense(self) -> bool:
        """D_SENSE: encode sense in descriptor format."""
        return bool(self.mode.bits(CONTROL, 2, 0x04))

    @property
    def software_write_protect(self) -> bool:
        """SWP."""
        return bool(self.mode.bits(CONTROL, 4, 0x08))

    @property
    def queue_algorithm_modifier(self) -> int:
        """QUEUE ALGORITHM MODIFIER (0 restricted, 1 unrestricted)."""
        return self.mode.bits(CONTROL, 3, 0xF0) >> 4

    @property
    def tas(self) -> bool:
        """TAS: report TASK ABORTED to other nexuses' aborted tasks."""
        return bool(self.mode.bits(CONTROL, 5, 0x40))


class ReadinessSense:
    """REQUEST SENSE's readiness condition, the same for every type with a medium:
    the device's own unavailability first, then a busy medium (a sanitize in
    progress), then whatever ``check_ready`` would refuse a command with."""

    unavailable: Sense | None
    medium: Medium

    def check_ready(self) -> None:
        raise NotImplementedError

    def not_ready_sense(self) -> Sense | None:
        """The sense REQUEST SENSE reports for the current readiness condition."""
        if self.unavailable is not None:
            return self.unavailable
        if self.medium.busy is not None:
            return self.medium.busy
        try:
            self.check_ready()
        except ScsiError as exc:
            return exc.sense
        return None


class MediumHooks(NoTapeFaults):
    """The reset, nexus-loss and power-on hooks of a type whose only state they
    touch is its medium's PREVENT locks and its mode pages (every type
    with a medium: disk, CD-ROM, tape, changer; a type adds its own power-on
    state through super()); and no tape faults to arm (a tape drive
    overrides ``arm_fault``)."""

    medium: Medium
    mode: ModePages
    store: BackingStore

    def nexus_lost(self, nexus: Nexus) -> None:
        self.medium.nexus_lost(nexus)

    def reset(self) -> None:
        self.medium.unlock_all()

    def power_on(self) -> None:
        self.medium.unlock_all()
        self.mode.reset()

    async def close(self) -> None:
        await self.store.close()
