"""Console commands against an in-memory backend: what is sent, what is shown.

Each test types lines into :class:`Shell` exactly as a user would and checks
the plain text the console prints and the control ops it sent.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from pyscst.admin.client.console.app import script
from pyscst.admin.client.console.backend import UNREACHABLE, BackendError
from pyscst.admin.client.console.commands import ALIASES, COMMANDS
from pyscst.admin.client.console.render import plain
from pyscst.admin.client.console.shell import Shell
from pyscst.devices.registry import HANDLERS
from tests.console_fake import TARGET, FakeBackend

LUNS = f"/targets/{TARGET}/luns"


@pytest.fixture
def fake(tmp_path: Path) -> FakeBackend:
    return FakeBackend.with_defaults(tmp_path / "saved.toml")


def run(shell: Shell, line: str, ok: bool = True) -> str:
    outcome = shell.run_line(line)
    text = plain(outcome.output)
    assert outcome.ok is ok, text
    return text


def sent(fake: FakeBackend) -> list[tuple[str, dict[str, Any]]]:
    return [(op, args) for op, args in fake.calls if op != "tree"]


def test_ls_shows_devices_as_a_table(fake: FakeBackend) -> None:
    text = run(Shell(fake), "ls /devices")
    header, row = text.splitlines()
    assert header.split() == [
        "device", "handler", "size", "block_size", "read_only", "write_cache", "path"
    ]
    assert row.split() == ["disk0", "vdisk_fileio", "64MiB", "512", "false", "true", "disk0.img"]


def test_offline_device_shows_its_state_and_restart_brings_it_back(fake: FakeBackend) -> None:
    fake.devices["disk0"].update(state="offline", last_error="device disk0 crashed ...")
    shell = Shell(fake)
    assert "vdisk_fileio 64MiB offline" in run(shell, "tree /devices")
    header, row = run(shell, "ls /devices").splitlines()
    assert header.split()[-1] == "state" and row.split()[-1] == "offline"
    assert "device disk0 crashed" in run(shell, "info /devices/disk0")
    assert "restarted: online" in run(shell, "restart /devices/disk0")
    assert sent(fake) == [("device.restart", {"name": "disk0"})]
    assert "offline" not in run(shell, "tree /devices")
    assert "restart a device" in run(shell, f"restart /targets/{TARGET}", ok=False)


def test_eject_and_load_send_their_ops(fake: FakeBackend) -> None:
    shell = Shell(fake)
    assert "medium ejected" in run(shell, "eject /devices/disk0")
    assert "medium loaded" in run(shell, "load /devices/disk0")
    assert "medium loaded" in run(shell, "load /devices/disk0 image=cd.iso")
    assert sent(fake) == [
        ("device.eject", {"name": "disk0"}),
        ("device.load", {"name": "disk0"}),
        ("device.load", {"name": "disk0", "path": "cd.iso"}),
    ]
    assert "takes no key=value" in run(shell, "eject /devices/disk0 image=x", ok=False)
    assert "takes no key=value" in run(shell, "load /devices/disk0 colour=red", ok=False)
    assert "eject a device" in run(shell, f"eject /targets/{TARGET}", ok=False)
    assert len(sent(fake)) == 3  # refused lines send nothing


def test_ls_root_and_target_count_their_entries(fake: FakeBackend) -> None:
    shell = Shell(fake)
    assert run(shell, "ls").splitlines()[1:] == [
        "devices/   1 device", "targets/   1 target", "sessions/  1 session",
        "faults/    0 fault rules",
    ]
    run(shell, f"cd /targets/{TARGET}")
    assert "luns/     1 LUN" in run(shell, "ls")


def test_create_device_parses_size_and_sends_device_add(fake: FakeBackend) -> None:
    shell = Shell(fake)
    run(shell, "cd /devices")
    text = run(shell, "create disk1 handler=vdisk_nullio size=1G block_size=4096")
    assert text == "created device /devices/disk1\n"
    assert sent(fake) == [("device.add", {
        "name": "disk1", "handler": "vdisk_nullio", "size": 1 << 30, "block_size": 4096
    })]
    assert "disk1   vdisk_nullio  1GiB" in run(shell, "ls")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("create disk1 handler=vdisk_fileio size=12x",
         'error: create: size: expected bytes or a number with a K/M/G/T/P(i)B suffix, got "12x"'),
        ("create disk1 handler=vdisk_fileo size=1G",
         'error: create: handler: unknown handler "vdisk_fileo" '
         f"(one of {', '.join(HANDLERS)})"),  # (installed plugins included)
        ("create disk1 size=1G", "error: create: a new device needs handler=..."),
        ("create disk1 handler=vdisk_nullio size=1G colour=red",
         'error: create: unknown attribute "colour" for a new device (known: handler, size, '
         "path, block_size, read_only, write_cache, removable, physical_block_size, grow, "
         "backend)"),
        ("create disk1 handler=vdisk_nullio size=1G block_size=520",
         "error: create: block_size: expected 512 or 4096, got 520"),
    ],
)
def test_bad_arguments_are_named_and_nothing_is_sent(
    fake: FakeBackend, line: str, message: str
) -> None:
    shell = Shell(fake)
    run(shell, "cd /devices")
    assert run(shell, line, ok=False) == message + "\n"
    assert sent(fake) == []


def test_daemon_errors_show_message_and_path(fake: FakeBackend) -> None:
    shell = Shell(fake)
    text = run(shell, "delete /devices/disk0", ok=False)
    assert text == (
        f"error: device disk0 is mapped in {TARGET}; use force (at /devices/disk0)\n"
    )
    assert run(shell, "delete /devices/disk0 --force") == (
        "deleted device disk0 (/devices/disk0)\n"
    )
    assert sent(fake)[-1] == ("device.remove", {"name": "disk0", "force": True})


def test_create_lun_takes_the_lowest_free_number(fake: FakeBackend) -> None:
    shell = Shell(fake)
    run(shell, "create /devices/disk1 handler=vdisk_nullio size=1M")
    run(shell, f"cd {LUNS}")
    assert run(shell, "create device=disk1 read_only=yes") == f"created lun {LUNS}/1\n"
    assert sent(fake)[-1] == (
        "lun.add", {"target": TARGET, "device": "disk1", "read_only": True, "lun": 1}
    )
    assert run(shell, "ls").splitlines() == [
        "lun  device  read_only", "0    disk0   false", "1    disk1   true"
    ]


def test_group_objects_map_to_their_ops(fake: FakeBackend) -> None:
    shell = Shell(fake)
    run(shell, f"cd /targets/{TARGET}/groups")
    assert run(shell, "create hosts", ok=False) == (
        "error: group.add: give initiators (at args.initiators)\n"
    )
    run(shell, "create hosts initiators=iqn.2026-11.org.example:a")
    run(shell, "create hosts/initiators/iqn.1994-05.com.redhat:*")
    run(shell, "create hosts/luns/5 device=disk0")
    run(shell, "delete hosts/luns/5")
    assert sent(fake)[1:] == [
        ("group.add",
         {"target": TARGET, "group": "hosts", "initiators": ["iqn.2026-11.org.example:a"]}),
        ("initiator.add",
         {"target": TARGET, "group": "hosts", "pattern": "iqn.1994-05.com.redhat:*"}),
        ("lun.add", {"target": TARGET, "group": "hosts", "lun": 5, "device": "disk0"}),
        ("lun.remove", {"target": TARGET, "group": "hosts", "lun": 5}),
    ]


def test_set_and_resize_a_device(fake: FakeBackend) -> None:
    shell = Shell(fake)
    run(shell, "cd /devices/disk0")
    assert run(shell, "set read_only=true size=128M") == (
        "/devices/disk0: read_only = true\n/devices/disk0: size = 128MiB\n"
    )
    run(shell, "resize 1G")
    assert sent(fake) == [
        ("device.set", {"name": "disk0", "read_only": True}),
        ("device.resize", {"name": "disk0", "size": 128 << 20}),
        ("device.resize", {"name": "disk0", "size": 1 << 30}),
    ]
    assert "error: set: nothing can be changed on /targets" in run(
        shell, "set /targets read_only=true", ok=False
    )


def test_paths_that_name_nothing_say_where(fake: FakeBackend) -> None:
    shell = Shell(fake)
    assert run(shell, "cd /devices/disk9", ok=False) == (
        'error: no device "disk9" in /devices\n'
    )
    assert run(shell, "ls /devices/disk0/x", ok=False) == (
        'error: /devices/disk0 is a device, not a directory: cannot look up "x" in it\n'
    )
    assert run(shell, "pwd") == "/\n"


def test_cwd_moves_up_when_its_object_is_deleted(fake: FakeBackend) -> None:
    shell = Shell(fake)
    run(shell, f"cd /targets/{TARGET}/portals/127.0.0.1:3261")
    run(shell, "delete .")
    assert run(shell, "pwd") == f"/targets/{TARGET}/portals\n"


def test_sessions_info_stats_and_close(fake: FakeBackend) -> None:
    shell = Shell(fake)
    session = f"/sessions/{TARGET}/1"
    info = run(shell, f"info {session}")
    assert "initiator  iqn.1994-05.com.redhat:client" in info
    assert "  lun  commands  bytes_read  bytes_written\n  0    12        4096" in info
    stats = run(shell, f"stats {session}")
    assert "commands       12" in stats
    assert "latency_us:\n  p50  80\n  p90  120\n  p99  300\n  max  900\n" in stats
    assert run(shell, f"close {session}") == f"closed session 1 ({session})\n"
    assert ("session.close", {"target": TARGET, "tsih": 1}) in sent(fake)
    assert run(shell, "ls /sessions") == "/sessions is empty\n"


def test_unknown_commands_and_bad_quotes(fake: FakeBackend) -> None:
    shell = Shell(fake)
    assert run(shell, "lss", ok=False) == (
        'error: unknown command "lss" (did you mean "ls"?); type help for the list\n'
    )
    assert "No closing quotation" in run(shell, 'cd "/devices', ok=False)
    assert run(shell, "ls a b", ok=False).startswith("error: ls: too many arguments")
    assert run(shell, "   # a comment") == ""


def test_help_lists_every_command_and_explains_one(fake: FakeBackend) -> None:
    shell = Shell(fake)
    listing = run(shell, "help")
    for name in ("cd", "ls", "tree", "create", "delete", "set", "resize", "reset", "close",
                 "stats", "save", "reload", "help", "exit"):
        assert f"\n{name}" in listing
    assert run(shell, "help create").startswith("usage: create [PATH/]NAME [key=value ...]\n")


def test_save_sends_an_absolute_path(
    fake: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shell = Shell(fake)
    assert run(shell, "save out.toml") == (
        f"saved the running configuration to {tmp_path / 'out.toml'}\n"
    )
    assert (tmp_path / "out.toml").read_text().startswith("[devices.disk0]")


class _Broken:
    """A backend whose every call fails the way a lost daemon or a bug would."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def call(self, op: str, **args: Any) -> Any:
        raise self.exc

    def close(self) -> None:
        pass


