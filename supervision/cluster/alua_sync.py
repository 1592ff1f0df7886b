"""ALUA across nodes: every node's port group states in etcd, and failover.

Each node's config lists every port group of a target; the groups whose
portals are on this node are *its own* (a peer's group has ``portals = []``
here). The states live under ``<prefix>/alua/<target>/<group>``: a node
publishes every change it makes (operator, SET TARGET PORT GROUPS, fault
rule, failover) and applies the others' (implicit, 2A/06 to its nexuses), so
REPORT TARGET PORT GROUPS answers the same through every node.

When a member's lease ends (it died, or was partitioned and fenced itself
first), every survivor puts that member's groups in UNAVAILABLE and its own
in ACTIVE/OPTIMIZED: initiators that follow ALUA move their I/O to the
survivor's paths. A fenced node puts its own groups in UNAVAILABLE locally
(it cannot publish) and restores and publishes them when it serves again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import trio

from pyscst.actors.alua import Cause, Listener, PortGroups
from pyscst.actors.target import TargetDirectory
from pyscst.scsi.alua import AccessState

log = logging.getLogger(__name__)

#: a group or target name longer than this in etcd is ignored
MAX_NAME = 256


class AluaSync:
    def __init__(self, directory: TargetDirectory) -> None:
        self.directory = directory
        #: (target, group) -> state to publish (the publisher task writes them)
        self.pending: dict[tuple[str, str], AccessState] = {}
        self.wakeup = trio.Event()
        #: applying etcd's value: the subscription must not echo it back
        self._applying = False
        #: own groups' states before a fence, restored when serving again
        self._before_fence: dict[tuple[str, str], AccessState] = {}
        self._subscribed: set[int] = set()

    # -- what is here ----------------------------------------------------------------
    def _targets(self) -> Iterator[tuple[str, PortGroups]]:
        for target in self.directory:
            if target.alua is not None:
                yield target.name, target.alua

    def own_groups(self) -> dict[str, list[str]]:
        """target -> the names of this node's own groups (portals here)."""
        return {
            name: [g.name for g in groups if g.portals]
            for name, groups in self._targets()
            if any(g.portals for g in groups)
        }

    def subscribe(self) -> None:
        for name, groups in self._targets():
            if id(groups) not in self._subscribed:
                self._subscribed.add(id(groups))
                groups.subscribe(self._listener(name))

    def _listener(self, target: str) -> Listener:
        def changed(group: str, _old: AccessState, new: AccessState, _cause: Cause) -> None:
            self._changed(target, group, new)

        return changed

    def _changed(self, target: str, group: str, state: AccessState) -> None:
        if self._applying or state is AccessState.TRANSITIONING:
            return
        self.pending[(target, group)] = state
        self.wakeup.set()

    def _set(self, groups: PortGroups, group: str, state: AccessState, publish: bool) -> None:
        self._applying = not publish
        try:
            groups.set_state(group, state, cause=Cause.IMPLICIT)
        finally:
            self._applying = False

    # -- etcd's values -------------------------------------------------------------------
    def applied(
        self, target: str, group: str, value: bytes | None, me: str, joining: bool = False
    ) -> None:
        """``<prefix>/alua/<target>/<group>`` is ``value`` (None: deleted); our own
        (``me``) values are echoes of what is already applied here. ``joining``:
        what etcd holds for our own groups is from before this start (the others
        may have marked them UNAVAILABLE when we left): they start as configured."""
        if joining and group in self.own_groups().get(target, []):
            return
        if value is None or len(target) > MAX_NAME or len(group) > MAX_NAME:
            return
        try:
            doc = json.loads(value)
            state = AccessState(doc["state"]) if isinstance(doc, dict) else None
            origin = doc.get("node") if isinstance(doc, dict) else None
        except (ValueError, KeyError, TypeError, RecursionError, UnicodeDecodeError):
            state = origin = None
        if state is None or state is AccessState.TRANSITIONING:
            log.error("cluster: ignoring ALUA state %r for %s/%s", value[:80], target, group)
            return
        if origin == me:
            return
        groups = self._groups_of(target)
        if groups is None:
            return
        try:
            groups.get(group)
        except KeyError:
            return
        if (target, group) in self._before_fence:
            self._before_fence[(target, group)] = state
            return  # fenced: applied when it serves again
        self._set(groups, group, state, publish=False)

    def _groups_of(self, target: str) -> PortGroups | None:
        found = self.directory.get(target)
        return found.alua if found is not None else None

    def encode(self, state: AccessState, node: str) -> bytes:
        return json.dumps({"state": int(state), "node": node}).encode()


    # -- membership and fencing -------------------------------------------------------------
    def member_left(self, groups_by_target: dict[str, list[str]]) -> None:
        """Fail over from a member that left: its groups UNAVAILABLE, ours A/O."""
        mine = self.own_groups()
        for target, names in groups_by_target.items():
            groups = self._groups_of(target)
            if groups is None:
                continue
            for name in names:
                if name not in mine.get(target, []):
                    try:
                        self._set(groups, name, AccessState.UNAVAILABLE, publish=True)
                    except (KeyError, ValueError):
                        continue
            for name in mine.get(target, []):
                self._set(groups, name, AccessState.ACTIVE_OPTIMIZED, publish=True)

    def fence(self) -> None:
        for target, names in self.own_groups().items():
            groups = self._groups_of(target)
            if groups is None:
                continue
            for name in names:
                key = (target, name)
                if key not in self._before_fence:
                    self._before_fence[key] = groups.state_of(name)
                self._set(groups, name, AccessState.UNAVAILABLE, publish=False)

    def unfence(self) -> None:
        before, self._before_fence = self._before_fence, {}
        for (target, name), state in before.items():
            groups = self._groups_of(target)
            if groups is not None:
                self._set(groups, name, state, publish=True)

    def publish_own(self) -> None:
        """Joining: our own groups' states are news to the others."""
        for target, names in self.own_groups().items():
            groups = self._groups_of(target)
            if groups is not None:
                for name in names:
                    self._changed(target, name, groups.state_of(name))


def member_groups(value: bytes) -> dict[str, list[str]]:
    """The own groups a member record lists (nothing, if it is not one)."""
    try:
        doc = json.loads(value)
        groups = doc.get("groups", {}) if isinstance(doc, dict) else {}
    except (ValueError, RecursionError, UnicodeDecodeError):
        return {}
    if not isinstance(groups, dict):
        return {}
    return {
        str(t)[:MAX_NAME]: [str(g)[:MAX_NAME] for g in names[:64]]
        for t, names in list(groups.items())[:256]
        if isinstance(names, list)
    }
