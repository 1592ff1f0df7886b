"""Run a private etcd (Debian's etcd-server) for cluster-mode tests.

Each instance listens on free loopback ports with its data in a temp
directory, and is always killed on exit (SIGCONT first, in case a test
paused it with SIGSTOP to play a partition).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs

from tests.daemon import free_port


def etcd_unavailable() -> str | None:
    if shutil.which("etcd") is None:
        return "etcd not installed (apt-get install etcd-server)"
    return None


@attrs.define
class EtcdInstance:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = attrs.Factory(list)

    def pause(self) -> None:
        """SIGSTOP: etcd stops answering, its sockets stay open (a partition)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: etcd is gone (connections refused) until :meth:`start_again`."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def start_again(self, timeout: float = 20.0) -> None:
        """The same etcd (ports, data directory) once more."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        _wait_healthy(self, timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=0.5) as answer:
            return b"true" in answer.read()
    except OSError:
        return False


def _wait_healthy(instance: EtcdInstance, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(instance.url):
        if instance.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"etcd did not start:\n{instance.log_text()}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_etcd(workdir: Path, timeout: float = 20.0) -> Iterator[EtcdInstance]:
    workdir.mkdir(parents=True, exist_ok=True)
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    peer_url = f"http://127.0.0.1:{peer}"
    log_path = workdir / "etcd.log"
    argv = [
        "etcd", "--name", "test", "--data-dir", str(workdir / "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"test={peer_url}", "--log-level", "warn",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    instance = EtcdInstance(url, proc, log_path, argv)
    try:
        _wait_healthy(instance, timeout)
        yield instance
    finally:
        proc = instance.proc
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=10)
