"""The sans-I/O request core (transports/iscsi/requests.py), alone: what each
TMF function does to the commands a connection holds for CmdSN order, and
long text answers handed out in pieces; plus the one TMF function and response enums."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.transports.iscsi import pdu
from pyscst.transports.iscsi.pdu_constants import RESERVED_TAG
from pyscst.transports.iscsi.requests import Held, TextExchange, plan_tmf

F = TmfFunction


def test_one_tmf_function_enum_for_target_initiator_and_lu() -> None:
    assert pdu.TmfFunction is TmfFunction
    assert pdu.TmfResponse is TmfResponse  # one response enum too (RFC 7143 11.6.1)
    assert [int(f) for f in TmfFunction] == list(range(1, 13))  # RFC 7143 11.5.1, RFC 7144


@pytest.mark.parametrize(
    ("function", "held", "lun", "tag", "whole"),
    [
        (F.ABORT_TASK, Held.ABORT_TASK, 3, 0x55, False),
        (F.ABORT_TASK_SET, Held.ABORT, 3, 0, False),
        (F.CLEAR_TASK_SET, Held.ABORT, 3, 0, False),
        (F.LOGICAL_UNIT_RESET, Held.ABORT, 3, 0, False),
        (F.TARGET_WARM_RESET, Held.ABORT, 0, 0, True),
        (F.TARGET_COLD_RESET, Held.ABORT, 0, 0, True),
        (F.I_T_NEXUS_RESET, Held.ABORT, 0, 0, True),
        (F.QUERY_TASK, Held.QUERY, 3, 0x55, False),
        (F.QUERY_TASK_SET, Held.QUERY, 3, 0x55, False),
        (F.CLEAR_ACA, Held.NONE, 3, 0x55, False),
        (F.TASK_REASSIGN, Held.NONE, 3, 0x55, False),
        (F.QUERY_ASYNC_EVENT, Held.NONE, 3, 0x55, False),
        (99, Held.NONE, 3, 0x55, False),
    ],
)
def test_tmf_plan(function: int, held: Held, lun: int, tag: int, whole: bool) -> None:
    plan = plan_tmf(function, 3, 0x55)
    assert (plan.held, plan.lun, plan.tag, plan.whole_nexus) == (held, lun, tag, whole)
    assert plan.function == function
    assert plan.ends_connection == (function == F.TARGET_COLD_RESET)


def test_tmf_plan_which_held_commands() -> None:
    assert plan_tmf(F.ABORT_TASK_SET, 3, 0).holds(3, 7)
    assert not plan_tmf(F.ABORT_TASK_SET, 3, 0).holds(4, 7)
    assert plan_tmf(F.I_T_NEXUS_RESET, 3, 0).holds(4, 7)
    assert plan_tmf(F.QUERY_TASK, 3, 7).holds(3, 7)
    assert not plan_tmf(F.QUERY_TASK, 3, 7).holds(3, 8)
    assert plan_tmf(F.QUERY_TASK_SET, 3, 7).holds(3, 8)
    # a LUN field no LU can have concerns no held command, not those with one like it
    unaddressable = plan_tmf(F.LOGICAL_UNIT_RESET, None, 0)
    assert unaddressable.lun == -1 and not unaddressable.holds(-1, 7)


def _exchange() -> TextExchange:
    counter = itertools.count(1)
    return TextExchange(lambda: next(counter))


@given(st.lists(st.binary(max_size=64), max_size=12))
def test_text_pieces_hand_out_the_whole_answer_in_order(chunks: list[bytes]) -> None:
    ex = _exchange()
    piece = ex.start(chunks)
    got = [piece.data]
    seen = set()
    while not piece.final:
        assert piece.ttt != RESERVED_TAG and piece.ttt not in seen
        seen.add(piece.ttt)
        ttt = piece.ttt
        next_piece = ex.resume(ttt)
        assert next_piece is not None
        assert ex.resume(ttt) is None  # each TTT fetches once
        piece = next_piece
        got.append(piece.data)
    assert piece.ttt == RESERVED_TAG
    assert got == (chunks or [b""])


def test_a_new_text_request_ends_the_unfinished_answer() -> None:
    ex = _exchange()
    first = ex.start([b"a", b"b", b"c"])
    assert not first.final
    ex.abandon()
    assert ex.resume(first.ttt) is None
    second = ex.start([b"x", b"y"])
    assert ex.resume(first.ttt) is None
    last = ex.resume(second.ttt)
    assert last is not None and last.final and last.data == b"y"
    assert ex.resume(0x1234) is None
