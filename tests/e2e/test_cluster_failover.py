"""Failover: node A is killed -9 mid-stream, a multipath initiator carries on through B.

Two ``pyscst serve`` processes export one disk file, ALUA groups ``a`` (node A,
active/optimized) and ``b`` (node B, standby). The initiator has one session
per node (same name, its own ISID each), registers both paths and takes a
WRITE EXCLUSIVE, REGISTRANTS ONLY reservation, then writes through A. A dies
with SIGKILL; once its lease has expired B puts group b ACTIVE/OPTIMIZED and
group a UNAVAILABLE, and the writes continue through B (allowed only because
the registrations survived). At the end every acknowledged write is in the
file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from pyscst.scsi.sense import Status
from pyscst.transports.iscsi.initiator import ConnectionLost, Initiator
from tests.daemon import free_port, start_daemon, stop_daemon
from tests.e2e.test_cluster import TARGET, node_body
from tests.e2e.test_reservations import NAME_A, REGISTER, RESERVE, WE_RO, keys, prout
from tests.helpers_etcd import EtcdInstance, etcd_unavailable, running_etcd

pytestmark = pytest.mark.skipif(etcd_unavailable() is not None, reason=str(etcd_unavailable()))

HOST = "127.0.0.1"
ISID_A, ISID_B = 0x23D000000021, 0x23D000000022
TTL = 3
BS = 512
REPORT_TPGS = bytes((0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0))


def node_config(workdir: Path, shared: Path, etcd: str, name: str, port: int) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state").mkdir(exist_ok=True)
    other = "b" if name == "a" else "a"
    text = f'state_dir = "{workdir / "state"}"\n' + node_body(shared, name, etcd, TTL)
    text = (
        text.replace("@PORT@", str(port))
        + f"""
