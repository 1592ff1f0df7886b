"""Reservation state of one logical unit: SPC-2 RESERVE/RELEASE and persistent reservations.

The LU actor owns one instance and consults it for every command before the
device handler runs: a command that conflicts with a reservation held through
another I_T nexus ends in RESERVATION CONFLICT without touching the medium.
The fast path (nothing reserved) is two attribute tests.

Conflicts follow SPC-4 5.13.1 by the command's :class:`ResvClass`; the two
reservation kinds meet as SPC-4 5.12.3 / SPC-2 5.5.1 say: while an SPC-2
reservation exists every PERSISTENT RESERVE IN/OUT conflicts, and while any
registration exists RESERVE/RELEASE conflict except from a reservation holder
(or a registrant under a registrants-only/all-registrants type), where they
complete with GOOD and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from pyscst.actors.persistent_reservations import (
    PortResolver,
    ProutOutcome,
    persistent_reserve_in,
    persistent_reserve_out,
)
from pyscst.actors.pr_state import PrState
from pyscst.actors.shared_state import ResvChange, ResvState
from pyscst.scsi.cdb import OpSpec, ResvClass
from pyscst.scsi.command import Nexus
from pyscst.scsi.opcodes import Op
from pyscst.scsi.sense import ScsiError

_PR_OPCODES = frozenset({Op.PERSISTENT_RESERVE_IN, Op.PERSISTENT_RESERVE_OUT})
_ALWAYS = frozenset({ResvClass.ALLOWED, ResvClass.SPECIAL, ResvClass.PR_ALLOWED})


class Reservations:
    """The SPC-2 reservation holder and the persistent reservation state."""

    def __init__(self, state: PrState | None = None) -> None:
        #: the I_T nexus holding an SPC-2 reservation, if any
        self.holder: Nexus | None = None
        self._pr = state if state is not None else PrState()

    @property
    def pr(self) -> PrState:
        return self._pr

    @property
    def state(self) -> ResvState:
        return ResvState(self._pr, self.holder)

    def apply(self, state: ResvState) -> None:
        """Take ``state`` as it is (a store's authoritative or another node's)."""
        self._pr = state.pr
        self.holder = state.spc2

    # -- every command ------------------------------------------------------------
    def check(self, spec: OpSpec, cdb: bytes, nexus: Nexus) -> None:
        """RESERVATION CONFLICT unless ``nexus`` may run this command now."""
        holder = self.holder
        res = self._pr.reservation
        if holder is None and res is None:
            return
        resv = spec.reservation_class(cdb)
        if holder is not None:
            if holder == nexus:
                if cdb[0] in _PR_OPCODES:
                    raise ScsiError.reservation_conflict()
                return
            if resv is not ResvClass.ALLOWED:
                raise ScsiError.reservation_conflict()
            return
        assert res is not None
        if resv in _ALWAYS:
            return  # RESERVE and PROUT decide in their handlers
        if resv is ResvClass.READ and not res.type.exclusive_access:
            return
        if res.type.registrants_have_access:
            if self._pr.registration_of(nexus) is not None:
                return
        elif res.holder is not None and res.holder.matches(nexus):
            return
        raise ScsiError.reservation_conflict()

    # -- SPC-2 -----------------------------------------------------------------------
    def _pr_exempt(self, nexus: Nexus) -> bool:
        """SPC-4 5.12.3: RESERVE/RELEASE complete with GOOD, and do nothing."""
        pr = self._pr
        res = pr.reservation
        if res is None:
            return False
        if pr.is_holder(nexus):
            return True
        return res.type.registrants_have_access and pr.registration_of(nexus) is not None

    def reserve(self, nexus: Nexus) -> None:
        self.holder = self.holder_after_reserve(nexus)

    def release(self, nexus: Nexus) -> None:
        self.holder = self.holder_after_release(nexus)

    def holder_after_reserve(self, nexus: Nexus) -> Nexus | None:
        """The SPC-2 holder a RESERVE from ``nexus`` leaves (raises on conflict)."""
        if not self._pr.empty:
            if self._pr_exempt(nexus):
                return self.holder
            raise ScsiError.reservation_conflict()
        if self.holder is not None and self.holder != nexus:
            raise ScsiError.reservation_conflict()
        return nexus

    def holder_after_release(self, nexus: Nexus) -> Nexus | None:
        """The SPC-2 holder a RELEASE from ``nexus`` leaves (raises on conflict)."""
        if not self._pr.empty:
            if self._pr_exempt(nexus):
                return self.holder
            raise ScsiError.reservation_conflict()
        return None if self.holder == nexus else self.holder

    def reset(self) -> None:
        """LOGICAL UNIT RESET / hard reset: SPC-2 reservations go, persistent ones stay."""
        self.holder = None

    def nexus_lost(self, nexus: Nexus) -> None:
        if self.holder == nexus:
            self.holder = None

    # -- persistent reservations ----------------------------------------------------------
    def commit(self, state: PrState) -> None:
        self._pr = state

    def read(self, cdb: bytes) -> bytes:
        """PERSISTENT RESERVE IN parameter data."""
        return persistent_reserve_in(self._pr, cdb)


def plan_spc2(nexus: Nexus, reserve: bool) -> Callable[[ResvState], ResvChange]:
    """RESERVE / RELEASE(6/10) as a plan over the shared state."""

    def plan(state: ResvState) -> ResvChange:
        view = Reservations(state.pr)
        view.holder = state.spc2
        after = view.holder_after_reserve(nexus) if reserve else view.holder_after_release(nexus)
        return ResvChange(
            ResvState(state.pr, after), by=nexus, changed=after != state.spc2, pr_changed=False
        )

    return plan


def plan_spc2_drop(nexus: Nexus | None) -> Callable[[ResvState], ResvChange]:
    """A reset (``nexus`` None) or the loss of ``nexus`` ends its SPC-2 reservation."""

    def plan(state: ResvState) -> ResvChange:
        drop = state.spc2 is not None and (nexus is None or state.spc2 == nexus)
        after = None if drop else state.spc2
        return ResvChange(ResvState(state.pr, after), changed=drop, pr_changed=False)

    return plan


def plan_prout(
    nexus: Nexus, cdb: bytes, params: bytes, resolve_port: PortResolver
) -> Callable[[ResvState], ResvChange]:
    """PERSISTENT RESERVE OUT as a plan over the shared state."""

    def plan(state: ResvState) -> ResvChange:
        out: ProutOutcome = persistent_reserve_out(state.pr, nexus, cdb, params, resolve_port)
        return ResvChange(
            ResvState(out.state, state.spc2),
            by=nexus,
            notices=out.notices,
            abort=out.abort,
            changed=out.changed,
            pr_changed=out.changed,
        )

    return plan
