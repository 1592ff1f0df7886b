"""The sans-I/O transfer core (transports/iscsi/transfer.py), alone: Data-In
segmentation and residuals, R2T planning, Data-Out acceptance; and the
connection's two inline fast answers give the bytes the core gives."""

from __future__ import annotations

import struct
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyscst.scsi.command import DataDirection, Nexus, ScsiCommand, TaskAttribute
from pyscst.scsi.sense import Status
from pyscst.transports.iscsi import pdu
from pyscst.transports.iscsi.connection import IscsiCommand, IscsiConnection
from pyscst.transports.iscsi.params import SessionParams
from pyscst.transports.iscsi.pdu_constants import RESERVED_TAG, Opcode
from pyscst.transports.iscsi.transfer import (
    DataOutBurst,
    R2TPlan,
    data_in_segments,
    residual,
    response_frames,
    solicited_error,
    unsolicited_error,
)

BHS = struct.Struct(">BBBBIQIIIIIIII")
NEXUS = Nexus.iscsi("iqn.2026-12.org.example:i", 1, "iqn.2026-12.org.pyscst:t", 1)
ITT, LUN_RAW, STATSN, EXP, MX = 0x1234, 0x0001_0000_0000_0000, 77, 10, 41


def fields(header: bytes) -> dict[str, int]:
    names = "op b1 b2 status lens lun itt ttt statsn exp mx sn off resid".split()
    return dict(zip(names, BHS.unpack(header), strict=True))


def answer(produced: int, expected: int, mrdsl: int, max_burst: int, **kw: Any) -> list[Any]:
    data = bytes(i & 0xFF for i in range(produced))
    args: dict[str, Any] = dict(
        itt=ITT, lun_raw=LUN_RAW, status=Status.GOOD, sense=None, data=data, read=True,
        transfer_length=produced, expected_length=expected, mrdsl=mrdsl, max_burst=max_burst,
        statsn=STATSN, expcmdsn=EXP, maxcmdsn=MX,
    )  # fmt: skip
    args.update(kw)
    return response_frames(**args)


SIZES = st.integers(0, 3 * 65536)
MRDSL = st.integers(512, 65536)
BURST = st.integers(512, 262144)


@settings(max_examples=300, deadline=None)
@given(SIZES, SIZES, MRDSL, BURST)
def test_good_read_data_in_covers_exactly_the_bytes(
    produced: int, expected: int, mrdsl: int, max_burst: int
) -> None:
    frames = answer(produced, expected, mrdsl, max_burst)
    data = bytes(i & 0xFF for i in range(produced))
    over, under = produced > expected, produced < expected
    count = abs(produced - expected)
    *first, (last_header, last_segment) = frames
    last = fields(last_header)
    moved = min(produced, expected)
    if moved == 0:
        # nothing to carry: one SCSI Response with the status and residual
        assert not first and last_segment is None
        assert last["op"] == Opcode.SCSI_RESPONSE and last["sn"] == 0
    else:
        got = b"".join(bytes(seg) for _, seg in frames if seg is not None)
        assert got == data[:moved]
        offset = 0
        since_final = 0
        for datasn, (header, seg) in enumerate(frames):
            f = fields(header)
            assert f["op"] == Opcode.DATA_IN and f["sn"] == datasn and f["off"] == offset
            assert f["lens"] == len(seg) and 0 < len(seg) <= mrdsl
            assert f["ttt"] == RESERVED_TAG and f["itt"] == ITT and f["lun"] == LUN_RAW
            is_last = datasn == len(frames) - 1
            # status (S) only in the last one, with F; StatSN only there
            assert bool(f["b1"] & 0x01) == is_last
            assert (f["statsn"] == STATSN) if is_last else f["statsn"] == 0
            since_final += len(seg)
            assert since_final <= max_burst  # a sequence is at most MaxBurstLength
            if f["b1"] & 0x80:
                since_final = 0
            offset += len(seg)
        assert last["b1"] & 0x80
    assert bool(last["b1"] & 0x04) == over and bool(last["b1"] & 0x02) == under
    assert last["resid"] == count and last["status"] == Status.GOOD
    assert last["statsn"] == STATSN and (last["exp"], last["mx"]) == (EXP, MX)
    assert residual(produced, expected) == (over, under, count)


