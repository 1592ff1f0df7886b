"""RangeSet (devices/range_set.py), the BLOCKIO store's record of what it
deallocated, against a plain set of integers."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pyscst.devices.range_set import RangeSet

spans = st.tuples(st.integers(0, 64), st.integers(0, 64))
ops = st.lists(st.tuples(st.booleans(), spans), max_size=30)


@given(ops, spans, st.integers(1, 10))
def test_range_set_matches_a_set_of_points(steps: list[tuple[bool, tuple[int, int]]],
                                          query: tuple[int, int], limit: int) -> None:
    ranges = RangeSet()
    points: set[int] = set()
    for add, (a, b) in steps:
        if add:
            ranges.add(a, b)
            points |= set(range(a, b))
        else:
            ranges.remove(a, b)
            points -= set(range(a, b))
    runs = ranges.runs()
    assert {p for s, e in runs for p in range(s, e)} == points
    assert all(s < e for s, e in runs)
    assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(runs))  # disjoint
    assert bool(ranges) == bool(points)
    start, end = min(query), max(query)
    split = ranges.split(start, end, limit)
    assert len(split) <= limit
    pos = start
    for offset, length, inside in split:
        assert offset == pos and length > 0
        assert all((p in points) == inside for p in range(offset, offset + length))
        pos += length
    if len(split) < limit:
        assert pos == end  # whole query covered unless the limit cut it short
    assert all(a[2] != b[2] for a, b in itertools.pairwise(split))  # alternating


def test_range_set_examples() -> None:
    r = RangeSet()
    r.add(10, 20)
    r.add(20, 30)  # touching: one run
    assert r.runs() == [(10, 30)]
    r.remove(15, 16)
    assert r.runs() == [(10, 15), (16, 30)]
    assert r.split(0, 40, 10) == [(0, 10, False), (10, 5, True), (15, 1, False),
                                  (16, 14, True), (30, 10, False)]
    r.remove(0, 100)
    assert not r and r.runs() == []
