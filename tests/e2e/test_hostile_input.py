"""Hostile and malformed iSCSI input: a specific answer, never a crashed daemon.

Each case sends something a broken or malicious initiator might, checks the
exact protocol answer (Reject reason, silence, a dropped connection), then
proves the daemon still serves: the same connection where the RFC lets it
live on, and a brand-new login in every case.
"""

from __future__ import annotations

import struct
from pathlib import Path

import trio

from pyscst.transports.iscsi import pdu_types as P
from pyscst.transports.iscsi.initiator import Initiator
from pyscst.transports.iscsi.pdu_codec import encode_pdu
from pyscst.transports.iscsi.pdu_constants import RejectReason
from tests.daemon import RunningDaemon, running_daemon_async

TARGET = "iqn.2026-11.org.pyscst:hostile"
TUR = bytes(6)


async def still_serving(d: RunningDaemon) -> None:
    """A fresh session can log in and run a command."""
    with trio.fail_after(10):
        async with await Initiator.connect(d.host, d.port, target_name=TARGET) as ini:
            await ini.execute(0, TUR)  # the power-on UA
            assert (await ini.execute(0, TUR)).status == 0


async def next_reject(ini: Initiator) -> P.Reject:
    with trio.fail_after(5):
        while True:
            got = await ini.recv_pdu()
            if isinstance(got, P.Reject):
                return got


def raw_bhs(opcode: int, *, data_length: int = 0, itt: int = 0x77, cmdsn: int = 0) -> bytes:
    """A header the codec would never build: arbitrary opcode and length."""
    return struct.pack(
        ">BBBBIQIIII16s", opcode | 0x40, 0x80, 0, 0, data_length, 0, itt, 0xFFFFFFFF,
        cmdsn, 0, bytes(16),
    )  # fmt: skip


async def test_hostile_pdus_get_specific_answers(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        async with await Initiator.connect(d.host, d.port, target_name=TARGET) as ini:
            await ini.execute(0, TUR)

            # an opcode no initiator may send: Reject "command not supported"
            await ini.send_raw(raw_bhs(0x1C, cmdsn=ini.cmdsn))
            reject = await next_reject(ini)
            assert reject.reason == RejectReason.COMMAND_NOT_SUPPORTED
            assert reject.data[0] & 0x3F == 0x1C  # the rejected header comes back

            # a data segment beyond our MaxRecvDataSegmentLength: rejected, and
            # the bytes are skipped without being buffered
            limit = int(ini.negotiated.get("MaxRecvDataSegmentLength", "262144"))
            big = limit + 4096
            await ini.send_raw(raw_bhs(0x00, data_length=big, cmdsn=ini.cmdsn) + bytes(big))
            reject = await next_reject(ini)
            assert reject.reason == RejectReason.PROTOCOL_ERROR

            # immediate data beyond FirstBurstLength (and beyond EDTL)
            first_burst = int(ini.negotiated.get("FirstBurstLength", "65536"))
            write = P.ScsiCommand(
                immediate=False, final=True, write=True, lun=0, itt=ini.next_itt(),
                expected_data_transfer_length=512, cmdsn=ini.cmdsn,
                expstatsn=ini.expstatsn, cdb=struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 1, 0)
                + bytes(6), data=bytes(first_burst + 512),
            )  # fmt: skip
            await ini.send_pdu(write)
            reject = await next_reject(ini)
            assert reject.reason == RejectReason.PROTOCOL_ERROR

            # a command far outside the CmdSN window is ignored silently ...
            stray = P.ScsiCommand(
                immediate=False, final=True, lun=0, itt=ini.next_itt(),
                cmdsn=(ini.cmdsn + 100_000) & 0xFFFFFFFF, expstatsn=ini.expstatsn,
                cdb=bytes(16),
            )  # fmt: skip
            await ini.send_pdu(stray)
            # ... and the session carries on, in order
            for _ in range(3):
                assert (await ini.execute(0, TUR)).status == 0
            assert await ini.nop(b"ping") == b"ping"
        await still_serving(d)


async def test_garbage_and_broken_logins_leave_the_daemon_serving(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        # not iSCSI at all
        stream = await trio.open_tcp_stream(d.host, d.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(100))
        with trio.fail_after(10):
            while await stream.receive_some(4096):
                pass  # the target closes the connection
        await stream.aclose()
        # a connection that closes in the middle of a PDU
        stream = await trio.open_tcp_stream(d.host, d.port)
        await stream.send_all(raw_bhs(0x03)[:20])
        await stream.aclose()
        await still_serving(d)


async def test_bad_header_digest_drops_only_that_connection(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET) as d:
        async with await Initiator.connect(
            d.host, d.port, target_name=TARGET, header_digest=True
        ) as ini:
            assert ini.negotiated["HeaderDigest"] == "CRC32C"
            await ini.execute(0, TUR)
            nop = P.NopOut(immediate=True, itt=ini.next_itt(), cmdsn=ini.cmdsn)
            wire = bytearray(encode_pdu(nop, header_digest=True))
            wire[48] ^= 0xFF  # corrupt the header digest
            await ini.send_raw(bytes(wire))
            # the stream can no longer be framed: the target drops the connection
            with trio.fail_after(10):
                try:
                    while True:
                        await ini.recv_pdu()
                except trio.EndOfChannel:
                    pass
        await still_serving(d)
