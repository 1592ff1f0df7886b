"""The iSCSI text-key table and the per-key negotiation rules (RFC 7143 6.2, 13).

Login and text negotiation is table driven: every key the RFC defines is one
:class:`KeySpec` row saying what kind of value it carries, how two offers are
combined, who may send it, when, and whether it binds the whole session or one
connection. :func:`respond` applies a row to an offer; :class:`SessionParams`
is the typed result the rest of the target reads. Keeping the rules here and
the dialogue in ``login.py`` lets both be tested on their own.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from types import MappingProxyType

import attrs

# Answer constants (RFC 7143 6.2).
REJECT = "Reject"
IRRELEVANT = "Irrelevant"
NOT_UNDERSTOOD = "NotUnderstood"
SPECIAL_ANSWERS = frozenset({REJECT, IRRELEVANT, NOT_UNDERSTOOD})

MAX_DATA_SEGMENT = 2**24 - 1


class Kind(enum.Enum):
    """The shape of a key's value."""

    BOOLEAN = "boolean"
    NUMERIC = "numerical"
    LIST = "list-of-values"
    DECLARATIVE = "declarative"  # a number or a token one side states, nothing negotiated
    STRING = "string"  # free text stated by one side (names, aliases, addresses)


class Rule(enum.Enum):
    """How the responder combines the offer with its own value."""

    OR = "or"
    AND = "and"
    MIN = "minimum"
    MAX = "maximum"
    SELECT = "list selection"
    DECLARE = "declarative"


class Sender(enum.Flag):
    INITIATOR = enum.auto()
    TARGET = enum.auto()
    BOTH = INITIATOR | TARGET


class Phase(enum.Enum):
    """When a key may be exchanged."""

    LEADING_ONLY = "LO"  # login of the leading connection only
    INITIALIZE = "IO"  # any connection's login, never in full feature phase
    SECURITY = "security"  # the security stage of any login
    ANY = "ALL"  # login or full feature phase
    FFP = "FFPO"  # full feature phase only (SendTargets)


class Scope(enum.Enum):
    SESSION = "SW"
    CONNECTION = "CO"


@attrs.frozen
class KeySpec:
    """One row of the key table."""

    name: str
    kind: Kind
    rule: Rule
    default: str | None
    sender: Sender
    phase: Phase
    scope: Scope
    low: int = 0
    high: int = 0
    values: tuple[str, ...] = ()
    relevant_in_discovery: bool = True
    obsolete: bool = False


def _num(
    name: str,
    rule: Rule,
    default: int,
    low: int,
    high: int,
    phase: Phase = Phase.LEADING_ONLY,
    *,
    discovery: bool = True,
) -> KeySpec:
    return KeySpec(
        name,
        Kind.NUMERIC,
        rule,
        str(default),
        Sender.BOTH,
        phase,
        Scope.SESSION,
        low=low,
        high=high,
        relevant_in_discovery=discovery,
    )


def _bool(name: str, rule: Rule, default: bool, *, discovery: bool = True) -> KeySpec:
    return KeySpec(
        name,
        Kind.BOOLEAN,
        rule,
        "Yes" if default else "No",
        Sender.BOTH,
        Phase.LEADING_ONLY,
        Scope.SESSION,
        values=("Yes", "No"),
        relevant_in_discovery=discovery,
    )


def _text(name: str, sender: Sender, phase: Phase, default: str | None = None) -> KeySpec:
    return KeySpec(name, Kind.STRING, Rule.DECLARE, default, sender, phase, Scope.SESSION)


