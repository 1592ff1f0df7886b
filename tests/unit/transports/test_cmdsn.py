"""CmdSN window and StatSN: ordering, flow control and 32-bit wrap-around."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyscst.transports.iscsi.cmdsn import (
    SERIAL_MOD,
    CmdSNWindow,
    DropReason,
    Rejected,
    StatSN,
    sn_add,
    sn_diff,
    sn_lt,
    sn_lte,
)

serials = st.integers(min_value=0, max_value=SERIAL_MOD - 1)


def window_ops(span: int) -> st.SearchStrategy[list[tuple[str, int]]]:
    """Up to 80 steps: an offer at ExpCmdSN + offset (|offset| <= span), or
    the completion of one delivered command."""
    return st.lists(
        st.one_of(
            st.tuples(st.just("offer"), st.integers(min_value=-span, max_value=span)),
            st.tuples(st.just("complete"), st.just(0)),
        ),
        max_size=80,
    )


# -- serial arithmetic -------------------------------------------------------------


@given(serials, st.integers(min_value=1, max_value=2**31 - 1))
def test_serial_lt_across_wrap(a: int, n: int) -> None:
    b = sn_add(a, n)
    assert sn_lt(a, b)
    assert not sn_lt(b, a)
    assert sn_diff(b, a) == n
    assert sn_diff(a, b) == -n
    assert sn_lte(a, b) and sn_lte(a, a)


def test_serial_wrap_examples() -> None:
    assert sn_lt(2**32 - 1, 0)
    assert sn_add(2**32 - 1, 1) == 0
    assert sn_diff(0, 2**32 - 1) == 1
    assert not sn_lt(0, 2**31)  # exactly half apart: undefined, treated as not less
    assert not sn_lt(2**31, 0)


# -- window basics -------------------------------------------------------------------


def test_in_order_delivery_and_window_advertisement() -> None:
    w: CmdSNWindow[str] = CmdSNWindow(100, depth=4)
    assert (w.exp_cmdsn, w.max_cmdsn) == (100, 103)
    assert w.offer(100, False, "a") == ["a"]
    assert (w.exp_cmdsn, w.max_cmdsn) == (101, 103)  # slot taken until complete()
    w.complete()
    assert w.max_cmdsn == 104


def test_early_arrival_is_held_until_gap_fills() -> None:
    w: CmdSNWindow[str] = CmdSNWindow(10, depth=8)
    assert w.offer(12, False, "c") == []
    assert w.offer(11, False, "b") == []
    assert w.held == 2
    assert w.offer(10, False, "a") == ["a", "b", "c"]
    assert w.held == 0 and w.outstanding == 3 and w.exp_cmdsn == 13


def test_too_high_and_too_low_are_dropped_and_counted() -> None:
    w: CmdSNWindow[str] = CmdSNWindow(5, depth=2)
    too_high = w.offer(w.max_cmdsn + 1, False, "x")
    assert isinstance(too_high, Rejected) and too_high.reason is DropReason.OUT_OF_WINDOW
    assert w.offer(5, False, "a") == ["a"]
    stale = w.offer(4, False, "old")
    assert isinstance(stale, Rejected) and stale.reason is DropReason.STALE
    again = w.offer(5, False, "a-again")
    assert isinstance(again, Rejected) and again.reason is DropReason.STALE
    assert (w.dropped_out_of_window, w.dropped_stale) == (1, 2)
    assert w.exp_cmdsn == 6  # drops never advance ExpCmdSN


def test_duplicate_of_held_command_is_dropped() -> None:
    w: CmdSNWindow[str] = CmdSNWindow(0, depth=4)
    assert w.offer(2, False, "first") == []
    dup = w.offer(2, False, "second")
    assert isinstance(dup, Rejected) and dup.reason is DropReason.DUPLICATE
    assert w.offer(0, False, "a") == ["a"]
    assert w.offer(1, False, "b") == ["b", "first"]


def test_immediate_delivered_at_once_without_consuming_a_number() -> None:
    w: CmdSNWindow[str] = CmdSNWindow(7, depth=2)
    assert w.offer(7, True, "nop") == ["nop"]
    assert w.exp_cmdsn == 7 and w.outstanding == 0
    assert w.offer(7, False, "cmd") == ["cmd"]
    assert w.odd_immediates == 0
    assert w.offer(1000, True, "odd") == ["odd"]  # delivered, but noted
    assert w.odd_immediates == 1


def test_immediate_commands_take_no_slot_and_have_their_own_budget() -> None:
    w: CmdSNWindow[str] = CmdSNWindow(50, depth=2, immediate_limit=2)
    edges = w.edges()
    assert w.take_immediate() and w.offer(50, True, "tur") == ["tur"]
    assert w.take_immediate() and w.offer(50, True, "read") == ["read"]
    assert w.edges() == edges and w.outstanding == 0 and w.immediate == 2
    assert not w.take_immediate()  # the third is refused (Reject 0x06) ...
    assert w.refused_immediates == 1 and w.immediate == 2
    assert w.offer(50, False, "a") == ["a"]  # ... while numbered commands flow
    w.complete(immediate=True)  # an immediate finishing reopens no CmdSN slot
    assert w.edges() == (51, 51) and w.immediate == 1
    w.complete()
    assert w.edges() == (51, 52)
    w.complete(immediate=True)
    with pytest.raises(RuntimeError):
        w.complete(immediate=True)
    assert w.edges() == (51, 52) and (w.outstanding, w.immediate) == (0, 0)


def test_window_closes_when_lu_is_slow_and_reopens_on_complete() -> None:
    w: CmdSNWindow[int] = CmdSNWindow(0, depth=2)
    assert w.offer(0, False, 0) == [0]
    assert w.offer(1, False, 1) == [1]
    assert w.max_cmdsn == sn_add(w.exp_cmdsn, -1)  # closed: MaxCmdSN = ExpCmdSN - 1
    assert isinstance(w.offer(2, False, 2), Rejected)
    w.complete()
    assert w.max_cmdsn == 2
    assert w.offer(2, False, 2) == [2]


def test_complete_without_outstanding_is_a_bug() -> None:
    w: CmdSNWindow[int] = CmdSNWindow(0, depth=1)
    with pytest.raises(RuntimeError):
        w.complete()


def test_discard_fills_a_gap_for_an_aborted_missing_command() -> None:
    w: CmdSNWindow[str] = CmdSNWindow(20, depth=4)
    assert w.offer(21, False, "b") == []
    assert w.covers(20) and not w.covers(24)
    assert w.discard(20) == ["b"]
    late = w.offer(20, False, "a")
    assert isinstance(late, Rejected) and late.reason is DropReason.STALE
    assert w.outstanding == 1  # only "b" holds a slot
    assert w.discard(1000) == []


def test_wraps_at_2_pow_32() -> None:
    w: CmdSNWindow[int] = CmdSNWindow(2**32 - 2, depth=4)
    assert w.max_cmdsn == 1
    assert w.offer(0, False, 0) == []
    assert w.offer(2**32 - 1, False, -1) == []
    assert w.offer(2**32 - 2, False, -2) == [-2, -1, 0]
    assert w.exp_cmdsn == 1
    assert isinstance(w.offer(2**32 - 1, False, 9), Rejected)


# -- properties -------------------------------------------------------------------


@given(
    start=serials,
    depth=st.integers(min_value=1, max_value=32),
    data=st.data(),
)
def test_any_permutation_delivers_in_order_exactly_once(
    start: int, depth: int, data: st.DataObject
) -> None:
    w: CmdSNWindow[int] = CmdSNWindow(start, depth)
    n = data.draw(st.integers(min_value=1, max_value=depth))
    order = data.draw(st.permutations(list(range(n))))
    dups = data.draw(st.lists(st.sampled_from(list(range(n))), max_size=5))
    delivered: list[int] = []
    for i in [*order, *dups]:
        got = w.offer(sn_add(start, i), False, i)
        if not isinstance(got, Rejected):
            delivered.extend(got)
    assert delivered == list(range(n))
    assert w.exp_cmdsn == sn_add(start, n)


@given(
    start=serials,
    depth=st.integers(min_value=1, max_value=16),
    ops=window_ops(40),
)
def test_never_more_than_depth_in_flight_and_never_out_of_window(
    start: int, depth: int, ops: list[tuple[str, int]]
) -> None:
    w: CmdSNWindow[int] = CmdSNWindow(start, depth)
    delivered: list[int] = []
    last_max = w.max_cmdsn
    for op, offset in ops:
        if op == "complete":
            if w.outstanding:
                w.complete()
        else:
            sn = sn_add(w.exp_cmdsn, offset)
            in_window = w.covers(sn)
            got = w.offer(sn, False, sn)
            if not in_window:
                assert isinstance(got, Rejected)
            elif not isinstance(got, Rejected):
                delivered.extend(got)
        assert w.outstanding + w.held <= depth
        assert sn_lte(last_max, w.max_cmdsn)  # MaxCmdSN never goes backwards
        last_max = w.max_cmdsn
    expected = [sn_add(start, i) for i in range(len(delivered))]
    assert delivered == expected
    assert len(set(delivered)) == len(delivered)


@given(
    start=serials,
    depth=st.integers(min_value=1, max_value=16),
    ops=window_ops(20),
)
def test_accept_next_then_offer_is_the_same_window_as_offer_alone(
    start: int, depth: int, ops: list[tuple[str, int]]
) -> None:
    """The hot path asks ``accept_next`` first and falls back to ``offer``: the
    two windows must deliver, hold, drop and advertise exactly alike."""
    plain: CmdSNWindow[int] = CmdSNWindow(start, depth)
    fast: CmdSNWindow[int] = CmdSNWindow(start, depth)
    accepted = 0
    for op, offset in ops:
        if op == "complete":
            if plain.outstanding:
                plain.complete()
                fast.complete()
        else:
            sn = sn_add(plain.exp_cmdsn, offset)
            want = plain.offer(sn, False, sn)
            if fast.accept_next(sn):
                accepted += 1
                got: list[int] | Rejected = [sn]
            else:
                got = fast.offer(sn, False, sn)
            assert got == want
        assert fast.edges() == plain.edges()
        assert (fast.outstanding, fast.held) == (plain.outstanding, plain.held)
    # (the in-order arrival, the common case, is what accept_next takes)
    if ops and ops[0] == ("offer", 0):
        assert accepted >= 1


@given(
    start=serials,
    depth=st.integers(min_value=1, max_value=16),
    limit=st.integers(min_value=1, max_value=8),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("offer"), st.integers(min_value=-20, max_value=20)),
            st.tuples(st.just("immediate"), st.integers(min_value=-(2**31), max_value=2**31)),
            st.tuples(st.just("complete"), st.integers(min_value=0, max_value=64)),
        ),
        max_size=100,
    ),
)
def test_immediate_commands_interleaved_never_move_the_window(
    start: int, depth: int, limit: int, ops: list[tuple[str, int]]
) -> None:
    """Immediate commands (any CmdSN at all) delivered among numbered ones:
    each is delivered at once or refused for lack of room, none changes
    ExpCmdSN or MaxCmdSN, none takes or frees a CmdSN slot, and finishing
    every delivered request exactly once (either kind, any order) never
    trips the window's bookkeeping."""
    w: CmdSNWindow[tuple[bool, int]] = CmdSNWindow(start, depth, immediate_limit=limit)
    running: list[tuple[bool, int]] = []  # delivered, not completed
    numbered: list[int] = []
    last_max = w.max_cmdsn
    for op, arg in ops:
        edges = w.edges()
        slots = (w.outstanding, w.held)
        if op == "immediate":
            sn = sn_add(w.exp_cmdsn, arg)
            if w.take_immediate():
                assert w.offer(sn, True, (True, sn)) == [(True, sn)]
                running.append((True, sn))
            else:
                assert w.immediate == limit
            assert w.edges() == edges and (w.outstanding, w.held) == slots
        elif op == "offer":
            sn = sn_add(w.exp_cmdsn, arg)
            got = w.offer(sn, False, (False, sn))
            if not isinstance(got, Rejected):
                running.extend(got)
                numbered.extend(n for _, n in got)
        elif running:
            immediate, _ = running.pop(arg % len(running))
            w.complete(immediate)
            if immediate:
                assert w.edges() == edges and (w.outstanding, w.held) == slots
        assert w.immediate == sum(1 for imm, _ in running if imm) <= limit
        assert w.outstanding == sum(1 for imm, _ in running if not imm)
        assert w.outstanding + w.held <= depth
        assert sn_lte(last_max, w.max_cmdsn)
        last_max = w.max_cmdsn
    assert numbered == [sn_add(start, i) for i in range(len(numbered))]
    for immediate, _ in running:
        w.complete(immediate)
    assert (w.outstanding, w.immediate) == (0, 0)


# -- StatSN -------------------------------------------------------------------------


def test_statsn_numbers_and_acknowledges_across_wrap() -> None:
    s = StatSN(2**32 - 1)
    assert s.take() == 2**32 - 1
    assert s.take() == 0
    assert s.next == 1
    assert s.unacknowledged == 2
    assert s.acknowledge(0)
    assert s.unacknowledged == 1
    assert not s.acknowledge(5)  # beyond anything sent
    assert not s.acknowledge(2**32 - 1)  # going backwards
    assert s.acknowledge(1) and s.unacknowledged == 0
