"""qemu-img as an initiator: 64 MiB of random data onto LUN 0 and back, byte for byte.

qemu's libiscsi block driver negotiates its own way (large transfers,
READ CAPACITY(16), many outstanding commands) and is how VMs will use us;
a lossless round trip through the real daemon is the baseline data-path test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon import running_daemon
from tests.loopdev import loop_device

SIZE = 64 * 2**20


def _qemu_img_with_iscsi() -> str | None:
    """qemu-img with its iscsi driver; as root, apt-get install it if missing."""

    def usable() -> str | None:
        tool = shutil.which("qemu-img")
        if tool is None:
            return None
        out = subprocess.run([tool, "--help"], capture_output=True, text=True, check=False)
        return tool if " iscsi" in out.stdout else None

    found = usable()
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "qemu-utils", "qemu-block-extra"]):
        subprocess.run(args, env=env, check=False, capture_output=True, timeout=900)
    return usable()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(2**20):
            h.update(chunk)
    return h.hexdigest()


def _convert(tool: str, src: str, dst: str, *, existing_target: bool) -> None:
    args = [tool, "convert", "-f", "raw", "-O", "raw"]
    if existing_target:
        args.append("-n")  # the LUN exists; qemu-img cannot (and must not) create it
    proc = subprocess.run([*args, src, dst], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"qemu-img {src} -> {dst} failed:\n{proc.stderr}"


def test_qemu_img_round_trip(tmp_path: Path) -> None:
    tool = _qemu_img_with_iscsi()
    if tool is None:
        pytest.skip("qemu-img with iscsi support is absent and we are not root to install it")
    source = tmp_path / "source.img"
    source.write_bytes(os.urandom(SIZE))
    back = tmp_path / "back.img"
    devices = {"disk0": {"handler": "vdisk_fileio", "size": SIZE}}
    with running_daemon(tmp_path / "daemon", devices=devices) as daemon:
        _convert(tool, str(source), daemon.url(0), existing_target=True)
        _convert(tool, daemon.url(0), str(back), existing_target=False)
        backing = daemon.state_dir / "disk0.img"
    assert back.stat().st_size == SIZE
    assert _digest(back) == _digest(source)
    # and it really went through the daemon's backing file, not a cache
    assert _digest(backing) == _digest(source)


def test_qemu_img_round_trip_on_blockio_loop_device(tmp_path: Path) -> None:
    """The same round trip through vdisk_blockio (O_DIRECT) on a real loop device."""
    tool = _qemu_img_with_iscsi()
    if tool is None:
        pytest.skip("qemu-img with iscsi support is absent and we are not root to install it")
    source = tmp_path / "source.img"
    source.write_bytes(os.urandom(SIZE))
    back = tmp_path / "back.img"
    with loop_device(SIZE) as dev:
        devices = {"disk0": {"handler": "vdisk_blockio", "size": SIZE, "path": str(dev)}}
        with running_daemon(
            tmp_path / "daemon", devices=devices, extra={"allowed_dirs": ["/dev"]}
        ) as daemon:
            _convert(tool, str(source), daemon.url(0), existing_target=True)
            _convert(tool, daemon.url(0), str(back), existing_target=False)
        assert _digest(back) == _digest(source)
        assert _digest(dev) == _digest(source)  # on the block device itself
