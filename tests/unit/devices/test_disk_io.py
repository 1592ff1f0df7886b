"""SBC data path through the table: READ/WRITE/VERIFY/WRITE AND VERIFY/PRE-FETCH/SYNC."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import FileStore, MemoryStore
from pyscst.scsi.command import Buffer
from pyscst.scsi.sense import Asc, FieldPointer, SenseKey, Status
from tests.fakes import FakeContext, Outcome, run_cdb

BS = 512
BLOCKS = 2048


def disk(**kw: object) -> DiskDevice:
    return DiskDevice("d0", MemoryStore(BLOCKS * BS), **kw)  # type: ignore[arg-type]


def read10(lba: int, n: int, flags: int = 0, control: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x28, flags, lba, 0, n, control)


def write10(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, flags, lba, 0, n, 0)


def cdb12(op: int, lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIIBB", op, flags, lba, n, 0, 0)


def cdb16(op: int, lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, flags, lba, n, 0, 0)


def cdb6(op: int, lba: int, n: int) -> bytes:
    return bytes((op, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF, n & 0xFF, 0))


def assert_sense(out: Outcome, key: SenseKey, asc: tuple[int, int],
                 pointer: FieldPointer | None = None) -> None:
    assert out.status == Status.CHECK_CONDITION, out
    assert out.sense is not None
    assert (out.sense.key, (out.sense.asc, out.sense.ascq)) == (key, asc)
    if pointer is not None:
        assert out.sense.field_pointer == pointer


async def test_write_then_read_all_sizes_of_cdb() -> None:
    d = disk()
    pattern = os.urandom(4 * BS)
    for i, wcdb in enumerate(
        [cdb6(0x0A, 8, 4), write10(16, 4), cdb12(0xAA, 24, 4), cdb16(0x8A, 32, 4)]
    ):
        out = await run_cdb(d, wcdb, data_out=pattern)
        assert out.status == Status.GOOD and out.data is None
        assert out.cmd.transfer_length == 4 * BS
        lba = 8 + 8 * i
        for rcdb in [cdb6(0x08, lba, 4), read10(lba, 4), cdb12(0xA8, lba, 4), cdb16(0x88, lba, 4)]:
            got = await run_cdb(d, rcdb)
            assert got.data == pattern, rcdb.hex()


async def test_read6_zero_length_means_256_blocks() -> None:
    d = disk()
    out = await run_cdb(d, cdb6(0x08, 0, 0))
    assert out.data is not None and len(out.data) == 256 * BS


async def test_zero_length_transfers_are_good_without_data() -> None:
    d = disk()
    for cdb in [read10(0, 0), write10(0, 0), cdb16(0x88, 5, 0), cdb12(0xAA, 5, 0)]:
        out = await run_cdb(d, cdb)
        assert out.status == Status.GOOD and out.data is None


@pytest.mark.parametrize(
    "cdb",
    [
        read10(BLOCKS, 1),
        read10(BLOCKS - 1, 2),
        read10(BLOCKS + 1, 0),
        read10(0xFFFFFFFF, 1),
        cdb16(0x88, 0xFFFFFFFFFFFFFFFF, 1),
        cdb12(0xA8, BLOCKS - 2, 3),
        cdb6(0x08, 0x1FFFFF, 1),
        write10(BLOCKS, 1),
        cdb16(0x8F, BLOCKS, 1),
        cdb16(0x90, BLOCKS - 1, 2),
        struct.pack(">BBIBHB", 0x35, 0, BLOCKS, 0, 0, 0),
    ],
)
async def test_beyond_end_is_lba_out_of_range(cdb: bytes) -> None:
    out = await run_cdb(disk(), cdb, data_out=bytes(BS * 3))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE.value)


async def test_last_block_is_in_range() -> None:
    d = disk()
    out = await run_cdb(d, read10(BLOCKS - 1, 1))
    assert out.status == Status.GOOD


async def test_max_transfer_length_enforced_with_field_pointer() -> None:
    d = DiskDevice("d", MemoryStore(1 << 26), max_transfer_bytes=64 * BS)
    assert d.max_transfer_blocks == 64
    assert (await run_cdb(d, read10(0, 64))).status == Status.GOOD
    assert_sense(await run_cdb(d, read10(0, 65)), SenseKey.ILLEGAL_REQUEST,
                 Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(7))
    assert_sense(await run_cdb(d, cdb16(0x88, 0, 65)), SenseKey.ILLEGAL_REQUEST,
                 Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(10))
    assert_sense(await run_cdb(d, cdb12(0xA8, 0, 65)), SenseKey.ILLEGAL_REQUEST,
                 Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(6))
    assert_sense(await run_cdb(d, cdb6(0x08, 0, 0)), SenseKey.ILLEGAL_REQUEST,
                 Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(4))


@pytest.mark.parametrize("prot", range(1, 8))
async def test_protect_fields_are_invalid(prot: int) -> None:
    d = disk()
    for cdb in [read10(0, 1, prot << 5), write10(0, 1, prot << 5), cdb12(0xAF, 0, 1, prot << 5),
                cdb16(0x8E, 0, 1, prot << 5)]:
        out = await run_cdb(d, cdb, data_out=bytes(BS))
        assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value,
                     FieldPointer(1, prot.bit_length() + 4))


async def test_dpo_fua_accepted() -> None:
    d = disk()
    for flags in (0x10, 0x08, 0x18):
        assert (await run_cdb(d, read10(0, 1, flags))).status == Status.GOOD
        assert (await run_cdb(d, write10(0, 1, flags), data_out=bytes(BS))).status == Status.GOOD


async def test_short_data_out_writes_only_whole_blocks_sent() -> None:
    d = disk()
    store = d.store
    assert isinstance(store, MemoryStore)
    store.data[:BS * 2] = b"a" * (BS * 2)
    # EDTL 0: nothing arrives, nothing is written, GOOD (overflow residual)
    out = await run_cdb(d, write10(0, 2), data_out=b"b" * (BS * 2), expected_length=0)
    assert out.status == Status.GOOD
    assert out.cmd.transfer_length == 2 * BS  # the transport computes the overflow
    assert store.data[:BS * 2] == b"a" * (BS * 2)
    # a partial block cannot be written: INVALID FIELD IN INFORMATION UNIT
    out = await run_cdb(d, write10(0, 2), data_out=b"b" * (BS * 2), expected_length=200)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, (0x0E, 0x03))
    assert store.data[:BS * 2] == b"a" * (BS * 2)
    # one whole block sent of two: exactly that block is written
    out = await run_cdb(d, write10(0, 2), data_out=b"b" * (BS * 2), expected_length=BS)
    assert out.status == Status.GOOD
    assert store.data[:BS] == b"b" * BS
    assert store.data[BS:BS * 2] == b"a" * BS


async def test_write_protect_paths() -> None:
    d = disk()
    out = await run_cdb(d, write10(0, 1), data_out=bytes(BS), ctx=FakeContext(read_only=True))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)
    ro = disk(read_only=True)
    out = await run_cdb(ro, cdb16(0x8A, 0, 1), data_out=bytes(BS))
    assert_sense(out, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED.value)
    assert (await run_cdb(ro, read10(0, 1))).status == Status.GOOD


async def test_verify_bytchk_modes() -> None:
    d = disk()
    data = os.urandom(8 * BS)
    await run_cdb(d, write10(100, 8), data_out=data)
    # BYTCHK=0: range only
    assert (await run_cdb(d, struct.pack(">BBIBHB", 0x2F, 0, 100, 0, 8, 0))).status == Status.GOOD
    # BYTCHK=1 equal
    out = await run_cdb(d, struct.pack(">BBIBHB", 0x2F, 0x02, 100, 0, 8, 0), data_out=data)
    assert out.status == Status.GOOD
    # BYTCHK=1 mismatch: INFORMATION is the offset of the first differing byte
    bad = bytearray(data)
    bad[3 * BS + 17] ^= 0x58
    bad[5 * BS] ^= 0x01
    for cdb in (struct.pack(">BBIBHB", 0x2F, 0x02, 100, 0, 8, 0), cdb12(0xAF, 100, 8, 0x02),
                cdb16(0x8F, 100, 8, 0x02)):
        out = await run_cdb(d, cdb, data_out=bytes(bad))
        assert_sense(out, SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY.value)
        assert out.sense is not None and out.sense.information == 3 * BS + 17
    # BYTCHK=0 ignores mismatching data entirely (none is transferred)
    out = await run_cdb(d, cdb16(0x8F, 100, 8), data_out=bytes(bad))
    assert out.status == Status.GOOD and out.cmd.transfer_length == 0


async def test_verify_bytchk_3_compares_one_block_against_all() -> None:
    d = disk()
    block = os.urandom(BS)
    await run_cdb(d, write10(10, 4), data_out=block * 4)
    out = await run_cdb(d, struct.pack(">BBIBHB", 0x2F, 0x06, 10, 0, 4, 0), data_out=block)
    assert out.status == Status.GOOD
    assert out.cmd.transfer_length == BS
    out = await run_cdb(d, struct.pack(">BBIBHB", 0x2F, 0x06, 9, 0, 4, 0), data_out=block)
    assert_sense(out, SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY.value)


async def test_verify_bytchk_2_is_invalid() -> None:
    out = await run_cdb(disk(), struct.pack(">BBIBHB", 0x2F, 0x04, 0, 0, 1, 0), data_out=bytes(BS))
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(1, 2))


async def test_write_and_verify_writes() -> None:
    d = disk()
    data = os.urandom(2 * BS)
    for cdb in (struct.pack(">BBIBHB", 0x2E, 0x02, 7, 0, 2, 0), cdb12(0xAE, 9, 2, 0x12),
                cdb16(0x8E, 11, 2)):
        out = await run_cdb(d, cdb, data_out=data)
        assert out.status == Status.GOOD
        lba = struct.unpack_from(">I", cdb, 2)[0] if len(cdb) < 16 else 11
        assert (await run_cdb(d, read10(lba, 2))).data == data
    # FUA is not a WRITE AND VERIFY bit
    out = await run_cdb(d, struct.pack(">BBIBHB", 0x2E, 0x08, 7, 0, 1, 0), data_out=data)
    assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(1, 3))


async def test_prefetch_and_sync_cache(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path / "d", size=BLOCKS * BS)
    d = DiskDevice("f", store)
    try:
        for cdb in (struct.pack(">BBIBHB", 0x34, 0x02, 0, 0, 256, 0),
                    cdb16(0x90, BLOCKS - 256, 256), struct.pack(">BBIBHB", 0x34, 0, 0, 0, 0, 0)):
            assert (await run_cdb(d, cdb)).status == Status.GOOD
        await run_cdb(d, write10(0, 1), data_out=b"s" * BS)
        for cdb in (struct.pack(">BBIBHB", 0x35, 0x06, 0, 0, 1, 0), cdb16(0x91, 0, 0, 0x02)):
            assert (await run_cdb(d, cdb)).status == Status.GOOD
        # prefetch group field is allowed, its reserved high bits are not
        out = await run_cdb(d, struct.pack(">BBIBHB", 0x34, 0, 0, 0x20, 1, 0))
        assert_sense(out, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value,
                     FieldPointer(6, 5))
    finally:
        await d.close()


async def test_fua_and_write_through_reach_store() -> None:
    seen: list[bool] = []

    class Spy(MemoryStore):
        """Records how each write reached it: True only for a durable write."""

        inside_write = False

        async def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
            seen.append(fua)
            self.inside_write = True
            try:
                await super().write(offset, data, fua)
            finally:
                self.inside_write = False

        def write_now(self, offset: int, data: Buffer) -> bool:
            if not self.inside_write:
                seen.append(False)  # into the cache: never durable
            return super().write_now(offset, data)

    d = DiskDevice("s", Spy(BLOCKS * BS))
    await run_cdb(d, write10(0, 1), data_out=bytes(BS))
    await run_cdb(d, write10(0, 1, 0x08), data_out=bytes(BS))
    await run_cdb(d, cdb6(0x0A, 0, 1), data_out=bytes(BS))
    d2 = DiskDevice("wt", Spy(BLOCKS * BS), write_cache=False)
    await run_cdb(d2, write10(0, 1), data_out=bytes(BS))
    assert seen == [False, True, False, True]


async def test_4k_blocks() -> None:
    d = DiskDevice("4k", MemoryStore(1 << 20), block_size=4096)
    assert d.blocks == 256
    data = os.urandom(4096 * 2)
    assert (await run_cdb(d, write10(254, 2), data_out=data)).status == Status.GOOD
    assert (await run_cdb(d, read10(254, 2))).data == data
    assert_sense(await run_cdb(d, read10(255, 2)), SenseKey.ILLEGAL_REQUEST,
                 Asc.LBA_OUT_OF_RANGE.value)


async def test_store_errors_become_medium_errors() -> None:
    class Broken(MemoryStore):
        async def readinto(self, offset: int, buf: memoryview) -> None:
            raise OSError(5, "EIO")

    d = DiskDevice("b", Broken(BLOCKS * BS))
    out = await run_cdb(d, read10(42, 1))
    assert_sense(out, SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR.value)
    assert out.sense is not None and out.sense.information == 42


@pytest.mark.parametrize("fua", [False, True], ids=["cached", "fua"])
async def test_a_fileio_write_in_pieces_is_written_without_a_join(
    tmp_path: Path, fua: bool
) -> None:
    """FILEIO's fast write takes the data-out's pieces (the transport is never
    asked to join them); with FUA they are written, then synced on the ring."""
    from pyscst.devices.disk_io import write_now
    from pyscst.scsi.cdb import NEEDS_AWAIT, Pending
    from pyscst.scsi.command import DataDirection
    from tests.fakes import PiecedTransport, make_cmd, until

    store = await FileStore.open(tmp_path / "d", size=BLOCKS * BS)
    try:
        if fua and store.engine is None:
            pytest.skip("no io_uring here: a FUA write takes the task path")
        dev = DiskDevice("d0", store)
        parts = [os.urandom(BS * 60 + 100), os.urandom(412), os.urandom(BS * 100)]
        whole = b"".join(parts)
        cdb = write10(8, 161, 0x08 if fua else 0)  # (over PIECES_FROM: in pieces)
        cmd = make_cmd(cdb, PiecedTransport(parts), direction=DataDirection.WRITE)
        out = write_now(dev, cmd, FakeContext())
        if fua:
            assert isinstance(out, Pending)
            results: list[object] = []
            out.then(results.append)
            await until(lambda: results)
            assert results == [None]  # GOOD
        else:
            assert out is None  # GOOD, written inline
        got = bytearray(len(whole))
        await store.readinto(8 * BS, memoryview(got))
        assert bytes(got) == whole
        short = make_cmd(cdb, PiecedTransport(parts[:2]), 161 * BS, DataDirection.WRITE)
        assert write_now(dev, short, FakeContext()) is NEEDS_AWAIT  # (not all there yet)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "cdb",
    [
        read10(BLOCKS, 1), read10(BLOCKS - 1, 2), read10(BLOCKS + 1, 0), read10(0xFFFFFFFF, 1),
        read10(0, 65), read10(BLOCKS - 1, 1), read10(BLOCKS, 0), read10(3, 0),
        cdb16(0x88, BLOCKS - 1, 2), cdb12(0xA8, 0, 65), cdb6(0x08, 0x1FFFFF, 1),
        write10(BLOCKS, 1), write10(BLOCKS - 1, 2), write10(0, 65), write10(BLOCKS - 1, 1),
        write10(BLOCKS, 0), cdb16(0x8A, BLOCKS, 1), cdb12(0xAA, 0, 65),
    ],
)
async def test_fast_handlers_check_as_the_task_path_does(cdb: bytes) -> None:
    """read_now/write_now decode READ(10)/WRITE(10) and check the range
    themselves (the hot path): each CDB gets the task path's answer."""
    from pyscst.devices.disk_io import read_now, write_now
    from pyscst.scsi.command import DataDirection
    from pyscst.scsi.sense import ScsiError
    from tests.fakes import FakeTransport, make_cmd

    def device() -> DiskDevice:
        return DiskDevice("d", MemoryStore(BLOCKS * BS), max_transfer_bytes=64 * BS)

    writing = cdb[0] in (0x2A, 0x8A, 0xAA)
    data = bytes(BS * 2)
    slow = await run_cdb(device(), cdb, data_out=data if writing else b"")
    cmd = make_cmd(cdb, FakeTransport(data), direction=DataDirection.WRITE) if writing else \
        make_cmd(cdb)  # fmt: skip
    try:
        got = (write_now if writing else read_now)(device(), cmd, FakeContext())
    except ScsiError as exc:
        assert slow.error is not None
        assert exc.sense == slow.error.sense
    else:
        assert slow.error is None, slow.error
        assert (None if got is None else bytes(got)) == slow.data  # type: ignore[arg-type]


async def test_fast_write_refuses_a_read_only_mapping() -> None:
    from pyscst.devices.disk_io import write_now
    from pyscst.scsi.command import DataDirection
    from pyscst.scsi.sense import ScsiError
    from tests.fakes import FakeTransport, make_cmd

    cmd = make_cmd(write10(0, 1), FakeTransport(bytes(BS)), direction=DataDirection.WRITE)
    with pytest.raises(ScsiError) as caught:
        write_now(disk(), cmd, FakeContext(read_only=True))
    assert caught.value.sense is not None
    assert (caught.value.sense.key, caught.value.sense.asc) == (SenseKey.DATA_PROTECT, 0x27)
