"""The virtual tape drive (``vtape``) end to end: the real daemon, the project's
initiator, ``pyscst admin`` moving cartridges, a backup job, two nexuses at
once and kill -9 in the middle of a stream."""

from __future__ import annotations

import io
import os
import random
import signal
import struct
import sys
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from pyscst.devices.tape_cartridge import Kind, create_blank, open_cartridge
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, sense_triplet
from tests.daemon import DaemonError, RunningDaemon, running_daemon_async
from tests.e2e.test_admin_cli import admin_for

TARGET = "iqn.2026-11.org.pyscst:tape"
LUNS = ({"lun": 0, "device": "tape0"}, {"lun": 1, "device": "tape1"})
RECORD = 256 * 1024
GOOD, CHECK = 0, 2
MIB = 1 << 20


def c6(op: int, b1: int = 0, n: int = 0) -> bytes:
    return bytes((op, b1)) + (n & 0xFFFFFF).to_bytes(3, "big") + b"\0"


REWIND = c6(0x01)
WEOF = c6(0x10, 0, 1)


def tar_archive(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for i in range(3):
            body = rng.randbytes(size // 3)
            info = tarfile.TarInfo(f"file{seed}-{i}.bin")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


@asynccontextmanager
async def tape_daemon(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    create_blank(state / "A00001L8", "A00001L8", 256 * MIB)
    devices = {
        "tape0": {"handler": "vtape", "path": "A00001L8"},
        "tape1": {"handler": "vtape"},  # an empty drive
    }
    async with running_daemon_async(tmp_path, target=TARGET, devices=devices, luns=LUNS) as d:
        yield d


@asynccontextmanager
async def login(d: RunningDaemon, name: str) -> AsyncIterator[Initiator]:
    connecting = Initiator.connect(d.host, d.port, initiator_name=name, target_name=TARGET)
    async with await connecting as ini:
        for lun in (0, 1):
            await ini.execute(lun, TUR)  # the power-on UA
        yield ini


async def write_file(ini: Initiator, lun: int, data: bytes) -> int:
    """Write ``data`` as 256 KiB variable records and a filemark; the record count."""
    n = 0
    for off in range(0, len(data), RECORD):
        chunk = data[off : off + RECORD]
        r = await ini.execute(lun, c6(0x0A, 0, len(chunk)), data_out=chunk)
        assert r.status == GOOD, sense_triplet(r.sense)
        n += 1
    assert (await ini.execute(lun, WEOF)).status == GOOD
    return n


async def read_file(ini: Initiator, lun: int) -> bytes:
    """Read records until the filemark."""
    out = bytearray()
    while True:
        r = await ini.execute(lun, c6(0x08, 0x02, RECORD), read_length=RECORD)  # SILI
        if r.status == CHECK:
            assert sense_triplet(r.sense) == (0x0, 0x00, 0x01) and r.sense[2] & 0x80
            return bytes(out)
        out += r.data


async def read_position(ini: Initiator, lun: int) -> tuple[int, int, int]:
    """(partition, logical object, file number) from the long form."""
    r = await ini.execute(lun, bytes((0x34, 0x06)) + bytes(8), read_length=32)
    assert r.status == GOOD and len(r.data) == 32
    part, obj, files = struct.unpack_from(">IQQ", r.data, 4)
    return part, obj, files


async def test_backup_job_then_move_the_cartridge_to_another_drive(tmp_path: Path) -> None:
    archives = [tar_archive(i, (3 * RECORD) // 2 + 1000 * i) for i in range(4)]
    async with tape_daemon(tmp_path) as d, login(d, "iqn.2026-11.org.x:backup") as ini:
        r = await ini.execute(0, bytes((0x12, 0, 0, 0, 96, 0)), read_length=96)
        assert r.data[0] == 0x01 and r.data[1] & 0x80  # sequential access, removable
        r = await ini.execute(1, TUR)
        assert sense_triplet(r.sense) == (0x2, 0x3A, 0x00)  # the empty drive
        starts = []
        for data in archives:
            starts.append((await read_position(ini, 0))[1])
            await write_file(ini, 0, data)
        assert (await ini.execute(0, REWIND)).status == GOOD
        assert (await ini.execute(0, c6(0x11, 0x01, 2))).status == GOOD  # SPACE 2 filemarks
        assert await read_position(ini, 0) == (0, starts[2], 2)
        assert await read_file(ini, 0) == archives[2]
        locate = bytes((0x2B, 0, 0)) + struct.pack(">I", starts[1]) + bytes(3)
        assert (await ini.execute(0, locate)).status == GOOD
        assert await read_file(ini, 0) == archives[1]
        r = await ini.execute(0, bytes((0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0)), read_length=20)
        assert r.data[0] == 0 and struct.unpack_from(">II", r.data, 4) == (starts[2],) * 2
        # SPACE to EOD, then a read there: BLANK CHECK with the whole residue
        assert (await ini.execute(0, c6(0x11, 0x03))).status == GOOD
        r = await ini.execute(0, c6(0x08, 0, 100), read_length=100)
        assert sense_triplet(r.sense) == (0x8, 0x00, 0x05)
        assert struct.unpack_from(">I", r.sense, 3)[0] == 100 and r.sense[0] & 0x80
        # the operator moves the cartridge: eject here, load in the other drive
        admin = admin_for(d)
        await admin.ok("device", "eject", "tape0")
        r = await ini.execute(0, TUR)
        assert sense_triplet(r.sense) == (0x2, 0x3A, 0x00)
        await admin.ok("device", "load", "tape1", "--path", "A00001L8")
        r = await ini.execute(1, TUR)
        assert sense_triplet(r.sense) == (0x6, 0x28, 0x00)  # medium may have changed
        assert (await ini.execute(1, TUR)).status == GOOD
        assert await read_position(ini, 1) == (0, 0, 0)
        for data in archives:
            assert await read_file(ini, 1) == data
        shown = await admin.ok("device", "show", "tape1")
        assert shown["medium"] == "present"
        # MAM: the cartridge was loaded twice
        ra = bytes((0x8C, 0, 0, 0, 0, 0, 0, 0, 0, 3)) + struct.pack(">I", 64) + bytes(2)
        r = await ini.execute(1, ra, read_length=64)
        assert r.status == GOOD and struct.unpack_from(">HBHQ", r.data, 4) == (3, 0x80, 8, 2)


async def test_two_nexuses_writing_at_once_see_each_record_whole(tmp_path: Path) -> None:
    async with tape_daemon(tmp_path) as d:
        async with login(d, "iqn.2026-11.org.x:a") as a, login(d, "iqn.2026-11.org.x:b") as b:

            async def writer(ini: Initiator, tag: int) -> None:
                for i in range(20):
                    payload = bytes((tag, i)) * (4096 + 512 * i)
                    r = await ini.execute(0, c6(0x0A, 0, len(payload)), data_out=payload)
                    assert r.status == GOOD

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer, a, 1)
                nursery.start_soon(writer, b, 2)
            assert (await a.execute(0, REWIND)).status == GOOD
            seen: dict[int, list[int]] = {1: [], 2: []}
            for _ in range(40):
                r = await a.execute(0, c6(0x08, 0x02, 65536), read_length=65536)
                assert r.status == GOOD
                tag, i = r.data[0], r.data[1]
                assert r.data == bytes((tag, i)) * (4096 + 512 * i)  # whole, not interleaved
                seen[tag].append(i)
            assert seen == {1: list(range(20)), 2: list(range(20))}


async def test_zero_length_data_in_is_answered_with_its_residual(tmp_path: Path) -> None:
    """READ BLOCK LIMITS (and other data-in commands) with an expected data
    transfer length of 0: GOOD, no data, the whole answer as overflow residual.
    The same command kills tgtd 1.0.85's ssc (docs/tape.md), found by the fuzz
    campaign through a pass-through LUN."""
    async with tape_daemon(tmp_path) as d, login(d, "iqn.2026-11.org.x:a") as ini:
        r = await ini.execute(0, c6(0x05), read_length=0)
        assert (r.status, r.data, r.residual_overflow, r.residual_count) == (GOOD, b"", True, 6)
        r = await ini.execute(1, c6(0x05), read_length=0)  # the empty drive: same limits
        assert (r.status, r.residual_count) == (GOOD, 6)
        r = await ini.execute(0, bytes((0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0)), read_length=0)
        assert (r.status, r.residual_count) == (GOOD, 20)  # READ POSITION, short form
        assert (await ini.execute(0, TUR)).status == GOOD  # and the drive is still there


async def test_acknowledged_records_survive_kill_9(tmp_path: Path) -> None:
    acked: list[bytes] = []
    with pytest.raises(DaemonError):  # the daemon did not exit cleanly: it was killed
        async with tape_daemon(tmp_path) as d, login(d, "iqn.2026-11.org.x:k") as ini:
            rng = random.Random(9)
            for i in range(40):
                payload = rng.randbytes(RECORD // 4 + i)
                r = await ini.execute(0, c6(0x0A, 0, len(payload)), data_out=payload)
                assert r.status == GOOD
                acked.append(payload)
                if i == 30:
                    os.kill(d.pid, signal.SIGKILL)
                    break
    cart = open_cartridge(tmp_path / "state" / "A00001L8")
    part = cart.partitions[0]
    assert part.eod >= len(acked) and part.damaged == 0
    for i, payload in enumerate(acked):
        buf = bytearray(len(payload))
        assert part.read(i, memoryview(buf)) == len(payload) and bytes(buf) == payload
    cart.close_now()


async def test_tape_faults_from_the_config_file(tmp_path: Path) -> None:
    """``tape`` rules arm the drive on their first matching command: a MEDIUM
    ERROR at record 2 on read, TapeAlert flags, a cleaning request, an early
    end of medium; a ``delay`` rule on REWIND makes a slow mechanism."""
    state = tmp_path / "state"
    state.mkdir()
    create_blank(state / "F00001L8", "F00001L8", 64 * MIB)
    faults = [
        {"id": "bad-record", "action": "tape", "event": "read_error", "record": 2,
         "device": "tape0", "times": 1},
        {"id": "alerts", "action": "tape", "event": "tapealert", "alerts": [3, 4],
         "device": "tape0", "times": 1},
        {"id": "dirty", "action": "tape", "event": "clean", "device": "tape0", "times": 1},
        {"id": "short-tape", "action": "tape", "event": "early_end", "after_bytes": 2 * MIB,
         "device": "tape0", "times": 1},
        {"id": "slow-rewind", "action": "delay", "delay": 0.5, "opcodes": [0x01],
         "device": "tape0"},
    ]  # fmt: skip
    devices = {"tape0": {"handler": "vtape", "path": "F00001L8"}}
    async with running_daemon_async(tmp_path, target=TARGET, devices=devices,
                                    luns=({"lun": 0, "device": "tape0"},),
                                    extra={"faults": faults}) as d:  # fmt: skip
        connecting = Initiator.connect(d.host, d.port, initiator_name="iqn.2026-11.org.x:f",
                                       target_name=TARGET)  # fmt: skip
        async with await connecting as ini:
            await ini.execute(0, TUR)
            chunk = bytes(RECORD)
            statuses = []
            for _ in range(12):  # 3 MiB against an end of medium at 2 MiB
                r = await ini.execute(0, c6(0x0A, 0, RECORD), data_out=chunk)
                statuses.append(sense_triplet(r.sense) if r.status else None)
            assert (0x0, 0x00, 0x02) in statuses, statuses  # early warning
            assert statuses[-1] == (0xD, 0x00, 0x02)  # VOLUME OVERFLOW at the early end
            before = trio.current_time()
            assert (await ini.execute(0, REWIND)).status == GOOD
            assert trio.current_time() - before >= 0.5
            for _ in range(2):
                assert (await ini.execute(0, c6(0x08, 0, RECORD), read_length=RECORD)).status == 0
            r = await ini.execute(0, c6(0x08, 0, RECORD), read_length=RECORD)
            assert sense_triplet(r.sense) == (0x3, 0x11, 0x00)  # record 2
            r = await ini.execute(0, c6(0x08, 0, RECORD), read_length=RECORD)
            assert r.status == GOOD  # one-shot: record 3 reads
            r = await ini.execute(0, bytes((0x4D, 0, 0x6E, 0, 0, 0, 0, 0x02, 0, 0)),
                                  read_length=512)  # TapeAlert page
            raised = [i + 1 for i in range(64) if r.data[4 + 5 * i + 4]]
            assert raised == [3, 4, 20]
            r = await ini.execute(0, bytes((0x03, 0, 0, 0, 18, 0)), read_length=18)
            assert sense_triplet(r.data) == (0x0, 0x00, 0x17)  # CLEANING REQUESTED
            admin = admin_for(d)
            listed = await admin.ok("fault", "list")
            assert {row["id"] for row in listed} >= {"bad-record", "dirty"}


async def test_the_benchmark_tape_client_streams_and_reads_back(tmp_path: Path) -> None:
    """benchmarks/tape_stream.py (the bench's load generator) against vtape."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "tape_stream.py"
    async with tape_daemon(tmp_path) as d:
        url = f"iscsi://{d.host}:{d.port}/{TARGET}/0"
        for mode in ("write", "read"):
            done = await trio.run_process([sys.executable, str(script), mode, url, "40",
                                           str(RECORD)], capture_stdout=True)  # fmt: skip
            assert b"Run completed in" in done.stdout
        cart = tmp_path / "state" / "A00001L8"
    opened = open_cartridge(cart)
    assert opened.partitions[0].eod == 40 and opened.mam["total_written"] == 40 * RECORD
    opened.close_now()


async def test_hostile_loads_and_a_corrupt_cartridge_never_hurt_the_drive(tmp_path: Path) -> None:
    async with tape_daemon(tmp_path) as d, login(d, "iqn.2026-11.org.x:h") as ini:
        admin = admin_for(d)
        state = tmp_path / "state"
        outside = tmp_path / "OUTSIDE1"
        create_blank(outside, "OUTSIDE1", 8 * MIB)
        broken = state / "BROKEN01"
        create_blank(broken, "BROKEN01", 8 * MIB)
        (broken / "cartridge.json").write_text("{torn")
        for path, words in ((str(outside), "outside"), ("MISSING1", "No such file"),
                            ("BROKEN01", "cartridge.json")):  # fmt: skip
            refused = await admin.fails(1, "device", "load", "tape1", "--path", path)
            assert "device tape1" in refused and words in refused, refused
        r = await ini.execute(1, TUR)
        assert sense_triplet(r.sense) == (0x2, 0x3A, 0x00)  # still empty
        # a cartridge whose records file was cut short while on the shelf
        torn = state / "TORN0001"
        create_blank(torn, "TORN0001", 8 * MIB)
        cart = open_cartridge(torn)
        cart.partitions[0].append_many(Kind.RECORD, [b"a" * 1000, b"b" * 1000])
        cart.close_now()
        os.truncate(torn / "p0.records", 1500)
        await admin.ok("device", "load", "tape1", "--path", "TORN0001")
        await ini.execute(1, TUR)  # the medium-change unit attention
        r = await ini.execute(1, c6(0x08, 0, 1000), read_length=1000)
        assert r.status == GOOD and r.data == b"a" * 1000
        r = await ini.execute(1, c6(0x08, 0, 1000), read_length=1000)
        assert sense_triplet(r.sense) == (0x3, 0x11, 0x00)
        assert (await ini.execute(0, TUR)).status == GOOD  # the other drive is untouched
        # read-only live, both ways: the cartridge stays in, position and all
        assert (await ini.execute(0, c6(0x0A, 0, 10), data_out=b"x" * 10)).status == GOOD
        await admin.ok("device", "set", "tape0", "--read-only")
        await ini.execute(0, TUR)  # MODE PARAMETERS CHANGED
        r = await ini.execute(0, c6(0x0A, 0, 10), data_out=b"y" * 10)
        assert sense_triplet(r.sense) == (0x7, 0x27, 0x00)
        await admin.ok("device", "set", "tape0", "--writable")
        await ini.execute(0, TUR)
        assert (await ini.execute(0, c6(0x0A, 0, 10), data_out=b"z" * 10)).status == GOOD
        assert await read_position(ini, 0) == (0, 2, 0)
        # RSOC comes from the same table: the tape's commands, with their masks
        rsoc = bytes((0xA3, 0x0C, 0x01, 0x34, 0, 0)) + (64).to_bytes(4, "big") + bytes(2)
        r = await ini.execute(0, rsoc, read_length=64)  # one command: READ POSITION
        assert r.status == GOOD and r.data[1] & 0x07 == 0x03 and r.data[4:6] == b"\x34\x1f"
        rsoc_all = bytes((0xA3, 0x0C, 0, 0, 0, 0)) + (4096).to_bytes(4, "big") + bytes(2)
        r = await ini.execute(0, rsoc_all, read_length=4096)
        listed = {r.data[4 + 8 * i] for i in range(int.from_bytes(r.data[:4], "big") // 8)}
        assert {0x01, 0x08, 0x0A, 0x10, 0x11, 0x2B, 0x34, 0x4D, 0x8C, 0x91, 0x92} <= listed
        assert 0x28 not in listed  # no READ(10) on a tape
