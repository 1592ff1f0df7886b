"""A set of byte ranges, kept as sorted disjoint half-open runs.

Why: a raw block device cannot say which of its blocks are deallocated
(there is no SEEK_HOLE on a block device), so the BLOCKIO store remembers
what it deallocated itself (UNMAP, WRITE SAME with UNMAP, SANITIZE BLOCK
ERASE) until a write lands there; GET LBA STATUS reads the answer from here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right


class RangeSet:
    """Disjoint, non-adjacent ``[start, end)`` runs in ``starts``/``ends`` order."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._starts)

    def runs(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def add(self, start: int, end: int) -> None:
        """Include ``[start, end)``, merging with runs it overlaps or touches."""
        if end <= start:
            return
        i = bisect_left(self._ends, start)  # first run ending at or after start
        j = bisect_right(self._starts, end)  # runs from i to j-1 touch [start, end]
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def remove(self, start: int, end: int) -> None:
        """Exclude ``[start, end)``, splitting a run that spans it."""
        if end <= start or not self._starts:
            return
        i = bisect_right(self._ends, start)  # first run ending after start
        j = bisect_left(self._starts, end)  # runs from i to j-1 overlap [start, end)
        if i >= j:
            return
        starts: list[int] = []
        ends: list[int] = []
        if self._starts[i] < start:
            starts.append(self._starts[i])
            ends.append(start)
        if self._ends[j - 1] > end:
            starts.append(end)
            ends.append(self._ends[j - 1])
        self._starts[i:j] = starts
        self._ends[i:j] = ends

    def split(self, start: int, end: int, limit: int) -> list[tuple[int, int, bool]]:
        """``[start, end)`` as at most ``limit`` runs ``(offset, length, inside)``
        in order, alternating between bytes outside and inside the set."""
        out: list[tuple[int, int, bool]] = []
        pos = start
        i = bisect_right(self._ends, start)
        while pos < end and len(out) < limit:
            if i < len(self._starts) and self._starts[i] <= pos:
                stop = min(self._ends[i], end)
                out.append((pos, stop - pos, True))
                i += 1
            else:
                stop = min(self._starts[i], end) if i < len(self._starts) else end
                out.append((pos, stop - pos, False))
            pos = stop
        return out
