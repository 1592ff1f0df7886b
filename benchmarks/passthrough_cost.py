"""CPU per forwarded command of a ``passthrough`` device, A/B between trees.

``make bench``'s passthrough rows give wall-clock ratios, which a shared
2-CPU machine moves by more than a change to the forwarding path costs. This
script measures what the change is about: the pyscst process's CPU time
(utime + stime from /proc) per command it forwards, and tgt's, while the same
iscsi-perf / qemu-img load runs through pyscst's LUN 6 (``passthrough`` to
tgt's disk LUN). Both targets are pinned to CPU 1 and the client to CPU 0, as
in ``make bench``. Each tree given runs in turn, alternating, ``--rounds``
times::

    .venv/bin/python benchmarks/passthrough_cost.py [--tree DIR ...] [--only KEY,...]

``--tree DIR`` puts DIR (a directory holding a ``pyscst`` package tree laid
out as installed: pyscst/actors, pyscst/devices, ...) first on PYTHONPATH of
the daemon; without any, the installed (this checkout's) package runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs

import scenarios
import targets
from procstat import cpu_seconds

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int, field: int) -> int:
    """Field ``field`` (as numbered in proc(5)) of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    return int(raw[raw.rindex(")") + 2 :].split()[field - 3])


def sys_seconds(pid: int) -> float:
    """System CPU seconds of every thread of ``pid`` so far (the kernel's
    share: system calls, the loopback's TCP)."""
    return _stat(pid, 15) / _CLK_TCK


def minor_faults(pid: int) -> int:
    """Minor page faults of ``pid`` so far (fresh memory touched: a new
    large buffer faults in page by page)."""
    return _stat(pid, 10)

CLIENT_CPU = 0
TARGET_CPU = 1
KEYS = ("pt_rr4k_qd32", "pt_sr128k_qd16", "pt_sw128k_qd16")


def measure(
    scenario: scenarios.Scenario, url: str, pids: dict[str, int], seconds: float, count: int
) -> tuple[float, dict[str, float]]:
    """(commands per second, {process: CPU µs per command}) of one run."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    sys_before = {name: sys_seconds(pid) for name, pid in pids.items()}
    flt_before = {name: minor_faults(pid) for name, pid in pids.items()}
    run = scenarios.run_client(scenario, url, seconds=seconds, block_size=512,
                               pin=targets.pin_prefix(CLIENT_CPU), count=count)  # fmt: skip
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    used |= {f"{name}-sys": sys_seconds(pid) - sys_before[name] for name, pid in pids.items()}
    # (faults per command, printed as if µs: scaled to come out of the 1e6 below as they are)
    used |= {f"{name}-faults": (minor_faults(pid) - flt_before[name]) / 1e6
             for name, pid in pids.items()}  # fmt: skip
    return run.iops, {name: 1e6 * cpu / max(1, run.commands) for name, cpu in used.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", default=[], help="PYTHONPATH dir of a tree")
    p.add_argument("--only", default=",".join(KEYS))
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--direct", action="store_true", help="also run the load on tgt directly")
    p.add_argument("--cprofile", default="", help="run the daemon under cProfile, to this file")
    p.add_argument("--perf", default="", help="perf record of the daemon to this file")
    p.add_argument("--strace", default="", help="strace -c of the daemon to this file")
    p.add_argument("--spy", default="", help="py-spy raw profile of the daemon to this file "
                   "(more py-spy options in $SPY_ARGS, e.g. --gil for on-CPU samples only) "
                   "(its CPU figures then include py-spy's sampling)")
    args = p.parse_args()
    known = dict(scenarios.SCENARIOS_BY_KEY)
    # (not a make bench row: forwarding latency, one command at a time)
    known["pt_rr4k_qd1"] = attrs.evolve(known["pt_rr4k_qd32"], key="pt_rr4k_qd1",
                                        title="passthrough 4K rand read QD1", depth=1)
    chosen = [known[k] for k in args.only.split(",") if k]
    trees: list[str | None] = list(args.tree) or [None]
    print(f"load: {os.getloadavg()}", flush=True)
    results: dict[tuple[str, str], list[tuple[float, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        workdir = Path(tmp)
        with targets.run_tgt("tgt", workdir, TARGET_CPU) as tgt:
            backend = tgt.url("disk")
            for _ in range(args.rounds):
                for index, tree in enumerate(trees):
                    label = f"py{index}"
                    env = f"PYTHONPATH={tree}" if tree else "PYSCST_TREE=installed"
                    profile = ["-m", "cProfile", "-o", f"{args.cprofile}.{index}"]
                    command = ["env", env, sys.executable, "-P",
                               *(profile if args.cprofile else []), "-m", "pyscst", "serve",
                               "--config"]  # fmt: skip
                    with targets.run_pyscst(label, workdir, TARGET_CPU, command,
                                            backend=backend) as py:  # fmt: skip
                        spy = None
                        if args.spy:
                            spy = subprocess.Popen([
                                str(Path(sys.executable).parent / "py-spy"), "record",
                                *os.environ.get("SPY_ARGS", "").split(),  # e.g. --gil
                                "-r", "200", "-f", "raw", "-o", f"{args.spy}.{index}", "--pid",
                                str(py.pid), "-d", str(int(args.seconds * len(chosen)) + 2),
                            ], stdout=subprocess.DEVNULL)  # fmt: skip
                        if args.perf:
                            spy = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o",
                                                    f"{args.perf}.{index}", "-p", str(py.pid)],
                                                   stderr=subprocess.DEVNULL)  # fmt: skip
                        if args.strace:
                            spy = subprocess.Popen(["strace", "-c", "-f", "-o",
                                                    f"{args.strace}.{index}", "-p", str(py.pid)])
                        for sc in chosen:
                            count = 10000 if sc.size > 16384 else 200000
                            count = int(count * args.seconds / 4)
                            result = measure(sc, py.url("passthrough"),
                                             {"pyscst": py.pid, "tgt": tgt.pid},
                                             args.seconds, count)  # fmt: skip
                            results.setdefault((str(tree), sc.key), []).append(result)
                            print(f"{tree or 'installed'} {sc.key}: {result[0]:.0f}/s "
                                  + " ".join(f"{k} {v:.1f} µs" for k, v in result[1].items()),
                                  flush=True)  # fmt: skip
                        if spy is not None:
                            if args.strace or args.perf:
                                spy.send_signal(2)
                            spy.wait()
                if args.direct:
                    for sc in chosen:
                        count = int((10000 if sc.size > 16384 else 200000) * args.seconds / 4)
                        result = measure(sc, tgt.url("disk"), {"tgt": tgt.pid}, args.seconds,
                                         count)  # fmt: skip
                        results.setdefault(("direct", sc.key), []).append(result)
                        print(f"tgt direct {sc.key}: {result[0]:.0f}/s "
                              f"tgt {result[1]['tgt']:.1f} µs", flush=True)
    print(f"load: {os.getloadavg()}")
    print("\nmedians:")
    for (tree, key), runs in results.items():
        rate = statistics.median(r[0] for r in runs)
        cpu = {n: statistics.median(r[1][n] for r in runs) for n in runs[0][1]}
        print(f"  {tree:30} {key:16} {rate:9.0f}/s  "
              + "  ".join(f"{n} {v:6.1f} µs/cmd" for n, v in cpu.items()))  # fmt: skip


if __name__ == "__main__":
    main()
