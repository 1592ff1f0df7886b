"""Target-side iSCSI login: a sans-I/O state machine (RFC 7143 6, 11.12, 11.13).

One :class:`LoginMachine` lives for one connection's login phase. The lead's
connection code decodes each Login Request PDU into a :class:`LoginRequest`,
calls :meth:`LoginMachine.receive`, and encodes the :class:`LoginReply` it gets
back; nothing here touches sockets, clocks or session tables, so every rule of
the dialogue (stages, the T and C bits, key negotiation, identity checks,
pending target offers) can be exercised by plain unit tests. What the target
offers and who may log in comes from a :class:`TargetPolicy`; authentication
is a pluggable :class:`Authenticator` (``AuthMethod=None`` here, CHAP in
``auth.py``/``chap.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import attrs

from pyscst.transports.iscsi.params import (
    IRRELEVANT,
    ISER_KEYS,
    KEYS,
    NOT_UNDERSTOOD,
    REJECT,
    SPECIAL_ANSWERS,
    Kind,
    Phase,
    Rule,
    Sender,
    SessionParams,
    build_session_params,
    combine_answer,
    default_acceptable,
    is_extension_key,
    is_iscsi_name,
    is_security_key,
    parse_number,
    respond,
)
from pyscst.transports.iscsi.textkeys import TextKeyError, decode_text, encode_text

SECURITY_STAGE = 0
OPERATIONAL_STAGE = 1
FULL_FEATURE_PHASE = 3

#: The only iSCSI version there is (RFC 7143 11.12.4).
ISCSI_VERSION = 0
#: Login PDUs carry at most 8192 bytes of text (RFC 7143 6.1 / 13.12 default).
LOGIN_SEGMENT_LIMIT = 8192


class LoginStatus(enum.IntEnum):
    """Status-Class << 8 | Status-Detail of a Login Response (RFC 7143 11.13.5)."""

    SUCCESS = 0x0000
    TARGET_MOVED_TEMPORARILY = 0x0101
    TARGET_MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302


@attrs.frozen
class TargetOffer:
    """What the target offers in login negotiation for the keys the ``[iscsi]``
    table configures, turned into key values in one place (``limits``) for the
    daemon and for a bare ``TargetPolicy`` (``DEFAULT_LIMITS``). The config
    model (admin.config.model.IscsiSettings) keeps its own copy of these
    defaults, because ``pyscst admin`` loads the model and must not load the
    transport (import contract); tests/unit/supervision/test_iscsi_limits.py
    pins the two equal."""

    max_recv_data_segment_length: int = 262144
    max_burst_length: int = 1048576
    first_burst_length: int = 65536
    initial_r2t: bool = False
    immediate_data: bool = True
    max_outstanding_r2t: int = 1
    max_connections: int = 1
    default_time2wait: int = 2
    default_time2retain: int = 20
    #: accepted digests, in order of preference
    header_digest: tuple[str, ...] = ("None", "CRC32C")
    data_digest: tuple[str, ...] = ("None", "CRC32C")

    def limits(self) -> dict[str, str]:
        """The RFC 7143 key values offered (plus the ones this target fixes)."""

        def yes(flag: bool) -> str:
            return "Yes" if flag else "No"

        return {
            "HeaderDigest": ",".join(self.header_digest),
            "DataDigest": ",".join(self.data_digest),
            "MaxConnections": str(self.max_connections),
            "InitialR2T": yes(self.initial_r2t),
            "ImmediateData": yes(self.immediate_data),
            "MaxRecvDataSegmentLength": str(self.max_recv_data_segment_length),
            "MaxBurstLength": str(self.max_burst_length),
            "FirstBurstLength": str(self.first_burst_length),
            "DefaultTime2Wait": str(self.default_time2wait),
            "DefaultTime2Retain": str(self.default_time2retain),
            "MaxOutstandingR2T": str(self.max_outstanding_r2t),
            "DataPDUInOrder": "Yes",
            "DataSequenceInOrder": "Yes",
            "ErrorRecoveryLevel": "0",
            "TaskReporting": "RFC3720",
            "iSCSIProtocolLevel": "1",
        }


#: What the target offers unless told otherwise.
DEFAULT_LIMITS: Mapping[str, str] = MappingProxyType(TargetOffer().limits())

# Keys that identify the nexus: declared once by the initiator, never answered.
_IDENTITY_KEYS = frozenset({"InitiatorName", "TargetName", "SessionType", "InitiatorAlias"})


# ---------------------------------------------------------------------------
# Records crossing the boundary.


@attrs.frozen
class LoginRequest:
    """The fields of one Login Request PDU the machine needs."""

    transit: bool
    cont: bool
    csg: int
    nsg: int
    version_max: int
    version_min: int
    isid: int
    tsih: int
    itt: int
    cid: int
    cmdsn: int
    expstatsn: int
    data: bytes


@attrs.frozen
class LoginResult:
    """What a successful login established, for the lead to build a session."""

    session_type: str
    initiator_name: str
    initiator_alias: str | None
    target_name: str | None
    isid: int
    tsih: int  # allocated (leading login) or the existing session's (connection addition)
    leading: bool  # True: a new session (TSIH was 0); False: a connection joins `tsih`
    cid: int
    params: SessionParams
    initial_cmdsn: int  # CmdSN of the last login request == first ExpCmdSN in FFP
    exp_statsn: int
    auth_method: str

    @property
    def header_digest(self) -> bool:
        return self.params.header_digest

    @property
    def data_digest(self) -> bool:
        return self.params.data_digest


@attrs.frozen
class LoginReply:
    """The fields of one Login Response PDU (StatSN/ExpCmdSN/MaxCmdSN are the lead's)."""

    transit: bool
    cont: bool
    csg: int
    nsg: int
    version_max: int
    version_active: int
    isid: int
    tsih: int
    itt: int
    status_class: int
    status_detail: int
    data: bytes
    done: bool  # FFP reached, or failed: either way the login machine is finished
    failed: bool
    result: LoginResult | None
    reason: str = ""  # why it failed, for the log

    @property
    def status(self) -> LoginStatus:
        return LoginStatus((self.status_class << 8) | self.status_detail)


@attrs.frozen
class ConnectionJoin:
    """A login with TSIH != 0: a connection asks to join an existing session."""

    initiator_name: str
    target_name: str | None
    isid: int
    tsih: int
    cid: int


# ---------------------------------------------------------------------------
# Authentication hook.


@attrs.frozen
class AuthStep:
    """The authenticator's answer to one request's security keys."""

    pairs: tuple[tuple[str, str], ...] = ()
    complete: bool = False
    failure: LoginStatus | None = None


class Authenticator(Protocol):
    """Security-stage strategy: CHAP etc. plug in here."""

    def methods(self) -> tuple[str, ...]:
        """AuthMethod values we accept, in our preference order."""
        ...

    def start(self, method: str, initiator_name: str, target_name: str | None) -> AuthStep:
        """The method was just selected; return keys to add (e.g. CHAP_A offer)."""
        ...

    def step(self, pairs: list[tuple[str, str]]) -> AuthStep:
        """Security keys (CHAP_*, ...) of one request, in order."""
        ...


class NoAuthentication:
    """``AuthMethod=None``: nothing to verify, every security key is foreign."""

    def methods(self) -> tuple[str, ...]:
        return ("None",)

    def start(self, method: str, initiator_name: str, target_name: str | None) -> AuthStep:
        return AuthStep(complete=True)

    def step(self, pairs: list[tuple[str, str]]) -> AuthStep:
        return AuthStep(tuple((k, NOT_UNDERSTOOD) for k, _ in pairs), complete=True)


def _no_alias(target_name: str) -> str | None:
    return None


def _no_sessions(join: ConnectionJoin) -> int:
    return LoginStatus.SESSION_DOES_NOT_EXIST


@attrs.frozen
class TargetPolicy:
    """What the target offers and whom it admits; supplied by the lead."""

    #: the named target's portal group tag: the same one SendTargets reports for it
    portal_group_tag: Callable[[str], int]
    target_exists: Callable[[str], bool]
    initiator_allowed: Callable[[str, str], bool]
    allocate_tsih: Callable[[], int]
    limits: Mapping[str, str] = attrs.field(factory=lambda: dict(DEFAULT_LIMITS))
    discovery_allowed: bool = True
    target_alias: Callable[[str], str | None] = _no_alias
    #: TSIH != 0 logins: return a LoginStatus (0 to accept the connection).
    join_session: Callable[[ConnectionJoin], int] = _no_sessions
    authenticator: Callable[[], Authenticator] = NoAuthentication
    #: When set, replaces ``authenticator`` once the first request has named the
    #: initiator, the target (None for discovery) and the session type: each
    #: target (and discovery) may demand its own method and credentials.
    auth_for: Callable[[str, str | None, str], Authenticator] | None = None
    #: Upper bound on one login's accumulated (C-bit) request text.
    max_text_bytes: int = 65536
    #: Split response text into chunks of at most this many bytes.
    max_response_segment: int = LOGIN_SEGMENT_LIMIT

    def limit(self, key: str) -> str | None:
        value = self.limits.get(key)
        if value is None:
            value = DEFAULT_LIMITS.get(key)
        return value


class LoginFailed(Exception):
    """Internal: abort the login with a status."""

    def __init__(self, status: LoginStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@attrs.frozen
class _Decision:
    """Header bits for the reply that carries the last chunk of response text."""

    transit: bool
    csg: int
    nsg: int


# ---------------------------------------------------------------------------
# The machine.


class LoginMachine:
    """Target side of one connection's login: one request in, one reply out."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._auth = policy.authenticator()
        self._stage: int | None = None  # CSG the next request must carry
        self._first = True  # no complete request text seen yet
        self._finished = False
        self._ident: tuple[int, int, int] | None = None  # isid, tsih, cid
        self._rx = bytearray()
        self._tx = b""  # response text still to send (C bit)
        self._pending: _Decision | None = None
        self._seen: dict[str, str] = {}
        self._values: dict[str, str] = {}
        self._offers: dict[str, str] = {}
        self._offered_once = False
        self._extras_sent = False
        self._declared_mrdsl = False
        self._initiator_mrdsl = 8192
        self._initiator_name = ""
        self._initiator_alias: str | None = None
        self._target_name: str | None = None
        self._session_type = "Normal"
        self._auth_method: str | None = None
        self._auth_done = False

    # -- public -------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def pending_offers(self) -> Mapping[str, str]:
        """Keys the target offered that the initiator has not answered yet."""
        return MappingProxyType(dict(self._offers))

    def receive(self, req: LoginRequest) -> LoginReply:
        try:
            return self._receive(req)
        except LoginFailed as failure:
            self._finished = True
            return self._reply(
                req,
                transit=False,
                cont=False,
                csg=req.csg,
                nsg=0,
                data=b"",
                status=failure.status,
                reason=failure.reason,
            )

    # -- one request ----------------------------------------------------------

    def _receive(self, req: LoginRequest) -> LoginReply:
        if self._finished:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "login already finished")
        self._check_header(req)

        if self._tx:  # we are sending continuation text: expect empty requests
            if req.data or req.cont:
                raise LoginFailed(
                    LoginStatus.INITIATOR_ERROR, "text sent while the target was continuing"
                )
            return self._emit(req)

        self._rx += req.data
        if len(self._rx) > self._policy.max_text_bytes:
            raise LoginFailed(
                LoginStatus.OUT_OF_RESOURCES,
                f"login text exceeds {self._policy.max_text_bytes} bytes",
            )
        if req.cont:  # more text follows: acknowledge with an empty response
            return self._reply(req, transit=False, cont=False, csg=req.csg, nsg=0, data=b"")

        text, self._rx = bytes(self._rx), bytearray()
        try:
            pairs = decode_text(text)
        except TextKeyError as exc:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"malformed text: {exc}") from exc

        if self._first:
            self._first = False
            self._identify(req, pairs)
        answers = self._negotiate(req, pairs)
        self._tx = encode_text(answers)
        self._pending = self._decide(req)
        return self._emit(req)

    def _check_header(self, req: LoginRequest) -> None:
        if req.version_min > ISCSI_VERSION:
            raise LoginFailed(
                LoginStatus.UNSUPPORTED_VERSION,
                f"version range {req.version_min}..{req.version_max} excludes {ISCSI_VERSION}",
            )
        ident = (req.isid, req.tsih, req.cid)
        if self._ident is None:
            self._ident = ident
        elif ident != self._ident:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "ISID/TSIH/CID changed during login")
        expected = self._stage
        if req.csg not in (SECURITY_STAGE, OPERATIONAL_STAGE) or (
            expected is not None and req.csg != expected
        ):
            raise LoginFailed(
                LoginStatus.INITIATOR_ERROR, f"CSG {req.csg} not valid here (expected {expected})"
            )
        if req.transit and req.cont:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "T and C both set")
        if req.transit and (
            req.nsg not in (OPERATIONAL_STAGE, FULL_FEATURE_PHASE) or req.nsg <= req.csg
        ):
            raise LoginFailed(
                LoginStatus.INITIATOR_ERROR, f"illegal transition {req.csg} -> {req.nsg}"
            )
        if self._stage is None:
            self._stage = req.csg

    # -- identity (first request) --------------------------------------------

    def _identify(self, req: LoginRequest, pairs: list[tuple[str, str]]) -> None:
        first: dict[str, str] = {}
        for key, value in pairs:
            if key in _IDENTITY_KEYS and key not in first:
                first[key] = value
        name = first.get("InitiatorName")
        if not name:
            raise LoginFailed(LoginStatus.MISSING_PARAMETER, "InitiatorName missing")
        self._initiator_name = name
        self._initiator_alias = first.get("InitiatorAlias")
        session_type = first.get("SessionType", "Normal")
        if session_type not in ("Normal", "Discovery"):
            raise LoginFailed(
                LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType={session_type}"
            )
        if session_type == "Discovery" and not self._policy.discovery_allowed:
            raise LoginFailed(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, "discovery disabled")
        self._session_type = session_type

        target = first.get("TargetName")
        if session_type == "Normal":
            if not target:
                raise LoginFailed(LoginStatus.MISSING_PARAMETER, "TargetName missing")
            if not self._policy.target_exists(target):
                raise LoginFailed(LoginStatus.NOT_FOUND, f"no target {target}")
            if not self._policy.initiator_allowed(name, target):
                raise LoginFailed(
                    LoginStatus.AUTHORIZATION_FAILURE, f"{name} may not log in to {target}"
                )
            self._target_name = target
        if req.tsih:
            if session_type != "Normal":
                raise LoginFailed(
                    LoginStatus.INITIATOR_ERROR, "a discovery session has one connection"
                )
            status = self._policy.join_session(
                ConnectionJoin(name, self._target_name, req.isid, req.tsih, req.cid)
            )
            if status:
                raise LoginFailed(LoginStatus(status), f"cannot join session {req.tsih:#x}")
        if self._policy.auth_for is not None:
            self._auth = self._policy.auth_for(name, self._target_name, session_type)
        if req.csg == OPERATIONAL_STAGE and "None" not in self._auth.methods():
            raise LoginFailed(
                LoginStatus.AUTHENTICATION_FAILURE, "authentication required: security skipped"
            )

    # -- key negotiation ------------------------------------------------------

    @property
    def _leading(self) -> bool:
        return self._ident is not None and self._ident[1] == 0

    def _negotiate(self, req: LoginRequest, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            dup = next(k for k in names if names.count(k) > 1)
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"key {dup} sent twice")

        answers: list[tuple[str, str]] = []
        security: list[tuple[str, str]] = []
        for key, value in pairs:
            if key in self._offers:
                self._take_answer(key, value)
                continue
            if key in self._seen:
                if key in _IDENTITY_KEYS and self._seen[key] == value:
                    continue  # a harmless re-declaration (libiscsi re-sends these)
                raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"key {key} negotiated twice")
            self._seen[key] = value
            if value in SPECIAL_ANSWERS:
                continue  # an answer to nothing we asked: ignore
            answer = self._answer(req, key, value, security)
            if answer is not None:
                answers.append((key, answer))

        if key_answers := self._security(req, security):
            answers.extend(key_answers)
        self._clamp_first_burst(answers)

        answers.extend(self._first_response_extras())
        if req.csg == OPERATIONAL_STAGE or "MaxRecvDataSegmentLength" in names:
            if not self._declared_mrdsl:
                self._declared_mrdsl = True
                answers.append(("MaxRecvDataSegmentLength", str(self._target_mrdsl())))
        if req.csg == OPERATIONAL_STAGE and not self._offered_once:
            self._offered_once = True
            answers.extend(self._make_offers())
        return answers

    def _answer(
        self, req: LoginRequest, key: str, value: str, security: list[tuple[str, str]]
    ) -> str | None:
        """The answer to one initiator key, or None when nothing is answered."""
        if is_extension_key(key):
            return NOT_UNDERSTOOD
        if key == "AuthMethod" or is_security_key(key):
            if req.csg != SECURITY_STAGE:
                if key == "AuthMethod":
                    return IRRELEVANT
                raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"{key} outside security stage")
            security.append((key, value))
            return None
        spec = KEYS.get(key)
        if spec is None:
            return NOT_UNDERSTOOD
        if key in _IDENTITY_KEYS:
            return None
        if key in ISER_KEYS:
            return IRRELEVANT
        if spec.obsolete:
            return REJECT  # RFC 7143 13.25
        if not spec.sender & Sender.INITIATOR or spec.phase is Phase.FFP:
            return REJECT
        if spec.phase is Phase.LEADING_ONLY and not self._leading:
            return IRRELEVANT
        if self._session_type == "Discovery" and not spec.relevant_in_discovery:
            return IRRELEVANT
        if key == "MaxRecvDataSegmentLength":
            number = parse_number(value)
            if number is None or not spec.low <= number <= spec.high:
                return REJECT
            self._initiator_mrdsl = number
            return None
        ours = "No" if key == "RDMAExtensions" else self._policy.limit(key)
        if ours is None or spec.rule is Rule.DECLARE:
            return REJECT
        answer = respond(spec, value, ours)
        if answer != REJECT:
            self._values[key] = answer
        return answer

    def _clamp_first_burst(self, answers: list[tuple[str, str]]) -> None:
        """Keep FirstBurstLength <= MaxBurstLength in what we answer."""
        mbl = parse_number(self._values.get("MaxBurstLength", "262144")) or 262144
        fbl = parse_number(self._values.get("FirstBurstLength", "65536")) or 65536
        if fbl <= mbl:
            return
        self._values["FirstBurstLength"] = str(mbl)
        for i, (key, _) in enumerate(answers):
            if key == "FirstBurstLength":
                answers[i] = (key, str(mbl))

    def _take_answer(self, key: str, value: str) -> None:
        offered = self._offers.pop(key)
        result = combine_answer(KEYS[key], offered, value)
        if result is None:
            raise LoginFailed(
                LoginStatus.INITIATOR_ERROR, f"bad answer {key}={value} to offer {offered}"
            )
        self._values[key] = result

    def _needed_offers(self) -> list[tuple[str, str]]:
        """Keys the initiator left out whose RFC default we cannot accept."""
        offers: list[tuple[str, str]] = []
        for spec in KEYS.values():
            key = spec.name
            if (
                key in self._seen
                or key in self._values
                or key in self._offers
                or spec.obsolete
                or spec.kind not in (Kind.LIST, Kind.BOOLEAN, Kind.NUMERIC)
                or spec.phase not in (Phase.LEADING_ONLY, Phase.INITIALIZE)
                or (spec.phase is Phase.LEADING_ONLY and not self._leading)
                or (self._session_type == "Discovery" and not spec.relevant_in_discovery)
            ):
                continue
            ours = self._policy.limit(key)
            if ours is not None and not default_acceptable(spec, ours):
                offers.append((key, ours))
        return offers

    def _make_offers(self) -> list[tuple[str, str]]:
        offers = self._needed_offers()
        self._offers.update(offers)
        return offers

    def _first_response_extras(self) -> list[tuple[str, str]]:
        """TargetPortalGroupTag (and TargetAlias) open a Normal session's leading login."""
        if self._extras_sent or self._session_type != "Normal" or not self._leading:
            return []
        self._extras_sent = True
        tag = self._policy.portal_group_tag(self._target_name or "")
        extras = [("TargetPortalGroupTag", str(tag))]
        alias = self._policy.target_alias(self._target_name or "")
        if alias:
            extras.append(("TargetAlias", alias))
        return extras

    def _target_mrdsl(self) -> int:
        return parse_number(self._policy.limit("MaxRecvDataSegmentLength") or "8192") or 8192

    # -- security stage -------------------------------------------------------

    def _security(
        self, req: LoginRequest, security: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        answers: list[tuple[str, str]] = []
        rest: list[tuple[str, str]] = []
        for key, value in security:
            if key != "AuthMethod":
                rest.append((key, value))
                continue
            accepted = self._auth.methods()
            chosen = next((m for m in value.split(",") if m in accepted), None)
            if chosen is None:
                raise LoginFailed(
                    LoginStatus.AUTHENTICATION_FAILURE, f"no acceptable AuthMethod in {value}"
                )
            self._auth_method = chosen
            answers.append(("AuthMethod", chosen))
            answers.extend(self._apply(self._auth.start(chosen, self._initiator_name,
                                                        self._target_name)))
        if rest:
            if self._auth_method is None:
                raise LoginFailed(
                    LoginStatus.INITIATOR_ERROR, "security keys before AuthMethod"
                )
            answers.extend(self._apply(self._auth.step(rest)))
        return answers

    def _apply(self, step: AuthStep) -> list[tuple[str, str]]:
        if step.failure is not None:
            raise LoginFailed(step.failure, "authentication failed")
        if step.complete:
            self._auth_done = True
        return list(step.pairs)

    def _security_settled(self) -> bool:
        if self._auth_done:
            return True
        if self._auth_method is None and "None" in self._auth.methods():
            self._auth_method = "None"  # AuthMethod never offered: the default applies
            self._auth_done = True
        return self._auth_done

    # -- transit decision and reply assembly -----------------------------------

    def _decide(self, req: LoginRequest) -> _Decision:
        if not req.transit:
            return _Decision(False, req.csg, 0)
        if req.csg == SECURITY_STAGE and not self._security_settled():
            return _Decision(False, req.csg, 0)
        if self._offers:
            return _Decision(False, req.csg, 0)
        nsg = req.nsg
        if req.csg == SECURITY_STAGE and nsg == FULL_FEATURE_PHASE and self._needed_offers():
            nsg = OPERATIONAL_STAGE  # skip not allowed: we have keys to offer first
        return _Decision(True, req.csg, nsg)

    def _emit(self, req: LoginRequest) -> LoginReply:
        limit = self._policy.max_response_segment
        chunk, self._tx = self._tx[:limit], self._tx[limit:]
        if self._tx:  # more to come: C=1, no transit yet
            return self._reply(req, transit=False, cont=True, csg=req.csg, nsg=0, data=chunk)
        decision = self._pending or _Decision(False, req.csg, 0)
        self._pending = None
        if not decision.transit:
            return self._reply(req, transit=False, cont=False, csg=decision.csg, nsg=0, data=chunk)
        if decision.nsg != FULL_FEATURE_PHASE:
            self._stage = decision.nsg
            return self._reply(
                req, transit=True, cont=False, csg=decision.csg, nsg=decision.nsg, data=chunk
            )
        tsih = self._policy.allocate_tsih() if self._leading else req.tsih
        self._finished = True
        result = self._result(req, tsih)
        return self._reply(
            req,
            transit=True,
            cont=False,
            csg=decision.csg,
            nsg=FULL_FEATURE_PHASE,
            data=chunk,
            tsih=tsih,
            result=result,
        )

    def _result(self, req: LoginRequest, tsih: int) -> LoginResult:
        values = dict(self._values)
        values["SessionType"] = self._session_type
        target_mrdsl = self._target_mrdsl() if self._declared_mrdsl else 8192
        params = build_session_params(values, self._initiator_mrdsl, target_mrdsl)
        return LoginResult(
            session_type=self._session_type,
            initiator_name=self._initiator_name,
            initiator_alias=self._initiator_alias,
            target_name=self._target_name,
            isid=req.isid,
            tsih=tsih,
            leading=self._leading,
            cid=req.cid,
            params=params,
            initial_cmdsn=req.cmdsn,
            exp_statsn=req.expstatsn,
            auth_method=self._auth_method or "None",
        )

    def _reply(
        self,
        req: LoginRequest,
        *,
        transit: bool,
        cont: bool,
        csg: int,
        nsg: int,
        data: bytes,
        status: LoginStatus = LoginStatus.SUCCESS,
        reason: str = "",
        tsih: int | None = None,
        result: LoginResult | None = None,
    ) -> LoginReply:
        failed = status != LoginStatus.SUCCESS
        return LoginReply(
            transit=transit,
            cont=cont,
            csg=csg,
            nsg=nsg,
            version_max=ISCSI_VERSION,
            version_active=ISCSI_VERSION,
            isid=req.isid,
            tsih=req.tsih if tsih is None else tsih,
            itt=req.itt,
            status_class=status >> 8,
            status_detail=status & 0xFF,
            data=data,
            done=failed or result is not None,
            failed=failed,
            result=result,
            reason=reason,
        )


# ---------------------------------------------------------------------------
# Text requests in full feature phase (SendTargets, renegotiation).

#: (target name, ["address:port,tpgt", ...]) as SendTargets reports them.
TargetRecord = tuple[str, list[str]]

# Keys that may still be exchanged in full feature phase (declaratives: no answer).
_FFP_DECLARATIONS = frozenset({"MaxRecvDataSegmentLength", "InitiatorAlias"})


def answer_text(
    keys: list[tuple[str, str]],
    session_type: str,
    send_targets: Callable[[str], list[TargetRecord]],
) -> list[tuple[str, str]]:
    """Answer the keys of one full-feature-phase Text Request.

    ``SendTargets=All``, ``=<iSCSI name>`` and ``=`` (empty: the session's own
    target) call ``send_targets`` with that value and list each target as
    ``TargetName`` followed by its ``TargetAddress`` pairs; any other value is
    answered ``SendTargets=Reject``. Keys only negotiable at login are answered
    ``Reject``, unknown and extension keys ``NotUnderstood``; declarative keys
    (a new MaxRecvDataSegmentLength, see :func:`text_declarations`) need no
    answer. ``session_type`` is accepted for symmetry with login; which targets
    a Normal session may see is ``send_targets``' business.
    """
    del session_type  # the RFC lets both session types ask; visibility is the caller's
    answers: list[tuple[str, str]] = []
    for key, value in keys:
        if key == "SendTargets":
            if value in ("All", "") or is_iscsi_name(value):
                for name, addresses in send_targets(value):
                    answers.append(("TargetName", name))
                    answers.extend(("TargetAddress", address) for address in addresses)
            else:
                answers.append((key, REJECT))
            continue
        if value in SPECIAL_ANSWERS or key in _FFP_DECLARATIONS:
            continue
        if is_extension_key(key) or is_security_key(key) or key not in KEYS:
            answers.append((key, NOT_UNDERSTOOD))
        else:
            answers.append((key, REJECT))
    return answers


def text_declarations(keys: list[tuple[str, str]]) -> dict[str, int | str]:
    """Valid declarations a full-feature-phase Text Request makes (RFC 7143 13.12).

    Currently the initiator's new MaxRecvDataSegmentLength (an int) and
    InitiatorAlias; the caller applies them to the connection.
    """
    out: dict[str, int | str] = {}
    for key, value in keys:
        if key == "MaxRecvDataSegmentLength":
            number = parse_number(value)
            spec = KEYS[key]
            if number is not None and spec.low <= number <= spec.high:
                out[key] = number
        elif key == "InitiatorAlias" and value:
            out[key] = value
    return out


def split_text(data: bytes, limit: int) -> list[bytes]:
    """Cut an encoded text answer into PDU-sized pieces (C bit on all but the last).

    A key=value pair may straddle two pieces (RFC 7143 6.1 allows it; the
    receiver reassembles before decoding). Empty text gives one empty piece.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    if not data:
        return [b""]
    return [data[i : i + limit] for i in range(0, len(data), limit)]