def test_unreachable_daemon_is_an_error_line_not_a_crash() -> None:
    shell = Shell(_Broken(BackendError(UNREACHABLE, "cannot reach the daemon at /x.sock")))
    assert run(shell, "ls", ok=False) == "error: cannot reach the daemon at /x.sock\n"
    assert run(shell, "help").startswith("command")


def test_a_console_bug_is_reported_not_raised() -> None:
    shell = Shell(_Broken(RuntimeError("boom")))
    assert run(shell, "ls", ok=False) == (
        "error: internal console error in 'ls': RuntimeError: boom\n"
    )


def test_script_mode_exit_status(fake: FakeBackend) -> None:
    out, err = io.StringIO(), io.StringIO()
    lines = io.StringIO("cd /devices\nls\nfrob\nexit\nls\n")
    assert script(Shell(fake), lines, out, err) == 1
    assert out.getvalue().startswith("device  handler")
    assert err.getvalue() == 'error: unknown command "frob"; type help for the list\n'
    assert script(Shell(fake), io.StringIO("ls\n"), out, err) == 0


def test_reload_shows_only_what_differed(fake: FakeBackend) -> None:
    assert run(Shell(fake), "reload").splitlines() == [
        "reloaded the configuration file", "no differences"]
    fake.reload_changes = {"devices_added": ["disk9"], "restart_required": ["iscsi"]}
    text = run(Shell(fake), "reload")
    assert "disk9" in text and "restart_required" in text and "iscsi" in text
    assert "targets_removed" not in text and "log_level" not in text
    assert sent(fake) == [("config.reload", {}), ("config.reload", {})]


