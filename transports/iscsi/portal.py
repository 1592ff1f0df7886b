"""An iSCSI portal: one listening address, and the target side of every login on it.

The portal listens, hands each accepted socket to a new connection actor (a
temporary child of its supervisor: a crashed connection is logged and gone,
the initiator reconnects), and answers the connection's questions about
targets: the login policy built from the config, SendTargets, and turning a
successful login into a middle-level :class:`actors.session.Session`.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actors.faults import FaultEngine
from actors.session import Session
from actors.supervisor import Restart, Supervisor
from actors.target import TargetDirectory
from scsi.command import Nexus
from transports.iscsi.auth import AuthRegistry
from transports.iscsi.connection import ConnectionSettings, IscsiConnection
from transports.iscsi.login import LoginResult, TargetPolicy

log = logging.getLogger(__name__)


class IscsiPortal:
    """Listener actor for one ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        directory: TargetDirectory,
        limits: dict[str, str],
        settings: ConnectionSettings,
        faults: FaultEngine | None = None,
        auth: AuthRegistry | None = None,
    ) -> None:
        self.name = f"portal {host}:{port}"
        self.auth = auth if auth is not None else AuthRegistry()
        self._faults = faults
        self.host = host
        self.port = port
        self.directory = directory
        self.limits = limits
        self._settings = settings
        self.connections = Supervisor(f"connections@{host}:{port}")
        self.bound: list[tuple[str, int]] = []

    @property
    def settings(self) -> ConnectionSettings:
        return self._settings

    def offer(self, limits: dict[str, str], settings: ConnectionSettings) -> None:
        """What logins from now on negotiate from and run with (a reload of the
        [iscsi] table); sessions already logged in keep their values."""
        self.limits = limits
        self._settings = settings

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.bound = [_sockname(lst) for lst in listeners]
        async with trio.open_nursery() as nursery:
            await nursery.start(self.connections.run)
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener)
            log.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in self.bound))
            task_status.started(self.bound)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # e.g. EMFILE: back off, keep serving
                    log.warning("%s: accept failed: %s", self.name, exc)
                    await trio.sleep(0.1)
                    continue
                conn = IscsiConnection(stream, self, faults=self._faults)
                self.connections.start_soon(conn, Restart.TEMPORARY)

    # -- IscsiHost ------------------------------------------------------------
    def login_policy(self, local: tuple[str, int]) -> TargetPolicy:
        directory = self.directory

        def exists(name: str) -> bool:
            return directory.get(name) is not None

        def allowed(initiator: str, target_name: str) -> bool:
            target = directory.get(target_name)
            return target is not None and target.allows(initiator)

        def alias(target_name: str) -> str | None:
            target = directory.get(target_name)
            return target.alias if target is not None else None

        return TargetPolicy(
            portal_group_tag=1,
            target_exists=exists,
            initiator_allowed=allowed,
            allocate_tsih=directory.allocate_tsih,
            limits=self.limits,
            target_alias=alias,
            auth_for=self.auth.authenticator,
        )

    def send_targets(
        self, initiator_name: str, which: str, current: str | None, local: tuple[str, int]
    ) -> list[tuple[str, list[str]]]:
        return self.directory.send_targets(initiator_name, which, current, local)

    async def open_session(self, result: LoginResult, conn: IscsiConnection) -> Session:
        target = self.directory.get(result.target_name or "")
        if target is None:  # removed between login steps
            raise trio.BrokenResourceError(f"target {result.target_name} vanished")
        await target.admit(result.initiator_name, result.isid, conn)
        nexus = Nexus.iscsi(
            result.initiator_name, result.isid, target.name, target.portal_group_tag
        )
        nursery = conn.nursery
        return Session(
            nexus,
            target.lun_map_for(result.initiator_name),
            spawn=lambda fn: nursery.start_soon(fn),
            target_reset=target.reset,
        )

    def close_session(self, result: LoginResult, conn: IscsiConnection) -> None:
        target = self.directory.get(result.target_name or "")
        if target is not None:
            target.leave(result.initiator_name, result.isid, conn)


def _sockname(listener: trio.SocketListener) -> tuple[str, int]:
    addr = listener.socket.getsockname()
    return (str(addr[0]), int(addr[1]))
