"""What the ALUA access check costs the command hot path, measured, not assumed.

Times ``LogicalUnit.submit`` of 4 KiB READ(10)s from a RAM disk (the harness
of faults_cost.py: the synchronous fast path) for a command from a target
without port groups (``port_group`` None: one attribute test) and from a port
in an active/optimized and an active/non-optimized group (one comparison more).
Prints ns per command, best of several rounds, interleaved. A script, never a
timed test::

    .venv/bin/python benchmarks/alua_cost.py [--commands N] [--rounds R]

On a loaded machine wall clock is noise at this scale; count instructions of
one case at two command counts instead (docs/alua.md "Cost" has the numbers)::

    cd benchmarks && PYTHONHASHSEED=0 valgrind --tool=callgrind \
        ../.venv/bin/python alua_cost.py --case ao --commands 1000   # and 5000
"""

from __future__ import annotations

import argparse
import functools

import trio

from faults_cost import compare, ns_per_command
from pyscst.actors.alua import PortGroups, PortGroupSpec
from pyscst.scsi.alua import AccessState

GROUPS = PortGroups("t", [
    PortGroupSpec("ao", 1, ()),
    PortGroupSpec("ano", 2, (), AccessState.ACTIVE_NON_OPTIMIZED),
])  # fmt: skip
CASES = {"none": None, "ao": GROUPS.get("ao"), "ano": GROUPS.get("ano")}
NAMES = {"none": "no port groups", "ao": "active/optimized port",
         "ano": "active/non-optimized port"}  # fmt: skip


async def one_case(case: str, commands: int) -> None:
    """One case, one round: for instruction counts (valgrind --tool=callgrind)
    at two command counts, whose difference is the per-command cost."""
    await ns_per_command(None, commands, 1, port_group=CASES[case])


async def main(commands: int, rounds: int) -> None:
    await compare(
        [(NAMES[key], functools.partial(ns_per_command, None, commands, rounds, port_group=port))
         for key, port in CASES.items()],
        f"LogicalUnit.submit, 4 KiB READ(10) from RAM, {commands} commands x {rounds} rounds",
    )  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--case", choices=sorted(CASES), help="run one case once")
    args = parser.parse_args()
    if args.case:
        trio.run(one_case, args.case, args.commands)
    else:
        trio.run(main, args.commands, args.rounds)
