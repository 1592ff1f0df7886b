"""What the daemon does for its host: systemd notifications and the metrics endpoint.

Kept out of ``supervision/daemon.py`` so the actor tree knows nothing of
systemd or Prometheus: ``serve`` starts :func:`run_host_services` once the
tree is up, and this module does the rest.

- ``READY=1`` goes out only after the portals listen and the control socket
  is open (``daemon.start`` has returned), and after the metrics endpoint, if
  configured, listens: systemd's "started" then means "usable".
- ``STATUS=`` carries the session count; a task compares it once a second and
  sends only when it changed (only when systemd listens at all).
- ``WATCHDOG=1`` is sent from a Trio task every half ``WATCHDOG_USEC``: if the
  event loop stalls, the pings stop and systemd restarts the service.
- ``STOPPING=1`` goes out the moment a stop is requested (SIGTERM, SIGINT).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client.registry import CollectorRegistry

from pyscst.supervision.metrics import DaemonCollector
from pyscst.supervision.metrics_http import MetricsServer
from pyscst.supervision.sd_notify import Notifier, watchdog_interval

if TYPE_CHECKING:
    from pyscst.supervision.daemon import Daemon

log = logging.getLogger(__name__)

STATUS_POLL = 1.0  # seconds between session-count checks for STATUS=


def session_count(daemon: Daemon) -> int:
    return sum(len(target.sessions) for target in daemon.directory)


def status_line(daemon: Daemon, sessions: int) -> str:
    return (
        f"{sessions} session{'' if sessions == 1 else 's'}, {len(daemon.devices)} devices, "
        f"{len(list(daemon.directory))} targets"
    )


async def start_metrics(daemon: Daemon, nursery: trio.Nursery) -> MetricsServer | None:
    """Listen on ``[metrics] listen`` (None when off); StartupError if it cannot."""
    from pyscst.supervision.daemon import StartupError  # daemon imports this module

    listen = daemon.config.metrics.listen
    if listen is None:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    server = MetricsServer(registry)
    try:
        listeners = await trio.open_tcp_listeners(listen.port, host=listen.host)
    except OSError as exc:
        raise StartupError(
            f"cannot listen for metrics on {listen}: {exc.strerror or exc}"
        ) from None
    await nursery.start(server.serve, listeners)
    log.info("metrics on http://%s/metrics", listen)
    return server


async def run_host_services(
    daemon: Daemon,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    *,
    env: Mapping[str, str] | None = None,
) -> None:
    """Metrics endpoint and systemd notifications for a started daemon; returns
    (cancelled) with the daemon's nursery."""
    environ = os.environ if env is None else env
    notifier = Notifier(environ)
    try:
        async with trio.open_nursery() as nursery:
            await start_metrics(daemon, nursery)
            sessions = session_count(daemon)
            notifier.send(READY=1, STATUS=status_line(daemon, sessions))
            if notifier.enabled:
                nursery.start_soon(_report_status, daemon, notifier, sessions)
                interval = watchdog_interval(environ)
                if interval is not None:
                    nursery.start_soon(_watchdog, notifier, interval / 2)
                nursery.start_soon(_announce_stop, daemon, notifier)
            task_status.started()
    finally:
        notifier.close()


async def _report_status(daemon: Daemon, notifier: Notifier, sent: int) -> None:
    while True:
        await trio.sleep(STATUS_POLL)
        now = session_count(daemon)
        if now != sent:
            notifier.send(STATUS=status_line(daemon, now))
            sent = now


async def _watchdog(notifier: Notifier, period: float) -> None:
    while True:
        notifier.send(WATCHDOG=1)
        await trio.sleep(period)


async def _announce_stop(daemon: Daemon, notifier: Notifier) -> None:
    await daemon.stop_requested.wait()
    notifier.send(STOPPING=1, STATUS="stopping")
