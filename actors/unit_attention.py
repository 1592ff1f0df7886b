"""Per-I_T_L-nexus UNIT ATTENTION queues (SAM-5 5.14, SPC-4 4.5.6).

Each nexus of a logical unit has its own queue; a condition is reported once
per nexus, on the first command that is not exempt (INQUIRY, REPORT LUNS,
REQUEST SENSE report or skip it per SPC). A reset or power-on condition
outranks and clears everything queued before it, because an initiator that
learns of a reset re-discovers the device anyway; duplicates are dropped, and
the queue is bounded so a storm of events cannot grow memory.
"""

from __future__ import annotations

from collections import deque

from scsi.sense import Asc, Sense, SenseKey

#: 29/xx conditions: a reset supersedes anything older.
_RESET_CODE = 0x29
MAX_QUEUED = 16


class UnitAttentionQueue:
    """Pending UNIT ATTENTION conditions of one I_T_L nexus, oldest first."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: deque[Sense] = deque()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, asc: Asc) -> None:
        sense = Sense.of(SenseKey.UNIT_ATTENTION, asc)
        if asc.code == _RESET_CODE:
            self._pending.clear()
        elif any(p.asc == _RESET_CODE for p in self._pending):
            return  # a pending reset already tells the initiator to look again
        if sense in self._pending:
            return
        if len(self._pending) >= MAX_QUEUED:
            self._pending.popleft()
        self._pending.append(sense)

    def pop(self) -> Sense | None:
        return self._pending.popleft() if self._pending else None

    def peek(self) -> Sense | None:
        return self._pending[0] if self._pending else None

    def clear(self) -> None:
        self._pending.clear()

    def pending(self) -> list[Sense]:
        return list(self._pending)
