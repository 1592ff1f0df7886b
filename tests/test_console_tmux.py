"""``pyscst console`` as a user meets it: a real process in a real terminal (tmux).

The console runs in a tmux pane on its own tmux server; keys go in with
``send-keys`` and the screen comes back with ``capture-pane``. The control
socket is served by the in-memory fake (the real-daemon session lives in
test_console_daemon.py), so this test is about the terminal: the prompt,
the completion menu, colours off the screen, a clean exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console_fake import FakeBackend, fake_control_socket
from tests.daemon import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Pane:
    """One tmux server with one pane running a command."""

    def __init__(self, server: str) -> None:
        self.server = server

    def tmux(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.server, *args], capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "console", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "console")

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return subprocess.run(
            ["tmux", "-L", self.server, "has-session", "-t", "console"],
            capture_output=True, check=False,
        ).returncode == 0


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[Pane, FakeBackend]]:
    fake = FakeBackend.with_defaults(tmp_path / "saved.toml")
    sock = tmp_path / "c.sock"
    pane = Pane(f"pyscst-console-test-{os.getpid()}")
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT), "TERM": "xterm"}
    command = f"{sys.executable} -m admin.cli console --socket {sock}"
    with fake_control_socket(fake, sock):
        subprocess.run(
            ["tmux", "-L", pane.server, "-f", "/dev/null", "new-session", "-d", "-s", "console",
             "-x", "150", "-y", "40", "-c", str(REPO_ROOT), command],
            env=env, check=True,
        )
        try:
            pane.wait_for("connected to pyscst fake")
            pane.wait_for("pyscst:/>")  # keys typed before the prompt runs echo twice
            yield pane, fake
        finally:
            pane.tmux("kill-server", check=False)


def test_completion_and_editing_in_a_terminal(
    console: tuple[Pane, FakeBackend], tmp_path: Path
) -> None:
    pane, fake = console
    pane.keys("cd /dev", "Tab")
    pane.wait_for("pyscst:/> cd /devices/")
    pane.keys("Enter")
    pane.wait_for("pyscst:/devices>")
    pane.keys("create disk1 ", "Tab")
    menu = pane.wait_for("required: device handler")
    assert "write_cache=" in menu
    pane.keys("Escape")
    pane.keys("C-u", "create disk1 handler=vdisk_n", "Tab")
    pane.wait_for("handler=vdisk_nullio")
    pane.keys(" size=1G", "Enter")
    pane.wait_for("created device /devices/disk1")
    pane.keys("ls", "Enter")
    screen = pane.wait_for("disk1   vdisk_nullio  1GiB")
    assert "disk0   vdisk_fileio  64MiB" in screen
    pane.keys("frob", "Enter")
    pane.wait_for('error: unknown command "frob"')
    pane.keys("exit", "Enter")
    deadline = time.monotonic() + 10
    while pane.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pane.alive(), "the console did not exit"
    assert fake.devices["disk1"]["handler"] == "vdisk_nullio"
    history = (tmp_path / ".pyscst_history").read_text()  # HOME is tmp_path here
    assert "+create disk1 handler=vdisk_nullio size=1G" in history
