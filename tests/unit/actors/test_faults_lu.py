"""The logical unit's contract with the fault engine, without any network.

With no command rule armed the synchronous fast path answers a cache-hit
READ inside ``submit`` (fault injection costs nothing there); once a rule is
armed, even one that never matches, every command takes the awaiting path,
where a fault can delay, hang or drop it. Disarming brings the fast path back.
"""

from __future__ import annotations

import struct

import trio

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.faults import Action, ActionKind, FaultEngine, FaultRule, Match
from pyscst.actors.lun import LogicalUnit
from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.command import DataDirection, Nexus, ScsiCommand, TaskAttribute
from pyscst.scsi.sense import Status
from tests.fakes import FakeTransport

NEXUS = Nexus.iscsi("iqn.2026-11.org.example:a", 1, "iqn.2026-11.org.pyscst:t", 1)
READ10 = struct.pack(">BBIBHB", 0x28, 0, 4, 0, 1, 0)


def read(t: FakeTransport, tag: int) -> ScsiCommand:
    return ScsiCommand(cdb=READ10, lun=0, tag=tag, attr=TaskAttribute.SIMPLE,
                       expected_length=512, direction=DataDirection.READ, nexus=NEXUS,
                       transport=t)  # fmt: skip


async def test_fast_path_only_while_no_command_rule_is_armed() -> None:
    engine = FaultEngine()
    device = DiskDevice("d0", MemoryStore(1 << 20), block_size=512)
    lu = LogicalUnit("d0", lambda: device, CORE_TABLE, faults=engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        t = FakeTransport()
        lu.submit(read(t, 1), 0, False)  # the power-on UA, answered at once
        assert [r.status for r in t.responses] == [Status.CHECK_CONDITION]

        lu.submit(read(t, 2), 0, False)
        assert len(t.responses) == 2  # answered inside submit: no task spawned

        never = FaultRule("never", Action(ActionKind.HANG), Match(lun=7))
        engine.add(never, trio.current_time())
        lu.submit(read(t, 3), 0, False)
        assert len(t.responses) == 2  # armed: the command waits for its task
        with trio.fail_after(5):
            while len(t.responses) < 3:
                await trio.sleep(0)
        assert t.responses[2].status == Status.GOOD
        assert engine.status("never")[0]["matches"] == 0

        engine.set_enabled("never", False, trio.current_time())
        lu.submit(read(t, 4), 0, False)
        assert len(t.responses) == 4 and t.responses[3].status == Status.GOOD
        nursery.cancel_scope.cancel()
