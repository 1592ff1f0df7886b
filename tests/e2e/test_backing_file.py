"""D6: a backing file truncated, deleted or out of space while served.

The real daemon with a file-backed disk in a temporary directory. The file
changes under it; the initiator must never get zeros as data or lose writes
silently, and the log must say what happened, naming the device and the path:

- truncated: reads past the new end fail (never zeros with GOOD) and, within a
  second or two, the device goes offline (NOT READY 04/03) with the reason in
  ``device show``. Offline rather than a new capacity with 2A/09: the blocks
  past the new end are gone, and a capacity change would let a filesystem go
  on as if nothing was lost;
- deleted: offline too, so later writes cannot vanish into an inode with no name;
- full filesystem: DATA PROTECT 27/07, as before, and now a (rate-limited) WARNING.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10, sense_triplet, write10
from tests.daemon import running_daemon_async
from tests.e2e.test_admin_cli import admin_for

TARGET = "iqn.2026-11.org.pyscst:d6"
LUNS = ({"lun": 0, "device": "disk0"},)
BS = 512
MiB = 1 << 20
GOOD, CHECK = 0, 2
OFFLINE = (0x2, 0x04, 0x03)


@asynccontextmanager
async def connect(host: str, port: int) -> AsyncIterator[Initiator]:
    ini = await Initiator.connect(
        host, port, initiator_name="iqn.2026-11.org.example:d6", target_name=TARGET
    )
    async with ini:
        for _ in range(5):
            if (await ini.execute(0, TUR)).status == GOOD:
                break
        else:
            raise AssertionError("TEST UNIT READY never GOOD")
        yield ini


Answer = tuple[int, tuple[int, int, int] | None, bytes]


async def until_offline(
    ini: Initiator, cdb: bytes, data_out: bytes = b"", read_length: int = 0
) -> list[Answer]:
    """Repeat a command until it answers 04/03; every answer on the way."""
    seen: list[Answer] = []
    with trio.fail_after(15):
        while True:
            r = await ini.execute(0, cdb, data_out=data_out, read_length=read_length)
            sense = sense_triplet(r.sense) if r.status == CHECK else None
            seen.append((r.status, sense, bytes(r.data or b"")))
            if sense == OFFLINE:
                return seen
            await trio.sleep(0.05)


async def test_truncated_backing_file_never_serves_zeros_and_goes_offline(
    tmp_path: Path,
) -> None:
    devices = {"disk0": {"handler": "vdisk_fileio", "size": "8MiB"}}
    async with running_daemon_async(tmp_path, target=TARGET, devices=devices, luns=LUNS) as d:
        admin = admin_for(d)
        path = d.state_dir / "disk0.img"
        high = (6 * MiB) // BS
        async with connect(d.host, d.port) as ini:
            assert (await ini.execute(0, write10(high, 8), data_out=b"D" * 8 * BS)).status == GOOD
            r = await ini.execute(0, read10(high, 8), read_length=8 * BS)
            assert r.status == GOOD and r.data == b"D" * 8 * BS
            os.truncate(path, 1 * MiB)
            answers = await until_offline(ini, read10(high, 8), read_length=8 * BS)
            # before the device went offline: an error, never the zeros the file now has
            assert all(status == CHECK for status, _, _ in answers), answers
            assert all(sense in ((0x3, 0x11, 0x00), OFFLINE) for _, sense, _ in answers)
            r = await ini.execute(0, write10(0), data_out=b"w" * BS)
            assert r.status == CHECK and sense_triplet(r.sense) == OFFLINE
        shown = await admin.ok("device", "show", "disk0")
        assert shown["state"] == "offline"
        assert "truncated" in shown["last_error"] and str(path) in shown["last_error"]
        log = d.stderr_text()
        warnings = [x for x in log.splitlines() if "WARNING" in x and "truncated" in x]
        assert warnings and "disk0" in warnings[0] and str(path) in warnings[0]
        assert os.stat(path).st_size == 1 * MiB  # offline: nothing grew it back behind us


async def test_deleted_backing_file_goes_offline_before_writes_can_vanish(
    tmp_path: Path,
) -> None:
    devices = {"disk0": {"handler": "vdisk_fileio", "size": "8MiB"}}
    async with running_daemon_async(tmp_path, target=TARGET, devices=devices, luns=LUNS) as d:
        admin = admin_for(d)
        path = d.state_dir / "disk0.img"
        async with connect(d.host, d.port) as ini:
            assert (await ini.execute(0, write10(10), data_out=b"a" * BS)).status == GOOD
            path.unlink()
            answers = await until_offline(ini, write10(11), data_out=b"b" * BS)
            assert answers[-1][1] == OFFLINE
            r = await ini.execute(0, read10(10), read_length=BS)
            assert r.status == CHECK and sense_triplet(r.sense) == OFFLINE
            shown = await admin.ok("device", "show", "disk0")
            assert shown["state"] == "offline" and "deleted" in shown["last_error"]
            # a restart that cannot open the store says so and leaves it offline
            path.mkdir()
            stderr = await admin.fails(1, "device", "restart", "disk0")
            assert "cannot open backing store" in stderr and "Is a directory" in stderr
            shown = await admin.ok("device", "show", "disk0")
            assert shown["state"] == "offline" and "restart failed" in shown["last_error"]
            r = await ini.execute(0, TUR)
            assert sense_triplet(r.sense) == OFFLINE
            path.rmdir()
            # the operator restores a file and restarts: served again, a power-on UA first
            path.write_bytes(b"r" * BS * 16)
            os.truncate(path, 8 * MiB)
            assert (await admin.ok("device", "restart", "disk0"))["state"] == "online"
            reply = await admin.ok("device", "restart", "disk0")  # online: nothing to do
            assert reply["message"] == "device disk0 is online; nothing to restart"
            r = await ini.execute(0, TUR)
            assert sense_triplet(r.sense) == (0x6, 0x29, 0x00)
            r = await ini.execute(0, read10(1), read_length=BS)
            assert r.status == GOOD and r.data == b"r" * BS
        log = d.stderr_text()
        warnings = [x for x in log.splitlines() if "WARNING" in x and "deleted" in x]
        assert warnings and "disk0" in warnings[0] and str(path) in warnings[0]


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs inside the test's state directory (needs root)."""
    where = tmp_path / "state" / "full"
    where.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_full_filesystem_answers_27_07_and_says_so_once(
    tmp_path: Path, small_filesystem: Path
) -> None:
    devices = {"disk0": {"handler": "vdisk_fileio", "size": "8MiB", "path": "full/disk0.img"}}
    async with running_daemon_async(tmp_path, target=TARGET, devices=devices, luns=LUNS) as d:
        admin = admin_for(d)
        async with connect(d.host, d.port) as ini:
            chunk = 64 * 1024
            refused = []
            for n in range(40):  # 2.5 MiB into a 1 MiB filesystem
                lba = n * chunk // BS
                r = await ini.execute(0, write10(lba, chunk // BS), data_out=b"f" * chunk)
                if r.status != GOOD:
                    refused.append(sense_triplet(r.sense))
            assert len(refused) >= 10 and set(refused) == {(0x7, 0x27, 0x07)}
            assert (await ini.execute(0, read10(0), read_length=BS)).data == b"f" * BS
        assert (await admin.ok("device", "show", "disk0"))["state"] == "online"
        log = d.stderr_text()
        warnings = [x for x in log.splitlines() if "WARNING" in x and "no space left" in x]
        assert len(warnings) == 1, warnings  # rate-limited: one for the whole burst
        assert "disk0" in warnings[0] and str(small_filesystem / "disk0.img") in warnings[0]
