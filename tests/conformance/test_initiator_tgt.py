"""Our Trio initiator against the real C target tgtd: the codec on a live wire.

tgtd is an independent RFC 7143 implementation, so these tests check that
login, negotiation, digests, R2T/Data-Out, Data-In reassembly, queueing and
task management of ``pyscst.transports.iscsi.initiator`` interoperate with it; the
data written is checked in tgtd's backing file too.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.transports.iscsi.initiator import ConnectionLost, Initiator
from pyscst.transports.iscsi.pdu import NopIn, NopOut, TmfFunction, TmfResponse, encode_pdu
from tests.cdbs import read10, write10
from tests.helpers_tgt import TgtTarget, running_tgtd, tgtd_unavailable

pytestmark = pytest.mark.skipif(tgtd_unavailable() is not None, reason=str(tgtd_unavailable()))

BLOCK = 512


@pytest.fixture(scope="module")
def tgt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TgtTarget]:
    with running_tgtd(Path(tmp_path_factory.mktemp("tgtd"))) as target:
        yield target


def inquiry(length: int = 96) -> bytes:
    return bytes((0x12, 0, 0)) + struct.pack(">H", length) + b"\x00"


def read_capacity10() -> bytes:
    return bytes((0x25,)) + bytes(9)


async def login(tgt: TgtTarget, **kwargs: Any) -> Initiator:
    return await Initiator.connect(tgt.host, tgt.port, target_name=tgt.target_name, **kwargs)


async def clear_unit_attentions(ini: Initiator, lun: int) -> int:
    """TEST UNIT READY until GOOD; a new I_T nexus starts with a UNIT ATTENTION."""
    seen = 0
    for _ in range(8):
        r = await ini.execute(lun, bytes(6))
        if r.status == 0:
            return seen
        assert r.status == 0x02 and r.sense[2] & 0x0F == 0x6, r  # UNIT ATTENTION only
        seen += 1
    raise AssertionError("unit attentions never cleared")


async def test_discovery_send_targets(tgt: TgtTarget) -> None:
    async with await Initiator.connect(tgt.host, tgt.port) as ini:
        assert ini.discovery
        targets = await ini.send_targets()
        names = [name for name, _ in targets]
        assert tgt.target_name in names
        addresses = dict(targets)[tgt.target_name]
        assert any(a.startswith(f"{tgt.host}:{tgt.port},") for a in addresses), addresses
        response = await ini.logout()
        assert response.response == 0


@pytest.mark.parametrize("digests", [False, True])
@pytest.mark.parametrize("security_phase", [True, False])
async def test_login_inquiry_capacity(tgt: TgtTarget, digests: bool, security_phase: bool) -> None:
    async with await login(
        tgt, header_digest=digests, data_digest=digests, security_phase=security_phase
    ) as ini:
        assert ini.params.header_digest is digests and ini.params.data_digest is digests
        assert ini.negotiated["HeaderDigest"] == ("CRC32C" if digests else "None")
        assert ini.tsih != 0
        await clear_unit_attentions(ini, tgt.lun)
        r = await ini.execute(tgt.lun, inquiry(), read_length=96)
        assert r.status == 0 and r.sense == b""
        assert r.data[0] & 0x1F == 0  # direct-access block device
        assert len(r.data) == min(96, r.data[4] + 5)
        r = await ini.execute(tgt.lun, read_capacity10(), read_length=8)
        last_lba, block = struct.unpack(">II", r.data)
        assert block == BLOCK
        assert (last_lba + 1) * block == tgt.size
        await ini.logout()


@pytest.mark.parametrize(
    ("digests", "options"),
    [
        (False, {}),
        (True, {}),
        (False, {"initial_r2t": True, "immediate_data": False}),
        (True, {"max_recv_data_segment_length": 4096, "first_burst_length": 16384}),
    ],
)
async def test_write_then_read_back_large(
    tgt: TgtTarget, digests: bool, options: dict[str, object]
) -> None:
    blocks = 2048  # 1 MiB: far beyond FirstBurstLength, so R2Ts are needed
    lba = 4096 + 2048 * len(options) + (blocks if digests else 0)
    payload = os.urandom(blocks * BLOCK)
    async with await login(tgt, header_digest=digests, data_digest=digests, **options) as ini:
        assert ini.params.first_burst_length < len(payload)
        await clear_unit_attentions(ini, tgt.lun)
        w = await ini.execute(tgt.lun, write10(lba, blocks), data_out=payload)
        assert w.status == 0, w
        r = await ini.execute(tgt.lun, read10(lba, blocks), read_length=len(payload))
        assert r.status == 0 and not r.residual_underflow
        assert r.data == payload
        await ini.logout()
    with tgt.backing.open("rb") as f:
        f.seek(lba * BLOCK)
        assert f.read(len(payload)) == payload


async def test_queue_of_32_concurrent_reads(tgt: TgtTarget) -> None:
    region = 16  # blocks per command
    base = 100_000
    patterns = [bytes([i]) * (region * BLOCK) for i in range(32)]
    async with await login(tgt) as ini:
        await clear_unit_attentions(ini, tgt.lun)
        writes = [
            ini.submit(tgt.lun, write10(base + i * region, region), data_out=patterns[i])
            for i in range(32)
        ]
        for tag in writes:
            assert (await ini.wait(tag)).status == 0
        tags = [
            ini.submit(tgt.lun, read10(base + i * region, region), read_length=region * BLOCK)
            for i in range(32)
        ]
        assert len(set(tags)) == 32
        results: dict[int, bytes] = {}

        async def collect(i: int, tag: int) -> None:
            r = await ini.wait(tag)
            assert r.status == 0
            results[i] = r.data

        async with trio.open_nursery() as nursery:
            for i, tag in enumerate(reversed(tags)):
                nursery.start_soon(collect, 31 - i, tag)
        assert [results[i] for i in range(32)] == patterns
        await ini.logout()


async def test_read_past_end_gives_sense(tgt: TgtTarget) -> None:
    async with await login(tgt) as ini:
        await clear_unit_attentions(ini, tgt.lun)
        r = await ini.execute(tgt.lun, read10(tgt.size // BLOCK, 1), read_length=BLOCK)
        assert r.status == 0x02  # CHECK CONDITION
        assert r.sense[0] & 0x7F in (0x70, 0x72)
        key = r.sense[2] & 0x0F if r.sense[0] & 0x7F == 0x70 else r.sense[1] & 0x0F
        asc = r.sense[12] if r.sense[0] & 0x7F == 0x70 else r.sense[2]
        assert (key, asc) == (0x5, 0x21)  # ILLEGAL REQUEST, LBA OUT OF RANGE
        await ini.logout()


async def test_nop_task_management_and_logout(tgt: TgtTarget) -> None:
    async with await login(tgt) as ini:
        assert await ini.nop(b"hello-pyscst") == b"hello-pyscst"
        assert await ini.nop() == b""
        response = await ini.task_management(TmfFunction.LOGICAL_UNIT_RESET, tgt.lun)
        assert response == TmfResponse.COMPLETE
        response = await ini.task_management(
            TmfFunction.ABORT_TASK, tgt.lun, referenced_task_tag=0x7777
        )
        assert response in (TmfResponse.COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST)
        cmdsn_before = ini.cmdsn
        r = await ini.execute(tgt.lun, inquiry(36), read_length=36)
        assert ini.cmdsn == cmdsn_before + 1
        assert r.status in (0x00, 0x02)  # a UNIT ATTENTION after the reset is fine
        if r.status:
            assert r.sense[2] & 0x0F == 0x6, r
        logout = await ini.logout()
        assert logout.response == 0
        with pytest.raises(ConnectionLost):
            await ini.execute(tgt.lun, inquiry(36), read_length=36)


async def test_answers_target_nop_in_pings(tgt: TgtTarget) -> None:
    async with await login(tgt) as ini:
        await clear_unit_attentions(ini, tgt.lun)
        with trio.fail_after(10):
            while ini.nop_in_answered < 4:  # tgtd gives up after 3 unanswered
                await trio.sleep(0.1)
        r = await ini.execute(tgt.lun, inquiry(36), read_length=36)
        assert r.status == 0
        await ini.logout()


async def test_raw_pdus_bypass_the_task_table(tgt: TgtTarget) -> None:
    async with await login(tgt) as ini:
        itt = ini.next_itt()
        ping = NopOut(immediate=True, itt=itt, cmdsn=ini.cmdsn, expstatsn=ini.expstatsn,
                      data=b"raw")  # fmt: skip
        await ini.send_raw(encode_pdu(ping))
        with trio.fail_after(5):
            answer = await ini.recv_pdu()
        assert isinstance(answer, NopIn)
        assert (answer.itt, bytes(answer.data)) == (itt, b"raw")
        await ini.logout()
