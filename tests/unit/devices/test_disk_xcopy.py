"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: every parameter-list check
with its field pointer, the resolver boundary, the copy, and the results."""

from __future__ import annotations

import struct

import pytest

from pyscst.devices.disk import DiskDevice
from pyscst.devices.stores import MemoryStore
from pyscst.scsi.sense import Asc, FieldPointer, SenseKey, Status
from pyscst.scsi.vpd import naa_locally_assigned
from tests.fakes import FakeContext, FakeTransport, Outcome, make_cmd
from tests.unit.devices.test_disk_io import BS, assert_sense

BLOCKS = 256


def _p(byte: int, bit: int | None = None) -> FieldPointer:
    """A field pointer into the parameter list."""
    return FieldPointer(byte, bit, in_cdb=False)


def designation(dev: DiskDevice) -> bytes:
    naa = naa_locally_assigned(dev.device_id)
    return bytes((0x01, 0x03, 0x00, len(naa))) + naa


def target(dev: DiskDevice, block: int = BS, code: int = 0xE4, ptype: int = 0) -> bytes:
    desc = bytearray(32)
    desc[0], desc[1] = code, ptype
    d = designation(dev)
    desc[4 : 4 + len(d)] = d
    desc[29:32] = block.to_bytes(3, "big")
    return bytes(desc)


def segment(src: int, dst: int, n: int, src_lba: int = 0, dst_lba: int = 0,
            code: int = 0x02, length: int = 0x18) -> bytes:
    return struct.pack(">BBHHH2xHQQ", code, 0, length, src, dst, n, src_lba, dst_lba)


def params(tds: list[bytes], segs: list[bytes], list_id: int = 1, usage: int = 0,
           inline: int = 0) -> bytes:
    t, s = b"".join(tds), b"".join(segs)
    return struct.pack(">BBHIII", list_id, usage << 3, len(t), 0, len(s), inline) + t + s


def xcopy_cdb(length: int) -> bytes:
    return bytes((0x83, 0)) + bytes(8) + length.to_bytes(4, "big") + bytes(2)


class World:
    """Two disks the nexus can reach (b read-only for it) and one it cannot."""

    def __init__(self) -> None:
        self.a = DiskDevice("a", MemoryStore(BLOCKS * BS))
        self.b = DiskDevice("b", MemoryStore(BLOCKS * BS))
        self.hidden = DiskDevice("hidden", MemoryStore(BLOCKS * BS))
        self.visible: dict[bytes, tuple[object, bool]] = {
            designation(self.a): (self.a, False), designation(self.b): (self.b, True)
        }

    def resolve(self, desig: bytes) -> tuple[object, bool] | None:
        return self.visible.get(desig)


async def run(w: World, cdb: bytes, data: bytes = b"", resolver: bool = True) -> Outcome:
    from pyscst.scsi.sense import ScsiError

    transport = FakeTransport(data)
    cmd = make_cmd(cdb, transport)
    cmd.copy_targets = w.resolve if resolver else None
    ctx = FakeContext()
    try:
        spec = w.a.table.lookup(cdb)
        out = await spec.handler(w.a, cmd, ctx)
    except ScsiError as exc:
        return Outcome(None, exc, cmd)
    return Outcome(None if out is None else bytes(out), None, cmd)


async def fill(d: DiskDevice, byte: bytes) -> None:
    await d.store.write(0, byte * (BLOCKS * BS))


async def test_copy_between_reachable_disks_and_copy_status() -> None:
    w = World()
    await fill(w.a, b"a")
    w.visible[designation(w.b)] = (w.b, False)
    p = params([target(w.a), target(w.b)], [segment(0, 1, 16, 4, 100), segment(0, 0, 2, 0, 50)],
               list_id=9)
    out = await run(w, xcopy_cdb(len(p)), p)
    assert out.status == Status.GOOD
    buf = bytearray(16 * BS)
    await w.b.store.readinto(100 * BS, memoryview(buf))
    assert bytes(buf) == b"a" * 16 * BS
    rcr = bytes((0x84, 0x00, 9)) + bytes(7) + (255).to_bytes(4, "big") + bytes(2)
    out = await run(w, rcr)
    assert out.data == struct.pack(">IBHBI", 8, 0x01, 2, 0, 18 * BS)
    # an unknown list identifier
    rcr = bytes((0x84, 0x00, 8)) + bytes(7) + (255).to_bytes(4, "big") + bytes(2)
    assert_sense(await run(w, rcr), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB.value,
                 FieldPointer(2))


async def test_operating_parameters() -> None:
    w = World()
    rcr = bytes((0x84, 0x03, 0)) + bytes(7) + (255).to_bytes(4, "big") + bytes(2)
    out = await run(w, rcr)
    assert out.data is not None
    data = out.data
    assert struct.unpack_from(">I", data, 0)[0] == len(data) - 4
    assert struct.unpack_from(">HH", data, 8) == (8, 64)
    assert data[43] == 2 and set(data[44:46]) == {0x02, 0xE4}


@pytest.mark.parametrize(
    ("build", "key", "asc", "pointer"),
    [
        # a masked LU (the CVE): COPY ABORTED, pointer at its target descriptor
        (lambda w: params([target(w.a), target(w.hidden)], [segment(1, 0, 1)]),
         SenseKey.COPY_ABORTED, Asc.COPY_TARGET_DEVICE_NOT_REACHABLE, _p(48)),
        (lambda w: params([target(w.hidden), target(w.a)], [segment(1, 0, 1)]),
         SenseKey.COPY_ABORTED, Asc.COPY_TARGET_DEVICE_NOT_REACHABLE, _p(16)),
        # descriptor types and fields
        (lambda w: params([target(w.a, code=0xE0)], [segment(0, 0, 1)]),
         SenseKey.ILLEGAL_REQUEST, Asc.UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE,
         _p(16)),
        (lambda w: params([target(w.a, ptype=1)], [segment(0, 0, 1)]),
         SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, _p(17, 4)),
        (lambda w: params([target(w.a, block=4096)], [segment(0, 0, 1)]),
         SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, _p(45)),
        (lambda w: params([target(w.a)], [segment(0, 0, 1, code=0x01)]),
         SenseKey.ILLEGAL_REQUEST, Asc.UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE,
         _p(48)),
        (lambda w: params([target(w.a)], [segment(0, 0, 1, length=0x14)]),
         SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, _p(50)),
        (lambda w: params([target(w.a)] * 9, [segment(0, 0, 1)]),
         SenseKey.ILLEGAL_REQUEST, Asc.TOO_MANY_TARGET_DESCRIPTORS, _p(2)),
        (lambda w: params([target(w.a)], [segment(0, 0, 1)] * 65),
         SenseKey.ILLEGAL_REQUEST, Asc.TOO_MANY_SEGMENT_DESCRIPTORS, _p(8)),
        (lambda w: params([target(w.a)[:7] + b"\x15" + target(w.a)[8:]], [segment(0, 0, 1)]),
         SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, _p(23)),
        (lambda w: params([target(w.a)[:30]], [segment(0, 0, 1)]),
         SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, _p(2)),
        # header: LIST ID USAGE 01b is reserved, inline data is not offered
        (lambda w: params([target(w.a)], [segment(0, 0, 1)], usage=1),
         SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, _p(1, 4)),
        (lambda w: params([target(w.a)], [segment(0, 0, 1)], inline=4) + bytes(4),
         SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, _p(12)),
        # segments: an index naming no descriptor, a range past the end
        (lambda w: params([target(w.a)], [segment(0, 1, 1)]),
         SenseKey.COPY_ABORTED, Asc.COPY_TARGET_DEVICE_NOT_REACHABLE, _p(54)),
    ],
)
async def test_parameter_list_checks_copy_nothing(
    build: object, key: SenseKey, asc: Asc, pointer: FieldPointer
) -> None:
    w = World()
    await fill(w.a, b"a")
    p = build(w)  # type: ignore[operator]
    out = await run(w, xcopy_cdb(len(p)), p)
    assert_sense(out, key, asc.value, pointer)


async def test_range_beyond_the_end_is_copy_aborted_with_a_pointer() -> None:
    w = World()
    p = params([target(w.a)], [segment(0, 0, 8, 0, BLOCKS - 4)])
    out = await run(w, xcopy_cdb(len(p)), p)
    assert out.status == Status.CHECK_CONDITION and out.sense is not None
    assert out.sense.key == SenseKey.COPY_ABORTED
    assert out.sense.field_pointer == _p(48 + 20)


async def test_read_only_destination_is_data_protect_and_unchanged() -> None:
    w = World()
    await fill(w.a, b"a")
    p = params([target(w.a), target(w.b)], [segment(0, 1, 4)])
    assert_sense(await run(w, xcopy_cdb(len(p)), p), SenseKey.DATA_PROTECT,
                 Asc.WRITE_PROTECTED.value)
    buf = bytearray(4 * BS)
    await w.b.store.readinto(0, memoryview(buf))
    assert bytes(buf) == bytes(4 * BS)
    # reading from it is fine
    p = params([target(w.b), target(w.a)], [segment(0, 1, 4)])
    assert (await run(w, xcopy_cdb(len(p)), p)).status == Status.GOOD


async def test_without_a_resolver_nothing_is_reachable() -> None:
    w = World()
    p = params([target(w.a)], [segment(0, 0, 1)])
    out = await run(w, xcopy_cdb(len(p)), p, resolver=False)
    assert_sense(out, SenseKey.COPY_ABORTED, Asc.COPY_TARGET_DEVICE_NOT_REACHABLE.value,
                 _p(16))


async def test_parameter_list_length_errors() -> None:
    w = World()
    p = params([target(w.a)], [segment(0, 0, 1)])
    assert (await run(w, xcopy_cdb(0))).status == Status.GOOD  # no list: nothing
    for length, data in ((8, p[:8]), (len(p) - 4, p[:-4])):
        assert_sense(await run(w, xcopy_cdb(length), data), SenseKey.ILLEGAL_REQUEST,
                     Asc.PARAMETER_LIST_LENGTH_ERROR.value)
    assert_sense(await run(w, xcopy_cdb(1 << 20), bytes(1 << 20)), SenseKey.ILLEGAL_REQUEST,
                 Asc.PARAMETER_LIST_LENGTH_ERROR.value)
    # reserved CDB bytes and an unknown service action
    cdb = bytearray(xcopy_cdb(len(p)))
    cdb[5] = 1
    assert_sense(await run(w, bytes(cdb), p), SenseKey.ILLEGAL_REQUEST,
                 Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(5, 0))
    assert_sense(await run(w, bytes((0x83, 0x01)) + bytes(14), p), SenseKey.ILLEGAL_REQUEST,
                 Asc.INVALID_FIELD_IN_CDB.value, FieldPointer(1, 4))


async def test_vpd_and_inquiry_advertise_the_copy_manager() -> None:
    from tests.fakes import run_cdb

    d = DiskDevice("d", MemoryStore(BLOCKS * BS))
    out = await run_cdb(d, bytes((0x12, 0, 0, 0, 96, 0)))
    assert out.data is not None and out.data[5] & 0x08  # 3PC
    out = await run_cdb(d, bytes((0x12, 1, 0x8F, 0, 255, 0)))
    assert out.data is not None and out.data[1] == 0x8F
    assert struct.unpack_from(">H", out.data, 4)[0] == 0x0001  # supported commands


async def test_a_target_that_is_not_a_block_device_is_unreachable() -> None:
    from pyscst.devices.cdrom import CdromDevice

    w = World()
    cd = CdromDevice("cd", MemoryStore(64 * 2048))
    naa = designation(w.hidden)
    w.visible[naa] = (cd, False)
    p = params([target(w.a), target(w.hidden)], [segment(0, 1, 1)])
    assert_sense(await run(w, xcopy_cdb(len(p)), p), SenseKey.COPY_ABORTED,
                 Asc.COPY_TARGET_DEVICE_NOT_REACHABLE.value, _p(48))