_ROWS: tuple[KeySpec, ...] = (
    KeySpec(
        "HeaderDigest", Kind.LIST, Rule.SELECT, "None", Sender.BOTH, Phase.INITIALIZE,
        Scope.CONNECTION, values=("None", "CRC32C"),
    ),
    KeySpec(
        "DataDigest", Kind.LIST, Rule.SELECT, "None", Sender.BOTH, Phase.INITIALIZE,
        Scope.CONNECTION, values=("None", "CRC32C"),
    ),
    _num("MaxConnections", Rule.MIN, 1, 1, 65535, discovery=False),
    _text("SendTargets", Sender.INITIATOR, Phase.FFP),
    _text("TargetName", Sender.BOTH, Phase.INITIALIZE),
    _text("InitiatorName", Sender.INITIATOR, Phase.INITIALIZE),
    _text("TargetAlias", Sender.TARGET, Phase.ANY),
    _text("InitiatorAlias", Sender.INITIATOR, Phase.ANY),
    _text("TargetAddress", Sender.TARGET, Phase.ANY),
    KeySpec(
        "TargetPortalGroupTag", Kind.DECLARATIVE, Rule.DECLARE, None, Sender.TARGET,
        Phase.INITIALIZE, Scope.SESSION, low=0, high=65535,
    ),
    _bool("InitialR2T", Rule.OR, True, discovery=False),
    _bool("ImmediateData", Rule.AND, True, discovery=False),
    KeySpec(
        "MaxRecvDataSegmentLength", Kind.DECLARATIVE, Rule.DECLARE, "8192", Sender.BOTH,
        Phase.ANY, Scope.CONNECTION, low=512, high=MAX_DATA_SEGMENT,
    ),
    _num("MaxBurstLength", Rule.MIN, 262144, 512, MAX_DATA_SEGMENT, discovery=False),
    _num("FirstBurstLength", Rule.MIN, 65536, 512, MAX_DATA_SEGMENT, discovery=False),
    _num("DefaultTime2Wait", Rule.MAX, 2, 0, 3600),
    _num("DefaultTime2Retain", Rule.MIN, 20, 0, 3600),
    _num("MaxOutstandingR2T", Rule.MIN, 1, 1, 65535, discovery=False),
    _bool("DataPDUInOrder", Rule.OR, True, discovery=False),
    _bool("DataSequenceInOrder", Rule.OR, True, discovery=False),
    _num("ErrorRecoveryLevel", Rule.MIN, 0, 0, 2),
    KeySpec(
        "SessionType", Kind.DECLARATIVE, Rule.DECLARE, "Normal", Sender.INITIATOR,
        Phase.LEADING_ONLY, Scope.SESSION, values=("Discovery", "Normal"),
    ),
    KeySpec(
        "AuthMethod", Kind.LIST, Rule.SELECT, "None", Sender.BOTH, Phase.SECURITY,
        Scope.CONNECTION, values=("KRB5", "SRP", "CHAP", "None", "SPKM1", "SPKM2"),
    ),
    # RFC 7143 13.25: obsolete; a responder SHOULD answer Reject, never NotUnderstood.
    KeySpec(
        "OFMarker", Kind.BOOLEAN, Rule.AND, "No", Sender.BOTH, Phase.INITIALIZE,
        Scope.CONNECTION, values=("Yes", "No"), obsolete=True,
    ),
    KeySpec(
        "IFMarker", Kind.BOOLEAN, Rule.AND, "No", Sender.BOTH, Phase.INITIALIZE,
        Scope.CONNECTION, values=("Yes", "No"), obsolete=True,
    ),
    KeySpec(
        "OFMarkInt", Kind.NUMERIC, Rule.MIN, "2048", Sender.BOTH, Phase.INITIALIZE,
        Scope.CONNECTION, low=1, high=65535, obsolete=True,
    ),
    KeySpec(
        "IFMarkInt", Kind.NUMERIC, Rule.MIN, "2048", Sender.BOTH, Phase.INITIALIZE,
        Scope.CONNECTION, low=1, high=65535, obsolete=True,
    ),
    KeySpec(
        "TaskReporting", Kind.LIST, Rule.SELECT, "RFC3720", Sender.BOTH, Phase.LEADING_ONLY,
        Scope.SESSION, values=("RFC3720", "ResponseFence", "FastAbort"),
        relevant_in_discovery=False,
    ),
    _num("iSCSIProtocolLevel", Rule.MIN, 1, 0, 31),
    # RFC 7145 (iSER): we are TCP only, so RDMA is always No and its lengths irrelevant.
    KeySpec(
        "RDMAExtensions", Kind.BOOLEAN, Rule.AND, "No", Sender.BOTH, Phase.LEADING_ONLY,
        Scope.SESSION, values=("Yes", "No"),
    ),
    KeySpec(
        "InitiatorRecvDataSegmentLength", Kind.DECLARATIVE, Rule.DECLARE, "8192",
        Sender.INITIATOR, Phase.INITIALIZE, Scope.CONNECTION, low=512, high=MAX_DATA_SEGMENT,
    ),
    KeySpec(
        "TargetRecvDataSegmentLength", Kind.DECLARATIVE, Rule.DECLARE, "8192",
        Sender.TARGET, Phase.INITIALIZE, Scope.CONNECTION, low=512, high=MAX_DATA_SEGMENT,
    ),
)