@settings(max_examples=100, deadline=None)
@given(SIZES, SIZES, MRDSL, BURST)
def test_check_condition_after_data_goes_in_a_scsi_response(
    produced: int, expected: int, mrdsl: int, max_burst: int
) -> None:
    sense = bytes([0x70, 0, 3]) + bytes(15)
    frames = answer(
        produced, expected, mrdsl, max_burst, status=Status.CHECK_CONDITION, sense=sense
    )
    *data_in, (header, segment) = frames
    f = fields(header)
    assert f["op"] == Opcode.SCSI_RESPONSE and f["status"] == Status.CHECK_CONDITION
    assert f["sn"] == len(data_in)  # ExpDataSN: the Data-Ins before it
    assert segment is not None and bytes(segment) == len(sense).to_bytes(2, "big") + sense
    for h, _ in data_in:
        assert not fields(h)["b1"] & 0x01 and fields(h)["statsn"] == 0
    assert sum(len(seg) for _, seg in data_in) == min(produced, expected)


def test_data_from_a_write_is_never_sent_back() -> None:
    (header, segment), = answer(4096, 4096, 8192, 65536, read=False)  # fmt: skip
    f = fields(header)
    assert f["op"] == Opcode.SCSI_RESPONSE and segment is None and f["resid"] == 0


def test_no_data_residual_comes_from_the_transfer_length() -> None:
    (header, _), = answer(0, 4096, 8192, 65536, data=None, transfer_length=1024)  # fmt: skip
    f = fields(header)
    assert f["b1"] & 0x02 and f["resid"] == 3072


@given(st.integers(0, 1 << 20), st.integers(512, 1 << 16), st.integers(512, 1 << 18))
def test_data_in_segments_tile_the_range(length: int, mrdsl: int, max_burst: int) -> None:
    segs = data_in_segments(length, mrdsl, max_burst)
    assert [s[0] for s in segs] == ([0] + [s[1] for s in segs[:-1]] if segs else [])
    assert (segs[-1][1] if segs else 0) == length
    assert all(0 < end - off <= mrdsl for off, end, _ in segs)
    assert not segs or segs[-1][2]


# -- the connection's inline fast answers are the core's bytes ---------------------------


def _shell(
    max_send: int = 8192, max_burst: int = 262144
) -> tuple[IscsiConnection, list[list[Any]]]:
    """A connection without a socket: what it queues is collected."""
    from pyscst.transports.iscsi.cmdsn import CmdSNWindow

    conn = IscsiConnection.__new__(IscsiConnection)
    out: list[list[Any]] = []
    conn._queue = out.append  # type: ignore[method-assign,assignment]
    conn._itt = {}
    conn._statsn = STATSN
    window: CmdSNWindow[Any] = CmdSNWindow(EXP, MX - EXP + 1)
    window.accept_next(EXP)  # (the command each test answers: _respond completes it)
    conn._window = window
    conn._max_send = max_send
    conn._whole_read = min(max_send, max_burst)  # as _full_feature sets it
    conn._header_digest = conn._data_digest = False
    conn.params = attrs.evolve(SessionParams(), max_burst_length=max_burst)
    return conn, out


def _command(conn: IscsiConnection, edtl: int, direction: DataDirection) -> IscsiCommand:
    cmd = IscsiCommand(
        ITT, LUN_RAW, cdb=bytes(10), lun=1, attr=TaskAttribute.SIMPLE, expected_length=edtl,
        direction=direction, nexus=NEXUS, transport=conn,
    )  # fmt: skip
    cmd.transfer_length = edtl
    return cmd


def test_iscsi_command_sets_every_field_scsi_command_does() -> None:
    """IscsiCommand sets ScsiCommand's fields itself (no super().__init__ on
    the hot path): the two must agree, slot by slot, should either change."""
    conn, _ = _shell(max_send=8192)
    args = (bytes(10), 1, ITT, TaskAttribute.ORDERED, 4096, DataDirection.WRITE, NEXUS, conn)
    base = ScsiCommand(*args)
    cmd = IscsiCommand(ITT, LUN_RAW, bytes(10), 1, TaskAttribute.ORDERED, 4096,
                       DataDirection.WRITE, NEXUS, conn)  # fmt: skip
    for name in ScsiCommand.__slots__:
        assert getattr(cmd, name) == getattr(base, name), name
    assert cmd.lun_raw == LUN_RAW


