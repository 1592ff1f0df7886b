"""Runtime ops: the tree, sessions, resets and statistics.

These read or act on live state without changing the configuration: a
session is closed by aborting its connection (the initiator may log in
again), resets go to the logical units as the same messages a task
management request would send, and statistics are snapshots the LU actors
hand out (never their live counters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from pyscst.actors.device_unit import RestartFailed
from pyscst.actors.lu_stats import StatsSnapshot
from pyscst.actors.messages import ResetLogicalUnit, call
from pyscst.actors.target import SessionInfo, Target
from pyscst.admin.config.faults import rule_to_dict
from pyscst.admin.config.model import DeviceConfig, TargetConfig
from pyscst.admin.control.ops.args import Args
from pyscst.admin.control.protocol import ErrorCode, OpError
from pyscst.admin.control.server import OpHandler
from pyscst.devices.confine import lexical
from pyscst.devices.medium import MediumLocked
from pyscst.devices.registry import HANDLERS
from pyscst.scsi.sense import Asc

if TYPE_CHECKING:
    from pyscst.admin.control.daemon_api import DaemonApi as Daemon
    from pyscst.admin.control.operations import Controller


def operations(controller: Controller) -> dict[str, OpHandler]:
    daemon = controller.daemon

    async def tree(args: Mapping[str, Any]) -> dict[str, Any]:
        Args("tree", args).done()
        return build_tree(daemon)

    async def session_list(args: Mapping[str, Any]) -> list[dict[str, Any]]:
        a = Args("session.list", args)
        name = a.opt_text("target")
        a.done()
        targets = [target_named(daemon, name)] if name is not None else list(daemon.directory)
        return [session_dict(t, i) for t in targets for i in t.session_infos()]

    async def session_close(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("session.close", args)
        target = target_named(daemon, a.text("target"))
        tsih = a.integer("tsih")
        a.done()
        handle = target.session_by_tsih(tsih)
        if handle is None:
            raise _no_session(target, tsih)
        handle.abort()
        with trio.move_on_after(10):
            await handle.wait_closed()
        return {"message": f"closed session {tsih} of target {target.name}"}

    async def reset_lun(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("reset.lun", args)
        name = a.text("device")
        a.done()
        lu = daemon.units.get(name)
        if lu is None:
            raise _no_device(daemon, name)
        await call(lu.mailbox, ResetLogicalUnit(None))
        return {"message": f"reset logical unit {name}"}

    async def reset_target(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("reset.target", args)
        target = target_named(daemon, a.text("target"))
        a.done()
        await target.reset(None, Asc.SCSI_BUS_RESET_OCCURRED)
        return {"message": f"reset every logical unit of target {target.name}"}

    async def device_list(args: Mapping[str, Any]) -> list[dict[str, Any]]:
        Args("device.list", args).done()
        return [device_view(daemon, d) for d in daemon.config.devices]

    async def device_show(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("device.show", args)
        name = a.text("name")
        a.done()
        for d in daemon.config.devices:
            if d.name == name:
                return device_view(daemon, d)
        raise _no_device(daemon, name)

    async def device_restart(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("device.restart", args)
        name = a.text("name")
        a.done()
        unit = daemon.device_unit(name)
        if unit is None:
            raise _no_device(daemon, name)
        try:
            message = await unit.restart()
        except RestartFailed as exc:
            raise OpError(ErrorCode.INVALID, str(exc), f"devices.{name}") from None
        return {"message": message, **unit.status()}

    async def change_medium(op: str, args: Mapping[str, Any], load: bool) -> dict[str, Any]:
        a = Args(op, args)
        name = a.text("name")
        written = a.opt_text("path") if load else None
        a.done()
        unit = daemon.device_unit(name)
        if unit is None:
            raise _no_device(daemon, name)
        _refuse_library_drive(daemon, op, name)
        path = lexical(daemon.config.state_dir, written) if written else None
        try:
            changed = await unit.device.change_medium(load, path)
        except MediumLocked:
            raise OpError(
                ErrorCode.INVALID,
                f"device {name}: an initiator prevents medium removal (PREVENT ALLOW MEDIUM "
                "REMOVAL); it must allow removal first",
                f"devices.{name}",
            ) from None
        except (ValueError, OSError) as exc:
            raise OpError(ErrorCode.INVALID, f"device {name}: {exc}",
                          "args.path" if path is not None else f"devices.{name}") from None
        if changed and load:
            # the medium may have changed: every nexus hears it (SPC-4 / MMC)
            unit.lu.unit_attention(Asc.NOT_READY_TO_READY_CHANGE)
        state = "loaded" if load else "ejected"
        message = f"device {name}: medium {state}" if changed else (
            f"device {name}: medium already {state}")
        return {"message": message, "medium": "present" if load else "absent"}

    async def device_eject(args: Mapping[str, Any]) -> dict[str, Any]:
        return await change_medium("device.eject", args, load=False)

    async def device_load(args: Mapping[str, Any]) -> dict[str, Any]:
        return await change_medium("device.load", args, load=True)

    async def stats(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("stats", args)
        device, tname, tsih = a.opt_text("device"), a.opt_text("target"), a.opt_integer("tsih")
        a.done()
        if device is not None:
            lu = daemon.units.get(device)
            if lu is None:
                raise _no_device(daemon, device)
            return {"device": device, **_service(daemon, device), **lu.stats().as_dict()}
        if tsih is not None and tname is None:
            raise OpError(ErrorCode.INVALID, "stats: tsih needs target", "args.tsih")
        targets = [target_named(daemon, tname)] if tname is not None else list(daemon.directory)
        sessions = []
        for target in targets:
            for info in target.session_infos():
                if tsih is None or info.tsih == tsih:
                    sessions.append(session_stats(target, info))
        if tsih is not None:
            if not sessions:
                raise _no_session(targets[0], tsih)
            return sessions[0]
        result: dict[str, Any] = {"sessions": sessions}
        if tname is None:
            result["devices"] = [
                {"device": name, **_service(daemon, name), **lu.stats().as_dict()}
                for name, lu in daemon.units.items()
            ]
        return result

    return {
        "tree": tree,
        "device.list": device_list,
        "device.show": device_show,
        "device.restart": device_restart,
        "device.eject": device_eject,
        "device.load": device_load,
        "session.list": session_list,
        "session.close": session_close,
        "reset.lun": reset_lun,
        "reset.target": reset_target,
        "stats": stats,
    }


def target_named(daemon: Daemon, name: str) -> Target:
    """The running target called ``name``, or NOT_FOUND naming the ones there are."""
    target = daemon.directory.get(name)
    if target is None:
        known = ", ".join(t.name for t in daemon.directory) or "none"
        raise OpError(
            ErrorCode.NOT_FOUND, f'no target named "{name}" (targets: {known})', f'targets."{name}"'
        )
    return target


def _no_device(daemon: Daemon, name: str) -> OpError:
    known = ", ".join(sorted(daemon.units)) or "none"
    return OpError(
        ErrorCode.NOT_FOUND, f'no device named "{name}" (devices: {known})', f"devices.{name}"
    )


def _service(daemon: Daemon, name: str) -> dict[str, Any]:
    """A device's service state: online / restarting / offline, and why."""
    unit = daemon.device_unit(name)
    if unit is None:
        return {"state": "removed", "last_error": None}
    return {"state": unit.state.value, "last_error": unit.last_error}


