"""SCSI status codes, sense data and the exception that carries them.

Every layer that can fail a command (CDB checks, the LUN's UA and reservation
logic, device handlers, fault injection) raises :class:`ScsiError`; only the
LUN actor turns it into a status and sense bytes, so the encoding (fixed or
descriptor format, SPC-4 4.5) lives in exactly one place.
"""

from __future__ import annotations

import enum
import struct

import attrs


class Status(enum.IntEnum):
    """SAM-5 status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class SenseKey(enum.IntEnum):
    """SPC-4 sense keys."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    EQUAL = 0xC  # obsolete; a pass-through device may still send it
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE
    COMPLETED = 0xF


class Asc(tuple[int, int], enum.Enum):
    """Additional sense code / qualifier pairs used by pyscst (SPC-4 annex D)."""

    NO_ADDITIONAL_SENSE = (0x00, 0x00)
    # sequential-access (SSC-4 / SPC-4 annex D) ------------------------------
    FILEMARK_DETECTED = (0x00, 0x01)
    END_OF_PARTITION_MEDIUM_DETECTED = (0x00, 0x02)
    BEGINNING_OF_PARTITION_MEDIUM_DETECTED = (0x00, 0x04)
    END_OF_DATA_DETECTED = (0x00, 0x05)
    CLEANING_REQUESTED = (0x00, 0x17)
    MEDIUM_FORMAT_CORRUPTED = (0x31, 0x00)
    WORM_MEDIUM_OVERWRITE_ATTEMPTED = (0x30, 0x0C)
    POSITION_PAST_BEGINNING_OF_MEDIUM = (0x3B, 0x0C)
    AUXILIARY_MEMORY_OUT_OF_SPACE = (0x55, 0x06)
    # -------------------------------------------------------------------------
    LUN_NOT_READY_CAUSE_NOT_REPORTABLE = (0x04, 0x00)
    LUN_NOT_READY_BECOMING_READY = (0x04, 0x01)
    LUN_NOT_READY_INITIALIZING_COMMAND_REQUIRED = (0x04, 0x02)
    LUN_NOT_READY_MANUAL_INTERVENTION = (0x04, 0x03)
    LUN_NOT_READY_SANITIZE_IN_PROGRESS = (0x04, 0x1B)
    LUN_NOT_ACCESSIBLE_TRANSITION = (0x04, 0x0A)
    LUN_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY = (0x04, 0x0B)
    LUN_NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE = (0x04, 0x0C)
    LUN_NOT_READY_OFFLINE = (0x04, 0x12)
    SANITIZE_COMMAND_FAILED = (0x31, 0x03)
    LOGICAL_UNIT_COMMUNICATION_FAILURE = (0x08, 0x00)
    LOGICAL_UNIT_COMMUNICATION_TIMEOUT = (0x08, 0x01)
    WRITE_ERROR = (0x0C, 0x00)
    INVALID_FIELD_IN_INFORMATION_UNIT = (0x0E, 0x03)
    UNRECOVERED_READ_ERROR = (0x11, 0x00)
    MISCOMPARE_DURING_VERIFY = (0x1D, 0x00)
    PARAMETER_LIST_LENGTH_ERROR = (0x1A, 0x00)
    COPY_TARGET_DEVICE_NOT_REACHABLE = (0x0D, 0x02)
    TOO_MANY_TARGET_DESCRIPTORS = (0x26, 0x06)
    UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE = (0x26, 0x07)
    TOO_MANY_SEGMENT_DESCRIPTORS = (0x26, 0x08)
    UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE = (0x26, 0x09)
    OPERATION_IN_PROGRESS = (0x00, 0x16)
    INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00)
    LBA_OUT_OF_RANGE = (0x21, 0x00)
    INVALID_FIELD_IN_CDB = (0x24, 0x00)
    LOGICAL_UNIT_NOT_SUPPORTED = (0x25, 0x00)
    INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00)
    PARAMETER_NOT_SUPPORTED = (0x26, 0x01)
    PARAMETER_VALUE_INVALID = (0x26, 0x02)
    SAVING_PARAMETERS_NOT_SUPPORTED = (0x39, 0x00)
    WRITE_PROTECTED = (0x27, 0x00)
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT = (0x27, 0x07)
    NOT_READY_TO_READY_CHANGE = (0x28, 0x00)
    #: SMC-3: the operator put media into or took them out of a mail slot
    IMPORT_OR_EXPORT_ELEMENT_ACCESSED = (0x28, 0x01)
    POWER_ON_RESET_OR_BUS_DEVICE_RESET = (0x29, 0x00)
    POWER_ON_OCCURRED = (0x29, 0x01)
    SCSI_BUS_RESET_OCCURRED = (0x29, 0x02)
    BUS_DEVICE_RESET_FUNCTION_OCCURRED = (0x29, 0x03)
    DEVICE_INTERNAL_RESET = (0x29, 0x04)
    I_T_NEXUS_LOSS_OCCURRED = (0x29, 0x07)
    PARAMETERS_CHANGED = (0x2A, 0x00)
    MODE_PARAMETERS_CHANGED = (0x2A, 0x01)
    RESERVATIONS_PREEMPTED = (0x2A, 0x03)
    RESERVATIONS_RELEASED = (0x2A, 0x04)
    REGISTRATIONS_PREEMPTED = (0x2A, 0x05)
    ASYMMETRIC_ACCESS_STATE_CHANGED = (0x2A, 0x06)
    CAPACITY_DATA_HAS_CHANGED = (0x2A, 0x09)
    COMMAND_SEQUENCE_ERROR = (0x2C, 0x00)
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = (0x2F, 0x00)
    COMMANDS_CLEARED_BY_POWER_LOSS = (0x2F, 0x01)
    COMMANDS_CLEARED_BY_DEVICE_SERVER = (0x2F, 0x02)
    MEDIUM_NOT_PRESENT = (0x3A, 0x00)
    INQUIRY_DATA_HAS_CHANGED = (0x3F, 0x03)
    REPORTED_LUNS_DATA_HAS_CHANGED = (0x3F, 0x0E)
    INTERNAL_TARGET_FAILURE = (0x44, 0x00)
    INVALID_MESSAGE_ERROR = (0x49, 0x00)
    DATA_PHASE_ERROR = (0x4B, 0x00)
    MEDIUM_REMOVAL_PREVENTED = (0x53, 0x02)
    INSUFFICIENT_REGISTRATION_RESOURCES = (0x55, 0x04)
    SET_TARGET_PORT_GROUPS_COMMAND_FAILED = (0x67, 0x0A)

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def qualifier(self) -> int:
        return self.value[1]


