"""Tab completion: commands, paths, attribute names and values from the live tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from pyscst.admin.client.console.complete import ConsoleCompleter
from pyscst.admin.client.console.shell import Shell
from pyscst.devices.registry import HANDLERS
from tests.console_fake import TARGET, FakeBackend


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    fake = FakeBackend.with_defaults(tmp_path / "saved.toml")
    fake.call("device.add", name="disk1", handler="vdisk_nullio", size=1 << 20)
    return Shell(fake)


def complete(shell: Shell, text: str) -> list[str]:
    """What Tab offers after ``text``, each as the full word it would produce."""
    completer = ConsoleCompleter(shell)
    word = "" if not text or text[-1] == " " else text.split()[-1]
    out = []
    for c in completer.get_completions(Document(text, len(text)), CompleteEvent(True)):
        assert c.start_position <= 0
        out.append(word[: len(word) + c.start_position] + c.text)
    return out


def test_commands(shell: Shell) -> None:
    assert complete(shell, "cr") == ["create"]
    assert {"cd", "ls", "tree", "help", "exit", "quit", "rm"} <= set(complete(shell, ""))
    assert complete(shell, "help re") == ["reload", "reset", "resize", "restart"]


def test_paths_absolute_and_relative(shell: Shell) -> None:
    assert complete(shell, "cd /d") == ["/devices/"]
    assert complete(shell, "ls /devices/") == ["/devices/disk0", "/devices/disk1"]
    assert complete(shell, "cd /targets/") == [f"/targets/{TARGET}/"]
    shell.run_line(f"cd /targets/{TARGET}")
    assert complete(shell, "cd l") == ["luns/"]
    assert complete(shell, "ls luns/") == ["luns/0"]
    assert complete(shell, "cd ../../de") == ["../../devices/"]
    assert complete(shell, "cd /nowhere/") == []


def test_create_offers_the_attributes_of_the_directory(shell: Shell) -> None:
    shell.run_line("cd /devices")
    assert complete(shell, "create disk2 ") == [
        "handler=", "size=", "path=", "block_size=", "read_only=", "write_cache=",
        "removable=", "physical_block_size=", "grow=", "backend=",
    ]
    assert complete(shell, "create disk2 handler=vdisk_nullio ") == [
        "size=", "path=", "block_size=", "read_only=", "write_cache=",
        "removable=", "physical_block_size=", "grow=", "backend=",
    ]
    assert complete(shell, "create disk2 handler=") == [f"handler={h}" for h in HANDLERS]
    assert complete(shell, "create disk2 block_size=") == ["block_size=512", "block_size=4096"]
    # a path in front of the name decides, not the current directory
    assert complete(shell, f"create /targets/{TARGET}/luns/3 ") == ["device=", "lun=",
                                                                    "read_only="]


def test_lun_create_completes_device_names_and_the_next_lun(shell: Shell) -> None:
    shell.run_line(f"cd /targets/{TARGET}/luns")
    assert complete(shell, "create 1 device=") == ["device=disk0", "device=disk1"]
    assert complete(shell, "create 1 device=disk1 read_only=") == ["read_only=true",
                                                                  "read_only=false"]
    assert complete(shell, "create ")[0] == "1"


def test_set_and_delete_offer_what_the_object_takes(shell: Shell) -> None:
    assert complete(shell, "set /devices/disk0 ") == ["read_only=", "size="]
    assert complete(shell, f"set /targets/{TARGET}/luns/0 ") == ["read_only="]
    assert complete(shell, "delete /devices/disk0 ") == ["force="]
    assert complete(shell, "delete /devices/disk0 force=t") == ["force=true"]
    assert complete(shell, f"delete /targets/{TARGET}/portals/127.0.0.1:3261 ") == []


def test_call_completes_op_names(shell: Shell) -> None:
    assert complete(shell, "call device.re") == ["device.remove", "device.resize", "device.restart"]


def test_nothing_when_the_daemon_is_gone(shell: Shell, tmp_path: Path) -> None:
    class Gone:
        def call(self, op: str, **args: object) -> object:
            from pyscst.admin.client.console.backend import UNREACHABLE, BackendError

            raise BackendError(UNREACHABLE, "gone")

        def close(self) -> None:
            pass

    dead = Shell(Gone())
    assert complete(dead, "ls /") == []
    assert complete(dead, "cr") == ["create"]
