"""systemd's readiness protocol (sd_notify(3)), spoken without libsystemd.

Why our own ~40 lines: the protocol is one ``AF_UNIX`` datagram of
``KEY=VALUE`` lines to the socket named by ``$NOTIFY_SOCKET`` (a leading ``@``
means Linux's abstract namespace). The Python wrappers on PyPI either bind
libsystemd through C (a build dependency for a datagram) or are small,
unmaintained copies of these same lines; none adds anything we would use.

A notifier never raises: systemd going away (or a socket we may not write to)
must not take the daemon down, so a failed send is logged once and dropped.
Without ``$NOTIFY_SOCKET`` (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify_address(env: Mapping[str, str]) -> str | bytes | None:
    """The socket address ``$NOTIFY_SOCKET`` names (None if unset or unusable)."""
    path = env.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return b"\0" + path[1:].encode()  # abstract namespace
    if path.startswith("/"):
        return path
    return None  # unset, empty, or a vsock address we do not support


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds within which systemd expects WATCHDOG=1 (None: no watchdog for us).

    ``WATCHDOG_PID``, when set, must be this process (sd_watchdog_enabled(3)).
    """
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends state lines to systemd; a no-op when there is no notify socket."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.address = notify_address(os.environ if env is None else env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram, e.g. ``send(READY=1, STATUS="...")``; True if sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