#: Every key we know, by name (read-only).
KEYS: Mapping[str, KeySpec] = MappingProxyType({row.name: row for row in _ROWS})

#: iSER-only keys: irrelevant on a TCP transport, where RDMAExtensions is always No.
ISER_KEYS = frozenset({"InitiatorRecvDataSegmentLength", "TargetRecvDataSegmentLength"})

#: Security-stage keys other than AuthMethod belong to the authenticator.
SECURITY_KEY_PREFIXES = ("CHAP_", "SRP_", "KRB_", "SPKM_", "TargetAuth")


def is_extension_key(name: str) -> bool:
    """Vendor (X-) and IANA-registered (X#) extension keys: we understand none."""
    return name.startswith(("X-", "X#"))


def is_security_key(name: str) -> bool:
    return name.startswith(SECURITY_KEY_PREFIXES)


# ---------------------------------------------------------------------------
# Value parsing (RFC 7143 6.1: decimal, 0x hex, 0b base64 numbers).

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,20}")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,16}")


def parse_number(text: str) -> int | None:
    """A numerical value, or None when it is not one (64-bit values at most)."""
    if _DECIMAL.fullmatch(text):
        return int(text)
    if _HEX.fullmatch(text):
        return int(text, 16)
    return None


def parse_bool(text: str) -> bool | None:
    return {"Yes": True, "No": False}.get(text)


def format_bool(value: bool) -> str:
    return "Yes" if value else "No"


_ISCSI_NAME = re.compile(
    r"(iqn\.\d{4}-\d{2}\.[^\s,]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16}(?:[0-9A-Fa-f]{16})?)"
)


def is_iscsi_name(text: str) -> bool:
    """True for a syntactically valid iqn./eui./naa. name (RFC 7143 4.2.7)."""
    return len(text) <= 223 and _ISCSI_NAME.fullmatch(text) is not None


# ---------------------------------------------------------------------------
# Negotiation rules.


def acceptable(spec: KeySpec, value: str) -> bool:
    """Whether ``value`` is a legal value for ``spec`` on its own."""
    if spec.kind is Kind.BOOLEAN:
        return parse_bool(value) is not None
    if spec.kind is Kind.NUMERIC or (spec.kind is Kind.DECLARATIVE and spec.high):
        number = parse_number(value)
        return number is not None and spec.low <= number <= spec.high
    if spec.kind is Kind.LIST:
        return all(v in spec.values for v in value.split(","))
    if spec.values:
        return value in spec.values
    return bool(value)


def respond(spec: KeySpec, offered: str, ours: str) -> str:
    """The responder's answer to ``spec.name=offered`` given our value ``ours``.

    ``ours`` is our preference: for lists, our acceptable values in preference
    order (comma separated); for numbers, our limit; for booleans, our wish.
    Returns the value to answer with (possibly ``Reject``). Declarative keys
    have no answer and must not be passed here.
    """
    if spec.rule is Rule.SELECT:
        supported = set(ours.split(","))
        for value in offered.split(","):
            if value in spec.values and value in supported:
                return value
        return REJECT
    if spec.kind is Kind.BOOLEAN:
        theirs, mine = parse_bool(offered), parse_bool(ours)
        if theirs is None or mine is None:
            return REJECT
        return format_bool(theirs or mine if spec.rule is Rule.OR else theirs and mine)
    if spec.kind is Kind.NUMERIC:
        theirs_n, mine_n = parse_number(offered), parse_number(ours)
        if theirs_n is None or mine_n is None or not spec.low <= theirs_n <= spec.high:
            return REJECT
        return str(min(theirs_n, mine_n) if spec.rule is Rule.MIN else max(theirs_n, mine_n))
    raise ValueError(f"{spec.name} is declarative: nothing to answer")


