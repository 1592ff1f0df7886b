"""``pyscst admin`` against a real daemon, with the effect checked from an initiator.

Every operation runs as the operator would run it (the installed command in
a subprocess, one-shot, ``--json`` where a script would parse the reply), and
what it changed is observed the way an initiator observes it: a LUN added
live appears in REPORT LUNS after REPORTED LUNS DATA HAS CHANGED, a resized
device reports its new capacity after CAPACITY DATA HAS CHANGED, a closed
session is gone, a read-only device refuses writes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.admin.client.connection import AsyncClient
from pyscst.transports.iscsi.initiator import ConnectionLost, Initiator, InitiatorError
from tests.cdbs import (
    READ_CAPACITY_10,
    REPORT_LUNS,
    TUR,
    luns_of,
    read10,
    sense_triplet,
    write10,
)
from tests.daemon import REPO_ROOT, RunningDaemon, running_daemon_async

TARGET = "iqn.2026-11.org.pyscst:admin"
INITIATOR = "iqn.2026-11.org.example:host1"
OTHER_TARGET = "iqn.2026-11.org.pyscst:other"
GROUPED = "iqn.2026-11.org.example:grouped"
DEVICES = {"disk0": {"handler": "vdisk_fileio", "size": "8MiB"}}
LUNS = ({"lun": 0, "device": "disk0"},)


class Admin:
    """Runs ``pyscst admin --socket ... ARGS`` and keeps the outcome."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    async def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "pyscst", "admin", "--socket", str(self.socket),
                   *args]  # fmt: skip
        return await trio.to_thread.run_sync(
            lambda: subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        )

    async def ok(self, *args: str) -> Any:
        """Run with --json; insist on exit 0 and return the parsed reply."""
        done = await self.run("--json", *args)
        assert done.returncode == 0, f"admin {args}: exit {done.returncode}: {done.stderr}"
        return json.loads(done.stdout)

    async def fails(self, code: int, *args: str) -> str:
        done = await self.run(*args)
        assert done.returncode == code, f"admin {args}: exit {done.returncode}: {done.stderr}"
        return done.stderr


def admin_for(d: RunningDaemon) -> Admin:
    return Admin(d.state_dir / "pyscst.sock")


@asynccontextmanager
async def login(d: RunningDaemon, name: str = INITIATOR, lun: int = 0) -> AsyncIterator[Initiator]:
    connecting = Initiator.connect(d.host, d.port, initiator_name=name, target_name=TARGET)
    async with await connecting as ini:
        r = await ini.execute(lun, TUR)  # consume the power-on UA
        assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)
        yield ini


