"""Command numbering: the CmdSN window and StatSN (RFC 7143 4.2.2, 3.2.2.1; RFC 1982).

iSCSI orders non-immediate commands of a session by CmdSN, and the target
throttles the initiator by advertising MaxCmdSN. :class:`CmdSNWindow` is that
ordering and flow control as a sans-I/O object: feed it every numbered request
as it arrives, deliver what it hands back, and call :meth:`CmdSNWindow.complete`
when a delivered non-immediate request has finished, which is the only thing
that reopens the window. All comparisons use 32-bit serial arithmetic, so the
window works across the 2**32 wrap; the ``sn_*`` functions here are that
arithmetic for every iSCSI sequence number (CmdSN, StatSN, DataSN, R2TSN), in
the target and the initiator alike: plain ``<`` is wrong near the wrap.

Immediate requests (the I bit) carry the CmdSN the next non-immediate request
will use and do not consume a number (RFC 7143 3.2.2.1). They are delivered at
once whatever their CmdSN; one outside [ExpCmdSN, MaxCmdSN + 1] is counted in
``odd_immediates`` for diagnostics but still delivered, as the RFC does not ask
targets to police it. They never take a CmdSN slot, so finishing one reopens
nothing: ExpCmdSN and MaxCmdSN do not move for them.

The RFC does not limit how many immediate commands an initiator sends, but
lets the target refuse them for lack of resources (Reject reason 0x06). An
immediate SCSI command runs as a task like any other, so the window also keeps
a separate budget of ``immediate_limit`` of those in execution:
:meth:`CmdSNWindow.take_immediate` reserves one, ``complete(immediate=True)``
returns it.
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

import attrs

SERIAL_BITS = 32
SERIAL_MOD = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)

T = TypeVar("T")


def sn_add(a: int, n: int) -> int:
    """``a + n`` in serial space."""
    return (a + n) % SERIAL_MOD


def sn_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` (a - b), in (-2**31, 2**31]."""
    d = (a - b) % SERIAL_MOD
    return d - SERIAL_MOD if d > _HALF else d


def sn_lt(a: int, b: int) -> bool:
    """RFC 1982 ``a < b`` (undefined exactly half the space apart: False)."""
    d = (b - a) % SERIAL_MOD
    return 0 < d < _HALF


def sn_lte(a: int, b: int) -> bool:
    return a == b or sn_lt(a, b)


def sn_gt(a: int, b: int) -> bool:
    """RFC 1982 ``a > b``: ``b`` precedes ``a``."""
    return sn_lt(b, a)


def sn_gte(a: int, b: int) -> bool:
    return a == b or sn_lt(b, a)


class DropReason(enum.Enum):
    STALE = "CmdSN below ExpCmdSN (already received)"
    OUT_OF_WINDOW = "CmdSN beyond MaxCmdSN"
    DUPLICATE = "CmdSN already held"


@attrs.frozen
class Rejected:
    """An ``offer`` the RFC says to ignore silently; nothing was delivered."""

    cmdsn: int
    reason: DropReason


