"""The initiator's Command and Data-Out PDUs, and a target's MaxRecvDataSegmentLength.

The pass-through backend cuts a write's data-out into as many PDUs as the
backend target declares it takes (tgt: 8 KiB, 15 Data-Outs for the R2T of a
128 KiB write); their headers are packed from a common part. Whatever the
cut, digests and padding, the PDUs must decode to exactly the bytes asked
for, in order, numbered, the last one final.
"""

from __future__ import annotations

import itertools

import attrs
import pytest
import trio

from pyscst.scsi.lun import encode_lun
from pyscst.transports.iscsi import pdu
from pyscst.transports.iscsi.initiator import Initiator, InitiatorError, SessionParams, _Task
from pyscst.transports.iscsi.pdu import R2T, DataOut, LoginResponse, PduReader, ScsiCommand
from pyscst.transports.iscsi.textkeys import encode_text

DATA = bytes(range(251)) * 600  # (not a power of two: offsets show)


def _initiator(stream: trio.SocketStream, step: int, digests: bool) -> Initiator:
    params = SessionParams(
        header_digest=digests, data_digest=digests, target_max_recv_data_segment_length=step,
        max_recv_data_segment_length=262144, max_burst_length=262144,
        first_burst_length=65536, initial_r2t=True, immediate_data=True,
    )  # fmt: skip
    return Initiator(stream, PduReader(), params, {}, isid=1, tsih=1, cmdsn=1, expstatsn=9,
                     expcmdsn=1, maxcmdsn=16, discovery=False)  # fmt: skip


@pytest.mark.parametrize("step", [512, 1000, 8192, 262144])
@pytest.mark.parametrize("span", [(0, len(DATA)), (8192, len(DATA)), (8192, 8193), (3, 1027)])
@pytest.mark.parametrize("digests", [False, True])
async def test_data_outs_carry_exactly_the_range_asked(
    step: int, span: tuple[int, int], digests: bool
) -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        ini = _initiator(trio.SocketStream(a), step, digests)
        task = _Task(0x1234, ScsiCommand, lun=3)
        task.data_out = memoryview(DATA)
        start, end = span
        wire = b"".join(bytes(x) for x in ini._data_outs(task, 0x77, start, end))
    reader = PduReader(header_digest=digests, data_digest=digests,
                       max_recv_data_segment_length=1 << 20)  # fmt: skip
    reader.feed(wire)
    events = list(reader)
    assert all(isinstance(e, DataOut) for e in events)
    offset = start
    for n, e in enumerate(events):
        assert isinstance(e, DataOut)
        assert (e.itt, e.ttt, e.datasn, e.buffer_offset, e.expstatsn) == (0x1234, 0x77, n,
                                                                         offset, 9)
        assert e.lun == int.from_bytes(encode_lun(3), "big")
        assert 0 < len(e.data) <= step and e.final == (n == len(events) - 1)
        assert bytes(e.data) == DATA[offset : offset + len(e.data)]
        offset += len(e.data)
    assert offset == end and reader.buffered == 0


@pytest.mark.parametrize("cdb_length", [6, 10, 16])
@pytest.mark.parametrize(("read_length", "read", "write"),
                         [(4096, None, None), (0, None, None), (0, True, None), (0, None, True),
                          (512, False, None)])  # fmt: skip
@pytest.mark.parametrize("attr", [0, 1, 2, 4])
@pytest.mark.parametrize("immediate", [False, True])
@pytest.mark.parametrize("digests", [False, True])
async def test_a_command_without_data_out_is_the_pdu_the_codec_makes(
    cdb_length: int, read_length: int, read: bool | None, write: bool | None, attr: int,
    immediate: bool, digests: bool,
) -> None:
    """(the usual forwarded read is packed by a shortcut: the same bytes)"""
    a, b = trio.socket.socketpair()
    with a, b:
        ini = _initiator(trio.SocketStream(a), 8192, digests)
        task = _Task(0x1234, ScsiCommand, lun=3)
        task.read_length = read_length
        cdb = bytes(range(0x28, 0x28 + cdb_length))
        lun_field = int.from_bytes(encode_lun(3), "big")
        wire = b"".join(bytes(x) for x in ini._build_command(
            task, lun_field, cdb, attr, immediate, 77, read, write))  # fmt: skip
    expected = pdu.encode_pdu(ScsiCommand(
        immediate=immediate, final=True,
        read=read_length > 0 if read is None else read, write=bool(write), attr=attr,
        lun=lun_field, itt=0x1234, expected_data_transfer_length=read_length, cmdsn=77,
        expstatsn=9, cdb=cdb,
    ), digests, digests)  # fmt: skip
    assert wire == expected