@pytest.mark.parametrize("read", [True, False])
def test_an_answer_frees_the_itt_and_the_cmdsn_slot(read: bool) -> None:
    """_respond finishes the command itself (the hot path's inline _finish):
    its ITT is free again and its CmdSN slot reopens MaxCmdSN."""
    conn, out = _shell(max_send=8192)
    direction = DataDirection.READ if read else DataDirection.WRITE
    cmd = _command(conn, 4096, direction)
    conn._itt[ITT] = cmd
    window = conn._window
    assert window is not None and window.outstanding == 1
    conn._respond(cmd, Status.GOOD, None, bytes(4096) if read else None)
    assert cmd.finished and ITT not in conn._itt
    assert window.outstanding == 0
    header = bytes(out[0][0])
    assert struct.unpack_from(">III", header, 24) == (STATSN, EXP + 1, EXP + 1 + MX - EXP)
    assert conn._statsn == STATSN + 1


@given(st.integers(1, 8192).map(lambda n: n * 4))
def test_inline_whole_read_is_the_cores_answer(length: int) -> None:
    conn, out = _shell(max_send=32768)
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)
    cmd = _command(conn, length, DataDirection.READ)
    conn._respond(cmd, Status.GOOD, None, data)
    exp, mx = conn._window.edges()  # type: ignore[union-attr]
    core = answer(length, length, 32768, 262144, data=data, expcmdsn=exp, maxcmdsn=mx)
    assert [b"".join(bytes(b) for b in out[0])] == [h + bytes(s) for h, s in core]


def test_inline_good_without_data_is_the_cores_answer() -> None:
    conn, out = _shell()
    cmd = _command(conn, 4096, DataDirection.WRITE)
    conn._respond(cmd, Status.GOOD, None, None)
    exp, mx = conn._window.edges()  # type: ignore[union-attr]
    core = answer(
        0, 4096, 8192, 65536, data=None, read=False, transfer_length=4096, expcmdsn=exp,
        maxcmdsn=mx,
    )  # fmt: skip
    assert out == [[core[0][0]]]
    # and both are what the generic encoder makes of a SCSI Response record
    record = pdu.ScsiResponse(itt=ITT, statsn=STATSN, expcmdsn=exp, maxcmdsn=mx)
    assert pdu.encode_pdu(record) == core[0][0]


@given(st.integers(1, 6).map(lambda n: n * 2048))
def test_no_data_in_sequence_exceeds_max_burst_length(length: int) -> None:
    """Regression: with an initiator MaxRecvDataSegmentLength above
    MaxBurstLength, a read was sent in PDUs (even one) longer than a Data-In
    sequence may be; now no PDU crosses a MaxBurstLength boundary and F ends
    each sequence."""
    conn, out = _shell(max_send=8192, max_burst=4096)
    cmd = _command(conn, length, DataDirection.READ)
    conn._respond(cmd, Status.GOOD, None, bytes(length))
    headers = [bytes(b) for b in out[0] if len(b) == 48 and b[0] & 0x3F == Opcode.DATA_IN]
    sequence = 0
    for h in headers:
        sequence += fields(h)["lens"]
        assert sequence <= 4096
        if fields(h)["b1"] & 0x80:
            sequence = 0
    assert sum(fields(h)["lens"] for h in headers) == length


