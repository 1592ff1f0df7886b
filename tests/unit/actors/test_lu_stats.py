"""Latency histograms of the statistics ops: bounded error, no sample kept.

``pyscst admin stats`` reports percentiles from a fixed log-linear histogram;
these properties pin down how far from the truth they may be (never below the
true percentile, at most a quarter above it, never above the maximum seen).
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pyscst.actors.lu_stats import BUCKETS, IoStats, StatsSnapshot, bucket_of, bucket_upper_ns

_ns = st.integers(0, 2**47)


@given(_ns, _ns)
def test_buckets_are_monotone_and_cover_the_value(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert 0 <= bucket_of(lo) <= bucket_of(hi) < BUCKETS
    upper = bucket_upper_ns(bucket_of(hi))
    assert hi <= upper <= hi + hi // 4 + 1


@settings(max_examples=200)
@given(st.lists(st.integers(1, 10**10), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.9, 0.99]))
def test_percentiles_are_never_low_and_at_most_a_quarter_high(
    samples: list[int], fraction: float
) -> None:
    stats = IoStats()
    for ns in samples:
        stats.record(ns, 0, 0, False)
    snap = stats.snapshot()
    ordered = sorted(samples)
    true = ordered[max(1, math.ceil(fraction * len(ordered))) - 1]
    reported_ns = snap.percentile_us(fraction) * 1000
    assert true <= reported_ns + 1e-6
    assert reported_ns <= min(true * 1.25 + 1, max(samples)) + 1e-6


@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 2**20),
                          st.integers(0, 2**20), st.booleans()), max_size=50),
       st.integers(0, 50))
def test_snapshots_add_up(records: list[tuple[int, int, int, bool]], cut: int) -> None:
    whole, first, second = IoStats(), IoStats(), IoStats()
    for i, rec in enumerate(records):
        whole.record(*rec)
        (first if i < cut else second).record(*rec)
    total = StatsSnapshot.total([first.snapshot(), second.snapshot()])
    assert total == whole.snapshot()
    view = total.as_dict()
    assert view["commands"] == len(records)
    assert view["errors"] == sum(1 for r in records if r[3])
    assert view["bytes_read"] == sum(r[1] for r in records)
    assert view["latency_us"]["max"] == round(max((r[0] for r in records), default=0) / 1000, 1)


@given(st.integers(-5, 2**60))
def test_record_counts_a_latency_in_the_bucket_bucket_of_names(ns: int) -> None:
    # (record carries bucket_of's arithmetic inline, once per command: the two
    # must never disagree, negatives and the overflow bucket included)
    stats = IoStats()
    stats.record(ns, 0, 0, False)
    assert stats.histogram[bucket_of(ns)] == 1 and stats.commands == 1
