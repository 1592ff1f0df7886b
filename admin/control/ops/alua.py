"""ALUA ops: show a target's port groups and set a group's access state.

Live state only, like resets: a state set here is the target's implicit
transition (SPC-4 5.15.2), every nexus of the target's LUs hears of it
(2A/06), and the config file keeps the state each group starts in. A
transition with ``transition`` seconds passes through transitioning first;
an armed ``slow_transition`` fault rule stretches one without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from pyscst.actors.alua import PortGroups
from pyscst.actors.target import Target
from pyscst.admin.control.ops.args import Args
from pyscst.admin.control.ops.runtime import alua_view, target_named
from pyscst.admin.control.protocol import ErrorCode, OpError
from pyscst.admin.control.server import OpHandler
from pyscst.scsi.alua import SETTABLE_LABELS, AccessState

if TYPE_CHECKING:
    from pyscst.admin.control.operations import Controller

#: the longest transitioning window an operator may ask for, in seconds
MAX_TRANSITION = 3600.0


def operations(controller: Controller) -> dict[str, OpHandler]:
    daemon = controller.daemon

    async def show(args: Mapping[str, Any]) -> list[dict[str, Any]]:
        a = Args("alua.show", args)
        name = a.opt_text("target")
        a.done()
        targets = [target_named(daemon, name)] if name is not None else list(daemon.directory)
        return [alua_view(t) for t in targets]

    async def set_state(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("alua.set", args)
        target = target_named(daemon, a.text("target"))
        which = a.text("group")
        state_text = a.text("state")
        seconds = _seconds(a)
        a.done()
        groups = _groups(target)
        where = f'targets."{target.name}".port_groups.{which}'
        try:
            group = groups.get(which)
        except KeyError:
            known = ", ".join(f"{g.name} (id {g.group_id})" for g in groups) or "none"
            raise OpError(
                ErrorCode.NOT_FOUND,
                f"target {target.name} has no port group {which} (groups: {known})",
                where,
            ) from None
        try:
            state = AccessState.parse(state_text)
        except ValueError as exc:
            raise OpError(ErrorCode.INVALID, str(exc), "args.state") from None
        if state is AccessState.TRANSITIONING:
            raise OpError(
                ErrorCode.INVALID,
                f"a group passes through transitioning (give transition=SECONDS); "
                f"states: {', '.join(SETTABLE_LABELS)}",
                "args.state",
            )
        if seconds is None and groups.faults is not None and groups.faults.alua_armed:
            seconds = groups.faults.transition_delay("", target.name, None, trio.current_time())
        before = group.state
        if seconds:
            await groups.transition(group.name, state, seconds)
        else:
            groups.set_state(group.name, state)
        return {
            "message": f"port group {group.name} of {target.name}: {before.label} -> "
            f"{group.state.label}",
            **alua_view(target),
        }

    return {"alua.show": show, "alua.set": set_state}


def _seconds(a: Args) -> float | None:
    value = a.opt_number("transition")
    if value is None:
        return None
    if not 0 <= value <= MAX_TRANSITION:
        raise OpError(
            ErrorCode.INVALID,
            f"alua.set: 'transition' must be 0..{MAX_TRANSITION:g} seconds, got {value}",
            "args.transition",
        )
    return value


def _groups(target: Target) -> PortGroups:
    if target.alua is None:
        raise OpError(
            ErrorCode.NOT_FOUND,
            f"target {target.name} has no port groups (ALUA is off: add "
            f'[targets."{target.name}".port_groups.NAME] to its configuration)',
            f'targets."{target.name}".port_groups',
        )
    return target.alua
