"""Make the running tree match a new configuration, touching only what differs.

Every admin edit and every reload ends here: the old and new models are
compared object by object, and only the differences become messages or
atomic method calls to the owning actors (a resize to the device actor, a new
LUN map to the target, which hands each session its own). Sessions whose view
does not change are not disturbed. :func:`plan` finds the differences and what
they would take away from live sessions (refused unless forced); :func:`apply`
carries them out in an order that never leaves a LUN pointing at a stopped
device: new devices and listeners first, then targets, then removals.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from pyscst.actors.alua import PortGroupSpec
from pyscst.actors.device_unit import stop_unit
from pyscst.actors.faults import FaultEngine
from pyscst.actors.messages import ResizeDevice, SetDeviceReadOnly
from pyscst.actors.session import LunMapping
from pyscst.actors.target import InitiatorGroup, Target
from pyscst.admin.config.model import Config, DeviceConfig, TargetConfig
from pyscst.admin.config.model import LunMapping as LunMappingConfig
from pyscst.admin.control.protocol import ErrorCode, OpError
from pyscst.scsi.sense import Asc

if TYPE_CHECKING:
    from pyscst.admin.control.daemon_api import DaemonApi as Daemon

log = logging.getLogger(__name__)

#: device fields a running device can change without being replaced
_LIVE_DEVICE_FIELDS = {"size", "read_only"}


@attrs.frozen
class Plan:
    """The differences between two models, by kind."""

    devices_added: tuple[DeviceConfig, ...] = ()
    devices_removed: tuple[str, ...] = ()
    devices_replaced: tuple[DeviceConfig, ...] = ()  # changed beyond size/read_only
    devices_resized: tuple[tuple[str, int], ...] = ()
    devices_read_only: tuple[tuple[str, bool], ...] = ()
    targets_added: tuple[TargetConfig, ...] = ()
    targets_removed: tuple[str, ...] = ()
    targets_changed: tuple[TargetConfig, ...] = ()
    portals_added: tuple[tuple[str, int], ...] = ()
    portals_removed: tuple[tuple[str, int], ...] = ()
    restart_required: tuple[str, ...] = ()
    #: the [iscsi] table changed: what the portals offer to new logins (sessions
    #: already logged in keep what they negotiated, as RFC 7143 has it)
    iscsi_changed: bool = False
    #: an access list or CHAP credential changed (applies to new logins)
    auth_changed: bool = False
    log_level: str | None = None
    in_use: tuple[str, ...] = ()  # what live sessions would lose

    @property
    def empty(self) -> bool:
        return not any(
            getattr(self, f.name) for f in attrs.fields(Plan) if f.name != "restart_required"
        )

    def summary(self) -> dict[str, Any]:
        """JSON-able account of the differences (the reply of edits and reloads)."""
        return {
            "devices_added": [d.name for d in self.devices_added],
            "devices_removed": list(self.devices_removed),
            "devices_replaced": [d.name for d in self.devices_replaced],
            "devices_resized": [{"name": n, "size": s} for n, s in self.devices_resized],
            "devices_read_only": [{"name": n, "read_only": r} for n, r in self.devices_read_only],
            "targets_added": [t.name for t in self.targets_added],
            "targets_removed": list(self.targets_removed),
            "targets_changed": [t.name for t in self.targets_changed],
            "portals_added": [_address(a) for a in self.portals_added],
            "portals_removed": [_address(a) for a in self.portals_removed],
            "restart_required": list(self.restart_required),
            "iscsi_changed": self.iscsi_changed,
            "auth_changed": self.auth_changed,
            "log_level": self.log_level,
        }


def _address(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _addresses(config: Config) -> set[tuple[str, int]]:
    return {(p.host, p.port) for t in config.targets for p in t.portals}


def _targets(config: Config) -> dict[str, TargetConfig]:
    return {t.name.lower(): t for t in config.targets}


def plan(daemon: Daemon, old: Config, new: Config) -> Plan:
    """What must change, and what live sessions would lose by it."""
    old_devices = {d.name: d for d in old.devices}
    new_devices = {d.name: d for d in new.devices}
    added = tuple(d for n, d in new_devices.items() if n not in old_devices)
    removed = tuple(n for n in old_devices if n not in new_devices)
    replaced: list[DeviceConfig] = []
    resized: list[tuple[str, int]] = []
    read_only: list[tuple[str, bool]] = []
    for name, dcfg in new_devices.items():
        before = old_devices.get(name)
        if before is None or before == dcfg:
            continue
        live_only = attrs.evolve(before, size=dcfg.size, read_only=dcfg.read_only) == dcfg
        if not live_only:
            replaced.append(dcfg)
            continue
        if before.size != dcfg.size:
            resized.append((name, dcfg.size))
        if before.read_only != dcfg.read_only:
            read_only.append((name, dcfg.read_only))
    old_targets, new_targets = _targets(old), _targets(new)
    t_added = tuple(t for k, t in new_targets.items() if k not in old_targets)
    t_removed = tuple(t.name for k, t in old_targets.items() if k not in new_targets)
    replaced_names = {d.name for d in replaced}
    t_changed = tuple(
        t
        for k, t in new_targets.items()
        if k in old_targets
        and (old_targets[k] != t or _maps_device(t, replaced_names))
    )
    portals_removed = tuple(sorted(_addresses(old) - _addresses(new)))
    losses = _losses(daemon, new, replaced_names) + _cut_off(daemon, portals_removed)
    restart = []
    for key in ("state_dir", "control_socket", "control_group", "metrics", "cluster"):
        if getattr(old, key) != getattr(new, key):
            restart.append(key)
    return Plan(
        devices_added=added,
        devices_removed=removed,
        devices_replaced=tuple(replaced),
        devices_resized=tuple(resized),
        devices_read_only=tuple(read_only),
        targets_added=t_added,
        targets_removed=t_removed,
        targets_changed=t_changed,
        portals_added=tuple(sorted(_addresses(new) - _addresses(old))),
        portals_removed=portals_removed,
        restart_required=tuple(restart),
        iscsi_changed=old.iscsi != new.iscsi,
        auth_changed=old.discovery_auth != new.discovery_auth
        or {t.name.lower(): t.auth for t in old.targets}
        != {t.name.lower(): t.auth for t in new.targets},
        log_level=new.log_level.value if new.log_level != old.log_level else None,
        in_use=tuple(losses),
    )


def _cut_off(daemon: Daemon, removed: tuple[tuple[str, int], ...]) -> list[str]:
    """Sessions logged in through a listener that is to stop (their connections end)."""
    losses: list[str] = []
    for address in removed:
        entry = daemon.portal_index.get(address)
        if entry is None:
            continue
        for child in list(entry[0].connections.children):
            info = getattr(child.actor, "info", lambda: None)()
            if info is not None:
                losses.append(
                    f"portal {_address(address)} carries session {info.tsih} "
                    f"({info.initiator_name} from {info.address})"
                )
    return losses


def _maps_device(target: TargetConfig, names: set[str]) -> bool:
    maps = [target.luns, *(g.luns for g in target.groups)]
    return any(m.device in names for luns in maps for m in luns)


def _losses(daemon: Daemon, new: Config, replaced: set[str]) -> list[str]:
    """Each LUN a live session sees now and would lose (or see swapped)."""
    new_targets = _targets(new)
    losses: list[str] = []
    for target in daemon.directory:
        for info in target.session_infos():
            who = f"session {info.tsih} ({info.initiator_name} from {info.address})"
            tcfg = new_targets.get(target.name.lower())
            if tcfg is None:
                losses.append(f"target {target.name} has {who}")
                continue
            after = {m.lun: m.device for m in tcfg.luns_for(info.initiator_name)}
            for lun, mapping in sorted(info.luns.items()):
                if after.get(lun) != mapping.lu.name or mapping.lu.name in replaced:
                    losses.append(f"LUN {lun} of target {target.name} is in use by {who}")
    return losses


def check_in_use(p: Plan, force: bool) -> None:
    if p.in_use and not force:
        first = p.in_use[0]
        more = f" (and {len(p.in_use) - 1} more)" if len(p.in_use) > 1 else ""
        raise OpError(ErrorCode.IN_USE, f"{first}{more}; pass force to do it anyway")


async def apply(daemon: Daemon, p: Plan, new: Config, grow: bool = True) -> None:
    """Carry out ``p``; ``daemon.config`` becomes ``new`` (raises OpError on failure).

    ``grow``: new devices may extend an existing backing file smaller than
    their size (a reload: the file says so; an admin add only with --grow)."""
    # 1. new listeners first: if an address is taken, nothing else has changed yet
    started: list[tuple[str, int]] = []
    for host, port in p.portals_added:
        try:
            await daemon.add_portal(host, port)
        except OSError as exc:
            for addr in started:
                await daemon.remove_portal(*addr)
            raise OpError(
                ErrorCode.INVALID,
                f"cannot listen on {_address((host, port))}: {exc.strerror or exc}",
                "portal",
            ) from None
        started.append((host, port))
    # 2. new devices (and replacements, under their new identity)
    old_units = {}
    for dcfg in p.devices_replaced:
        old_units[dcfg.name] = daemon.unit_children.pop(dcfg.name)
    opened: list[str] = []
    for dcfg in (*p.devices_added, *p.devices_replaced):
        try:
            await daemon.add_device(dcfg, config=new, grow=grow)
        except (OSError, ValueError) as exc:
            # undo this step and step 1: the running tree stays as it was
            for name in opened:
                await daemon.remove_device(name)
            _restore(daemon, old_units)
            for addr in started:
                await daemon.remove_portal(*addr)
            raise OpError(
                ErrorCode.INVALID,
                f"device {dcfg.name}: cannot open backing store: {exc}",
                f"devices.{dcfg.name}",
            ) from None
        opened.append(dcfg.name)
    # 3. live device changes: messages to the device actors, then the LU's UA
    for name, size in p.devices_resized:
        await _device_request(daemon, name, ResizeDevice(size))
        # (atomic: the very next command of every nexus already sees it)
        daemon.units[name].unit_attention(Asc.CAPACITY_DATA_HAS_CHANGED)
    for name, flag in p.devices_read_only:
        await _device_request(daemon, name, SetDeviceReadOnly(flag))
        # the WP bit of MODE SENSE's header changed: a mode parameter (SPC-4 6.11)
        daemon.units[name].unit_attention(Asc.MODE_PARAMETERS_CHANGED)
    daemon.config = new
    # credentials and access lists first: a target added below never takes a
    # login without them (they apply to logins from now on)
    daemon.apply_auth()
    # 4. targets: removed ones end their sessions; changed ones get new maps
    for name in p.targets_removed:
        target = daemon.directory.get(name)
        if target is not None:
            daemon.directory.remove(name)
            await target.close_all_sessions()
    for tcfg in p.targets_added:
        daemon.directory.add(_build_target(daemon, tcfg))
    for tcfg in p.targets_changed:
        target = daemon.directory.get(tcfg.name)
        if target is None:
            continue
        default_luns, groups = _maps(daemon, tcfg)
        target.set_alias(tcfg.alias)
        target.set_portals(_published(daemon, tcfg), [(p.host, p.port) for p in tcfg.portals])
        apply_port_groups(target, tcfg, daemon.faults)
        target.reconfigure(default_luns, groups)
    # 5. removals last: nothing refers to them any more
    for child in old_units.values():
        await stop_unit(child)
    for name in p.devices_removed:
        await daemon.remove_device(name)
    for host, port in p.portals_removed:
        if (host, port) in daemon.portal_index:
            await daemon.remove_portal(host, port)
    if p.iscsi_changed:
        daemon.offer_iscsi_settings()
    if p.log_level is not None:
        logging.getLogger().setLevel(new.log_level.as_logging_level)


def _restore(daemon: Daemon, old_units: dict[str, Any]) -> None:
    """Put back the device actors and LUs a failed replacement took out."""
    for name, child in old_units.items():
        daemon.unit_children[name] = child
        daemon.devices[name] = child.actor.device
        daemon.units[name] = child.actor.lu


async def _device_request(daemon: Daemon, name: str, message: Any) -> None:
    # (a device that is down keeps the change for when it reopens)
    failure = await daemon.devices[name].request(message)
    if isinstance(failure, Exception):
        raise OpError(ErrorCode.INVALID, f"device {name}: {failure}", f"devices.{name}")


def _luns(daemon: Daemon, entries: tuple[LunMappingConfig, ...]) -> dict[int, LunMapping]:
    return {e.lun: LunMapping(daemon.units[e.device], e.read_only) for e in entries}


def _maps(daemon: Daemon, tcfg: TargetConfig) -> tuple[dict[int, LunMapping], list[InitiatorGroup]]:
    groups = [
        InitiatorGroup(g.name, g.initiators, _luns(daemon, g.luns)) for g in tcfg.groups
    ]
    return _luns(daemon, tcfg.luns), groups


def _published(daemon: Daemon, tcfg: TargetConfig) -> list[tuple[str, int]]:
    """The portals SendTargets names: the real port where port 0 was asked for."""
    out = []
    for p in tcfg.portals:
        port = p.port
        entry = daemon.portal_index.get((p.host, p.port))
        if port == 0 and entry is not None and entry[0].bound:
            port = entry[0].bound[0][1]
        out.append((p.host, port))
    return out


def _build_target(daemon: Daemon, tcfg: TargetConfig) -> Target:
    default_luns, groups = _maps(daemon, tcfg)
    target = Target(
        tcfg.name,
        portals=_published(daemon, tcfg),
        default_luns=default_luns,
        groups=groups,
        alias=tcfg.alias,
    )
    target.set_portals(target.portals, [(p.host, p.port) for p in tcfg.portals])
    target.set_initiators(tcfg.auth.initiators)
    apply_port_groups(target, tcfg, daemon.faults)
    return target


def apply_port_groups(target: Target, tcfg: TargetConfig, faults: FaultEngine | None) -> None:
    """The target's ALUA port groups as configured (live states of groups that
    keep their name are kept: the config says where a group starts)."""
    specs = [
        PortGroupSpec(
            g.name, g.group_id, tuple((p.host, p.port) for p in g.portals), g.state,
            g.relative_port, g.preferred,
        )
        for g in tcfg.port_groups
    ]
    target.set_port_groups(
        specs, explicit=tcfg.alua_explicit, transition_time=tcfg.alua_transition_time,
        faults=faults,
    )  # fmt: skip