# -- R2T planning --------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    st.integers(0, 1 << 20),
    st.integers(0, 1 << 20),
    st.integers(512, 1 << 18),
    st.integers(1, 8),
    st.randoms(use_true_random=False),
)
def test_r2ts_cover_exactly_what_is_left_within_the_limits(
    first: int, rest: int, max_burst: int, max_outstanding: int, rnd: Any
) -> None:
    """What immediate and unsolicited data brought (``first`` bytes) is never
    asked for again; the rest is, in order, in bursts of at most MaxBurstLength,
    never more than MaxOutstandingR2T unanswered."""
    total = first + rest
    plan = R2TPlan(first, total, max_burst, max_outstanding)
    asked: list[tuple[int, int]] = []
    outstanding = 0
    r2tsn = 0
    while not plan.done:
        issued = plan.issue()
        for sn, offset, length in issued:
            assert sn == r2tsn and 0 < length <= max_burst
            r2tsn += 1
            asked.append((offset, length))
        outstanding += len(issued)
        assert 0 < outstanding <= max_outstanding
        for _ in range(rnd.randint(1, outstanding)):
            plan.completed()
            outstanding -= 1
    offset = first
    for start, length in asked:
        assert start == offset
        offset += length
    assert offset == total or (rest == 0 and not asked)


# -- Data-Out acceptance ----------------------------------------------------------------


@given(st.integers(1, 1 << 18), st.lists(st.integers(1, 1 << 14), min_size=1))
def test_an_in_order_burst_is_accepted_to_its_end(length: int, cuts: list[int]) -> None:
    burst = DataOutBurst(ITT, 8192, length)
    offset, datasn = 8192, 0
    for cut in cuts:
        n = min(cut, burst.end - offset)
        if n == 0:
            break
        assert solicited_error(burst, 5, ITT, datasn, offset, n) is None
        offset += n
        datasn += 1
    assert burst.next_offset == offset and burst.next_datasn == datasn
    assert burst.complete == (offset == burst.end)


@given(
    st.integers(1, 1 << 16),
    st.integers(0, 8),
    st.integers(-(1 << 16), 1 << 16),
    st.integers(1, 1 << 16),
    st.integers(0, 1 << 20),
)
def test_data_out_out_of_order_or_out_of_range_is_refused(
    length: int, datasn: int, offset_delta: int, n: int, done: int
) -> None:
    burst = DataOutBurst(ITT, 4096, length)
    burst.next_offset = 4096 + min(done, length - 1)
    burst.next_datasn = 3
    before = (burst.next_offset, burst.next_datasn)
    offset = burst.next_offset + offset_delta
    error = solicited_error(burst, 5, ITT, datasn, offset, n)
    fits = offset == before[0] and offset + n <= burst.end and datasn == 3
    assert (error is None) == fits
    if error is not None:
        assert (burst.next_offset, burst.next_datasn) == before  # a refusal changes nothing


def test_data_out_for_a_ttt_of_no_r2t_or_of_another_task_is_refused() -> None:
    assert "TTT 0x5" in (solicited_error(None, 5, ITT, 0, 0, 512) or "")
    other = DataOutBurst(ITT + 1, 0, 4096)
    assert solicited_error(other, 5, ITT, 0, 0, 512) is not None
    assert other.next_offset == 0


@given(
    st.integers(0, 1 << 16),
    st.integers(0, 1 << 16),
    st.integers(0, 1 << 16),
    st.integers(0, 4),
    st.integers(0, 4),
)
def test_unsolicited_data_out_continues_in_order_within_the_first_burst(
    received: int, offset: int, n: int, datasn: int, next_datasn: int
) -> None:
    unsol_end = 65536
    error = unsolicited_error(offset, n, datasn, received, unsol_end, next_datasn)
    fits = offset == received and offset + n <= unsol_end and datasn == next_datasn
    assert (error is None) == fits


def test_r2t_header_is_the_records_encoding() -> None:
    """The connection sends R2Ts through the header encoder, not a record:
    the same bytes."""
    from pyscst.transports.iscsi.pdu_codec import encode_r2t_header

    record = pdu.R2T(
        lun=LUN_RAW, itt=ITT, ttt=9, statsn=STATSN, expcmdsn=EXP, maxcmdsn=MX, r2tsn=2,
        buffer_offset=65536, desired_data_transfer_length=8192,
    )  # fmt: skip
    header = encode_r2t_header(
        ITT, 9, 2, 65536, 8192, lun=LUN_RAW, statsn=STATSN, expcmdsn=EXP, maxcmdsn=MX
    )
    assert pdu.encode_pdu(record) == header
