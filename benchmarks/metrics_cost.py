"""What Prometheus scraping costs the datapath (issue 12), measured, not assumed.

Starts ``pyscst serve`` with ``[metrics] listen`` on a null LUN (the pure
datapath: the highest command rate, so any cost shows most) and runs
``iscsi-perf`` 4 KiB random reads at QD 32, alternately with no scraper and
with a scraper that GETs ``/metrics`` every second (Prometheus' 15 s default
is 15x gentler), ABBA order over several rounds, and reports median IOPS of
each, their difference, and how long one scrape takes. The target is pinned
to CPU 1 and the clients to CPU 0 when taskset exists. A script, never a
timed test::

    .venv/bin/python benchmarks/metrics_cost.py [--rounds N] [--duration S] [--interval S]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = "iqn.2026-11.org.pyscst:metrics-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


class Scraper(threading.Thread):
    """GET /metrics every ``interval`` seconds until stopped; records durations."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.durations: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as reply:
                reply.read()
            self.durations.append(time.perf_counter() - start)
            self.stop.wait(self.interval)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def perf(url: str, seconds: int) -> int:
    argv = pinned(0, ["iscsi-perf", "-m", "32", "-b", "8", "-t", str(seconds), "-r", url])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    averages = re.findall(r"iops average (\d+)", out)
    if not averages:
        raise SystemExit(f"iscsi-perf gave no result:\n{out[-500:]}")
    return int(averages[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    if shutil.which("iscsi-perf") is None:
        raise SystemExit("needs iscsi-perf (apt-get install libiscsi-bin)")
    port, mport = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="pyscst-mcost-"))
    config = work / "pyscst.toml"
    config.write_text(
        f'state_dir = "{work}"\nlog_level = "warning"\n'
        f'[metrics]\nlisten = "127.0.0.1:{mport}"\n'
        '[devices.null0]\nhandler = "vdisk_nullio"\nsize = "1G"\n'
        f'[targets."{TARGET}"]\nportals = ["127.0.0.1:{port}"]\n'
        'luns = [{ lun = 0, device = "null0" }]\n'
    )
    pyscst = Path(sys.executable).with_name("pyscst")
    daemon = subprocess.Popen(pinned(1, [str(pyscst), "serve", "--config", str(config)]))
    url = f"iscsi://127.0.0.1:{port}/{TARGET}/0"
    metrics_url = f"http://127.0.0.1:{mport}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(metrics_url, timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not come up") from None
                time.sleep(0.1)
        perf(url, 2)  # warm-up
        results: dict[bool, list[int]] = {False: [], True: []}
        cpu_us: dict[bool, list[float]] = {False: [], True: []}
        scrape_times: list[float] = []
        for n in range(args.rounds):
            for scraping in (False, True) if n % 2 == 0 else (True, False):
                scraper = Scraper(metrics_url, args.interval) if scraping else None
                if scraper:
                    scraper.start()
                cpu = cpu_seconds(daemon.pid)
                iops = perf(url, args.duration)
                cpu = cpu_seconds(daemon.pid) - cpu
                results[scraping].append(iops)
                cpu_us[scraping].append(cpu / (iops * args.duration) * 1e6)
                if scraper:
                    scraper.stop.set()
                    scraper.join()
                    scrape_times += scraper.durations
        # the daemon CPU one scrape costs, measured alone (idle datapath)
        idle_scrapes = 200
        cpu = cpu_seconds(daemon.pid)
        for _ in range(idle_scrapes):
            urllib.request.urlopen(metrics_url, timeout=5).read()
        per_scrape_ms = (cpu_seconds(daemon.pid) - cpu) / idle_scrapes * 1000
        off, on = statistics.median(results[False]), statistics.median(results[True])
        size = len(urllib.request.urlopen(metrics_url, timeout=5).read())
        print(f"iscsi-perf 4K random read QD32, null LUN, {args.rounds} rounds x "
              f"{args.duration} s, ABBA")
        print(f"  no scraper          median {off:9.0f} IOPS  {sorted(results[False])}")
        print(f"  scrape every {args.interval:g} s   median {on:9.0f} IOPS  "
              f"{sorted(results[True])}")
        print(f"  difference          {(on - off) / off:+.2%}")
        c_off, c_on = statistics.median(cpu_us[False]), statistics.median(cpu_us[True])
        print(f"  daemon CPU per command: {c_off:.2f} us without, {c_on:.2f} us with the "
              f"scraper ({(c_on - c_off) / c_off:+.2%})")
        print(f"  daemon CPU per scrape (idle, {idle_scrapes} scrapes): {per_scrape_ms:.2f} ms "
              f"= {per_scrape_ms / 10 / args.interval:.3f} % of one CPU at one scrape "
              f"per {args.interval:g} s")
        print(f"  one scrape (GET, {size} bytes): median "
              f"{statistics.median(scrape_times) * 1000:.2f} ms, "
              f"max {max(scrape_times) * 1000:.2f} ms over {len(scrape_times)} scrapes")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
