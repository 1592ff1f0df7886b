"""Target port groups: the one API that changes access states, and what a change does."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import trio.lowlevel
import trio.testing

from pyscst.actors.alua import Cause, PortGroups, PortGroupSpec
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.session import LunMapping
from pyscst.actors.target import Target
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.alua import AccessState, StatusCode
from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import Asc, Status
from tests.fakes import FakeTransport, Response, lu_on, make_cmd

A, B = ("10.0.0.1", 3260), ("10.0.0.2", 3260)
SPECS = [
    PortGroupSpec("a", 1, (A,)),
    PortGroupSpec("b", 2, (B,), AccessState.STANDBY, relative_port=7, preferred=True),
]
NEXUS = Nexus.iscsi("iqn.2026-11.org.example:h", 1, "iqn.2026-11.org.pyscst:t", 2, 7, 2)


class Recorder:
    def __init__(self) -> None:
        self.notified: list[Nexus | None] = []
        self.changes: list[tuple[str, AccessState, AccessState, Cause]] = []

    def notify(self, by: Nexus | None) -> None:
        self.notified.append(by)

    def listen(self, name: str, old: AccessState, new: AccessState, cause: Cause) -> None:
        self.changes.append((name, old, new, cause))


def groups_with(rec: Recorder) -> PortGroups:
    groups = PortGroups("t", SPECS, transition_time=9, notify=rec.notify)
    groups.subscribe(rec.listen)
    return groups


def test_groups_by_name_id_and_portal() -> None:
    groups = PortGroups("t", SPECS)
    assert groups.get("b") is groups.get(2) is groups.get("2") is groups.group_at(B)
    assert groups.get("b").relative_port == 7 and groups.get("a").relative_port == 1
    assert groups.group_at(("10.0.0.3", 3260)) is None
    with pytest.raises(KeyError):
        groups.get("c")
    with pytest.raises(KeyError):
        groups.get(3)
    assert [(r.group_id, r.state, r.relative_ports, r.preferred) for r in groups.reports()] == [
        (1, AccessState.ACTIVE_OPTIMIZED, (1,), False), (2, AccessState.STANDBY, (7,), True),
    ]


def test_set_state_notifies_once_per_change_and_names_the_cause() -> None:
    rec = Recorder()
    groups = groups_with(rec)
    assert groups.set_state("b", AccessState.ACTIVE_OPTIMIZED, cause=Cause.EXPLICIT, by=NEXUS)
    assert not groups.set_state(2, AccessState.ACTIVE_OPTIMIZED)  # no change: no news
    assert rec.notified == [NEXUS]
    assert rec.changes == [
        ("b", AccessState.STANDBY, AccessState.ACTIVE_OPTIMIZED, Cause.EXPLICIT)
    ]
    assert groups.get("b").status is StatusCode.ALTERED_BY_EXPLICIT_STPG
    groups.set_state("a", AccessState.OFFLINE)
    assert groups.get("a").status is StatusCode.ALTERED_BY_IMPLICIT_ALUA
    with pytest.raises(ValueError):
        groups.set_state("a", AccessState.TRANSITIONING)


def test_a_failing_listener_does_not_stop_the_change() -> None:
    rec = Recorder()
    groups = groups_with(rec)

    def broken(*_: Any) -> None:
        raise RuntimeError("listener bug")

    groups.subscribe(broken)
    unsubscribe = groups.subscribe(rec.listen)
    assert groups.set_state("a", AccessState.STANDBY)
    assert groups.state_of("a") is AccessState.STANDBY and len(rec.changes) == 2
    unsubscribe()
    groups.set_state("a", AccessState.ACTIVE_OPTIMIZED)
    assert len(rec.changes) == 3


async def test_transition_passes_through_transitioning() -> None:
    rec = Recorder()
    groups = groups_with(rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(groups.transition, "a", AccessState.STANDBY, 0.2)
        await trio.testing.wait_all_tasks_blocked()
        assert groups.state_of("a") is AccessState.TRANSITIONING
    assert groups.state_of("a") is AccessState.STANDBY
    assert [new for _, _, new, _ in rec.changes] == [
        AccessState.TRANSITIONING, AccessState.STANDBY
    ]


async def test_a_newer_change_supersedes_a_pending_transition() -> None:
    groups = groups_with(Recorder())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(groups.transition, "a", AccessState.STANDBY, 0.2)
        await trio.testing.wait_all_tasks_blocked()
        groups.set_state("a", AccessState.UNAVAILABLE)
    assert groups.state_of("a") is AccessState.UNAVAILABLE


async def test_a_cancelled_transition_arrives_at_once() -> None:
    groups = groups_with(Recorder())
    with trio.move_on_after(0.05):
        await groups.transition("a", AccessState.STANDBY, 60)
    assert groups.state_of("a") is AccessState.STANDBY


def test_reconfigure_keeps_live_states_of_groups_that_stay() -> None:
    rec = Recorder()
    groups = groups_with(rec)
    groups.set_state("a", AccessState.STANDBY)
    groups.reconfigure(
        [PortGroupSpec("a", 5, (B,)), PortGroupSpec("c", 6, (A,), AccessState.UNAVAILABLE),
         PortGroupSpec("b", 2, (), AccessState.ACTIVE_NON_OPTIMIZED)],
        explicit=False, transition_time=0,
    )  # fmt: skip
    assert groups.get("a").state is AccessState.STANDBY and groups.get("a").group_id == 5
    # b's configured state changed: that is applied (an implicit transition)
    assert groups.get("b").state is AccessState.ACTIVE_NON_OPTIMIZED
    assert rec.changes[-1] == (
        "b", AccessState.STANDBY, AccessState.ACTIVE_NON_OPTIMIZED, Cause.IMPLICIT
    )
    assert groups.get("c").state is AccessState.UNAVAILABLE
    assert groups.group_at(A) is groups.get("c") and groups.get("a").tpgs == 0x10
    groups.reconfigure([PortGroupSpec("a", 5, (B,))], explicit=True, transition_time=0)
    with pytest.raises(KeyError):
        groups.get("b")


class FakeLu:
    """Only what the target calls on its LUs when a state changes."""

    def __init__(self) -> None:
        self.raised: list[tuple[Asc, Nexus | None, str | None]] = []

    def raise_ua(self, asc: Asc, exclude: Nexus | None = None, target: str | None = None) -> None:
        self.raised.append((asc, exclude, target))


def test_a_targets_state_change_raises_2a06_on_its_own_nexuses() -> None:
    lu = FakeLu()
    target = Target(
        "iqn.2026-11.org.pyscst:t", portals=[A, B],
        default_luns={0: LunMapping(cast(LogicalUnit, lu))},
    )  # fmt: skip
    assert target.tag_for(A) == 1 and target.alua is None
    target.set_port_groups(SPECS, explicit=True)
    assert target.alua is not None
    assert target.tag_for(A) == 1 and target.tag_for(B) == 7
    target.alua.set_state("a", AccessState.STANDBY, by=NEXUS)
    assert lu.raised == [(Asc.ASYMMETRIC_ACCESS_STATE_CHANGED, NEXUS, target.name)]
    target.set_port_groups([])
    assert target.alua is None and target.tag_for(B) == 1


# -- the logical unit: the dispatcher's check and target-scoped 2A/06 -------------------

NEXUS_T1 = Nexus.iscsi("iqn.2026-11.org.example:h", 1, "iqn.2026-11.org.pyscst:t1", 1, 1, 1)
NEXUS_T2 = Nexus.iscsi("iqn.2026-11.org.example:h", 1, "iqn.2026-11.org.pyscst:t2", 1)
READ = bytes((0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0))


async def answer(lu: LogicalUnit, cdb: bytes, nexus: Nexus, port: Any = None) -> Response:
    transport = FakeTransport()
    cmd = make_cmd(cdb, transport, expected_length=4096, nexus=nexus)
    cmd.port_group = port
    lu.submit(cmd, 0, False)
    while not transport.responses:
        await trio.lowlevel.checkpoint()
    return transport.responses[0]


def asc_of(r: Response) -> tuple[int, int, int]:
    assert r.status == Status.CHECK_CONDITION and r.sense is not None
    return r.sense[2] & 0x0F, r.sense[12], r.sense[13]


async def test_the_lu_checks_each_command_against_its_ports_state() -> None:
    groups = PortGroups("iqn.2026-11.org.pyscst:t1", SPECS)
    standby = groups.get("b")
    async with lu_on(MemoryStore(1 << 20)) as lu:
        # a pending UNIT ATTENTION is reported first, then the state decides
        assert asc_of(await answer(lu, READ, NEXUS_T1, standby)) == (6, 0x29, 0x00)
        assert asc_of(await answer(lu, READ, NEXUS_T1, standby)) == (2, 0x04, 0x0B)
        assert (await answer(lu, bytes((0x12, 0, 0, 0, 36, 0)), NEXUS_T1, standby)).status == (
            Status.GOOD
        )
        # INQUIRY shows the port's TPGS bits
        inquiry = await answer(lu, bytes((0x12, 0, 0, 0, 36, 0)), NEXUS_T1, standby)
        assert inquiry.data is not None and inquiry.data[5] & 0x30 == 0x30
        groups.set_state("b", AccessState.ACTIVE_NON_OPTIMIZED)
        assert (await answer(lu, READ, NEXUS_T1, standby)).status == Status.GOOD
        # REPORT / SET TPGS without a port group: not a command of this target
        rtpg = bytes((0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0))
        assert asc_of(await answer(lu, rtpg, NEXUS_T1)) == (5, 0x20, 0x00)


async def test_a_state_change_reaches_only_the_nexuses_of_its_target() -> None:
    async with lu_on(MemoryStore(1 << 20)) as lu:
        for nexus in (NEXUS_T1, NEXUS_T2):
            await answer(lu, bytes(6), nexus)  # the power-on UA goes
            assert not lu.has_unit_attention(nexus)
        lu.raise_ua(Asc.ASYMMETRIC_ACCESS_STATE_CHANGED, target=NEXUS_T1.target_name)
        assert lu.has_unit_attention(NEXUS_T1) and not lu.has_unit_attention(NEXUS_T2)
        assert asc_of(await answer(lu, bytes(6), NEXUS_T1)) == (6, 0x2A, 0x06)


async def test_implicit_only_refuses_set_tpgs_and_says_so_in_inquiry() -> None:
    groups = PortGroups("iqn.2026-11.org.pyscst:t1", SPECS, explicit=False)
    port = groups.get("a")
    async with lu_on(MemoryStore(1 << 20)) as lu:
        await answer(lu, bytes(6), NEXUS_T1, port)  # the power-on UA goes
        inquiry = await answer(lu, bytes((0x12, 0, 0, 0, 36, 0)), NEXUS_T1, port)
        assert inquiry.data is not None and inquiry.data[5] & 0x30 == 0x10
        stpg = bytes((0xA4, 0x0A, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0))
        assert asc_of(await answer(lu, stpg, NEXUS_T1, port)) == (5, 0x20, 0x00)
        assert groups.state_of("a") is AccessState.ACTIVE_OPTIMIZED


class SlowReads(MemoryStore):
    """Reads wait for ``gate`` (and never take the synchronous fast path)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.gate = trio.Event()

    def read_now(self, offset: int, buf: memoryview) -> bool:
        return False

    async def readinto(self, offset: int, buf: memoryview) -> None:
        await self.gate.wait()
        await super().readinto(offset, buf)


async def test_a_command_admitted_before_a_change_runs_to_its_end() -> None:
    """The state is checked on arrival: a READ already in the task set when its
    port goes standby still answers GOOD; the next one gets 04/0B."""
    store = SlowReads(1 << 20)
    groups = PortGroups("iqn.2026-11.org.pyscst:t1", SPECS)
    port = groups.get("a")
    async with lu_on(store) as lu:
        store.gate.set()
        await answer(lu, READ, NEXUS_T1, port)  # the power-on UA goes
        store.gate = trio.Event()
        transport = FakeTransport()
        cmd = make_cmd(READ, transport, expected_length=4096, nexus=NEXUS_T1)
        cmd.port_group = port
        lu.submit(cmd, 0, False)
        await trio.testing.wait_all_tasks_blocked()
        assert not transport.responses and lu.task_count() == 1
        groups.set_state("a", AccessState.STANDBY)  # (no target here: no 2A/06)
        assert asc_of(await answer(lu, READ, NEXUS_T1, port)) == (2, 0x04, 0x0B)
        store.gate.set()
        while not transport.responses:
            await trio.lowlevel.checkpoint()
        assert transport.responses[0].status == Status.GOOD
