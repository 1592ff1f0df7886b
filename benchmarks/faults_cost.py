"""What fault injection costs the command hot path (issue 5), measured, not assumed.

Times ``LogicalUnit.submit`` of 4 KiB READ(10)s from a RAM disk (the
synchronous fast path: no task spawned, the answer handed to the transport at
once) with ``faults=None`` and with a :class:`FaultEngine` holding no rules,
and, for scale, with one armed rule that never matches (every command then
takes the awaiting path and the engine's matcher). Prints ns per command,
best of several rounds. A script, never a timed test::

    .venv/bin/python benchmarks/faults_cost.py [--commands N] [--rounds R]
"""

from __future__ import annotations

import argparse
import functools
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.lowlevel

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.faults import Action, ActionKind, FaultEngine, FaultRule, Match
from pyscst.actors.lun import LogicalUnit
from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.command import Buffer, DataDirection, Nexus, ScsiCommand, TaskAttribute
from pyscst.scsi.sense import Status

BS = 512
NEXUS = Nexus.iscsi("iqn.2026-11.org.example:bench", 1, "iqn.2026-11.org.pyscst:bench", 1)
READ4K = struct.pack(">BBIBHB", 0x28, 0, 8, 0, 8, 0)


class CountingTransport:
    """Takes every answer at once and counts it."""

    def __init__(self) -> None:
        self.answered = 0
        self.good = 0

    def respond_now(self, cmd: Any, status: Status, sense: Any, data: Buffer | None) -> bool:
        self._count(status)
        return True

    async def send_response(self, cmd: Any, status: Status, sense: Any, data: Any) -> None:
        self._count(status)

    def _count(self, status: Status) -> None:
        self.answered += 1
        self.good += status == Status.GOOD

    def command_finished(self, cmd: Any) -> None:
        pass

    async def receive_data(self, cmd: Any, length: int) -> memoryview:
        raise AssertionError("reads only")

    def data_now(self, cmd: Any, length: int) -> memoryview | None:
        raise AssertionError("reads only")

    def data_later(self, cmd: Any) -> None:
        raise AssertionError("reads only")

    def drop(self, cmd: Any, session: bool) -> None:
        raise AssertionError("no drop rule here")


def command(t: CountingTransport, tag: int, port_group: Any = None) -> ScsiCommand:
    cmd = ScsiCommand(cdb=READ4K, lun=0, tag=tag, attr=TaskAttribute.SIMPLE,
                      expected_length=4096, direction=DataDirection.READ, nexus=NEXUS,
                      transport=t)  # fmt: skip
    cmd.port_group = port_group  # as Session.dispatch sets it (ALUA: alua_cost.py)
    return cmd


async def ns_per_command(
    faults: FaultEngine | None, commands: int, rounds: int, port_group: Any = None
) -> float:
    store = MemoryStore(1 << 20)
    device = DiskDevice("d0", store, block_size=BS)
    lu = LogicalUnit("d0", lambda: device, CORE_TABLE, faults=faults)
    best = float("inf")
    async with trio.open_nursery() as nursery:
        await nursery.start(lu.run)
        t = CountingTransport()
        lu.submit(command(t, 1), 0, False)  # the power-on unit attention
        while t.answered < 1:
            await trio.lowlevel.checkpoint()
        cmds = [command(t, tag, port_group) for tag in range(2, commands + 2)]
        for _ in range(rounds):
            t.answered = t.good = 0
            start = time.perf_counter_ns()
            for cmd in cmds:
                lu.submit(cmd, 0, False)
                if t.answered < 1:  # the awaiting path: let the task finish, like QD 1
                    while t.answered < 1:
                        await trio.lowlevel.checkpoint()
                t.answered = 0
            best = min(best, (time.perf_counter_ns() - start) / commands)
            assert t.good == commands, "every command must end GOOD"
        nursery.cancel_scope.cancel()
    return best


async def main(commands: int, rounds: int) -> None:
    never = FaultRule("never", Action(ActionKind.HANG), Match(lun=99))
    cases: list[tuple[str, FaultEngine | None]] = [
        ("faults=None", None),
        ("engine, no rules", FaultEngine()),
        ("engine, 1 armed rule (never matches)", FaultEngine([never])),
    ]
    await compare(
        [(name, functools.partial(ns_per_command, engine, commands, rounds))
         for name, engine in cases],
        f"LogicalUnit.submit, 4 KiB READ(10) from RAM, {commands} commands x {rounds} rounds",
    )  # fmt: skip


async def compare(cases: list[tuple[str, Callable[[], Awaitable[float]]]], title: str) -> None:
    """Measure each case (ns/command) interleaved, the order flipped each pass so
    drift and warm-up even out; print the best of each against the first."""
    results: dict[str, float] = {}
    for n in range(4):
        for name, measure in cases if n % 2 else cases[::-1]:
            ns = await measure()
            results[name] = min(results.get(name, ns), ns)
    base = results[cases[0][0]]
    print(title)
    for name, _ in cases:
        ns = results[name]
        print(f"  {name:<40} {ns:8.0f} ns/command  ({(ns - base) / base:+.1%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trio.run(main, args.commands, args.rounds)
