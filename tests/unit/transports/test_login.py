"""Login negotiation: key rules (params.py), the login dialogue and FFP text answers."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyscst.transports.iscsi.login import (
    DEFAULT_LIMITS,
    AuthStep,
    ConnectionJoin,
    LoginMachine,
    LoginReply,
    LoginRequest,
    LoginStatus,
    TargetPolicy,
    answer_text,
    split_text,
    text_declarations,
)
from pyscst.transports.iscsi.params import (
    KEYS,
    REJECT,
    Kind,
    Rule,
    build_session_params,
    combine_answer,
    default_acceptable,
    is_iscsi_name,
    parse_number,
    respond,
)
from pyscst.transports.iscsi.textkeys import decode_text, encode_text

TARGET = "iqn.2024-01.org.pyscst:disk1"
INITIATOR = "iqn.2024-01.org.test:host"

# What libiscsi sends in its single operational-stage PDU (lib/login.c).
LIBISCSI_OPERATIONAL = [
    ("HeaderDigest", "None,CRC32C"),
    ("DataDigest", "None"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "262144"),
    ("FirstBurstLength", "262144"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("MaxOutstandingR2T", "1"),
    ("ErrorRecoveryLevel", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("MaxConnections", "1"),
    ("MaxRecvDataSegmentLength", "262144"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
]


# -- helpers -------------------------------------------------------------------------


def make_policy(**overrides: object) -> TargetPolicy:
    tsihs = iter(range(0x10, 0x1000))
    fields: dict[str, object] = {
        "portal_group_tag": 1,
        "target_exists": lambda name: name == TARGET,
        "initiator_allowed": lambda ini, tgt: ini == INITIATOR,
        "allocate_tsih": lambda: next(tsihs),
    }
    fields.update(overrides)
    return TargetPolicy(**fields)  # type: ignore[arg-type]


def req(
    pairs: list[tuple[str, str]] | bytes = (),  # type: ignore[assignment]
    *,
    transit: bool = True,
    cont: bool = False,
    csg: int = 1,
    nsg: int = 3,
    tsih: int = 0,
    version_min: int = 0,
    isid: int = 0x23D000000001,
    cid: int = 0,
    cmdsn: int = 77,
) -> LoginRequest:
    data = pairs if isinstance(pairs, bytes) else encode_text(list(pairs))
    return LoginRequest(
        transit=transit,
        cont=cont,
        csg=csg,
        nsg=nsg,
        version_max=0,
        version_min=version_min,
        isid=isid,
        tsih=tsih,
        itt=5,
        cid=cid,
        cmdsn=cmdsn,
        expstatsn=0,
        data=data,
    )


def identity(session_type: str = "Normal") -> list[tuple[str, str]]:
    pairs = [("InitiatorName", INITIATOR), ("SessionType", session_type)]
    if session_type == "Normal":
        pairs.insert(1, ("TargetName", TARGET))
    return pairs


def keys_of(reply: LoginReply) -> dict[str, str]:
    pairs = decode_text(reply.data)
    assert len({k for k, _ in pairs}) == len(pairs), "response repeats a key"
    return dict(pairs)


def assert_failed(reply: LoginReply, status: LoginStatus) -> None:
    assert reply.failed and reply.done and reply.result is None
    assert reply.status is status, reply.reason
    assert not reply.transit


# -- key rules (params.py) -----------------------------------------------------------

NUMERIC = [s for s in KEYS.values() if s.kind is Kind.NUMERIC and not s.obsolete]
BOOLEAN = [s for s in KEYS.values() if s.kind is Kind.BOOLEAN and not s.obsolete]


@given(data=st.data(), spec=st.sampled_from(NUMERIC))
def test_numeric_answer_within_both_limits(data: st.DataObject, spec: object) -> None:
    assert isinstance(spec, type(NUMERIC[0]))
    theirs = data.draw(st.integers(spec.low, spec.high))
    ours = data.draw(st.integers(spec.low, spec.high))
    answer = int(respond(spec, str(theirs), str(ours)))
    assert spec.low <= answer <= spec.high
    if spec.rule is Rule.MIN:
        assert answer <= theirs and answer <= ours and answer in (theirs, ours)
    else:
        assert answer >= theirs and answer >= ours and answer in (theirs, ours)
    # symmetric: swapping the two sides gives the same result
    assert int(respond(spec, str(ours), str(theirs))) == answer
    # the originator accepts the answer it gets
    assert combine_answer(spec, str(theirs), str(answer)) == str(answer)


@given(data=st.data(), spec=st.sampled_from(NUMERIC))
def test_numeric_out_of_range_or_garbage_is_rejected(data: st.DataObject, spec: object) -> None:
    assert isinstance(spec, type(NUMERIC[0]))
    bad = data.draw(
        st.one_of(
            st.integers(spec.high + 1, spec.high + 2**40).map(str),
            st.integers(max_value=-1).map(str),
            st.text(alphabet="abcxyz-+ ", min_size=1, max_size=5),
        )
    )
    if spec.low > 0:
        bad = data.draw(st.sampled_from([bad, str(spec.low - 1)]))
    assert respond(spec, bad, str(spec.high)) == REJECT


@given(spec=st.sampled_from(BOOLEAN), theirs=st.booleans(), ours=st.booleans())
def test_boolean_and_or(spec: object, theirs: bool, ours: bool) -> None:
    assert isinstance(spec, type(BOOLEAN[0]))
    yn = {True: "Yes", False: "No"}
    answer = respond(spec, yn[theirs], yn[ours])
    expected = (theirs or ours) if spec.rule is Rule.OR else (theirs and ours)
    assert answer == yn[expected]
    assert respond(spec, yn[ours], yn[theirs]) == answer
    assert combine_answer(spec, yn[theirs], answer) == answer


@given(
    theirs=st.lists(st.sampled_from(["None", "CRC32C", "CRC64", "md5"]), min_size=1, max_size=4),
    ours=st.lists(st.sampled_from(["None", "CRC32C"]), min_size=1, max_size=2, unique=True),
)
def test_list_selects_first_offered_we_support(theirs: list[str], ours: list[str]) -> None:
    spec = KEYS["HeaderDigest"]
    answer = respond(spec, ",".join(theirs), ",".join(ours))
    common = [v for v in theirs if v in ours]
    assert answer == (common[0] if common else REJECT)


def test_default_acceptable_decides_what_the_target_must_offer() -> None:
    assert not default_acceptable(KEYS["ImmediateData"], "No")  # default Yes, we need No
    assert default_acceptable(KEYS["ImmediateData"], "Yes")
    assert default_acceptable(KEYS["InitialR2T"], "No")  # Yes is always livable
    assert not default_acceptable(KEYS["MaxBurstLength"], "131072")  # default 262144 too big
    assert default_acceptable(KEYS["MaxBurstLength"], "1048576")
    assert not default_acceptable(KEYS["HeaderDigest"], "CRC32C")
    assert default_acceptable(KEYS["HeaderDigest"], "CRC32C,None")


def test_combine_answer_catches_rule_breaking_answers() -> None:
    assert combine_answer(KEYS["MaxBurstLength"], "4096", "8192") is None  # MIN answered higher
    assert combine_answer(KEYS["HeaderDigest"], "CRC32C", "None") is None  # never offered
    assert combine_answer(KEYS["ImmediateData"], "No", "Yes") is None  # AND with No is No
    assert combine_answer(KEYS["ImmediateData"], "No", "Reject") == "Yes"  # default stands


def test_numbers_parse_decimal_and_hex_only() -> None:
    assert parse_number("8192") == 8192
    assert parse_number("0x2000") == 8192
    assert parse_number("08192") is None
    assert parse_number("") is None


def test_session_params_keep_first_burst_within_max_burst() -> None:
    params = build_session_params(
        {"MaxBurstLength": "4096", "FirstBurstLength": "65536", "HeaderDigest": "CRC32C"},
        1024,
        2048,
    )
    assert params.first_burst_length == 4096 and params.max_burst_length == 4096
    assert params.header_digest and not params.data_digest
    assert params.initiator_max_recv_data_segment_length == 1024
    assert params.target_max_recv_data_segment_length == 2048


def test_iscsi_name_syntax() -> None:
    assert is_iscsi_name(TARGET)
    assert is_iscsi_name("eui.02004567A425678D")
    assert is_iscsi_name("naa.52004567BA64678D")
    for bad in ("All", "Alle", "A", "iqn.", "eui.123", "iqn.2024-01.x y"):
        assert not is_iscsi_name(bad)


# -- scripted dialogues --------------------------------------------------------------


def test_straight_to_ffp_like_libiscsi() -> None:
    m = LoginMachine(make_policy())
    reply = m.receive(req(identity() + LIBISCSI_OPERATIONAL))
    assert not reply.failed and reply.done and reply.transit and reply.nsg == 3
    assert reply.tsih == 0x10
    keys = keys_of(reply)
    assert keys["TargetPortalGroupTag"] == "1"
    assert keys["MaxRecvDataSegmentLength"] == DEFAULT_LIMITS["MaxRecvDataSegmentLength"]
    assert keys["HeaderDigest"] == "None"  # initiator's first choice we support
    assert keys["InitialR2T"] == "No" and keys["ImmediateData"] == "Yes"
    assert keys["IFMarker"] == "Reject" and keys["OFMarker"] == "Reject"  # RFC 7143 13.25
    assert "InitiatorName" not in keys and "TargetName" not in keys
    result = reply.result
    assert result is not None
    assert result.leading and result.tsih == 0x10 and result.session_type == "Normal"
    assert result.initiator_name == INITIATOR and result.target_name == TARGET
    assert result.initial_cmdsn == 77
    p = result.params
    assert not p.initial_r2t and p.immediate_data
    assert p.max_burst_length == 262144 and p.first_burst_length == 65536
    assert p.default_time2retain == 0
    assert p.initiator_max_recv_data_segment_length == 262144
    assert p.target_max_recv_data_segment_length == int(DEFAULT_LIMITS["MaxRecvDataSegmentLength"])
    assert m.finished


def test_security_then_operational() -> None:
    m = LoginMachine(make_policy(target_alias=lambda name: "disk one"))
    first = m.receive(req([*identity(), ("AuthMethod", "CHAP,None")], csg=0, nsg=1))
    assert not first.failed and first.transit and (first.csg, first.nsg) == (0, 1)
    keys = keys_of(first)
    assert keys["AuthMethod"] == "None"
    assert keys["TargetPortalGroupTag"] == "1" and keys["TargetAlias"] == "disk one"
    assert "MaxRecvDataSegmentLength" not in keys  # operational keys wait for stage 1
    assert first.tsih == 0 and not first.done

    second = m.receive(req(LIBISCSI_OPERATIONAL, csg=1, nsg=3))
    assert second.done and not second.failed and second.transit
    keys = keys_of(second)
    assert "TargetPortalGroupTag" not in keys  # only in the first response
    assert "MaxRecvDataSegmentLength" in keys
    assert second.result is not None and second.result.auth_method == "None"


def test_security_stage_without_transit_stays_in_security() -> None:
    m = LoginMachine(make_policy())
    r1 = m.receive(req([*identity(), ("AuthMethod", "None")], csg=0, transit=False))
    assert not r1.transit and r1.csg == 0 and not r1.failed
    r2 = m.receive(req([], csg=0, nsg=1))
    assert r2.transit and r2.nsg == 1
    wrong = m.receive(req([], csg=0, nsg=3))  # we already moved on to stage 1
    assert_failed(wrong, LoginStatus.INITIATOR_ERROR)


def test_security_straight_to_ffp() -> None:
    m = LoginMachine(make_policy())
    r = m.receive(req([*identity(), ("AuthMethod", "None")], csg=0, nsg=3))
    assert r.done and not r.failed and (r.csg, r.nsg) == (0, 3)
    assert r.result is not None
    assert r.result.params.initiator_max_recv_data_segment_length == 8192
    assert r.result.params.target_max_recv_data_segment_length == 8192  # never declared


def test_discovery_session() -> None:
    m = LoginMachine(make_policy())
    r = m.receive(req(identity("Discovery") + LIBISCSI_OPERATIONAL))
    assert r.done and not r.failed
    keys = keys_of(r)
    assert "TargetPortalGroupTag" not in keys
    for key in ("InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength",
                "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder", "MaxConnections"):
        assert keys[key] == "Irrelevant", key
    assert keys["HeaderDigest"] == "None"  # still relevant
    assert r.result is not None and r.result.session_type == "Discovery"
    assert r.result.target_name is None


@pytest.mark.parametrize(
    ("pairs", "kwargs", "status"),
    [
        (identity(), {"version_min": 1}, LoginStatus.UNSUPPORTED_VERSION),
        ([("TargetName", TARGET)], {}, LoginStatus.MISSING_PARAMETER),
        ([("InitiatorName", INITIATOR)], {}, LoginStatus.MISSING_PARAMETER),
        (
            [("InitiatorName", INITIATOR), ("TargetName", "iqn.2024-01.org.pyscst:nope")],
            {},
            LoginStatus.NOT_FOUND,
        ),
        (
            [("InitiatorName", "iqn.2024-01.org.evil:host"), ("TargetName", TARGET)],
            {},
            LoginStatus.AUTHORIZATION_FAILURE,
        ),
        ([*identity(), ("SessionType", "Bogus")], {}, LoginStatus.INITIATOR_ERROR),
        ([("InitiatorName", INITIATOR), ("SessionType", "Bogus")], {},
         LoginStatus.SESSION_TYPE_NOT_SUPPORTED),
        ([*identity(), ("MaxBurstLength", "512"), ("MaxBurstLength", "1024")], {},
         LoginStatus.INITIATOR_ERROR),
        (identity(), {"csg": 3}, LoginStatus.INITIATOR_ERROR),
        (identity(), {"csg": 1, "nsg": 1}, LoginStatus.INITIATOR_ERROR),
        (identity(), {"csg": 0, "nsg": 2}, LoginStatus.INITIATOR_ERROR),
        (identity(), {"cont": True, "transit": True}, LoginStatus.INITIATOR_ERROR),
        (b"InitiatorName\x00", {}, LoginStatus.INITIATOR_ERROR),
        (b"InitiatorName=\xff\xfe\x00", {}, LoginStatus.INITIATOR_ERROR),
        (identity(), {"tsih": 0x55}, LoginStatus.SESSION_DOES_NOT_EXIST),
        ([*identity(), ("CHAP_A", "5")], {"csg": 1}, LoginStatus.INITIATOR_ERROR),
    ],
)
def test_failures(
    pairs: list[tuple[str, str]] | bytes, kwargs: dict[str, object], status: LoginStatus
) -> None:
    reply = LoginMachine(make_policy()).receive(req(pairs, **kwargs))  # type: ignore[arg-type]
    assert_failed(reply, status)
    assert reply.data == b""


def test_discovery_can_be_disabled() -> None:
    m = LoginMachine(make_policy(discovery_allowed=False))
    assert_failed(m.receive(req(identity("Discovery"))), LoginStatus.SESSION_TYPE_NOT_SUPPORTED)


def test_machine_refuses_to_continue_after_failure_or_success() -> None:
    m = LoginMachine(make_policy())
    assert m.receive(req(identity())).done
    assert_failed(m.receive(req(identity())), LoginStatus.INITIATOR_ERROR)


def test_isid_change_mid_login_fails() -> None:
    m = LoginMachine(make_policy())
    m.receive(req(identity(), transit=False))
    assert_failed(m.receive(req([], isid=1)), LoginStatus.INITIATOR_ERROR)


def test_connection_addition_uses_join_callback_and_keeps_tsih() -> None:
    joins: list[ConnectionJoin] = []

    def join(j: ConnectionJoin) -> int:
        joins.append(j)
        return 0 if j.tsih == 0x42 else LoginStatus.TOO_MANY_CONNECTIONS

    policy = make_policy(join_session=join, allocate_tsih=lambda: pytest.fail("allocated"))
    r = LoginMachine(policy).receive(
        req([*identity(), ("MaxBurstLength", "4096")], tsih=0x42, cid=3)
    )
    assert r.done and not r.failed and r.tsih == 0x42
    assert keys_of(r)["MaxBurstLength"] == "Irrelevant"  # leading-only key
    assert "TargetPortalGroupTag" not in keys_of(r)
    assert r.result is not None and not r.result.leading and r.result.cid == 3
    assert joins == [ConnectionJoin(INITIATOR, TARGET, 0x23D000000001, 0x42, 3)]

    refused = LoginMachine(policy).receive(req(identity(), tsih=0x43))
    assert_failed(refused, LoginStatus.TOO_MANY_CONNECTIONS)


def test_unknown_extension_obsolete_and_target_only_keys() -> None:
    pairs = [
        *identity(),
        ("X-com.example.Foo", "1"),
        ("FancyKey", "7"),
        ("IFMarkInt", "2048"),
        ("TargetAlias", "mine"),
        ("SendTargets", "All"),
        ("MaxBurstLength", "99999999999"),
        ("ImmediateData", "Maybe"),
        ("RDMAExtensions", "Yes"),
    ]
    r = LoginMachine(make_policy()).receive(req(pairs))
    assert r.done and not r.failed  # none of these fail the login
    keys = keys_of(r)
    assert keys["X-com.example.Foo"] == "NotUnderstood"
    assert keys["FancyKey"] == "NotUnderstood"
    assert keys["IFMarkInt"] == "Reject"
    assert keys["TargetAlias"] == "Reject"
    assert keys["SendTargets"] == "Reject"
    assert keys["MaxBurstLength"] == "Reject"
    assert keys["ImmediateData"] == "Reject"
    assert keys["RDMAExtensions"] == "No"
    assert r.result is not None and r.result.params.max_burst_length == 262144  # default


def test_first_burst_clamped_to_negotiated_max_burst() -> None:
    r = LoginMachine(make_policy()).receive(
        req([*identity(), ("MaxBurstLength", "8192"), ("FirstBurstLength", "65536")])
    )
    keys = keys_of(r)
    assert keys["MaxBurstLength"] == "8192" and keys["FirstBurstLength"] == "8192"
    assert r.result is not None and r.result.params.first_burst_length == 8192


def test_request_continuation_accumulates_across_pdus() -> None:
    text = encode_text(identity() + LIBISCSI_OPERATIONAL)
    cut = text.index(b"Target") + 3  # split inside a key name
    m = LoginMachine(make_policy())
    r1 = m.receive(req(text[:cut], cont=True, transit=False))
    assert not r1.failed and not r1.done and r1.data == b"" and not r1.transit
    r2 = m.receive(req(text[cut:]))
    assert r2.done and not r2.failed and "HeaderDigest" in keys_of(r2)


def test_request_text_is_bounded() -> None:
    m = LoginMachine(make_policy(max_text_bytes=1024))
    r1 = m.receive(req(b"X-a=" + b"a" * 600 + b"\x00", cont=True, transit=False))
    assert not r1.failed
    r2 = m.receive(req(b"X-b=" + b"b" * 600 + b"\x00", cont=True, transit=False))
    assert_failed(r2, LoginStatus.OUT_OF_RESOURCES)


def test_long_response_is_split_with_c_bit() -> None:
    many = [(f"X-k{i:03d}", "v") for i in range(40)]  # ~800 bytes of NotUnderstood
    m = LoginMachine(make_policy(max_response_segment=200))
    replies = [m.receive(req(identity() + many))]
    while replies[-1].cont:
        assert not replies[-1].transit and not replies[-1].done
        assert len(replies[-1].data) == 200
        replies.append(m.receive(req(b"")))
    assert len(replies) >= 3
    last = replies[-1]
    assert last.done and last.transit and not last.failed
    keys = dict(decode_text(b"".join(r.data for r in replies)))
    assert all(keys[k] == "NotUnderstood" for k, _ in many)
    assert "MaxRecvDataSegmentLength" in keys


def test_text_while_target_continues_is_an_error() -> None:
    many = [(f"X-k{i:03d}", "v") for i in range(40)]
    m = LoginMachine(make_policy(max_response_segment=200))
    assert m.receive(req(identity() + many)).cont
    assert_failed(m.receive(req([("X-more", "1")])), LoginStatus.INITIATOR_ERROR)


def test_target_offers_keys_it_needs_and_waits_for_answers() -> None:
    limits: Mapping[str, str] = {
        **DEFAULT_LIMITS,
        "ImmediateData": "No",
        "MaxBurstLength": "131072",
        "HeaderDigest": "CRC32C",
    }
    m = LoginMachine(make_policy(limits=limits))
    r1 = m.receive(req([*identity(), ("DataDigest", "None")]))
    assert not r1.transit and not r1.done and not r1.failed  # must wait for answers
    keys = keys_of(r1)
    assert keys["ImmediateData"] == "No"
    assert keys["MaxBurstLength"] == "131072"
    assert keys["HeaderDigest"] == "CRC32C"
    assert set(m.pending_offers) == {"ImmediateData", "MaxBurstLength", "HeaderDigest"}

    r2 = m.receive(req([("ImmediateData", "No"), ("MaxBurstLength", "65536")]))
    assert not r2.transit and not r2.done  # HeaderDigest still unanswered
    assert set(m.pending_offers) == {"HeaderDigest"}

    r3 = m.receive(req([("HeaderDigest", "CRC32C")]))
    assert r3.done and r3.transit and not r3.failed
    assert r3.data == b""  # answers to our offers are not answered again
    assert r3.result is not None
    p = r3.result.params
    assert not p.immediate_data and p.max_burst_length == 65536 and p.header_digest
    assert p.first_burst_length == 65536


def test_bad_answer_to_offer_fails() -> None:
    limits = {**DEFAULT_LIMITS, "MaxBurstLength": "131072"}
    m = LoginMachine(make_policy(limits=limits))
    assert m.pending_offers == {} and not m.receive(req(identity())).transit
    assert_failed(m.receive(req([("MaxBurstLength", "262144")])), LoginStatus.INITIATOR_ERROR)


def test_security_to_ffp_detours_through_operational_when_offers_are_due() -> None:
    limits = {**DEFAULT_LIMITS, "ImmediateData": "No"}
    m = LoginMachine(make_policy(limits=limits))
    r1 = m.receive(req([*identity(), ("AuthMethod", "None")], csg=0, nsg=3))
    assert r1.transit and r1.nsg == 1 and not r1.done
    r2 = m.receive(req([], csg=1, nsg=3))
    assert keys_of(r2)["ImmediateData"] == "No" and not r2.transit


def test_identity_redeclared_identically_is_tolerated_but_negotiated_keys_are_not() -> None:
    m = LoginMachine(make_policy())
    m.receive(req([*identity(), ("AuthMethod", "CHAP,None")], csg=0, nsg=1))
    ok = m.receive(req(identity() + LIBISCSI_OPERATIONAL))  # libiscsi re-sends identity keys
    assert ok.done and not ok.failed

    m = LoginMachine(make_policy())
    m.receive(req([*identity(), ("MaxBurstLength", "8192")], transit=False))
    assert_failed(m.receive(req([("MaxBurstLength", "8192")])), LoginStatus.INITIATOR_ERROR)

    m = LoginMachine(make_policy())
    m.receive(req(identity(), transit=False))
    changed = [("TargetName", "iqn.2024-01.org.pyscst:other")]
    assert_failed(m.receive(req(changed)), LoginStatus.INITIATOR_ERROR)


@attrs.define
class FakeChap:
    """A two-round authenticator standing in for CHAP."""

    rounds: int = 0

    def methods(self) -> tuple[str, ...]:
        return ("CHAP",)

    def start(self, method: str, initiator_name: str, target_name: str | None) -> AuthStep:
        return AuthStep((("CHAP_A", "5"),))

    def step(self, pairs: list[tuple[str, str]]) -> AuthStep:
        self.rounds += 1
        if dict(pairs).get("CHAP_R") == "0xgood":
            return AuthStep(complete=True)
        if "CHAP_R" in dict(pairs):
            return AuthStep(failure=LoginStatus.AUTHENTICATION_FAILURE)
        return AuthStep((("CHAP_I", "1"), ("CHAP_C", "0x00")))


def test_authenticator_hook_drives_security_stage() -> None:
    m = LoginMachine(make_policy(authenticator=FakeChap))
    r1 = m.receive(req([*identity(), ("AuthMethod", "CHAP,None")], csg=0, nsg=1))
    assert keys_of(r1)["AuthMethod"] == "CHAP" and keys_of(r1)["CHAP_A"] == "5"
    assert not r1.transit  # authentication not finished
    r2 = m.receive(req([("CHAP_A", "5")], csg=0, nsg=1))
    assert keys_of(r2)["CHAP_C"] == "0x00" and not r2.transit
    r3 = m.receive(req([("CHAP_N", "u"), ("CHAP_R", "0xgood")], csg=0, nsg=1))
    assert r3.transit and r3.nsg == 1 and not r3.failed

    bad = LoginMachine(make_policy(authenticator=FakeChap))
    bad.receive(req([*identity(), ("AuthMethod", "CHAP")], csg=0, nsg=1))
    failed = bad.receive(req([("CHAP_N", "u"), ("CHAP_R", "0xbad")], csg=0, nsg=1))
    assert_failed(failed, LoginStatus.AUTHENTICATION_FAILURE)


def test_authentication_required_cannot_be_skipped_or_refused() -> None:
    skip = LoginMachine(make_policy(authenticator=FakeChap)).receive(req(identity(), csg=1))
    assert_failed(skip, LoginStatus.AUTHENTICATION_FAILURE)
    refuse = LoginMachine(make_policy(authenticator=FakeChap)).receive(
        req([*identity(), ("AuthMethod", "None")], csg=0, nsg=1)
    )
    assert_failed(refuse, LoginStatus.AUTHENTICATION_FAILURE)


@given(
    st.lists(
        st.sampled_from(
            [(k, v) for k, v in LIBISCSI_OPERATIONAL]
            + [("MaxBurstLength", "512"), ("FirstBurstLength", "16777215"),
               ("MaxRecvDataSegmentLength", "512"), ("ErrorRecoveryLevel", "2"),
               ("DefaultTime2Wait", "3600"), ("X-y", "z"), ("MaxConnections", "65535")]
        ),
        unique_by=lambda kv: kv[0],
    )
)
def test_any_operational_key_set_completes_within_limits(pairs: list[tuple[str, str]]) -> None:
    r = LoginMachine(make_policy()).receive(req(identity() + pairs))
    assert r.done and not r.failed and r.result is not None
    p = r.result.params
    assert p.first_burst_length <= p.max_burst_length
    assert p.max_burst_length <= int(DEFAULT_LIMITS["MaxBurstLength"])
    assert p.max_connections <= int(DEFAULT_LIMITS["MaxConnections"])
    assert p.error_recovery_level == 0
    sent = dict(pairs)
    for key, value in keys_of(r).items():
        if key in sent and KEYS.get(key) and KEYS[key].rule is Rule.MIN and value.isdigit():
            assert int(value) <= int(sent[key])


# -- full feature phase text -----------------------------------------------------------


def fake_targets(which: str) -> list[tuple[str, list[str]]]:
    everything = {
        TARGET: ["127.0.0.1:3260,1"],
        "iqn.2024-01.org.pyscst:disk2": ["127.0.0.1:3260,1", "[::1]:3260,1"],
    }
    if which == "All":
        return list(everything.items())
    name = which or TARGET
    return [(name, everything[name])] if name in everything else []


def test_sendtargets_all_and_named_and_current() -> None:
    all_ = answer_text([("SendTargets", "All")], "Discovery", fake_targets)
    assert all_ == [
        ("TargetName", TARGET),
        ("TargetAddress", "127.0.0.1:3260,1"),
        ("TargetName", "iqn.2024-01.org.pyscst:disk2"),
        ("TargetAddress", "127.0.0.1:3260,1"),
        ("TargetAddress", "[::1]:3260,1"),
    ]
    named = answer_text([("SendTargets", "iqn.2024-01.org.pyscst:disk2")], "Normal", fake_targets)
    assert [v for k, v in named if k == "TargetName"] == ["iqn.2024-01.org.pyscst:disk2"]
    current = answer_text([("SendTargets", "")], "Normal", fake_targets)
    assert current[0] == ("TargetName", TARGET)
    unknown = answer_text([("SendTargets", "iqn.2024-01.org.x:none")], "Normal", fake_targets)
    assert unknown == []


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("SendTargetsPlease", "All")], [("SendTargetsPlease", "NotUnderstood")]),
        ([("SendTargets", "Alle")], [("SendTargets", "Reject")]),
        ([("SendTargets", "A")], [("SendTargets", "Reject")]),
        ([("sENDtARGETS", "aLL")], [("sENDtARGETS", "NotUnderstood")]),
        ([("MaxBurstLength", "4096")], [("MaxBurstLength", "Reject")]),
        ([("X-vendor", "1")], [("X-vendor", "NotUnderstood")]),
        ([("MaxRecvDataSegmentLength", "4096")], []),
    ],
)
def test_text_answers_libiscsi_invalid_sendtargets_probe(
    pairs: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    assert answer_text(pairs, "Normal", fake_targets) == expected


def test_text_declarations_and_split() -> None:
    decl = text_declarations([("MaxRecvDataSegmentLength", "4096"), ("InitiatorAlias", "h")])
    assert decl == {"MaxRecvDataSegmentLength": 4096, "InitiatorAlias": "h"}
    assert text_declarations([("MaxRecvDataSegmentLength", "100")]) == {}
    data = encode_text(answer_text([("SendTargets", "All")], "Discovery", fake_targets))
    pieces = split_text(data, 16)
    assert all(len(p) <= 16 for p in pieces) and b"".join(pieces) == data
    assert split_text(b"", 16) == [b""]
