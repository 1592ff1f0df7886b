"""The daemon root: build the actor tree from a config, run it, stop it cleanly.

Start order is devices, then logical units, then targets, then portals, so an
initiator can never reach a LUN whose device is not open; stop order is the
reverse: portals close first (no new logins), sessions end, and only then do
device actors flush and close their stores. SIGINT and SIGTERM trigger that
orderly stop and ``serve`` returns normally (exit code 0).
"""

from __future__ import annotations

import logging
import resource
import signal
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.device import DeviceActor
from pyscst.actors.device_unit import DeviceUnit, stop_unit
from pyscst.actors.faults import FaultEngine
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.session import LunMapping
from pyscst.actors.supervisor import Budget, Child, Restart, Supervisor
from pyscst.actors.target import InitiatorGroup, Target, TargetDirectory
from pyscst.admin.config.model import AuthConfig, Config, DeviceConfig, IscsiSettings
from pyscst.admin.config.model import LunMapping as LunMappingConfig
from pyscst.admin.control.operations import Controller
from pyscst.admin.control.ops.faults import fault_operations
from pyscst.admin.control.reconcile import apply_port_groups
from pyscst.admin.control.server import ControlServer, OpHandler
from pyscst.devices.io_engine import SubmissionBatch
from pyscst.supervision.cluster.alua_sync import AluaSync
from pyscst.supervision.cluster.etcd_proto import EtcdError
from pyscst.supervision.cluster.node import ClusterNode
from pyscst.supervision.gc_tuning import tune_gc
from pyscst.supervision.host import run_host_services
from pyscst.transports.iscsi.auth import AuthRegistry
from pyscst.transports.iscsi.backend import connect_iscsi
from pyscst.transports.iscsi.chap import ChapSettings, Credential
from pyscst.transports.iscsi.connection import ConnectionSettings
from pyscst.transports.iscsi.login import TargetOffer
from pyscst.transports.iscsi.portal import IscsiPortal

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start (a port is busy, a backing file cannot be opened)."""


@attrs.define
class Daemon:
    """Handles on the running tree, for tests and the admin plane."""

    config: Config
    root: Supervisor
    devices: dict[str, DeviceActor]
    units: dict[str, LogicalUnit]
    directory: TargetDirectory
    portals: list[IscsiPortal]
    #: the listeners' own supervisor (a portal that keeps crashing stops
    #: listening; the rest of the daemon does not notice)
    portal_supervisor: Supervisor = attrs.field(
        factory=lambda: Supervisor("portals", budget=Budget(5, 10.0), on_give_up=_portal_retired)
    )
    portal_children: list[Child] = attrs.field(factory=list)
    stop_requested: trio.Event = attrs.field(factory=trio.Event)
    #: device name -> the root's child running its DeviceUnit (device actor + LU
    #: under the device's own supervisor: actors/device_unit.py)
    unit_children: dict[str, Child] = attrs.field(factory=dict)
    #: configured address -> its listener (one per distinct host:port)
    portal_index: dict[tuple[str, int], tuple[IscsiPortal, Child]] = attrs.field(factory=dict)
    #: the control endpoint's op table (op name -> async handler); fault injection
    #: and other planes register their ops here before or after start
    control_ops: dict[str, OpHandler] = attrs.field(factory=dict)
    #: the file the config came from (config.save / config.reload / SIGHUP)
    config_path: Path | None = None
    #: fault injection rules, consulted by every LU and connection (actors/faults.py)
    faults: FaultEngine = attrs.field(factory=FaultEngine)
    #: CHAP credentials per target and for discovery, read by every portal per login
    auth: AuthRegistry = attrs.field(factory=AuthRegistry)
    #: cluster mode ([cluster]): this node's lease, fence and shared reservations
    cluster: ClusterNode | None = None
    #: the io_uring submission batch of this daemon's stores and connections
    #: (devices/io_engine.py): a connection's reader submits what its chunk queued
    io_batch: SubmissionBatch = attrs.field(factory=SubmissionBatch)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [addr for p in self.portals for addr in p.bound]

    def stop(self) -> None:
        self.stop_requested.set()

    async def add_device(
        self, dcfg: DeviceConfig, *, config: Config | None = None, grow: bool = True
    ) -> None:
        """Start a device actor and its LU under the device's own supervisor
        (OSError/ValueError: store would not open).

        Its backing file must lie below ``config``'s (default: the running
        one's) state_dir or allowed_dirs; ``grow`` lets it extend an existing
        smaller file (the config file says so; the admin plane needs --grow)."""
        roots = (config or self.config).confined_roots
        store = None
        if self.cluster is not None:
            try:
                store = await self.cluster.open_store(dcfg.name)
            except EtcdError as exc:
                raise ValueError(f"cluster: cannot read its reservations: {exc}") from exc
        actor = DeviceActor(
            dcfg, roots=roots, grow=grow, peers=self._peer, backends=connect_iscsi,
            io_batch=self.io_batch,
        )  # fmt: skip
        lu = LogicalUnit(
            dcfg.name, actor.current, CORE_TABLE, faults=self.faults,
            pr_path=self.config.state_dir / "pr" / f"{dcfg.name}.json",
            standby=actor.standby, store=store, fence=self.cluster,
        )
        unit = DeviceUnit(actor, lu, Budget(dcfg.max_restarts, dcfg.restart_period))
        child = await self.root.start(unit, Restart.PERMANENT)
        self.faults.register_device(dcfg.name, actor.crash)
        self.devices[dcfg.name] = actor
        self.units[dcfg.name] = lu
        self.unit_children[dcfg.name] = child

    def _peer(self, name: str) -> tuple[DeviceActor, LogicalUnit] | None:
        """A device's actor and LU by name (a changer's way to its drives)."""
        actor, lu = self.devices.get(name), self.units.get(name)
        return None if actor is None or lu is None else (actor, lu)

    def device_unit(self, name: str) -> DeviceUnit | None:
        child = self.unit_children.get(name)
        return child.actor if child is not None else None  # type: ignore[return-value]

    async def remove_device(self, name: str) -> None:
        """Stop a device's LU, then the device actor (which flushes and closes)."""
        child = self.unit_children.pop(name)
        self.units.pop(name, None)
        self.devices.pop(name, None)
        await stop_unit(child)

    async def add_portal(self, host: str, port: int) -> IscsiPortal:
        """Listen on one more address (OSError if it cannot)."""
        iscsi = self.config.iscsi
        portal = IscsiPortal(
            host, port, self.directory, iscsi_limits(iscsi), connection_settings(iscsi),
            faults=self.faults, auth=self.auth, io_batch=self.io_batch,
        )  # fmt: skip
        child = await self.portal_supervisor.start(portal, Restart.PERMANENT)
        self.portals.append(portal)
        self.portal_children.append(child)
        self.portal_index[(host, port)] = (portal, child)
        return portal

    def apply_auth(self) -> None:
        """Access lists and CHAP credentials from ``config`` (start, edits,
        reloads): they apply to logins from now on."""
        for tcfg in self.config.targets:
            target = self.directory.get(tcfg.name)
            if target is not None:
                target.set_initiators(tcfg.auth.initiators)
        self.auth.replace(
            {t.name: s for t in self.config.targets if (s := chap_settings(t.auth))},
            chap_settings(self.config.discovery_auth),
        )

    def offer_iscsi_settings(self) -> None:
        """Every portal negotiates new logins from ``config.iscsi`` (after a reload)."""
        iscsi = self.config.iscsi
        for portal in self.portals:
            portal.offer(iscsi_limits(iscsi), connection_settings(iscsi))

    async def remove_portal(self, host: str, port: int) -> None:
        """Stop listening on an address; its connections end."""
        portal, child = self.portal_index.pop((host, port))
        self.portals.remove(portal)
        self.portal_children.remove(child)
        child.stop()
        await child.wait_stopped()


