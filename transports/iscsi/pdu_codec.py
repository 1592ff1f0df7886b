"""Turning PDU records into wire bytes and back (no I/O, no state).

Decoding itself lives with the records (``pdu_types.decode_pdu``) and the
stream reader (``pdu_reader``); both are re-exported here so that one import
gives the whole codec.

``encode_pdu`` and ``decode_pdu`` work on whole PDUs. The target's hottest
PDUs (Data-In, SCSI Response, R2T) also have header-only encoders taking
plain ints, so the target (``transfer.py``, the connection's R2Ts) puts a
48-byte header in front of a memoryview of the payload and never builds a
record per PDU. (The connection inlines the two commonest headers, a whole
read's Data-In with status and GOOD without data, as one ``BHS_STRUCT.pack``
each; ``tests/unit/transports/test_iscsi_transfer.py`` checks they are these encoders' bytes.)
"""

from __future__ import annotations

import struct

from pyscst.transports.iscsi.digest import digest_bytes
from pyscst.transports.iscsi.pdu_constants import (
    MAX_DATA_SEGMENT_LENGTH,
    RESERVED_TAG,
    Opcode,
)
from pyscst.transports.iscsi.pdu_reader import PduReader, ProtocolError
from pyscst.transports.iscsi.pdu_types import (
    BHS_STRUCT,
    MAX_TOTAL_AHS_LENGTH,
    Buffer,
    Pdu,
    ScsiCommand,
    decode_bhs,
    decode_pdu,
)

_SENSE_LENGTH = struct.Struct(">H")
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
# Opcodes as plain ints: ``Opcode.DATA_IN`` goes through EnumType.__getattr__'s
# slot on CPython 3.11 (hundreds of instructions, once per PDU encoded).
_DATA_IN = int(Opcode.DATA_IN)
_SCSI_RESPONSE = int(Opcode.SCSI_RESPONSE)
_R2T = int(Opcode.R2T)


def padding(length: int) -> bytes:
    """The zero bytes that pad a segment of ``length`` bytes to 4."""
    return _PADDING[length & 3]


def encode_frame(
    header: Buffer,
    data: Buffer = b"",
    *,
    header_digest: bool = False,
    data_digest: bool = False,
) -> bytes:
    """Wire bytes for a ready header (BHS + AHS) and its data segment.

    Adds the header digest, padding and data digest as negotiated; the
    payload is copied exactly once (into the returned bytes).
    """
    n = memoryview(data).nbytes if isinstance(data, memoryview) else len(data)
    parts: list[Buffer] = [header]
    if header_digest:
        parts.append(digest_bytes(header))
    if n:
        pad = _PADDING[n & 3]
        parts.append(data)
        if pad:
            parts.append(pad)
        if data_digest:
            parts.append(digest_bytes(data, pad))
    return b"".join(parts)


