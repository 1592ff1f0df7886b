"""``pyscst console`` as a user meets it: a real process in a real terminal (tmux).

The console runs in a tmux pane on its own tmux server; keys go in with
``send-keys`` and the screen comes back with ``capture-pane``. The first
test serves the socket from the in-memory fake and is about the terminal:
the prompt, the completion menu, a clean exit. The second is a whole
edit-and-save session against the real daemon, checked in the saved file
and from an initiator.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from pyscst.admin.config.files import load_config
from pyscst.transports.iscsi.initiator import Initiator
from tests.console_fake import FakeBackend, fake_control_socket
from tests.daemon import REPO_ROOT, running_daemon

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

    def screen(self, escapes: bool = False) -> str:
        """The pane's text; with ``escapes``, its colour and style sequences too."""
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "console")

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")
            time.sleep(0.05)

    def wait_prompt(self, timeout: float = 10.0) -> str:
        """Wait until the console is ready for the next line (its prompt is last)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            lines = [line for line in screen.splitlines() if line.strip()]
            if lines and lines[-1].startswith("pyscst:") and lines[-1].rstrip().endswith(">"):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"no prompt to type at; the screen:\n{screen}")
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
    command = f"{sys.executable} -m pyscst console --socket {sock}"
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
    pane.wait_prompt()
    pane.keys("ls", "Enter")
    screen = pane.wait_for("disk1   vdisk_nullio  1GiB")
    assert "disk0   vdisk_fileio  64MiB" in screen
    pane.wait_prompt()
    pane.keys("frob", "Enter")
    pane.wait_for('error: unknown command "frob"')
    pane.wait_prompt()
    coloured = pane.screen(escapes=True)
    assert "\x1b[1;4mhandler" in coloured  # table headers bold and underlined
    assert "\x1b[36mdisk1\x1b[39m" in coloured  # names cyan
    assert "\x1b[33mtrue\x1b[39m" in coloured  # true values yellow
    assert '\x1b[38;5;203merror: unknown command "frob"' in coloured  # errors red
    pane.keys("exit", "Enter")
    deadline = time.monotonic() + 10
    while pane.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pane.alive(), "the console did not exit"
    assert fake.devices["disk1"]["handler"] == "vdisk_nullio"
    history = (tmp_path / ".pyscst_history").read_text()  # HOME is tmp_path here
    assert "+create disk1 handler=vdisk_nullio size=1G" in history


REPORT_LUNS = bytes((0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0))


def _reported_luns(host: str, port: int, target: str) -> list[int]:
    """REPORT LUNS as an initiator logging in now sees it (after its unit attentions)."""

    async def ask() -> list[int]:
        connecting = Initiator.connect(
            host, port, initiator_name="iqn.2026-11.org.example:tmux", target_name=target
        )
        async with await connecting as ini:
            for _ in range(3):
                r = await ini.execute(0, REPORT_LUNS, read_length=256)
                if r.status == 0:
                    break
            length = struct.unpack_from(">I", r.data)[0]
            return [struct.unpack_from(">H", r.data, 8 + i)[0] & 0x3FFF
                    for i in range(0, length, 8)]

    return trio.run(ask)


def test_edit_and_save_session_in_a_terminal_against_the_daemon(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        config = d.config_path
        config.write_text("# site notes: keep me\n" + config.read_text())
        pane = Pane(f"pyscst-console-daemon-{os.getpid()}")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TERM": "xterm"}
        command = f"{sys.executable} -m pyscst console --config {config}"
        subprocess.run(
            ["tmux", "-L", pane.server, "-f", "/dev/null", "new-session", "-d", "-s", "console",
             "-x", "160", "-y", "45", "-c", str(REPO_ROOT), command],
            env=env, check=True,
        )
        try:
            pane.wait_for("pyscst:/>")
            pane.keys("cd /dev", "Tab")
            pane.wait_for("pyscst:/> cd /devices/")
            pane.keys("Enter")
            pane.wait_for("pyscst:/devices>")  # keys typed before the prompt echo twice
            pane.keys("create disk1 handler=vdisk_n", "Tab")
            pane.wait_for("handler=vdisk_nullio")
            pane.keys(" size=16M", "Enter")
            pane.wait_for("created device /devices/disk1")
            pane.wait_prompt()
            pane.keys("cd /targets/", "Tab")  # one target: completed whole
            pane.wait_for(f"cd /targets/{d.target}/")
            pane.keys("luns", "Enter")
            pane.wait_for(f"pyscst:/targets/{d.target}/luns>")
            pane.keys("create device=disk", "Tab")  # disk0 and disk1: a menu
            menu = pane.wait_for("disk0")  # not on the screen before the menu
            assert menu.count("disk1") >= 2
            pane.keys("1", "Enter")
            pane.wait_for(f"created lun /targets/{d.target}/luns/1")
            pane.wait_prompt()
            pane.keys("set 1 read_only=true", "Enter")
            pane.wait_for("read_only = true")
            pane.wait_prompt()
            pane.keys("ls", "Enter")
            pane.wait_for("1    disk1   true")
            pane.wait_prompt()
            pane.keys("help resize", "Enter")
            pane.wait_for("CAPACITY DATA HAS CHANGED")
            pane.wait_prompt()
            pane.keys("save", "Enter")
            pane.wait_for(f"saved the running configuration to {config}")
            pane.keys("exit", "Enter")
            deadline = time.monotonic() + 10
            while pane.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not pane.alive(), "the console did not exit"
        finally:
            pane.tmux("kill-server", check=False)
        text = config.read_text()
        assert text.startswith("# site notes: keep me\n")
        model = load_config(config)
        assert model.device("disk1").size == 16 << 20
        luns = {m.lun: (m.device, m.read_only) for m in model.target(d.target).luns}
        assert luns == {0: ("disk0", False), 1: ("disk1", True)}
        assert _reported_luns(d.host, d.port, d.target) == [0, 1]
        history = (d.state_dir / ".console_history").read_text()
        assert "+create disk1 handler=vdisk_nullio size=16M" in history
