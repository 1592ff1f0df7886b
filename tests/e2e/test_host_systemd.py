"""systemd integration: the sd_notify protocol against a real daemon, and the unit file.

The daemon runs as its own process with ``NOTIFY_SOCKET`` pointing at a
datagram socket this test binds, as systemd would: READY=1 must come only
when the portal accepts connections and the control socket exists, STATUS=
follows the session count, WATCHDOG=1 pings come only with WATCHDOG_USEC,
and SIGTERM announces STOPPING=1 before a clean exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from pyscst.admin.config.files import load_config
from pyscst.supervision.sd_notify import Notifier, notify_address, watchdog_interval
from pyscst.transports.iscsi.initiator import Initiator
from tests.daemon import (
    DEFAULT_TARGET,
    REPO_ROOT,
    _port_open,
    daemon_command,
    free_port,
    write_config,
)

UNIT = REPO_ROOT / "etc" / "pyscst.service"
RECV_TIMEOUT = 30.0


# -- the protocol, without a daemon ------------------------------------------------


def test_notify_address_forms() -> None:
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@pyscst/notify"}) == b"\0pyscst/notify"
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": ""}) is None
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


def test_watchdog_interval_rules() -> None:
    pid = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": pid}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "-5"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_notifier_without_socket_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.send(READY=1) is False


def test_notifier_survives_a_missing_listener(tmp_path: Path) -> None:
    """systemd gone (nobody bound the path): the send fails quietly, no raise."""
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert notifier.enabled
    assert notifier.send(READY=1) is False
    assert notifier.send(WATCHDOG=1) is False
    notifier.close()


def test_notifier_abstract_namespace() -> None:
    name = f"pyscst-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send(READY=1, STATUS="up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
        notifier.close()


# -- against a real daemon ----------------------------------------------------------


@pytest.fixture
def notify_dir() -> Iterator[Path]:
    # short: Unix socket paths are limited to 108 bytes
    path = Path(tempfile.mkdtemp(prefix="pyscst-n-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Listener:
    """The test's stand-in for systemd: collects notification lines."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.lines: list[str] = []

    async def next_with(self, key: str) -> str:
        """Lines until one datagram has ``key``; returns that datagram's text."""
        with trio.fail_after(RECV_TIMEOUT):
            while True:
                data = await self.sock.recv(4096)
                text = data.decode()
                self.lines.extend(text.split("\n"))
                if any(line.startswith(key + "=") for line in text.split("\n")):
                    return text


async def _start(
    workdir: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    config_path = write_config(workdir, port=port)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    environ = {**inherited, **env}
    environ["PYTHONPATH"] = str(REPO_ROOT)
    log = (workdir / "daemon.stderr").open("wb")
    proc = subprocess.Popen(
        daemon_command(config_path), cwd=REPO_ROOT, env=environ,
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    return proc, port, load_config(config_path).control_socket


async def _finish(proc: subprocess.Popen[bytes], signalled: bool) -> int:
    """Wait for the exit (one SIGTERM, as systemd sends, unless already sent)."""
    if not signalled and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return await trio.to_thread.run_sync(lambda: proc.wait(timeout=30))


async def test_ready_status_watchdog_stopping(tmp_path: Path, notify_dir: Path) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(str(notify_dir / "notify"))
    listener = Listener(sock)
    env = {"NOTIFY_SOCKET": str(notify_dir / "notify"), "WATCHDOG_USEC": "200000"}
    proc, port, control = await _start(tmp_path, env)
    signalled = False
    try:
        ready = await listener.next_with("READY")
        # READY means usable: the portal accepts and the control socket is there
        assert await trio.to_thread.run_sync(_port_open, "127.0.0.1", port)
        assert control.exists()
        assert "READY=1" in ready.split("\n")
        assert "STATUS=0 sessions, 1 devices, 1 targets" in ready.split("\n")
        # watchdog pings at half of WATCHDOG_USEC, from the event loop
        await listener.next_with("WATCHDOG")
        await listener.next_with("WATCHDOG")
        async with await Initiator.connect(
            "127.0.0.1", port, target_name=DEFAULT_TARGET
        ) as ini:
            assert (await ini.execute(0, bytes(6))).status in (0, 2)
            status = await listener.next_with("STATUS")
            assert status == "STATUS=1 session, 1 devices, 1 targets"
        status = await listener.next_with("STATUS")
        assert status == "STATUS=0 sessions, 1 devices, 1 targets"
        proc.send_signal(signal.SIGTERM)
        signalled = True
        stopping = await listener.next_with("STOPPING")
        assert "STOPPING=1" in stopping.split("\n")
    finally:
        code = await _finish(proc, signalled)
        sock.close()
    assert code == 0, (tmp_path / "daemon.stderr").read_text()
    assert listener.lines.index("READY=1") < listener.lines.index("STOPPING=1")


async def test_no_watchdog_pings_without_watchdog_usec(
    tmp_path: Path, notify_dir: Path
) -> None:
    name = f"pyscst-notify-{os.getpid()}"
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(b"\0" + name.encode())  # abstract namespace, as "@name"
    listener = Listener(sock)
    env = {"NOTIFY_SOCKET": "@" + name}
    proc, _port, _control = await _start(tmp_path, env)
    signalled = False
    try:
        await listener.next_with("READY")
        proc.send_signal(signal.SIGTERM)
        signalled = True
        await listener.next_with("STOPPING")
    finally:
        code = await _finish(proc, signalled)
        sock.close()
    assert code == 0, (tmp_path / "daemon.stderr").read_text()
    assert not any(line.startswith("WATCHDOG") for line in listener.lines)


# -- the unit file -------------------------------------------------------------------


def _unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        keys.setdefault(key, []).append(value)
    return keys


def test_unit_declares_notify_reload_and_hardening() -> None:
    keys = _unit_keys()
    assert keys["Type"] == ["notify"]
    assert keys["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "WatchdogSec" in keys
    assert keys["ProtectSystem"] == ["strict"]
    assert keys["NoNewPrivileges"] == ["yes"]
    assert keys["CapabilityBoundingSet"] == [""]
    assert keys["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert "@system-service" in keys["SystemCallFilter"]
    assert "/var/lib/pyscst" in keys["ReadWritePaths"][0].split()


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    pyscst = Path(sys.executable).with_name("pyscst")
    if not pyscst.exists():
        pytest.skip(f"no pyscst entry point next to {sys.executable} (pip install -e .)")
    unit = tmp_path / "pyscst.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/pyscst", str(pyscst)))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr
