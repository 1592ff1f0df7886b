"""Who may hold a connection before logging in: the pre-login admission gate.

Anyone who reaches the port can open TCP connections and send nothing (or half
a header). Each one costs the daemon a descriptor and a task until the login
timeout; a few thousand of them exhaust the fd limit and no real initiator can
log in. The gate bounds what unauthenticated peers hold, per source address and
in total (per portal):

- a newcomer from an address already holding ``per_address`` pre-login
  connections is refused (closed at once): one host cannot fill the table;
- when the table is full, the oldest connection that has made no progress (no
  complete Login Request yet) is evicted to make room, so an attacker spread
  over many addresses cannot lock a real initiator out by getting there first;
  only when every entry has made progress is the newcomer refused.

Sans-I/O: the portal asks, the connection reports progress and departure; the
gate only keeps the bookkeeping (insertion order = age), so it is tested
without sockets or clocks.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable

import attrs


class Verdict(enum.Enum):
    ADMIT = "admit"
    #: the newcomer's address holds too many pre-login connections
    REFUSE_ADDRESS = "refuse_address"
    #: the table is full and every entry has made progress
    REFUSE_FULL = "refuse_full"


@attrs.frozen
class Admission:
    """The gate's answer: the verdict and, when room was made, who must go."""

    verdict: Verdict
    evict: Hashable | None = None


@attrs.define
class _Entry:
    address: str
    progress: bool = False


class PreloginGate:
    """The pre-login connections of one portal, oldest first."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._per_address: dict[str, int] = {}
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, address: str) -> int:
        return self._per_address.get(address, 0)

    def address_full(self, address: str, per_address: int) -> bool:
        """True (and counted as a refusal) when ``address`` may open no more:
        asked before a connection actor is even built for the newcomer."""
        if self._per_address.get(address, 0) < per_address:
            return False
        self.refused += 1
        return True

    def admit(self, conn: Hashable, address: str, total: int, per_address: int) -> Admission:
        """Take ``conn`` (from ``address``) in, or say why not; an evicted
        connection is already off the table when this returns."""
        if self._per_address.get(address, 0) >= per_address:
            self.refused += 1
            return Admission(Verdict.REFUSE_ADDRESS)
        evict: Hashable | None = None
        if len(self._entries) >= total:
            evict = self.oldest_idle()
            if evict is None:
                self.refused += 1
                return Admission(Verdict.REFUSE_FULL)
            self.leave(evict)
            self.evicted += 1
        self._entries[conn] = _Entry(address)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return Admission(Verdict.ADMIT, evict)

    def oldest_idle(self) -> Hashable | None:
        """The oldest connection that has made no progress (None: none idle)."""
        return next((k for k, e in self._entries.items() if not e.progress), None)

    def progress(self, conn: Hashable) -> None:
        """``conn`` delivered a complete Login Request: no longer evictable."""
        entry = self._entries.get(conn)
        if entry is not None:
            entry.progress = True

    def leave(self, conn: Hashable) -> None:
        """``conn`` logged in or closed (idempotent)."""
        entry = self._entries.pop(conn, None)
        if entry is None:
            return
        left = self._per_address[entry.address] - 1
        if left:
            self._per_address[entry.address] = left
        else:
            del self._per_address[entry.address]
