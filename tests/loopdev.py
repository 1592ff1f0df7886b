"""A real loop block device for BLOCKIO tests (root only; skips with the reason).

Why a loop device and not a file: O_DIRECT on a block device goes through the
block layer's own rules (logical block size, BLKZEROOUT), which a file on
ext4 does not exercise. The backing file lives in /var/tmp (a disk
filesystem, never tmpfs, so the loop device accepts direct I/O).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def loop_device(size: int, logical_block_size: int = 512) -> Iterator[Path]:
    """``/dev/loopN`` over a fresh sparse file of ``size`` bytes, detached after."""
    losetup = shutil.which("losetup") or "/usr/sbin/losetup"
    if os.geteuid() != 0 or not os.path.exists(losetup):
        pytest.skip("a loop device needs root and losetup")
    fd, name = tempfile.mkstemp(prefix="pyscst-loop-", suffix=".img", dir="/var/tmp")
    os.close(fd)
    try:
        os.truncate(name, size)
        cmd = [losetup, "-f", "--show", "--direct-io=off", "-b", str(logical_block_size), name]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            pytest.skip(f"losetup failed: {done.stderr.strip() or done.returncode}")
        dev = Path(done.stdout.strip())
        try:
            yield dev
        finally:
            subprocess.run([losetup, "-d", str(dev)], capture_output=True, timeout=30)
    finally:
        os.unlink(name)
