"""Hostile CDBs against the tape drive, property-tested: whatever the bytes of
a CDB of any opcode the drive knows (and whatever data-out follows), the
answer is GOOD or a CHECK CONDITION with sense, never an exception, and the
drive's position stays inside its partition."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyscst.devices.tape import TapeDevice
from pyscst.devices.tape_cartridge import create_blank, open_cartridge
from pyscst.scsi.sense import ScsiError, Status
from tests.fakes import run_cdb

OPCODES = sorted({spec.opcode for spec in TapeDevice.table})
LENGTHS = {spec.opcode: spec.cdb_length for spec in TapeDevice.table}


@st.composite
def cdbs(draw: st.DrawFn) -> bytes:
    op = draw(st.sampled_from(OPCODES))
    body = draw(st.binary(min_size=LENGTHS[op] - 1, max_size=LENGTHS[op] - 1))
    if draw(st.booleans()):  # mostly well-formed small counts, sometimes anything
        body = body[:1] + bytes(len(body) - 1)
        if len(body) >= 4:
            body = body[:3] + bytes((draw(st.integers(0, 8)),)) + body[4:]
    return bytes((op,)) + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(cdbs(), st.binary(max_size=600)), min_size=1, max_size=12))
def test_any_cdb_sequence_answers_with_status_never_an_exception(
    steps: list[tuple[bytes, bytes]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = create_blank(Path(tmp) / "F", "F00001L8", 2 << 20, partitions=[1 << 20, 1 << 20])
        drive = TapeDevice("t0", open_cartridge(path))

        async def run() -> None:
            for cdb, data in steps:
                out = await run_cdb(drive, cdb, data_out=data)
                if out.error is not None:
                    assert isinstance(out.error, ScsiError)
                    if out.error.status == Status.CHECK_CONDITION:
                        assert out.error.sense is not None
                if drive.cartridge is not None:
                    assert 0 <= drive.position <= drive.part.eod
                    assert drive.partition < len(drive.cartridge.partitions)

        trio.run(run)
        if drive.cartridge is not None:
            drive.cartridge.close_now()
