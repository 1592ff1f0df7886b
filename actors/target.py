"""Targets: their initiator groups and LUN maps, and the sessions logged in to them.

A target owns the answer to "which LUNs does this initiator see, and how"
(LUN masking: ordered groups of exact names or glob patterns, then the default
map), the registry of its sessions keyed by (InitiatorName, ISID) for session
reinstatement, and target-wide resets. The directory maps target names to
targets for login and SendTargets.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Protocol

import attrs
import trio

from pyscst.actors.alua import PortGroup, PortGroups, PortGroupSpec
from pyscst.actors.faults import FaultEngine
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.messages import ResetLogicalUnit, call
from pyscst.actors.session import LunMapping
from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import Asc

log = logging.getLogger(__name__)


@attrs.frozen
class SessionInfo:
    """What the admin plane shows of one session (an I_T nexus)."""

    nexus: Nexus
    initiator_name: str
    isid: int
    tsih: int
    address: str  # the initiator's "host:port"
    luns: Mapping[int, LunMapping]


class SessionHandle(Protocol):
    """What a target needs from a live session: end it (reinstatement, reset,
    admin close), show it, and hand it a new LUN map after an admin edit."""

    def abort(self) -> None: ...

    async def wait_closed(self) -> None: ...

    def update_luns(self, luns: Mapping[int, LunMapping]) -> None: ...

    def info(self) -> SessionInfo | None: ...


@attrs.frozen
class InitiatorGroup:
    name: str
    patterns: tuple[str, ...]
    luns: Mapping[int, LunMapping]

    def matches(self, initiator_name: str) -> bool:
        lowered = initiator_name.lower()
        return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.patterns)


class Target:
    """One SCSI target device (an iSCSI target node)."""

    def __init__(
        self,
        name: str,
        *,
        portals: list[tuple[str, int]],
        default_luns: Mapping[int, LunMapping],
        groups: list[InitiatorGroup] | None = None,
        alias: str | None = None,
        portal_group_tag: int = 1,
    ) -> None:
        self.name = name
        self.alias = alias
        #: the addresses SendTargets publishes (a port 0 replaced by the real one)
        self.portals = list(portals)
        #: the same, as configured (what port groups and listeners name)
        self.configured_portals = list(portals)
        self.portal_group_tag = portal_group_tag
        #: ALUA target port groups ([targets.X.port_groups]); None: no ALUA
        self.alua: PortGroups | None = None
        self.default_luns = dict(default_luns)
        self.groups = list(groups or [])
        #: (InitiatorName, ISID, TPGT) -> session: with ALUA port groups a target
        #: has several portal groups, and the same ISID through another one is
        #: another I_T nexus (RFC 7143 4.4.1), not a reinstatement
        self.sessions: dict[tuple[str, int, int], SessionHandle] = {}
        #: who may log in at all ([targets."IQN".auth] initiators): exact names or
        #: globs, case-insensitive; None lets anyone in. Groups mask LUNs on top.
        self.initiators: tuple[str, ...] | None = None

    def lun_map_for(self, initiator_name: str) -> dict[int, LunMapping]:
        """A group naming the initiator exactly wins, then the first matching glob."""
        lowered = initiator_name.lower()
        for group in self.groups:
            if any(p.lower() == lowered for p in group.patterns):
                return dict(group.luns)
        for group in self.groups:
            if group.matches(initiator_name):
                return dict(group.luns)
        return dict(self.default_luns)

    def allows(self, initiator_name: str) -> bool:
        """May this initiator log in (and see the target in SendTargets)?"""
        if self.initiators is not None:
            lowered = initiator_name.lower()
            if not any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.initiators):
                return False
        return bool(self.lun_map_for(initiator_name))

    def set_initiators(self, patterns: tuple[str, ...] | None) -> None:
        """A new access list; it applies to logins from now on."""
        self.initiators = patterns

    def logical_units(self) -> list[LogicalUnit]:
        seen: dict[int, LogicalUnit] = {}
        for mapping in itertools.chain(
            self.default_luns.values(), *(g.luns.values() for g in self.groups)
        ):
            seen.setdefault(id(mapping.lu), mapping.lu)
        return list(seen.values())

    async def admit(
        self, initiator_name: str, isid: int, handle: SessionHandle, tpgt: int = 1
    ) -> None:
        """Register a new session; an existing one with the same ISID through the
        same portal group is reinstated (RFC 7143 6.3.5): it is closed before the
        new one proceeds."""
        key = (initiator_name, isid, tpgt)
        old = self.sessions.get(key)
        if old is not None and old is not handle:
            log.info("%s: reinstating session of %s isid %#x", self.name, initiator_name, isid)
            old.abort()
            with trio.move_on_after(10):
                await old.wait_closed()
        self.sessions[key] = handle

    def leave(self, initiator_name: str, isid: int, handle: SessionHandle) -> None:
        """Forget a session that ended (whichever portal group it came through)."""
        for key, each in list(self.sessions.items()):
            if each is handle and key[:2] == (initiator_name, isid):
                del self.sessions[key]

    # -- live admin edits (atomic: never await) ------------------------------------
    def reconfigure(
        self, default_luns: Mapping[int, LunMapping], groups: list[InitiatorGroup]
    ) -> int:
        """Adopt new LUN maps and groups; every session gets its (possibly new)
        map, which queues REPORTED LUNS DATA HAS CHANGED where it changed.
        Returns how many sessions saw a change."""
        self.default_luns = dict(default_luns)
        self.groups = list(groups)
        changed = 0
        for (initiator, _isid, _tpgt), handle in list(self.sessions.items()):
            luns = self.lun_map_for(initiator)
            info = handle.info()
            if info is not None and dict(info.luns) != luns:
                changed += 1
            handle.update_luns(luns)
        return changed

    def set_portals(
        self, portals: list[tuple[str, int]], configured: list[tuple[str, int]] | None = None
    ) -> None:
        self.portals = list(portals)
        self.configured_portals = list(configured if configured is not None else portals)

    # -- ALUA ----------------------------------------------------------------------
    def set_port_groups(
        self,
        specs: list[PortGroupSpec],
        *,
        explicit: bool = True,
        transition_time: int = 0,
        faults: FaultEngine | None = None,
    ) -> None:
        """Adopt the configured port groups (none: ALUA off). Groups that keep
        their name keep their live state; new logins use the new membership."""
        if not specs:
            self.alua = None
        elif self.alua is None:
            self.alua = PortGroups(
                self.name, specs, explicit=explicit, transition_time=transition_time,
                notify=self._access_state_changed, faults=faults,
            )  # fmt: skip
        else:
            self.alua.reconfigure(specs, explicit=explicit, transition_time=transition_time)

    def _access_state_changed(self, by: Nexus | None) -> None:
        """SPC-4 5.15.2.? : every I_T_L nexus through this target learns of it
        (2A/06), but the one whose SET TARGET PORT GROUPS made the change."""
        for lu in self.logical_units():
            lu.raise_ua(Asc.ASYMMETRIC_ACCESS_STATE_CHANGED, exclude=by, target=self.name)

    def port_group_at(self, portal: tuple[str, int]) -> PortGroup | None:
        """The ALUA group of a configured portal (None: no ALUA on this target)."""
        return self.alua.group_at(portal) if self.alua is not None else None

    def tag_for(self, portal: tuple[str, int]) -> int:
        """The iSCSI target portal group tag of ``portal`` (configured address):
        its ALUA group's target port, else the target's one tag."""
        group = self.port_group_at(portal)
        return group.relative_port if group is not None else self.portal_group_tag

    def set_alias(self, alias: str | None) -> None:
        self.alias = alias

    def session_infos(self) -> list[SessionInfo]:
        return [i for h in list(self.sessions.values()) if (i := h.info()) is not None]

    def session_by_tsih(self, tsih: int) -> SessionHandle | None:
        for handle in list(self.sessions.values()):
            info = handle.info()
            if info is not None and info.tsih == tsih:
                return handle
        return None

    async def close_all_sessions(self) -> None:
        """End every session (target removed): abort, then wait for each to go."""
        handles = list(self.sessions.values())
        for handle in handles:
            handle.abort()
        with trio.move_on_after(10):
            for handle in handles:
                await handle.wait_closed()

    async def reset(self, nexus: Nexus | None, asc: Asc) -> None:
        """TARGET WARM/COLD RESET: reset every LU known to the issuer (RFC 7143
        11.5.1: with LUN masking, an initiator cannot reset LUs it cannot see).

        A cold reset (reported as a power cycle, 29/01) also ends every other
        session of the target (RFC 7143 11.5.1); the issuer's own connection
        closes itself once its TMF response is on the wire."""
        async with trio.open_nursery() as nursery:
            for lu in self._units_known_to(nexus):
                nursery.start_soon(call, lu.mailbox, ResetLogicalUnit(nexus, asc))
        if asc is Asc.POWER_ON_OCCURRED:
            for handle in list(self.sessions.values()):
                info = handle.info()
                if info is None or info.nexus != nexus:
                    handle.abort()


    def _units_known_to(self, nexus: Nexus | None) -> list[LogicalUnit]:
        """The LUs in ``nexus``' LUN map (every LU when no session is named)."""
        if nexus is not None:
            for handle in list(self.sessions.values()):
                info = handle.info()
                if info is not None and info.nexus == nexus:
                    seen = {id(m.lu): m.lu for m in info.luns.values()}
                    return list(seen.values())
        return self.logical_units()


