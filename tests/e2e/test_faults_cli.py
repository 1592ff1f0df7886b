"""Fault rules in the config file and through ``pyscst admin fault``, on the real daemon.

The daemon runs as users run it (``pyscst serve`` in its own process); rules
come from ``[[faults]]`` or from the installed admin command, and an
initiator sees their effect; SIGTERM must still give a clean exit 0.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10
from tests.daemon import free_port, start_daemon, stop_daemon, write_config
from tests.e2e.test_admin_cli import Admin

TARGET = "iqn.2026-11.org.pyscst:faultcli"
INITIATOR = "iqn.2026-11.org.example:host1"
BS = 512


async def session_reads(port: int, lbas: list[int]) -> list[tuple[int, int, int]]:
    """(status, sense key, INFORMATION) of one READ(10) per LBA, after the power-on UA."""
    out = []
    async with await Initiator.connect(
        "127.0.0.1", port, initiator_name=INITIATOR, target_name=TARGET
    ) as ini:
        await ini.execute(0, TUR)
        for lba in lbas:
            r = await ini.execute(0, read10(lba), read_length=BS)
            info = struct.unpack_from(">I", r.sense, 3)[0] if r.sense else -1
            out.append((r.status, r.sense[2] & 0x0F if r.sense else 0, info))
    return out


async def test_config_rules_and_admin_fault_commands(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port, target=TARGET)
    with config.open("a") as f:
        f.write('\n[[faults]]\nid = "dust"\naction = "bad_blocks"\nlbas = [10]\n')
    proc, info = await trio.to_thread.run_sync(
        lambda: start_daemon(config, host="127.0.0.1", port=port, target=TARGET)
    )
    try:
        admin = Admin(info.state_dir / "pyscst.sock")
        assert await session_reads(port, [9, 10]) == [(0, 0, -1), (2, 3, 10)]
        added = await admin.ok(
            "fault", "add", "id=slow", "action=check_condition", "lba=20-29",
            "sense_key=hardware_error", "asc=0x44", "times=1",
        )  # fmt: skip
        assert added["rule"]["lba"] == [20, 29] and added["rule"]["asc"] == 0x44
        assert await session_reads(port, [25, 25]) == [(2, 4, 25), (0, 0, -1)]
        listed = await admin.ok("fault", "list")
        assert [(r["id"], r["injections"]) for r in listed] == [("dust", 1), ("slow", 1)]
        await admin.ok("fault", "disable", "dust")
        assert await session_reads(port, [10]) == [(0, 0, -1)]
        text = (await admin.run("fault", "list")).stdout
        assert text.splitlines()[0].split()[:3] == ["dust", "off", "bad_blocks"]
        enabled = await admin.ok("fault", "enable", "dust")
        assert enabled["enabled"] is True and enabled["bad_blocks"] == [10]
        assert await session_reads(port, [10]) == [(2, 3, 10)]
        text = (await admin.run("fault", "stats", "slow")).stdout
        assert "slow" in text and "injections 1" in text and "lba=25" in text
        removed = await admin.ok("fault", "remove", "dust")
        assert removed["injections"] == 2 and removed["rule"]["lbas"] == [10]
        assert [r["id"] for r in await admin.ok("fault", "list")] == ["slow"]
        assert await session_reads(port, [10]) == [(0, 0, -1)]
        err = await admin.fails(1, "fault", "add", "action=hang", "bits=3")
        assert "does not apply to action hang" in err and "[bits]" in err
        err = await admin.fails(1, "fault", "enable", "dust")
        assert "not_found" in err
        err = await admin.fails(1, "fault", "add", "action=check_condition", "lba=9-3")
        assert "[lba]" in err and "first <= last" in err
        err = await admin.fails(1, "fault", "add", "action=status", "status=busyish")
        assert "[status]" in err and "task_set_full" in err
        err = await admin.fails(1, "fault", "add", "action=pdu_drop", "pdus=nop_outt")
        assert "[pdus[0]]" in err and "nop_out" in err
        err = await admin.fails(1, "fault", "add", "id=slow", "action=hang")
        assert "already exists" in err
    finally:
        await trio.to_thread.run_sync(lambda: stop_daemon(proc, info))


async def test_libiscsi_tools_see_the_configured_failures(tmp_path: Path) -> None:
    """iscsi-inq gets exactly the sense the rule names, once (times = 1); iscsi-ls
    is refused with "service unavailable", then logs in; the daemon stays up."""
    for name in ("iscsi-inq", "iscsi-ls"):
        if shutil.which(name) is None:
            pytest.skip(f"{name} (libiscsi-bin) is not installed")
    port = free_port()
    config = write_config(tmp_path, port=port, target=TARGET)
    proc, info = await trio.to_thread.run_sync(
        lambda: start_daemon(config, host="127.0.0.1", port=port, target=TARGET)
    )

    async def tool(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [args[0], "-i", INITIATOR, *args[1:]]
        return await trio.to_thread.run_sync(
            lambda: subprocess.run(argv, capture_output=True, text=True, timeout=30)
        )

    try:
        admin = Admin(info.state_dir / "pyscst.sock")
        await admin.ok("fault", "add", "id=inq", "action=check_condition", "opcodes=0x12",
                       "sense_key=hardware_error", "asc=0x44", "ascq=0", "times=1")  # fmt: skip
        failed = await tool("iscsi-inq", info.url())
        assert failed.returncode != 0
        assert "HARDWARE_ERROR" in failed.stderr + failed.stdout and "0x4400" in failed.stderr
        passed = await tool("iscsi-inq", info.url())
        assert passed.returncode == 0 and "Vendor:PYSCST" in passed.stdout
        await admin.ok("fault", "add", "id=door", "action=refuse_login", "times=1")
        refused = await tool("iscsi-ls", f"iscsi://{info.portal}")
        assert refused.returncode != 0 and "Service unavailable" in refused.stderr
        listed = await tool("iscsi-ls", f"iscsi://{info.portal}")
        assert listed.returncode == 0 and TARGET in listed.stdout
        stats = {r["id"]: r["injections"] for r in await admin.ok("fault", "stats")}
        assert stats == {"inq": 1, "door": 1}
    finally:
        await trio.to_thread.run_sync(lambda: stop_daemon(proc, info))


def test_check_config_names_the_bad_rule_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, port=free_port(), target=TARGET)
    with config.open("a") as f:
        f.write('\n[[faults]]\naction = "hang"\n[[faults]]\naction = "delay"\n'
                'delay = -1\nbits = 2\ndevice = "disk9"\n')  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pyscst", "check-config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr + done.stdout
    assert "faults[1].delay: expected 0..3600 seconds, got -1" in lines
    assert "faults[1].bits: does not apply to action delay" in lines
    assert 'faults[1].device: no device named "disk9"' in lines
    assert "faults[0]" not in lines
