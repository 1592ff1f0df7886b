"""The SBC VPD pages (SBC-3 6.6): Block Limits, Block Device Characteristics,
Logical Block Provisioning.

A disk adds these to the SPC pages (scsi/vpd.py) through
:func:`sbc_vpd_pages`. They are derived from one :class:`SbcVpdInfo` that the
disk's handlers also read (MAXIMUM WRITE SAME LENGTH, UNMAP limits, LBPRZ),
so what the pages advertise and what the commands enforce cannot drift.
"""

from __future__ import annotations

import struct

import attrs

from pyscst.scsi.command import Nexus
from pyscst.scsi.vpd import PageBuilder, page

BLOCK_LIMITS = 0xB0
BLOCK_DEVICE_CHARACTERISTICS = 0xB1
LOGICAL_BLOCK_PROVISIONING = 0xB2


@attrs.frozen
class SbcVpdInfo:
    """What the SBC VPD pages say about one disk."""

    block_size: int
    #: MAXIMUM TRANSFER LENGTH in logical blocks (enforced by the device)
    max_transfer_blocks: int
    #: logical blocks per physical block (OPTIMAL TRANSFER LENGTH GRANULARITY,
    #: OPTIMAL UNMAP GRANULARITY: 2 ** LBPPBE)
    optimal_granularity: int = 1
    #: UNMAP, WRITE SAME(16) UNMAP, WRITE SAME(10) UNMAP supported
    lbpu: bool = False
    lbpws: bool = False
    lbpws10: bool = False
    max_unmap_blocks: int = 0
    max_unmap_descriptors: int = 0
    max_write_same_blocks: int = 0
    max_compare_write_blocks: int = 0
    #: MEDIUM ROTATION RATE 0001h (non-rotating) or 0000h (rate not reported:
    #: what a "rotational" disk says; Linux then treats it as rotating)
    non_rotating: bool = True
    #: an unmapped block reads as zeros (B2 LBPRZ, thin provisioning type)
    lbprz: bool = False
    #: WRITE ATOMIC(16): MAXIMUM ATOMIC TRANSFER LENGTH (0: not supported),
    #: ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY (0: any), in
    #: logical blocks. No atomic boundaries: the two boundary fields are 0,
    #: so a non-zero ATOMIC BOUNDARY in the CDB is refused.
    max_atomic_blocks: int = 0
    #: SANITIZE BLOCK ERASE supported (WABEREQ in the characteristics page)
    block_erase: bool = False
    atomic_alignment: int = 0
    atomic_granularity: int = 0

    @property
    def provisioning(self) -> bool:
        return self.lbpu or self.lbpws or self.lbpws10


def sbc_vpd_pages(info: SbcVpdInfo) -> dict[int, PageBuilder]:
    """The SBC pages of a disk described by ``info``."""

    def block_limits(nexus: Nexus) -> bytes:
        body = bytearray(0x3C)
        body[1] = min(info.max_compare_write_blocks, 0xFF)
        struct.pack_into(">H", body, 2, info.optimal_granularity)
        struct.pack_into(">I", body, 4, info.max_transfer_blocks)
        struct.pack_into(">I", body, 8, info.max_transfer_blocks)  # optimal transfer length
        if info.lbpu:
            struct.pack_into(">I", body, 16, info.max_unmap_blocks)
            struct.pack_into(">I", body, 20, info.max_unmap_descriptors)
            struct.pack_into(">I", body, 24, info.optimal_granularity)
            if info.optimal_granularity > 1:
                # UGAVALID, UNMAP GRANULARITY ALIGNMENT 0: physical blocks start at LBA 0
                struct.pack_into(">I", body, 28, 0x80000000)
        if info.lbpws or info.lbpws10:
            struct.pack_into(">Q", body, 32, info.max_write_same_blocks)
        # bytes 44..59 of the page: MAXIMUM ATOMIC TRANSFER LENGTH, ATOMIC
        # ALIGNMENT, ATOMIC TRANSFER LENGTH GRANULARITY; the WITH ATOMIC
        # BOUNDARY length and MAXIMUM ATOMIC BOUNDARY SIZE (60..63) stay 0
        struct.pack_into(
            ">III", body, 40,
            info.max_atomic_blocks, info.atomic_alignment, info.atomic_granularity,
        )
        return page(BLOCK_LIMITS, bytes(body))

    def characteristics(nexus: Nexus) -> bytes:
        body = bytearray(0x3C)
        struct.pack_into(">H", body, 0, 1 if info.non_rotating else 0)
        if info.block_erase:
            body[3] = 0x40  # WABEREQ 01b: reads after a BLOCK ERASE succeed
        return page(BLOCK_DEVICE_CHARACTERISTICS, bytes(body))

    def provisioning(nexus: Nexus) -> bytes:
        body = bytearray(4)
        body[1] = (0x80 if info.lbpu else 0) | (0x40 if info.lbpws else 0) | (
            0x20 if info.lbpws10 else 0
        ) | (0x04 if info.lbprz else 0)
        body[2] = 0x02 if info.lbprz else 0  # PROVISIONING TYPE: thin
        return page(LOGICAL_BLOCK_PROVISIONING, bytes(body))

    pages: dict[int, PageBuilder] = {
        BLOCK_LIMITS: block_limits,
        BLOCK_DEVICE_CHARACTERISTICS: characteristics,
    }
    if info.provisioning:
        pages[LOGICAL_BLOCK_PROVISIONING] = provisioning
    return pages
