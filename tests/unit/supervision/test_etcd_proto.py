"""The etcd v3 JSON protocol core: encoding, the CAS txn, answers, the watch stream."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyscst.supervision.cluster import etcd_proto as proto
from pyscst.supervision.cluster.etcd_proto import EtcdError, EtcdProtocolError, EventType


@given(st.binary())
def test_base64_round_trip(data: bytes) -> None:
    assert proto.unb64(proto.b64(data)) == data


@pytest.mark.parametrize("bad", ["%%%", "YQ", 5, None, ["YQ=="]])
def test_bad_base64_is_a_protocol_error(bad: object) -> None:
    with pytest.raises(EtcdProtocolError):
        proto.unb64(bad)


@given(st.binary(min_size=1, max_size=8), st.binary(max_size=4))
def test_prefix_end_bounds_exactly_the_keys_with_the_prefix(prefix: bytes, tail: bytes) -> None:
    end = proto.prefix_end(prefix)
    assert prefix <= prefix + tail < end or end == b"\x00"


def test_prefix_end_examples() -> None:
    assert proto.prefix_end(b"/pyscst/") == b"/pyscst0"
    assert proto.prefix_end(b"a\xff") == b"b"
    assert proto.prefix_end(b"\xff\xff") == b"\x00"


def test_cas_compares_the_mod_revision_and_reads_back_on_failure() -> None:
    req = proto.cas_request(b"/k", 7, b"v")
    assert req["compare"] == [
        {"key": "L2s=", "target": "MOD", "result": "EQUAL", "mod_revision": "7"}
    ]
    assert req["success"] == [{"request_put": {"key": "L2s=", "value": "dg=="}}]
    assert req["failure"] == [{"request_range": {"key": "L2s="}}]


def test_txn_answers() -> None:
    won = proto.decode(b'{"header":{"revision":"12"},"succeeded":true}')
    assert proto.parse_txn(won) == proto.TxnResult(True, 12)
    lost = {
        "header": {"revision": "13"},
        "responses": [
            {"response_range": {"kvs": [{"key": "L2s=", "value": "eA==", "mod_revision": "13"}]}}
        ],
    }
    result = proto.parse_txn(lost)
    assert not result.succeeded and result.current is not None
    assert result.current.value == b"x" and result.current.mod_revision == 13
    gone = {"header": {"revision": "14"}, "responses": [{"response_range": {}}]}
    assert proto.parse_txn(gone) == proto.TxnResult(False, 14, None)


def test_lease_answers() -> None:
    assert proto.parse_grant({"ID": "77", "TTL": "5"}) == (77, 5)
    with pytest.raises(EtcdError):
        proto.parse_grant({"ID": "0", "TTL": "0", "error": "too many leases"})
    assert proto.parse_keepalive({"result": {"ID": "77", "TTL": "4"}}) == 4
    assert proto.parse_keepalive({"result": {"ID": "77"}}) == 0  # expired: TTL left out


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502</html>",
        b"[]",
        b'{"header": {"revision": "x"}}',
        b'{"header": {"revision": true}}',
        b'{"header": {"revision": "99999999999999999999"}}',
        b'{"header": 5}',
        b'{"kvs": [{"key": 5}]}',
        b'{"kvs": {"key": "YQ=="}}',
        b"\xff\xfe",
    ],
)
def test_garbage_answers_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(EtcdProtocolError):
        proto.parse_range(proto.decode(body))


def test_error_answers_carry_etcds_message() -> None:
    with pytest.raises(EtcdError, match="etcdserver: request is too large"):
        proto.decode(b'{"error":"x","code":3,"message":"etcdserver: request is too large"}')


def _line(doc: object) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def test_watch_stream_frames_messages_split_anywhere() -> None:
    kv = {"key": base64.b64encode(b"/p/a").decode(), "value": "eA==", "mod_revision": "9"}
    body = (
        _line({"result": {"header": {"revision": "8"}, "created": True}})
        + _line({"result": {"header": {"revision": "9"}, "events": [{"kv": kv}]}})
        + _line(
            {
                "result": {
                    "header": {"revision": "10"},
                    "events": [{"type": "DELETE", "kv": {"key": kv["key"], "mod_revision": "10"}}],
                }
            }
        )
    )
    for cut in range(len(body)):
        stream = proto.WatchStream()
        messages = stream.feed(body[:cut]) + stream.feed(body[cut:])
        assert [m.revision for m in messages] == [8, 9, 10]
        assert messages[0].created and not messages[0].events
        assert messages[1].events[0].type is EventType.PUT
        assert messages[1].events[0].kv.value == b"x"
        assert messages[2].events[0].type is EventType.DELETE


def test_watch_stream_refuses_endless_lines_and_garbage() -> None:
    stream = proto.WatchStream(max_line=100)
    with pytest.raises(EtcdProtocolError):
        stream.feed(b"x" * 101)
    with pytest.raises(EtcdProtocolError):
        proto.WatchStream().feed(b"not json\n")
    with pytest.raises(EtcdProtocolError):
        proto.WatchStream().feed(_line({"result": {"events": [{"type": "BOOM", "kv": {}}]}}))
    with pytest.raises(EtcdError):
        proto.WatchStream().feed(_line({"error": {"grpc_code": 14, "message": "unavailable"}}))


def test_compaction_is_reported() -> None:
    (message,) = proto.WatchStream().feed(
        _line(
            {"result": {"header": {"revision": "50"}, "compact_revision": "40", "canceled": True}}
        )
    )
    assert message.compact_revision == 40 and message.canceled


@given(st.binary(max_size=300))
def test_watch_stream_never_raises_anything_but_etcd_errors(data: bytes) -> None:
    stream = proto.WatchStream(max_line=200)
    try:
        stream.feed(data)
        stream.feed(b"\n")
    except EtcdError:
        pass