@attrs.frozen
class FieldPointer:
    """Sense-key-specific field pointer (SPC-4 4.5.2.4.2).

    ``in_cdb`` is the C/D bit: True when the bad field is in the CDB, False when
    it is in the parameter list. ``bit`` is None when the whole byte is wrong.
    """

    byte: int
    bit: int | None = None
    in_cdb: bool = True

    def encode(self) -> bytes:
        first = 0x80  # SKSV
        if self.in_cdb:
            first |= 0x40
        if self.bit is not None:
            first |= 0x08 | (self.bit & 0x07)
        return bytes((first,)) + struct.pack(">H", self.byte & 0xFFFF)


@attrs.frozen
class Sense:
    """One sense datum, format-independent."""

    key: SenseKey
    asc: int
    ascq: int
    field_pointer: FieldPointer | None = None
    information: int | None = None
    #: raw sense-key-specific bytes (3) when not a field pointer, e.g. progress
    specific: bytes | None = None
    #: FILEMARK (0x80), EOM (0x40), ILI (0x20): the stream-command bits of
    #: sequential-access devices (fixed byte 2; descriptor type 04h)
    stream: int = 0
    #: sense data as another device server wrote it (pass-through): encoded
    #: as it came, whatever format this LU would choose
    raw: bytes | None = None
    #: a deferred error (SPC-4 4.5.5: an operation that returned status
    #: before it ended, e.g. with IMMED=1, failed later): response code
    #: 0x71 / 0x73 instead of 0x70 / 0x72
    deferred: bool = False

    @classmethod
    def decode(cls, data: bytes) -> Sense | None:
        """Sense data another device server sent (fixed 0x70/0x71 or descriptor
        0x72/0x73), kept as it came in ``raw``; None if too short or of an
        unknown response code to read its key, ASC and ASCQ."""
        if len(data) < 4:
            return None
        code = data[0] & 0x7F
        if code in (0x70, 0x71):
            if len(data) < 14:
                return None
            key, asc, ascq = data[2] & 0x0F, data[12], data[13]
        elif code in (0x72, 0x73):
            key, asc, ascq = data[1] & 0x0F, data[2], data[3]
        else:
            return None
        return cls(SenseKey(key), asc, ascq, raw=bytes(data))

    @classmethod
    def of(
        cls,
        key: SenseKey,
        asc: Asc,
        *,
        field_pointer: FieldPointer | None = None,
        information: int | None = None,
    ) -> Sense:
        return cls(key, asc.code, asc.qualifier, field_pointer, information)

    def _specific_bytes(self) -> bytes | None:
        if self.field_pointer is not None:
            return self.field_pointer.encode()
        return self.specific

    def encode(self, descriptor: bool = False) -> bytes:
        """Encode as fixed (0x70) or descriptor (0x72) format current sense,
        0x71 / 0x73 when deferred (sense that came from elsewhere: as it came)."""
        if self.raw is not None:
            return self.raw
        specific = self._specific_bytes()
        if descriptor:
            body = bytearray()
            if self.information is not None:
                body += bytes((0x00, 0x0A, 0x80, 0x00)) + struct.pack(">Q", self.information)
            if specific is not None:
                body += bytes((0x02, 0x06, 0x00, 0x00)) + specific + b"\x00"
            if self.stream:
                body += bytes((0x04, 0x02, 0x00, self.stream & 0xE0))
            head = bytes(
                (0x73 if self.deferred else 0x72, int(self.key) & 0x0F, self.asc, self.ascq,
                 0, 0, 0, len(body))
            )  # fmt: skip
            return head + bytes(body)
        buf = bytearray(18)
        buf[0] = 0x71 if self.deferred else 0x70
        buf[2] = (int(self.key) & 0x0F) | (self.stream & 0xE0)
        if self.information is not None:
            if self.information <= 0xFFFFFFFF:
                buf[0] |= 0x80  # VALID
                struct.pack_into(">I", buf, 3, self.information)
        buf[7] = 10  # additional sense length
        buf[12] = self.asc
        buf[13] = self.ascq
        if specific is not None:
            buf[15:18] = specific
        return bytes(buf)


