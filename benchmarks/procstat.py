"""Per-process CPU time and memory from /proc, the only costs we compare.

Both targets are measured from outside the same way (utime+stime and VmRSS of
the whole thread group), so neither needs to cooperate with the harness.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from types import TracebackType

import attrs

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by every thread of `pid`."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / _CLK_TCK


def status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` now, in KiB."""
    return status_kib(pid, "VmRSS")


@attrs.frozen
class RssSample:
    """One RSS reading, seconds since the sampler started."""

    at: float
    kib: int


class RssSampler:
    """Samples a process's RSS on a background thread while a `with` block runs.

    The thread only reads /proc and appends to a list it alone writes until
    `__exit__` joins it, so no lock is needed.
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = 0.0
        self.samples: list[RssSample] = []

    def _run(self) -> None:
        while True:
            try:
                kib = rss_kib(self._pid)
            except (OSError, KeyError):
                return  # the process is gone
            self.samples.append(RssSample(time.monotonic() - self._start, kib))
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> RssSampler:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak_kib(self) -> int:
        return max((s.kib for s in self.samples), default=0)


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs)."""
    return _cpu_jiffies()[0] / _CLK_TCK


def children_cpu_seconds() -> float:
    """CPU seconds of our waited-for child processes (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_cpus(interval: float = 1.0) -> float:
    """How many CPUs' worth of work the whole machine did over `interval` seconds."""
    busy0, total0 = _cpu_jiffies()
    time.sleep(interval)
    busy1, total1 = _cpu_jiffies()
    cpus = os.cpu_count() or 1
    return cpus * (busy1 - busy0) / max(1, total1 - total0)