def device_view(daemon: Daemon, d: DeviceConfig) -> dict[str, Any]:
    """A device's configuration with its live service state (device.list/show)."""
    unit = daemon.device_unit(d.name)
    status = unit.status() if unit is not None else {"state": "removed", "last_error": None}
    view = {**device_dict(d), **status}
    if (d.removable or HANDLERS[d.handler].removable_medium) and unit is not None:
        present = unit.device.medium_present()
        view["medium"] = None if present is None else ("present" if present else "absent")
    if d.backend is not None and unit is not None:
        view["backend_state"] = unit.device.backend_state()
    return view


def _no_session(target: Target, tsih: int) -> OpError:
    known = ", ".join(str(i.tsih) for i in target.session_infos()) or "none"
    return OpError(
        ErrorCode.NOT_FOUND,
        f"target {target.name} has no session with TSIH {tsih} (sessions: {known})",
        f'targets."{target.name}".sessions.{tsih}',
    )


# -- JSON views -------------------------------------------------------------------


def device_dict(d: DeviceConfig) -> dict[str, Any]:
    return {
        "name": d.name,
        "handler": d.handler,
        "size": d.size,
        "block_size": d.block_size,
        "read_only": d.read_only,
        "path": str(d.path) if d.path is not None else None,
        "write_cache": d.write_cache,
        "serial": d.serial,
        "rotational": d.rotational,
        "removable": d.removable,
        "physical_block_size": d.physical_block_size or d.block_size,
        "max_restarts": d.max_restarts,
        "restart_period": d.restart_period,
        "io_engine": d.io_engine,
        # (where a passthrough device forwards; its CHAP secrets are never shown)
        "backend": d.backend.url if d.backend is not None else None,
    }


