"""The PDU codec: round trips, stream framing, digests and hostile input."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyscst.transports.iscsi import pdu
from pyscst.transports.iscsi.digest import digest_bytes
from pyscst.transports.iscsi.pdu import (
    R2T,
    DataIn,
    DataOut,
    LoginResponse,
    NopIn,
    PduReader,
    ProtocolError,
    RejectReason,
    ScsiCommand,
    ScsiResponse,
)

U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)

_FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "attr": st.integers(0, 7),
    "function": st.integers(0, 0x7F),
    "reason_code": st.integers(0, 0x7F),
    "snack_type": st.integers(0, 0x0F),
    "csg": st.integers(0, 3),
    "nsg": st.integers(0, 3),
    "isid": st.integers(0, (1 << 48) - 1),
    "lun": st.integers(0, (1 << 64) - 1),
    "cdb": st.binary(min_size=16, max_size=16) | st.binary(min_size=17, max_size=80),
    "data": st.binary(max_size=300),
    "ahs": st.just(b"") | U32.map(lambda v: struct.pack(">HBBI", 5, 2, 0, v)),
}
for _name in (
    "version_max version_min version_active status response reason status_class "
    "status_detail async_event async_vcode"
).split():
    _FIELD_STRATEGIES[_name] = U8
for _name in "tsih cid time2wait time2retain parameter1 parameter2 parameter3".split():
    _FIELD_STRATEGIES[_name] = U16


def _strategy_for(cls: type) -> st.SearchStrategy[Any]:
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for field in attrs.fields(cls):
        if field.name in _FIELD_STRATEGIES:
            kwargs[field.name] = _FIELD_STRATEGIES[field.name]
        elif field.type in (bool, "bool"):
            kwargs[field.name] = st.booleans()
        else:
            kwargs[field.name] = U32
    return st.builds(cls, **kwargs)


any_pdu = st.one_of([_strategy_for(cls) for cls in pdu.PDU_CLASSES])
EVENT_TYPES = (ProtocolError, *pdu.PDU_CLASSES)


def _chunks(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in itertools.pairwise(points)]


def _read_all(reader: PduReader, chunks: list[bytes]) -> list[Any]:
    events: list[Any] = []
    for chunk in chunks:
        reader.feed(chunk)
        events.extend(reader)
    return events


@settings(max_examples=400)
@given(any_pdu, st.booleans(), st.booleans(), st.lists(st.integers(0, 10_000), max_size=8))
def test_round_trip_every_type_any_chunking(
    p: pdu.Pdu, header_digest: bool, data_digest: bool, cuts: list[int]
) -> None:
    wire = pdu.encode_pdu(p, header_digest=header_digest, data_digest=data_digest)
    reader = PduReader(
        header_digest=header_digest, data_digest=data_digest, max_recv_data_segment_length=512
    )
    events = _read_all(reader, _chunks(wire, cuts))
    assert events == [p]
    assert type(events[0]) is type(p)
    assert not reader.in_pdu and reader.buffered == 0


@given(any_pdu, st.booleans(), st.booleans())
def test_wire_length_and_padding(p: pdu.Pdu, header_digest: bool, data_digest: bool) -> None:
    wire = pdu.encode_pdu(p, header_digest=header_digest, data_digest=data_digest)
    opcode, ahs_len, dsl = pdu.decode_bhs(wire[:48])
    assert opcode == p.opcode
    data = bytes(getattr(p, "data", b""))
    assert dsl == len(data)
    padded = (dsl + 3) // 4 * 4
    expected = 48 + ahs_len + 4 * header_digest + padded + (4 * data_digest if dsl else 0)
    assert len(wire) == expected
    start = 48 + ahs_len + 4 * header_digest
    assert wire[start : start + dsl] == data
    assert wire[start + dsl : start + padded] == bytes(padded - dsl)
    if header_digest:
        assert wire[48 + ahs_len : start] == digest_bytes(wire[: 48 + ahs_len])
    if data_digest and dsl:
        assert wire[-4:] == digest_bytes(wire[start : start + padded])


@settings(max_examples=150)
@given(
    st.lists(any_pdu, min_size=1, max_size=6),
    st.booleans(),
    st.lists(st.integers(0, 100_000), max_size=20),
)
def test_stream_of_pdus(pdus: list[pdu.Pdu], digests: bool, cuts: list[int]) -> None:
    wire = b"".join(pdu.encode_pdu(p, digests, digests) for p in pdus)
    reader = PduReader(header_digest=digests, data_digest=digests, max_recv_data_segment_length=512)
    assert _read_all(reader, _chunks(wire, cuts)) == pdus


def test_rfc3720_read10_example_decodes() -> None:
    # RFC 3720 B.4 "An iSCSI - SCSI Read (10) Command PDU" and its header CRC.
    wire = bytes.fromhex(
        "01c00000000000000000000000000000"
        "14000000000004000000001400000018"
        "28000000000000000200000000000000"
    )
    reader = PduReader(header_digest=True)
    reader.feed(wire + bytes.fromhex("563a96d9"))
    [cmd] = list(reader)
    assert isinstance(cmd, ScsiCommand)
    assert (cmd.final, cmd.read, cmd.write, cmd.immediate) == (True, True, False, False)
    assert cmd.itt == 0x14000000
    assert cmd.expected_data_transfer_length == 1024
    assert (cmd.cmdsn, cmd.expstatsn) == (0x14, 0x18)
    assert cmd.cdb[:10] == bytes.fromhex("28000000000000000200")
    assert pdu.encode_pdu(cmd) == wire


def test_extended_cdb_goes_to_type1_ahs() -> None:
    cdb = bytes(range(1, 33))  # a 32-byte CDB
    wire = pdu.encode_pdu(ScsiCommand(cdb=cdb, itt=7))
    _, ahs_len, _ = pdu.decode_bhs(wire[:48])
    assert ahs_len == 20  # 4-byte AHS header + reserved + 16 bytes, padded
    length, kind = struct.unpack_from(">HB", wire, 48)
    assert (length, kind) == (17, 1)
    assert wire[32:48] == cdb[:16]
    assert wire[52:68] == cdb[16:]
    assert pdu.decode_pdu(wire[:48], wire[48 : 48 + ahs_len]) == ScsiCommand(cdb=cdb, itt=7)


def test_bad_ahs_is_invalid_pdu_field() -> None:
    header = bytearray(pdu.encode_pdu(ScsiCommand(itt=3)))
    header[4] = 1  # one AHS word...
    wire = bytes(header) + struct.pack(">HBB", 200, 1, 0)  # ...claiming 200 bytes
    reader = PduReader()
    reader.feed(wire)
    [event] = list(reader)
    assert isinstance(event, ProtocolError)
    assert event.reject_reason == RejectReason.INVALID_PDU_FIELD
    assert event.header == bytes(header)
    assert not event.fatal


@settings(max_examples=300)
@given(
    st.binary(min_size=0, max_size=2000),
    st.booleans(),
    st.booleans(),
    st.lists(st.integers(0, 2000), max_size=10),
)
def test_garbage_only_gives_events(
    garbage: bytes, header_digest: bool, data_digest: bool, cuts: list[int]
) -> None:
    reader = PduReader(
        header_digest=header_digest, data_digest=data_digest, max_recv_data_segment_length=256
    )
    events = _read_all(reader, _chunks(garbage, cuts))
    for i, event in enumerate(events):
        assert isinstance(event, EVENT_TYPES)
        if isinstance(event, ProtocolError) and event.fatal:
            assert i == len(events) - 1
            assert reader.broken
    assert reader.buffered <= len(garbage)


@given(st.binary(min_size=48, max_size=48), st.integers(0, 0xFFFFFF))
def test_garbage_header_with_any_length_never_raises(bhs: bytes, length: int) -> None:
    raw = bytearray(bhs)
    raw[5:8] = length.to_bytes(3, "big")
    reader = PduReader()
    reader.feed(bytes(raw) + bytes(4096))
    for event in reader:
        assert isinstance(event, EVENT_TYPES)


def test_oversize_segment_rejected_before_buffering() -> None:
    reader = PduReader(max_recv_data_segment_length=8192)
    big = (1 << 24) - 1
    header = bytearray(pdu.encode_pdu(DataOut(itt=9, ttt=1)))
    header[5:8] = big.to_bytes(3, "big")
    reader.feed(bytes(header))
    [event] = list(reader)  # reported as soon as the BHS is in
    assert isinstance(event, ProtocolError)
    assert event.reject_reason == RejectReason.PROTOCOL_ERROR
    assert event.header == bytes(header)
    assert not event.fatal
    # the segment that follows is dropped as it arrives, never stored
    remaining = big + 1  # padded to 4
    chunk = bytes(65536)
    while remaining > 0:
        piece = chunk[: min(len(chunk), remaining)]
        reader.feed(piece)
        remaining -= len(piece)
        assert list(reader) == []
        assert reader.buffered == 0
        assert reader._acc is None
    follow = NopIn(itt=5, data=b"ping")
    reader.feed(pdu.encode_pdu(follow))
    assert list(reader) == [follow]


def test_max_recv_data_segment_length_is_switchable() -> None:
    reader = PduReader(max_recv_data_segment_length=8192)
    p = DataOut(itt=1, data=bytes(9000))
    reader.feed(pdu.encode_pdu(p))
    [event] = list(reader)
    assert isinstance(event, ProtocolError)
    reader.max_recv_data_segment_length = 65536
    reader.feed(pdu.encode_pdu(p))
    assert list(reader) == [p]


def test_unknown_opcode_is_command_not_supported_and_skipped() -> None:
    bogus = bytearray(pdu.encode_pdu(NopIn(data=b"abcdef")))
    bogus[0] = 0x1C  # not an iSCSI opcode
    follow = R2T(itt=1, ttt=2, desired_data_transfer_length=512)
    reader = PduReader()
    reader.feed(bytes(bogus) + pdu.encode_pdu(follow))
    events = list(reader)
    assert isinstance(events[0], ProtocolError)
    assert events[0].reject_reason == RejectReason.COMMAND_NOT_SUPPORTED
    assert events[0].header == bytes(bogus[:48])
    assert events[1:] == [follow]


def test_header_digest_error_is_fatal() -> None:
    wire = bytearray(pdu.encode_pdu(NopIn(itt=1), header_digest=True))
    wire[20] ^= 0x01
    reader = PduReader(header_digest=True)
    reader.feed(bytes(wire) + pdu.encode_pdu(NopIn(itt=2), header_digest=True))
    events = list(reader)
    assert len(events) == 1
    assert isinstance(events[0], ProtocolError)
    assert events[0].fatal and events[0].reject_reason == RejectReason.DATA_DIGEST_ERROR
    assert reader.broken
    reader.feed(pdu.encode_pdu(NopIn(itt=3), header_digest=True))
    assert list(reader) == []


def test_data_digest_error_rejects_and_continues() -> None:
    bad = bytearray(pdu.encode_pdu(DataOut(itt=4, data=b"x" * 100), True, True))
    bad[48 + 4 + 10] ^= 0x80
    good = DataOut(itt=5, data=b"y" * 10)
    reader = PduReader(header_digest=True, data_digest=True)
    reader.feed(bytes(bad) + pdu.encode_pdu(good, True, True))
    events = list(reader)
    assert isinstance(events[0], ProtocolError)
    assert events[0].reject_reason == RejectReason.DATA_DIGEST_ERROR
    assert not events[0].fatal
    assert events[0].header == bytes(bad[:48])
    assert events[1:] == [good]


def test_digests_switch_between_pdus_in_one_chunk() -> None:
    login = LoginResponse(transit=True, csg=1, nsg=3, itt=1, data=b"HeaderDigest=CRC32C\x00")
    nop = NopIn(itt=0xFFFFFFFF, ttt=77, statsn=2)
    reader = PduReader()
    reader.feed(pdu.encode_pdu(login) + pdu.encode_pdu(nop, True, True))
    assert reader.next_event() == login
    reader.header_digest = reader.data_digest = True
    assert reader.next_event() == nop
    assert reader.next_event() is None


def test_bulk_data_is_zero_copy_within_a_chunk_and_copied_once_across() -> None:
    p = DataOut(itt=1, data=bytes(range(256)) * 16)
    wire = pdu.encode_pdu(p)
    reader = PduReader(max_recv_data_segment_length=65536)
    reader.feed(wire)
    [event] = list(reader)
    assert isinstance(event, DataOut) and isinstance(event.data, memoryview)
    assert event.data.obj is wire  # a view of the fed bytes, no copy
    assert event.data.readonly
    reader.feed(wire[:1000])
    reader.feed(wire[1000:])
    [event] = list(reader)
    assert isinstance(event, DataOut) and isinstance(event.data, memoryview)
    assert event.data == p.data
    assert event.data.obj is not wire


def test_control_pdus_get_plain_bytes() -> None:
    p = pdu.TextResponse(itt=1, data=b"TargetName=iqn.x\x00")
    reader = PduReader()
    reader.feed(pdu.encode_pdu(p))
    [event] = list(reader)
    assert isinstance(event, pdu.TextResponse)
    assert type(event.data) is bytes


def test_mutable_input_is_not_aliased() -> None:
    p = DataIn(itt=1, data=b"abcd" * 8)
    buf = bytearray(pdu.encode_pdu(p))
    reader = PduReader()
    reader.feed(buf)
    buf[48:] = bytes(len(buf) - 48)  # the caller reuses its buffer
    assert list(reader) == [p]


@given(
    U32, U32, U32, st.integers(0, 0xFFFFFF), st.booleans(), st.booleans(), st.booleans(), U8,
    st.booleans(), st.booleans(), U32, U32, U32, U32, st.integers(0, (1 << 64) - 1), U32,
)  # fmt: skip
def test_fast_data_in_header_matches_record(
    itt: int, datasn: int, offset: int, length: int, final: bool, ack: bool, s_bit: bool,
    status: int, over: bool, under: bool, resid: int, statsn: int, exp: int, mx: int,
    lun: int, ttt: int,
) -> None:  # fmt: skip
    header = pdu.encode_data_in_header(
        itt, datasn, offset, length, lun=lun, ttt=ttt, final=final, acknowledge=ack,
        status_present=s_bit, status=status, overflow=over, underflow=under,
        residual_count=resid, statsn=statsn, expcmdsn=exp, maxcmdsn=mx,
    )  # fmt: skip
    record = DataIn(
        final, ack, over, under, s_bit, status, lun, itt, ttt, statsn, exp, mx, datasn,
        offset, resid, bytes(length % 64),
    )  # fmt: skip
    expected = bytearray(pdu.encode_pdu(record)[:48])
    expected[5:8] = length.to_bytes(3, "big")
    assert header == bytes(expected)


@given(U32, U8, U8, st.integers(0, 0xFFFF), U32, U32, U32, U32, st.booleans(), st.booleans(), U32)
def test_fast_scsi_response_header_matches_record(
    itt: int, status: int, response: int, length: int, statsn: int, exp: int, mx: int,
    expdatasn: int, over: bool, under: bool, resid: int,
) -> None:  # fmt: skip
    header = pdu.encode_scsi_response_header(
        itt, status, response=response, data_length=length, statsn=statsn, expcmdsn=exp,
        maxcmdsn=mx, expdatasn=expdatasn, overflow=over, underflow=under, residual_count=resid,
    )  # fmt: skip
    record = ScsiResponse(
        itt=itt, response=response, status=status, overflow=over, underflow=under,
        statsn=statsn, expcmdsn=exp, maxcmdsn=mx, expdatasn=expdatasn, residual_count=resid,
        data=bytes(length),
    )  # fmt: skip
    assert header == pdu.encode_pdu(record)[:48]


@given(U32, U32, U32, U32, U32, st.integers(0, (1 << 64) - 1), U32, U32, U32)
def test_fast_r2t_header_matches_record(
    itt: int, ttt: int, r2tsn: int, offset: int, length: int, lun: int, statsn: int,
    exp: int, mx: int,
) -> None:  # fmt: skip
    header = pdu.encode_r2t_header(
        itt, ttt, r2tsn, offset, length, lun=lun, statsn=statsn, expcmdsn=exp, maxcmdsn=mx
    )
    assert header == pdu.encode_pdu(R2T(lun, itt, ttt, statsn, exp, mx, r2tsn, offset, length))


@given(any_pdu, st.booleans(), st.booleans())
def test_encode_frame_equals_encode_pdu(p: pdu.Pdu, hd: bool, dd: bool) -> None:
    plain = pdu.encode_pdu(p)
    _, ahs_len, dsl = pdu.decode_bhs(plain)
    header = plain[: 48 + ahs_len]
    data = memoryview(plain)[48 + ahs_len : 48 + ahs_len + dsl]
    framed = pdu.encode_frame(header, data, header_digest=hd, data_digest=dd)
    assert framed == pdu.encode_pdu(p, hd, dd)


@given(st.binary(max_size=252), st.binary(max_size=64))
def test_sense_segment_round_trip(sense: bytes, response_data: bytes) -> None:
    segment = pdu.encode_sense_segment(sense, response_data)
    if not sense and not response_data:
        assert segment == b""
    else:
        assert int.from_bytes(segment[:2], "big") == len(sense)
    assert pdu.parse_sense_segment(segment) == sense


def test_encode_rejects_what_cannot_be_framed() -> None:
    with pytest.raises(ValueError):
        pdu.encode_pdu(ScsiCommand(ahs=b"\x00\x05\x02"))  # not 4-byte aligned
    with pytest.raises(ValueError):
        pdu.encode_pdu(DataOut(data=memoryview(bytes(1 << 24))))


@given(U32, st.integers(1, (1 << 31) - 1))
def test_serial_number_arithmetic(a: int, n: int) -> None:
    b = pdu.sn_add(a, n)
    assert pdu.sn_lt(a, b) and pdu.sn_lte(a, b) and pdu.sn_gt(b, a) and pdu.sn_gte(b, a)
    assert not pdu.sn_lt(b, a) and not pdu.sn_lt(a, a) and pdu.sn_lte(a, a)
    assert pdu.sn_diff(b, a) == n and pdu.sn_diff(a, b) == -n


def test_serial_number_wrap() -> None:
    assert pdu.sn_add(0xFFFFFFFF, 1) == 0
    assert pdu.sn_lt(0xFFFFFFF0, 5)
    assert not pdu.sn_lt(5, 0xFFFFFFF0)
    assert not pdu.sn_lt(0, 1 << 31) and not pdu.sn_lt(1 << 31, 0)  # undefined: neither


# -- what a reader expects (full feature phase) ----------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["one-chunk", "byte-by-byte"])
def test_reader_refuses_opcodes_it_does_not_expect_with_the_header_as_sent(split: bool) -> None:
    from pyscst.transports.iscsi.pdu_codec import PduReader, ProtocolError, encode_pdu

    login = encode_pdu(pdu.LoginRequest(transit=True, csg=1, nsg=3, itt=5, data=b"A=B\x00"))
    nop_in = encode_pdu(pdu.NopIn(itt=6, statsn=1))
    unknown = bytes([0x1C]) + bytes(3) + (8).to_bytes(4, "big") + bytes(40) + bytes(8)
    nop = encode_pdu(pdu.NopOut(immediate=True, itt=7, data=b"ping"))
    reader = PduReader()
    reader.expect({0x00, 0x01})
    wire = login + nop_in + unknown + nop
    events: list[Any] = []
    for chunk in ([bytes([b]) for b in wire] if split else [wire]):
        reader.feed(chunk)
        events.extend(reader)
    assert [type(e) for e in events] == [ProtocolError, ProtocolError, ProtocolError, pdu.NopOut]
    assert [e.reject_reason for e in events[:3]] == [0x04, 0x04, 0x05]
    assert [e.header for e in events[:3]] == [login[:48], nop_in[:48], unknown[:48]]
    assert not any(e.fatal for e in events[:3])
    assert events[3].data == b"ping"  # the segments were skipped: still framed
    reader.expect(None)
    reader.feed(login)
    assert isinstance(reader.next_event(), pdu.LoginRequest)


# --- a data segment read by the caller (the pass-through backend's Data-In) --------


def test_an_incomplete_data_in_segment_can_be_read_by_the_caller() -> None:
    """The initiator reads a Data-In's segment straight into its buffer: the
    reader hands it the header and what it holds of the segment, and goes on
    framing after the caller took the rest from the stream itself."""
    payload = bytes(range(256)) * 64
    wire = pdu.encode_pdu(DataIn(itt=7, buffer_offset=512, data=payload))
    after = pdu.encode_pdu(NopIn(itt=9))
    reader = PduReader(max_recv_data_segment_length=65536)
    reader.detach_opcode = pdu.Opcode.DATA_IN
    reader.feed(wire[:48 + 1000])
    reader.feed(wire[48 + 1000 : 48 + 3000])
    assert list(reader) == []
    assert not reader.in_pdu  # (stopped before the header)
    bhs = reader.incomplete_bulk(pdu.Opcode.DATA_IN)
    assert bhs is not None and bytes(bhs) == wire[:48]
    assert reader.incomplete_bulk(pdu.Opcode.DATA_OUT) is None  # (another opcode)
    parts = reader.detach_segment()
    assert b"".join(parts) == payload[:3000]
    assert reader.buffered == 0 and not reader.in_pdu
    reader.feed(after)  # (the caller read payload[3000:] itself)
    assert list(reader) == [NopIn(itt=9)]


@pytest.mark.parametrize(
    "case",
    ["whole", "header_split", "padded", "digest", "over_limit", "empty", "mid_pdu"],
)
def test_a_segment_is_left_to_the_reader_outside_the_plain_case(case: str) -> None:
    data = b"x" * (1002 if case == "padded" else 0 if case == "empty" else 4096)
    wire = pdu.encode_pdu(DataIn(itt=7, data=data))
    reader = PduReader(max_recv_data_segment_length=1024 if case == "over_limit" else 65536)
    reader.detach_opcode = pdu.Opcode.DATA_IN
    if case == "whole":
        reader.feed(wire[:100])
        reader.feed(wire[100:])  # all there (in two chunks): nothing to read elsewhere
    elif case == "header_split":
        reader.feed(wire[:40])
    elif case == "digest":
        reader.data_digest = True
        reader.feed(wire[:100])
    elif case == "mid_pdu":
        reader.feed(wire[:20])
        assert list(reader) == []
        reader.feed(wire[20:100])
    else:
        reader.feed(wire[:100] if data else wire)
    if case == "whole":
        assert reader.incomplete_bulk(pdu.Opcode.DATA_IN) is None
        assert [event.data for event in reader] == [data]  # type: ignore[union-attr]
    if case == "mid_pdu":  # (the reader took the header already: it finishes the PDU)
        assert list(reader) == []
    assert reader.incomplete_bulk(pdu.Opcode.DATA_IN) is None


def test_a_segment_not_taken_by_the_caller_is_decoded_once_all_of_it_is_there() -> None:
    payload = bytes(range(256)) * 16
    wire = pdu.encode_pdu(DataIn(itt=7, data=payload))
    reader = PduReader(max_recv_data_segment_length=65536)
    reader.detach_opcode = pdu.Opcode.DATA_IN
    for i in range(0, len(wire), 1000):
        assert list(reader) == []  # (held before the header, not consumed)
        reader.feed(wire[i : i + 1000])
    [event] = list(reader)
    assert isinstance(event, DataIn) and event.data == payload and reader.buffered == 0