class ScsiError(Exception):
    """A command ends with a non-GOOD status; CHECK CONDITION carries sense."""

    def __init__(
        self,
        status: Status,
        sense: Sense | None = None,
        data: bytes | bytearray | memoryview | None = None,
    ) -> None:
        super().__init__(status, sense)
        self.status = status
        self.sense = sense
        #: data-in sent before the status (a tape READ that met a filemark or
        #: an incorrect-length record still returns what it read; a
        #: pass-through device's answer that moved data)
        self.data = data

    def __str__(self) -> str:
        if self.sense is None:
            return self.status.name
        s = self.sense
        return f"{self.status.name} {s.key.name} {s.asc:02X}/{s.ascq:02X}"

    @classmethod
    def check(
        cls,
        key: SenseKey,
        asc: Asc,
        *,
        field_pointer: FieldPointer | None = None,
        information: int | None = None,
    ) -> ScsiError:
        return cls(
            Status.CHECK_CONDITION,
            Sense.of(key, asc, field_pointer=field_pointer, information=information),
        )

    # The common ones, so call sites read like the standard.
    @classmethod
    def invalid_opcode(cls) -> ScsiError:
        return cls.check(
            SenseKey.ILLEGAL_REQUEST,
            Asc.INVALID_COMMAND_OPERATION_CODE,
            field_pointer=FieldPointer(0),
        )

    @classmethod
    def invalid_field_in_cdb(cls, byte: int, bit: int | None = None) -> ScsiError:
        return cls.check(
            SenseKey.ILLEGAL_REQUEST,
            Asc.INVALID_FIELD_IN_CDB,
            field_pointer=FieldPointer(byte, bit),
        )

    @classmethod
    def invalid_field_in_parameter_list(cls, byte: int, bit: int | None = None) -> ScsiError:
        return cls.check(
            SenseKey.ILLEGAL_REQUEST,
            Asc.INVALID_FIELD_IN_PARAMETER_LIST,
            field_pointer=FieldPointer(byte, bit, in_cdb=False),
        )

    @classmethod
    def parameter_list_length_error(cls) -> ScsiError:
        return cls.check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)

    @classmethod
    def lba_out_of_range(cls) -> ScsiError:
        return cls.check(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)

    @classmethod
    def lun_not_supported(cls) -> ScsiError:
        return cls.check(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED)

    @classmethod
    def write_protected(cls) -> ScsiError:
        return cls.check(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED)

    @classmethod
    def medium_error(cls, asc: Asc, lba: int) -> ScsiError:
        return cls.check(SenseKey.MEDIUM_ERROR, asc, information=lba)

    @classmethod
    def unit_attention(cls, asc: Asc) -> ScsiError:
        return cls.check(SenseKey.UNIT_ATTENTION, asc)

    @classmethod
    def reservation_conflict(cls) -> ScsiError:
        return cls(Status.RESERVATION_CONFLICT)
