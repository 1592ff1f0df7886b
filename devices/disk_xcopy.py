"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: the disk as copy manager.

Supported: identification-descriptor target descriptors (E4h) naming an LU
by its designator from the Device Identification page, and block device to
block device segment descriptors (02h). The copy runs inside the target,
store to store, in chunks of ``COPY_CHUNK`` bytes with a checkpoint between
them, so ABORT TASK, LU reset and nexus loss stop it between chunks (blocks
already copied stay copied, as SPC allows for an aborted copy).

Security (CVE-2020-28374 in LIO): a target descriptor is resolved only
through ``cmd.copy_targets``, which the session builds from the issuing
I_T nexus' own LUN map. An LU that nexus cannot address (another target,
masked by its group) is COPY TARGET DEVICE NOT REACHABLE (COPY ABORTED
0D/02, field pointer at the target descriptor); one mapped read-only for it
is refused as a destination with DATA PROTECT / WRITE PROTECTED. Both are
checked for every descriptor before any block moves.

Everything in the parameter list is checked before copying, so errors are
ILLEGAL REQUEST with a field pointer into the parameter list (SPC-4 6.4.x
"errors detected before starting"), except what makes a segment impossible
(an index naming no target descriptor, a range beyond a device's capacity):
COPY ABORTED with the field pointer at the segment's field. I/O errors while
copying are COPY ABORTED. Like LIO and SCST, the copy is not ordered against
other commands on the LUs it reads and writes.

RECEIVE COPY RESULTS answers COPY STATUS for the last copies of each I_T
nexus (by LIST IDENTIFIER, when LIST ID USAGE asked to hold them) and
OPERATING PARAMETERS.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import attrs
import trio

from pyscst.devices.disk_sense import io_error
from pyscst.scsi.cdb import alloc_len
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.sense import Asc, FieldPointer, ScsiError, Sense, SenseKey, Status
from pyscst.scsi.vpd import page

if TYPE_CHECKING:
    from pyscst.devices.disk import DiskDevice

SA_LID1 = 0x00
SA_COPY_STATUS = 0x00
SA_OPERATING_PARAMETERS = 0x03
TARGET_IDENTIFICATION = 0xE4
SEGMENT_BLOCK_TO_BLOCK = 0x02
THIRD_PARTY_COPY_VPD = 0x8F

_HEADER = 16
_TARGET_LEN = 32
_SEGMENT_LEN = 28
#: operating parameters (what RECEIVE COPY RESULTS and VPD 0x8F advertise)
MAX_TARGET_DESCRIPTORS = 8
MAX_SEGMENT_DESCRIPTORS = 64
MAX_DESCRIPTOR_LIST_LENGTH = _HEADER + 8 * _TARGET_LEN + 64 * _SEGMENT_LEN
MAX_SEGMENT_BYTES = 64 << 20
COPY_CHUNK = 1 << 20
#: finished copies whose status an I_T nexus can still ask for
_HELD_RESULTS = 16


def _param(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError.check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field_pointer=FieldPointer(byte, bit, in_cdb=False),
    )


def _illegal(asc: Asc, byte: int) -> ScsiError:
    return ScsiError.check(SenseKey.ILLEGAL_REQUEST, asc,
                           field_pointer=FieldPointer(byte, None, in_cdb=False))


def unreachable(byte: int) -> ScsiError:
    """COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE; pointer: the descriptor."""
    return ScsiError.check(SenseKey.COPY_ABORTED, Asc.COPY_TARGET_DEVICE_NOT_REACHABLE,
                           field_pointer=FieldPointer(byte, None, in_cdb=False))


@attrs.frozen
class CopyResult:
    """What COPY STATUS reports for one finished copy."""

    status: int  # 01h completed without error, 02h completed with error
    segments: int
    bytes_copied: int


class CopyResults:
    """Per I_T nexus, per LIST IDENTIFIER: the last few copies' results."""

    def __init__(self) -> None:
        self._held: OrderedDict[tuple[str, str, int], CopyResult] = OrderedDict()

    def put(self, key: tuple[str, str, int], result: CopyResult) -> None:
        self._held[key] = result
        self._held.move_to_end(key)
        while len(self._held) > _HELD_RESULTS:
            self._held.popitem(last=False)

    def get(self, key: tuple[str, str, int]) -> CopyResult | None:
        return self._held.get(key)


@attrs.frozen
class _Segment:
    src: Any
    dst: Any
    blocks: int
    src_lba: int
    dst_lba: int


def _targets(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext, params: bytes,
             length: int) -> list[tuple[Any, bool, int]]:
    """Resolve each target descriptor: (device, read-only, descriptor offset)."""
    if length % _TARGET_LEN:
        raise _param(2)
    if length // _TARGET_LEN > MAX_TARGET_DESCRIPTORS:
        raise _illegal(Asc.TOO_MANY_TARGET_DESCRIPTORS, 2)
    resolve = cmd.copy_targets
    found = []
    for off in range(_HEADER, _HEADER + length, _TARGET_LEN):
        desc = params[off : off + _TARGET_LEN]
        if desc[0] != TARGET_IDENTIFICATION:
            raise _illegal(Asc.UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE, off)
        if desc[1] & 0x1F:  # PERIPHERAL DEVICE TYPE: block devices only
            raise _param(off + 1, 4)
        # LU ID TYPE (bits 7-6) is ignored and NUL (bit 5) obsolete in SPC-4
        designator_length = desc[7]
        if designator_length > 20:
            raise _param(off + 7)
        target = resolve(bytes(desc[4 : 8 + designator_length])) if resolve else None
        if target is None:
            raise unreachable(off)
        device, read_only = target
        if not _is_block_device(device):
            raise unreachable(off)  # e.g. a CD-ROM: not a block copy target
        block_length = int.from_bytes(desc[29:32], "big")
        if block_length != getattr(device, "block_size", -1):
            raise _param(off + 29)
        found.append((device, read_only, off))
    return found


def _is_block_device(device: Any) -> bool:
    inquiry = getattr(device, "inquiry", None)
    return (
        inquiry is not None
        and inquiry.device_type == 0
        and all(hasattr(device, a) for a in ("write_protected", "blocks", "store", "write_cache"))
    )


def _segments(params: bytes, start: int, length: int,
              targets: list[tuple[Any, bool, int]]) -> list[_Segment]:
    count = 0
    off = start
    segments = []
    end = start + length
    while off < end:
        if count == MAX_SEGMENT_DESCRIPTORS:
            raise _illegal(Asc.TOO_MANY_SEGMENT_DESCRIPTORS, 8)
        if params[off] != SEGMENT_BLOCK_TO_BLOCK:
            raise _illegal(Asc.UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE, off)
        if off + _SEGMENT_LEN > end or struct.unpack_from(">H", params, off + 2)[0] != 0x18:
            raise _param(off + 2)
        src_i, dst_i, blocks, src_lba, dst_lba = struct.unpack_from(">HH2xHQQ", params, off + 4)
        for index, at in ((src_i, off + 4), (dst_i, off + 6)):
            if index >= len(targets):
                raise unreachable(at)  # names no target descriptor
        src, _, _ = targets[src_i]
        dst, dst_ro, _ = targets[dst_i]
        if dst.write_protected(dst_ro):
            raise ScsiError.write_protected()
        if blocks * src.block_size > MAX_SEGMENT_BYTES:
            raise _param(off + 10)
        for device, lba, at in ((src, src_lba, off + 12), (dst, dst_lba, off + 20)):
            if lba + blocks > device.blocks:
                # COPY ABORTED with the segment's LBA field pointed at (what
                # initiators and libiscsi expect; the ASC is not specific)
                raise ScsiError(Status.CHECK_CONDITION, Sense(
                    SenseKey.COPY_ABORTED, 0, 0,
                    field_pointer=FieldPointer(at, None, in_cdb=False)))
        segments.append(_Segment(src, dst, blocks, src_lba, dst_lba))
        off += _SEGMENT_LEN
        count += 1
    return segments


async def _copy(segment: _Segment) -> int:
    """Copy one segment in chunks (a checkpoint between): the bytes copied."""
    src, dst = segment.src, segment.dst
    bs = src.block_size
    per_chunk = max(1, COPY_CHUNK // bs)
    done = 0
    while done < segment.blocks:
        n = min(per_chunk, segment.blocks - done)
        buf = bytearray(n * bs)
        try:
            await src.store.readinto((segment.src_lba + done) * bs, memoryview(buf))
        except OSError as exc:
            raise _aborted(io_error(exc, segment.src_lba + done, writing=False)) from exc
        try:
            await dst.store.write((segment.dst_lba + done) * bs, buf,
                                  fua=not dst.write_cache)
        except OSError as exc:
            raise _aborted(io_error(exc, segment.dst_lba + done, writing=True)) from exc
        done += n
        await trio.lowlevel.checkpoint()
    return done * bs


def _aborted(exc: ScsiError) -> ScsiError:
    sense = exc.sense
    assert sense is not None
    return ScsiError(Status.CHECK_CONDITION,
                     Sense(SenseKey.COPY_ABORTED, sense.asc, sense.ascq,
                           information=sense.information))


async def handle_extended_copy(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """EXTENDED COPY (LID1): check the whole parameter list, then copy."""
    length = alloc_len(cmd.cdb, 10, 4)
    if length == 0:
        return None
    if length < _HEADER or length > MAX_DESCRIPTOR_LIST_LENGTH:
        raise ScsiError.parameter_list_length_error()
    params = bytes(await cmd.receive_data(length))
    if len(params) < length:
        raise ScsiError.parameter_list_length_error()
    list_id = params[0]
    usage = (params[1] >> 3) & 0x03
    if usage == 0x01:
        raise _param(1, 4)
    target_len = struct.unpack_from(">H", params, 2)[0]
    segment_len, inline_len = struct.unpack_from(">II", params, 8)
    if inline_len:
        raise _param(12)  # no inline data: MAXIMUM INLINE DATA LENGTH is 0
    if _HEADER + target_len + segment_len != length:
        raise ScsiError.parameter_list_length_error()
    targets = _targets(dev, cmd, ctx, params, target_len)
    segments = _segments(params, _HEADER + target_len, segment_len, targets)
    key = (ctx.nexus.initiator_port, ctx.nexus.target_port, list_id)
    copied = 0
    done = 0
    try:
        for segment in segments:
            copied += await _copy(segment)
            done += 1
    except ScsiError:
        if usage != 0x03:
            dev.copy_results.put(key, CopyResult(0x02, done, copied))
        raise
    if usage != 0x03:  # 11b: the copy manager need not hold results
        dev.copy_results.put(key, CopyResult(0x01, done, copied))
    return None


def _operating_parameters() -> bytes:
    implemented = bytes((SEGMENT_BLOCK_TO_BLOCK, TARGET_IDENTIFICATION))
    body = bytearray(44)
    struct.pack_into(">HHIIIII", body, 8, MAX_TARGET_DESCRIPTORS, MAX_SEGMENT_DESCRIPTORS,
                     MAX_DESCRIPTOR_LIST_LENGTH, MAX_SEGMENT_BYTES, 0, 0, 0)
    struct.pack_into(">H", body, 34, 1)  # TOTAL CONCURRENT COPIES
    body[36] = 1  # MAXIMUM CONCURRENT COPIES
    body[37] = 9  # DATA SEGMENT GRANULARITY: 2^9 bytes
    body[43] = len(implemented)
    data = bytes(body) + implemented
    return struct.pack(">I", len(data) - 4) + data[4:]


async def handle_receive_copy_results(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """RECEIVE COPY RESULTS (LID1): COPY STATUS, OPERATING PARAMETERS."""
    cdb = cmd.cdb
    allocation = alloc_len(cdb, 10, 4)
    if cdb[1] & 0x1F == SA_OPERATING_PARAMETERS:
        return _operating_parameters()[:allocation]
    key = (ctx.nexus.initiator_port, ctx.nexus.target_port, cdb[2])
    result = dev.copy_results.get(key)
    if result is None:
        raise ScsiError.invalid_field_in_cdb(2)  # no such (held) copy
    # TRANSFER COUNT UNITS 00h: bytes, when they fit in 32 bits; else KiB (01h)
    units, count = (0, result.bytes_copied)
    if count > 0xFFFFFFFF:
        units, count = 1, count >> 10
    data = struct.pack(">IBHBI", 8, result.status, result.segments, units, count)
    return data[:allocation]


def third_party_copy_page() -> bytes:
    """VPD 0x8F: Supported Commands (0001h) and Supported Descriptors (0004h)."""
    commands = bytes((0x83, 1, SA_LID1, 0x84, 2, SA_COPY_STATUS, SA_OPERATING_PARAMETERS))
    body1 = bytes((len(commands),)) + commands
    body1 += bytes(-len(body1) % 4)
    d1 = struct.pack(">HH", 0x0001, len(body1)) + body1
    descs = bytes((SEGMENT_BLOCK_TO_BLOCK, TARGET_IDENTIFICATION))
    body4 = bytes((len(descs),)) + descs
    body4 += bytes(-len(body4) % 4)
    d4 = struct.pack(">HH", 0x0004, len(body4)) + body4
    return page(THIRD_PARTY_COPY_VPD, d1 + d4)