def chap_settings(auth: AuthConfig) -> ChapSettings | None:
    """The login core's view of an auth table (None: no CHAP demanded)."""
    if not auth.chap:
        return None
    mutual = auth.mutual
    return ChapSettings(
        tuple(Credential(u.user, u.secret) for u in auth.chap),
        Credential(mutual.user, mutual.secret) if mutual is not None else None,
    )


def _portal_retired(child: Child, reason: str) -> None:
    log.error("%s stopped listening: %s", child.actor.name, reason)


def connection_settings(settings: IscsiSettings) -> ConnectionSettings:
    """How connections run, from the [iscsi] table (beyond login keys)."""
    return ConnectionSettings(
        queue_depth=settings.queue_depth,
        poll_us=settings.poll_us,
        nop_interval=settings.nop_interval,
        nop_timeout=settings.nop_timeout,
        login_timeout=settings.login_timeout,
        pdu_timeout=settings.pdu_timeout,
        max_prelogin_connections=settings.max_prelogin_connections,
        max_prelogin_per_address=settings.max_prelogin_per_address,
    )


def iscsi_limits(settings: IscsiSettings) -> dict[str, str]:
    """The RFC 7143 key values the target offers, from the [iscsi] table."""
    return TargetOffer(
        max_recv_data_segment_length=settings.max_recv_data_segment_length,
        max_burst_length=settings.max_burst_length,
        first_burst_length=settings.first_burst_length,
        initial_r2t=settings.initial_r2t,
        immediate_data=settings.immediate_data,
        max_outstanding_r2t=settings.max_outstanding_r2t,
        max_connections=settings.max_connections,
        default_time2wait=settings.default_time2wait,
        default_time2retain=settings.default_time2retain,
        header_digest=tuple(d.value for d in settings.header_digest),
        data_digest=tuple(d.value for d in settings.data_digest),
    ).limits()


