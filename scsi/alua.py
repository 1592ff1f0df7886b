"""Asymmetric logical unit access (SPC-4 5.15): the sans-I/O core.

A target's ports are grouped into target port groups, each in one asymmetric
access state; what a command may do depends on the state of the port it came
in on. This module holds what does not depend on who keeps the states: the
state codes and names, the permission table the LU's dispatcher reads (one
row per state: the commands it allows and the sense for the rest), the
REPORT TARGET PORT GROUPS encoder and the SET TARGET PORT GROUPS parser. The
states themselves live in the actor layer (``actors/alua.py``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping
from typing import Protocol

import attrs

from pyscst.scsi.opcodes import MaintenanceIn, MaintenanceOut, Op
from pyscst.scsi.sense import Asc, ScsiError, SenseKey


class AccessState(enum.IntEnum):
    """ASYMMETRIC ACCESS STATE codes (SPC-4 6.37, REPORT TARGET PORT GROUPS)."""

    ACTIVE_OPTIMIZED = 0x0
    ACTIVE_NON_OPTIMIZED = 0x1
    STANDBY = 0x2
    UNAVAILABLE = 0x3
    OFFLINE = 0xE
    TRANSITIONING = 0xF

    @property
    def label(self) -> str:
        """The name the config, the console and ``pyscst admin`` use."""
        return _LABELS[self]

    @classmethod
    def parse(cls, text: str) -> AccessState:
        """A state from its label (or a few spellings); ValueError otherwise."""
        key = text.strip().lower().replace("_", "-").replace(" ", "-")
        state = _BY_LABEL.get(key)
        if state is None:
            raise ValueError(f'expected one of {", ".join(SETTABLE_LABELS)}, got "{text}"')
        return state


_LABELS = {
    AccessState.ACTIVE_OPTIMIZED: "active/optimized",
    AccessState.ACTIVE_NON_OPTIMIZED: "active/non-optimized",
    AccessState.STANDBY: "standby",
    AccessState.UNAVAILABLE: "unavailable",
    AccessState.OFFLINE: "offline",
    AccessState.TRANSITIONING: "transitioning",
}
_BY_LABEL = {label: state for state, label in _LABELS.items()} | {
    "ao": AccessState.ACTIVE_OPTIMIZED,
    "optimized": AccessState.ACTIVE_OPTIMIZED,
    "active-optimized": AccessState.ACTIVE_OPTIMIZED,
    "ano": AccessState.ACTIVE_NON_OPTIMIZED,
    "non-optimized": AccessState.ACTIVE_NON_OPTIMIZED,
    "active-non-optimized": AccessState.ACTIVE_NON_OPTIMIZED,
}
#: what a group may be put in (config, admin, SET TPGS): TRANSITIONING is only
#: ever passed through on the way to one of these
SETTABLE = (
    AccessState.ACTIVE_OPTIMIZED,
    AccessState.ACTIVE_NON_OPTIMIZED,
    AccessState.STANDBY,
    AccessState.UNAVAILABLE,
    AccessState.OFFLINE,
)
SETTABLE_LABELS = tuple(s.label for s in SETTABLE)

#: SUPPORTED bits of a REPORT TPGS descriptor (byte 1): T_SUP O_SUP U_SUP S_SUP
#: AN_SUP AO_SUP; LBD_SUP (0x10) is not, there is no LBA-dependent state here
SUPPORTED_STATES = 0x80 | 0x40 | 0x08 | 0x04 | 0x02 | 0x01

#: INQUIRY's TPGS field (byte 5 bits 5..4)
TPGS_IMPLICIT = 0x10
TPGS_EXPLICIT = 0x20


def tpgs_bits(explicit: bool) -> int:
    """Byte 5's TPGS bits: implicit always (the operator and the cluster change
    states), explicit when SET TARGET PORT GROUPS is accepted."""
    return TPGS_IMPLICIT | (TPGS_EXPLICIT if explicit else 0)


class StatusCode(enum.IntEnum):
    """STATUS CODE of a REPORT TPGS descriptor: why the state last changed."""

    NONE = 0x00
    ALTERED_BY_EXPLICIT_STPG = 0x01
    ALTERED_BY_IMPLICIT_ALUA = 0x02


class PortAccess(Protocol):
    """What the dispatcher and the SPC handlers read of the target port group a
    command arrived through (the actor layer keeps and changes it)."""

    @property
    def state(self) -> AccessState: ...

    @property
    def restricted(self) -> bool:
        """``state`` is not active: only what ACCESS_RULES allows may run."""
        ...

    @property
    def tpgs(self) -> int:
        """INQUIRY byte 5's TPGS bits for the target this port belongs to."""
        ...


