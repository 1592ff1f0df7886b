"""The tape drive's mode pages (SSC-4 8.3): what MODE SENSE/SELECT show and take.

Data Compression (0x0F), Device Configuration (0x10) and Medium Partition
(0x11) join the SPC pages every type has. The block descriptor (density code,
block length) and the device-specific byte (WP, BUFFERED MODE) are not pages:
devices/ssc.py renders and parses them from the drive's state.
"""

from __future__ import annotations

from pyscst.scsi.mode import RW_ERROR_RECOVERY, ModePages, PageDef, spc_mode_page_defs

DATA_COMPRESSION = 0x0F
DEVICE_CONFIGURATION = 0x10
MEDIUM_PARTITION = 0x11
#: partition size descriptors the Medium Partition page carries (max 4 partitions)
MAX_PARTITIONS = 4
#: the page's PSUM: sizes in megabytes (10b), bits 4-3 of byte 4
PSUM_MB = 0x10


def _page(code: int, length: int, values: dict[int, int], changeable: dict[int, int]) -> PageDef:
    page = bytearray(length + 2)
    mask = bytearray(length + 2)
    page[0], page[1] = code, length
    for i, v in values.items():
        page[i] = v
    for i, v in changeable.items():
        mask[i] = v
    return PageDef(code, 0, bytes(page), bytes(mask))


def tape_mode_pages() -> ModePages:
    """A drive's pages at power on."""
    rw_recovery = _page(RW_ERROR_RECOVERY, 0x0A, {}, {})
    # DCE=1 DCC=1; DDE=1; compression and decompression algorithm 1 (ALDC)
    compression = _page(DATA_COMPRESSION, 0x0E, {2: 0xC0, 3: 0x80, 7: 0x01, 11: 0x01}, {2: 0x80})
    # byte 8 LOIS; byte 10 EEG, SEW; byte 14 SELECT DATA COMPRESSION ALGORITHM
    configuration = _page(DEVICE_CONFIGURATION, 0x0E, {8: 0x40, 10: 0x18, 14: 0x01}, {14: 0xFF})
    # byte 2 MAXIMUM ADDITIONAL PARTITIONS; byte 4 FDP SDP IDP PSUM POFM;
    # byte 5 MEDIUM FORMAT RECOGNITION (format and partition recognition)
    partition = _page(
        MEDIUM_PARTITION, 6 + 2 * MAX_PARTITIONS,
        {2: MAX_PARTITIONS - 1, 4: PSUM_MB | 0x04, 5: 0x03},
        {3: 0x03, 4: 0xE0, **{8 + i: 0xFF for i in range(2 * MAX_PARTITIONS)}},
    )  # fmt: skip
    return ModePages([*spc_mode_page_defs(), rw_recovery, compression, configuration, partition])
