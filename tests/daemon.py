"""Run the real ``pyscst serve`` as a subprocess for end-to-end tests.

Tests that talk to the daemon with real initiators (libiscsi, qemu-img) need
it exactly as users run it: its own process, a config file, a listening
socket. :func:`running_daemon` writes a throw-away config (state in a temp
dir, a free ephemeral port on 127.0.0.1), starts the daemon, waits until the
port accepts connections and, on exit, stops it with SIGTERM and insists on a
clean exit code 0. Its captured stderr is quoted in every failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import tomli_w
import trio

from pyscst.admin.config.files import load_config, parse_config
from pyscst.supervision.daemon import Daemon, start, stop

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TARGET = "iqn.2026-11.org.pyscst:test"
DEFAULT_DEVICES: Mapping[str, Mapping[str, Any]] = {
    "disk0": {"handler": "vdisk_fileio", "size": "64MiB"}
}
DEFAULT_LUNS: Sequence[Mapping[str, Any]] = ({"lun": 0, "device": "disk0"},)
STDERR_TAIL = 4000  # characters of daemon stderr quoted in failures


class DaemonError(AssertionError):
    """The daemon failed to start, crashed or did not stop cleanly."""


@attrs.frozen
class RunningDaemon:
    """Where a test daemon listens and where its files are."""

    host: str
    port: int
    target: str
    state_dir: Path
    config_path: Path
    stderr_path: Path
    pid: int

    def url(self, lun: int = 0, target: str | None = None) -> str:
        """The libiscsi / qemu URL of a LUN on this daemon."""
        return f"iscsi://{self.host}:{self.port}/{target or self.target}/{lun}"

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port nothing listens on right now (never 3260)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != 3260:
            return port


def free_ports(host: str = "127.0.0.1", count: int = 2) -> list[int]:
    """``count`` distinct free ports (a target with several portals)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


def alua_portals(host: str, ports: Sequence[int], states: Sequence[str]) -> dict[str, Any]:
    """Target keys for one portal per ALUA port group: group ``a`` (id 1) on the
    first port in the first state, ``b`` (id 2) on the next, ..."""
    return {
        "portals": [f"{host}:{p}" for p in ports],
        "port_groups": {
            chr(ord("a") + i): {"id": i + 1, "portals": [f"{host}:{p}"], "state": state}
            for i, (p, state) in enumerate(zip(ports, states, strict=True))
        },
    }


