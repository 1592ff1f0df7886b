"""WRITE ATOMIC(16) (SBC-4 5.48): a write that lands whole or not at all.

What "atomic" means here, precisely:

* **Against other commands** (reads, writes, other atomic writes, through any
  port or nexus): guaranteed. The table row carries ``OpFlags.ATOMIC`` and an
  ``lba_range``; the LU then orders every overlapping command behind it and it
  behind every older overlapping one, whatever the Control page's QUEUE
  ALGORITHM MODIFIER says (plain writes are only ordered while QAM=0). So no
  command sees the range half written.
* **Against a daemon crash or power loss**: only page by page. The data
  goes to the store in one call (one ``pwritev``; a memory store copies it in
  one slice assignment), but the page cache writes pages back one by one, and
  a process killed inside a large buffered write can leave it short at a page
  boundary. That is why ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH
  GRANULARITY are one memory page (4096 bytes, or one physical block if
  larger): every page of an atomic write is then wholly old or wholly new
  after a crash, never torn inside; the range as a whole is not guaranteed.
  FUA (or WCE=0) makes the data durable before GOOD.

Limits (Block Limits VPD): MAXIMUM ATOMIC TRANSFER LENGTH is the smaller of
MAXIMUM TRANSFER LENGTH and 1 MiB, in whole pages; alignment and
granularity one page (above); no atomic boundaries (MAXIMUM ATOMIC BOUNDARY SIZE 0), so a
non-zero ATOMIC BOUNDARY field is INVALID FIELD IN CDB. A failed check writes
nothing, and so does a short data-out: unlike WRITE, an atomic write never
writes the whole blocks of a truncated transfer.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyscst.devices.disk_sense import io_error, short_data_out
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.sense import ScsiError

if TYPE_CHECKING:
    from pyscst.devices.disk import DiskDevice

#: WRITE ATOMIC(16); not in the shared Op enum
WRITE_ATOMIC_16 = 0x9C
#: the largest atomic write, in bytes (further bounded by MAXIMUM TRANSFER LENGTH)
MAX_ATOMIC_BYTES = 1 << 20
#: CDB byte offsets (for field pointers)
_LBA_BYTE, _BOUNDARY_BYTE, _LENGTH_BYTE = 2, 10, 12


def write_atomic_fields(cdb: bytes) -> tuple[int, int, int]:
    """(LBA, ATOMIC BOUNDARY, TRANSFER LENGTH) of a WRITE ATOMIC(16) CDB."""
    lba, boundary, n = struct.unpack_from(">QHH", cdb, 2)
    return lba, boundary, n


def write_atomic_range(cdb: bytes) -> tuple[int, int]:
    """(LBA, blocks) for the LU's ordering of overlapping commands."""
    lba, _, n = write_atomic_fields(cdb)
    return lba, n


#: the unit the page cache never tears
PAGE_BYTES = 4096


def atomic_unit_blocks(block_size: int, lbppbe: int = 0) -> int:
    """ATOMIC ALIGNMENT and GRANULARITY: one page or one physical block."""
    return max(1, PAGE_BYTES // block_size, 1 << lbppbe)


def max_atomic_blocks(block_size: int, max_transfer_blocks: int, lbppbe: int = 0) -> int:
    """MAXIMUM ATOMIC TRANSFER LENGTH: a whole number of atomic units."""
    unit = atomic_unit_blocks(block_size, lbppbe)
    most = min(max_transfer_blocks, MAX_ATOMIC_BYTES // block_size)
    return most - most % unit


def _check(dev: DiskDevice, lba: int, boundary: int, n: int) -> None:
    """The CDB checks, in the order SBC-4 lists them; each names its field."""
    info = dev.limits
    if boundary:
        # MAXIMUM ATOMIC BOUNDARY SIZE is 0: boundaries are not supported
        raise ScsiError.invalid_field_in_cdb(_BOUNDARY_BYTE)
    if n > info.max_atomic_blocks:
        raise ScsiError.invalid_field_in_cdb(_LENGTH_BYTE)
    if info.atomic_granularity and n % info.atomic_granularity:
        raise ScsiError.invalid_field_in_cdb(_LENGTH_BYTE)
    if info.atomic_alignment and lba % info.atomic_alignment:
        raise ScsiError.invalid_field_in_cdb(_LBA_BYTE)
    if lba >= dev.blocks or lba + n > dev.blocks:
        raise ScsiError.lba_out_of_range()


async def handle_write_atomic(
    dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext
) -> Buffer | None:
    """WRITE ATOMIC(16): every check first, then the whole range in one store
    write; DPO is accepted, FUA (or WCE=0) makes it durable before GOOD."""
    cdb = cmd.cdb
    if dev.write_protected(ctx.read_only):
        raise ScsiError.write_protected()
    lba, boundary, n = write_atomic_fields(cdb)
    _check(dev, lba, boundary, n)
    if n == 0:
        return None
    nbytes = n << dev.block_shift
    data = await cmd.receive_data(nbytes)
    if len(data) < nbytes:
        raise short_data_out()  # all or nothing: no partial atomic write
    fua = bool(cdb[1] & 0x08) or not dev.write_cache
    try:
        await dev.store.write(lba << dev.block_shift, data[:nbytes], fua=fua)
    except OSError as exc:
        raise io_error(exc, lba, writing=True) from exc
    return None