[targets."{TARGET}".port_groups.{name}]
id = {1 if name == "a" else 2}
portals = ["{HOST}:{port}"]
state = "{"active/optimized" if name == "a" else "standby"}"
[targets."{TARGET}".port_groups.{other}]
id = {2 if name == "a" else 1}
portals = []
state = "{"standby" if name == "a" else "active/optimized"}"
"""
    )
    path = workdir / "pyscst.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def etcd_at(tmp_path: Path) -> Iterator[EtcdInstance]:
    with running_etcd(tmp_path / "etcd") as instance:
        yield instance


@contextlib.asynccontextmanager
async def session(port: int, isid: int) -> AsyncIterator[Initiator]:
    async with await Initiator.connect(
        HOST, port, initiator_name=NAME_A, target_name=TARGET, isid=isid
    ) as ini:
        for _ in range(5):
            if (await ini.execute(0, bytes(6))).status == Status.GOOD:
                break
        yield ini


def block(n: int) -> bytes:
    return struct.pack(">I", n) * (BS // 4)


async def write(ini: Initiator, lba: int) -> tuple[int, bytes]:
    r = await ini.execute(0, struct.pack(">BBIBHB", 0x2A, 0, lba, 0, 1, 0), data_out=block(lba))
    return r.status, r.sense


async def group_states(ini: Initiator) -> dict[int, int]:
    r = await ini.execute(0, REPORT_TPGS, read_length=1024)
    assert r.status == Status.GOOD, r
    data, out, at = r.data, {}, 4
    (length,) = struct.unpack_from(">I", data, 0)
    while at < 4 + length:
        state, group, count = (
            data[at] & 0x0F,
            struct.unpack_from(">H", data, at + 2)[0],
            data[at + 7],
        )
        out[group] = state
        at += 8 + 4 * count
    return out


async def test_kill_9_of_node_a_fails_over_to_node_b(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    port_a, port_b = free_port(), free_port()
    with etcd_at(tmp_path) as etcd:
        cfg_a = node_config(tmp_path / "a", shared, etcd.url, "a", port_a)
        cfg_b = node_config(tmp_path / "b", shared, etcd.url, "b", port_b)
        proc_a, info_a = await trio.to_thread.run_sync(
            lambda: start_daemon(cfg_a, host=HOST, port=port_a, target=TARGET)
        )
        proc_b, info_b = await trio.to_thread.run_sync(
            lambda: start_daemon(cfg_b, host=HOST, port=port_b, target=TARGET)
        )
        acked: list[int] = []
        try:
            async with session(port_a, ISID_A) as path_a, session(port_b, ISID_B) as path_b:
                assert await group_states(path_b) == {1: 0, 2: 2}  # a A/O, b standby
                assert (await prout(path_a, REGISTER, sark=0xA)).status == Status.GOOD
                assert (await prout(path_b, REGISTER, sark=0xA)).status == Status.GOOD  # standby
                assert (await prout(path_a, RESERVE, key=0xA, ptype=WE_RO)).status == Status.GOOD
                status, sense = await write(path_b, 0)
                assert (status, sense[12:14]) == (Status.CHECK_CONDITION, b"\x04\x0b")
                for lba in range(40):
                    status, _ = await write(path_a, lba)
                    assert status == Status.GOOD
                    acked.append(lba)
                os.kill(proc_a.pid, signal.SIGKILL)
                await trio.to_thread.run_sync(proc_a.wait)
                with pytest.raises((ConnectionLost, trio.BrokenResourceError, OSError)):
                    await write(path_a, 40)
                # the multipath initiator retries on path b until it is active
                with trio.move_on_after(4 * TTL):
                    while True:
                        status, sense = await write(path_b, 40)
                        if status == Status.GOOD:
                            break
                        await trio.sleep(0.1)
                assert status == Status.GOOD, (sense.hex(), info_b.stderr_text()[-6000:])
                acked.append(40)
                for lba in range(41, 80):
                    status, _ = await write(path_b, lba)
                    assert status == Status.GOOD
                    acked.append(lba)
                assert await group_states(path_b) == {1: 3, 2: 0}  # a unavailable, b A/O
                assert await keys(path_b) == [0xA, 0xA]  # both paths still registered
            assert "node a left the cluster" in info_b.stderr_text()
        finally:
            if proc_a.poll() is None:
                proc_a.kill()
            await trio.to_thread.run_sync(lambda: stop_daemon(proc_b, info_b))
        del info_a
    data = (shared / "disk0.img").read_bytes()
    for lba in acked:
        assert data[lba * BS : (lba + 1) * BS] == block(lba), f"LBA {lba} lost"


@pytest.mark.skipif(shutil.which("iscsi-test-cu") is None, reason="needs iscsi-test-cu")
async def test_libiscsi_multipath_suite_with_one_path_per_node(tmp_path: Path) -> None:
    """libiscsi's MultipathIO suite, its two paths on two nodes (both groups active:
    WRITE/READ across nodes, a LUN RESET through one seen as a UA through the
    other, COMPARE AND WRITE alternating between the nodes)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    port_a, port_b = free_port(), free_port()
    with etcd_at(tmp_path) as etcd:
        running = []
        for name, port in (("a", port_a), ("b", port_b)):
            cfg = node_config(tmp_path / name, shared, etcd.url, name, port)
            cfg.write_text(cfg.read_text().replace('"standby"', '"active/optimized"'))
            running.append(
                await trio.to_thread.run_sync(
                    functools.partial(start_daemon, cfg, host=HOST, port=port, target=TARGET)
                )
            )
        try:
            argv = [
                "iscsi-test-cu", "-d", "-n", "--test=ALL.MultipathIO",
                f"iscsi://{HOST}:{port_a}/{TARGET}/0", f"iscsi://{HOST}:{port_b}/{TARGET}/0",
            ]  # fmt: skip
            done = await trio.run_process(argv, capture_stdout=True, check=False)
        finally:
            for proc, info in running:
                await trio.to_thread.run_sync(stop_daemon, proc, info)
    out = done.stdout.decode(errors="replace")
    assert "found matching LU device identifier for all (2) paths" in out, out[-3000:]
    summary = re.search(r"tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out)
    assert summary is not None, out[-3000:]
    # Simple, Reset, CompareAndWrite, CompareAndWriteAsync: all ran, all passed
    assert summary.groups() == ("4", "4", "4", "0"), out[-3000:]
