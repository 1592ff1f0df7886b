"""A variable tape record written from the pieces its data-out came in.

A WRITE(6) whose record needs R2Ts is written with one pwritev of its header,
the immediate data and each Data-Out's segment (``data_segments_now``,
``Pieces``), never joined into one buffer first. These send the pieces by
hand, hostile ones included, against the real daemon, and read back what the
drive kept.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import trio

from pyscst.transports.iscsi import pdu_types as P
from pyscst.transports.iscsi.pdu_codec import parse_sense_segment
from tests.daemon import RunningDaemon
from tests.e2e.test_vtape import REWIND, TARGET, c6, tape_daemon
from tests.wire import GOOD, Wire, wire

CHECK = 2
SILI = 0x02


def pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for n in sizes:
        out.append(data[at : at + n])
        at += n
    assert at == len(data)
    return out


async def write_in_pieces(w: Wire, record: bytes, immediate: int, sizes: list[int]) -> Any:
    """WRITE(6) of ``record``: ``immediate`` bytes with the command, the rest
    as Data-Outs of ``sizes`` answering the R2T(s); the status-bearing answer."""
    cmd = w.command(c6(0x0A, 0, len(record)), write=len(record), data=record[:immediate])
    await w.send(cmd)
    offset = immediate
    parts = pieces(record[immediate:], sizes)
    while parts:
        r2t = await w.r2t_for(cmd.itt)
        assert r2t.buffer_offset == offset
        end = offset + r2t.desired_data_transfer_length
        datasn = 0
        while parts and offset < end:
            chunk = parts.pop(0)
            await w.send(
                P.DataOut(
                    final=offset + len(chunk) >= end, lun=r2t.lun, itt=cmd.itt, ttt=r2t.ttt,
                    expstatsn=w.expstatsn, datasn=datasn, buffer_offset=offset, data=chunk,
                )
            )  # fmt: skip
            offset += len(chunk)
            datasn += 1
    return await w.recv_for(cmd.itt)


async def read_back(w: Wire, length: int) -> bytes:
    assert (await w.execute(w.command(REWIND))).status == GOOD
    read = w.command(c6(0x08, SILI, length), read=length)
    answer = await w.execute(read)
    assert answer.status == GOOD, answer
    return bytes(w.data_in.get(read.itt, b""))


async def position(w: Wire) -> int:
    read = w.command(bytes((0x34, 0x06)) + bytes(8), read=32)
    assert (await w.execute(read)).status == GOOD
    return int(struct.unpack_from(">Q", w.data_in[read.itt], 8)[0])


async def clean_log(d: RunningDaemon) -> None:
    log = d.stderr_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


async def test_a_record_from_immediate_data_and_several_data_outs_reads_back_whole(
    tmp_path: Path,
) -> None:
    record = random.Random(1).randbytes(100_000)
    async with tape_daemon(tmp_path) as d, wire(d.host, d.port, TARGET) as w:
        await w.settle()
        answer = await write_in_pieces(w, record, 10_000, [30_000, 1, 29_999, 30_000])
        assert answer.status == GOOD
        assert await read_back(w, len(record)) == record
        await clean_log(d)


async def test_more_pieces_than_iovecs_allow_are_joined_and_written_whole(
    tmp_path: Path,
) -> None:
    """200 Data-Outs of 512 bytes (more than MAX_PIECES): one buffer after all."""
    record = random.Random(2).randbytes(512 * 201)
    async with tape_daemon(tmp_path) as d, wire(d.host, d.port, TARGET) as w:
        await w.settle()
        assert (await write_in_pieces(w, record, 512, [512] * 200)).status == GOOD
        assert await read_back(w, len(record)) == record


async def test_a_record_larger_than_a_burst_comes_in_several_r2ts(tmp_path: Path) -> None:
    """1 MiB + 3 bytes: more than MaxBurstLength, so several R2Ts, each
    answered by Data-Outs of odd sizes; the record is the concatenation."""
    record = random.Random(3).randbytes((1 << 20) + 3)
    async with tape_daemon(tmp_path) as d, wire(d.host, d.port, TARGET) as w:
        await w.settle()
        rest = len(record) - 4096
        sizes = [100_000] * (rest // 100_000) + [rest % 100_000]
        # (a Data-Out never straddles two R2Ts: cut at each burst's end)
        cut: list[int] = []
        offset, burst = 4096, 262144
        for n in sizes:
            while n:
                room = burst - (offset - 4096) % burst
                take = min(n, room)
                cut.append(take)
                offset += take
                n -= take
        assert (await write_in_pieces(w, record, 4096, cut)).status == GOOD
        assert await read_back(w, len(record)) == record


async def test_an_expected_length_shorter_than_the_record_writes_nothing(
    tmp_path: Path,
) -> None:
    """EDTL 2048 for a 4096-byte record: ILLEGAL REQUEST 0E/03, nothing written."""
    async with tape_daemon(tmp_path) as d, wire(d.host, d.port, TARGET) as w:
        await w.settle()
        cmd = w.command(c6(0x0A, 0, 4096), write=2048, data=b"s" * 2048)
        answer = await w.execute(cmd)
        assert answer.status == CHECK
        sense = parse_sense_segment(answer.data)
        assert (sense[2] & 0x0F, sense[12], sense[13]) == (0x05, 0x0E, 0x03)
        assert await position(w) == 0
        await clean_log(d)


async def test_an_expected_length_shorter_than_a_record_that_came_by_r2t_writes_nothing(
    tmp_path: Path,
) -> None:
    """EDTL 80,000 for a 100,000-byte record, 10,000 immediate and the rest
    solicited: the pieces are all there but short of the record, so the
    task path answers ILLEGAL REQUEST 0E/03 and nothing is written."""
    record = random.Random(6).randbytes(100_000)
    async with tape_daemon(tmp_path) as d, wire(d.host, d.port, TARGET) as w:
        await w.settle()
        cmd = w.command(c6(0x0A, 0, len(record)), write=80_000, data=record[:10_000])
        await w.send(cmd)
        r2t = await w.r2t_for(cmd.itt)
        assert r2t.buffer_offset + r2t.desired_data_transfer_length <= 80_000
        await w.send(w.data_out(r2t, record[r2t.buffer_offset : 80_000]))
        answer = await w.recv_for(cmd.itt)
        assert answer.status == CHECK
        sense = parse_sense_segment(answer.data)
        assert (sense[2] & 0x0F, sense[12], sense[13]) == (0x05, 0x0E, 0x03)
        assert await position(w) == 0
        await clean_log(d)


async def test_more_data_than_the_record_writes_the_record_only(tmp_path: Path) -> None:
    """EDTL and immediate data past the CDB's transfer length: the record is
    the first 1000 bytes, the rest a residual (underflow: EDTL 3000)."""
    data = random.Random(4).randbytes(2000)
    async with tape_daemon(tmp_path) as d, wire(d.host, d.port, TARGET) as w:
        await w.settle()
        answer = await w.execute(w.command(c6(0x0A, 0, 1000), write=3000, data=data))
        assert answer.status == GOOD
        assert answer.residual_count == 2000 and answer.underflow  # (less than expected)
        assert await position(w) == 1
        assert await read_back(w, 1000) == data[:1000]


async def test_a_connection_dropped_in_the_middle_of_a_record_writes_none_of_it(
    tmp_path: Path,
) -> None:
    """Half of the Data-Out of a 256 KiB record, then the connection drops
    (a close, and a TCP reset): no record, the drive still at BOP, the next
    session writes and reads normally, nothing logged as an error."""
    record = random.Random(5).randbytes(256 * 1024)
    async with tape_daemon(tmp_path) as d:
        for reset in (False, True):
            w = await Wire.login(d.host, d.port, TARGET)
            await w.settle()
            assert (await w.execute(w.command(REWIND))).status == GOOD
            cmd = w.command(c6(0x0A, 0, len(record)), write=len(record), data=record[:65536])
            await w.send(cmd)
            r2t = await w.r2t_for(cmd.itt)
            half = P.DataOut(
                final=False, lun=r2t.lun, itt=cmd.itt, ttt=r2t.ttt, expstatsn=w.expstatsn,
                datasn=0, buffer_offset=65536, data=record[65536:131072],
            )  # fmt: skip
            await w.send(half)
            if reset:
                w.reset()
            else:
                await w.aclose()
        await trio.sleep(0.2)
        async with wire(d.host, d.port, TARGET) as w:
            await w.settle()
            assert await position(w) == 0
            assert (await write_in_pieces(w, record, 65536, [196608])).status == GOOD
            assert await read_back(w, len(record)) == record
        await clean_log(d)