async def start(
    config: Config, nursery: trio.Nursery, config_path: Path | None = None
) -> Daemon:
    """Build and start the actor tree in ``nursery``; raise StartupError on failure."""
    # the root never gives up: each of its children contains its own failures
    # (a device goes offline, a portal stops listening); a child that still
    # crashes is restarted after a pause that grows with its crashes
    root = Supervisor("root", budget=None)
    await nursery.start(root.run)
    devices: dict[str, DeviceActor] = {}
    units: dict[str, LogicalUnit] = {}
    daemon = Daemon(config, root, devices, units, TargetDirectory(), [], config_path=config_path)
    for rule in config.faults:
        daemon.faults.add(rule, trio.current_time())
    if config.cluster is not None:
        node = ClusterNode(config.cluster)
        try:
            await nursery.start(node.run)
        except EtcdError as exc:
            raise StartupError(f"cluster: cannot join through etcd: {exc}") from exc
        daemon.cluster = node
    for dcfg in config.devices:
        try:
            await daemon.add_device(dcfg)
        except (OSError, ValueError) as exc:
            raise StartupError(f"device {dcfg.name}: cannot open backing store: {exc}") from exc

    def luns(entries: tuple[LunMappingConfig, ...]) -> dict[int, LunMapping]:
        return {e.lun: LunMapping(units[e.device], e.read_only) for e in entries}

    await root.start(daemon.portal_supervisor)
    directory = daemon.directory
    by_address: dict[tuple[str, int], list[Target]] = {}
    for tcfg in config.targets:
        target = Target(
            tcfg.name,
            portals=[(p.host, p.port) for p in tcfg.portals],
            default_luns=luns(tcfg.luns),
            groups=[InitiatorGroup(g.name, g.initiators, luns(g.luns)) for g in tcfg.groups],
            alias=tcfg.alias,
        )
        apply_port_groups(target, tcfg, daemon.faults)
        directory.add(target)
        for p in tcfg.portals:
            by_address.setdefault((p.host, p.port), []).append(target)
    daemon.apply_auth()
    if daemon.cluster is not None:
        try:
            await daemon.cluster.attach_alua(AluaSync(directory))
        except EtcdError as exc:
            raise StartupError(f"cluster: cannot share ALUA states through etcd: {exc}") from exc

    for (host, port), targets in by_address.items():
        try:
            portal = await daemon.add_portal(host, port)
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        if port == 0:  # ephemeral (tests): publish the real port in SendTargets
            actual = portal.bound[0][1]
            for target in targets:
                target.portals = [
                    (h, actual if (h, p) == (host, 0) else p) for h, p in target.portals
                ]
    daemon.control_ops.update(Controller(daemon).operations())
    daemon.control_ops.update(fault_operations(daemon))
    daemon.control_ops["cluster.show"] = partial(cluster_show, daemon)
    try:
        await root.start(
            ControlServer(config.control_socket, daemon.control_ops, group=config.control_group)
        )
    except OSError as exc:
        raise StartupError(f"cannot open the control socket: {exc}") from exc
    return daemon


