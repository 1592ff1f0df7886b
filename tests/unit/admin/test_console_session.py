"""The interactive console in a real prompt_toolkit prompt, fed keystrokes.

prompt_toolkit's pipe input stands in for the keyboard: a feeder thread types
lines (waiting after each Tab, as a person would, since completion runs
asynchronously) while the prompt runs in the test's thread. The console's
output goes to a plain-text output the test reads back.
"""

from __future__ import annotations

import io
import threading
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from pyscst.admin.client.console.app import interactive
from pyscst.admin.client.console.shell import Shell
from tests.console_fake import TARGET, FakeBackend

TAB_PAUSE = 0.3  # seconds for an asynchronous completion to land


def drive(shell: Shell, keys: Sequence[str], history: FileHistory) -> str:
    """Type ``keys`` (each chunk sent after the previous one was handled); the output."""
    out = io.StringIO()
    with create_pipe_input() as pipe:

        def feed(pipe: PipeInput) -> None:
            time.sleep(TAB_PAUSE)
            for chunk in keys:
                pipe.send_text(chunk)
                time.sleep(TAB_PAUSE if chunk.endswith("\t") else 0.05)

        feeder = threading.Thread(target=feed, args=(pipe,), daemon=True)
        feeder.start()
        status = interactive(shell, history, input=pipe, output=PlainTextOutput(out))
        feeder.join(timeout=10)
    assert status == 0
    return out.getvalue()


def test_tab_completion_in_a_live_prompt(tmp_path: Path) -> None:
    fake = FakeBackend.with_defaults(tmp_path / "saved.toml")
    shell = Shell(fake)
    output = drive(shell, [
        "cd /dev", "\t", "\r",
        "create disk1 hand", "\t", "vdisk_n", "\t", " si", "\t", "1G\r",
        "ls\r",
        "exit\r",
    ], FileHistory(str(tmp_path / "history")))
    assert ("device.add", {"name": "disk1", "handler": "vdisk_nullio", "size": 1 << 30}) in (
        fake.calls
    )
    assert "created device /devices/disk1" in output
    assert "disk1   vdisk_nullio  1GiB" in output


def test_full_edit_and_save_session(tmp_path: Path) -> None:
    fake = FakeBackend.with_defaults(tmp_path / "pyscst.toml")
    shell = Shell(fake)
    new_target = "iqn.2026-11.org.pyscst:backup"
    history = tmp_path / "history"
    output = drive(shell, [
        "cd /devices\r",
        "create data handler=vdisk_fileio size=256M block_size=4096\r",
        "create /nope/x\r",  # an error, and the session goes on
        "cd /targets\r",
        f"create {new_target} alias=backup\r",
        f"cd {new_target}/portals\r",
        "create 127.0.0.1:3262\r",
        "cd ../luns\r",
        "create 0 device=da", "\t", "\r",
        "set 0 read_only=true\r",
        "half a line\x03",  # Ctrl-C drops it
        "ls\r",
        "save\r",
        "\x04",  # Ctrl-D leaves
    ], FileHistory(str(history)))
    assert 'error: no "nope" in / (it holds devices, targets, sessions, faults)' in output
    assert "lun  device  read_only\n0    data    true" in output.replace("\r", "")
    assert f"saved the running configuration to {tmp_path / 'pyscst.toml'}" in output
    saved = tomllib.loads((tmp_path / "pyscst.toml").read_text())
    assert saved["devices"]["data"] == {
        "handler": "vdisk_fileio", "size": 256 << 20, "block_size": 4096,
        "read_only": False, "write_cache": True, "path": "data.img",
    }
    assert saved["targets"][new_target] == {
        "alias": "backup", "portals": ["127.0.0.1:3262"],
        "luns": [{"lun": 0, "device": "data", "read_only": True}],
    }
    assert TARGET in saved["targets"]
    typed = history.read_text()
    assert "+create 0 device=data" in typed
    assert "half a line" not in typed
