"""What cluster mode costs (issue 16), measured: the datapath, and a PERSISTENT RESERVE OUT.

Starts a private etcd, one single-node ``pyscst serve`` and two cluster nodes
(A and B, same null LUN), all on loopback, and alternates (ABBA) between the
single node and node A:

* 4 KiB random reads at QD 32 with ``iscsi-perf``, and 4 KiB random writes at
  QD 32 with the project's initiator: IOPS and the daemon's CPU per command
  (utime+stime from /proc, the figure that holds on a loaded machine);
* PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY, a new key each
  time, one at a time): wall-clock latency median/p90, and daemon CPU each.
  On a cluster node it is a compare-and-swap txn plus the wait until node B
  acknowledged the revision (B's watch, B's ack put, A's watch).

The target processes are pinned to CPU 1 and the clients to CPU 0 when taskset
exists. A script, never a timed test::

    .venv/bin/python benchmarks/cluster_cost.py [--rounds N] [--duration S] [--prouts N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from metrics_cost import perf
from procstat import cpu_seconds
from pyscst.transports.iscsi.initiator import Initiator
from targets import free_port, pin_prefix

TARGET = "iqn.2026-11.org.pyscst:cluster-bench"
INITIATOR = "iqn.2026-11.org.pyscst:bench-client"
BLOCKS = 1 << 21  # 1 GiB of 512-byte blocks
#: issue 16: cluster mode at least this share of a single node's IOPS
GOAL = 0.9


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return [*pin_prefix(cpu if (os.cpu_count() or 1) > 1 else None), *argv]


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def start_etcd(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    client, peer = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    proc = subprocess.Popen(
        ["etcd", "--name", "bench", "--data-dir", str(work / "etcd"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"bench={peer_url}", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            if b"true" in urllib.request.urlopen(url + "/health", timeout=0.5).read():
                return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("etcd did not start")
        time.sleep(0.1)


def start_daemon(work: Path, name: str, cluster: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    state = work / name
    state.mkdir()
    (state / "pyscst.toml").write_text(
        f'state_dir = "{state}"\nlog_level = "warning"\n{cluster}'
        '[devices.null0]\nhandler = "vdisk_nullio"\nsize = "1G"\n'
        f'[targets."{TARGET}"]\nportals = ["127.0.0.1:{port}"]\n'
        'luns = [{ lun = 0, device = "null0" }]\n'
    )
    pyscst = Path(sys.executable).with_name("pyscst")
    proc = subprocess.Popen(
        pinned(1, [str(pyscst), "serve", "--config", str(state / "pyscst.toml")])
    )
    wait_port(port, proc)
    return proc, port


def read_perf(port: int, seconds: int) -> int:
    return perf(f"iscsi://127.0.0.1:{port}/{TARGET}/0", seconds)


@contextlib.asynccontextmanager
async def _login(port: int, isid: int) -> AsyncIterator[Initiator]:
    async with await Initiator.connect(
        "127.0.0.1", port, initiator_name=INITIATOR, target_name=TARGET, isid=isid
    ) as ini:
        for _ in range(5):
            if (await ini.execute(0, bytes(6))).status == 0:
                break
        yield ini


async def _write_perf(port: int, seconds: float) -> int:
    data = bytes(4096)
    done = 0
    rng = random.Random(1)
    deadline = trio.current_time() + seconds

    async def worker() -> None:
        nonlocal done
        while trio.current_time() < deadline:
            lba = rng.randrange(BLOCKS // 8) * 8
            cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, 8, 0)
            result = await ini.execute(0, cdb, data_out=data)
            if result.status != 0:
                raise SystemExit(f"write failed: {result}")
            done += 1

    async with _login(port, 0x23D000000031) as ini, trio.open_nursery() as nursery:
        for _ in range(32):
            nursery.start_soon(worker)
    return int(done / seconds)


async def _prouts(port: int, count: int, isid: int) -> list[float]:
    times = []
    async with _login(port, isid) as ini:
        for n in range(count):
            params = struct.pack(">QQ4xBx2x", 0, 0x1000 + n, 0)
            cdb = struct.pack(">BBBHIB", 0x5F, 6, 0, 0, len(params), 0)
            start = time.perf_counter()
            result = await ini.execute(0, cdb, data_out=params)
            times.append(time.perf_counter() - start)
            if result.status != 0:
                raise SystemExit(f"PROUT failed: {result}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--prouts", type=int, default=200)
    args = parser.parse_args()
    for tool in ("iscsi-perf", "etcd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (make tools)")
    work = Path(tempfile.mkdtemp(prefix="pyscst-ccost-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        etcd, url = start_etcd(work)
        procs.append(etcd)

        def cluster(node: str) -> str:
            return f'[cluster]\netcd = ["{url}"]\nnode = "{node}"\nlease_ttl = 10\n'

        single, port_s = start_daemon(work, "single", "")
        node_a, port_a = start_daemon(work, "a", cluster("a"))
        node_b, _port_b = start_daemon(work, "b", cluster("b"))
        procs += [single, node_a, node_b]
        modes = {"single": (single, port_s), "cluster": (node_a, port_a)}
        read_perf(port_s, 1), read_perf(port_a, 1)  # warm-up
        iops: dict[tuple[str, str], list[int]] = {}
        cpu_us: dict[tuple[str, str], list[float]] = {}
        prout_ms: dict[str, list[float]] = {"single": [], "cluster": []}
        prout_cpu: dict[str, list[float]] = {"single": [], "cluster": []}
        for n in range(args.rounds):
            order = ("single", "cluster") if n % 2 == 0 else ("cluster", "single")
            for mode in order:
                proc, port = modes[mode]
                for kind in ("read", "write"):
                    before = cpu_seconds(proc.pid)
                    if kind == "read":
                        rate = read_perf(port, args.duration)
                    else:
                        rate = trio.run(_write_perf, port, float(args.duration))
                    used = cpu_seconds(proc.pid) - before
                    iops.setdefault((mode, kind), []).append(rate)
                    cpu_us.setdefault((mode, kind), []).append(used / (rate * args.duration) * 1e6)
                before = cpu_seconds(proc.pid)
                times = trio.run(_prouts, port, args.prouts, 0x23D000000040 + n)
                prout_cpu[mode].append((cpu_seconds(proc.pid) - before) / args.prouts * 1e3)
                prout_ms[mode] += [t * 1e3 for t in times]
        print(f"cluster mode vs single node, null LUN, {args.rounds} rounds x "
              f"{args.duration} s, ABBA (node A of two; etcd on the same machine)")  # fmt: skip
        for kind in ("read", "write"):
            s, c = (statistics.median(iops[(m, kind)]) for m in ("single", "cluster"))
            cs, cc = (statistics.median(cpu_us[(m, kind)]) for m in ("single", "cluster"))
            print(f"  4K random {kind:5} QD32: single {s:8.0f} IOPS ({cs:.1f} us CPU/cmd), "
                  f"cluster {c:8.0f} IOPS ({cc:.1f} us CPU/cmd): {c / s:.2f}x IOPS, "
                  f"{cc / cs:.2f}x CPU per command")  # fmt: skip
            verdict = "met" if c / s >= GOAL else "NOT met (see the spread: noise?)"
            print(f"    IOPS goal >= {GOAL}x of single node: {verdict}")
            print(f"    per round: single {sorted(iops[('single', kind)])}, "
                  f"cluster {sorted(iops[('cluster', kind)])}")  # fmt: skip
        for mode in ("single", "cluster"):
            ms = sorted(prout_ms[mode])
            p90 = ms[int(len(ms) * 0.9)]
            print(f"  PERSISTENT RESERVE OUT ({mode:7}): median {statistics.median(ms):.2f} ms, "
                  f"p90 {p90:.2f} ms, daemon CPU {statistics.median(prout_cpu[mode]):.2f} ms "
                  f"({len(ms)} commands)")  # fmt: skip
    finally:
        for proc in reversed(procs):  # the daemons first, etcd last
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
