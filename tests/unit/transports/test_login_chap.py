"""CHAP and access lists through the login core (login.py + auth.py), PDU by PDU.

Every refusal must be a Login Response with status 02/01 (authentication) or
02/02 (authorization), never an exception, whatever the CHAP values hold.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyscst.transports.iscsi.auth import AuthRegistry
from pyscst.transports.iscsi.chap import (
    MAX_CHALLENGE,
    ChapAlgorithm,
    ChapSettings,
    Credential,
    decode_binary,
    encode_hex,
)
from pyscst.transports.iscsi.login import LoginMachine, LoginReply, LoginStatus
from tests.unit.transports.test_login import (
    INITIATOR,
    TARGET,
    assert_failed,
    identity,
    keys_of,
    make_policy,
    req,
)

ALICE = Credential("alice", b"alice-secret-1234")
MUTUAL_CRED = Credential("tgt", b"target-secret-99")


def machine(settings: ChapSettings | None = None, discovery: ChapSettings | None = None,
            **policy: object) -> LoginMachine:
    registry = AuthRegistry()
    registry.replace({TARGET: settings} if settings else {}, discovery)
    return LoginMachine(make_policy(auth_for=registry.authenticator, **policy))


def response_for(offer: dict[str, str], secret: bytes = ALICE.secret) -> list[tuple[str, str]]:
    algorithm = ChapAlgorithm(int(offer["CHAP_A"]))
    challenge = decode_binary(offer["CHAP_C"], MAX_CHALLENGE)
    digest = algorithm.digest(int(offer["CHAP_I"]), secret, challenge)
    return [("CHAP_N", "alice"), ("CHAP_R", encode_hex(digest))]


def chap_offer(m: LoginMachine, session: str = "Normal", algorithms: str = "5") -> dict[str, str]:
    r1 = m.receive(req([*identity(session), ("AuthMethod", "CHAP,None")], csg=0, nsg=1,
                       transit=False))
    assert not r1.failed and keys_of(r1)["AuthMethod"] == "CHAP"
    r2 = m.receive(req([("CHAP_A", algorithms)], csg=0, nsg=1, transit=False))
    assert not r2.failed, r2.reason
    return keys_of(r2)


def finish(m: LoginMachine, pairs: list[tuple[str, str]]) -> LoginReply:
    return m.receive(req(pairs, csg=0, nsg=1))


def test_one_way_chap_login() -> None:
    m = machine(ChapSettings((ALICE,)))
    reply = finish(m, response_for(chap_offer(m)))
    assert reply.transit and reply.nsg == 1 and not reply.failed
    done = m.receive(req([("HeaderDigest", "None")], csg=1, nsg=3))
    assert done.result is not None and done.result.auth_method == "CHAP"


def test_mutual_chap_login_answers_with_the_target_credential() -> None:
    m = machine(ChapSettings((ALICE,), MUTUAL_CRED))
    offer = chap_offer(m, algorithms="7,5")
    assert offer["CHAP_A"] == "7"
    challenge = b"\x42" * 32
    reply = finish(m, [*response_for(offer), ("CHAP_I", "9"), ("CHAP_C", encode_hex(challenge))])
    assert reply.transit and not reply.failed
    got = keys_of(reply)
    assert got["CHAP_N"] == "tgt"
    expected = ChapAlgorithm.SHA256.digest(9, MUTUAL_CRED.secret, challenge)
    assert decode_binary(got["CHAP_R"], 64) == expected


def test_wrong_secret_is_authentication_failure() -> None:
    m = machine(ChapSettings((ALICE,)))
    assert_failed(finish(m, response_for(chap_offer(m), b"wrong-secret-123")),
                  LoginStatus.AUTHENTICATION_FAILURE)


def test_auth_none_refused_when_chap_configured() -> None:
    m = machine(ChapSettings((ALICE,)))
    reply = m.receive(req([*identity(), ("AuthMethod", "None")], csg=0, nsg=1))
    assert_failed(reply, LoginStatus.AUTHENTICATION_FAILURE)
    skip = machine(ChapSettings((ALICE,))).receive(req(identity(), csg=1, nsg=3))
    assert_failed(skip, LoginStatus.AUTHENTICATION_FAILURE)


def test_chap_not_offered_where_not_configured() -> None:
    m = machine(None)
    reply = m.receive(req([*identity(), ("AuthMethod", "CHAP,None")], csg=0, nsg=1))
    assert keys_of(reply)["AuthMethod"] == "None" and reply.transit
    only_chap = machine(None).receive(req([*identity(), ("AuthMethod", "CHAP")], csg=0, nsg=1))
    assert_failed(only_chap, LoginStatus.AUTHENTICATION_FAILURE)


def test_other_targets_credentials_do_not_apply() -> None:
    """CHAP on TARGET only: discovery without [discovery_auth] stays open."""
    m = machine(ChapSettings((ALICE,)))
    reply = m.receive(req([*identity("Discovery"), ("AuthMethod", "None")], csg=0, nsg=1))
    assert not reply.failed


def test_discovery_chap() -> None:
    m = machine(None, discovery=ChapSettings((ALICE,)))
    reply = m.receive(req([*identity("Discovery"), ("AuthMethod", "None")], csg=0, nsg=1))
    assert_failed(reply, LoginStatus.AUTHENTICATION_FAILURE)
    m = machine(None, discovery=ChapSettings((ALICE,)))
    assert finish(m, response_for(chap_offer(m, "Discovery"))).transit


def test_hostile_values_fail_with_a_status() -> None:
    hostile = [
        [("CHAP_N", "alice"), ("CHAP_R", "0x" + "ab" * 17)],  # longer than MD5
        [("CHAP_N", "alice"), ("CHAP_R", "0x" + "ab" * 15)],  # shorter
        [("CHAP_N", "alice"), ("CHAP_R", "0x" + "ab" * 4000)],  # CVE-2018-14633's shape
        [("CHAP_N", "a" * 4000), ("CHAP_R", "0x" + "ab" * 16)],
        [("CHAP_N", "alice"), ("CHAP_R", "0b====")],
        [("CHAP_N", "alice"), ("CHAP_R", "0xg0")],
    ]
    for pairs in hostile:
        m = machine(ChapSettings((ALICE,), MUTUAL_CRED))
        chap_offer(m)
        assert_failed(finish(m, pairs), LoginStatus.AUTHENTICATION_FAILURE)
    mutual_bad = [
        [("CHAP_I", "256"), ("CHAP_C", "0x" + "11" * 16)],
        [("CHAP_I", "-1"), ("CHAP_C", "0x" + "11" * 16)],
        [("CHAP_I", "1"), ("CHAP_C", "0x" + "11" * (MAX_CHALLENGE + 1))],
        [("CHAP_I", "1"), ("CHAP_C", "0bnot base64")],
    ]
    for extra in mutual_bad:
        m = machine(ChapSettings((ALICE,), MUTUAL_CRED))
        offer = chap_offer(m)
        assert_failed(finish(m, response_for(offer) + extra), LoginStatus.AUTHENTICATION_FAILURE)


def test_reflected_challenge_fails_login() -> None:
    m = machine(ChapSettings((ALICE,), MUTUAL_CRED))
    offer = chap_offer(m)
    reflected = [("CHAP_I", offer["CHAP_I"]), ("CHAP_C", offer["CHAP_C"])]
    assert_failed(finish(m, response_for(offer) + reflected), LoginStatus.AUTHENTICATION_FAILURE)


def test_initiator_not_allowed_is_authorization_failure() -> None:
    m = LoginMachine(make_policy(initiator_allowed=lambda ini, tgt: False))
    assert_failed(m.receive(req(identity(), csg=1)), LoginStatus.AUTHORIZATION_FAILURE)
    assert LoginStatus.AUTHORIZATION_FAILURE == 0x0202
    assert INITIATOR  # the allowed name of make_policy


@given(st.lists(st.tuples(st.sampled_from(["CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C", "CHAP_A"]),
                          st.text(max_size=80)), max_size=5, unique_by=lambda kv: kv[0]))
def test_arbitrary_chap_keys_end_in_a_status(pairs: list[tuple[str, str]]) -> None:
    m = machine(ChapSettings((ALICE,), MUTUAL_CRED))
    chap_offer(m)
    reply = finish(m, pairs)
    assert reply.failed or reply.transit or not reply.done
    if reply.failed:
        assert reply.status in (LoginStatus.AUTHENTICATION_FAILURE, LoginStatus.INITIATOR_ERROR)