def write_config(
    workdir: Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    target: str = DEFAULT_TARGET,
    devices: Mapping[str, Mapping[str, Any]] = DEFAULT_DEVICES,
    luns: Sequence[Mapping[str, Any]] = DEFAULT_LUNS,
    groups: Mapping[str, Mapping[str, Any]] | None = None,
    iscsi: Mapping[str, Any] | None = None,
    log_level: str = "info",
    extra_targets: Mapping[str, Mapping[str, Any]] | None = None,
    auth: Mapping[str, Any] | None = None,
    discovery_auth: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    target_extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``workdir/pyscst.toml`` with state under ``workdir/state``; validate it.
    ``target_extra`` adds keys to (or replaces them in) the test target's table."""
    state_dir = workdir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    target_table: dict[str, Any] = {
        "portals": [f"{host}:{port}"],
        "luns": [dict(m) for m in luns],
    }
    if groups:
        target_table["groups"] = {name: dict(g) for name, g in groups.items()}
    if auth is not None:
        target_table["auth"] = dict(auth)
    target_table.update(target_extra or {})
    doc: dict[str, Any] = {
        "state_dir": str(state_dir),
        "log_level": log_level,
        "iscsi": dict(iscsi or {}),
        "devices": {name: dict(d) for name, d in devices.items()},
        "targets": {
            target: target_table,
            # extra targets share the test portal unless they name their own
            **{k: {"portals": [f"{host}:{port}"], **v} for k, v in (extra_targets or {}).items()},
        },
    }
    if discovery_auth is not None:
        doc["discovery_auth"] = dict(discovery_auth)
    doc.update(extra or {})  # more top-level tables, e.g. {"metrics": {...}}
    path = workdir / "pyscst.toml"
    path.write_text(tomli_w.dumps(doc))
    load_config(path)  # a bad test config should fail here, not as a daemon crash
    return path


def daemon_command(config_path: Path) -> list[str]:
    """The command line that starts the daemon (the venv's interpreter, module form)."""
    return [sys.executable, "-m", "pyscst", "serve", "--config", str(config_path)]


def _tail(text: str) -> str:
    text = text.strip()
    if len(text) > STDERR_TAIL:
        text = "...\n" + text[-STDERR_TAIL:]
    return text or "(no output)"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_daemon(
    config_path: Path,
    *,
    host: str,
    port: int,
    target: str,
    startup_timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[subprocess.Popen[bytes], RunningDaemon]:
    """Start ``pyscst serve`` and wait for its portal and control socket (opened
    last, just after the portals); DaemonError if they never come up.
    ``preexec_fn`` runs in the child before exec (e.g. to lower an rlimit)."""
    config = load_config(config_path)
    stderr_path = config_path.parent / "daemon.stderr"
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")])
    )
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            daemon_command(config_path),
            cwd=REPO_ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
    info = RunningDaemon(
        host=host,
        port=port,
        target=target,
        state_dir=config.state_dir,
        config_path=config_path,
        stderr_path=stderr_path,
        pid=proc.pid,
    )
    deadline = time.monotonic() + startup_timeout
    while not (_port_open(host, port) and config.control_socket.exists()):
        code = proc.poll()
        if code is not None:
            raise DaemonError(
                f"pyscst serve exited with code {code} before listening on {host}:{port}; "
                f"stderr ({stderr_path}):\n{_tail(info.stderr_text())}"
            )
        if time.monotonic() > deadline:
            _kill(proc)
            raise DaemonError(
                f"pyscst serve did not open {host}:{port} and its control socket "
                f"within {startup_timeout:.0f}s; "
                f"stderr ({stderr_path}):\n{_tail(info.stderr_text())}"
            )
        time.sleep(0.05)
    return proc, info


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def stop_daemon(
    proc: subprocess.Popen[bytes], info: RunningDaemon, *, stop_timeout: float = 15.0
) -> None:
    """SIGTERM; DaemonError unless it exits 0 within ``stop_timeout`` (then SIGKILL)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise DaemonError(
                f"pyscst serve did not stop within {stop_timeout:.0f}s of SIGTERM (killed); "
                f"stderr ({info.stderr_path}):\n{_tail(info.stderr_text())}"
            ) from None
    if proc.returncode != 0:
        raise DaemonError(
            f"pyscst serve exited with code {proc.returncode} (expected a clean 0); "
            f"stderr ({info.stderr_path}):\n{_tail(info.stderr_text())}"
        )


@contextlib.contextmanager
def running_daemon(
    workdir: Path,
    *,
    target: str = DEFAULT_TARGET,
    devices: Mapping[str, Mapping[str, Any]] = DEFAULT_DEVICES,
    luns: Sequence[Mapping[str, Any]] = DEFAULT_LUNS,
    groups: Mapping[str, Mapping[str, Any]] | None = None,
    iscsi: Mapping[str, Any] | None = None,
    log_level: str = "info",
    extra_targets: Mapping[str, Mapping[str, Any]] | None = None,
    auth: Mapping[str, Any] | None = None,
    discovery_auth: Mapping[str, Any] | None = None,
    startup_timeout: float = 30.0,
    stop_timeout: float = 15.0,
    extra: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[RunningDaemon]:
    """Run a daemon for the duration of the block (``workdir``: e.g. pytest's tmp_path).

    If the block raises, the daemon is still stopped (killed if need be) and the
    block's exception wins; otherwise a non-zero exit is a DaemonError.
    """
    host = "127.0.0.1"
    port = free_port(host)
    config_path = write_config(
        workdir, port=port, host=host, target=target, devices=devices, luns=luns,
        groups=groups, iscsi=iscsi, log_level=log_level, extra_targets=extra_targets,
        auth=auth, discovery_auth=discovery_auth, extra=extra,
    )
    proc, info = start_daemon(
        config_path, host=host, port=port, target=target, startup_timeout=startup_timeout,
        env=env,
        preexec_fn=preexec_fn,
    )
    try:
        yield info
    except BaseException as exc:
        try:
            stop_daemon(proc, info, stop_timeout=stop_timeout)
        except DaemonError as stop_error:
            exc.add_note(str(stop_error))
        finally:
            if proc.poll() is None:
                _kill(proc)
        raise
    stop_daemon(proc, info, stop_timeout=stop_timeout)


@contextlib.asynccontextmanager
async def running_daemon_async(workdir: Path, **kwargs: Any) -> AsyncIterator[RunningDaemon]:
    """:func:`running_daemon` for Trio tests: start and stop run in a worker thread."""
    manager = running_daemon(workdir, **kwargs)
    info = await trio.to_thread.run_sync(manager.__enter__)
    try:
        yield info
    except BaseException as exc:
        with trio.CancelScope(shield=True):  # stop the daemon even when cancelled
            suppress = await trio.to_thread.run_sync(
                manager.__exit__, type(exc), exc, exc.__traceback__
            )
        if not suppress:
            raise
    else:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(manager.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def in_process_daemon(tmp_path: Path, body: str) -> AsyncIterator[tuple[Daemon, int]]:
    """The daemon in this test's own Trio run (so a test can reach its actors),
    on a free port: ``body`` is the TOML after ``state_dir``/``control_socket``,
    with ``@PORT@`` standing for the port. Yields (Daemon, port)."""
    port = free_port()
    # a short directory: Unix socket paths are limited to 108 bytes
    sockdir = tempfile.mkdtemp(prefix="pyscst-", dir="/tmp")
    text = (
        f'state_dir = "{tmp_path}"\ncontrol_socket = "{sockdir}/c.sock"\n'
        + body.replace("@PORT@", str(port))
    )
    config = parse_config(text, tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            daemon = await start(config, nursery)
            try:
                yield daemon, port
            finally:
                await stop(daemon)
                nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
