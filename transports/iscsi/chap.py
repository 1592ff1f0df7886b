"""CHAP for iSCSI login (RFC 7143 12.1.3 over RFC 1994): a sans-I/O state machine.

Why a module of its own: CHAP parses attacker-chosen binary values before
anyone is authenticated (LIO's CVE-2018-14633 was an overflow right here), so
the decoding is strictly bounded and every refusal is a value, never an
exception; and both ends live here (:class:`ChapTarget` for the login core,
:func:`initiator_answer` / :func:`verify_target` for our own initiator), so
the property tests can run one against the other without sockets.

Algorithms use the IANA "PPP Authentication Algorithms" numbers: 5 = MD5
(the one RFC 7143 requires), 7 = SHA-256, 8 = SHA3-256; the challenge is as
long as the digest. Secrets never leave this module except as digests.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable

import attrs


class ChapAlgorithm(enum.IntEnum):
    """CHAP_A values (IANA PPP Authentication Algorithms registry)."""

    MD5 = 5
    SHA256 = 7
    SHA3_256 = 8

    @property
    def digest_size(self) -> int:
        return 16 if self is ChapAlgorithm.MD5 else 32

    def digest(self, ident: int, secret: bytes, challenge: bytes) -> bytes:
        """RFC 1994 4.1: H(Identifier || secret || Challenge)."""
        name = {5: "md5", 7: "sha256", 8: "sha3_256"}[int(self)]
        return hashlib.new(name, bytes((ident,)) + secret + challenge).digest()


#: Shortest secret we accept (RFC 7143 12.1.3 asks for at least 96 bits).
MIN_SECRET = 12
#: Longest secret we accept (well beyond any sane pass phrase).
MAX_SECRET = 255
#: Longest CHAP_N (a name; RFC 7143 text values default to 255 bytes).
MAX_NAME = 255
#: Longest challenge we accept from an initiator (RFC 7143 12.1.3: 1024 bytes).
MAX_CHALLENGE = 1024
#: No encoded binary value may exceed this many characters (1024 bytes as hex).
_MAX_ENCODED = 2 + 2 * MAX_CHALLENGE


class ChapError(ValueError):
    """A malformed or refused CHAP value (the login fails 02/01)."""


def decode_binary(value: str, limit: int) -> bytes:
    """A hex (``0x``) or base64 (``0b``) binary value (RFC 7143 6.2), at most
    ``limit`` bytes once decoded; anything else raises :class:`ChapError`."""
    if len(value) > _MAX_ENCODED or len(value) < 3:
        raise ChapError("binary value missing or too long")
    prefix, body = value[:2].lower(), value[2:]
    if prefix == "0x":
        if any(c not in "0123456789abcdefABCDEF" for c in body):
            raise ChapError("bad hex digit")
        if len(body) % 2:
            body = "0" + body  # RFC 7143 6.2: an odd count has an implied leading 0
        data = bytes.fromhex(body)
    elif prefix == "0b":
        try:
            data = binascii.a2b_base64(body.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ChapError("bad base64") from exc
    else:
        raise ChapError("binary value must start 0x or 0b")
    if not data or len(data) > limit:
        raise ChapError(f"binary value of {len(data)} bytes (1..{limit})")
    return data


def encode_hex(data: bytes) -> str:
    return "0x" + data.hex()


def parse_identifier(value: str) -> int:
    """CHAP_I: a decimal (or 0x hex) number 0..255."""
    hexdigits = "0123456789abcdefABCDEF"
    if value[:2].lower() == "0x" and 3 <= len(value) <= 6 and all(
        c in hexdigits for c in value[2:]
    ):
        number = int(value[2:], 16)
    elif 1 <= len(value) <= 3 and all(c in "0123456789" for c in value):
        number = int(value, 10)
    else:
        raise ChapError("CHAP_I is not a number 0..255")
    if not 0 <= number <= 255:
        raise ChapError(f"CHAP_I {number} out of range 0..255")
    return number


def parse_algorithms(value: str) -> list[ChapAlgorithm]:
    """The algorithms we support from a CHAP_A list, in the initiator's order."""
    out: list[ChapAlgorithm] = []
    for item in value.split(",")[:255]:
        if item.isascii() and item.isdigit() and len(item) <= 3:
            number = int(item)
            if number in ChapAlgorithm._value2member_map_:
                out.append(ChapAlgorithm(number))
    return out


