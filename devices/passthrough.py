"""The ``passthrough`` device type: another device server's LU, exported one to many.

SCST's pass-through mode: a real device (here: a LUN of another iSCSI target,
or a local SCSI device through SG_IO) is exported to many initiators while
the device itself sees one, pyscst. The device's command set, peripheral
type and INQUIRY data are the backend's; what the backend cannot do for many
initiators it does not see is the middle level's, as for any device type:
REPORT LUNS, LUN masking, reservations (SPC-2 and persistent: the core
table's rows never reach this device), task sets, and the UNIT ATTENTION
queues of every nexus.

The table (:func:`passthrough_table`) is built from what the backend reports
when it (re)connects: our rows for its peripheral type (the SBC disk's, the
MMC CD-ROM's, or the SPC layer) keep their CDB masks, directions,
reservation classes and LBA ranges, so CDB checking, reservation conflicts,
ordering and write protection happen here, before forwarding; their handler
becomes :func:`forward`. Rows the backend's REPORT SUPPORTED OPERATION CODES
does not list are dropped; commands no row knows are forwarded unchecked (the
table's fallback), for the backend to judge. Readiness is the backend's: the
rows lose their readiness flags.

UNIT ATTENTIONs the backend raises (to its one initiator) are captured once
and delivered to every nexus; those the middle level raised itself (a LUN
reset it passed on) are not doubled. Device identification (VPD 0x83) keeps
the backend's logical-unit designators and names our target port instead of
the backend's.
"""

from __future__ import annotations

import errno
import logging
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from pyscst.devices.backend import (
    BackendConnector,
    BackendDown,
    BackendFault,
    BackendReply,
    QueuingBackend,
    ScsiBackend,
)
from pyscst.devices.device_config import DeviceConfig
from pyscst.devices.device_type import DeviceType, NoTapeFaults
from pyscst.devices.disk_io import first_difference
from pyscst.devices.disk_sense import data_out_length_mismatch, miscompare, short_data_out
from pyscst.devices.disk_table import SBC_TABLE
from pyscst.devices.disk_write_ext import compare_and_write_range
from pyscst.devices.handler_info import DeviceSettings
from pyscst.devices.medium import Medium
from pyscst.devices.mmc import MMC_TABLE
from pyscst.devices.sg_backend import SgBackend
from pyscst.devices.spc import SPC_TABLE
from pyscst.devices.stores import BackingStore, Extent
from pyscst.scsi.cdb import (
    NEEDS_AWAIT,
    Handler,
    NeedsAwait,
    OpFlags,
    OpSpec,
    OpTable,
    Pending,
    Readiness,
    ResvClass,
)
from pyscst.scsi.command import (
    Buffer,
    DataDirection,
    ExecContext,
    Nexus,
    ScsiCommand,
    TaskAttribute,
)
from pyscst.scsi.inquiry import StandardInquiry
from pyscst.scsi.mode import ModePages, spc_mode_page_defs
from pyscst.scsi.opcodes import SERVICE_ACTION_OPCODES, MaintenanceIn, Op, ServiceActionIn16
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status
from pyscst.scsi.vpd import DEVICE_IDENTIFICATION, VpdInfo, VpdPages, port_designators
from pyscst.scsi.vpd_sbc import BLOCK_LIMITS

log = logging.getLogger(__name__)

#: peripheral device types whose rows we have
_TYPE_TABLES: dict[int, OpTable] = {0x00: SBC_TABLE, 0x05: MMC_TABLE}
#: rows kept whatever the backend's RSOC lists (SPC-mandatory)
_ALWAYS = {(Op.INQUIRY, None), (Op.REQUEST_SENSE, None), (Op.TEST_UNIT_READY, None)}
#: a command lost with the backend: retryable (Linux retries ABORTED COMMAND)
LOST = Sense.of(SenseKey.ABORTED_COMMAND, Asc.LOGICAL_UNIT_COMMUNICATION_FAILURE)
#: the backend is not reachable now (reconnecting): NOT READY, becoming ready
DOWN = Sense.of(SenseKey.NOT_READY, Asc.LUN_NOT_READY_BECOMING_READY)
#: the backend's answer could not be passed on (oversized data, ...)
GARBLED = Sense.of(SenseKey.ABORTED_COMMAND, Asc.DATA_PHASE_ERROR)
_UA_RETRIES = 4
#: what COMPARE AND WRITE is emulated with when the backend lacks it
_CAW_PARTS = frozenset({(Op.READ_16, None), (Op.WRITE_16, None)})
_ASC_BY_VALUE = {member.value: member for member in Asc}
_READ = DataDirection.READ
_MAX_INQUIRY = 255
#: an LBA range this long means "to the end of the medium" (WRITE SAME of 0 blocks)
TO_THE_END = 1 << 62
#: standard INQUIRY before the backend was ever reached: peripheral qualifier
#: 001b (capable of a device here, none connected), device type 1Fh (unknown)
NOT_CONNECTED_INQUIRY = (
    bytes((0x3F, 0, 0x06, 0x02, 31, 0, 0, 0)) + b"pyscst  " + b"passthrough     " + b"0001"
)
#: our initiator name toward a backend target, by default: this + device name
BACKEND_INITIATOR_PREFIX = "iqn.2026-11.org.pyscst:passthrough:"