# -- the permission table ------------------------------------------------------

#: a command as the table names it: (opcode, service action or None)
OpKey = tuple[int, "int | None"]

_ALWAYS: frozenset[OpKey] = frozenset(
    {
        (Op.INQUIRY, None),
        (Op.REPORT_LUNS, None),
        (Op.REQUEST_SENSE, None),
        (Op.MAINTENANCE_IN, MaintenanceIn.REPORT_TARGET_PORT_GROUPS),
    }
)
_SET_TPGS: OpKey = (Op.MAINTENANCE_OUT, MaintenanceOut.SET_TARGET_PORT_GROUPS)
_LOG_SELECT, _LOG_SENSE, _RECEIVE_DIAGNOSTIC = 0x4C, 0x4D, 0x1C


@attrs.frozen
class AccessRule:
    """What one state lets through, and the NOT READY sense for the rest."""

    allowed: frozenset[OpKey] | None  # None: everything
    asc: Asc | None = None


#: SPC-4 5.15.2.4.x: the commands each state allows (READ/WRITE BUFFER's echo
#: buffer modes are allowed too, but this target has no READ/WRITE BUFFER).
#: Offline (a secondary state in SPC-4, a target port that is not accessible)
#: lets through no more than transitioning does, with LOGICAL UNIT NOT READY,
#: OFFLINE: the sense LIO sends and Linux's ALUA handler recognises.
ACCESS_RULES: Mapping[AccessState, AccessRule] = {
    AccessState.ACTIVE_OPTIMIZED: AccessRule(None),
    AccessState.ACTIVE_NON_OPTIMIZED: AccessRule(None),
    AccessState.STANDBY: AccessRule(
        _ALWAYS
        | {
            _SET_TPGS,
            (Op.MODE_SELECT_6, None),
            (Op.MODE_SELECT_10, None),
            (Op.MODE_SENSE_6, None),
            (Op.MODE_SENSE_10, None),
            (_LOG_SELECT, None),
            (_LOG_SENSE, None),
            (_RECEIVE_DIAGNOSTIC, None),
            (Op.SEND_DIAGNOSTIC, None),
            *((Op.PERSISTENT_RESERVE_IN, sa) for sa in range(0x20)),
            *((Op.PERSISTENT_RESERVE_OUT, sa) for sa in range(0x20)),
        },
        Asc.LUN_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY,
    ),
    AccessState.UNAVAILABLE: AccessRule(
        _ALWAYS | {_SET_TPGS}, Asc.LUN_NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE
    ),
    AccessState.TRANSITIONING: AccessRule(_ALWAYS, Asc.LUN_NOT_ACCESSIBLE_TRANSITION),
    AccessState.OFFLINE: AccessRule(_ALWAYS, Asc.LUN_NOT_READY_OFFLINE),
}


def check_access(state: AccessState, opcode: int, service_action: int | None) -> None:
    """Raise the NOT READY the state's row gives a command it does not allow."""
    rule = ACCESS_RULES[state]
    allowed = rule.allowed
    if allowed is None or (opcode, service_action) in allowed:
        return
    assert rule.asc is not None
    raise ScsiError.check(SenseKey.NOT_READY, rule.asc)


def allows(state: AccessState, opcode: int, service_action: int | None) -> bool:
    allowed = ACCESS_RULES[state].allowed
    return allowed is None or (opcode, service_action) in allowed


# -- REPORT TARGET PORT GROUPS (MAINTENANCE IN, service action 0Ah) -------------


