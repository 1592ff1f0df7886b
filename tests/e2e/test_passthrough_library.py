"""Issue 15: a tgt virtual tape library (its ``smc`` changer and ``ssc``
drives) exported through pyscst ``passthrough`` devices and driven by the tape
library's end-to-end backup job, the same job (tests/backup_job.py) that
drives pyscst's own ``vchanger`` + ``vtape`` in tests/e2e/test_vchanger.py.

What tgt cannot do is left out and said so (docs/tape.md lists its quirks):
its drives answer READ POSITION with zeros and LOCATE with 20/00, so the job
goes back by REWIND + SPACE filemarks and checks no positions; its changer
loads a drive silently (no 28/00); a READ(6) of a record shorter than asked
sends only (request - record) bytes, so the restore asks for twice the
record size; its READ ELEMENT STATUS always drops its
last descriptor, so the library gets a third drive that is never used and
the inventory reads only the whole descriptors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.backup_job import Library, backup_job, inventory
from tests.cdbs import TUR, sense_triplet
from tests.daemon import running_daemon
from tests.e2e.test_passthrough import _until_tape_ready
from tests.e2e.test_vtape import RECORD, tar_archive
from tests.helpers_tgt import running_tgt_library, tgtd_unavailable

pytestmark = pytest.mark.skipif(tgtd_unavailable() is not None, reason=str(tgtd_unavailable()))

CHANGER, T0, T1 = 0, 1, 2
LUNS = ({"lun": 0, "device": "lib0"}, {"lun": 1, "device": "t0"}, {"lun": 2, "device": "t1"})
#: pyscst's default element addresses, which the tgt library is given too
S0, S2, D0, D1 = 0x0400, 0x0402, 0x0100, 0x0101
LOCATE = bytes((0x2B, 0, 0, 0, 0, 0, 2, 0, 0, 0))


async def _job(host: str, port: int, target: str, archives: list[bytes]) -> dict[int, str]:
    async with await Initiator.connect(host, port, target_name=target) as ini:
        for lun in (CHANGER, T0, T1):
            r = await ini.execute(lun, TUR)
            assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)  # pyscst's power-on UA
        for lun in (T0, T1):  # tgt's empty drives: no medium
            assert sense_triplet((await ini.execute(lun, TUR)).sense) == (0x2, 0x3A, 0x00)
        lib = Library(CHANGER, (T0, T1), S0, (D0, D1), positions=False, announces_load=False,
                      cuts_reports=True, read_size=2 * RECORD)  # fmt: skip
        assert await inventory(ini, lib) == {S0: "A00001L8", S2: "A00002L8"}
        await backup_job(ini, lib, archives)
        # why the job does not LOCATE: tgt's ssc does not know it, and says so
        r = await ini.execute(T1, LOCATE)
        assert sense_triplet(r.sense) == (0x5, 0x20, 0x00)
        return await inventory(ini, lib)


def test_backup_job_through_a_passed_through_tgt_library(tmp_path: Path) -> None:
    archives = [tar_archive(i, (3 * RECORD) // 2 + 1000 * i) for i in range(4)]
    with running_tgt_library(tmp_path, drives=3, slots=4, mail_slots=1,
                             cartridges={1: "A00001L8", 3: "A00002L8"}) as tgt:  # fmt: skip
        base = f"iscsi://{tgt.host}:{tgt.port}/{tgt.target_name}/"
        devices = {
            "lib0": {"handler": "passthrough", "backend": f"{base}{tgt.changer_lun}"},
            "t0": {"handler": "passthrough", "backend": f"{base}{tgt.drive_luns[0]}"},
            "t1": {"handler": "passthrough", "backend": f"{base}{tgt.drive_luns[1]}"},
        }
        with running_daemon(tmp_path / "d", devices=devices, luns=LUNS) as daemon:
            trio.run(_until_tape_ready, daemon, (CHANGER, T0, T1))
            final = trio.run(_job, daemon.host, daemon.port, daemon.target, archives)
        cartridge = (tgt.media_home / "A00001L8").read_bytes()
    assert final == {D1: "A00001L8", S2: "A00002L8"}
    # the records are tgt's: its cartridge file holds every archive's bytes
    for data in archives:
        assert data[:RECORD] in cartridge and data[-4096:] in cartridge
