"""SANITIZE: every field check with its field pointer, the operation, its
NOT READY 04/1B with progress, and the failure mode."""

from __future__ import annotations

import itertools
import struct

import pytest
import trio

from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.sense import Asc, FieldPointer, ScsiError, SenseKey, Status
from tests.fakes import FakeContext, run_cdb
from tests.unit.devices.test_disk_io import BLOCKS, BS, assert_sense, disk, read10
from tests.unit.devices.test_disk_write_ext import fill


def sanitize(action: int, length: int = 0, immed: bool = False, ause: bool = False) -> bytes:
    byte1 = action | (0x80 if immed else 0) | (0x20 if ause else 0)
    return struct.pack(">BB5xHB", 0x48, byte1, length, 0)


def overwrite_params(pattern: bytes, count: int = 1, invert: bool = False) -> bytes:
    return bytes(((0x80 if invert else 0) | count, 0)) + struct.pack(">H", len(pattern)) + pattern


async def run_sanitize(d: DiskDevice, cdb: bytes, data: bytes = b"") -> object:
    """Run SANITIZE with IMMED=1 and its background operation to the end."""
    ctx = FakeContext()
    out = await run_cdb(d, cdb, data_out=data, ctx=ctx)
    for job in ctx.background:
        await job()
    return out


async def read(d: DiskDevice, lba: int, n: int) -> bytes:
    out = await run_cdb(d, read10(lba, n))
    assert out.status == Status.GOOD and out.data is not None, out
    return out.data


async def test_overwrite_fills_every_block_with_the_pattern() -> None:
    d = disk()
    await fill(d, 0, b"a" * (4 * BS))
    params = overwrite_params(b"\x12\x34\x56")  # shorter than a block: repeated
    out = await run_sanitize(d, sanitize(1, len(params), immed=True), params)
    assert out.status == Status.GOOD  # type: ignore[attr-defined]
    block = (b"\x12\x34\x56" * BS)[:BS]
    assert await read(d, 0, 2) == block * 2
    assert await read(d, BLOCKS - 1, 1) == block


async def test_overwrite_invert_alternates_and_the_last_pass_stays() -> None:
    d = disk()
    params = overwrite_params(b"\x0f" * BS, count=2, invert=True)
    await run_sanitize(d, sanitize(1, len(params), immed=True), params)
    assert await read(d, 7, 1) == b"\xf0" * BS


async def test_block_erase_deallocates_and_reads_zeros() -> None:
    d = disk()
    await fill(d, 5, b"x" * BS)
    out = await run_sanitize(d, sanitize(2, immed=True))
    assert out.status == Status.GOOD  # type: ignore[attr-defined]
    assert await read(d, 5, 1) == bytes(BS)


async def test_block_characteristics_say_reads_work_after_block_erase() -> None:
    out = await run_cdb(disk(), bytes((0x12, 0x01, 0xB1, 0, 0xFF, 0)))
    assert out.data is not None and out.data[7] >> 6 == 1  # WABEREQ 01b, WACEREQ 0


@pytest.mark.parametrize(
    ("cdb", "data", "asc", "pointer"),
    [
        # CRYPTO ERASE: no row (no media key to change in a file)
        (sanitize(3), b"", Asc.INVALID_FIELD_IN_CDB, FieldPointer(1, 4)),
        (sanitize(0x10), b"", Asc.INVALID_FIELD_IN_CDB, FieldPointer(1, 4)),
        # parameter list length: > 4 and <= block size + 4 for OVERWRITE, else 0
        (sanitize(1, 4), bytes(4), Asc.INVALID_FIELD_IN_CDB, FieldPointer(7)),
        (sanitize(1, BS + 5), bytes(BS + 5), Asc.INVALID_FIELD_IN_CDB, FieldPointer(7)),
        (sanitize(2, 8), bytes(8), Asc.INVALID_FIELD_IN_CDB, FieldPointer(7)),
        (sanitize(0x1F, 8), bytes(8), Asc.INVALID_FIELD_IN_CDB, FieldPointer(7)),
        # reserved CDB bytes
        (bytes((0x48, 0x01, 0, 0, 1, 0, 0, 0, 8, 0)), bytes(8), Asc.INVALID_FIELD_IN_CDB,
         FieldPointer(4, 0)),
        (bytes((0x48, 0x41, 0, 0, 0, 0, 0, 0, 8, 0)), bytes(8), Asc.INVALID_FIELD_IN_CDB,
         FieldPointer(1, 6)),
        # parameter list: TEST, OVERWRITE COUNT 0, reserved byte, pattern length
        (sanitize(1, 8), b"\x21\x00\x00\x04" + bytes(4), Asc.INVALID_FIELD_IN_PARAMETER_LIST,
         FieldPointer(0, 6, in_cdb=False)),
        (sanitize(1, 8), b"\x00\x00\x00\x04" + bytes(4), Asc.INVALID_FIELD_IN_PARAMETER_LIST,
         FieldPointer(0, 4, in_cdb=False)),
        (sanitize(1, 8), b"\x01\x01\x00\x04" + bytes(4), Asc.INVALID_FIELD_IN_PARAMETER_LIST,
         FieldPointer(1, 7, in_cdb=False)),
        (sanitize(1, 8), b"\x01\x00\x00\x00" + bytes(4), Asc.INVALID_FIELD_IN_PARAMETER_LIST,
         FieldPointer(2, in_cdb=False)),
        (sanitize(1, 8), b"\x01\x00\x00\x05" + bytes(4), Asc.INVALID_FIELD_IN_PARAMETER_LIST,
         FieldPointer(2, in_cdb=False)),
    ],
)
async def test_sanitize_field_checks_change_nothing(
    cdb: bytes, data: bytes, asc: Asc, pointer: FieldPointer
) -> None:
    d = disk()
    await fill(d, 0, b"a" * BS)
    ctx = FakeContext()
    out = await run_cdb(d, cdb, data_out=data, ctx=ctx)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, asc.value, pointer)
    assert ctx.background == [] and d.medium.busy is None
    assert await read(d, 0, 1) == b"a" * BS


