"""The daemon root: build the actor tree from a config, run it, stop it cleanly.

Start order is devices, then logical units, then targets, then portals, so an
initiator can never reach a LUN whose device is not open; stop order is the
reverse: portals close first (no new logins), sessions end, and only then do
device actors flush and close their stores. SIGINT and SIGTERM trigger that
orderly stop and ``serve`` returns normally (exit code 0).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import attrs
import trio

from actors.core_table import CORE_TABLE
from actors.device import DeviceActor
from actors.lun import LogicalUnit
from actors.session import LunMapping
from actors.target import InitiatorGroup, Target, TargetDirectory
from admin.config_model import Config, IscsiSettings
from admin.config_model import LunMapping as LunMappingConfig
from supervision.supervisor import Child, Restart, Supervisor
from transports.iscsi.portal import IscsiPortal

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
    portal_children: list[Child] = attrs.field(factory=list)
    stop_requested: trio.Event = attrs.field(factory=trio.Event)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [addr for p in self.portals for addr in p.bound]

    def stop(self) -> None:
        self.stop_requested.set()


def iscsi_limits(settings: IscsiSettings) -> dict[str, str]:
    """The RFC 7143 key values the target offers, from the [iscsi] table."""

    def yes(flag: bool) -> str:
        return "Yes" if flag else "No"

    return {
        "MaxRecvDataSegmentLength": str(settings.max_recv_data_segment_length),
        "MaxBurstLength": str(settings.max_burst_length),
        "FirstBurstLength": str(settings.first_burst_length),
        "InitialR2T": yes(settings.initial_r2t),
        "ImmediateData": yes(settings.immediate_data),
        "MaxOutstandingR2T": str(settings.max_outstanding_r2t),
        "MaxConnections": str(settings.max_connections),
        "DefaultTime2Wait": str(settings.default_time2wait),
        "DefaultTime2Retain": str(settings.default_time2retain),
        "HeaderDigest": ",".join(d.value for d in settings.header_digest),
        "DataDigest": ",".join(d.value for d in settings.data_digest),
        "ErrorRecoveryLevel": "0",
        "DataPDUInOrder": "Yes",
        "DataSequenceInOrder": "Yes",
    }


async def start(config: Config, nursery: trio.Nursery) -> Daemon:
    """Build and start the actor tree in ``nursery``; raise StartupError on failure."""
    root = Supervisor("root")
    await nursery.start(root.run)
    devices: dict[str, DeviceActor] = {}
    units: dict[str, LogicalUnit] = {}
    for dcfg in config.devices:
        actor = DeviceActor(dcfg)
        try:
            await root.start(actor, Restart.PERMANENT)
        except (OSError, ValueError) as exc:
            raise StartupError(f"device {dcfg.name}: cannot open backing store: {exc}") from exc
        devices[dcfg.name] = actor
        lu = LogicalUnit(dcfg.name, actor.current, CORE_TABLE)
        await root.start(lu, Restart.PERMANENT)
        units[dcfg.name] = lu

    def luns(entries: tuple[LunMappingConfig, ...]) -> dict[int, LunMapping]:
        return {e.lun: LunMapping(units[e.device], e.read_only) for e in entries}

    directory = TargetDirectory()
    by_address: dict[tuple[str, int], list[Target]] = {}
    for tcfg in config.targets:
        target = Target(
            tcfg.name,
            portals=[(p.host, p.port) for p in tcfg.portals],
            default_luns=luns(tcfg.luns),
            groups=[InitiatorGroup(g.name, g.initiators, luns(g.luns)) for g in tcfg.groups],
            alias=tcfg.alias,
        )
        directory.add(target)
        for p in tcfg.portals:
            by_address.setdefault((p.host, p.port), []).append(target)

    daemon = Daemon(config, root, devices, units, directory, [])
    limits = iscsi_limits(config.iscsi)
    for (host, port), targets in by_address.items():
        portal = IscsiPortal(host, port, directory, limits, config.iscsi.queue_depth)
        try:
            child = await root.start(portal, Restart.PERMANENT)
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        daemon.portals.append(portal)
        daemon.portal_children.append(child)
        if port == 0:  # ephemeral (tests): publish the real port in SendTargets
            actual = portal.bound[0][1]
            for target in targets:
                target.portals = [
                    (h, actual if (h, p) == (host, 0) else p) for h, p in target.portals
                ]
    return daemon


async def stop(daemon: Daemon) -> None:
    """Orderly shutdown: portals and sessions first, then the rest."""
    with trio.CancelScope(shield=True):
        for child in daemon.portal_children:
            child.stop()
        with trio.move_on_after(10):
            for child in daemon.portal_children:
                await child.wait_stopped()


async def serve(config: Config, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run the daemon until SIGINT/SIGTERM (or ``Daemon.stop()``)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                daemon = await start(config, nursery)
            except BaseExceptionGroup as group:
                startup = group.subgroup(StartupError)
                if startup is not None:
                    raise startup.exceptions[0] from None
                raise

            async def watch_signals() -> None:
                async for signum in signals:
                    log.info("received %s, stopping", signal.Signals(signum).name)
                    daemon.stop()
                    return

            nursery.start_soon(watch_signals)
            log.info(
                "pyscst ready: %d devices, %d targets", len(daemon.devices), len(config.targets)
            )
            task_status.started(daemon)
            await daemon.stop_requested.wait()
            await stop(daemon)
            nursery.cancel_scope.cancel()
    log.info("pyscst stopped")
