"""Hostile CDBs against the disk and the CD-ROM, property-tested (the tape and
the changer have their own: test_ssc_fuzz.py, test_changer.py).

Each step is a command of the device type's own table with its CDB drawn the
way the fuzz campaign draws it (``tests.fuzz.mutate.table_cdb``: bits inside
the usage mask, so the command reaches the handler, now and then outside it
or cut short) and random data-out. Whatever the sequence, every answer is data,
GOOD or a ScsiError carrying sense: never another exception.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyscst.devices.cdrom import CdromDevice
from pyscst.devices.device_type import DeviceType
from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.sense import ScsiError, Status
from tests.fakes import FakeContext, run_cdb
from tests.fuzz.mutate import table_cdb

SECTOR = 2048


def steps() -> st.SearchStrategy[list[tuple[random.Random, bytes]]]:
    return st.lists(
        st.tuples(st.randoms(use_true_random=False), st.binary(max_size=1100)),
        min_size=1,
        max_size=10,
    )


class BackgroundContext(FakeContext):
    """Runs what a handler starts in the background (a SANITIZE), as the LU's
    nursery would: with IMMED=0 the handler waits for it to end."""

    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__()
        self.nursery = nursery

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.nursery.start_soon(fn)


def run_steps(device: DeviceType, plan: list[tuple[random.Random, bytes]]) -> None:
    specs = device.table.specs

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            ctx = BackgroundContext(nursery)
            for rng, data in plan:
                cdb = table_cdb(rng, rng.choice(specs))
                with trio.fail_after(30):  # (a hang is a failure, not a stalled test)
                    out = await run_cdb(device, cdb, data_out=data, ctx=ctx)
                if out.error is not None:
                    assert isinstance(out.error, ScsiError), (cdb.hex(), out.error)
                    if out.error.status == Status.CHECK_CONDITION:
                        assert out.error.sense is not None, cdb.hex()

    trio.run(run)


PROFILE = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROFILE
@given(steps(), st.booleans())
def test_disk_answers_any_table_command_with_status(
    plan: list[tuple[random.Random, bytes]], removable: bool
) -> None:
    run_steps(DiskDevice("d0", MemoryStore(1 << 20), removable=removable), plan)


@PROFILE
@given(steps(), st.booleans())
def test_cdrom_answers_any_table_command_with_status(
    plan: list[tuple[random.Random, bytes]], loaded: bool
) -> None:
    store = MemoryStore(64 * SECTOR, read_only=True) if loaded else None
    run_steps(CdromDevice("cd", store), plan)