def target_dict(t: TargetConfig) -> dict[str, Any]:
    def luns(entries: Any) -> list[dict[str, Any]]:
        return [{"lun": m.lun, "device": m.device, "read_only": m.read_only} for m in entries]

    return {
        "name": t.name,
        "alias": t.alias,
        "portals": [str(p) for p in t.portals],
        "luns": luns(t.luns),
        "groups": [
            {"name": g.name, "initiators": list(g.initiators), "luns": luns(g.luns)}
            for g in t.groups
        ],
        "auth": t.auth.public(),  # user names and secret files, never a secret
    }


def alua_view(target: Target) -> dict[str, Any]:
    """One target's ALUA setup and live states (``alua.show``, the tree)."""
    groups = target.alua
    if groups is None:
        return {"target": target.name, "alua": False, "port_groups": []}
    return {
        "target": target.name,
        "alua": True,
        "explicit": groups.explicit,
        "transition_time": groups.transition_time,
        "port_groups": groups.describe(),
    }


def session_dict(target: Target, info: SessionInfo) -> dict[str, Any]:
    luns = []
    for lun, mapping in sorted(info.luns.items()):
        snap = mapping.lu.nexus_stats(info.nexus) or StatsSnapshot()
        luns.append(
            {
                "lun": lun,
                "device": mapping.lu.name,
                "read_only": mapping.read_only,
                "commands": snap.commands,
                "errors": snap.errors,
                "bytes_read": snap.bytes_read,
                "bytes_written": snap.bytes_written,
            }
        )
    return {
        "target": target.name,
        "initiator": info.initiator_name,
        "isid": f"0x{info.isid:012x}",
        "tsih": info.tsih,
        "address": info.address,
        #: the SCSI target port it came in through (ALUA: its port group)
        "relative_port": info.nexus.relative_port,
        **({"port_group": info.nexus.port_group_id} if info.nexus.port_group_id else {}),
        "luns": luns,
    }


def session_stats(target: Target, info: SessionInfo) -> dict[str, Any]:
    parts = {
        lun: m.lu.nexus_stats(info.nexus) or StatsSnapshot() for lun, m in info.luns.items()
    }
    total = StatsSnapshot.total(parts.values())
    return {
        "target": target.name,
        "tsih": info.tsih,
        "initiator": info.initiator_name,
        **total.as_dict(),
        "luns": [{"lun": lun, **snap.as_dict()} for lun, snap in sorted(parts.items())],
    }


def _refuse_library_drive(daemon: Daemon, op: str, name: str) -> None:
    """A library's drive gets its cartridges only from its changer: an eject
    or load behind the changer's back would make the inventory (what READ
    ELEMENT STATUS reports, and what the changer reloads after a restart) lie."""
    for d in daemon.config.devices:
        if d.library is not None and name in d.library.layout.drives:
            raise OpError(
                ErrorCode.INVALID,
                f"{op}: device {name} is a drive of library {d.name}, whose changer loads "
                f"and unloads it: move cartridges with MOVE MEDIUM on {d.name}'s LUN; to "
                f"bring one in or take one out use `pyscst admin library import|export "
                f"{d.name} BARCODE` (through a mail slot)",
                f"devices.{name}",
            )


def build_tree(daemon: Daemon) -> dict[str, Any]:
    config = daemon.config
    return {
        "devices": [
            {**device_dict(d), **_service(daemon, d.name)} for d in config.devices
        ],
        "targets": [target_dict(t) for t in config.targets],
        "discovery_auth": config.discovery_auth.public(),
        "sessions": [session_dict(t, i) for t in daemon.directory for i in t.session_infos()],
        #: live ALUA states of the targets that have port groups
        "alua": [alua_view(t) for t in daemon.directory if t.alua is not None],
        "faults": [
            {**s, "rule": rule_to_dict(daemon.faults.rule(s["id"]))}
            for s in daemon.faults.status()
        ],
    }