def _asc_of(sense: Sense) -> Asc | None:
    return _ASC_BY_VALUE.get((sense.asc, sense.ascq))


def _fixed_length(opcode: int, given: int) -> int:
    group = opcode >> 5
    return {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(group, given)


class ForwardFallback:
    """The table fallback: a forwarding row, made once per opcode (and
    service action), for a command no row lists; None when the backend's
    RSOC said it does not support it."""

    def __init__(self, supported: frozenset[tuple[int, int | None]] | None) -> None:
        self._supported = supported
        self._rows: dict[tuple[int, int | None], OpSpec | None] = {}

    def __call__(self, cdb: bytes) -> OpSpec | None:
        opcode = cdb[0]
        sa = None
        if opcode in SERVICE_ACTION_OPCODES:
            if len(cdb) < 2:
                return None
            sa = cdb[1] & 0x1F
        key = (opcode, sa)
        try:
            return self._rows[key]
        except KeyError:
            pass
        row: OpSpec | None = None
        supported = self._supported
        if supported is None or key in supported:
            length = max(_fixed_length(opcode, len(cdb)), 2)
            mask = bytearray(b"\xff" * length)
            mask[0] = opcode
            if sa is not None:
                mask[1] = 0xE0 | sa
            row = OpSpec(opcode, sa, f"opcode {opcode:#04x}", length, bytes(mask),
                         DataDirection.NONE, forward, OpFlags.NONE, ResvClass.WRITE,
                         fast=forward_now)  # fmt: skip
        self._rows[key] = row
        return row


def passthrough_table(
    peripheral_type: int, supported: frozenset[tuple[int, int | None]] | None
) -> OpTable:
    """The command set of a backend of ``peripheral_type`` that reports
    ``supported`` (None: it does not say)."""
    base = _TYPE_TABLES.get(peripheral_type, SPC_TABLE)
    rows = []
    for spec in base:
        key = (spec.opcode, spec.service_action)
        handler: Handler = _SPECIAL.get(spec.opcode, forward)
        flags = spec.flags & ~(OpFlags.NEEDS_MEDIUM | OpFlags.NEEDS_PRESENT)
        if supported is not None and key not in supported and key not in _ALWAYS:
            if key != (Op.COMPARE_AND_WRITE, None) or not _CAW_PARTS <= supported:
                continue
            handler, flags = emulate_compare_and_write, flags | OpFlags.ATOMIC
        fast = forward_now if handler is forward else None
        rows.append(attrs.evolve(spec, handler=handler, flags=flags, fast=fast))
    return OpTable(rows, ForwardFallback(supported))


@attrs.frozen
class Probe:
    """What the backend said about itself when it last (re)connected."""

    inquiry: bytes
    supported: frozenset[tuple[int, int | None]] | None
    blocks: int = 0
    block_size: int = 0
    control_page: bytes = b""
    #: Block Limits MAXIMUM TRANSFER LENGTH (0: none said)
    max_transfer_blocks: int = 0

    @property
    def peripheral_type(self) -> int:
        return self.inquiry[0] & 0x1F if self.inquiry else 0x1F


class BackendStore:
    """The store slot of a pass-through device: the backend's blocks, by
    READ(16) / WRITE(16). Commands never come here (they are forwarded as
    they came); what does is the middle level's own block I/O, e.g. a torn
    write injected by a fault rule. Closing it closes the backend."""

    def __init__(self, backend: ScsiBackend) -> None:
        self.backend = backend
        #: the backend's capacity in bytes and block size, as last probed
        self.size = 0
        self.block_size = 512
        self.read_only = False

    async def _io(self, cdb: bytes, data_out: Buffer, read_length: int) -> BackendReply:
        try:
            reply = await self.backend.execute(cdb, data_out, read_length, TaskAttribute.SIMPLE)
        except (BackendDown, BackendFault) as exc:
            raise OSError(errno.EIO, f"backend: {exc}") from None
        if reply.status != Status.GOOD:
            raise OSError(errno.EIO, f"backend answered status {reply.status:#x}")
        return reply

    def _blocks(self, offset: int, length: int) -> tuple[int, int]:
        if offset % self.block_size or length % self.block_size:
            raise OSError(errno.EINVAL, "pass-through I/O must be whole blocks")
        return offset // self.block_size, length // self.block_size

    async def readinto(self, offset: int, buf: memoryview) -> None:
        lba, n = self._blocks(offset, len(buf))
        reply = await self._io(struct.pack(">BBQIBB", Op.READ_16, 0, lba, n, 0, 0), b"", len(buf))
        if len(reply.data) != len(buf):
            raise OSError(errno.EIO, "backend returned a short read")
        buf[:] = reply.data

    async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        lba, n = self._blocks(offset, len(data))
        cdb = struct.pack(">BBQIBB", Op.WRITE_16, 0x08 if fua else 0, lba, n, 0, 0)
        await self._io(cdb, data, 0)

    def read_now(self, offset: int, buf: memoryview) -> bool:
        return False

    def write_now(self, offset: int, data: Buffer) -> bool:
        return False

    async def flush(self) -> None:
        """Nothing is cached here: the backend owns its cache."""

    async def discard(self, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "discard at the backend with UNMAP")

    async def extents(self, offset: int, length: int, limit: int) -> list[Extent]:
        return []

    async def resize(self, size: int) -> None:
        raise ValueError("a pass-through device's size is its backend's")

    async def close(self) -> None:
        await self.backend.close()


class PassthroughDevice(NoTapeFaults):
    """A device whose commands run at a backend device server."""

    table: ClassVar[OpTable]  # per instance: set from the backend's probe

    def __init__(self, name: str, backend: ScsiBackend, *, read_only: bool = False) -> None:
        self.name = name
        self.backend = backend
        self.store: BackingStore = BackendStore(backend)
        #: the backend's synchronous queueing, if it has one (the fast path)
        self._start: QueuingBackend | None = (
            backend if isinstance(backend, QueuingBackend) else None
        )
        self.read_only = read_only
        self.unavailable: Sense | None = None
        self.medium = Medium(present=True)
        self.probe: Probe | None = None
        self.table = passthrough_table(0x1F, None)  # type: ignore[misc]
        # never rendered (INQUIRY is forwarded): the protocol's identity slots
        self.inquiry = StandardInquiry(device_type=0x1F, product="pyscst passthrough")
        self.vpd = VpdPages(VpdInfo(device_id=f"pyscst:{name}", serial=name[:32]))
        self.mode = ModePages(spc_mode_page_defs())
        #: backend UAs captured (by the probe after a reconnection) and not
        #: yet delivered to the nexuses
        self._captured: list[Asc] = []
        #: backend 29/xx UAs to swallow: the middle level raised its own
        self._swallow_resets = 0
        self._connections = 0
        #: the last PREVENT went with its nexus: send ALLOW before the next command
        self._allow_pending = False
        #: an initiator got the "not connected" INQUIRY before the first probe
        self.placeholder_shown = False

    # --- the probe, after every (re)connection -------------------------------
    async def on_connect(self) -> None:
        """Learn identity and command set from the backend; keep its UAs."""
        self._connections += 1
        # a new session: a LUN reset asked of the old one may never have been
        # sent, so no 29/xx is owed to be swallowed (the probe takes the UAs)
        self._swallow_resets = 0
        captured: list[Asc] = []
        reply = BackendReply(Status.GOOD)
        for _ in range(8):  # TEST UNIT READY until no UA is left
            reply = await self.backend.execute(bytes(6), b"", 0, TaskAttribute.SIMPLE)
            sense = Sense.decode(reply.sense) if reply.sense else None
            if reply.status != Status.CHECK_CONDITION or sense is None:
                break
            if sense.key != SenseKey.UNIT_ATTENTION:
                break
            asc = _asc_of(sense)
            if asc is not None and asc not in captured:
                captured.append(asc)
        inquiry = await self._ask(bytes((Op.INQUIRY, 0, 0, 0, _MAX_INQUIRY, 0)), _MAX_INQUIRY)
        if inquiry is None or len(inquiry) < 5:
            raise BackendFault("the backend did not answer INQUIRY")
        probe = Probe(inquiry=bytes(inquiry), supported=await self._supported())
        if probe.peripheral_type == 0x00:
            cdb = struct.pack(">BBQIBB", Op.SERVICE_ACTION_IN_16,
                              ServiceActionIn16.READ_CAPACITY_16, 0, 32, 0, 0)  # fmt: skip
            capacity = await self._ask(cdb, 32)
            if capacity is not None and len(capacity) >= 12:
                last, block_size = struct.unpack_from(">QI", capacity)
                probe = attrs.evolve(probe, blocks=last + 1, block_size=block_size)
            limits = await self._ask(bytes((Op.INQUIRY, 1, BLOCK_LIMITS, 0, 64, 0)), 64)
            if limits is not None and len(limits) >= 12:
                maximum = struct.unpack_from(">I", limits, 8)[0]
                probe = attrs.evolve(probe, max_transfer_blocks=maximum)
        control = await self._ask(bytes((Op.MODE_SENSE_6, 0x08, 0x0A, 0, 255, 0)), 255)
        if control is not None and len(control) >= 4 + 12:
            offset = 4 + control[3]
            probe = attrs.evolve(probe, control_page=bytes(control[offset : offset + 12]))
        old = self.probe
        first = old is None
        if old is None or (probe.peripheral_type, probe.supported) != (
            old.peripheral_type, old.supported
        ):
            self.table = passthrough_table(probe.peripheral_type, probe.supported)  # type: ignore[misc]
        if old is not None and (probe.blocks, probe.block_size) != (old.blocks, old.block_size):
            captured.append(Asc.CAPACITY_DATA_HAS_CHANGED)
        if old is not None and probe.inquiry != old.inquiry:
            captured.append(Asc.INQUIRY_DATA_HAS_CHANGED)
        self.probe = probe
        if isinstance(self.store, BackendStore):
            self.store.size = probe.blocks * probe.block_size
            self.store.block_size = probe.block_size or 512
        if not first:  # the first time, every nexus hears the LU's own power-on
            self._captured.extend(a for a in captured if a not in self._captured)
        elif self.placeholder_shown:  # initiators saw "not connected": look again
            self._captured.append(Asc.INQUIRY_DATA_HAS_CHANGED)
        log.info("%s: backend %s: peripheral type %#04x, %s", self.name,
                 self.backend.spec.url, probe.peripheral_type,
                 f"{len(probe.supported)} commands reported" if probe.supported is not None
                 else "no REPORT SUPPORTED OPERATION CODES")  # fmt: skip

    async def _ask(self, cdb: bytes, length: int) -> Buffer | None:
        reply = await self.backend.execute(cdb, b"", length, TaskAttribute.SIMPLE)
        return reply.data if reply.status == Status.GOOD else None

    async def _supported(self) -> frozenset[tuple[int, int | None]] | None:
        cdb = struct.pack(">BBBBHIBB", Op.MAINTENANCE_IN,
                          MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES, 0, 0, 0, 65532, 0, 0)
        data = await self._ask(cdb, 65532)
        if data is None or len(data) < 4:
            return None
        length = min(struct.unpack_from(">I", data)[0], len(data) - 4)
        found: set[tuple[int, int | None]] = set()
        at = 4
        while at + 8 <= 4 + length:
            opcode, _, sa, _, flags, _ = struct.unpack_from(">BBHBBH", data, at)
            found.add((opcode, sa & 0x1F if flags & 0x01 else None))
            at += 8 + (12 if flags & 0x02 else 0)
        return frozenset(found)

    @property
    def emulates_caw(self) -> bool:
        """COMPARE AND WRITE is ours (the backend lacks it): the Block Limits
        page says how many blocks we take."""
        row = self.table.get(Op.COMPARE_AND_WRITE)
        return row is not None and row.handler is emulate_compare_and_write

    @property
    def caw_max_blocks(self) -> int:
        """At most this many blocks per emulated COMPARE AND WRITE: 255 (the
        CDB field), or fewer if the backend moves fewer in one command."""
        limit = self.probe.max_transfer_blocks if self.probe is not None else 0
        return min(255, limit) if limit else 255

    # --- what the LU reads ---------------------------------------------------
    def _control_bit(self, byte: int, mask: int) -> int:
        page = self.probe.control_page if self.probe is not None else b""
        return page[byte] & mask if len(page) > byte else 0

    @property
    def descriptor_sense(self) -> bool:
        return bool(self._control_bit(2, 0x04))

    @property
    def tas(self) -> bool:
        return bool(self._control_bit(5, 0x40))

    @property
    def queue_algorithm_modifier(self) -> int:
        return self._control_bit(3, 0xF0) >> 4

    @property
    def blocks(self) -> int:
        return self.probe.blocks if self.probe is not None else 0

    @property
    def block_shift(self) -> int:
        """log2 of the block size (what fault injection's torn write reads)."""
        size = self.probe.block_size if self.probe is not None else 0
        return (size or 512).bit_length() - 1

    def check_ready(self, readiness: Readiness = Readiness.READY) -> None:
        """Readiness is the backend's; here only: is it reachable at all."""
        if self.probe is None or not self.backend.connected:
            raise ScsiError(Status.CHECK_CONDITION, DOWN)

    def not_ready_sense(self) -> Sense | None:
        if self.unavailable is not None:
            return self.unavailable
        if self.probe is None or not self.backend.connected:
            return DOWN
        return None

    def mode_parameters(self, read_only: bool) -> tuple[int, int, int]:
        return (0x80 if read_only else 0), self.blocks, (
            self.probe.block_size if self.probe is not None else 0
        )

    async def resize(self, new_size: int) -> None:
        raise ValueError(f"{self.name}: a pass-through device's size is its backend's")

    def eject(self) -> bool:
        raise ValueError(f"{self.name}: eject at the backend device, not here")

    def load(self, image: object = None) -> bool:
        raise ValueError(f"{self.name}: load at the backend device, not here")

    # --- hooks -----------------------------------------------------------------
    def reset(self) -> None:
        """A LUN reset here resets the backend LU (which ends its prevention
        too); its 29/xx is ours already."""
        self._swallow_resets += 1
        self.medium.unlock_all()
        self.backend.reset_lu()

    def power_on(self) -> None:
        self.reset()

    def nexus_lost(self, nexus: Nexus) -> None:
        """The nexus' PREVENT ends; if it was the last, the backend hears ALLOW
        before the next command (this hook cannot wait). Reservations are the
        middle level's; the backend's one nexus is pyscst and lives on."""
        was = self.medium.locked
        self.medium.nexus_lost(nexus)
        if was and not self.medium.locked:
            self._allow_pending = True

    async def close(self) -> None:
        await self.store.close()

    # --- unit attentions ----------------------------------------------------------
    def deliver_captured(self, ctx: ExecContext) -> None:
        """Backend UAs captured at a reconnection: every nexus hears them once."""
        captured, self._captured = self._captured, []
        for asc in captured:
            ctx.notify_all(asc)

    def backend_ua(self, sense: Sense, ctx: ExecContext) -> bool:
        """A UA the backend reported on a command: True to retry the command
        (swallowed: the LU raised its own), False to answer it (every other
        nexus hears it too)."""
        asc = _asc_of(sense)
        if asc is not None and asc.code == 0x29 and self._swallow_resets:
            self._swallow_resets -= 1
            return True
        if asc is not None:
            ctx.notify_others(asc)
        return False

    def __repr__(self) -> str:
        return f"<PassthroughDevice {self.name} -> {self.backend.describe()}>"


def _device(dev: object) -> PassthroughDevice:
    assert isinstance(dev, PassthroughDevice)
    return dev


async def _run(dev: PassthroughDevice, cmd: ScsiCommand, ctx: ExecContext) -> BackendReply:
    """Send ``cmd`` to the backend (data-out first), UAs handled; the reply
    is GOOD/CONDITION MET, or raised as the backend's status and sense."""
    if dev._captured:
        dev.deliver_captured(ctx)
        if cmd.cdb[0] not in (Op.INQUIRY, Op.REQUEST_SENSE):
            sense = ctx.take_sense()
            if sense is not None:
                raise ScsiError(Status.CHECK_CONDITION, sense)
    data_out: Buffer = b""
    read_length = 0
    if cmd.direction == DataDirection.WRITE:
        data_out = await cmd.receive_data(cmd.expected_length)
    elif cmd.direction == DataDirection.READ:
        read_length = cmd.expected_length
    return await _exchange(dev, ctx, cmd.cdb, data_out, read_length, cmd.attr, cmd.direction)


async def _exchange(
    dev: PassthroughDevice, ctx: ExecContext, cdb: bytes, data_out: Buffer, read_length: int,
    attr: TaskAttribute, direction: DataDirection | None = None,
) -> BackendReply:
    """One command at the backend: retried after a UA the LU already raised,
    backend UAs spread to the other nexuses, losses and garbage made
    retryable sense; anything but GOOD raised as the backend's answer."""
    if dev.probe is None or not dev.backend.connected:
        raise ScsiError(Status.CHECK_CONDITION, DOWN)  # reconnecting: retry later
    if dev._allow_pending and not dev.medium.locked:
        dev._allow_pending = False
        allow = bytes((Op.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0, 0))
        await _exchange(dev, ctx, allow, b"", 0, TaskAttribute.SIMPLE)
    for _ in range(_UA_RETRIES):
        try:
            reply = await dev.backend.execute(cdb, data_out, read_length, attr, direction)
        except BackendDown:
            raise ScsiError(Status.CHECK_CONDITION, LOST) from None
        except BackendFault as exc:
            log.warning("%s: backend answer to %s refused: %s", dev.name, cdb[:1].hex(), exc)
            raise ScsiError(Status.CHECK_CONDITION, GARBLED) from None
        if reply.status in (Status.GOOD, Status.CONDITION_MET):
            return reply
        sense = Sense.decode(reply.sense) if reply.sense else None
        if sense is not None and sense.key == SenseKey.UNIT_ATTENTION:
            if dev.backend_ua(sense, ctx):
                continue
        raise _error_of(reply, sense)
    raise ScsiError(Status.CHECK_CONDITION, LOST)


async def emulate_compare_and_write(
    dev: Any, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """COMPARE AND WRITE for a backend without it: READ(16), compare, WRITE(16).
    Atomic to pyscst's initiators because the row is ATOMIC (the LU orders
    every overlapping command around it, even under QAM=1), and the backend
    has no other initiator than pyscst."""
    device = _device(dev)
    cdb = cmd.cdb
    lba, n = compare_and_write_range(cdb)
    _check_range(device, cmd, device.table.peek(cdb))
    if n > device.caw_max_blocks:
        raise ScsiError.invalid_field_in_cdb(13)
    if n == 0:
        if cmd.expected_length:
            raise ScsiError.invalid_field_in_cdb(13)
        return None
    nbytes = n * (device.probe.block_size if device.probe is not None else 512)
    if cmd.expected_length > 2 * nbytes:
        raise data_out_length_mismatch()
    data = await cmd.receive_data(2 * nbytes)
    if len(data) < 2 * nbytes:
        raise short_data_out()
    verify, new = data[:nbytes], data[nbytes:]
    read16 = struct.pack(">BBQIBB", Op.READ_16, 0, lba, n, 0, 0)
    current = (await _exchange(device, ctx, read16, b"", nbytes, cmd.attr)).data
    if bytes(current) != bytes(verify):
        raise miscompare(first_difference(verify, current))
    write16 = struct.pack(">BBQIBB", Op.WRITE_16, cdb[1] & 0x18, lba, n, 0, 0)
    await _exchange(device, ctx, write16, new, 0, cmd.attr)
    return None


def _check_range(dev: PassthroughDevice, cmd: ScsiCommand, spec: OpSpec | None) -> None:
    """LBA checks the middle level can make before forwarding (the backend's
    capacity is known): SBC's LBA OUT OF RANGE."""
    blocks = dev.blocks
    if not blocks:
        return
    cdb = cmd.cdb
    if spec is not None and spec.lba_range is not None:
        lba, n = spec.lba_range(cdb)
        if (lba >= blocks and n) or (lba + n > blocks and n < TO_THE_END):
            raise ScsiError.lba_out_of_range()
    elif (
        cdb[0] == Op.SERVICE_ACTION_IN_16
        and cdb[1] & 0x1F == ServiceActionIn16.GET_LBA_STATUS
        and struct.unpack_from(">Q", cdb, 2)[0] >= blocks
    ):
        raise ScsiError.lba_out_of_range()


async def forward(dev: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """The handler of every forwarded row: the backend's answer, unchanged
    (its residual too)."""
    device = _device(dev)
    _check_range(device, cmd, device.table.peek(cmd.cdb))
    reply = await _run(device, cmd, ctx)
    return _data_of(cmd, reply)


def forward_now(dev: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | NeedsAwait | Pending:
    """``forward`` without a task (the LU's fast path): the command is queued
    to the backend at once and answered from the backend's reply, which the
    backend's reader hands to a :class:`Pending`. Data-out still to come
    makes it NEEDS_AWAIT: the LU has it fetched (``data_later``) and calls
    this again. Anything else ``forward`` does first (UAs captured at a
    reconnection, an ALLOW owed, no slot free at the backend) also makes it
    NEEDS_AWAIT: ``forward`` then runs in the command's task."""
    device = _device(dev)
    backend = device._start
    if (backend is None or device._captured or device._allow_pending or device.probe is None
            or not device.backend.connected):  # fmt: skip
        return NEEDS_AWAIT
    _check_range(device, cmd, device.table.peek(cmd.cdb))
    direction = cmd.direction
    data_out: Buffer | list[Buffer] = b""
    read_length = 0
    if direction == DataDirection.WRITE:
        # the pieces the data-out came in, not joined: the backend sends
        # them on as they are (a 128 KiB write is 128 KiB less to copy)
        transport = cmd.transport
        segments = getattr(transport, "data_segments_now", None)
        data: Buffer | list[Buffer] | None = (
            transport.data_now(cmd, cmd.expected_length) if segments is None
            else segments(cmd, cmd.expected_length)
        )  # fmt: skip
        if data is None:
            return NEEDS_AWAIT  # R2Ts to send first (the LU has the data fetched)
        data_out = data
    elif direction == DataDirection.READ:
        read_length = cmd.expected_length
    pending = Pending()
    answer = _Answer(device, cmd, ctx, pending)
    cancel = backend.start(cmd.cdb, data_out, read_length, cmd.attr, direction, answer)
    if cancel is None:
        return NEEDS_AWAIT
    pending.on_cancel(cancel)
    return pending


class _Answer:
    """How the backend's reply to a command forwarded by :func:`forward_now`
    becomes the command's result (what ``_exchange`` and ``forward`` make of
    it on the task path, the same in every case)."""

    __slots__ = ("cmd", "ctx", "device", "pending")

    def __init__(
        self, device: PassthroughDevice, cmd: ScsiCommand, ctx: ExecContext, pending: Pending
    ) -> None:
        self.device = device
        self.cmd = cmd
        self.ctx = ctx
        self.pending = pending

    def __call__(self, outcome: BackendReply | Exception) -> None:
        pending = self.pending
        if isinstance(outcome, BackendReply):
            if not outcome.status and not outcome.residual and self.cmd.direction == _READ:
                pending.finish(outcome.data)  # (the usual: what _data_of returns)
                return
            try:
                result: Any = _answer_of(self.device, self.cmd, self.ctx, outcome)
            except ScsiError as exc:
                result = exc
        elif isinstance(outcome, BackendFault):
            log.warning("%s: backend answer to %s refused: %s", self.device.name,
                        self.cmd.cdb[:1].hex(), outcome)  # fmt: skip
            result = ScsiError(Status.CHECK_CONDITION, GARBLED)
        else:  # BackendDown: lost with the connection, timed out, or aborted here
            result = ScsiError(Status.CHECK_CONDITION, LOST)
        pending.finish(result)


def _answer_of(
    dev: PassthroughDevice, cmd: ScsiCommand, ctx: ExecContext, reply: BackendReply
) -> Buffer | NeedsAwait | None:
    """The command's data for a GOOD reply; a backend UA the LU raised itself
    (swallowed) is NEEDS_AWAIT: the task path sends the command again; any
    other status is raised as the backend's answer."""
    if reply.status in (Status.GOOD, Status.CONDITION_MET):
        return _data_of(cmd, reply)
    sense = Sense.decode(reply.sense) if reply.sense else None
    if sense is not None and sense.key == SenseKey.UNIT_ATTENTION and dev.backend_ua(sense, ctx):
        return NEEDS_AWAIT
    raise _error_of(reply, sense)


def _error_of(reply: BackendReply, sense: Sense | None) -> ScsiError:
    """The backend's status and sense as ours (data sent with it kept)."""
    try:
        status = Status(reply.status)
    except ValueError:
        status = Status.CHECK_CONDITION
        sense = sense or Sense.of(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
    error = ScsiError(status, sense)
    if len(reply.data):  # data moved before the condition (ILI, filemark, EOM)
        error.data = reply.data
    return error


def _data_of(cmd: ScsiCommand, reply: BackendReply) -> Buffer | None:
    if cmd.direction == DataDirection.READ:
        data = reply.data
        if reply.residual < 0:  # the backend had more: say so in our residual
            data = bytes(data) + bytes(-reply.residual)
        return data
    cmd.transfer_length = cmd.expected_length - reply.residual
    return None


async def forward_inquiry(dev: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """INQUIRY: the backend's data; device identification gets our port."""
    device = _device(dev)
    cdb = cmd.cdb
    if device.probe is None and not cdb[1] & 0x01:
        # never reached yet: SPC's "not connected" (qualifier 001b, unknown
        # type); when it is, every nexus hears INQUIRY DATA HAS CHANGED
        device.placeholder_shown = True
        return NOT_CONNECTED_INQUIRY[: int.from_bytes(cdb[3:5], "big")]
    if cdb[1] == 0x01 and cdb[2] == BLOCK_LIMITS and device.emulates_caw:
        data = bytearray(_data_of(cmd, await _run(device, cmd, ctx)) or b"")
        if len(data) > 5:  # MAXIMUM COMPARE AND WRITE LENGTH: ours, emulated
            data[5] = device.caw_max_blocks
        return data
    if not (cdb[1] == 0x01 and cdb[2] == DEVICE_IDENTIFICATION):
        return _data_of(cmd, await _run(device, cmd, ctx))
    if device._captured:
        device.deliver_captured(ctx)
    # the whole page (the allocation length would cut the backend's short)
    full = await _run_raw(device, bytes((Op.INQUIRY, 0x01, DEVICE_IDENTIFICATION, 0xFF, 0xFF, 0)))
    return merge_device_identification(full, ctx.nexus)[: int.from_bytes(cdb[3:5], "big")]


async def _run_raw(dev: PassthroughDevice, cdb: bytes) -> bytes:
    try:
        reply = await dev.backend.execute(cdb, b"", 0xFFFF, TaskAttribute.SIMPLE)
    except BackendDown:
        raise ScsiError(Status.CHECK_CONDITION, LOST) from None
    except BackendFault:
        raise ScsiError(Status.CHECK_CONDITION, GARBLED) from None
    if reply.status != Status.GOOD:
        raise ScsiError(Status.CHECK_CONDITION, Sense.decode(reply.sense) or LOST)
    return bytes(reply.data)


def merge_device_identification(page: bytes, nexus: Nexus) -> bytes:
    """The backend's VPD 0x83 with its logical-unit designators kept and its
    port and target designators replaced by ours (an initiator reaches the
    LU through our port, and multipathing must see our ports)."""
    if len(page) < 4:
        return page
    end = min(len(page), 4 + int.from_bytes(page[2:4], "big"))
    kept = bytearray()
    at = 4
    while at + 4 <= end:
        length = page[at + 3]
        descriptor = page[at : at + 4 + length]
        if len(descriptor) < 4 + length:
            break
        if (descriptor[1] >> 4) & 0x03 == 0:  # ASSOCIATION: the logical unit
            kept += descriptor
        at += 4 + length
    body = bytes(kept) + port_designators(nexus)
    return page[:2] + struct.pack(">H", len(body)) + body


async def forward_request_sense(
    dev: Any, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """REQUEST SENSE: a UA pending here first (ours), else the backend's answer."""
    sense = ctx.take_sense()
    if sense is not None:
        return sense.encode(descriptor=bool(cmd.cdb[1] & 0x01))[: cmd.cdb[4]]
    device = _device(dev)
    if device.probe is None or not device.backend.connected:
        return DOWN.encode(descriptor=bool(cmd.cdb[1] & 0x01))[: cmd.cdb[4]]
    return await forward(dev, cmd, ctx)


async def forward_mode_select(dev: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """MODE SELECT: forwarded; the other nexuses hear MODE PARAMETERS CHANGED
    (the backend tells only its one initiator, us), and the Control page bits
    the LU reads are read again."""
    device = _device(dev)
    result = await forward(dev, cmd, ctx)
    ctx.notify_others(Asc.MODE_PARAMETERS_CHANGED)
    control = await _run_raw(device, bytes((Op.MODE_SENSE_6, 0x08, 0x0A, 0, 255, 0)))
    if device.probe is not None and len(control) >= 4 + 12:
        offset = 4 + control[3]
        device.probe = attrs.evolve(device.probe, control_page=control[offset : offset + 12])
    return result


async def forward_prevent_allow(dev: Any, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """PREVENT ALLOW MEDIUM REMOVAL, held per nexus here (the backend sees one
    initiator: one initiator's ALLOW must not undo another's PREVENT). Only a
    change of the union goes to the backend: the first PREVENT, the last ALLOW."""
    device = _device(dev)
    prevent = cmd.cdb[4] & 0x03
    if prevent > 1:
        raise ScsiError.invalid_field_in_cdb(4, 1)
    medium = device.medium
    before = medium.locked
    medium.set_prevent(ctx.nexus, bool(prevent))
    if medium.locked != before:
        try:
            await _exchange(device, ctx, bytes(cmd.cdb), b"", 0, cmd.attr)
        except ScsiError:
            medium.set_prevent(ctx.nexus, not prevent)  # the backend refused: undo
            raise
    return None


_SPECIAL: dict[int, Handler] = {
    Op.INQUIRY: forward_inquiry,
    Op.REQUEST_SENSE: forward_request_sense,
    Op.MODE_SELECT_6: forward_mode_select,
    Op.MODE_SELECT_10: forward_mode_select,
    Op.PREVENT_ALLOW_MEDIUM_REMOVAL: forward_prevent_allow,
}


async def no_store(cfg: DeviceSettings, roots: Sequence[Path] | None, grow: bool) -> BackingStore:
    """A pass-through device has no store to open: the device actor connects
    its backend (:func:`open_backend`)."""
    raise ValueError(f"devices.{cfg.name}: a passthrough device is opened through its backend")


def open_backend(cfg: DeviceConfig, connector: BackendConnector | None) -> BackendStore:
    """The store slot of a pass-through device, holding its (not yet
    connected) backend: SG_IO here, iSCSI through ``connector`` (the
    daemon's; the device layer cannot import the transports)."""
    spec = cfg.backend
    if spec is None:
        raise ValueError(f"devices.{cfg.name}.backend: required for a passthrough device")
    if not spec.initiator_name:
        spec = attrs.evolve(spec, initiator_name=f"{BACKEND_INITIATOR_PREFIX}{cfg.name}")
    if spec.kind == "sg":
        return BackendStore(SgBackend(spec))
    if connector is None:
        raise ValueError(f"devices.{cfg.name}.backend: no {spec.kind} backends in this process")
    return BackendStore(connector(spec))


def build_passthrough(cfg: DeviceSettings, store: BackingStore) -> DeviceType:
    assert isinstance(store, BackendStore)
    return PassthroughDevice(cfg.name, store.backend, read_only=cfg.read_only)
