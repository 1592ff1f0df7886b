"""The workloads of issue 6 and the two load generators that drive them.

Reads go through libiscsi's `iscsi-perf` (bounded by its own timeout), writes
through `qemu-img bench -w` (bounded by a request count sized from a warm-up
run). Both print one summary we parse into commands completed and seconds, so
a scenario's result is comparable across targets whatever the tool.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

KIB = 1024
#: the streaming tape client (both targets get the same one)
TAPE_CLIENT = Path(__file__).resolve().parent / "tape_stream.py"
#: each target's cartridge holds this much (bytes); a run writes at most 90 % of it
TAPE_CAPACITY = 1 << 30


@attrs.frozen
class Scenario:
    """One workload: what to send, and what we compare it on."""

    key: str
    title: str
    tool: str  # "iscsi-perf" or "qemu-img"
    role: str  # which LUN: "disk" or "null"
    size: int  # bytes per command
    depth: int
    random: bool
    write: bool
    metric: str  # "iops" or "MB/s": what the ratio is computed on
    goal: float | None  # minimal pyscst/tgt ratio, None when informational
    #: qemu-img cache mode; "writethrough" makes every write FUA
    cache: str = "none"

    @property
    def cold(self) -> bool:
        """Runs on the disk-backed image with its page cache dropped first."""
        return self.role == "cold"

    @property
    def tape(self) -> bool:
        """Streams variable records to / from a tape drive (pyscst vtape vs tgt ssc)."""
        return self.role == "tape"

    @property
    def blockio(self) -> bool:
        """Runs on a loop device: pyscst's vdisk_blockio vs tgt's --bstype aio."""
        return self.role == "blockio"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("rr4k_qd1", "4K rand read QD1", "iscsi-perf", "disk", 4 * KIB, 1, True, False,
             "iops", 0.7),
    Scenario("rr4k_qd32", "4K rand read QD32", "iscsi-perf", "disk", 4 * KIB, 32, True, False,
             "iops", 0.8),
    Scenario("sr4k_qd32", "4K seq read QD32", "iscsi-perf", "disk", 4 * KIB, 32, False, False,
             "iops", None),
    Scenario("sr128k_qd16", "128K seq read QD16", "iscsi-perf", "disk", 128 * KIB, 16, False,
             False, "MB/s", 0.9),
    Scenario("sw4k_qd32", "4K seq write QD32", "qemu-img", "disk", 4 * KIB, 32, False, True,
             "iops", 0.8),
    Scenario("sw128k_qd16", "128K seq write QD16", "qemu-img", "disk", 128 * KIB, 16, False,
             True, "MB/s", 0.9),
    Scenario("rr4k_qd32_null", "4K rand read QD32 nullio", "iscsi-perf", "null", 4 * KIB, 32,
             True, False, "iops", None),
    # issue 17: a data-filled image on a disk filesystem, page cache dropped
    # before every run (and warm-up): every read misses, every write is FUA
    Scenario("cold_rr4k_qd1", "cold 4K rand read QD1", "iscsi-perf", "cold", 4 * KIB, 1,
             True, False, "iops", 1.0),
    Scenario("cold_rr4k_qd32", "cold 4K rand read QD32", "iscsi-perf", "cold", 4 * KIB, 32,
             True, False, "iops", 1.0),
    Scenario("cold_sr128k_qd16", "cold 128K seq read QD16", "iscsi-perf", "cold", 128 * KIB,
             16, False, False, "MB/s", 1.0),
    Scenario("cold_fw4k_qd32", "cold 4K FUA write QD32", "qemu-img", "cold", 4 * KIB, 32,
             False, True, "iops", 1.0, cache="writethrough"),
    # issue 13: direct I/O on one loop device (a data-filled file in /var/tmp):
    # pyscst vdisk_blockio vs tgt --bstype aio. Writes are sequential: neither
    # iscsi-perf (reads only) nor qemu-img bench (no random offsets) writes randomly.
    Scenario("blk_rr4k_qd32", "blockio 4K rand read QD32", "iscsi-perf", "blockio", 4 * KIB,
             32, True, False, "iops", 1.0),
    Scenario("blk_sw4k_qd32", "blockio 4K seq write QD32", "qemu-img", "blockio", 4 * KIB,
             32, False, True, "iops", 1.0),
    Scenario("blk_sr128k_qd16", "blockio 128K seq read QD16", "iscsi-perf", "blockio",
             128 * KIB, 16, False, False, "MB/s", 1.0),
    Scenario("blk_sw128k_qd16", "blockio 128K seq write QD16", "qemu-img", "blockio",
             128 * KIB, 16, False, True, "MB/s", 1.0),
    # issue 14: a backup streams 256 KiB variable records to a tape drive and a
    # restore reads them back, one command at a time: pyscst vtape vs tgt ssc,
    # both cartridges in the same tmpfs workdir
    Scenario("tape_sw256k", "tape 256K stream write", "tape", "tape", 256 * KIB, 1, False,
             True, "MB/s", 1.0),
    Scenario("tape_sr256k", "tape 256K stream read", "tape", "tape", 256 * KIB, 1, False,
             False, "MB/s", 1.0),
    # issue 15: pyscst's passthrough device forwarding to tgt's disk LUN, against
    # the same tgt LUN used directly (the baseline's "passthrough" role is it)
    Scenario("pt_rr4k_qd32", "passthrough 4K rand read QD32", "iscsi-perf", "passthrough",
             4 * KIB, 32, True, False, "iops", 0.7),
    Scenario("pt_sr128k_qd16", "passthrough 128K seq read QD16", "iscsi-perf", "passthrough",
             128 * KIB, 16, False, False, "MB/s", 0.7),
    Scenario("pt_sw128k_qd16", "passthrough 128K seq write QD16", "qemu-img", "passthrough",
             128 * KIB, 16, False, True, "MB/s", 0.7),
)  # fmt: skip

SCENARIOS_BY_KEY = {s.key: s for s in SCENARIOS}


class ClientError(RuntimeError):
    """The load generator failed or printed nothing we understand."""


@attrs.frozen
class ClientRun:
    """What one load-generator run achieved."""

    commands: int
    seconds: float
    size: int

    @property
    def iops(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0

    @property
    def mbps(self) -> float:
        """Decimal megabytes per second, as both tools print them."""
        return self.iops * self.size / 1e6

    def metric(self, name: str) -> float:
        return self.iops if name == "iops" else self.mbps


_PERF_AVERAGE = re.compile(r"iops average (\d+)")
_PERF_FAILURE = re.compile(r"(Login Failed|Failed|failed|ERROR|error)[^\r\n]*")
_QEMU_DONE = re.compile(r"Run completed in ([0-9.]+) seconds")


def parse_iscsi_perf(output: str, seconds: float, size: int) -> ClientRun:
    """iscsi-perf's last `iops average N` is the whole run's average."""
    averages = _PERF_AVERAGE.findall(output)
    if "finished." not in output or not averages:
        failure = _PERF_FAILURE.search(output)
        reason = failure.group(0) if failure else output.strip()[-300:]
        raise ClientError(f"iscsi-perf: {reason}")
    return ClientRun(round(int(averages[-1]) * seconds), seconds, size)


def parse_qemu_bench(output: str, count: int, size: int) -> ClientRun:
    """qemu-img bench times only the request loop, after connecting."""
    done = _QEMU_DONE.search(output)
    if done is None:
        raise ClientError(f"qemu-img bench: {output.strip()[-300:]}")
    return ClientRun(count, float(done.group(1)), size)


def run_bounded(argv: Sequence[str], timeout: float) -> str:
    """Run a client in its own process group; kill the group when over time."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ClientError(f"{argv[len(argv) - 1]}: no result within {timeout:.0f}s") from e
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return out.decode(errors="replace")


