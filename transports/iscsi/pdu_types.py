"""One record per iSCSI PDU type, each knowing its 48-byte BHS layout.

Field names are the RFC 7143 field names in snake_case (section 11). Every
BHS is read and written with one precompiled ``struct`` call: the generic
layout splits it into bytes 0-3, the lengths word, the 8-byte field at 8-15
and eight 32-bit words at 16-47; each class maps its fields onto that.
Half-word fields (CID, TSIH, Time2Wait, ...) are shifted in and out of the
word that holds them. Reserved fields are written as zero and ignored when
read, as the RFC asks.

``data`` is the data segment without padding. The reader hands ``bytes``
for every PDU except the bulk-data carriers (SCSI Command immediate data,
Data-Out, Data-In), where it hands a read-only ``memoryview`` so a payload is
never copied twice; the encoder accepts any bytes-like object everywhere.

Records are read-only by convention (build a new one with ``attrs.evolve``)
but not ``attrs.frozen``: a frozen class sets each field through
``object.__setattr__``, which made decoding one SCSI Command PDU cost 2 µs
more, about 4 % of a whole command's CPU time.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Self

import attrs

from pyscst.transports.iscsi.pdu_constants import BHS_LENGTH, RESERVED_TAG, Opcode, RejectReason

#: bytes-like payloads accepted by the encoder
Buffer = bytes | bytearray | memoryview

#: b0 b1 b2 b3 | AHS words + DataSegmentLength | bytes 8-15 | words at 16..44
BHS_STRUCT = struct.Struct(">BBBBIQ8I")
#: SCSI Command: as above but words 32-47 are the CDB
COMMAND_STRUCT = struct.Struct(">BBBBIQIIII16s")
_AHS_HEADER = struct.Struct(">HB")

AHS_TYPE_EXTENDED_CDB = 1
AHS_TYPE_BIDI_READ_LENGTH = 2
MAX_TOTAL_AHS_LENGTH = 255 * 4

_F = 0x80
_I = 0x40
_M16 = 0xFFFF

Fields = tuple[Any, ...]


class PduFormatError(ValueError):
    """A PDU whose framing is fine but whose content cannot be decoded.

    ``reject_reason`` is the Reject reason the receiver should answer with.
    """

    def __init__(self, message: str, reject_reason: int = RejectReason.INVALID_PDU_FIELD) -> None:
        super().__init__(message)
        self.reject_reason = reject_reason


def _short(value: object) -> str:
    """attrs repr for payloads: the size, not megabytes of hex."""
    try:
        return f"<{len(value)} bytes>"  # type: ignore[arg-type]
    except TypeError:
        return repr(value)


def _pad4(n: int) -> int:
    return (n + 3) & ~3


# --------------------------------------------------------------------------
# initiator -> target
# --------------------------------------------------------------------------


@attrs.define
class NopOut:
    """NOP-Out (0x00, RFC 7143 11.18): ping, or the answer to a NOP-In."""

    opcode: ClassVar[int] = Opcode.NOP_OUT
    immediate: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        b0 = self.opcode | (_I if self.immediate else 0)
        return BHS_STRUCT.pack(
            b0, _F, 0, 0, lens, self.lun, self.itt, self.ttt, self.cmdsn, self.expstatsn,
            0, 0, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(bool(f[0] & _I), f[5], f[6], f[7], f[8], f[9], bytes(data))


@attrs.define
class ScsiCommand:
    """SCSI Command (0x01, RFC 7143 11.3).

    ``cdb`` is the whole CDB: the 16 BHS bytes, followed by the Extended CDB
    AHS contents when the CDB is longer. ``ahs`` holds any other AHSs raw
    (e.g. the bidirectional read length, type 2), 4-byte aligned.
    """

    opcode: ClassVar[int] = Opcode.SCSI_COMMAND
    immediate: bool = False
    final: bool = True
    read: bool = False
    write: bool = False
    attr: int = 1
    lun: int = 0
    itt: int = 0
    expected_data_transfer_length: int = 0
    cmdsn: int = 0
    expstatsn: int = 0
    cdb: bytes = bytes(16)
    data: Buffer = attrs.field(default=b"", repr=_short)
    ahs: bytes = b""

    def pack_ahs(self) -> bytes:
        if len(self.cdb) <= 16:
            return self.ahs
        ext = self.cdb[16:]
        body = _AHS_HEADER.pack(len(ext) + 1, AHS_TYPE_EXTENDED_CDB) + b"\x00" + ext
        return body + bytes(_pad4(len(body)) - len(body)) + self.ahs

    def pack_bhs(self, lens: int) -> bytes:
        b0 = self.opcode | (_I if self.immediate else 0)
        b1 = (
            (_F if self.final else 0)
            | (0x40 if self.read else 0)
            | (0x20 if self.write else 0)
            | (self.attr & 0x07)
        )
        cdb = self.cdb[:16]
        if len(cdb) < 16:
            cdb = cdb + bytes(16 - len(cdb))
        return COMMAND_STRUCT.pack(
            b0, b1, 0, 0, lens, self.lun, self.itt, self.expected_data_transfer_length,
            self.cmdsn, self.expstatsn, cdb,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        cdb: bytes = f[10]
        rest = b""
        if ahs:
            ext, rest = split_extended_cdb(ahs)
            cdb += ext
        b1 = f[1]
        return cls(
            f[0] & _I != 0, b1 & _F != 0, b1 & 0x40 != 0, b1 & 0x20 != 0, b1 & 0x07,
            f[5], f[6], f[7], f[8], f[9], cdb, data, rest,
        )  # fmt: skip


def split_extended_cdb(ahs: bytes) -> tuple[bytes, bytes]:
    """Walk the AHSs: return (extended CDB bytes, the other AHSs raw)."""
    ext = b""
    rest = bytearray()
    off = 0
    while off < len(ahs):
        if off + 4 > len(ahs):
            raise PduFormatError("truncated AHS header")
        length, kind = _AHS_HEADER.unpack_from(ahs, off)
        end = off + _pad4(3 + length)
        if length == 0 or end > len(ahs):
            raise PduFormatError(f"AHS length {length} does not fit TotalAHSLength")
        if kind == AHS_TYPE_EXTENDED_CDB:
            if ext:
                raise PduFormatError("two extended CDB AHSs")
            ext = bytes(ahs[off + 4 : off + 3 + length])
        else:
            rest += ahs[off:end]
        off = end
    return ext, bytes(rest)


@attrs.define
class TaskManagementRequest:
    """Task Management Function Request (0x02, RFC 7143 11.5)."""

    opcode: ClassVar[int] = Opcode.TASK_MANAGEMENT_REQUEST
    immediate: bool = False
    function: int = 0
    lun: int = 0
    itt: int = 0
    referenced_task_tag: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0
    refcmdsn: int = 0
    expdatasn: int = 0

    def pack_bhs(self, lens: int) -> bytes:
        b0 = self.opcode | (_I if self.immediate else 0)
        return BHS_STRUCT.pack(
            b0, _F | (self.function & 0x7F), 0, 0, lens, self.lun, self.itt,
            self.referenced_task_tag, self.cmdsn, self.expstatsn, self.refcmdsn,
            self.expdatasn, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(bool(f[0] & _I), f[1] & 0x7F, f[5], f[6], f[7], f[8], f[9], f[10], f[11])


@attrs.define
class LoginRequest:
    """Login Request (0x03, RFC 7143 11.12); always immediate."""

    opcode: ClassVar[int] = Opcode.LOGIN_REQUEST
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_min: int = 0
    isid: int = 0
    tsih: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        b1 = (
            (0x80 if self.transit else 0)
            | (0x40 if self.cont else 0)
            | ((self.csg & 3) << 2)
            | (self.nsg & 3)
        )
        return BHS_STRUCT.pack(
            self.opcode | _I, b1, self.version_max, self.version_min, lens,
            (self.isid << 16) | self.tsih, self.itt, self.cid << 16, self.cmdsn,
            self.expstatsn, 0, 0, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        b1 = f[1]
        return cls(
            bool(b1 & 0x80), bool(b1 & 0x40), (b1 >> 2) & 3, b1 & 3, f[2], f[3],
            f[5] >> 16, f[5] & _M16, f[6], f[7] >> 16, f[8], f[9], bytes(data),
        )  # fmt: skip


@attrs.define
class TextRequest:
    """Text Request (0x04, RFC 7143 11.10)."""

    opcode: ClassVar[int] = Opcode.TEXT_REQUEST
    immediate: bool = False
    final: bool = True
    cont: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        b0 = self.opcode | (_I if self.immediate else 0)
        b1 = (_F if self.final else 0) | (0x40 if self.cont else 0)
        return BHS_STRUCT.pack(
            b0, b1, 0, 0, lens, self.lun, self.itt, self.ttt, self.cmdsn, self.expstatsn,
            0, 0, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        b1 = f[1]
        return cls(
            bool(f[0] & _I), bool(b1 & _F), bool(b1 & 0x40), f[5], f[6], f[7], f[8], f[9],
            bytes(data),
        )  # fmt: skip


@attrs.define
class DataOut:
    """SCSI Data-Out (0x05, RFC 7143 11.7)."""

    opcode: ClassVar[int] = Opcode.DATA_OUT
    final: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    expstatsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0
    data: Buffer = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        return BHS_STRUCT.pack(
            self.opcode, _F if self.final else 0, 0, 0, lens, self.lun, self.itt, self.ttt,
            0, self.expstatsn, 0, self.datasn, self.buffer_offset, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(bool(f[1] & _F), f[5], f[6], f[7], f[9], f[11], f[12], data)


@attrs.define
class LogoutRequest:
    """Logout Request (0x06, RFC 7143 11.14)."""

    opcode: ClassVar[int] = Opcode.LOGOUT_REQUEST
    immediate: bool = False
    reason_code: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0

    def pack_bhs(self, lens: int) -> bytes:
        b0 = self.opcode | (_I if self.immediate else 0)
        return BHS_STRUCT.pack(
            b0, _F | (self.reason_code & 0x7F), 0, 0, lens, 0, self.itt, self.cid << 16,
            self.cmdsn, self.expstatsn, 0, 0, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(bool(f[0] & _I), f[1] & 0x7F, f[6], f[7] >> 16, f[8], f[9])


@attrs.define
class SnackRequest:
    """SNACK Request (0x10, RFC 7143 11.16); ``ttt`` is the TTT or SNACK Tag."""

    opcode: ClassVar[int] = Opcode.SNACK_REQUEST
    snack_type: int = 0
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    expstatsn: int = 0
    begrun: int = 0
    runlength: int = 0

    def pack_bhs(self, lens: int) -> bytes:
        return BHS_STRUCT.pack(
            self.opcode, _F | (self.snack_type & 0x0F), 0, 0, lens, self.lun, self.itt,
            self.ttt, 0, self.expstatsn, 0, 0, self.begrun, self.runlength,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(f[1] & 0x0F, f[5], f[6], f[7], f[9], f[12], f[13])


# --------------------------------------------------------------------------
# target -> initiator
# --------------------------------------------------------------------------


@attrs.define
class NopIn:
    """NOP-In (0x20, RFC 7143 11.19); TTT != 0xffffffff asks for a NOP-Out."""

    opcode: ClassVar[int] = Opcode.NOP_IN
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        return BHS_STRUCT.pack(
            self.opcode, _F, 0, 0, lens, self.lun, self.itt, self.ttt, self.statsn,
            self.expcmdsn, self.maxcmdsn, 0, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(f[5], f[6], f[7], f[8], f[9], f[10], bytes(data))


@attrs.define
class ScsiResponse:
    """SCSI Response (0x21, RFC 7143 11.4).

    ``data`` is SenseLength (2 bytes) + sense data (+ response data); see
    :func:`pyscst.transports.iscsi.pdu_codec.encode_sense_segment`.
    """

    opcode: ClassVar[int] = Opcode.SCSI_RESPONSE
    itt: int = 0
    response: int = 0
    status: int = 0
    bidi_overflow: bool = False
    bidi_underflow: bool = False
    overflow: bool = False
    underflow: bool = False
    snack_tag: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    expdatasn: int = 0
    bidi_residual_count: int = 0
    residual_count: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        b1 = (
            _F
            | (0x10 if self.bidi_overflow else 0)
            | (0x08 if self.bidi_underflow else 0)
            | (0x04 if self.overflow else 0)
            | (0x02 if self.underflow else 0)
        )
        return BHS_STRUCT.pack(
            self.opcode, b1, self.response, self.status, lens, 0, self.itt, self.snack_tag,
            self.statsn, self.expcmdsn, self.maxcmdsn, self.expdatasn,
            self.bidi_residual_count, self.residual_count,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        b1 = f[1]
        return cls(
            f[6], f[2], f[3], bool(b1 & 0x10), bool(b1 & 0x08), bool(b1 & 0x04),
            bool(b1 & 0x02), f[7], f[8], f[9], f[10], f[11], f[12], f[13], bytes(data),
        )  # fmt: skip


@attrs.define
class TaskManagementResponse:
    """Task Management Function Response (0x22, RFC 7143 11.6)."""

    opcode: ClassVar[int] = Opcode.TASK_MANAGEMENT_RESPONSE
    response: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0

    def pack_bhs(self, lens: int) -> bytes:
        return BHS_STRUCT.pack(
            self.opcode, _F, self.response, 0, lens, 0, self.itt, 0, self.statsn,
            self.expcmdsn, self.maxcmdsn, 0, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(f[2], f[6], f[8], f[9], f[10])


@attrs.define
class LoginResponse:
    """Login Response (0x23, RFC 7143 11.13)."""

    opcode: ClassVar[int] = Opcode.LOGIN_RESPONSE
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_active: int = 0
    isid: int = 0
    tsih: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    status_class: int = 0
    status_detail: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        b1 = (
            (0x80 if self.transit else 0)
            | (0x40 if self.cont else 0)
            | ((self.csg & 3) << 2)
            | (self.nsg & 3)
        )
        return BHS_STRUCT.pack(
            self.opcode, b1, self.version_max, self.version_active, lens,
            (self.isid << 16) | self.tsih, self.itt, 0, self.statsn, self.expcmdsn,
            self.maxcmdsn, (self.status_class << 24) | (self.status_detail << 16), 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        b1 = f[1]
        return cls(
            bool(b1 & 0x80), bool(b1 & 0x40), (b1 >> 2) & 3, b1 & 3, f[2], f[3],
            f[5] >> 16, f[5] & _M16, f[6], f[8], f[9], f[10], f[11] >> 24,
            (f[11] >> 16) & 0xFF, bytes(data),
        )  # fmt: skip


@attrs.define
class TextResponse:
    """Text Response (0x24, RFC 7143 11.11)."""

    opcode: ClassVar[int] = Opcode.TEXT_RESPONSE
    final: bool = True
    cont: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        b1 = (_F if self.final else 0) | (0x40 if self.cont else 0)
        return BHS_STRUCT.pack(
            self.opcode, b1, 0, 0, lens, self.lun, self.itt, self.ttt, self.statsn,
            self.expcmdsn, self.maxcmdsn, 0, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        b1 = f[1]
        return cls(bool(b1 & _F), bool(b1 & 0x40), f[5], f[6], f[7], f[8], f[9], f[10], bytes(data))


@attrs.define
class DataIn:
    """SCSI Data-In (0x25, RFC 7143 11.7); may carry status (S bit)."""

    opcode: ClassVar[int] = Opcode.DATA_IN
    final: bool = False
    acknowledge: bool = False
    overflow: bool = False
    underflow: bool = False
    status_present: bool = False
    status: int = 0
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0
    residual_count: int = 0
    data: Buffer = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        b1 = (
            (_F if self.final else 0)
            | (0x40 if self.acknowledge else 0)
            | (0x04 if self.overflow else 0)
            | (0x02 if self.underflow else 0)
            | (0x01 if self.status_present else 0)
        )
        return BHS_STRUCT.pack(
            self.opcode, b1, 0, self.status, lens, self.lun, self.itt, self.ttt,
            self.statsn, self.expcmdsn, self.maxcmdsn, self.datasn, self.buffer_offset,
            self.residual_count,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        b1 = f[1]
        return cls(
            bool(b1 & _F), bool(b1 & 0x40), bool(b1 & 0x04), bool(b1 & 0x02), bool(b1 & 0x01),
            f[3], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], data,
        )  # fmt: skip


@attrs.define
class LogoutResponse:
    """Logout Response (0x26, RFC 7143 11.15)."""

    opcode: ClassVar[int] = Opcode.LOGOUT_RESPONSE
    response: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    time2wait: int = 0
    time2retain: int = 0

    def pack_bhs(self, lens: int) -> bytes:
        return BHS_STRUCT.pack(
            self.opcode, _F, self.response, 0, lens, 0, self.itt, 0, self.statsn,
            self.expcmdsn, self.maxcmdsn, 0, (self.time2wait << 16) | self.time2retain, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(f[2], f[6], f[8], f[9], f[10], f[12] >> 16, f[12] & _M16)


@attrs.define
class R2T:
    """Ready To Transfer (0x31, RFC 7143 11.8)."""

    opcode: ClassVar[int] = Opcode.R2T
    lun: int = 0
    itt: int = 0
    ttt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    r2tsn: int = 0
    buffer_offset: int = 0
    desired_data_transfer_length: int = 0

    def pack_bhs(self, lens: int) -> bytes:
        return BHS_STRUCT.pack(
            self.opcode, _F, 0, 0, lens, self.lun, self.itt, self.ttt, self.statsn,
            self.expcmdsn, self.maxcmdsn, self.r2tsn, self.buffer_offset,
            self.desired_data_transfer_length,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13])


@attrs.define
class AsyncMessage:
    """Asynchronous Message (0x32, RFC 7143 11.9); ITT is always 0xffffffff."""

    opcode: ClassVar[int] = Opcode.ASYNC_MESSAGE
    lun: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    async_event: int = 0
    async_vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        return BHS_STRUCT.pack(
            self.opcode, _F, 0, 0, lens, self.lun, RESERVED_TAG, 0, self.statsn,
            self.expcmdsn, self.maxcmdsn,
            (self.async_event << 24) | (self.async_vcode << 16) | self.parameter1,
            (self.parameter2 << 16) | self.parameter3, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        w36 = f[11]
        return cls(
            f[5], f[8], f[9], f[10], w36 >> 24, (w36 >> 16) & 0xFF, w36 & _M16,
            f[12] >> 16, f[12] & _M16, bytes(data),
        )  # fmt: skip


@attrs.define
class Reject:
    """Reject (0x3F, RFC 7143 11.17); ``data`` is the rejected PDU's header."""

    opcode: ClassVar[int] = Opcode.REJECT
    reason: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    datasn_r2tsn: int = 0
    data: bytes = attrs.field(default=b"", repr=_short)

    def pack_bhs(self, lens: int) -> bytes:
        return BHS_STRUCT.pack(
            self.opcode, _F, self.reason, 0, lens, 0, RESERVED_TAG, 0, self.statsn,
            self.expcmdsn, self.maxcmdsn, self.datasn_r2tsn, 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, f: Fields, ahs: bytes, data: Buffer) -> Self:
        return cls(f[2], f[8], f[9], f[10], f[11], bytes(data))


