"""Device types compose: the SPC layer, the DeviceType protocol, the registry,
and the table flags the LU's dispatcher reads.

A made-up device type (a "probe": the SPC layer plus one command of its own)
runs in a real LogicalUnit to show that the LU needs nothing of a type but
the protocol, and that UA_EXEMPT, NEEDS_MEDIUM and SERIALIZING come from the
table rows, not from opcode lists or handler code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, cast

import pytest
import trio
import trio.testing

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.lun import LogicalUnit
from pyscst.devices import spc
from pyscst.devices.device_type import DeviceType
from pyscst.devices.disk import DiskDevice
from pyscst.devices.disk_table import SBC_TABLE
from pyscst.devices.library import Library, LibraryLayout
from pyscst.devices.library_store import LibraryStore
from pyscst.devices.medium import Medium, MediumLocked
from pyscst.devices.passthrough import BackendStore
from pyscst.devices.registry import BUILTIN_HANDLERS, HANDLERS, PathRule
from pyscst.devices.stores import BackingStore, MemoryStore, NullStore
from pyscst.scsi.cdb import OpFlags, OpSpec, OpTable, Readiness, ResvClass
from pyscst.scsi.command import Buffer, DataDirection, ExecContext, Nexus, ScsiCommand
from pyscst.scsi.inquiry import StandardInquiry
from pyscst.scsi.mode import ModePages, spc_mode_page_defs
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status
from pyscst.scsi.vpd import VpdInfo, VpdPages
from tests.cdbs import TUR, sense_triplet
from tests.fake_backend import FakeBackend
from tests.fakes import run_cdb
from tests.unit.actors.test_task_set import NEXUS_A, NEXUS_B, Recorder, command, wait_answers

REPO = Path(__file__).resolve().parents[3]
PROBE_OP = 0xC0  # vendor-specific: the probe type's own command
MODE_SELECT_6 = bytes((0x15, 0x10, 0, 0, 0, 0))
MEDIUM_NOT_PRESENT = (0x2, 0x3A, 0x00)


class Probe:
    """A minimal device type: SPC rows plus PROBE_OP, whose handler can be held."""

    gate: trio.Event | None = None
    ran: ClassVar[list[int]] = []

    @staticmethod
    async def handle_probe(dev: Probe, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
        if dev.gate is not None:
            await dev.gate.wait()
        dev.log.append(cmd.tag)
        return None

    def __init__(self) -> None:
        self.name = "probe"
        self.inquiry = StandardInquiry(device_type=0x1F, product="probe")
        self.vpd = VpdPages(VpdInfo(device_id="probe", serial="p1"), device_type=0x1F)
        self.mode = ModePages(spc_mode_page_defs())
        self.medium = Medium()
        self.store = NullStore(1 << 20)
        self.read_only = False
        self.unavailable: Sense | None = None
        self.log: list[int] = []
        self.resets: list[str] = []

    descriptor_sense = False
    tas = False
    queue_algorithm_modifier = 0

    def check_ready(self, readiness: Readiness = Readiness.READY) -> None:
        self.medium.check_present()

    def not_ready_sense(self) -> Sense | None:
        return None if self.medium.present else Sense.of(
            SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)

    def mode_parameters(self, read_only: bool) -> tuple[int, int, int]:
        return 0, 0, 0

    async def resize(self, new_size: int) -> None:
        raise ValueError("no")

    def eject(self) -> bool:
        return self.medium.eject()

    def load(self) -> bool:
        return self.medium.load()

    def reset(self) -> None:
        self.resets.append("reset")

    def nexus_lost(self, nexus: Nexus) -> None:
        self.resets.append("nexus")

    def power_on(self) -> None:
        self.resets.append("power")

    async def close(self) -> None:
        pass

    table: ClassVar[OpTable] = spc.type_table([
        OpSpec(PROBE_OP, None, "PROBE", 6, spc.mask("c0 00 00 00 00 00"), DataDirection.NONE,
               handle_probe, OpFlags.NEEDS_MEDIUM | OpFlags.UA_EXEMPT, ResvClass.ALLOWED),
    ])


# --- the SPC layer and table overlays -------------------------------------------------


def test_every_type_table_starts_from_the_spc_layer() -> None:
    for table in (SBC_TABLE, Probe.table):
        for row in spc.SPC_SPECS:
            assert table.get(row.opcode) is row
    assert PROBE_OP in Probe.table and PROBE_OP not in SBC_TABLE
    # the LU-owned half of SPC merges with any type's table
    assert len(CORE_TABLE.merged(Probe.table)) == len(CORE_TABLE) + len(Probe.table)


def test_a_type_row_overrides_the_spc_row() -> None:
    async def other(dev: object, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
        return None

    row = OpSpec(0x00, None, "TEST UNIT READY", 6, bytes(6), DataDirection.NONE, other)
    table = spc.type_table([row])
    assert table.get(0x00) is row and len(table) == len(spc.SPC_TABLE)
    with pytest.raises(ValueError, match="duplicate"):
        spc.type_table([row, row])


def test_sbc_vpd_and_mode_pages_are_added_to_the_spc_ones() -> None:
    probe, disk = Probe(), DiskDevice("d", MemoryStore(1 << 20))
    assert probe.vpd.page_codes == [0x00, 0x80, 0x83, 0x86]
    assert disk.vpd.page_codes == [0x00, 0x80, 0x83, 0x86, 0x8F, 0xB0, 0xB1, 0xB2]
    with pytest.raises(ScsiError):
        probe.mode.render(0x08, 0, 0)  # no Caching page on a non-disk
    assert disk.mode.render(0x08, 0, 0)[0] == 0x08
    nexus = NEXUS_A
    assert probe.vpd.render(0x80, nexus)[0] == 0x1F  # the type's peripheral device type


@pytest.mark.parametrize(("rotational", "rate"), [(False, 1), (True, 0)])
def test_rotational_reaches_vpd_b1(rotational: bool, rate: int) -> None:
    disk = DiskDevice("d", MemoryStore(1 << 20), rotational=rotational)
    assert disk.vpd.render(0xB1, NEXUS_A)[4:6] == rate.to_bytes(2, "big")


# --- the registry ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_every_registered_handler_builds_a_device_type_and_is_documented(
    name: str, tmp_path: Path
) -> None:
    info = HANDLERS[name]
    store: BackingStore = MemoryStore(1 << 20)
    if info.path is PathRule.DIRECTORY:  # a library: its store is its inventory
        library = Library(LibraryLayout())
        store = LibraryStore(library, tmp_path / "lib.json", tmp_path, (tmp_path,))
    elif info.backend:  # pass-through: its store is its backend
        store = BackendStore(FakeBackend())
    device = info.build(_Settings(name), store)
    assert isinstance(device, DeviceType)
    if name != "vtape":
        # the tape fault hook's default: a ``tape`` rule injects nothing here
        assert device.arm_fault("read_error", 0, 0, frozenset()) is False
    if name not in {info.name for info in BUILTIN_HANDLERS}:
        return  # an installed plugin's handler: documented in its own package
    readme = (REPO / "README.md").read_text()
    assert re.search(rf"`{name}`", readme), f"README.md does not document handler {name}"


class _Settings:
    def __init__(self, name: str) -> None:
        self.name = name
        self.size = 1 << 20
        self.block_size = 512
        self.path = None
        self.read_only = False
        self.write_cache = True
        self.serial = ""
        self.rotational = False
        self.removable = True
        self.physical_block_size = 4096
        self.io_engine = "auto"
        self.library = None


# --- the medium --------------------------------------------------------------------


def test_medium_lock_is_per_nexus_and_refuses_eject_and_load() -> None:
    medium = Medium()
    medium.set_prevent(NEXUS_A, True)
    medium.set_prevent(NEXUS_B, True)
    with pytest.raises(MediumLocked):
        medium.eject()
    medium.set_prevent(NEXUS_A, False)
    assert medium.locked  # B still holds it
    medium.nexus_lost(NEXUS_B)
    assert medium.eject() and not medium.present and not medium.eject()
    with pytest.raises(ScsiError) as err:
        medium.check_present()
    assert err.value.sense is not None and err.value.sense.key == SenseKey.NOT_READY
    medium.set_prevent(NEXUS_A, True)
    with pytest.raises(MediumLocked):
        medium.load()
    medium.unlock_all()
    assert medium.load() and medium.present


async def test_fixed_disk_refuses_operator_eject() -> None:
    disk = DiskDevice("d", MemoryStore(1 << 20))
    with pytest.raises(ValueError, match="not removable"):
        disk.eject()
    removable = DiskDevice("r", MemoryStore(1 << 20), removable=True)
    assert removable.eject()
    out = await run_cdb(removable, TUR)
    assert out.sense is not None and out.sense.key == SenseKey.NOT_READY


# --- the dispatcher reads the flags ---------------------------------------------------


async def _probe_lu(probe: Probe, nursery: trio.Nursery) -> LogicalUnit:
    lu = LogicalUnit("probe", lambda: cast(DeviceType, probe), CORE_TABLE)
    await nursery.start(lu.run)
    return lu


async def test_ua_exemption_comes_from_the_row_flag() -> None:
    """PROBE_OP is UA_EXEMPT in its row: it runs past a pending UA (the old
    LU exempted a fixed list of opcodes), and TUR does not."""
    probe = Probe()
    async with trio.open_nursery() as nursery:
        lu = await _probe_lu(probe, nursery)
        t = Recorder()
        lu.submit(command(t, bytes((PROBE_OP, 0, 0, 0, 0, 0)), 1), 0, False)
        lu.submit(command(t, TUR, 2), 0, False)
        await wait_answers(t, 2)
        assert dict(t.answered) == {1: Status.GOOD, 2: Status.CHECK_CONDITION}
        assert sense_triplet(t.sense_by_tag[2] or b"") == (0x6, 0x29, 0x00)
        nursery.cancel_scope.cancel()


async def test_readiness_is_checked_by_the_lu_from_the_row() -> None:
    """The probe's handler never checks readiness: the NEEDS_MEDIUM flag does."""
    probe = Probe()
    probe.medium.eject()
    async with trio.open_nursery() as nursery:
        lu = await _probe_lu(probe, nursery)
        t = Recorder()
        lu.submit(command(t, bytes((PROBE_OP, 0, 0, 0, 0, 0)), 1), 0, False)
        lu.submit(command(t, bytes((0x12, 0, 0, 0, 36, 0)), 2), 0, False)  # INQUIRY: no flag
        await wait_answers(t, 2)
        assert dict(t.answered) == {1: Status.CHECK_CONDITION, 2: Status.GOOD}
        assert sense_triplet(t.sense_by_tag[1] or b"") == MEDIUM_NOT_PRESENT
        assert probe.log == []
        nursery.cancel_scope.cancel()