class TargetDirectory:
    """Target names -> targets, for login and discovery; TSIH allocation."""

    def __init__(self) -> None:
        self._targets: dict[str, Target] = {}
        self._tsih = itertools.count(1)

    def add(self, target: Target) -> None:
        self._targets[target.name.lower()] = target

    def remove(self, name: str) -> None:
        self._targets.pop(name.lower(), None)

    def get(self, name: str) -> Target | None:
        return self._targets.get(name.lower())

    def __iter__(self) -> Iterator[Target]:
        return iter(list(self._targets.values()))

    def allocate_tsih(self) -> int:
        tsih = next(self._tsih) & 0xFFFF
        if tsih == 0:
            tsih = next(self._tsih) & 0xFFFF
        return tsih

    def send_targets(
        self, initiator_name: str, which: str, current: str | None, local: tuple[str, int]
    ) -> list[tuple[str, list[str]]]:
        """SendTargets answer: targets this initiator may use, with their portals."""
        if which == "All":
            targets = [t for t in self if t.allows(initiator_name)]
        elif which == "":
            t = self.get(current or "")
            targets = [t] if t is not None and t.allows(initiator_name) else []
        else:
            t = self.get(which)
            targets = [t] if t is not None and t.allows(initiator_name) else []
        result = []
        for t in targets:
            addresses = []
            configured = t.configured_portals
            for i, (host, port) in enumerate(t.portals):
                shown = local[0] if host in ("0.0.0.0", "::") else host
                if ":" in shown:
                    shown = f"[{shown}]"
                tag = t.tag_for(configured[i]) if i < len(configured) else t.portal_group_tag
                addresses.append(f"{shown}:{port},{tag}")
            result.append((t.name, addresses))
        return result
