"""The stream-command sense of a tape drive and the limits it reports (SSC-4 4.2).

Shared by the drive (devices/tape.py) and its command handlers
(devices/ssc.py): FILEMARK, EOM and ILI ride in byte 2 of fixed sense, and
INFORMATION holds a residue that may be negative (an overlength record),
carried as 32-bit two's complement.
"""

from __future__ import annotations

from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status

#: sense bits of stream commands (byte 2 of fixed sense)
FILEMARK = 0x80
EOM = 0x40
ILI = 0x20
#: READ BLOCK LIMITS: the largest record (bytes), the smallest, the granularity
MAX_BLOCK = 1 << 23
MIN_BLOCK = 1
GRANULARITY = 0
#: the largest fixed-mode transfer (blocks x block length) in bytes
MAX_FIXED_TRANSFER = 16 << 20


def count24(cdb: bytes) -> int:
    """The 24-bit TRANSFER LENGTH / COUNT of a 6-byte stream command (bytes 2-4)."""
    return int.from_bytes(cdb[2:5], "big")


def stream_error(
    key: SenseKey, asc: Asc, *, bits: int = 0, information: int | None = None,
    data: bytes | None = None,
) -> ScsiError:  # fmt: skip
    """CHECK CONDITION with the stream bits; INFORMATION as a 32-bit two's
    complement; ``data``: data-in that still goes to the initiator."""
    info = None if information is None else information & 0xFFFFFFFF
    sense = Sense(key, asc.code, asc.qualifier, information=info, stream=bits)
    return ScsiError(Status.CHECK_CONDITION, sense, data)


def filemark_detected(residue: int | None, data: bytes | None = None) -> ScsiError:
    return stream_error(SenseKey.NO_SENSE, Asc.FILEMARK_DETECTED, bits=FILEMARK,
                        information=residue, data=data)  # fmt: skip


def end_of_data(residue: int | None, data: bytes | None = None) -> ScsiError:
    return stream_error(SenseKey.BLANK_CHECK, Asc.END_OF_DATA_DETECTED,
                        information=residue, data=data)  # fmt: skip


def beginning_of_partition(residue: int) -> ScsiError:
    return stream_error(SenseKey.NO_SENSE, Asc.BEGINNING_OF_PARTITION_MEDIUM_DETECTED,
                        bits=EOM, information=residue)  # fmt: skip


def incorrect_length(residue: int, data: bytes | None) -> ScsiError:
    return stream_error(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE, bits=ILI,
                        information=residue, data=data)  # fmt: skip


def early_warning() -> ScsiError:
    """A write that ended past the early warning (SSC-4 4.2.6): done, but say so."""
    return stream_error(SenseKey.NO_SENSE, Asc.END_OF_PARTITION_MEDIUM_DETECTED,
                        bits=EOM, information=0)  # fmt: skip


def volume_overflow(residue: int) -> ScsiError:
    """The physical end of the partition: what was not written."""
    return stream_error(SenseKey.VOLUME_OVERFLOW, Asc.END_OF_PARTITION_MEDIUM_DETECTED,
                        bits=EOM, information=residue)  # fmt: skip
