"""SCSI operation codes and service actions by name.

Tables, handlers and tests refer to commands by these names rather than by
magic numbers, so a grep for ``Op.READ_10`` finds every place READ(10) is
handled. Only commands pyscst knows about are listed.
"""

from __future__ import annotations

import enum


class Op(enum.IntEnum):
    """Operation codes (SPC-4 / SBC-3)."""

    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    MODE_SENSE_6 = 0x1A
    START_STOP_UNIT = 0x1B
    SEND_DIAGNOSTIC = 0x1D
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    WRITE_AND_VERIFY_10 = 0x2E
    VERIFY_10 = 0x2F
    PRE_FETCH_10 = 0x34
    SYNCHRONIZE_CACHE_10 = 0x35
    READ_DEFECT_DATA_10 = 0x37
    WRITE_SAME_10 = 0x41
    UNMAP = 0x42
    SANITIZE = 0x48
    EXTENDED_COPY = 0x83
    RECEIVE_COPY_RESULTS = 0x84
    MODE_SELECT_10 = 0x55
    RESERVE_10 = 0x56
    RELEASE_10 = 0x57
    MODE_SENSE_10 = 0x5A
    PERSISTENT_RESERVE_IN = 0x5E
    PERSISTENT_RESERVE_OUT = 0x5F
    READ_16 = 0x88
    COMPARE_AND_WRITE = 0x89
    WRITE_16 = 0x8A
    WRITE_AND_VERIFY_16 = 0x8E
    VERIFY_16 = 0x8F
    PRE_FETCH_16 = 0x90
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    SERVICE_ACTION_IN_16 = 0x9E
    SERVICE_ACTION_OUT_16 = 0x9F
    REPORT_LUNS = 0xA0
    MAINTENANCE_IN = 0xA3
    MAINTENANCE_OUT = 0xA4
    READ_12 = 0xA8
    WRITE_12 = 0xAA
    WRITE_AND_VERIFY_12 = 0xAE
    VERIFY_12 = 0xAF
    READ_DEFECT_DATA_12 = 0xB7


class ServiceActionIn16(enum.IntEnum):
    """Service actions of SERVICE ACTION IN(16) (0x9E)."""

    READ_CAPACITY_16 = 0x10
    GET_LBA_STATUS = 0x12


class MaintenanceIn(enum.IntEnum):
    """Service actions of MAINTENANCE IN (0xA3)."""

    REPORT_TARGET_PORT_GROUPS = 0x0A
    REPORT_SUPPORTED_OPERATION_CODES = 0x0C
    REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS = 0x0D
    REPORT_TIMESTAMP = 0x0F


class MaintenanceOut(enum.IntEnum):
    """Service actions of MAINTENANCE OUT (0xA4)."""

    SET_TARGET_PORT_GROUPS = 0x0A


class PersistentReserveIn(enum.IntEnum):
    """Service actions of PERSISTENT RESERVE IN (0x5E)."""

    READ_KEYS = 0x00
    READ_RESERVATION = 0x01
    REPORT_CAPABILITIES = 0x02
    READ_FULL_STATUS = 0x03


class PersistentReserveOut(enum.IntEnum):
    """Service actions of PERSISTENT RESERVE OUT (0x5F)."""

    REGISTER = 0x00
    RESERVE = 0x01
    RELEASE = 0x02
    CLEAR = 0x03
    PREEMPT = 0x04
    PREEMPT_AND_ABORT = 0x05
    REGISTER_AND_IGNORE_EXISTING_KEY = 0x06
    REGISTER_AND_MOVE = 0x07
    REPLACE_LOST_RESERVATION = 0x08


#: opcodes whose byte 1 bits 4..0 hold a service action
SERVICE_ACTION_OPCODES = frozenset(
    {
        Op.PERSISTENT_RESERVE_IN,
        Op.PERSISTENT_RESERVE_OUT,
        Op.SERVICE_ACTION_IN_16,
        Op.SERVICE_ACTION_OUT_16,
        Op.MAINTENANCE_IN,
        Op.MAINTENANCE_OUT,
        Op.SANITIZE,
        Op.EXTENDED_COPY,
        Op.RECEIVE_COPY_RESULTS,
    }
)