@attrs.frozen
class Credential:
    """A CHAP name and its secret (the secret is never shown in repr)."""

    user: str
    secret: bytes = attrs.field(repr=False)


@attrs.frozen
class ChapSettings:
    """Who may authenticate (``users``) and how we prove ourselves (``mutual``)."""

    users: tuple[Credential, ...]
    mutual: Credential | None = None

    def find(self, user: str) -> Credential | None:
        found = None
        for cred in self.users:  # no early exit: same work for every name
            if hmac.compare_digest(cred.user.encode(), user.encode()):
                found = cred
        return found


@attrs.frozen
class ChapStep:
    """What the target answers to one request's CHAP keys."""

    pairs: tuple[tuple[str, str], ...] = ()
    complete: bool = False
    failure: str | None = None  # why authentication failed (for the log)
    user: str | None = None  # the authenticated CHAP_N once complete


class _State(enum.Enum):
    WAIT_A = "wait CHAP_A"
    WAIT_R = "wait CHAP_N/CHAP_R"
    DONE = "done"
    FAILED = "failed"


class ChapTarget:
    """The target side of one login's CHAP exchange.

    ``receive`` takes one request's security keys and returns a
    :class:`ChapStep`; once it fails or completes it only fails.
    """

    def __init__(
        self, settings: ChapSettings, random: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self._settings = settings
        self._random = random
        self._state = _State.WAIT_A
        self._algorithm = ChapAlgorithm.MD5
        self._ident = 0
        self._challenge = b""

    @property
    def state(self) -> str:
        return self._state.value

    def receive(self, pairs: list[tuple[str, str]]) -> ChapStep:
        try:
            step = self._receive(dict(pairs), [k for k, _ in pairs])
        except ValueError as exc:  # ChapError, and e.g. a str that cannot be encoded
            step = ChapStep(failure=str(exc)[:200])
        if step.failure is not None:
            self._state = _State.FAILED
        return step

    def _receive(self, keys: dict[str, str], order: list[str]) -> ChapStep:
        if self._state is _State.WAIT_A:
            return self._choose(keys, order)
        if self._state is _State.WAIT_R:
            return self._verify(keys, order)
        raise ChapError(f"CHAP keys after authentication {self._state.value}")

    def _choose(self, keys: dict[str, str], order: list[str]) -> ChapStep:
        if order != ["CHAP_A"]:
            raise ChapError(f"expected CHAP_A alone, got {', '.join(order) or 'nothing'}")
        offered = parse_algorithms(keys["CHAP_A"])
        if not offered:
            raise ChapError(f"no supported algorithm in CHAP_A={keys['CHAP_A'][:64]}")
        self._algorithm = offered[0]
        self._ident = self._random(1)[0]
        self._challenge = self._random(self._algorithm.digest_size)
        self._state = _State.WAIT_R
        return ChapStep(
            (
                ("CHAP_A", str(int(self._algorithm))),
                ("CHAP_I", str(self._ident)),
                ("CHAP_C", encode_hex(self._challenge)),
            )
        )

    def _verify(self, keys: dict[str, str], order: list[str]) -> ChapStep:
        allowed = {"CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"}
        if not set(order) <= allowed or not {"CHAP_N", "CHAP_R"} <= set(order):
            raise ChapError(f"expected CHAP_N and CHAP_R, got {', '.join(order) or 'nothing'}")
        if ("CHAP_I" in keys) != ("CHAP_C" in keys):
            raise ChapError("mutual CHAP needs both CHAP_I and CHAP_C")
        name = keys["CHAP_N"]
        if not 1 <= len(name.encode()) <= MAX_NAME:
            raise ChapError("CHAP_N empty or too long")
        size = self._algorithm.digest_size
        response = decode_binary(keys["CHAP_R"], MAX_CHALLENGE)
        if len(response) != size:
            raise ChapError(f"CHAP_R of {len(response)} bytes, expected {size}")
        mutual: tuple[int, bytes] | None = None
        if "CHAP_I" in keys:  # parse before judging, so bad values fail the same way
            ident = parse_identifier(keys["CHAP_I"])
            challenge = decode_binary(keys["CHAP_C"], MAX_CHALLENGE)
            mutual = (ident, challenge)
        cred = self._settings.find(name)
        secret = cred.secret if cred is not None else b"\0" * MIN_SECRET
        expected = self._algorithm.digest(self._ident, secret, self._challenge)
        if not hmac.compare_digest(expected, response) or cred is None:
            raise ChapError(f"wrong CHAP_R for CHAP_N {name[:64]!r}")
        if mutual is None:
            self._state = _State.DONE
            return ChapStep(complete=True, user=cred.user)
        ours = self._settings.mutual
        if ours is None:
            raise ChapError("initiator asks the target to authenticate; no mutual credential")
        ident, challenge = mutual
        if hmac.compare_digest(challenge, self._challenge):
            raise ChapError("reflected challenge: CHAP_C equals ours")
        if hmac.compare_digest(ours.secret, cred.secret):
            raise ChapError("mutual secret equals the initiator's secret")
        answer = self._algorithm.digest(ident, ours.secret, challenge)
        self._state = _State.DONE
        return ChapStep(
            (("CHAP_N", ours.user), ("CHAP_R", encode_hex(answer))), complete=True, user=cred.user
        )


# ---------------------------------------------------------------------------
# The initiator side (for transports/iscsi/initiator.py and tests).


@attrs.frozen
class InitiatorChap:
    """An initiator's CHAP credentials, and the target's when mutual."""

    user: str
    secret: bytes = attrs.field(repr=False)
    target_user: str | None = None
    target_secret: bytes | None = attrs.field(default=None, repr=False)
    algorithms: tuple[ChapAlgorithm, ...] = (ChapAlgorithm.MD5,)

    @property
    def mutual(self) -> bool:
        return self.target_secret is not None


@attrs.frozen
class InitiatorAnswer:
    """CHAP_N/CHAP_R (and our own challenge when mutual) for the target's offer."""

    pairs: tuple[tuple[str, str], ...]
    algorithm: ChapAlgorithm
    ident: int | None = None
    challenge: bytes | None = None


def initiator_answer(
    creds: InitiatorChap,
    offer: dict[str, str],
    random: Callable[[int], bytes] = secrets.token_bytes,
) -> InitiatorAnswer:
    """Answer the target's CHAP_A/CHAP_I/CHAP_C (ChapError when malformed)."""
    try:
        algorithm = ChapAlgorithm(int(offer.get("CHAP_A", "")))
    except ValueError as exc:
        raise ChapError(f"target chose CHAP_A={offer.get('CHAP_A')!r}") from exc
    if algorithm not in creds.algorithms:
        raise ChapError(f"target chose CHAP_A={int(algorithm)}, not offered")
    ident = parse_identifier(offer.get("CHAP_I", ""))
    challenge = decode_binary(offer.get("CHAP_C", ""), MAX_CHALLENGE)
    response = algorithm.digest(ident, creds.secret, challenge)
    pairs = [("CHAP_N", creds.user), ("CHAP_R", encode_hex(response))]
    if not creds.mutual:
        return InitiatorAnswer(tuple(pairs), algorithm)
    own_ident = random(1)[0]
    own = random(algorithm.digest_size)
    while own == challenge:  # never hand the target its own challenge back
        own = random(algorithm.digest_size)
    pairs += [("CHAP_I", str(own_ident)), ("CHAP_C", encode_hex(own))]
    return InitiatorAnswer(tuple(pairs), algorithm, own_ident, own)


def verify_target(creds: InitiatorChap, answer: InitiatorAnswer, reply: dict[str, str]) -> None:
    """Check the target's CHAP_N/CHAP_R against our challenge (ChapError if wrong)."""
    assert creds.target_secret is not None and answer.ident is not None
    assert answer.challenge is not None
    if creds.target_user is not None and reply.get("CHAP_N") != creds.target_user:
        raise ChapError(f"target CHAP_N {reply.get('CHAP_N')!r} is not {creds.target_user!r}")
    response = decode_binary(reply.get("CHAP_R", ""), MAX_CHALLENGE)
    expected = answer.algorithm.digest(answer.ident, creds.target_secret, answer.challenge)
    if not hmac.compare_digest(expected, response):
        raise ChapError("target's CHAP_R is wrong")
