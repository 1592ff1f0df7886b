"""The console against the real daemon: edits applied live, seen by initiators, saved.

Two ways in: the interactive prompt (prompt_toolkit fed keystrokes, over the
real control socket) for a full edit-and-save session, and ``pyscst console``
as a process reading a script, checked from an iSCSI initiator.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
from prompt_toolkit.history import InMemoryHistory

from pyscst.admin.config.files import load_config
from pyscst.admin.client.console.backend import ClientBackend
from pyscst.admin.client.console.shell import Shell
from pyscst.transports.iscsi.initiator import ConnectionLost, Initiator
from tests.cdbs import REPORT_LUNS, luns_of
from tests.daemon import REPO_ROOT, running_daemon, running_daemon_async
from tests.unit.admin.test_console_session import drive

INITIATOR = "iqn.2026-11.org.example:console-test"


def test_interactive_edit_and_save_session(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        config = load_config(d.config_path)
        backend = ClientBackend(config.control_socket)
        saved = tmp_path / "saved.toml"
        try:
            output = drive(Shell(backend), [
                "cd /devices\r",
                "create disk1 handler=vdisk_n", "\t", " size=16M\r",
                f"cd /targets/{d.target}/luns\r",
                "create device=disk", "\t", "1\r",  # two devices: Tab stops at "disk"
                "set 1 read_only=true\r",
                "ls\r",
                f"save {saved}\r",
                "exit\r",
            ], InMemoryHistory())
        finally:
            backend.close()
        text = output.replace("\r", "")
        assert "created device /devices/disk1" in text
        assert f"created lun /targets/{d.target}/luns/1" in text
        assert "lun  device  read_only\n0    disk0   false\n1    disk1   true" in text
        assert f"saved the running configuration to {saved}" in text
        model = load_config(saved)
        disk1 = model.device("disk1")
        assert (disk1.handler.value, disk1.size, disk1.path) == ("vdisk_nullio", 16 << 20, None)
        luns = {m.lun: (m.device, m.read_only) for m in model.target(d.target).luns}
        assert luns == {0: ("disk0", False), 1: ("disk1", True)}


async def test_script_session_seen_by_an_initiator(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path) as d:
        command = [sys.executable, "-m", "pyscst", "console", "--config",
                   str(d.config_path)]  # fmt: skip
        async with await Initiator.connect(
            d.host, d.port, initiator_name=INITIATOR, target_name=d.target
        ) as session:
            script = (
                f"ls /sessions/{d.target}\n"
                "create /devices/disk1 handler=vdisk_nullio size=8M\n"
                f"create /targets/{d.target}/luns/4 device=disk1\n"
                f"ls /targets/{d.target}/luns\n"
            )
            done = await trio.run_process(
                command, stdin=script.encode(), capture_stdout=True, capture_stderr=True,
                cwd=REPO_ROOT, check=False,
            )
            out = done.stdout.decode()
            assert done.returncode == 0, done.stderr.decode()
            tsih_line = out.splitlines()[1].split()
            assert tsih_line[1] == INITIATOR
            assert "4    disk1" in out
            r = await session.execute(0, REPORT_LUNS, read_length=256)
            if r.status == 2:  # REPORTED LUNS DATA HAS CHANGED first
                r = await session.execute(0, REPORT_LUNS, read_length=256)
            assert r.status == 0 and luns_of(r.data) == [0, 4]
            closing = await trio.run_process(
                command, stdin=f"close /sessions/{d.target}/{tsih_line[0]}\n".encode(),
                capture_stdout=True, capture_stderr=True, check=False,
            )
            assert closing.returncode == 0, closing.stderr.decode()
            try:
                with trio.fail_after(10):
                    await session.execute(0, REPORT_LUNS, read_length=256)
                raise AssertionError("the closed session still answers")
            except ConnectionLost:
                pass
        failed = subprocess.run(
            command, input="delete /devices/disk1\nls /devices/nope\n", text=True,
            capture_output=True, check=False, cwd=REPO_ROOT,
        )
        assert failed.returncode == 1
        assert "error: " in failed.stderr and "disk1" in failed.stderr
        assert 'error: no device "nope" in /devices' in failed.stderr
