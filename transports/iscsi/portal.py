"""An iSCSI portal: one listening address, and the target side of every login on it.

The portal listens, hands each accepted socket to a new connection actor (a
temporary child of its supervisor: a crashed connection is logged and gone,
the initiator reconnects) once its pre-login admission gate lets it in (a
bound per source address and in total, see admission.py), and answers the
connection's questions about targets: the login policy built from the config,
SendTargets, and turning a successful login into a middle-level
:class:`pyscst.actors.session.Session`.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

import trio

from pyscst.actors.faults import FaultEngine
from pyscst.actors.session import Session
from pyscst.actors.supervisor import Restart, Supervisor
from pyscst.actors.target import TargetDirectory
from pyscst.devices.io_engine import SubmissionBatch
from pyscst.scsi.command import Nexus
from pyscst.transports.iscsi.admission import PreloginGate, Verdict
from pyscst.transports.iscsi.auth import AuthRegistry
from pyscst.transports.iscsi.connection import ConnectionSettings, IscsiConnection
from pyscst.transports.iscsi.login import LoginResult, TargetPolicy

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
        io_batch: SubmissionBatch | None = None,
    ) -> None:
        self.name = f"portal {host}:{port}"
        #: the daemon's io_uring submission batch, handed to each connection
        self._io_batch = io_batch
        self.auth = auth if auth is not None else AuthRegistry()
        self._faults = faults
        self.host = host
        self.port = port
        self.directory = directory
        self.limits = limits
        self._settings = settings
        self.connections = Supervisor(f"connections@{host}:{port}")
        self.bound: list[tuple[str, int]] = []
        #: connections accepted and not yet logged in
        self.gate = PreloginGate()

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
        for listener in listeners:
            _defer_accept(listener, self._settings.login_timeout)
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
                except OSError as exc:  # e.g. EMFILE: make room if we can, back off
                    log.warning("%s: accept failed: %s", self.name, exc)
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        self._evict_one()
                    await trio.sleep(0.1)
                    continue
                conn = self._admit(stream)
                if conn is not None:
                    self.connections.start_soon(conn, Restart.TEMPORARY)
                else:
                    await stream.aclose()

    def _admit(self, stream: trio.SocketStream) -> IscsiConnection | None:
        """A connection actor for ``stream`` if the gate lets it in (aborting
        the one it evicts to make room); None: close it."""
        settings = self._settings
        try:
            address = str(stream.socket.getpeername()[0])
        except OSError:  # already reset by the peer
            return None
        if self.gate.address_full(address, settings.max_prelogin_per_address):
            # (the cheap refusal first: a flood from one address costs no actor)
            _log_counted(
                f"{self.name}: refused a connection from {address}: "
                f"{settings.max_prelogin_per_address} from that address not logged in yet",
                self.gate.refused,
            )
            return None
        conn = IscsiConnection(
            stream, self, faults=self._faults, gate=self.gate, io_batch=self._io_batch
        )
        answer = self.gate.admit(
            conn, address, settings.max_prelogin_connections, settings.max_prelogin_per_address
        )
        if answer.verdict is not Verdict.ADMIT:
            _log_counted(
                f"{self.name}: refused a connection from {address}: "
                + (
                    f"{settings.max_prelogin_per_address} from that address not logged in yet"
                    if answer.verdict is Verdict.REFUSE_ADDRESS
                    else f"{settings.max_prelogin_connections} connections logging in"
                ),
                self.gate.refused,
            )
            return None
        if isinstance(answer.evict, IscsiConnection):
            _log_counted(
                f"{self.name}: {settings.max_prelogin_connections} connections not logged in: "
                f"evicting the oldest idle one ({answer.evict.peer})",
                self.gate.evicted,
            )
            answer.evict.abort()
        return conn

    def _evict_one(self) -> None:
        """Out of descriptors: drop the oldest pre-login connection with no progress."""
        victim = self.gate.oldest_idle()
        if isinstance(victim, IscsiConnection):
            self.gate.leave(victim)
            victim.abort()

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

        here = (self.host, self.port)

        def tag(target_name: str) -> int:  # login checked it exists; 1 if it left since
            target = directory.get(target_name)
            return target.tag_for(here) if target is not None else 1

        return TargetPolicy(
            portal_group_tag=tag,
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
        # the target port: with ALUA, the port group of the portal it came in on
        here = (self.host, self.port)
        group = target.port_group_at(here)
        await target.admit(result.initiator_name, result.isid, conn, target.tag_for(here))
        nexus = Nexus.iscsi(
            result.initiator_name, result.isid, target.name, target.tag_for(here),
            relative_port=group.relative_port if group is not None else 1,
            port_group_id=group.group_id if group is not None else 0,
        )  # fmt: skip
        nursery = conn.nursery
        return Session(
            nexus,
            target.lun_map_for(result.initiator_name),
            spawn=lambda fn: nursery.start_soon(fn),
            target_reset=target.reset,
            port_group=group,
        )

    def close_session(self, result: LoginResult, conn: IscsiConnection) -> None:
        target = self.directory.get(result.target_name or "")
        if target is not None:
            target.leave(result.initiator_name, result.isid, conn)


def _defer_accept(listener: trio.SocketListener, seconds: float) -> None:
    """An initiator speaks first (its Login Request): with TCP_DEFER_ACCEPT the
    kernel hands us a connection only once its first bytes arrive (or after
    about ``seconds``), so sockets that send nothing queue in the kernel's SYN
    backlog instead of taking a descriptor and an actor, and a real login is
    not stuck behind them in the accept queue. Linux only; elsewhere a no-op."""
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if option is None:
        return
    try:
        listener.socket.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds)))
    except OSError as exc:
        log.debug("TCP_DEFER_ACCEPT not set: %s", exc)


def _log_counted(message: str, count: int) -> None:
    """Log the 1st, 10th, 100th, ... occurrence (a flood must not flood the log)."""
    if count >= 1 and str(count).rstrip("0") == "1":
        log.warning("%s (%d so far)", message, count)


def _sockname(listener: trio.SocketListener) -> tuple[str, int]:
    addr = listener.socket.getsockname()
    return (str(addr[0]), int(addr[1]))
