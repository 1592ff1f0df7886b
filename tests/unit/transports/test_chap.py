"""CHAP (transports/iscsi/chap.py): both ends against each other, and every refusal.

The target side decodes attacker-chosen binary values before anyone is
authenticated, so beside the round trips each hostile value gets its own
case, and hypothesis throws arbitrary keys at both states: the answer is
always a failure step, never an exception.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyscst.transports.iscsi.chap import (
    MAX_CHALLENGE,
    ChapAlgorithm,
    ChapError,
    ChapSettings,
    ChapTarget,
    Credential,
    InitiatorChap,
    decode_binary,
    encode_hex,
    initiator_answer,
    parse_identifier,
    verify_target,
)

ALICE = Credential("alice", b"alice-secret-1234")
TARGET = Credential("iqn.2026-11.org.pyscst:default", b"target-secret-99")
ONE_WAY = ChapSettings((ALICE,))
MUTUAL = ChapSettings((ALICE,), TARGET)
ALGORITHMS = list(ChapAlgorithm)


def offer(target: ChapTarget, algorithms: str = "5") -> dict[str, str]:
    step = target.receive([("CHAP_A", algorithms)])
    assert step.failure is None, step.failure
    return dict(step.pairs)


def refused(target: ChapTarget, pairs: list[tuple[str, str]]) -> str:
    step = target.receive(pairs)
    assert step.failure is not None and not step.complete and not step.pairs
    return step.failure


def answer_pairs(got: dict[str, str], secret: bytes = ALICE.secret) -> dict[str, str]:
    algorithm = ChapAlgorithm(int(got["CHAP_A"]))
    challenge = decode_binary(got["CHAP_C"], MAX_CHALLENGE)
    response = algorithm.digest(int(got["CHAP_I"]), secret, challenge)
    return {"CHAP_N": "alice", "CHAP_R": encode_hex(response)}


# -- round trips -------------------------------------------------------------------


@given(st.sampled_from(ALGORITHMS), st.booleans(), st.binary(min_size=12, max_size=64))
def test_initiator_and_target_agree(algorithm: ChapAlgorithm, mutual: bool, secret: bytes) -> None:
    user = Credential("u", secret)
    tgt_secret = secret[::-1] + b"x"  # never equal to the initiator's
    settings = ChapSettings((user,), Credential("t", tgt_secret) if mutual else None)
    target = ChapTarget(settings)
    got = offer(target, str(int(algorithm)))
    assert got["CHAP_A"] == str(int(algorithm))
    assert len(decode_binary(got["CHAP_C"], MAX_CHALLENGE)) == algorithm.digest_size
    assert 0 <= int(got["CHAP_I"]) <= 255
    creds = InitiatorChap(
        "u", secret, "t" if mutual else None, tgt_secret if mutual else None, (algorithm,)
    )
    answer = initiator_answer(creds, got)
    step = target.receive(list(answer.pairs))
    assert step.complete and step.failure is None and step.user == "u"
    if mutual:
        verify_target(creds, answer, dict(step.pairs))
        with pytest.raises(ChapError):
            verify_target(attrs_evolve_secret(creds, b"wrong-target-secret"), answer,
                          dict(step.pairs))
    else:
        assert step.pairs == ()


def attrs_evolve_secret(creds: InitiatorChap, secret: bytes) -> InitiatorChap:
    import attrs

    return attrs.evolve(creds, target_secret=secret)


def test_target_takes_the_initiators_first_supported_algorithm() -> None:
    assert offer(ChapTarget(ONE_WAY), "7,5")["CHAP_A"] == "7"
    assert offer(ChapTarget(ONE_WAY), "6,8,5")["CHAP_A"] == "8"  # 6 (SHA-1) is not ours
    assert offer(ChapTarget(ONE_WAY), "129,5")["CHAP_A"] == "5"
    assert len(offer(ChapTarget(ONE_WAY), "7")["CHAP_C"]) == 2 + 64  # 32 bytes in hex
    assert len(offer(ChapTarget(ONE_WAY), "5")["CHAP_C"]) == 2 + 32  # 16 bytes


def test_iana_numbers() -> None:
    assert (ChapAlgorithm.MD5, ChapAlgorithm.SHA256, ChapAlgorithm.SHA3_256) == (5, 7, 8)


def test_base64_response_accepted() -> None:
    target = ChapTarget(ONE_WAY)
    got = offer(target)
    hexed = answer_pairs(got)["CHAP_R"]
    b64 = "0b" + base64.b64encode(bytes.fromhex(hexed[2:])).decode()
    assert target.receive([("CHAP_N", "alice"), ("CHAP_R", b64)]).complete


def test_secrets_are_random_per_login() -> None:
    a, b = offer(ChapTarget(ONE_WAY)), offer(ChapTarget(ONE_WAY))
    assert a["CHAP_C"] != b["CHAP_C"]


def test_secret_not_in_repr() -> None:
    assert "alice-secret" not in repr(ALICE) and "target-secret" not in repr(MUTUAL)
    creds = InitiatorChap("alice", b"alice-secret-1234", "t", b"target-secret-99")
    assert "secret-" not in repr(creds)


# -- refusals (each a failure step, never an exception) ----------------------------------


def test_wrong_secret_and_unknown_user() -> None:
    target = ChapTarget(ONE_WAY)
    got = offer(target)
    assert "wrong CHAP_R" in refused(target, list(answer_pairs(got, b"not-the-secret!").items()))
    target = ChapTarget(ONE_WAY)
    pairs = answer_pairs(offer(target))
    pairs["CHAP_N"] = "mallory"
    assert "wrong CHAP_R" in refused(target, list(pairs.items()))


@pytest.mark.parametrize("size", [0, 15, 17, 32, 1024])
def test_response_of_the_wrong_length(size: int) -> None:
    target = ChapTarget(ONE_WAY)
    offer(target)
    value = "0x" + "ab" * size if size else "0x"
    refused(target, [("CHAP_N", "alice"), ("CHAP_R", value)])


@pytest.mark.parametrize(
    "value",
    ["ab" * 16, "0xzz" + "ab" * 15, "0b!!!!", "0b" + "A" * 23, "0x", "0b", "", "12345",
     "0x" + "ab" * 5000, "0b" + "QUFB" * 3000, "0x" + "ab" * 15 + "\u0661\u0662",
     "0b" + base64.b64encode(b"x" * 16).decode() + "\n"],
)
def test_bad_encodings_refused(value: str) -> None:
    target = ChapTarget(ONE_WAY)
    offer(target)
    refused(target, [("CHAP_N", "alice"), ("CHAP_R", value)])


def test_over_long_name_and_challenge() -> None:
    target = ChapTarget(MUTUAL)
    pairs = answer_pairs(offer(target))
    pairs["CHAP_N"] = "a" * 256
    assert "CHAP_N" in refused(target, list(pairs.items()))
    target = ChapTarget(MUTUAL)
    pairs = answer_pairs(offer(target))
    pairs.update(CHAP_I="1", CHAP_C="0x" + "ab" * (MAX_CHALLENGE + 1))
    refused(target, list(pairs.items()))


@pytest.mark.parametrize("ident", ["256", "-1", "1000", "0x100", "abc", "", "1.0", "+1", "\u0661"])
def test_identifier_out_of_range(ident: str) -> None:
    target = ChapTarget(MUTUAL)
    pairs = answer_pairs(offer(target))
    pairs.update(CHAP_I=ident, CHAP_C="0x" + "11" * 16)
    refused(target, list(pairs.items()))
    with pytest.raises(ChapError):
        parse_identifier(ident)


def test_identifier_bounds() -> None:
    assert parse_identifier("0") == 0 and parse_identifier("255") == 255
    assert parse_identifier("0xff") == 255


def test_reflected_challenge_refused() -> None:
    target = ChapTarget(MUTUAL)
    got = offer(target)
    pairs = answer_pairs(got)
    pairs.update(CHAP_I=got["CHAP_I"], CHAP_C=got["CHAP_C"])
    assert "reflected" in refused(target, list(pairs.items()))


def test_mutual_asked_without_a_target_credential() -> None:
    target = ChapTarget(ONE_WAY)
    pairs = answer_pairs(offer(target))
    pairs.update(CHAP_I="7", CHAP_C="0x" + "22" * 16)
    assert "mutual" in refused(target, list(pairs.items()))


def test_mutual_secret_equal_to_initiator_secret_refused() -> None:
    target = ChapTarget(ChapSettings((ALICE,), Credential("t", ALICE.secret)))
    pairs = answer_pairs(offer(target))
    pairs.update(CHAP_I="7", CHAP_C="0x" + "22" * 16)
    refused(target, list(pairs.items()))


@pytest.mark.parametrize(
    "first",
    [
        [("CHAP_N", "alice"), ("CHAP_R", "0x00")],  # response before any challenge
        [("CHAP_A", "5"), ("CHAP_N", "alice")],
        [("CHAP_A", "6")],  # SHA-1 only: not supported
        [("CHAP_A", "1,2,3,4,256,99999999999999999999")],
        [("CHAP_A", "")],
        [],
    ],
)
def test_out_of_order_or_unsupported(first: list[tuple[str, str]]) -> None:
    refused(ChapTarget(ONE_WAY), first)


def test_half_mutual_and_missing_response() -> None:
    for extra in ({"CHAP_I": "1"}, {"CHAP_C": "0x" + "11" * 16}):
        target = ChapTarget(MUTUAL)
        pairs = answer_pairs(offer(target)) | extra
        refused(target, list(pairs.items()))
    target = ChapTarget(ONE_WAY)
    offer(target)
    refused(target, [("CHAP_N", "alice")])


def test_unencodable_name_is_a_failure_not_an_exception() -> None:
    target = ChapTarget(ONE_WAY)
    pairs = answer_pairs(offer(target))
    pairs["CHAP_N"] = "alice\udcff"
    refused(target, list(pairs.items()))


def test_nothing_after_completion_or_failure() -> None:
    target = ChapTarget(ONE_WAY)
    pairs = list(answer_pairs(offer(target)).items())
    assert target.receive(pairs).complete
    refused(target, pairs)
    target = ChapTarget(ONE_WAY)
    refused(target, [("CHAP_A", "6")])
    refused(target, [("CHAP_A", "5")])  # failed is final


_keys = st.sampled_from(["CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R", "X"])
_values = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: "0x" + b.hex()),
    st.binary(max_size=300).map(lambda b: "0b" + base64.b64encode(b).decode()),
    st.integers(-1000, 100000).map(str),
)


@given(st.booleans(), st.lists(st.tuples(_keys, _values), max_size=6))
def test_arbitrary_keys_never_raise(after_offer: bool, pairs: list[tuple[str, str]]) -> None:
    target = ChapTarget(MUTUAL)
    if after_offer:
        offer(target)
    step = target.receive(pairs)
    assert step.failure is not None or step.pairs or step.complete


@given(st.binary(min_size=1, max_size=MAX_CHALLENGE))
def test_decode_round_trip(data: bytes) -> None:
    assert decode_binary(encode_hex(data), MAX_CHALLENGE) == data
    assert decode_binary("0B" + base64.b64encode(data).decode(), MAX_CHALLENGE) == data
    assert decode_binary("0X" + data.hex().upper(), MAX_CHALLENGE) == data


@given(st.text(max_size=200))
def test_decode_only_raises_chap_error(text: str) -> None:
    try:
        decode_binary(text, 64)
    except ChapError:
        pass


def test_odd_hex_has_an_implied_leading_zero() -> None:
    assert decode_binary("0xabc", 4) == b"\x0a\xbc"


def test_initiator_refuses_malformed_offers() -> None:
    creds = InitiatorChap("alice", ALICE.secret)
    for bad in ({"CHAP_A": "7", "CHAP_I": "1", "CHAP_C": "0x00"},  # not offered
                {"CHAP_A": "5", "CHAP_I": "300", "CHAP_C": "0x00"},
                {"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "zz"},
                {"CHAP_A": "x"}):
        with pytest.raises(ChapError):
            initiator_answer(creds, bad)


def test_initiator_never_reflects_the_targets_challenge() -> None:
    creds = InitiatorChap("alice", ALICE.secret, "t", TARGET.secret)
    challenge = b"\x01" * 16
    draws = iter([b"\x05", challenge, b"\x02" * 16])
    answer = initiator_answer(
        creds, {"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": encode_hex(challenge)},
        random=lambda n: next(draws),
    )
    assert answer.challenge == b"\x02" * 16
