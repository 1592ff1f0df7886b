"""Numeric code points of RFC 7143 PDUs, named once.

Opcodes and the small enumerations carried inside PDUs (reject reasons, task
management functions and responses, logout reasons, login status classes,
asynchronous events) so that the codec, the target and the initiator spell
them the same way and reviewers can check them against the RFC sections.
"""

from __future__ import annotations

import enum

# (the middle level's enum, re-exported: one name for the target, the initiator and the LU)
from pyscst.actors.messages import TmfFunction as TmfFunction
from pyscst.actors.messages import TmfResponse as TmfResponse

#: The "reserved" tag value: no ITT / no TTT (RFC 7143 11.18.4, 11.19.4).
RESERVED_TAG = 0xFFFFFFFF

BHS_LENGTH = 48
MAX_DATA_SEGMENT_LENGTH = (1 << 24) - 1  # 24-bit DataSegmentLength field
#: MaxRecvDataSegmentLength everyone must accept before it is negotiated.
DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH = 8192


class Opcode(enum.IntEnum):
    """BHS byte 0, bits 0-5 (RFC 7143 11.2.1.2)."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MANAGEMENT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MANAGEMENT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


class RejectReason(enum.IntEnum):
    """Reject PDU reason codes (RFC 7143 11.17.1)."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OPERATION_REJECT = 0x0A
    DEPRECATED = 0x0B
    WAITING_FOR_LOGOUT = 0x0C


class ScsiResponseCode(enum.IntEnum):
    """SCSI Response PDU 'Response' field (RFC 7143 11.4.3)."""

    COMMAND_COMPLETED = 0x00
    TARGET_FAILURE = 0x01


class LogoutReason(enum.IntEnum):
    """Logout Request reason codes (RFC 7143 11.14.1)."""

    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_CONNECTION_FOR_RECOVERY = 2


class LogoutResponseCode(enum.IntEnum):
    """Logout Response codes (RFC 7143 11.15.1)."""

    SUCCESS = 0
    CID_NOT_FOUND = 1
    RECOVERY_NOT_SUPPORTED = 2
    CLEANUP_FAILED = 3


class LoginStage(enum.IntEnum):
    """CSG / NSG values (RFC 7143 11.12.3)."""

    SECURITY_NEGOTIATION = 0
    OPERATIONAL_NEGOTIATION = 1
    FULL_FEATURE_PHASE = 3


class LoginStatusClass(enum.IntEnum):
    """Login Response Status-Class (RFC 7143 11.13.5)."""

    SUCCESS = 0
    REDIRECTION = 1
    INITIATOR_ERROR = 2
    TARGET_ERROR = 3


class AsyncEvent(enum.IntEnum):
    """Asynchronous Message AsyncEvent codes (RFC 7143 11.9.1)."""

    SCSI_ASYNC_EVENT = 0
    LOGOUT_REQUEST = 1
    DROP_CONNECTION = 2
    DROP_ALL_CONNECTIONS = 3
    PARAMETER_NEGOTIATION = 4
    VENDOR_SPECIFIC = 255


class SnackType(enum.IntEnum):
    """SNACK Request Type field (RFC 7143 11.16.1)."""

    DATA_R2T = 0
    STATUS = 1
    DATA_ACK = 2
    R_DATA = 3