@pytest.mark.parametrize("declared", ["0", "511", "16777216"])
async def test_a_target_declaring_an_unusable_max_recv_data_segment_length_is_refused(
    declared: str,
) -> None:
    """0 would have every write cut into empty Data-Outs for ever."""

    async def target(stream: trio.SocketStream) -> None:
        reader = PduReader()
        while (event := reader.next_event()) is None:
            reader.feed(await stream.receive_some(65536))
        assert isinstance(event, pdu.LoginRequest)
        await stream.send_all(pdu.encode_pdu(LoginResponse(
            transit=True, csg=1, nsg=3, isid=event.isid, tsih=1, itt=event.itt,
            expcmdsn=1, maxcmdsn=16,
            data=encode_text([("MaxRecvDataSegmentLength", declared)]),
        )))  # fmt: skip
        await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, target, 0)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5), pytest.raises(InitiatorError, match="MaxRecvDataSegment"):
            await Initiator.connect("127.0.0.1", port, target_name="iqn.x:y",
                                    security_phase=False)  # fmt: skip
        nursery.cancel_scope.cancel()


def _cuts(cuts: tuple[int, ...]) -> list[bytes | bytearray | memoryview]:
    """DATA cut at ``cuts``, the pieces of several buffer types (as a front
    connection hands a write's data-out on: immediate data, then each
    Data-Out's segment)."""
    bounds = [0, *cuts, len(DATA)]
    kinds = (bytes, bytearray, memoryview)
    return [kinds[i % 3](DATA[a:b]) for i, (a, b) in enumerate(itertools.pairwise(bounds))]


PIECE_CUTS = [(65536,), (100, 8192, 8193, 65536), (8192 * 3,), (1, 2, 3, 4, 5, 100000),
              (0, 65536, 65536, 140000)]  # fmt: skip


@pytest.mark.parametrize("step", [512, 1000, 8192, 262144])
@pytest.mark.parametrize("cuts", PIECE_CUTS)
@pytest.mark.parametrize("digests", [False, True])
@pytest.mark.parametrize("initial_r2t", [True, False])
async def test_a_data_out_in_pieces_goes_out_exactly_as_one_buffer_would(
    step: int, cuts: tuple[int, ...], digests: bool, initial_r2t: bool
) -> None:
    """The pass-through backend hands the initiator a write's data-out in
    the pieces it arrived in: the command's immediate data, the unsolicited
    Data-Outs and those answering an R2T decode to exactly DATA, wherever
    the pieces are cut (empty ones too) and however the PDUs cut them."""
    a, b = trio.socket.socketpair()
    with a, b:
        ini = _initiator(trio.SocketStream(a), step, digests)
        ini.params = attrs.evolve(ini.params, initial_r2t=initial_r2t)
        pieces = _cuts(cuts)
        task = _Task(0x1234, ScsiCommand, lun=3)
        joined = ini._pieces(task, list(pieces), True)
        if digests or step & 3:
            assert task.pieces is None and bytes(joined) == DATA  # (framed one buffer per PDU)
            task.data_out = memoryview(joined)
            task.out_len = len(DATA)
        else:
            assert task.pieces is not None and task.out_len == len(DATA) and not len(joined)
        lun_field = int.from_bytes(encode_lun(3), "big")
        cdb = bytes([0x2A]) + bytes(9)
        first = ini._build_command(task, lun_field, cdb, 0, False, 77)
        unsolicited = min(step, 65536) if initial_r2t else 65536  # (FirstBurstLength)
        later = ini._data_outs(task, 0x77, unsolicited, len(DATA))
        wire = b"".join(bytes(x) for x in first + later)
        if task.pieces is not None:  # the pieces' bytes themselves, not copies
            owners = {id(p.obj) for p in task.pieces}
            assert any(isinstance(x, memoryview) and id(x.obj) in owners for x in later)
    reader = PduReader(header_digest=digests, data_digest=digests,
                       max_recv_data_segment_length=1 << 20)  # fmt: skip
    reader.feed(wire)
    events = list(reader)
    command = events[0]
    assert isinstance(command, ScsiCommand)
    assert command.expected_data_transfer_length == len(DATA) and command.write
    got = bytearray(command.data)
    assert len(got) == min(step, 65536)
    for e in events[1:]:
        assert isinstance(e, DataOut) and 0 < len(e.data) <= step
        if e.ttt != 0x77:  # unsolicited: right after the immediate data, in order
            assert e.buffer_offset == len(got)
            got += e.data
    assert bytes(got) == DATA[:unsolicited]
    assert reader.buffered == 0
    # the Data-Outs answering the R2T: exactly DATA[unsolicited:]
    solicited = b"".join(bytes(e.data) for e in events[1:] if isinstance(e, DataOut)
                         and e.ttt == 0x77)  # fmt: skip
    assert solicited == DATA[unsolicited:]


async def test_an_r2t_beyond_a_data_out_in_pieces_fails_the_command() -> None:
    """(hostile target) the R2T is checked against all the pieces' length."""
    a, b = trio.socket.socketpair()
    with a, b:
        ini = _initiator(trio.SocketStream(a), 8192, False)
        task = _Task(0x1234, ScsiCommand, lun=3)
        ini._pieces(task, [DATA[:1000], DATA[1000:3000]], True)
        ini._tasks[0x1234] = task
        ini._on_r2t(R2T(itt=0x1234, ttt=5, buffer_offset=2048, desired_data_transfer_length=953))
        assert task.finished and isinstance(task.error, InitiatorError)