@attrs.frozen
class GroupReport:
    """One target port group as REPORT TPGS describes it."""

    group_id: int
    state: AccessState
    relative_ports: tuple[int, ...]
    preferred: bool = False
    status: StatusCode = StatusCode.NONE


def encode_descriptor(group: GroupReport) -> bytes:
    head = struct.pack(
        ">BBHBBBB",
        (0x80 if group.preferred else 0) | int(group.state),
        SUPPORTED_STATES,
        group.group_id & 0xFFFF,
        0,
        int(group.status),
        0,
        len(group.relative_ports) & 0xFF,
    )
    return head + b"".join(struct.pack(">HH", 0, p & 0xFFFF) for p in group.relative_ports)


def report_target_port_groups(
    cdb: bytes, groups: Iterable[GroupReport], transition_time: int
) -> bytes:
    """The parameter data for a REPORT TPGS CDB (already checked against the
    table's mask), cut to its ALLOCATION LENGTH. PARAMETER DATA FORMAT 000b is
    the length-only header, 001b the extended header (with the implicit
    transition time in seconds); others are INVALID FIELD IN CDB (byte 1)."""
    fmt = (cdb[1] >> 5) & 0x07
    if fmt not in (0, 1):
        raise ScsiError.invalid_field_in_cdb(1, 7)
    allocation = struct.unpack_from(">I", cdb, 6)[0]
    body = b"".join(encode_descriptor(g) for g in groups)
    if fmt == 1:
        data = struct.pack(">IBB2x", len(body) + 4, 0x10, min(max(transition_time, 0), 255))
        data += body
    else:
        data = struct.pack(">I", len(body)) + body
    return data[:allocation]


# -- SET TARGET PORT GROUPS (MAINTENANCE OUT, service action 0Ah) ---------------

_SET_HEADER = 4
_DESCRIPTOR = 4


def parse_set_target_port_groups(
    data: bytes | memoryview, known: Iterable[int]
) -> list[tuple[int, AccessState]]:
    """The (group id, state) pairs a SET TPGS parameter list asks for, in order.

    Refused (nothing changes): a list that is not a 4-byte header plus whole
    4-byte descriptors (PARAMETER LIST LENGTH ERROR); a state that is not
    settable (transitioning, LBA dependent, reserved) or a group id that is
    not one of ``known`` (INVALID FIELD IN PARAMETER LIST, pointing at the
    field); the same group named twice (pointing at the second one).
    """
    raw = bytes(data)
    if len(raw) < _SET_HEADER or (len(raw) - _SET_HEADER) % _DESCRIPTOR:
        raise ScsiError.parameter_list_length_error()
    ids = set(known)
    out: list[tuple[int, AccessState]] = []
    seen: set[int] = set()
    for at in range(_SET_HEADER, len(raw), _DESCRIPTOR):
        code = raw[at] & 0x0F
        if raw[at] & 0xF0:
            raise ScsiError.invalid_field_in_parameter_list(at, 7)
        if raw[at + 1]:
            raise ScsiError.invalid_field_in_parameter_list(at + 1, 7)
        try:
            state = AccessState(code)
        except ValueError:
            state = AccessState.TRANSITIONING  # refused just below
        if state not in SETTABLE:
            raise ScsiError.invalid_field_in_parameter_list(at, 3)
        group_id = struct.unpack_from(">H", raw, at + 2)[0]
        if group_id not in ids or group_id in seen:
            raise ScsiError.invalid_field_in_parameter_list(at + 2)
        seen.add(group_id)
        out.append((group_id, state))
    return out


def stpg_failed() -> ScsiError:
    """SPC-4 6.46: a transition that could not be made."""
    return ScsiError.check(SenseKey.HARDWARE_ERROR, Asc.SET_TARGET_PORT_GROUPS_COMMAND_FAILED)


__all__ = [
    "ACCESS_RULES",
    "SETTABLE",
    "SETTABLE_LABELS",
    "AccessRule",
    "AccessState",
    "GroupReport",
    "PortAccess",
    "StatusCode",
    "allows",
    "check_access",
    "parse_set_target_port_groups",
    "report_target_port_groups",
    "stpg_failed",
    "tpgs_bits",
]