async def cluster_show(daemon: Daemon, _args: Mapping[str, Any]) -> dict[str, Any]:
    """``cluster.show``: this node's view of the cluster (single node: says so)."""
    if daemon.cluster is None:
        return {"message": "not a cluster node (no [cluster] in the config)"}
    return daemon.cluster.status()


async def reload_on_signal(daemon: Daemon) -> None:
    """SIGHUP: reload the config file like ``pyscst admin reload`` (never forced)."""
    log.info("received SIGHUP, reloading %s", daemon.config_path)
    try:
        summary = await daemon.control_ops["config.reload"]({})
    except Exception as exc:  # an OpError names the problem; nothing else may escape
        log.error("reload failed, running configuration unchanged: %s", exc)
    else:
        log.info("reload applied: %s", summary)


async def stop(daemon: Daemon) -> None:
    """Orderly shutdown: portals and sessions first, then the rest."""
    with trio.CancelScope(shield=True):
        for child in daemon.portal_children:
            child.stop()
        with trio.move_on_after(10):
            for child in daemon.portal_children:
                await child.wait_stopped()
        if daemon.cluster is not None:
            await daemon.cluster.leave()


def raise_fd_limit() -> tuple[int, int]:
    """Raise the open-file soft limit to the hard limit (logged): every
    connection costs a descriptor, and the usual soft default of 1024 would let
    a thousand idle sockets lock real initiators out. Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if want == resource.RLIM_INFINITY:  # NOFILE cannot be unlimited: the kernel's cap
        try:
            want = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            want = 1 << 20
    if soft != resource.RLIM_INFINITY and soft >= want:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
        return soft, soft
    log.info("raised the open-file limit (RLIMIT_NOFILE soft) from %d to %d", soft, want)
    return soft, want


async def serve(
    config: Config,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    *,
    config_path: Path | None = None,
) -> None:
    """Run the daemon until SIGINT/SIGTERM (or ``Daemon.stop()``); SIGHUP reloads
    ``config_path`` and applies the difference."""
    raise_fd_limit()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            try:
                daemon = await start(config, nursery, config_path)
                # metrics endpoint, then systemd READY/STATUS/WATCHDOG/STOPPING
                await nursery.start(run_host_services, daemon)
            except BaseExceptionGroup as group:
                startup = group.subgroup(StartupError)
                if startup is not None:
                    raise startup.exceptions[0] from None
                raise

            async def watch_signals() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        nursery.start_soon(reload_on_signal, daemon)
                        continue
                    log.info("received %s, stopping", signal.Signals(signum).name)
                    daemon.stop()
                    return

            nursery.start_soon(watch_signals)
            tune_gc()  # (what the daemon holds for good exists now)
            log.info(
                "pyscst ready: %d devices, %d targets", len(daemon.devices), len(config.targets)
            )
            task_status.started(daemon)
            await daemon.stop_requested.wait()
            await stop(daemon)
            nursery.cancel_scope.cancel()
    log.info("pyscst stopped")