def encode_pdu(pdu: Pdu, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """Encode a PDU: BHS + AHS (+ header digest) + data + padding (+ data digest)."""
    ahs = pdu.pack_ahs() if isinstance(pdu, ScsiCommand) else b""
    if len(ahs) & 3 or len(ahs) > MAX_TOTAL_AHS_LENGTH:
        raise ValueError(f"AHS length {len(ahs)} is not a multiple of 4 up to 1020")
    data: Buffer = getattr(pdu, "data", b"")
    n = memoryview(data).nbytes
    if n > MAX_DATA_SEGMENT_LENGTH:
        raise ValueError(f"data segment of {n} bytes does not fit 24 bits")
    header = pdu.pack_bhs(((len(ahs) >> 2) << 24) | n)
    if ahs:
        header += ahs
    return encode_frame(header, data, header_digest=header_digest, data_digest=data_digest)


# --------------------------------------------------------------------------
# fast header encoders for the target's hot path
# --------------------------------------------------------------------------


def encode_data_in_header(
    itt: int,
    datasn: int,
    buffer_offset: int,
    data_length: int,
    *,
    lun: int = 0,
    ttt: int = RESERVED_TAG,
    final: bool = False,
    acknowledge: bool = False,
    status_present: bool = False,
    status: int = 0,
    overflow: bool = False,
    underflow: bool = False,
    residual_count: int = 0,
    statsn: int = 0,
    expcmdsn: int = 0,
    maxcmdsn: int = 0,
) -> bytes:
    """The 48-byte BHS of a SCSI Data-In PDU carrying ``data_length`` bytes.

    With ``status_present`` it also carries the status (``final`` must then be
    set too, RFC 7143 11.7.4) and StatSN; otherwise StatSN is reserved.
    """
    b1 = (
        (0x80 if final else 0)
        | (0x40 if acknowledge else 0)
        | (0x04 if overflow else 0)
        | (0x02 if underflow else 0)
        | (0x01 if status_present else 0)
    )
    return BHS_STRUCT.pack(
        _DATA_IN, b1, 0, status, data_length, lun, itt, ttt, statsn, expcmdsn,
        maxcmdsn, datasn, buffer_offset, residual_count,
    )  # fmt: skip


def encode_scsi_response_header(
    itt: int,
    status: int,
    *,
    response: int = 0,
    data_length: int = 0,
    statsn: int = 0,
    expcmdsn: int = 0,
    maxcmdsn: int = 0,
    expdatasn: int = 0,
    overflow: bool = False,
    underflow: bool = False,
    residual_count: int = 0,
    bidi_overflow: bool = False,
    bidi_underflow: bool = False,
    bidi_residual_count: int = 0,
) -> bytes:
    """The 48-byte BHS of a SCSI Response; ``data_length`` is the sense segment's."""
    b1 = (
        0x80
        | (0x10 if bidi_overflow else 0)
        | (0x08 if bidi_underflow else 0)
        | (0x04 if overflow else 0)
        | (0x02 if underflow else 0)
    )
    return BHS_STRUCT.pack(
        _SCSI_RESPONSE, b1, response, status, data_length, 0, itt, 0, statsn,
        expcmdsn, maxcmdsn, expdatasn, bidi_residual_count, residual_count,
    )  # fmt: skip


def encode_r2t_header(
    itt: int,
    ttt: int,
    r2tsn: int,
    buffer_offset: int,
    desired_data_transfer_length: int,
    *,
    lun: int = 0,
    statsn: int = 0,
    expcmdsn: int = 0,
    maxcmdsn: int = 0,
) -> bytes:
    """The 48-byte BHS of an R2T (it never has a data segment)."""
    return BHS_STRUCT.pack(
        _R2T, 0x80, 0, 0, 0, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, r2tsn,
        buffer_offset, desired_data_transfer_length,
    )  # fmt: skip


# --------------------------------------------------------------------------
# the SCSI Response data segment
# --------------------------------------------------------------------------


def encode_sense_segment(sense: Buffer, response_data: Buffer = b"") -> bytes:
    """SCSI Response data segment: SenseLength (2 bytes) + sense + response data.

    Empty when there is neither sense nor response data (GOOD status).
    """
    if not sense and not response_data:
        return b""
    return _SENSE_LENGTH.pack(len(sense)) + bytes(sense) + bytes(response_data)


def parse_sense_segment(data: Buffer) -> bytes:
    """The sense bytes of a SCSI Response data segment (empty when none).

    A SenseLength pointing past the segment yields what is there.
    """
    if len(data) < 2:
        return b""
    (length,) = _SENSE_LENGTH.unpack_from(data)
    return bytes(data[2 : 2 + length])


__all__ = [
    "PduReader",
    "ProtocolError",
    "decode_bhs",
    "decode_pdu",
    "encode_data_in_header",
    "encode_frame",
    "encode_pdu",
    "encode_r2t_header",
    "encode_scsi_response_header",
    "encode_sense_segment",
    "padding",
    "parse_sense_segment",
]
