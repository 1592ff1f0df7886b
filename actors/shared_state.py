"""What a logical unit shares beyond its node: the protocols the daemon implements.

A single daemon keeps reservations in the LU and saves them to the APTPL file;
a cluster node (``supervision/cluster``) keeps them in etcd, where every node
that exports the same device sees them. The LU must not know which: it talks to
a :class:`ReservationStore` and reads a :class:`FenceSwitch`, both defined here
and handed down by the daemon, so the middle level never imports the cluster.

A change of reservation state is a pure *plan* (``ResvState -> ResvChange``):
the store runs it against the authoritative state, makes the result durable or
shared, and may run it again when another node changed the state first (a
compare-and-swap lost). Only commands that change shared state pay for that;
every other command checks the LU's local copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import attrs

from pyscst.actors.persistent_reservations import Notice
from pyscst.actors.pr_state import PrState, Registrant
from pyscst.actors.pr_store import AptplStore
from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import Asc, ScsiError, SenseKey

log = logging.getLogger(__name__)


@attrs.frozen
class ResvState:
    """Both reservation kinds of one LU: persistent, and the SPC-2 holder."""

    pr: PrState = attrs.field(factory=PrState)
    spc2: Nexus | None = None


@attrs.frozen
class ResvChange:
    """A new :class:`ResvState` and what the change tells the nexuses that see it."""

    state: ResvState
    #: the issuing nexus (it gets no notice of its own change)
    by: Nexus | None = None
    notices: tuple[Notice, ...] = ()
    #: PREEMPT AND ABORT: the tasks of these registrants are aborted, on every node
    abort: tuple[Registrant, ...] = ()
    #: anything changed at all (an unchanged plan is not written anywhere)
    changed: bool = True
    #: the persistent part changed (the APTPL file is rewritten)
    pr_changed: bool = True


Plan = Callable[[ResvState], ResvChange]
#: how a store hands the LU a change made elsewhere (another node)
ChangeListener = Callable[[ResvChange], None]
#: how a store hands the LU a reset of it made elsewhere (its 29/xx condition)
ResetListener = Callable[[Asc], None]
#: the resets of an LU that every node performs (LOGICAL UNIT RESET, a target
#: reset's share of it); a node's own power on or device restart is its own
SHARED_RESETS = frozenset({Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED, Asc.SCSI_BUS_RESET_OCCURRED})


class ReservationStore(Protocol):
    """Where one LU's reservation state is kept and shared."""

    #: other nodes see the state (a reset's or a lost nexus' release is shared)
    shared: bool

    def initial(self) -> ResvState | None:
        """The state to start from (None: nothing saved). Called when the LU starts."""

    async def update(self, current: ResvState, plan: Plan) -> ResvChange:
        """Run ``plan`` on the authoritative state (``current`` is the LU's copy),
        make its result durable/shared, and return it. A plan's ScsiError passes
        through; a store that cannot write raises ScsiError with a retryable sense."""

    def attach(self, listener: ChangeListener, on_reset: ResetListener) -> None:
        """Changes made elsewhere go to ``listener``, resets made elsewhere to
        ``on_reset`` (the LU applies them)."""

    async def announce_reset(self, asc: Asc) -> None:
        """This LU was reset here (``asc`` in SHARED_RESETS): reset it on the other
        nodes too (their tasks aborted, ``asc`` to their nexuses); returns when
        they have."""


class FenceSwitch(Protocol):
    """Read on every command: while ``fenced``, the node accepts no command that
    touches the medium (its cluster lease may have lapsed: another node may
    take over)."""

    @property
    def fenced(self) -> bool: ...


class LocalReservationStore:
    """One node: the LU's own state, saved to the APTPL file when it changes."""

    shared = False

    def __init__(self, aptpl: AptplStore | None) -> None:
        self._aptpl = aptpl

    def initial(self) -> ResvState | None:
        store = self._aptpl
        if store is None or store.loaded:
            return None  # a supervisor restart keeps the LU's memory
        saved = store.load()
        return None if saved is None else ResvState(saved)

    async def update(self, current: ResvState, plan: Plan) -> ResvChange:
        change = plan(current)
        if change.pr_changed and change.changed and self._aptpl is not None:
            try:
                await self._aptpl.save(change.state.pr)
            except OSError as exc:
                log.error("cannot save persistent reservations: %s", exc)
                raise ScsiError.check(
                    SenseKey.ILLEGAL_REQUEST, Asc.INSUFFICIENT_REGISTRATION_RESOURCES
                ) from exc
        return change

    def attach(self, listener: ChangeListener, on_reset: ResetListener) -> None:
        """Nothing changes elsewhere."""

    async def announce_reset(self, asc: Asc) -> None:
        """No other node."""
