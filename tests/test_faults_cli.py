"""Fault rules in the config file and through ``pyscst admin fault``, on the real daemon.

The daemon runs as users run it (``pyscst serve`` in its own process); rules
come from ``[[faults]]`` or from the installed admin command, and an
initiator sees their effect; SIGTERM must still give a clean exit 0.
"""

from __future__ import annotations

import struct
from pathlib import Path

import trio

from tests.daemon import free_port, start_daemon, stop_daemon, write_config
from tests.test_admin_cli import Admin
from transports.iscsi.initiator import Initiator

TARGET = "iqn.2026-11.org.pyscst:faultcli"
INITIATOR = "iqn.2026-11.org.example:host1"
BS = 512
TUR = bytes(6)


def read10(lba: int, blocks: int = 1) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


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
        text = (await admin.run("fault", "stats", "slow")).stdout
        assert "slow" in text and "injections 1" in text and "lba=25" in text
        await admin.ok("fault", "remove", "dust")
        err = await admin.fails(1, "fault", "add", "action=hang", "bits=3")
        assert "does not apply to action hang" in err and "[bits]" in err
        err = await admin.fails(1, "fault", "enable", "dust")
        assert "not_found" in err
    finally:
        await trio.to_thread.run_sync(lambda: stop_daemon(proc, info))