async def test_lun_added_live_shows_up_after_the_unit_attention(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        async with login(d) as ini:
            await admin.ok("device", "add", "disk1", "--size", "4M")
            reply = await admin.ok("lun", "add", TARGET, "1", "disk1")
            assert reply["changes"]["targets_changed"] == [TARGET]
            r = await ini.execute(0, TUR)
            assert r.status == 2 and sense_triplet(r.sense) == (0x6, 0x3F, 0x0E)
            r = await ini.execute(0, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [0, 1]
            r = await ini.execute(1, READ_CAPACITY_10, read_length=8)
            assert r.status == 0 or sense_triplet(r.sense)[0] == 0x6
            tree = await admin.ok("tree")
            assert [s["initiator"] for s in tree["sessions"]] == [INITIATOR]
            assert [e["lun"] for e in tree["sessions"][0]["luns"]] == [0, 1]

            # removing a LUN a session sees needs --force ...
            stderr = await admin.fails(1, "lun", "remove", TARGET, "1")
            assert "in use" in stderr and "LUN 1" in stderr
            await admin.ok("lun", "remove", TARGET, "1", "--force")
            r = await ini.execute(0, TUR)
            assert sense_triplet(r.sense) == (0x6, 0x3F, 0x0E)
            r = await ini.execute(0, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [0]
            r = await ini.execute(1, TUR)
            assert sense_triplet(r.sense) == (0x5, 0x25, 0x00)
            await admin.ok("device", "remove", "disk1")
            assert [x["name"] for x in (await admin.ok("tree"))["devices"]] == ["disk0"]


async def test_resize_reports_new_capacity_and_read_only_refuses_writes(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        async with login(d) as ini:
            r = await ini.execute(0, READ_CAPACITY_10, read_length=8)
            assert struct.unpack(">II", r.data) == (8 * 2048 - 1, 512)
            await admin.ok("device", "resize", "disk0", "16M")
            r = await ini.execute(0, READ_CAPACITY_10, read_length=8)
            assert sense_triplet(r.sense) == (0x6, 0x2A, 0x09)
            r = await ini.execute(0, READ_CAPACITY_10, read_length=8)
            assert struct.unpack(">II", r.data) == (16 * 2048 - 1, 512)
            assert (tmp_path / "state" / "disk0.img").stat().st_size == 16 << 20

            # the WP bit MODE SENSE reports is a mode parameter: each toggle
            # is MODE PARAMETERS CHANGED (2A/01) first
            await admin.ok("device", "set", "disk0", "--read-only")
            r = await ini.execute(0, write10(0, 1), data_out=bytes(512))
            assert sense_triplet(r.sense) == (0x6, 0x2A, 0x01)
            r = await ini.execute(0, write10(0, 1), data_out=bytes(512))
            assert sense_triplet(r.sense) == (0x7, 0x27, 0x00)
            await admin.ok("device", "set", "disk0", "--writable")
            r = await ini.execute(0, write10(0, 1), data_out=bytes(512))
            assert sense_triplet(r.sense) == (0x6, 0x2A, 0x01)
            r = await ini.execute(0, write10(0, 1), data_out=bytes(512))
            assert r.status == 0

            # mapping-level read-only, then statistics of what we did
            await admin.ok("lun", "set", TARGET, "0", "--read-only")
            r = await ini.execute(0, TUR)
            assert sense_triplet(r.sense) == (0x6, 0x3F, 0x0E)
            r = await ini.execute(0, write10(0, 1), data_out=bytes(512))
            assert sense_triplet(r.sense) == (0x6, 0x2A, 0x01)
            r = await ini.execute(0, write10(0, 1), data_out=bytes(512))
            assert sense_triplet(r.sense) == (0x7, 0x27, 0x00)
            # 11 commands: TUR, 3 READ CAPACITY, 6 WRITE, TUR; 8 of them ended in
            # CHECK CONDITION (6 unit attentions, 2 writes refused); 2 READ
            # CAPACITY answers of 8 bytes each; one write of one block went through
            stats = await admin.ok("stats", "--device", "disk0")
            assert (stats["commands"], stats["errors"]) == (11, 8)
            assert (stats["bytes_read"], stats["bytes_written"]) == (16, 512)
            assert 0 < stats["latency_us"]["p50"] <= stats["latency_us"]["max"]
            tsih = ini.tsih
            mine = await admin.ok("stats", "--target", TARGET, "--tsih", str(tsih))
            assert mine["commands"] == stats["commands"]
            assert mine["luns"][0]["lun"] == 0


async def test_closed_session_is_gone_and_resets_raise_unit_attentions(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        async with login(d) as ini, login(d, INITIATOR + "-b") as other:
            await admin.ok("reset", "lun", "disk0")
            assert sense_triplet((await ini.execute(0, TUR)).sense) == (0x6, 0x29, 0x03)
            await admin.ok("reset", "target", TARGET)
            assert sense_triplet((await other.execute(0, TUR)).sense)[:2] == (0x6, 0x29)

            sessions = await admin.ok("session", "list", TARGET)
            assert sorted(s["initiator"] for s in sessions) == [INITIATOR, INITIATOR + "-b"]
            mine = next(s for s in sessions if s["initiator"] == INITIATOR)
            assert mine["tsih"] == ini.tsih
            assert mine["isid"] == f"0x{ini.isid:012x}"
            assert mine["address"].startswith("127.0.0.1:")
            assert mine["luns"][0]["commands"] >= 2
            everything = await admin.ok("stats")
            assert sorted(s["initiator"] for s in everything["sessions"]) == [
                INITIATOR, INITIATOR + "-b"]
            (device,) = everything["devices"]
            assert device["device"] == "disk0"
            assert device["commands"] == sum(s["commands"] for s in everything["sessions"])
            await admin.ok("session", "close", TARGET, str(ini.tsih))
            with pytest.raises((InitiatorError, ConnectionLost, trio.BrokenResourceError)):
                with trio.fail_after(10):
                    await ini.execute(0, TUR)
            left = await admin.ok("session", "list")
            assert [s["initiator"] for s in left] == [INITIATOR + "-b"]
            assert (await other.execute(0, TUR)).status == 0  # untouched
            stderr = await admin.fails(1, "session", "close", TARGET, str(ini.tsih))
            assert f"no session with TSIH {ini.tsih}" in stderr


async def test_targets_portals_groups_and_initiators_live(tmp_path: Path) -> None:
    second = "iqn.2026-11.org.pyscst:second"
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        await admin.ok("target", "add", second, "--alias", "spare")
        await admin.ok("lun", "add", second, "0", "disk0", "--read-only")
        async with await Initiator.connect(
            d.host, d.port, initiator_name=INITIATOR, target_name=second
        ) as ini:
            r = await ini.execute(0, TUR)
            assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)
            # a group that matches no session changes no view: no force needed
            await admin.ok("group", "add", second, "others", "iqn.2026-11.org.other:*")
            assert (await ini.execute(0, TUR)).status == 0
            # a group that matches this initiator takes over its view: its empty
            # map takes LUN 0 away from the session, so force is needed
            stderr = await admin.fails(
                1, "group", "add", second, "hosts", "iqn.2026-11.org.example:*"
            )
            assert "in use" in stderr and "LUN 0" in stderr and INITIATOR in stderr
            assert (await ini.execute(0, TUR)).status == 0  # refused: nothing changed
            await admin.ok("group", "add", second, "hosts", "iqn.2026-11.org.example:*", "--force")
            assert sense_triplet((await ini.execute(0, TUR)).sense) == (0x5, 0x25, 0x00)
            assert luns_of((await ini.execute(0, REPORT_LUNS, read_length=256)).data) == []
            # adding a LUN to a session's view needs no force
            await admin.ok("lun", "add", second, "7", "disk0", "--group", "hosts")
            # the LU forgot this nexus when the session lost it, so the nexus is
            # new to it again: the power-on UA first, then the news of the LUN
            assert sense_triplet((await ini.execute(7, TUR)).sense) == (0x6, 0x29, 0x00)
            assert sense_triplet((await ini.execute(7, TUR)).sense) == (0x6, 0x3F, 0x0E)
            r = await ini.execute(7, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [7]
            await admin.ok("initiator", "add", second, "hosts", "iqn.2026-11.org.other:x")
            await admin.ok("initiator", "remove", second, "hosts", "iqn.2026-11.org.other:x")
            # naming this initiator exactly in "others" (LUN 0 only) moves it there:
            # it would lose LUN 7, so force again
            await admin.ok("lun", "add", second, "0", "disk0", "--group", "others")
            assert (await ini.execute(7, TUR)).status == 0  # that group is not ours
            stderr = await admin.fails(1, "initiator", "add", second, "others", INITIATOR)
            assert "LUN 7" in stderr
            await admin.ok("initiator", "add", second, "others", INITIATOR, "--force")
            assert sense_triplet((await ini.execute(0, TUR)).sense) == (0x6, 0x3F, 0x0E)
            r = await ini.execute(0, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [0]
            await admin.ok("initiator", "remove", second, "others", INITIATOR, "--force")
            assert sense_triplet((await ini.execute(7, TUR)).sense) == (0x6, 0x3F, 0x0E)
            r = await ini.execute(7, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [7]
            # losing the group's LUN 7 is a loss for this session: force needed
            await admin.fails(1, "group", "remove", second, "hosts")
            await admin.ok("group", "remove", second, "hosts", "--force")
            r = await ini.execute(0, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [0]
            await admin.fails(1, "target", "remove", second)
            await admin.ok("target", "remove", second, "--force")
            with pytest.raises((InitiatorError, ConnectionLost, trio.BrokenResourceError)):
                with trio.fail_after(10):
                    await ini.execute(0, TUR)

        # a new portal listens at once; removing it stops the listener
        from tests.daemon import free_port

        port = free_port()
        await admin.ok("portal", "add", TARGET, f"127.0.0.1:{port}")
        async with await Initiator.connect(
            d.host, port, initiator_name=INITIATOR, target_name=TARGET
        ) as ini:
            assert sense_triplet((await ini.execute(0, TUR)).sense) == (0x6, 0x29, 0x00)
            # stopping the listener would end this session: force needed
            stderr = await admin.fails(1, "portal", "remove", TARGET, f"127.0.0.1:{port}")
            assert f"portal 127.0.0.1:{port} carries session {ini.tsih}" in stderr
            assert (await ini.execute(0, TUR)).status == 0
            await admin.ok("portal", "remove", TARGET, f"127.0.0.1:{port}", "--force")
            with pytest.raises((InitiatorError, ConnectionLost, trio.BrokenResourceError)):
                with trio.fail_after(10):
                    await ini.execute(0, TUR)
        with pytest.raises(OSError):
            await trio.open_tcp_stream(d.host, port)
        assert [p["portals"] for p in (await admin.ok("tree"))["targets"]] == [[d.portal]]


async def test_errors_name_what_and_where_and_exit_codes(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        done = await admin.run("--json", "device", "resize", "disk0", "1000")
        assert done.returncode == 1
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "invalid" and error["path"] == "devices.disk0.size"
        assert "not a multiple of block_size 512" in error["message"]
        assert "no device named" in await admin.fails(1, "lun", "add", TARGET, "3", "nope")
        assert "already exists" in await admin.fails(1, "device", "add", "disk0", "--size", "1M")
        assert "unknown handler" in await admin.fails(
            1, "device", "add", "x", "--size", "1M", "--handler", "vdisk_nosuch"
        )
        assert "unknown op" in await admin.fails(1, "call", "no.such.op")
        assert "unknown argument" in await admin.fails(1, "call", "tree", '{"bogus": 1}')
        await admin.fails(2, "lun", "add", TARGET, "notanumber", "disk0")
        await admin.fails(2, "call", "tree", "[1]")
        gone = Admin(tmp_path / "nothing.sock")
        assert "cannot reach" in await gone.fails(3, "tree")
        assert (await admin.ok("hello"))["version"] == 1


async def test_save_and_reload_and_sighup(tmp_path: Path) -> None:
    extra = {OTHER_TARGET: {"luns": [{"lun": 0, "device": "disk0"}]}}
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=DEVICES, luns=LUNS, extra_targets=extra
    ) as d:
        admin = admin_for(d)
        config = d.config_path
        config.write_text("# operator notes: keep me\n" + config.read_text())
        connecting = Initiator.connect(
            d.host, d.port, initiator_name=INITIATOR, target_name=OTHER_TARGET)
        async with login(d) as ini, await connecting as bystander:
            assert sense_triplet((await bystander.execute(0, TUR)).sense)[:2] == (0x6, 0x29)
            await admin.ok("device", "add", "disk1", "--size", "2M", "--handler", "vdisk_nullio")
            await admin.ok("lun", "add", TARGET, "3", "disk1")
            saved = await admin.ok("save")
            assert saved["path"] == str(config)
            text = config.read_text()
            assert text.startswith("# operator notes: keep me\n")
            assert "[devices.disk1]" in text
            # nothing differs from the file now: reload changes nothing, no UA
            assert sense_triplet((await ini.execute(0, TUR)).sense) == (0x6, 0x3F, 0x0E)
            reply = await admin.ok("reload")
            assert not any(v for k, v in reply["changes"].items() if k != "restart_required")
            assert (await ini.execute(0, TUR)).status == 0

            # an edit by hand, picked up on SIGHUP: unmap LUN 3 is refused (in use)...
            edited = re.sub(r"\n\s*\{\s*lun = 3, device = \"disk1\"\s*\},?", "", text)
            assert edited != text
            config.write_text(edited)
            os.kill(d.pid, signal.SIGHUP)
            with trio.fail_after(10):
                while "reload failed" not in d.stderr_text():
                    await trio.sleep(0.1)
            assert "in use" in d.stderr_text()
            r = await ini.execute(0, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [0, 3]
            # ... and applied with reload --force, leaving LUN 0 undisturbed
            await admin.ok("reload", "--force")
            assert sense_triplet((await ini.execute(0, TUR)).sense) == (0x6, 0x3F, 0x0E)
            r = await ini.execute(0, REPORT_LUNS, read_length=256)
            assert luns_of(r.data) == [0]
            # an added device in the file comes up on SIGHUP without force
            config.write_text(
                config.read_text() + '\n[devices.disk9]\nhandler = "vdisk_nullio"\nsize = "1M"\n'
            )
            os.kill(d.pid, signal.SIGHUP)
            with trio.fail_after(10):
                while "disk9" not in [x["name"] for x in (await admin.ok("tree"))["devices"]]:
                    await trio.sleep(0.2)
            assert (await ini.execute(0, TUR)).status == 0  # nothing this session sees changed
            # the other target's session went through every edit and reload untouched
            assert (await bystander.execute(0, TUR)).status == 0
            assert [s["tsih"] for s in await admin.ok("session", "list", OTHER_TARGET)] == [
                bystander.tsih]


async def test_tree_shows_everything_and_resize_reaches_every_nexus(tmp_path: Path) -> None:
    devices = {**DEVICES, "nul": {"handler": "vdisk_nullio", "size": "1M", "block_size": 4096}}
    groups = {"db": {"initiators": [GROUPED, "iqn.2026-11.org.db:*"],
                     "luns": [{"lun": 5, "device": "disk0", "read_only": True}]}}
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=devices, luns=LUNS, groups=groups
    ) as d:
        admin = admin_for(d)
        async with login(d) as ini, login(d, GROUPED, lun=5) as grouped:
            await ini.execute(0, READ_CAPACITY_10, read_length=8)
            tree = await admin.ok("tree")
            by_name = {x["name"]: x for x in tree["devices"]}
            assert (by_name["disk0"]["handler"], by_name["disk0"]["size"]) == (
                "vdisk_fileio", 8 << 20)
            assert by_name["disk0"]["path"] == str(d.state_dir / "disk0.img")
            assert (by_name["nul"]["handler"], by_name["nul"]["size"]) == ("vdisk_nullio", 1 << 20)
            assert by_name["nul"]["block_size"] == 4096 and by_name["nul"]["path"] is None
            (target,) = tree["targets"]
            assert target["name"] == TARGET and target["portals"] == [d.portal]
            assert target["luns"] == [{"lun": 0, "device": "disk0", "read_only": False}]
            assert target["groups"] == [{
                "name": "db", "initiators": [GROUPED, "iqn.2026-11.org.db:*"],
                "luns": [{"lun": 5, "device": "disk0", "read_only": True}],
            }]
            sessions = {s["initiator"]: s for s in tree["sessions"]}
            assert set(sessions) == {INITIATOR, GROUPED}
            mine = sessions[INITIATOR]
            assert (mine["target"], mine["tsih"], mine["isid"]) == (
                TARGET, ini.tsih, f"0x{ini.isid:012x}")
            assert mine["address"].startswith("127.0.0.1:")
            # TUR at login and READ CAPACITY: 2 commands, 1 UA, 8 bytes read
            assert mine["luns"] == [{"lun": 0, "device": "disk0", "read_only": False,
                                     "commands": 2, "errors": 1, "bytes_read": 8,
                                     "bytes_written": 0}]
            assert [(e["lun"], e["read_only"]) for e in sessions[GROUPED]["luns"]] == [(5, True)]
            # the human form names the same things
            human = (await admin.run("tree")).stdout
            for text in ("vdisk_nullio", TARGET, "group db", "5->disk0 (ro)", GROUPED):
                assert text in human

            # one resize: CAPACITY DATA HAS CHANGED on every nexus, whatever its LUN number
            await admin.ok("device", "resize", "disk0", "12M")
            for who, lun in ((ini, 0), (grouped, 5)):
                r = await who.execute(lun, READ_CAPACITY_10, read_length=8)
                assert sense_triplet(r.sense) == (0x6, 0x2A, 0x09)
                r = await who.execute(lun, READ_CAPACITY_10, read_length=8)
                assert struct.unpack(">II", r.data) == (12 * 2048 - 1, 512)
            # shrinking below what a block size allows is refused, nothing changes
            stderr = await admin.fails(1, "device", "resize", "nul", "6K")
            assert "block_size 4096" in stderr
            assert (await ini.execute(0, TUR)).status == 0


async def test_device_remove_needs_force_and_spares_other_sessions(tmp_path: Path) -> None:
    devices = {**DEVICES, "disk1": {"handler": "vdisk_nullio", "size": "1M"}}
    luns = (*LUNS, {"lun": 1, "device": "disk1"})
    extra = {OTHER_TARGET: {"luns": [{"lun": 0, "device": "disk0"}]}}
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=devices, luns=luns, extra_targets=extra
    ) as d:
        admin = admin_for(d)
        connecting = Initiator.connect(
            d.host, d.port, initiator_name=INITIATOR, target_name=OTHER_TARGET)
        async with login(d) as ini, await connecting as bystander:
            assert sense_triplet((await bystander.execute(0, TUR)).sense)[:2] == (0x6, 0x29)
            stderr = await admin.fails(1, "device", "remove", "disk1")
            assert "mapped as LUN 1 of target" in stderr and "force" in stderr
            assert sense_triplet((await ini.execute(1, TUR)).sense) == (0x6, 0x29, 0x00)
            reply = await admin.ok("device", "remove", "disk1", "--force")
            assert reply["changes"]["devices_removed"] == ["disk1"]
            assert reply["changes"]["targets_changed"] == [TARGET]
            assert sense_triplet((await ini.execute(0, TUR)).sense) == (0x6, 0x3F, 0x0E)
            assert luns_of((await ini.execute(0, REPORT_LUNS, read_length=256)).data) == [0]
            assert sense_triplet((await ini.execute(1, TUR)).sense) == (0x5, 0x25, 0x00)
            # the session on the other target saw nothing of it
            assert (await bystander.execute(0, TUR)).status == 0
            assert [x["name"] for x in (await admin.ok("tree"))["devices"]] == ["disk0"]


INQUIRY_SERIAL = bytes((0x12, 0x01, 0x80, 0x00, 0xFF, 0x00))


async def test_reload_offers_new_iscsi_settings_to_new_logins(tmp_path: Path) -> None:
    """A changed [iscsi] table applies on reload, no restart: new logins negotiate
    from it, sessions already logged in keep what they negotiated."""
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        async with login(d) as before:
            assert before.negotiated["MaxBurstLength"] == "262144"  # what we offered
            assert before.maxcmdsn - before.expcmdsn + 1 == 128
            text = d.config_path.read_text()
            edited = text.replace(
                "[iscsi]\n",
                "[iscsi]\nmax_burst_length = 65536\nfirst_burst_length = 65536\nqueue_depth = 16\n",
            )
            assert edited != text
            d.config_path.write_text(edited)
            reply = await admin.ok("reload")
            assert reply["changes"]["iscsi_changed"] is True
            assert reply["changes"]["restart_required"] == []
            async with login(d) as after:
                assert after.negotiated["MaxBurstLength"] == "65536"
                assert after.maxcmdsn - after.expcmdsn + 1 == 16
                data = os.urandom(256 * 1024)  # several bursts of the new length
                r = await after.execute(0, write10(0, len(data) // 512), data_out=data)
                assert r.status == 0
            r = await before.execute(0, read10(0, 512), read_length=len(data))
            assert r.status == 0 and r.data == data
            assert (await before.execute(0, TUR)).status == 0


async def test_reload_replaces_a_changed_device_only_with_force(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        admin = admin_for(d)
        config = d.config_path
        async with login(d) as ini:
            r = await ini.execute(0, INQUIRY_SERIAL, read_length=255)
            old_serial = r.data[4 : 4 + r.data[3]].decode()
            text = config.read_text()
            edited = text.replace('size = "8MiB"', 'size = "8MiB"\nserial = "REPLACED1"')
            assert edited != text
            config.write_text(edited)
            # a serial cannot change under a live LU: the device is replaced, which
            # swaps the LU behind this session's LUN 0, so force is needed
            stderr = await admin.fails(1, "reload")
            assert "LUN 0 of target" in stderr and "in use" in stderr
            assert (await ini.execute(0, TUR)).status == 0
            reply = await admin.ok("reload", "--force")
            assert reply["changes"]["devices_replaced"] == ["disk0"]
            assert reply["changes"]["targets_changed"] == [TARGET]
            r = await ini.execute(0, TUR)  # a new LU: the nexus is new to it
            assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)
            r = await ini.execute(0, TUR)  # and the LUN inventory changed under it
            assert sense_triplet(r.sense) == (0x6, 0x3F, 0x0E)
            r = await ini.execute(0, INQUIRY_SERIAL, read_length=255)
            assert r.data[4 : 4 + r.data[3]].decode() == "REPLACED1" != old_serial
            # the control socket is fixed at start: a reload says so instead of pretending
            moved = f'control_socket = "{d.state_dir / "other.sock"}"\n' + edited
            config.write_text(moved)
            reply = await admin.ok("reload")
            assert reply["changes"]["restart_required"] == ["control_socket"]
            assert "changed control_socket: takes effect when the daemon restarts" in (
                d.stderr_text()
            )
            assert (await ini.execute(0, TUR)).status == 0
            # a file that does not parse changes nothing, and says where it is wrong
            config.write_text(edited + "\n[devices.bad\n")
            stderr = await admin.fails(1, "reload")
            assert "TOML syntax error" in stderr and "line" in stderr
            os.kill(d.pid, signal.SIGHUP)
            with trio.fail_after(10):
                while "reload failed, running configuration unchanged" not in d.stderr_text():
                    await trio.sleep(0.1)
            r = await ini.execute(0, INQUIRY_SERIAL, read_length=255)
            assert r.status == 0
            # two new devices, the second cannot open: neither is left running
            (d.state_dir / "adir").mkdir()  # (state_dir itself, ".", is refused as no file)
            config.write_text(
                moved + '\n[devices.aa]\nhandler = "vdisk_nullio"\nsize = "1M"\n'
                '\n[devices.zz]\nhandler = "vdisk_fileio"\nsize = "1M"\npath = "adir"\n'
            )
            stderr = await admin.fails(1, "reload")
            assert "device zz: cannot open backing store" in stderr
            assert [x["device"] for x in (await admin.ok("stats"))["devices"]] == ["disk0"]
            assert [x["name"] for x in (await admin.ok("tree"))["devices"]] == ["disk0"]


async def test_concurrent_edits_are_serialised_not_lost(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, devices=DEVICES, luns=LUNS) as d:
        sock = d.state_dir / "pyscst.sock"

        async def add(lun: int) -> None:  # starting a device awaits: edits overlap
            async with await AsyncClient.connect(sock) as client:
                await client.call("device.add", name=f"d{lun}", handler="vdisk_nullio", size=4096)
                await client.call("lun.add", target=TARGET, lun=lun, device=f"d{lun}")

        async with trio.open_nursery() as nursery:
            for lun in range(1, 17):
                nursery.start_soon(add, lun)
        async with login(d) as ini:
            r = await ini.execute(0, REPORT_LUNS, read_length=1024)
            assert luns_of(r.data) == list(range(17))
        tree = await admin_for(d).ok("tree")
        assert sorted(e["lun"] for e in tree["targets"][0]["luns"]) == list(range(17))
        assert len(tree["devices"]) == 17
