"""CDBs and answer decoders the end-to-end tests share (one definition each).

Tests build the few commands they send by hand, byte for byte, so a table
bug in the target cannot hide behind the same table used to build requests.
"""

from __future__ import annotations

import struct

from pyscst.scsi.lun import decode_lun

TUR = bytes(6)
REPORT_LUNS = bytes((0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0))  # allocation length 256
READ_CAPACITY_10 = bytes((0x25,)) + bytes(9)


def read10(lba: int, blocks: int = 1) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int = 1, fua: bool = False) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, blocks, 0)


def sense_triplet(sense: bytes) -> tuple[int, int, int]:
    """(sense key, ASC, ASCQ) of fixed-format sense data."""
    return (sense[2] & 0x0F, sense[12], sense[13])


def luns_of(data: bytes) -> list[int | None]:
    """The LUN numbers of a REPORT LUNS answer."""
    length = struct.unpack_from(">I", data)[0]
    return [decode_lun(data[8 + i : 16 + i]) for i in range(0, length, 8)]
