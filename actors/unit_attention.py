"""Per-I_T_L-nexus UNIT ATTENTION queues (SAM-5 5.14, SPC-4 4.5.6).

Each nexus of a logical unit has its own queue; a condition is reported once
per nexus, on the first command that is not exempt (INQUIRY, REPORT LUNS,
REQUEST SENSE report or skip it per SPC). When several are pending the most
important goes first, so an initiator hears of a reset before anything else:

1. resets (29/xx): a reset also clears every older condition, because an
   initiator that learns of a reset re-discovers the device anyway;
2. what took something away from this nexus: commands cleared (2F/xx), its
   reservation or registration preempted or released (2A/03..05), in
   arrival order (a PREEMPT AND ABORT reports the preemption, then the
   commands it cleared);
3. everything else (mode parameters, capacity, INQUIRY or LUN inventory
   changed), in arrival order.

Conditions raised after a reset stay queued behind it (they are news even to
an initiator that re-discovers). Duplicates are dropped, and the queue is
bounded so a storm of events cannot grow memory: when full, the newest
condition of the lowest priority gives way.
"""

from __future__ import annotations

from pyscst.scsi.sense import Asc, Sense, SenseKey

#: 29/xx conditions: a reset supersedes anything older.
_RESET_CODE = 0x29
_CLEARED_CODE = 0x2F
_RESERVATION_CHANGES = frozenset(
    {Asc.RESERVATIONS_PREEMPTED, Asc.RESERVATIONS_RELEASED, Asc.REGISTRATIONS_PREEMPTED}
)
MAX_QUEUED = 16


def priority(asc: Asc) -> int:
    """Reporting rank of a condition: lower goes first."""
    if asc.code == _RESET_CODE:
        return 0
    if asc.code == _CLEARED_CODE or asc in _RESERVATION_CHANGES:
        return 1
    return 2


class UnitAttentionQueue:
    """Pending UNIT ATTENTION conditions of one I_T_L nexus, most important first."""

    __slots__ = ("_pending", "queued")

    def __init__(self) -> None:
        #: (rank, Sense), kept sorted by rank, arrival order within a rank
        self._pending: list[tuple[int, Sense]] = []
        #: the same list (never rebound), read-only to others: truthy while a
        #: UA is queued; the command path tests it without a __bool__ call
        self.queued: list[tuple[int, Sense]] = self._pending

    def __bool__(self) -> bool:
        return bool(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, asc: Asc) -> None:
        sense = Sense.of(SenseKey.UNIT_ATTENTION, asc)
        rank = priority(asc)
        pending = self._pending
        if rank == 0:
            pending.clear()
        elif any(s == sense for _, s in pending):
            return
        if len(pending) >= MAX_QUEUED:
            worst = max(range(len(pending)), key=lambda i: (pending[i][0], i))
            if pending[worst][0] < rank:
                return  # everything queued matters more than this
            del pending[worst]
        at = len(pending)
        while at and pending[at - 1][0] > rank:
            at -= 1
        pending.insert(at, (rank, sense))

    def pop(self) -> Sense | None:
        return self._pending.pop(0)[1] if self._pending else None

    def peek(self) -> Sense | None:
        return self._pending[0][1] if self._pending else None

    def clear(self) -> None:
        self._pending.clear()

    def pending(self) -> list[Sense]:
        return [s for _, s in self._pending]
