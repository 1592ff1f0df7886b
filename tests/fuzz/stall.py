"""Stalled TCP connections against a real daemon (issue 11, D4).

An attacker who reaches the port opens thousands of connections and sends
nothing, or half a header, reopening each one the target closes. Before the
pre-login gate the daemon's descriptors (soft limit 1024) ran out and no real
initiator could log in for as long as that went on. :class:`Staller` plays the
attacker from a thread (plain sockets bound to a source address before
connect); :func:`timed_login` is the legitimate initiator, from 127.0.0.1.
Used by tests/e2e/test_prelogin_limits.py (relaxed) and ``make fuzz`` (the 2 s
figure).
"""

from __future__ import annotations

import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

from pyscst.transports.iscsi.initiator import Initiator

#: the first 20 bytes of a Login Request header: a PDU begun and never finished
HALF_HEADER = struct.pack(">BBBBI", 0x43, 0x87, 0, 0, 0) + bytes(12)


def fd_soft_limit(soft: int = 1024) -> Callable[[], None]:
    """A ``preexec_fn`` giving the daemon the usual soft limit (hard unchanged)."""

    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def raise_own_fd_limit(need: int) -> int:
    """Give this process ``need`` descriptors if the hard limit allows; the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


class Staller:
    """``count`` stalled connections from ``sources`` (round robin), kept open:
    every other one sends half a Login header, the rest nothing; whatever
    the target closes is reopened until :meth:`stop`."""

    def __init__(self, host: str, port: int, count: int, sources: Sequence[str]) -> None:
        self.host = host
        self.port = port
        self.count = count
        self.sources = list(sources)
        self.opened = 0
        self.reopened = 0
        self.failed = 0
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self, i: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self.sources[i % len(self.sources)], 0))
            sock.settimeout(2)
            sock.connect((self.host, self.port))
            if i % 2:
                sock.sendall(HALF_HEADER)
            sock.setblocking(False)
        except OSError:
            sock.close()
            self.failed += 1
            return
        self.opened += 1
        self._sel.register(sock, selectors.EVENT_READ, i)

    def start(self) -> None:
        """Open them all (returns when done), then keep them open from a thread."""
        for i in range(self.count):
            self._open(i)
        self._thread = threading.Thread(target=self._keep_open, daemon=True)
        self._thread.start()

    def _keep_open(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    continue
                self._sel.unregister(sock)
                sock.close()
                if not self._stop.is_set():
                    self.reopened += 1
                    self._open(key.data)

    @property
    def open_now(self) -> int:
        return len(self._sel.get_map())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()


async def timed_login(host: str, port: int, target: str) -> float:
    """Seconds from connect to a logged-in session answering TEST UNIT READY."""
    start = time.monotonic()
    async with await Initiator.connect(host, port, target_name=target) as ini:
        await ini.execute(0, bytes(6))
        elapsed = time.monotonic() - start
        await ini.logout()
    return elapsed