def combine_answer(spec: KeySpec, offered: str, answer: str) -> str | None:
    """The value in force after we offered ``offered`` and the peer answered.

    None when the answer breaks the rule (e.g. a MIN answer above our offer, a
    list answer we never offered): the negotiation has failed. Reject and
    Irrelevant leave the default in force.
    """
    if answer in (REJECT, IRRELEVANT, NOT_UNDERSTOOD):
        return spec.default
    if spec.rule is Rule.SELECT:
        return answer if answer in offered.split(",") else None
    if spec.kind is Kind.BOOLEAN:
        theirs, mine = parse_bool(answer), parse_bool(offered)
        if theirs is None or mine is None:
            return None
        expected = (theirs or mine) if spec.rule is Rule.OR else (theirs and mine)
        return format_bool(theirs) if theirs == expected else None
    if spec.kind is Kind.NUMERIC:
        theirs_n, mine_n = parse_number(answer), parse_number(offered)
        if theirs_n is None or mine_n is None or not spec.low <= theirs_n <= spec.high:
            return None
        if spec.rule is Rule.MIN and theirs_n > mine_n:
            return None
        if spec.rule is Rule.MAX and theirs_n < mine_n:
            return None
        return str(theirs_n)
    return None


def default_acceptable(spec: KeySpec, ours: str) -> bool:
    """Would the RFC default be acceptable to us if the peer never sends the key?

    When it is not, the target has to offer the key itself.
    """
    if spec.default is None or spec.kind in (Kind.DECLARATIVE, Kind.STRING):
        return True
    if spec.rule is Rule.SELECT:
        return spec.default in ours.split(",")
    if spec.kind is Kind.BOOLEAN:
        # "ours" is what we can live with: for OR a "No" and for AND a "Yes" mean
        # we accept either outcome.
        either = "No" if spec.rule is Rule.OR else "Yes"
        return spec.default == ours or ours == either
    default, limit = parse_number(spec.default), parse_number(ours)
    if default is None or limit is None:
        return True
    return default <= limit if spec.rule is Rule.MIN else default >= limit


# ---------------------------------------------------------------------------
# The negotiated result.


@attrs.frozen
class SessionParams:
    """Operational parameters in force for a session (and its one connection).

    ``initiator_max_recv_data_segment_length`` bounds every PDU data segment
    we send; ``target_max_recv_data_segment_length`` is what we declared we
    accept.
    """

    session_type: str = "Normal"
    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    task_reporting: str = "RFC3720"
    iscsi_protocol_level: int = 1
    initiator_max_recv_data_segment_length: int = 8192
    target_max_recv_data_segment_length: int = 8192


_FIELD_OF_KEY: Mapping[str, str] = MappingProxyType(
    {
        "SessionType": "session_type",
        "HeaderDigest": "header_digest",
        "DataDigest": "data_digest",
        "MaxConnections": "max_connections",
        "InitialR2T": "initial_r2t",
        "ImmediateData": "immediate_data",
        "MaxBurstLength": "max_burst_length",
        "FirstBurstLength": "first_burst_length",
        "DefaultTime2Wait": "default_time2wait",
        "DefaultTime2Retain": "default_time2retain",
        "MaxOutstandingR2T": "max_outstanding_r2t",
        "DataPDUInOrder": "data_pdu_in_order",
        "DataSequenceInOrder": "data_sequence_in_order",
        "ErrorRecoveryLevel": "error_recovery_level",
        "TaskReporting": "task_reporting",
        "iSCSIProtocolLevel": "iscsi_protocol_level",
    }
)


def build_session_params(
    values: Mapping[str, str], initiator_mrdsl: int, target_mrdsl: int
) -> SessionParams:
    """Turn negotiated string values into a typed record (defaults for the rest).

    Enforces FirstBurstLength <= MaxBurstLength (RFC 7143 13.14).
    """
    fields: dict[str, object] = {}
    for key, field in _FIELD_OF_KEY.items():
        if key not in values:
            continue
        raw = values[key]
        spec = KEYS[key]
        value: object
        if key in ("HeaderDigest", "DataDigest"):
            value = raw == "CRC32C"
        elif spec.kind is Kind.BOOLEAN:
            value = parse_bool(raw)
        elif spec.kind is Kind.NUMERIC:
            value = parse_number(raw)
        else:
            value = raw
        if value is not None:
            fields[field] = value
    params = SessionParams(
        initiator_max_recv_data_segment_length=initiator_mrdsl,
        target_max_recv_data_segment_length=target_mrdsl,
        **fields,  # type: ignore[arg-type]
    )
    if params.first_burst_length > params.max_burst_length:
        params = attrs.evolve(params, first_burst_length=params.max_burst_length)
    return params