class CmdSNWindow(Generic[T]):
    """Deliver numbered requests in CmdSN order, at most ``depth`` in flight.

    ``depth`` is the number of non-immediate commands accepted and not yet
    completed (held early arrivals included). MaxCmdSN = ExpCmdSN + free - 1,
    where free = depth - outstanding; a closed window advertises
    MaxCmdSN = ExpCmdSN - 1. MaxCmdSN never moves backwards.
    """

    def __init__(self, exp_cmdsn: int, depth: int, immediate_limit: int | None = None) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._exp = exp_cmdsn % SERIAL_MOD
        self._depth = depth
        self._outstanding = 0  # delivered, not completed
        #: immediate commands in execution, and how many may be
        self._immediate = 0
        self._immediate_limit = depth if immediate_limit is None else immediate_limit
        self.refused_immediates = 0
        self._held: dict[int, T | None] = {}  # early arrivals (None: discarded by abort)
        self.dropped_stale = 0
        self.dropped_out_of_window = 0
        self.dropped_duplicate = 0
        self.odd_immediates = 0

    # -- what we advertise --------------------------------------------------------

    @property
    def exp_cmdsn(self) -> int:
        return self._exp

    @property
    def max_cmdsn(self) -> int:
        return self.edges()[1]

    def edges(self) -> tuple[int, int]:
        """(ExpCmdSN, MaxCmdSN) as every response advertises them."""
        exp = self._exp
        return exp, (exp + self._depth - self._outstanding - 1) % SERIAL_MOD

    @property
    def outstanding(self) -> int:
        """Delivered non-immediate requests not yet completed."""
        return self._outstanding

    @property
    def immediate(self) -> int:
        """Immediate commands taken (:meth:`take_immediate`) and not completed."""
        return self._immediate

    @property
    def held(self) -> int:
        """Early arrivals waiting for a gap to fill."""
        return len(self._held)

    def covers(self, cmdsn: int) -> bool:
        """Is ``cmdsn`` inside [ExpCmdSN, MaxCmdSN], i.e. acceptable now?"""
        return 0 <= sn_diff(cmdsn, self._exp) <= self._depth - self._outstanding - 1

    # -- arrivals -------------------------------------------------------------------

    def offer(self, cmdsn: int, immediate: bool, item: T) -> list[T] | Rejected:
        """Accept one arrival; return everything now deliverable, in CmdSN order."""
        cmdsn %= SERIAL_MOD
        if immediate:
            if not 0 <= sn_diff(cmdsn, self._exp) <= self._depth - self._outstanding:
                self.odd_immediates += 1
            return [item]
        if self.accept_next(cmdsn):
            return [item]
        if sn_lt(cmdsn, self._exp):
            self.dropped_stale += 1
            return Rejected(cmdsn, DropReason.STALE)
        if not self.covers(cmdsn):
            self.dropped_out_of_window += 1
            return Rejected(cmdsn, DropReason.OUT_OF_WINDOW)
        if cmdsn in self._held:
            self.dropped_duplicate += 1
            return Rejected(cmdsn, DropReason.DUPLICATE)
        self._held[cmdsn] = item
        return self._drain()

    def accept_next(self, cmdsn: int) -> bool:
        """The usual arrival of a non-immediate request: next in CmdSN order,
        nothing held behind a gap, a slot free. Then it is accepted (the
        caller delivers it) and True; else False and nothing changed, and
        :meth:`offer` decides. The hot path asks this first, which spares it
        a list per command."""
        if cmdsn == self._exp and not self._held and self._outstanding < self._depth:
            self._exp = (cmdsn + 1) % SERIAL_MOD
            self._outstanding += 1
            return True
        return False

    def discard(self, cmdsn: int) -> list[T]:
        """Treat an in-window CmdSN as received and already finished.

        RFC 7143 4.2.3.3 (ABORT TASK for a command that has not arrived): the
        number is consumed without delivery, and a late arrival with it is then
        dropped as stale or duplicate. Returns what the filled gap releases. An
        already held request with that number is dropped too.
        """
        cmdsn %= SERIAL_MOD
        if not self.covers(cmdsn):
            return []
        self._held[cmdsn] = None
        return self._drain()

    def take_immediate(self) -> bool:
        """Reserve execution room for one immediate command (then :meth:`offer`
        delivers it at once); False, counted, when ``immediate_limit`` are
        already running: the caller refuses it (Reject 0x06). Numbering and
        the advertised window are untouched either way."""
        if self._immediate >= self._immediate_limit:
            self.refused_immediates += 1
            return False
        self._immediate += 1
        return True

    def complete(self, immediate: bool = False) -> None:
        """One delivered request finished. A non-immediate one reopens its
        CmdSN slot (MaxCmdSN moves); an immediate one returns what
        :meth:`take_immediate` reserved and reopens nothing."""
        if immediate:
            if self._immediate == 0:
                raise RuntimeError("complete(immediate=True) without an immediate command")
            self._immediate -= 1
            return
        if self._outstanding == 0:
            raise RuntimeError("complete() without an outstanding command")
        self._outstanding -= 1

    def _drain(self) -> list[T]:
        ready: list[T] = []
        while self._exp in self._held:
            item = self._held.pop(self._exp)
            self._exp = sn_add(self._exp, 1)
            if item is not None:
                self._outstanding += 1
                ready.append(item)
        return ready


class StatSN:
    """Per-connection StatSN: numbers responses and tracks what was acknowledged."""

    def __init__(self, first: int) -> None:
        self._next = first % SERIAL_MOD
        self._acked = self._next  # ExpStatSN last seen from the initiator

    @property
    def next(self) -> int:
        """The StatSN the next status-bearing PDU will carry."""
        return self._next

    def take(self) -> int:
        """Number one status-bearing PDU."""
        sn = self._next
        self._next = sn_add(sn, 1)
        return sn

    def acknowledge(self, exp_statsn: int) -> bool:
        """Record an initiator's ExpStatSN; False if it is outside what we sent."""
        exp_statsn %= SERIAL_MOD
        if not (sn_lte(self._acked, exp_statsn) and sn_lte(exp_statsn, self._next)):
            return False
        self._acked = exp_statsn
        return True

    @property
    def unacknowledged(self) -> int:
        """Responses sent whose StatSN the initiator has not acknowledged."""
        return sn_diff(self._next, self._acked)