async def test_sanitize_on_a_read_only_mapping_is_data_protect() -> None:
    d = disk()
    out = await run_cdb(d, sanitize(2), ctx=FakeContext(read_only=True))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)


async def test_while_running_commands_are_not_ready_with_progress() -> None:
    d = DiskDevice("big", MemoryStore(8 << 20))
    params = overwrite_params(b"\x55" * BS)
    ctx = FakeContext()
    out = await run_cdb(d, sanitize(1, len(params), immed=True), data_out=params, ctx=ctx)
    assert out.status == Status.GOOD and len(ctx.background) == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ctx.background[0])
        await trio.sleep(0.2)  # paced: 8 MiB takes about half a second
        sense = d.not_ready_sense()
        assert sense is not None and (sense.key, sense.asc, sense.ascq) == (SenseKey.NOT_READY,
                                                                            0x04, 0x1B)
        assert sense.specific is not None and sense.specific[0] == 0x80  # SKSV
        progress = int.from_bytes(sense.specific[1:], "big")
        assert 0 < progress < 0x10000
        # every command but INQUIRY, REPORT LUNS and REQUEST SENSE
        for cdb in (read10(0, 1), bytes(6), bytes((0x1A, 0, 0x3F, 0, 0xFF, 0)),
                    sanitize(2)):
            assert_sense(await run_cdb(d, cdb), SenseKey.NOT_READY, (0x04, 0x1B))
        out = await run_cdb(d, bytes((0x12, 0, 0, 0, 36, 0)))
        assert out.status == Status.GOOD
        out = await run_cdb(d, bytes((0x03, 0, 0, 0, 18, 0)))
        assert out.data is not None and (out.data[2], out.data[12], out.data[13]) == (2, 4, 0x1B)
        assert out.data[15] == 0x80
    assert d.medium.busy is None
    assert await read(d, 100, 1) == b"\x55" * BS


class SlowDiscardStore(MemoryStore):
    """Each discard waits until the test lets it go, and is recorded."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.discards: list[tuple[int, int]] = []
        self.step = trio.Semaphore(0)

    async def discard(self, offset: int, length: int) -> None:
        await self.step.acquire()
        await super().discard(offset, length)
        self.discards.append((offset, length))


async def test_block_erase_runs_in_pieces_and_shows_its_progress() -> None:
    store = SlowDiscardStore(8 << 20)
    d = DiskDevice("big", store)
    ctx = FakeContext()
    out = await run_cdb(d, sanitize(2, immed=True), ctx=ctx)
    assert out.status == Status.GOOD and len(ctx.background) == 1
    seen = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ctx.background[0])
        while d.medium.busy is not None:
            sense = d.medium.busy
            assert sense.specific is not None and sense.specific[0] == 0x80  # SKSV
            seen.append(int.from_bytes(sense.specific[1:], "big"))
            store.step.release()
            await trio.sleep(0.001)
    # the whole medium, in order, in pieces; the progress only went up
    assert store.discards[0][0] == 0 and len(store.discards) > 8
    assert sum(n for _, n in store.discards) == 8 << 20
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(store.discards))
    assert seen[0] == 0 and seen == sorted(seen) and len(set(seen)) > 8


class FailingStore(MemoryStore):
    async def discard(self, offset: int, length: int) -> None:
        raise OSError(5, "injected")


async def test_failure_mode_and_exit_failure_mode() -> None:
    d = DiskDevice("f", FailingStore(BLOCKS * BS))
    out = await run_sanitize(d, sanitize(2, immed=True))  # the erase fails
    assert d.sanitize_state.failed
    assert_sense(await run_cdb(d, read10(0, 1)), SenseKey.MEDIUM_ERROR, (0x31, 0x03))
    # AUSE=0 on the failed one: EXIT FAILURE MODE is refused
    assert_sense(await run_cdb(d, sanitize(0x1F)), SenseKey.ILLEGAL_REQUEST,
                 Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(1, 4))
    # a new failing sanitize with AUSE=1, then EXIT FAILURE MODE works
    await run_sanitize(d, sanitize(2, immed=True, ause=True))
    out = await run_cdb(d, sanitize(0x1F))
    assert out.status == Status.GOOD and not d.sanitize_state.failed
    assert (await run_cdb(d, read10(0, 1))).status == Status.GOOD


async def test_immed_zero_waits_and_reports_the_failure() -> None:
    d = DiskDevice("f", FailingStore(BLOCKS * BS))
    ctx = FakeContext()
    result: list[object] = []

    async def issue() -> None:
        result.append(await run_cdb(d, sanitize(2), ctx=ctx))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(issue)
        await trio.sleep(0.01)
        assert result == [] and len(ctx.background) == 1
        await ctx.background[0]()
    out = result[0]
    assert_sense(out, SenseKey.MEDIUM_ERROR, (0x31, 0x03))  # type: ignore[arg-type]
    assert isinstance(ScsiError, type)
