"""The etcd v3 JSON gateway as plain values: requests built, answers checked (sans-I/O).

etcd serves its gRPC API as JSON over HTTP/1.1 (``/v3/kv/range``, ``/v3/kv/txn``,
``/v3/lease/grant``, ``/v3/watch``, ...): keys and values in base64, 64-bit
numbers as decimal strings, zero values left out. Everything here is pure so
the encoding, the compare-and-swap transaction and the watch stream's framing
are tested without an etcd; ``etcd_client`` only moves the bytes.

An answer that is not what etcd sends (not JSON, wrong types, bad base64, a
line that never ends) raises :class:`EtcdProtocolError`: the caller treats it
as an unreachable etcd, never as data.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from typing import Any

import attrs

#: a watch line (one JSON message) longer than this is refused
MAX_LINE = 8 << 20
_INT64 = 1 << 63


class EtcdError(Exception):
    """etcd could not be asked, or said no (the message says which)."""


class EtcdProtocolError(EtcdError):
    """etcd's answer was not one: garbage, or a shape etcd never sends."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise EtcdProtocolError(f"expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EtcdProtocolError(f"bad base64: {exc}") from None


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # every key


def _int(value: object, what: str) -> int:
    """A gateway int64 (a decimal string, or a number); absent means 0."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise EtcdProtocolError(f"{what}: expected an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.lstrip("-").isdigit() and len(value) <= 20:
        number = int(value)
    else:
        raise EtcdProtocolError(f"{what}: expected an integer, got {value!r:.40}")
    if not -_INT64 <= number < _INT64:
        raise EtcdProtocolError(f"{what}: {number} is not an int64")
    return number


def _dict(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EtcdProtocolError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EtcdProtocolError(f"{what}: expected a list, got {type(value).__name__}")
    return value


def decode(body: bytes) -> dict[str, Any]:
    """One gateway answer; an error answer raises EtcdError with etcd's message."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EtcdProtocolError(f"not JSON: {exc}") from None
    doc = _dict(doc, "answer")
    if "error" in doc or ("code" in doc and "message" in doc):
        message = doc.get("message") or doc.get("error")
        raise EtcdError(f"etcd error {doc.get('code')!r}: {str(message)[:200]}")
    return doc


@attrs.frozen
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int = 0
    lease: int = 0

    @classmethod
    def parse(cls, raw: object) -> KeyValue:
        kv = _dict(raw, "kv")
        return cls(
            unb64(kv.get("key", "")),
            unb64(kv.get("value", "")),
            _int(kv.get("mod_revision"), "mod_revision"),
            _int(kv.get("create_revision"), "create_revision"),
            _int(kv.get("lease"), "lease"),
        )


def header_revision(doc: dict[str, Any]) -> int:
    return _int(_dict(doc.get("header"), "header").get("revision"), "revision")


# -- requests --------------------------------------------------------------------------


def range_request(key: bytes, *, prefix: bool = False) -> dict[str, Any]:
    req = {"key": b64(key)}
    if prefix:
        req["range_end"] = b64(prefix_end(key))
    return req


def put_request(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        req["lease"] = str(lease)
    return req


def cas_request(key: bytes, mod_revision: int, value: bytes) -> dict[str, Any]:
    """A txn: put ``value`` if ``key`` was last changed at ``mod_revision`` (0: the
    key must not exist), else read it back. Two nodes that start from the same
    revision cannot both succeed."""
    return {
        "compare": [
            {
                "key": b64(key),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": str(mod_revision),
            }
        ],
        "success": [{"request_put": put_request(key, value)}],
        "failure": [{"request_range": range_request(key)}],
    }


def watch_request(prefix: bytes, start_revision: int) -> dict[str, Any]:
    return {
        "create_request": {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix)),
            "start_revision": str(start_revision),
            "progress_notify": True,
        }
    }


# -- answers ---------------------------------------------------------------------------


def parse_range(doc: dict[str, Any]) -> tuple[int, list[KeyValue]]:
    """(store revision, the keys found)."""
    return header_revision(doc), [KeyValue.parse(kv) for kv in _list(doc.get("kvs"), "kvs")]


@attrs.frozen
class TxnResult:
    succeeded: bool
    revision: int
    #: the failure branch's read: the key as it is now (None: it does not exist)
    current: KeyValue | None = None


def parse_txn(doc: dict[str, Any]) -> TxnResult:
    revision = header_revision(doc)
    succeeded = doc.get("succeeded", False)
    if not isinstance(succeeded, bool):
        raise EtcdProtocolError("succeeded: expected a boolean")
    current = None
    if not succeeded:
        for response in _list(doc.get("responses"), "responses"):
            ranged = _dict(_dict(response, "response").get("response_range"), "response_range")
            kvs = _list(ranged.get("kvs"), "kvs")
            if kvs:
                current = KeyValue.parse(kvs[0])
    return TxnResult(succeeded, revision, current)


def parse_grant(doc: dict[str, Any]) -> tuple[int, int]:
    """(lease id, TTL granted)."""
    lease, ttl = _int(doc.get("ID"), "ID"), _int(doc.get("TTL"), "TTL")
    if lease == 0 or ttl <= 0:
        raise EtcdError(f"lease not granted: {str(doc.get('error') or doc)[:200]}")
    return lease, ttl


def parse_keepalive(doc: dict[str, Any]) -> int:
    """The TTL left after a renewal: 0 (absent) means the lease has expired."""
    return max(0, _int(_dict(doc.get("result"), "result").get("TTL"), "TTL"))


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@attrs.frozen
class WatchEvent:
    type: EventType
    kv: KeyValue


@attrs.frozen
class WatchMessage:
    """One message of the watch stream."""

    revision: int
    events: tuple[WatchEvent, ...] = ()
    created: bool = False
    canceled: bool = False
    #: set when the start revision was compacted away: read everything again
    compact_revision: int = 0


def parse_watch_message(doc: dict[str, Any]) -> WatchMessage:
    if "error" in doc:
        raise EtcdError(f"watch error: {str(doc['error'])[:200]}")
    result = _dict(doc.get("result"), "result")
    events = []
    for raw in _list(result.get("events"), "events"):
        event = _dict(raw, "event")
        kind = event.get("type", "PUT")
        if kind not in ("PUT", "DELETE"):
            raise EtcdProtocolError(f"unknown event type {kind!r:.40}")
        events.append(WatchEvent(EventType(kind), KeyValue.parse(event.get("kv"))))
    flags = [result.get(k, False) for k in ("created", "canceled")]
    if not all(isinstance(f, bool) for f in flags):
        raise EtcdProtocolError("created/canceled: expected booleans")
    return WatchMessage(
        header_revision(result),
        tuple(events),
        created=flags[0],
        canceled=flags[1],
        compact_revision=_int(result.get("compact_revision"), "compact_revision"),
    )


class WatchStream:
    """Splits the watch answer's body into messages (one JSON object per line)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buffer = bytearray()
        self._max_line = max_line

    def feed(self, data: bytes) -> list[WatchMessage]:
        self._buffer += data
        out = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if line.strip():
                out.append(parse_watch_message(decode(line)))
        if len(self._buffer) > self._max_line:
            raise EtcdProtocolError(f"watch message longer than {self._max_line} bytes")
        return out