async def test_serializing_command_waits_for_older_and_holds_back_younger() -> None:
    """MODE SELECT is SERIALIZING: it runs as if ORDERED (SIMPLE as sent)."""
    probe = Probe()
    probe.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        lu = await _probe_lu(probe, nursery)
        first = Recorder()
        lu.submit(command(first, TUR, 9), 0, False)  # takes the power-on UA
        await wait_answers(first, 1)
        t = Recorder()
        probe_cdb = bytes((PROBE_OP, 0, 0, 0, 0, 0))
        lu.submit(command(t, probe_cdb, 1), 0, False)  # held at the gate
        lu.submit(command(t, MODE_SELECT_6, 2), 0, False)
        await trio.testing.wait_all_tasks_blocked()
        assert t.answered == []  # MODE SELECT waits for the held command
        lu.submit(command(t, probe_cdb, 3, nexus=NEXUS_A), 0, False)
        await trio.testing.wait_all_tasks_blocked()
        assert t.answered == []
        probe.gate.set()
        await wait_answers(t, 3)
        assert [tag for tag, _ in t.answered] == [1, 2, 3]
        nursery.cancel_scope.cancel()


async def test_reset_and_nexus_loss_reach_the_type_through_the_protocol() -> None:
    from pyscst.actors.messages import NexusLoss, ResetLogicalUnit, call

    probe = Probe()
    async with trio.open_nursery() as nursery:
        lu = await _probe_lu(probe, nursery)
        await call(lu.mailbox, ResetLogicalUnit(NEXUS_A, Asc.POWER_ON_OCCURRED))
        await call(lu.mailbox, ResetLogicalUnit(NEXUS_A, Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED))
        await lu.mailbox.send(NexusLoss(NEXUS_A))
        await trio.testing.wait_all_tasks_blocked()
        assert probe.resets == ["power", "reset", "nexus"]
        nursery.cancel_scope.cancel()