Pdu = (
    NopOut
    | ScsiCommand
    | TaskManagementRequest
    | LoginRequest
    | TextRequest
    | DataOut
    | LogoutRequest
    | SnackRequest
    | NopIn
    | ScsiResponse
    | TaskManagementResponse
    | LoginResponse
    | TextResponse
    | DataIn
    | LogoutResponse
    | R2T
    | AsyncMessage
    | Reject
)

PDU_CLASSES: tuple[type[Pdu], ...] = (
    NopOut,
    ScsiCommand,
    TaskManagementRequest,
    LoginRequest,
    TextRequest,
    DataOut,
    LogoutRequest,
    SnackRequest,
    NopIn,
    ScsiResponse,
    TaskManagementResponse,
    LoginResponse,
    TextResponse,
    DataIn,
    LogoutResponse,
    R2T,
    AsyncMessage,
    Reject,
)

#: opcode -> class, for the decoder
CLASS_BY_OPCODE: dict[int, type[Pdu]] = {cls.opcode: cls for cls in PDU_CLASSES}

#: opcodes whose ``data`` the reader leaves as a zero-copy memoryview
BULK_DATA_OPCODES = frozenset({Opcode.SCSI_COMMAND, Opcode.DATA_OUT, Opcode.DATA_IN})

_LENGTHS = struct.Struct(">B3xI")
# (a plain int: ``Opcode.SCSI_COMMAND`` is an EnumType slot call on 3.11, per PDU)
_SCSI_COMMAND = int(Opcode.SCSI_COMMAND)


