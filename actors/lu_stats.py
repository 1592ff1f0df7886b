"""I/O statistics for logical units and I_T_L nexuses, cheap enough for the hot path.

Operators ask "how busy is this disk, how slow, how many errors" (issue 4:
per-device and per-session statistics). Recording one command costs a few
integer adds and one list-index increment: latencies go into a fixed-size
log-linear histogram (four sub-buckets per power of two of nanoseconds, so a
percentile is never below the truth and at most 25% above it; tests/unit/actors/test_lu_stats.py)
instead of a growing list of samples.
The owning actor keeps the mutable :class:`IoStats`; everyone else gets a
frozen :class:`StatsSnapshot` copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

#: 4 sub-buckets per power of two, up to 2**48 ns (~3 days): plenty.
SUB_BITS = 2
BUCKETS = (48 + 1) << SUB_BITS


_SUB_COUNT = 1 << SUB_BITS
_SUB_MASK = _SUB_COUNT - 1
_LAST = BUCKETS - 1


def bucket_of(ns: int) -> int:
    """Histogram bucket of a latency in nanoseconds (monotone in ``ns``)."""
    if ns < _SUB_COUNT:
        return max(ns, 0)
    bits = ns.bit_length()
    index = (bits - SUB_BITS) << SUB_BITS | (ns >> (bits - 1 - SUB_BITS)) & _SUB_MASK
    return index if index < BUCKETS else _LAST


def bucket_upper_ns(index: int) -> int:
    """The largest latency (ns) that lands in bucket ``index``."""
    if index < (1 << SUB_BITS):
        return index
    exponent = (index >> SUB_BITS) + SUB_BITS - 1
    sub = index & ((1 << SUB_BITS) - 1)
    low = (1 << exponent) | (sub << (exponent - SUB_BITS))
    return low + (1 << (exponent - SUB_BITS)) - 1


class IoStats:
    """Mutable counters of one LU or one I_T_L nexus; owned by the LU actor."""

    __slots__ = (
        "bytes_read", "bytes_written", "errors", "histogram", "max_ns", "total_ns",
    )  # fmt: skip

    def __init__(self) -> None:
        self.errors = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.max_ns = 0
        self.total_ns = 0  # the latency sum (Prometheus histograms' _sum)
        self.histogram = [0] * BUCKETS

    @property
    def commands(self) -> int:
        """Commands recorded: each lands in exactly one histogram bucket, so
        ``record`` keeps no counter of its own (it runs once per command)."""
        return sum(self.histogram)

    def record(self, ns: int, read: int, written: int, error: bool) -> None:
        # (a command moves data one way or none: skip the zero adds)
        if read:
            self.bytes_read += read
        if written:
            self.bytes_written += written
        if error:
            self.errors += 1
        if ns > self.max_ns:
            self.max_ns = ns
        self.total_ns += ns
        # bucket_of(ns), inline: this runs once per command
        if ns < _SUB_COUNT:
            index = max(ns, 0)
        else:
            bits = ns.bit_length()
            index = (bits - SUB_BITS) << SUB_BITS | (ns >> (bits - 1 - SUB_BITS)) & _SUB_MASK
            if index >= BUCKETS:
                index = _LAST
        self.histogram[index] += 1

    def merge(self, other: IoStats) -> None:
        """Add ``other``'s counts to these (a nexus that went away)."""
        self.errors += other.errors
        self.bytes_read += other.bytes_read
        self.bytes_written += other.bytes_written
        self.max_ns = max(self.max_ns, other.max_ns)
        self.total_ns += other.total_ns
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            commands=self.commands,
            errors=self.errors,
            bytes_read=self.bytes_read,
            bytes_written=self.bytes_written,
            max_ns=self.max_ns,
            histogram=tuple(self.histogram),
            total_ns=self.total_ns,
        )


@attrs.frozen
class StatsSnapshot:
    """A copy of :class:`IoStats` at one moment; snapshots add up."""

    commands: int = 0
    errors: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    max_ns: int = 0
    histogram: tuple[int, ...] = (0,) * BUCKETS
    total_ns: int = 0

    @staticmethod
    def total(parts: Iterable[StatsSnapshot]) -> StatsSnapshot:
        out = StatsSnapshot()
        for part in parts:
            out = StatsSnapshot(
                commands=out.commands + part.commands,
                errors=out.errors + part.errors,
                bytes_read=out.bytes_read + part.bytes_read,
                bytes_written=out.bytes_written + part.bytes_written,
                max_ns=max(out.max_ns, part.max_ns),
                histogram=tuple(a + b for a, b in zip(out.histogram, part.histogram, strict=True)),
                total_ns=out.total_ns + part.total_ns,
            )
        return out

    def percentile_us(self, fraction: float) -> float:
        """Upper bound of the latency below which ``fraction`` of commands finished (µs)."""
        counted = sum(self.histogram)
        if counted == 0:
            return 0.0
        rank = max(1, round(fraction * counted + 0.4999))
        seen = 0
        for index, count in enumerate(self.histogram):
            seen += count
            if seen >= rank:
                return min(bucket_upper_ns(index), self.max_ns) / 1000
        return self.max_ns / 1000

    def as_dict(self) -> dict[str, Any]:
        """The control protocol's view: counters and latency p50/p90/p99/max in µs."""
        return {
            "commands": self.commands,
            "errors": self.errors,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "latency_us": {
                "p50": round(self.percentile_us(0.50), 1),
                "p90": round(self.percentile_us(0.90), 1),
                "p99": round(self.percentile_us(0.99), 1),
                "max": round(self.max_ns / 1000, 1),
            },
        }