def iscsi_perf_argv(url: str, scenario: Scenario, seconds: int, block_size: int) -> list[str]:
    blocks = max(1, scenario.size // block_size)
    argv = ["iscsi-perf", "-m", str(scenario.depth), "-b", str(blocks), "-t", str(seconds)]
    if scenario.random:
        argv.append("-r")
    return [*argv, url]


def qemu_bench_argv(url: str, scenario: Scenario, count: int) -> list[str]:
    argv = ["qemu-img", "bench", "-f", "raw", "-t", scenario.cache, "-c", str(count),
            "-d", str(scenario.depth), "-s", str(scenario.size)]  # fmt: skip
    if scenario.write:
        argv.append("-w")
    return [*argv, url]


def run_client(
    scenario: Scenario,
    url: str,
    *,
    seconds: float,
    block_size: int,
    pin: Sequence[str] = (),
    count: int | None = None,
) -> ClientRun:
    """One bounded run of `scenario` against `url`.

    iscsi-perf runs for `seconds`; qemu-img bench sends `count` requests and is
    killed if that takes far longer than `seconds`.
    """
    if scenario.tool == "iscsi-perf":
        whole = max(1, round(seconds))
        out = run_bounded([*pin, *iscsi_perf_argv(url, scenario, whole, block_size)],
                           timeout=whole + 20)  # fmt: skip
        return parse_iscsi_perf(out, whole, scenario.size)
    if count is None:
        raise ValueError("qemu-img bench and the tape client need a request count")
    if scenario.tape:
        count = min(count, int(TAPE_CAPACITY * 0.9) // scenario.size)
        mode = "write" if scenario.write else "read"
        argv = [sys.executable, str(TAPE_CLIENT), mode, url, str(count), str(scenario.size)]
        out = run_bounded([*pin, *argv], timeout=seconds * 4 + 20)
        return parse_qemu_bench(out, count, scenario.size)
    out = run_bounded([*pin, *qemu_bench_argv(url, scenario, count)], timeout=seconds * 4 + 20)
    return parse_qemu_bench(out, count, scenario.size)


def calibrate_count(rate: float, seconds: float, lo: int = 1000, hi: int = 5_000_000) -> int:
    """Requests that should take about `seconds` at `rate` commands/s."""
    return max(lo, min(hi, int(rate * seconds)))


def warm_up(
    scenario: Scenario, url: str, *, seconds: float, block_size: int, pin: Sequence[str] = ()
) -> ClientRun:
    """A short unmeasured run: fills caches, and tells us the rate for counts."""
    if scenario.tool == "iscsi-perf":
        return run_client(scenario, url, seconds=max(1.0, seconds), block_size=block_size,
                          pin=pin)  # fmt: skip
    count = 500 if scenario.size > 16 * KIB else 2000
    start = time.monotonic()
    first = run_client(scenario, url, seconds=30, block_size=block_size, pin=pin, count=count)
    # One more sized from the first, so the estimate is not all connection setup.
    if time.monotonic() - start < seconds:
        count = calibrate_count(first.iops, seconds, lo=count)
        return run_client(scenario, url, seconds=seconds, block_size=block_size, pin=pin,
                          count=count)  # fmt: skip
    return first


def read_block_size(url: str, pin: Sequence[str] = ()) -> int:
    """The LUN's logical block size, from READ CAPACITY(16)."""
    out = run_bounded([*pin, "iscsi-readcapacity16", url], timeout=20)
    found = re.search(r"LOGICAL BLOCK LENGTH IN BYTES:\s*(\d+)", out)
    if found is None:
        raise ClientError(f"iscsi-readcapacity16 {url}: {out.strip()[-300:]}")
    return int(found.group(1))
