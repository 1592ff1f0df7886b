"""Each daemon owns its io_uring submission batch (devices/io_engine.py):
its stores' rings and its connections' readers share it, and two daemons in
one process never submit each other's rings nor count each other's readers
as their own (what the module-level lists of before could not promise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from pyscst.devices import uring
from pyscst.devices.stores import FileStore
from pyscst.supervision.daemon import Daemon
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, read10, write10
from tests.daemon import in_process_daemon

UNAVAILABLE = uring.probe()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}")
BS = 512
TARGET = "iqn.2026-12.org.pyscst:batch"


def _body(name: str) -> str:
    return f"""
log_level = "warning"
[devices.{name}]
handler = "vdisk_fileio"
size = "1MiB"
io_engine = "uring"
[targets."{TARGET}"]
portals = ["127.0.0.1:@PORT@"]
luns = [{{ lun = 0, device = "{name}" }}]
"""


def _store(daemon: Daemon, name: str) -> FileStore:
    store = daemon.devices[name]._store
    assert isinstance(store, FileStore) and store.engine is not None
    return store


async def _read_all(ini: Initiator, blocks: int) -> dict[int, bytes]:
    """``blocks`` read 4 KiB at a time, all in flight at once (cold: the ring)."""
    got: dict[int, bytes] = {}

    async def read(lba: int) -> None:
        r = await ini.execute(0, read10(lba, 8), read_length=8 * BS)
        assert r.status == 0, r.sense
        got[lba] = bytes(r.data)

    async with trio.open_nursery() as nursery:
        for lba in range(0, blocks, 8):
            nursery.start_soon(read, lba)
    return got


async def test_each_daemon_submits_its_own_rings_through_its_own_readers(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        in_process_daemon(tmp_path / "a", _body("da")) as (a, port_a),
        in_process_daemon(tmp_path / "b", _body("db")) as (b, port_b),
    ):
        assert a.io_batch is not b.io_batch
        store_a, store_b = _store(a, "da"), _store(b, "db")
        assert store_a.engine is not None and store_b.engine is not None
        assert store_a.engine._batch is a.io_batch and store_b.engine._batch is b.io_batch
        data = os.urandom(64 * BS)
        for port, store in ((port_a, store_a), (port_b, store_b)):
            async with await Initiator.connect("127.0.0.1", port, target_name=TARGET) as ini:
                await ini.execute(0, TUR)  # the power-on unit attention
                assert (await ini.execute(0, write10(0, 64, fua=True), data)).status == 0
                # while logged in, the connection's reader is its daemon's alone
                assert len(a.io_batch.readers | b.io_batch.readers) == 1
                assert not (a.io_batch.readers & b.io_batch.readers)
                os.posix_fadvise(store.fileno, 0, 0, os.POSIX_FADV_DONTNEED)
                engine = store.engine
                assert engine is not None
                before = engine.requests
                got = await _read_all(ini, 64)
                assert got == {lba: data[lba * BS : (lba + 8) * BS] for lba in range(0, 64, 8)}
                assert engine.requests > before  # the cold reads went through its ring
        # every connection is gone: no reader left registered in either batch
        await trio.sleep(0.05)
        assert not a.io_batch.readers and not b.io_batch.readers
        assert not a.io_batch.queued and not b.io_batch.queued
