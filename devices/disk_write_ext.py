"""SBC writes beyond plain WRITE: WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE.

They share the data path's checks (readiness, write protection, LBA range)
but each moves data its own way: WRITE SAME replicates one block (or unmaps
a range of zeros), UNMAP deallocates the ranges of a parameter list, COMPARE
AND WRITE writes only if the medium still holds the verify data, and ORWRITE
ORs the data-out into the medium. The logical unit orders these against
overlapping writes through the table's ``lba_range`` (UNMAP's ranges live in
its parameter list, so COMPARE AND WRITE also avoids awaiting between its
read and its write whenever the store allows it).

The device thin-provisions its whole LBA range: an unmapped block reads as
zeros (LBPRZ=1), so unmapping is a hole punched in the backing file, and GET
LBA STATUS reports the file's holes as deallocated runs.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyscst.devices.disk_io import first_difference, read_blocks
from pyscst.devices.disk_sense import data_out_length_mismatch, io_error, miscompare, short_data_out
from pyscst.scsi.cdb import alloc_len, rw10, rw16
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.sense import ScsiError

if TYPE_CHECKING:
    from pyscst.devices.disk import DiskDevice

#: WRITE SAME writes its block replicated into buffers of about this size
_SAME_CHUNK = 1 << 20
#: UNMAP parameter list: 8-byte header, then 16-byte block descriptors
_UNMAP_HEADER = 8
_UNMAP_DESCRIPTOR = 16


def _check_writable(dev: DiskDevice, ctx: ExecContext) -> None:
    if dev.write_protected(ctx.read_only):
        raise ScsiError.write_protected()


def _check_lbas(dev: DiskDevice, lba: int, n: int) -> None:
    if lba >= dev.blocks or lba + n > dev.blocks:
        raise ScsiError.lba_out_of_range()


def write_same_range(cdb: bytes) -> tuple[int, int]:
    """(LBA, blocks) for ordering; 0 blocks means "to the end of the medium"."""
    lba, n = rw10(cdb) if cdb[0] == 0x41 else rw16(cdb)
    return lba, n or 1 << 62


def compare_and_write_range(cdb: bytes) -> tuple[int, int]:
    return struct.unpack_from(">Q", cdb, 2)[0], cdb[13]


async def _write_range(
    dev: DiskDevice, lba: int, n: int, block: memoryview, fua: bool
) -> None:
    """Write ``block`` to each of ``n`` blocks from ``lba``, in large chunks."""
    per_chunk = max(1, _SAME_CHUNK >> dev.block_shift)
    chunk = bytes(block) * min(n, per_chunk)
    done = 0
    while done < n:
        count = min(n - done, per_chunk)
        try:
            await dev.store.write(
                (lba + done) << dev.block_shift,
                memoryview(chunk)[: count << dev.block_shift],
                fua=fua,
            )
        except OSError as exc:
            raise io_error(exc, lba + done, writing=True) from exc
        done += count


async def _unmap_range(dev: DiskDevice, lba: int, n: int) -> None:
    try:
        await dev.store.discard(lba << dev.block_shift, n << dev.block_shift)
    except OSError as exc:
        raise io_error(exc, lba, writing=True) from exc


async def handle_write_same(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """WRITE SAME (10/16): one block of data-out written to every block of the
    range; with UNMAP the range is unmapped instead (and then reads as zeros,
    whatever the data-out held: SBC lets the device server unmap, as LIO does).
    NUMBER OF LOGICAL BLOCKS 0 means through the last block (WSNZ=0), still
    bounded by MAXIMUM WRITE SAME LENGTH."""
    cdb = cmd.cdb
    ws16 = cdb[0] == 0x93
    _check_writable(dev, ctx)
    lba, n = rw16(cdb) if ws16 else rw10(cdb)
    length_byte = 10 if ws16 else 7
    if n > dev.limits.max_write_same_blocks:
        raise ScsiError.invalid_field_in_cdb(length_byte)
    if lba >= dev.blocks:
        raise ScsiError.lba_out_of_range()
    if n == 0:
        n = dev.blocks - lba
        if n > dev.limits.max_write_same_blocks:
            raise ScsiError.invalid_field_in_cdb(length_byte)
    _check_lbas(dev, lba, n)
    unmap = bool(cdb[1] & 0x08)
    ndob = ws16 and bool(cdb[1] & 0x01)
    if ndob:
        block = memoryview(bytes(dev.block_size))
    elif cmd.expected_length > dev.block_size:
        raise data_out_length_mismatch()  # the data-out is one block, no more
    else:
        data = await cmd.receive_data(dev.block_size)
        if len(data) < dev.block_size:
            raise short_data_out()
        block = data[: dev.block_size]
    provisioning = dev.limits.lbpws if ws16 else dev.limits.lbpws10
    if unmap and provisioning:
        await _unmap_range(dev, lba, n)
        return None
    await _write_range(dev, lba, n, block, fua=not dev.write_cache)
    return None


def _unmap_descriptors(dev: DiskDevice, params: memoryview) -> list[tuple[int, int]]:
    """Validate an UNMAP parameter list; the (LBA, blocks) ranges it names."""
    if len(params) < _UNMAP_HEADER:
        raise ScsiError.parameter_list_length_error()
    desc_length = struct.unpack_from(">H", params, 2)[0]
    # a partial descriptor, or descriptors past the parameter list, are ignored
    count = min(desc_length, len(params) - _UNMAP_HEADER) // _UNMAP_DESCRIPTOR
    info = dev.limits
    if count > info.max_unmap_descriptors:
        raise ScsiError.invalid_field_in_parameter_list(2)
    ranges = []
    total = 0
    for i in range(count):
        off = _UNMAP_HEADER + i * _UNMAP_DESCRIPTOR
        lba, n = struct.unpack_from(">QI", params, off)
        total += n
        if total > info.max_unmap_blocks:
            raise ScsiError.invalid_field_in_parameter_list(off + 8)
        if n:
            _check_lbas(dev, lba, n)
        ranges.append((lba, n))
    return ranges


async def handle_unmap(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """UNMAP: every block descriptor is checked before any range is unmapped."""
    cdb = cmd.cdb
    _check_writable(dev, ctx)
    length = alloc_len(cdb, 7, 2)
    if length == 0:
        return None
    if length < _UNMAP_HEADER:
        raise ScsiError.parameter_list_length_error()
    params = await cmd.receive_data(length)
    if len(params) < length:
        raise short_data_out()
    for lba, n in _unmap_descriptors(dev, params[:length]):
        if n:
            await _unmap_range(dev, lba, n)
    return None


async def handle_compare_and_write(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """COMPARE AND WRITE: data-out is N verify blocks then N write blocks; the
    write happens only when the medium equals the verify data, else MISCOMPARE
    with INFORMATION = offset of the first differing byte."""
    cdb = cmd.cdb
    _check_writable(dev, ctx)
    lba, n = compare_and_write_range(cdb)
    if n > dev.limits.max_compare_write_blocks:
        raise ScsiError.invalid_field_in_cdb(13)
    _check_lbas(dev, lba, max(n, 1))
    if n == 0:
        if cmd.expected_length:
            # data-out for a count the 1-byte field cannot hold (256 or more
            # blocks, beyond the limit): refuse rather than ignore the data
            raise ScsiError.invalid_field_in_cdb(13)
        return None
    nbytes = n << dev.block_shift
    if cmd.expected_length > 2 * nbytes:
        raise data_out_length_mismatch()  # verify + write data, exactly
    data = await cmd.receive_data(2 * nbytes)
    if len(data) < 2 * nbytes:
        raise short_data_out()
    verify, new = data[:nbytes], data[nbytes : 2 * nbytes]
    offset = lba << dev.block_shift
    current: bytearray | memoryview = bytearray(nbytes)
    store = dev.store
    fua = bool(cdb[1] & 0x08) or not dev.write_cache
    # read, compare and write without a checkpoint when the store allows: no
    # other command can touch the range in between (the LU also holds back
    # overlapping writes, through the table's lba_range)
    try:
        cached = store.read_now(offset, memoryview(current))
    except OSError as exc:
        raise io_error(exc, lba, writing=False) from exc
    if not cached:
        current = await read_blocks(dev, lba, n)
    if current != verify:
        raise miscompare(first_difference(verify, memoryview(current)))
    try:
        if fua or not store.write_now(offset, new):
            await store.write(offset, new, fua=fua)
    except OSError as exc:
        raise io_error(exc, lba, writing=True) from exc
    return None


async def handle_orwrite(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """ORWRITE(16): each block becomes (medium OR data-out)."""
    cdb = cmd.cdb
    _check_writable(dev, ctx)
    lba, n = rw16(cdb)
    if n > dev.max_transfer_blocks:
        raise ScsiError.invalid_field_in_cdb(10)
    _check_lbas(dev, lba, max(n, 1))
    if n == 0:
        return None
    nbytes = n << dev.block_shift
    data = await cmd.receive_data(nbytes)
    if len(data) < nbytes:
        raise short_data_out()
    current = await read_blocks(dev, lba, n)
    merged = (int.from_bytes(current, "big") | int.from_bytes(data[:nbytes], "big")).to_bytes(
        nbytes, "big"
    )
    try:
        await dev.store.write(
            lba << dev.block_shift, merged, fua=bool(cdb[1] & 0x08) or not dev.write_cache
        )
    except OSError as exc:
        raise io_error(exc, lba, writing=True) from exc
    return None


#: GET LBA STATUS PROVISIONING STATUS values
_MAPPED, _DEALLOCATED = 0x0, 0x1
_GLS_HEADER = 8
_GLS_DESCRIPTOR = 16
#: descriptors one GET LBA STATUS reports at most (the initiator asks again)
_GLS_MAX_DESCRIPTORS = 64


async def handle_get_lba_status(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """GET LBA STATUS: mapped / deallocated runs from the STARTING LBA, as
    the backing file's holes say (a hole reads as zeros: LBPRZ)."""
    cdb = cmd.cdb
    lba = struct.unpack_from(">Q", cdb, 2)[0]
    allocation = alloc_len(cdb, 10, 4)
    if lba >= dev.blocks:
        raise ScsiError.lba_out_of_range()
    limit = min(_GLS_MAX_DESCRIPTORS, max(1, (allocation - _GLS_HEADER) // _GLS_DESCRIPTOR))
    shift = dev.block_shift
    # a descriptor counts at most 2^32 - 1 blocks; ask for no more than it can hold
    span = min(dev.blocks - lba, limit * 0xFFFFFFFF)
    try:
        runs = await dev.store.extents(lba << shift, span << shift, limit)
    except OSError as exc:
        raise io_error(exc, lba, writing=False) from exc
    body = bytearray()
    start = lba
    for offset, length, mapped in runs:
        # a block only partly in a hole still holds data: it counts as mapped
        end_byte = offset + length
        end = -(-end_byte >> shift) if mapped else end_byte >> shift
        end = min(end, dev.blocks)
        while start < end and len(body) < limit * _GLS_DESCRIPTOR:
            count = min(end - start, 0xFFFFFFFF)
            body += struct.pack(">QIB3x", start, count, _MAPPED if mapped else _DEALLOCATED)
            start += count
    data = struct.pack(">II", len(body) + 4, 0) + bytes(body)
    return data[:allocation]