def test_every_command_and_alias_has_its_own_help(fake: FakeBackend) -> None:
    shell = Shell(fake)
    listing = run(shell, "help")
    for name, command in COMMANDS.items():
        text = run(shell, f"help {name}")
        assert text.startswith(f"usage: {command.usage}\n{command.summary}\n"), name
        assert len(text.splitlines()) >= 4, f"help {name} explains nothing more"
        assert command.usage in listing
    for alias, command in ALIASES.items():
        assert run(shell, f"help {alias}") == run(shell, f"help {command.name}")
    assert 'did you mean "resize"' in run(shell, "help resise", ok=False)


def test_alua_port_groups_list_and_set(fake: FakeBackend) -> None:
    fake.alua[TARGET] = {
        "target": TARGET, "alua": True, "explicit": True, "transition_time": 0,
        "port_groups": [
            {"name": "a", "id": 1, "relative_port": 1, "portals": ["127.0.0.1:3261"],
             "state": "active/optimized", "preferred": False, "status": "none"},
            {"name": "b", "id": 2, "relative_port": 2, "portals": [],
             "state": "standby", "preferred": False, "status": "none"},
        ],
    }  # fmt: skip
    shell = Shell(fake)
    rows = run(shell, f"ls /targets/{TARGET}/port_groups").splitlines()
    assert rows[0].split()[:4] == ["port", "group", "id", "relative_port"]
    assert rows[2].split()[:4] == ["b", "2", "2", "standby"]
    text = run(shell, f"set /targets/{TARGET}/port_groups/b state=active/optimized transition=1.5")
    assert "standby -> active/optimized" in text
    assert sent(fake) == [("alua.set", {
        "target": TARGET, "group": "b", "state": "active/optimized", "transition": 1.5,
    })]
    assert "transition: expected 0..3600" in run(
        shell, f"set /targets/{TARGET}/port_groups/b state=standby transition=-1", ok=False
    )
    assert "takes state=" in run(
        shell, f"set /targets/{TARGET}/port_groups/b transition=1", ok=False
    )
    # a target without port groups has no port_groups directory
    del fake.alua[TARGET]
    assert "port_groups" not in run(shell, f"ls /targets/{TARGET}")
