"""Handler plugins end to end: the example RAM disk package, and hostile plugins.

``examples/pyscst-ramdisk`` is installed into the test venv from its own
directory (Makefile: .stamp-test); it must register through the entry point
and serve I/O through iSCSI, its memory limit answering DATA PROTECT, SPACE
ALLOCATION FAILED WRITE PROTECT (27/07). Broken plugins (wrong API version,
raising on import, not a Plugin, taking a built-in name) are put on the
daemon's path as a distribution of their own: each is logged and skipped and
the daemon starts; a config naming a skipped handler fails at
``devices.NAME.handler``; a plugin whose store raises on every read is
supervised like any device and goes offline alone.
"""

from __future__ import annotations

import importlib.metadata
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pyscst.admin.config.files import parse_config
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10, sense_triplet, write10
from tests.daemon import REPO_ROOT, running_daemon_async, write_config

BS = 512
GOOD, CHECK = 0, 2
SPACE_FULL = (0x7, 0x27, 0x07)
OFFLINE = (0x2, 0x04, 0x03)
CHUNK = 64 * 1024


def _require_ramdisk() -> None:
    try:
        importlib.metadata.distribution("pyscst-ramdisk")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pyscst-ramdisk not installed (make venv installs examples/pyscst-ramdisk)")


def _unmap(lba: int, blocks: int) -> tuple[bytes, bytes]:
    desc = struct.pack(">QI4x", lba, blocks)
    params = struct.pack(">HH4x", 6 + len(desc), len(desc)) + desc
    return bytes((0x42, 0, 0, 0, 0, 0, 0)) + struct.pack(">H", len(params)) + b"\0", params


