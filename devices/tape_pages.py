"""The tape drive's mode pages (SSC-4 8.3): what MODE SENSE/SELECT show and take.

Data Compression (0x0F), Device Configuration (0x10) and Medium Partition
(0x11) join the SPC pages every type has. The block descriptor (density code,
block length) and the device-specific byte (WP, BUFFERED MODE) are not pages:
devices/ssc.py renders and parses them from the drive's state.
"""

from __future__ import annotations

import struct

from pyscst.scsi.mode import RW_ERROR_RECOVERY, ModePages, PageDef, spc_mode_page_defs
from pyscst.scsi.sense import ScsiError

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


# --- log pages (SSC-4 8.2, SPC-4 7.3) -------------------------------------------

SUPPORTED_LOG_PAGES = 0x00
WRITE_ERROR_COUNTERS = 0x02
READ_ERROR_COUNTERS = 0x03
SEQUENTIAL_ACCESS = 0x0C
TAPE_ALERT = 0x2E
#: Tape Capacity (vendor-specific, as LTO drives have it; LTFS reads it for
#: the remaining capacity of each partition)
TAPE_CAPACITY = 0x31
LOG_PAGES = (SUPPORTED_LOG_PAGES, WRITE_ERROR_COUNTERS, READ_ERROR_COUNTERS,
             SEQUENTIAL_ACCESS, TAPE_ALERT, TAPE_CAPACITY)  # fmt: skip
#: parameter control byte of a bounded binary counter (FORMAT AND LINKING 00b)
_COUNTER = 0x00
#: TapeAlert flags (SSC-4 annex A) the fault injection can name
TAPEALERT_NAMES = {
    "read-warning": 1, "write-warning": 2, "hard-error": 3, "media": 4, "read-failure": 5,
    "write-failure": 6, "media-life": 7, "write-protect": 9, "no-removal": 10,
    "cleaning-media": 11, "unsupported-format": 12, "clean-now": 20, "clean-periodic": 21,
    "expired-cleaning-media": 22, "hardware-a": 30, "hardware-b": 31,
}  # fmt: skip


def log_parameter(code: int, value: bytes, control: int = _COUNTER) -> bytes:
    return struct.pack(">HBB", code, control, len(value)) + value


def log_page(page: int, params: list[bytes], pointer: int = 0) -> bytes:
    """A log page of the parameters whose code is at least ``pointer``
    (LOG SENSE's PARAMETER POINTER)."""
    chosen = [p for p in params if struct.unpack_from(">H", p)[0] >= pointer]
    if params and not chosen:  # past the largest parameter code (SPC-4 LOG SENSE)
        raise ScsiError.invalid_field_in_cdb(5)
    body = b"".join(chosen)
    return struct.pack(">BBH", page, 0, len(body)) + body


def counter_parameters(values: list[int], first: int = 0) -> list[bytes]:
    """8-byte binary counters, parameter codes from ``first``."""
    return [log_parameter(first + i, struct.pack(">Q", v)) for i, v in enumerate(values)]
