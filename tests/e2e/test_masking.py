"""LUN masking and per-nexus unit attentions, seen from real iSCSI initiators.

Three initiators log in to one daemon: one matched by an exact name, one by a
glob pattern with a read-only view, and a stranger that the (empty) default
group leaves with nothing to see. Each must see exactly its own LUN map in
REPORT LUNS and discovery, its own power-on UA, and the errors SPC/SAM assign
to LUNs it may not use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.transports.iscsi.initiator import Initiator, LoginError
from tests.cdbs import REPORT_LUNS, TUR, luns_of, sense_triplet, write10
from tests.daemon import running_daemon_async

F, R = TmfFunction, TmfResponse  # TMF function and response codes, by name

TARGET = "iqn.2026-11.org.pyscst:masking"
ADMIN = "iqn.2026-11.org.example:admin"
READER = "iqn.2026-11.org.example:reader-7"
STRANGER = "iqn.2026-11.org.example:stranger"


DEVICES = {
    "disk0": {"handler": "vdisk_fileio", "size": "8MiB"},
    "disk1": {"handler": "vdisk_fileio", "size": "8MiB"},
}
GROUPS = {
    "admins": {
        "initiators": [ADMIN],
        "luns": [{"lun": 0, "device": "disk0"}, {"lun": 5, "device": "disk1"}],
    },
    "readers": {
        "initiators": ["iqn.2026-11.org.example:reader-*"],
        "luns": [{"lun": 3, "device": "disk1", "read_only": True}],
    },
}


async def test_each_initiator_sees_its_own_lun_map(tmp_path: Path) -> None:
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=DEVICES, luns=(), groups=GROUPS
    ) as d:
        async with await Initiator.connect(
            d.host, d.port, initiator_name=ADMIN, target_name=TARGET
        ) as admin:
            r = await admin.execute(0, REPORT_LUNS, read_length=256)
            assert r.status == 0
            assert luns_of(r.data) == [0, 5]
            # a LUN outside the map: LOGICAL UNIT NOT SUPPORTED
            r = await admin.execute(3, TUR)
            assert r.status == 2 and sense_triplet(r.sense) == (0x5, 0x25, 0x00)
            # INQUIRY there answers with peripheral qualifier 011b instead
            r = await admin.execute(3, bytes((0x12, 0, 0, 0, 36, 0)), read_length=36)
            assert r.status == 0 and r.data[0] == 0x7F

        async with await Initiator.connect(
            d.host, d.port, initiator_name=READER, target_name=TARGET
        ) as reader:
            r = await reader.execute(0, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [3]
            r = await reader.execute(3, TUR)  # first command of a new nexus
            assert r.status == 2 and sense_triplet(r.sense) == (0x6, 0x29, 0x00)
            r = await reader.execute(3, TUR)
            assert r.status == 0
            # the same device is writable through the admins' LUN 5, not here
            r = await reader.execute(3, write10(0, 1), data_out=bytes(512))
            assert r.status == 2 and sense_triplet(r.sense) == (0x7, 0x27, 0x00)

        # the default group is empty: a stranger may neither log in nor discover
        with pytest.raises(LoginError):
            async with await Initiator.connect(
                d.host, d.port, initiator_name=STRANGER, target_name=TARGET
            ):
                pass
        async with await Initiator.connect(
            d.host, d.port, initiator_name=STRANGER, discovery=True
        ) as disco:
            assert await disco.send_targets() == []
        async with await Initiator.connect(
            d.host, d.port, initiator_name=ADMIN, discovery=True
        ) as disco:
            found = await disco.send_targets()
            assert [name for name, _ in found] == [TARGET]
            assert found[0][1] == [f"{d.host}:{d.port},1"]


async def test_unit_attention_is_reported_once_per_nexus(tmp_path: Path) -> None:
    devices = {"disk0": {"handler": "vdisk_fileio", "size": "8MiB"}}
    luns = ({"lun": 0, "device": "disk0"},)
    async with running_daemon_async(tmp_path, target=TARGET, devices=devices, luns=luns) as d:
        async with (
            await Initiator.connect(d.host, d.port, initiator_name=ADMIN, target_name=TARGET) as a,
            await Initiator.connect(d.host, d.port, initiator_name=READER, target_name=TARGET) as b,
        ):
            for ini in (a, b):
                r = await ini.execute(0, TUR)
                assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)
                assert (await ini.execute(0, TUR)).status == 0
            # LUN RESET from A: both nexuses learn of it (29/03), once each
            assert await a.task_management(F.LOGICAL_UNIT_RESET, 0, 0xFFFFFFFF) == R.COMPLETE
            for ini in (a, b):
                r = await ini.execute(0, TUR)
                assert r.status == 2 and sense_triplet(r.sense) == (0x6, 0x29, 0x03)
                assert (await ini.execute(0, TUR)).status == 0


async def test_long_sendtargets_answer_arrives_in_continued_pieces(tmp_path: Path) -> None:
    devices = {"disk0": {"handler": "vdisk_nullio", "size": "1MiB"}}
    luns = ({"lun": 0, "device": "disk0"},)
    extra = {
        f"iqn.2026-11.org.pyscst:a-rather-long-target-name-for-continuation-{i:02d}": {
            "luns": [{"lun": 0, "device": "disk0"}],
        }
        for i in range(12)
    }
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=devices, luns=luns, extra_targets=extra
    ) as d:
        # 512 bytes is the smallest MaxRecvDataSegmentLength an initiator may declare
        async with await Initiator.connect(
            d.host, d.port, initiator_name=ADMIN, discovery=True,
            max_recv_data_segment_length=512,
        ) as disco:  # fmt: skip
            found = dict(await disco.send_targets())
        assert len(found) == 13
        assert found[TARGET] == [f"{d.host}:{d.port},1"]
        assert all(name in found for name in extra)


async def test_task_management_reaches_only_mapped_logical_units(tmp_path: Path) -> None:
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=DEVICES, luns=(), groups=GROUPS
    ) as d:
        async with (
            await Initiator.connect(d.host, d.port, initiator_name=ADMIN, target_name=TARGET) as a,
            await Initiator.connect(d.host, d.port, initiator_name=READER, target_name=TARGET) as r,
        ):
            for ini, luns in ((a, (0, 5)), (r, (3,))):
                for lun in luns:
                    assert sense_triplet((await ini.execute(lun, TUR)).sense)[1] == 0x29
            # the reader cannot reach disk0 (LUN 0 is the admins'): LUN DOES NOT EXIST
            for function in (2, 4, 5, 10, 12):  # task set, clear, LUN reset, queries
                assert await r.task_management(function, 0) == 2
            assert (await a.execute(0, TUR)).status == 0  # disk0 was not reset
            # disk1 is shared (the reader's LUN 3, the admins' LUN 5): a reset there
            # is a reset of that LU for everyone, whatever number each one uses
            assert await r.task_management(F.LOGICAL_UNIT_RESET, 3) == R.COMPLETE
            r5 = await a.execute(5, TUR)
            assert r5.status == 2 and sense_triplet(r5.sense) == (0x6, 0x29, 0x03)
            assert (await a.execute(0, TUR)).status == 0


async def test_target_reset_reaches_only_the_issuers_logical_units(tmp_path: Path) -> None:
    """RFC 7143 11.5.1: a target reset cancels work "across all LUs known to the
    issuing initiator" - with masking, not the LUs only other initiators see."""
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=DEVICES, luns=(), groups=GROUPS
    ) as d:
        async with (
            await Initiator.connect(d.host, d.port, initiator_name=ADMIN, target_name=TARGET) as a,
            await Initiator.connect(d.host, d.port, initiator_name=READER, target_name=TARGET) as r,
        ):
            for ini, luns in ((a, (0, 5)), (r, (3,))):
                for lun in luns:
                    assert sense_triplet((await ini.execute(lun, TUR)).sense)[1] == 0x29
            assert await r.task_management(F.TARGET_WARM_RESET, 0) == R.COMPLETE  # from the reader
            assert sense_triplet((await r.execute(3, TUR)).sense) == (0x6, 0x29, 0x03)
            r5 = await a.execute(5, TUR)  # disk1: the reader's LUN 3 too
            assert r5.status == 2 and sense_triplet(r5.sense) == (0x6, 0x29, 0x03)
            assert (await a.execute(0, TUR)).status == 0  # disk0: unknown to the reader