async def test_ramdisk_plugin_serves_io_and_its_limit_gives_space_sense(tmp_path: Path) -> None:
    _require_ramdisk()
    devices = {"ram0": {"handler": "vdisk_ramdisk", "size": "16MiB"}}
    env = {"PYSCST_RAMDISK_MAX_MEMORY": str(4 * CHUNK)}
    first = os.urandom(4 * CHUNK)  # exactly the limit
    async with running_daemon_async(
        tmp_path, devices=devices, luns=({"lun": 0, "device": "ram0"},), env=env
    ) as d:
        async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
            await ini.execute(0, TUR)
            r = await ini.execute(0, write10(0, len(first) // BS), first)
            assert r.status == GOOD, r.sense
            more = os.urandom(CHUNK)
            far = (8 << 20) // BS
            r = await ini.execute(0, write10(far, CHUNK // BS), more)
            assert r.status == CHECK and sense_triplet(r.sense) == SPACE_FULL
            # zeros need no memory; what was written is intact
            r = await ini.execute(0, write10(far, CHUNK // BS), bytes(CHUNK))
            assert r.status == GOOD, r.sense
            r = await ini.execute(0, read10(0, len(first) // BS), read_length=len(first))
            assert r.status == GOOD and bytes(r.data) == first
            # UNMAP gives memory back: the far write now fits
            cdb, params = _unmap(0, CHUNK // BS)
            assert (await ini.execute(0, cdb, params)).status == GOOD
            r = await ini.execute(0, write10(far, CHUNK // BS), more)
            assert r.status == GOOD, r.sense
            r = await ini.execute(0, read10(far, CHUNK // BS), read_length=CHUNK)
            assert bytes(r.data) == more
            r = await ini.execute(0, read10(0, CHUNK // BS), read_length=CHUNK)
            assert bytes(r.data) == bytes(CHUNK)
        assert "handler plugin ramdisk: handler vdisk_ramdisk" in d.stderr_text()


FAKE_PLUGINS = '''
import errno
from pyscst.devices.plugin_api import API_VERSION, HandlerInfo, PathRule, Plugin, build_disk

class FaultyStore:
    """Reads raise (a plugin bug); writes succeed."""
    size = 4 << 20
    read_only = False
    def read_now(self, offset, buf):
        raise RuntimeError("plugin bug: read_now")
    async def readinto(self, offset, buf):
        raise RuntimeError("plugin bug: readinto")
    def write_now(self, offset, data):
        return True
    async def write(self, offset, data, fua=False):
        return None
    async def flush(self):
        return None
    async def discard(self, offset, length):
        return None
    async def extents(self, offset, length, limit):
        return [(offset, length, True)]
    async def resize(self, size):
        raise ValueError("fixed size")
    async def close(self):
        return None

async def _open_faulty(cfg, roots, grow):
    return FaultyStore()

def _info(name, opener=_open_faulty):
    return HandlerInfo(name, "test", "disk", PathRule.NONE, (512,), opener, build_disk,
                       file_backed=False)

FAULTY = Plugin(API_VERSION, (_info("vdisk_faulty"),))
BAD_VERSION = Plugin(API_VERSION + 1, (_info("vdisk_future"),))
NOT_A_PLUGIN = {"handlers": ()}
TAKES_BUILTIN = Plugin(API_VERSION, (_info("vdisk_fileio"),))
'''

ENTRY_POINTS = """[pyscst.handlers]
faulty = fakeplug:FAULTY
future = fakeplug:BAD_VERSION
notaplugin = fakeplug:NOT_A_PLUGIN
builtin = fakeplug:TAKES_BUILTIN
broken = fakeplug_broken:PLUGIN
"""


def _fake_plugins(root: Path) -> Path:
    """A directory holding the ``fakeplug`` distribution (to go on PYTHONPATH)."""
    root.mkdir()
    (root / "fakeplug.py").write_text(FAKE_PLUGINS)
    (root / "fakeplug_broken.py").write_text("raise ImportError('this plugin is broken')\n")
    info = root / "fakeplug-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def _env(plugins: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(plugins), str(REPO_ROOT)])}


async def test_broken_plugins_are_skipped_and_a_faulty_store_goes_offline_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = _fake_plugins(tmp_path / "plugins")
    # (the test process has no fake plugins: it reads the config as if the
    # faulty device were a built-in one; the daemon reads it as written)
    monkeypatch.setattr(
        "tests.daemon.load_config",
        lambda path: parse_config(path.read_text().replace("vdisk_faulty", "vdisk_nullio"),
                                  path.parent),
    )
    devices = {
        "bad": {"handler": "vdisk_faulty", "size": "4MiB", "max_restarts": 1},
        "good": {"handler": "vdisk_nullio", "size": "4MiB"},
    }
    luns = ({"lun": 0, "device": "bad"}, {"lun": 1, "device": "good"})
    async with running_daemon_async(
        tmp_path / "d", devices=devices, luns=luns, env=_env(plugins)
    ) as d:
        async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
            for lun in (0, 1):
                await ini.execute(lun, TUR)
            seen = []
            for _ in range(10):
                with trio.fail_after(10):
                    r = await ini.execute(0, read10(0, 1), read_length=BS)
                assert r.status == CHECK
                seen.append(sense_triplet(r.sense))
                if seen[-1] == OFFLINE:
                    break
                await trio.sleep(0.2)
            assert seen[-1] == OFFLINE, seen
            r = await ini.execute(0, write10(0, 1), bytes(BS))  # offline for writes too
            assert r.status == CHECK and sense_triplet(r.sense) == OFFLINE
            r = await ini.execute(1, read10(0, 8), read_length=8 * BS)  # the other serves
            assert r.status == GOOD
        log = d.stderr_text()
    assert "handler plugin future (fakeplug:BAD_VERSION) skipped: written for plugin API " \
        "version 2, this pyscst has 1" in log
    assert "handler plugin broken (fakeplug_broken:PLUGIN) skipped: import failed: " \
        "ImportError: this plugin is broken" in log
    assert "handler plugin notaplugin (fakeplug:NOT_A_PLUGIN) skipped" in log
    assert "handler plugin builtin: handler vdisk_fileio already exists; skipped" in log
    assert "handler plugin faulty: handler vdisk_faulty" in log


def test_config_naming_a_skipped_plugin_handler_is_a_config_error(tmp_path: Path) -> None:
    plugins = _fake_plugins(tmp_path / "plugins")
    config = write_config(tmp_path, port=3260)
    text = config.read_text() + '\n[devices.future]\nhandler = "vdisk_future"\nsize = "4MiB"\n'
    config.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "pyscst", "check-config", str(config)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **_env(plugins)},
    )
    assert done.returncode != 0
    assert 'devices.future.handler: unknown handler "vdisk_future"' in done.stdout + done.stderr