def decode_bhs(bhs: Buffer) -> tuple[int, int, int]:
    """(opcode, TotalAHSLength in bytes, DataSegmentLength) of a 48-byte BHS."""
    if len(bhs) < BHS_LENGTH:
        raise PduFormatError(f"BHS is {len(bhs)} bytes, need {BHS_LENGTH}")
    b0, lens = _LENGTHS.unpack_from(bhs)
    return b0 & 0x3F, (lens >> 24) * 4, lens & 0xFFFFFF


def decode_pdu(bhs: Buffer, ahs: Buffer = b"", data: Buffer = b"") -> Pdu:
    """Build the record for one PDU from its parts (digests already checked).

    ``data`` is the data segment without padding. Raises
    :class:`PduFormatError` (carrying the Reject reason) for an unknown
    opcode or undecodable AHS.
    """
    if len(bhs) < BHS_LENGTH:
        raise PduFormatError(f"BHS is {len(bhs)} bytes, need {BHS_LENGTH}")
    opcode = bhs[0] & 0x3F
    cls = CLASS_BY_OPCODE.get(opcode)
    if cls is None:
        raise PduFormatError(f"unknown opcode {opcode:#04x}", RejectReason.COMMAND_NOT_SUPPORTED)
    if opcode == _SCSI_COMMAND:
        fields = COMMAND_STRUCT.unpack_from(bhs)
        return cls.unpack(fields, bytes(ahs), data)
    return cls.unpack(BHS_STRUCT.unpack_from(bhs), b"", data)

