"""A target's port groups and their asymmetric access states (ALUA, SPC-4 5.15).

The states are middle-level state shared by every LU of a target: the access
check on each command reads the state of the group its port belongs to
(``ScsiCommand.port_group``, set by the session), REPORT TARGET PORT GROUPS
lists them, and a change raises ASYMMETRIC ACCESS STATE CHANGED (2A/06) on
every nexus of the target's LUs. Whoever changes a state (the operator, an
initiator's SET TARGET PORT GROUPS, a fault rule, a cluster) goes through
:meth:`PortGroups.set_state` or :meth:`PortGroups.transition`, the one way
in, and every change is announced to the subscribers (a cluster publishes
local changes from there). Like a target, this object is passive: its
methods run in the caller's task and ``set_state`` never awaits, so a change
is atomic with respect to the commands arriving around it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import trio

from pyscst.scsi.alua import (
    SETTABLE,
    AccessState,
    GroupReport,
    StatusCode,
    tpgs_bits,
)
from pyscst.scsi.command import Nexus

if TYPE_CHECKING:
    from pyscst.actors.faults import FaultEngine

log = logging.getLogger(__name__)


class Cause(enum.Enum):
    """Who asked for a change: SPC's implicit (the target itself: operator,
    cluster, faults) or explicit (an initiator's SET TARGET PORT GROUPS)."""

    IMPLICIT = "implicit"
    EXPLICIT = "explicit"


@attrs.frozen
class PortGroupSpec:
    """One configured target port group ([targets.X.port_groups.NAME])."""

    name: str
    group_id: int
    portals: tuple[tuple[str, int], ...]
    state: AccessState = AccessState.ACTIVE_OPTIMIZED
    relative_port: int = 0  # 0: the group id
    preferred: bool = False

    @property
    def port(self) -> int:
        """The RELATIVE TARGET PORT IDENTIFIER (also the iSCSI TPGT) of its port."""
        return self.relative_port or self.group_id


#: fn(group name, old state, new state, cause), after every change
Listener = Callable[[str, AccessState, AccessState, Cause], None]
#: raise 2A/06 on the target's nexuses except the one given
Notify = Callable[[Nexus | None], None]


class PortGroup:
    """One target port group: the mutable state the dispatcher reads per
    command (``state``, ``tpgs``: :class:`pyscst.scsi.alua.PortAccess`)."""

    __slots__ = (
        "_generation",
        "configured",
        "group_id",
        "name",
        "owner",
        "portals",
        "preferred",
        "relative_port",
        "restricted",
        "state",
        "status",
    )

    def __init__(self, owner: PortGroups, spec: PortGroupSpec) -> None:
        self.owner = owner
        self.name = spec.name
        self.group_id = spec.group_id
        self.relative_port = spec.port
        self.portals = spec.portals
        self.preferred = spec.preferred
        self.state = spec.state
        #: not active: the dispatcher consults ACCESS_RULES (a plain bool, so an
        #: active port costs the command path one attribute test)
        self.restricted = spec.state > AccessState.ACTIVE_NON_OPTIMIZED
        #: the state the configuration names (where the group starts)
        self.configured = spec.state
        self.status = StatusCode.NONE
        self._generation = 0

    @property
    def tpgs(self) -> int:
        return tpgs_bits(self.owner.explicit)

    def report(self) -> GroupReport:
        return GroupReport(
            self.group_id, self.state, (self.relative_port,), self.preferred, self.status
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.group_id,
            "relative_port": self.relative_port,
            "portals": [f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in self.portals],
            "state": self.state.label,
            "preferred": self.preferred,
            "status": self.status.name.lower(),
        }


class PortGroups:
    """The target port groups of one target."""

    def __init__(
        self,
        target_name: str,
        specs: Iterable[PortGroupSpec],
        *,
        explicit: bool = True,
        transition_time: int = 0,
        notify: Notify | None = None,
        faults: FaultEngine | None = None,
    ) -> None:
        self.target_name = target_name
        self.explicit = explicit
        #: seconds, REPORT TPGS' IMPLICIT TRANSITION TIME (extended header)
        self.transition_time = transition_time
        self._notify = notify
        self.faults = faults
        self._groups: dict[str, PortGroup] = {}
        self._listeners: list[Listener] = []
        self.reconfigure(specs, explicit=explicit, transition_time=transition_time)

    # -- configuration ---------------------------------------------------------
    def reconfigure(
        self, specs: Iterable[PortGroupSpec], *, explicit: bool, transition_time: int
    ) -> None:
        """Adopt a new set of groups (a reload or an edit). A group that keeps its
        name keeps its live state unless the configured ``state`` itself changed
        (then that is an implicit transition, with its 2A/06); ids, ports and
        portals are the new ones. Sessions logged in keep the target port they
        logged in through (their nexus)."""
        self.explicit = explicit
        self.transition_time = transition_time
        old = self._groups
        new: dict[str, PortGroup] = {}
        moved: list[PortGroup] = []
        for spec in specs:
            group = old.get(spec.name)
            if group is None:
                group = PortGroup(self, spec)
            else:
                group.group_id = spec.group_id
                group.relative_port = spec.port
                group.portals = spec.portals
                group.preferred = spec.preferred
                if group.configured != spec.state:
                    group.configured = spec.state
                    moved.append(group)
            new[spec.name] = group
        self._groups = new
        for group in moved:
            self.set_state(group.name, group.configured)

    def group_at(self, portal: tuple[str, int]) -> PortGroup | None:
        """The group a configured portal (listener address) belongs to."""
        for group in self._groups.values():
            if portal in group.portals:
                return group
        return None

    def __iter__(self) -> Iterator[PortGroup]:
        return iter(list(self._groups.values()))

    def get(self, which: str | int) -> PortGroup:
        """A group by name or by TARGET PORT GROUP id (KeyError if none)."""
        if isinstance(which, int):
            for group in self._groups.values():
                if group.group_id == which:
                    return group
            raise KeyError(which)
        found = self._groups.get(which)
        if found is None and which.isdigit():
            return self.get(int(which))
        if found is None:
            raise KeyError(which)
        return found

    def state_of(self, which: str | int) -> AccessState:
        return self.get(which).state

    def ids(self) -> list[int]:
        return [g.group_id for g in self._groups.values()]

    def reports(self) -> list[GroupReport]:
        """Every group, in id order, as REPORT TARGET PORT GROUPS lists them."""
        return [g.report() for g in sorted(self._groups.values(), key=lambda g: g.group_id)]

    def describe(self) -> list[dict[str, Any]]:
        return [g.describe() for g in sorted(self._groups.values(), key=lambda g: g.group_id)]

    # -- changes ---------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after every change; returns the unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def set_state(
        self,
        which: str | int,
        state: AccessState,
        *,
        cause: Cause = Cause.IMPLICIT,
        by: Nexus | None = None,
    ) -> bool:
        """Put a group in ``state`` now (atomic: never awaits).

        Every nexus of the target's LUs but ``by`` (the nexus whose SET TPGS
        asked for it) gets 2A/06 when the state changed; a transition still
        pending on the group is superseded. Returns whether it changed.
        KeyError: no such group; ValueError: TRANSITIONING (see :meth:`transition`).
        """
        if state not in SETTABLE:
            raise ValueError(f"{state.label} is not a state a group can be put in")
        group = self.get(which)
        group._generation += 1
        return self._apply(group, state, cause, by)

    async def transition(
        self,
        which: str | int,
        state: AccessState,
        seconds: float,
        *,
        cause: Cause = Cause.IMPLICIT,
        by: Nexus | None = None,
    ) -> bool:
        """Go to ``state`` through TRANSITIONING, spending ``seconds`` there
        (commands on the group's ports get 04/0A meanwhile). Returns when the
        group has arrived; a newer change of the group supersedes this one. If
        the caller is cancelled meanwhile, the group arrives at once (a group
        never stays transitioning for want of a task)."""
        if state not in SETTABLE:
            raise ValueError(f"{state.label} is not a state a group can be put in")
        group = self.get(which)
        if seconds <= 0:
            return self.set_state(which, state, cause=cause, by=by)
        group._generation += 1
        generation = group._generation
        self._apply(group, AccessState.TRANSITIONING, cause, by)
        try:
            await trio.sleep(seconds)
        finally:
            if group._generation == generation:
                self._apply(group, state, cause, by)
        return True

    def _apply(self, group: PortGroup, state: AccessState, cause: Cause, by: Nexus | None) -> bool:
        old = group.state
        if old == state:
            return False
        group.state = state
        group.restricted = state > AccessState.ACTIVE_NON_OPTIMIZED
        group.status = (
            StatusCode.ALTERED_BY_EXPLICIT_STPG
            if cause is Cause.EXPLICIT
            else StatusCode.ALTERED_BY_IMPLICIT_ALUA
        )
        log.info(
            "%s: port group %s (id %d) %s -> %s (%s)",
            self.target_name, group.name, group.group_id, old.label, state.label, cause.value,
        )  # fmt: skip
        if self._notify is not None:
            self._notify(by)
        for listener in list(self._listeners):
            try:
                listener(group.name, old, state, cause)
            except Exception:
                log.exception("%s: ALUA listener failed", self.target_name)
        return True
