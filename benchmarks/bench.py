"""Benchmark pyscst against tgt on this machine, as issue 6 specifies.

Starts both targets on loopback (pinned to one CPU, clients to another),
alternates every scenario between them for several rounds, and reports
medians, spreads, pyscst/tgt ratios against the goals, target CPU per 100k
commands and RSS (idle, with 100 idle sessions, under load, optional soak).
The EXTENDED COPY row (pyscst only: tgt has no copy offload) times 1 GiB copied
inside pyscst against the initiator reading and writing it (copy_offload.py).
`--candidate tgt` benchmarks tgt against itself: the ratios then show the
harness's own noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import attrs

import chart
import copy_offload
import report
import scenarios
import sessions
import targets
import tools
from procstat import (
    RssSampler,
    busy_cpus,
    children_cpu_seconds,
    cpu_seconds,
    machine_busy_seconds,
    rss_kib,
)
from report import MemoryReport, RunRecord
from scenarios import Scenario
from targets import Endpoint

TARGET_CPU = 1
CLIENT_CPU = 0
SETTLE_S = 1.0
BUSY_WARN_CPUS = 0.15  # background load above this makes ratios noisy
#: where the cold rows' images go: a disk filesystem, never tmpfs
COLD_DIR = Path(os.environ.get("PYSCST_BENCH_COLD_DIR", "/var/tmp"))
#: --only's name for the EXTENDED COPY row
XCOPY_KEY = "xcopy"


@attrs.frozen
class Settings:
    """How this run was asked to go."""

    rounds: int
    duration: float
    warmup: float
    scenarios: tuple[Scenario, ...]
    candidate: str
    sessions: int
    soak: float
    pin: bool
    retry_noisy: int
    #: run the EXTENDED COPY row (pyscst as the candidate only)
    xcopy: bool = True


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="measured rounds (default 4)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--quick", action="store_true",
                   help="1 round of 2 s runs, 1 s warm-up: a smoke test under 2 minutes")
    p.add_argument("--only", default="",
                   help="comma-separated scenario keys: " + ", ".join(scenarios.SCENARIOS_BY_KEY)
                        + f", {XCOPY_KEY} (the EXTENDED COPY row)")
    p.add_argument("--candidate", choices=("pyscst", "tgt"), default="pyscst",
                   help="target compared with tgt; 'tgt' self-checks the harness")
    p.add_argument("--pyscst-cmd", default="",
                   help="argv prefix starting pyscst, the config path is appended; it runs "
                        "in the bench's work directory, so give absolute paths "
                        "(default: <venv>/bin/pyscst serve --config)")
    p.add_argument("--sessions", type=int, default=100, help="idle sessions for RSS (100)")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="also load the candidate this long, sampling RSS")
    p.add_argument("--retry-noisy", type=int, default=1, metavar="N",
                   help="redo a run up to N times when other programs used more than "
                        f"{report.NOISY_CPUS} CPU during it (default 1)")
    p.add_argument("--no-pin", action="store_true", help="do not taskset targets/clients")
    p.add_argument("--no-install", action="store_true", help="never apt-get missing tools")
    p.add_argument("--json", type=Path, help="JSON output (default bench-results/)")
    p.add_argument("--png", type=Path, help="PNG chart (default bench-results/)")
    return p.parse_args(argv)  # fmt: skip


def settings_from(args: argparse.Namespace) -> Settings:
    chosen = scenarios.SCENARIOS
    xcopy = args.candidate == "pyscst"
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        xcopy = xcopy and XCOPY_KEY in keys
        keys = [k for k in keys if k != XCOPY_KEY]
        unknown = [k for k in keys if k not in scenarios.SCENARIOS_BY_KEY]
        if unknown:
            raise SystemExit(f"unknown scenario(s) {unknown}; known: "
                             + ", ".join(scenarios.SCENARIOS_BY_KEY))  # fmt: skip
        chosen = tuple(scenarios.SCENARIOS_BY_KEY[k] for k in keys)
    rounds, duration, warmup = args.rounds, args.duration, min(2.0, args.duration)
    if args.quick:
        rounds, duration, warmup = 1, 2.0, 1.0
    if rounds < 1 or not 1 <= duration <= 120:
        raise SystemExit("--rounds must be >= 1 and --duration within 1..120 s")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    return Settings(rounds, duration, warmup, chosen, args.candidate,
                    max(0, args.sessions), max(0.0, args.soak), pin,
                    max(0, args.retry_noisy), xcopy)  # fmt: skip


def say(*parts: object) -> None:
    print(*parts, flush=True)


def _interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt so every target is torn down.

    SIGINT is set explicitly: a shell starting us in the background ignores it.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@attrs.frozen
class Outcome:
    """Everything one run measured, before it is summarized."""

    baseline: str
    candidate: str
    records: list[RunRecord]
    failures: list[dict[str, object]]
    discarded: list[RunRecord]
    memory: list[MemoryReport]
    soak: dict[str, object] | None
    copies: list[copy_offload.CopyResult] = attrs.field(factory=list)


class Bench:
    """One benchmark run: owns the endpoints' measurements until it returns."""

    def __init__(self, cfg: Settings, endpoints: list[Endpoint]) -> None:
        self.cfg = cfg
        self.endpoints = endpoints
        self.client_pin = targets.pin_prefix(CLIENT_CPU if cfg.pin else None)
        self.block_size: dict[tuple[str, str], int] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.records: list[RunRecord] = []
        self.failures: list[dict[str, object]] = []
        self.discarded: list[RunRecord] = []  # runs redone because of background load
        # Redos may add at most a quarter to the planned time, however noisy the machine.
        self.redos_left = cfg.rounds * len(cfg.scenarios) * len(endpoints) // 4

    def _check_alive(self, ep: Endpoint) -> None:
        if not os.path.exists(f"/proc/{ep.pid}"):
            raise targets.TargetError(f"{ep.label} (pid {ep.pid}) died")

    def probe(self) -> None:
        for ep in self.endpoints:
            for role in sorted({s.role for s in self.cfg.scenarios} & set(ep.luns)):
                # (a tape drive has no capacity to read: its records are variable)
                bs = 1 if role == "tape" else scenarios.read_block_size(ep.url(role),
                                                                         self.client_pin)
                self.block_size[ep.label, role] = bs
                say(f"  {ep.label}: {ep.url(role)} block size {bs}")

    def memory_with_sessions(self, ep: Endpoint) -> tuple[int, int]:
        """(RSS KiB, sessions still up) while `cfg.sessions` idle sessions are held."""
        host, port = ep.portal.rsplit(":", 1)
        with sessions.idle_sessions(host, int(port), ep.iqn, self.cfg.sessions) as held:
            time.sleep(2 * SETTLE_S)
            return rss_kib(ep.pid), held.alive()

    def warm_up(self) -> None:
        for sc in self.cfg.scenarios:
            for ep in self.endpoints:
                if sc.cold and ep.cold_image is not None:
                    targets.drop_cache(ep.cold_image)
                run = scenarios.warm_up(sc, ep.url(sc.role), seconds=self.cfg.warmup,
                                        block_size=self.block_size[ep.label, sc.role],
                                        pin=self.client_pin)  # fmt: skip
                if sc.tool in ("qemu-img", "tape"):
                    self.counts[ep.label, sc.key] = scenarios.calibrate_count(
                        run.iops, self.cfg.duration)
                say(f"  warm-up {sc.key:<15} {ep.label:<7} {run.iops:>10,.0f} IOPS")

    def measure(self, sc: Scenario, ep: Endpoint, rnd: int) -> None:
        """One measured run; a run disturbed by other load is redone (bounded)."""
        for attempt in range(1 + self.cfg.retry_noisy):
            rec = self._measure_once(sc, ep, rnd)
            if rec is None:
                return
            per100k = rec.cpu_per_100k or 0.0
            redo = (rec.background_cpus > report.NOISY_CPUS
                    and attempt < self.cfg.retry_noisy and self.redos_left > 0)  # fmt: skip
            say(f"  round {rnd} {sc.key:<15} {ep.label:<7} {rec.iops:>10,.0f} IOPS "
                f"{rec.mbps:>8.1f} MB/s  cpu {per100k:5.2f} s/100k  "
                f"rss {rec.rss_peak_kib / 1024:.1f} MiB  background {rec.background_cpus:.2f} CPU"
                + ("  (noisy, redoing)" if redo else ""))
            if not redo:
                self.records.append(rec)
                return
            self.redos_left -= 1
            self.discarded.append(rec)

    def _measure_once(self, sc: Scenario, ep: Endpoint, rnd: int) -> RunRecord | None:
        self._check_alive(ep)
        if sc.cold and ep.cold_image is not None:
            targets.drop_cache(ep.cold_image)  # (before the clocks start)
        before = cpu_seconds(ep.pid)
        machine_before, client_before = machine_busy_seconds(), children_cpu_seconds()
        started = time.monotonic()
        try:
            with RssSampler(ep.pid) as rss:
                run = scenarios.run_client(
                    sc, ep.url(sc.role), seconds=self.cfg.duration,
                    block_size=self.block_size[ep.label, sc.role], pin=self.client_pin,
                    count=self.counts.get((ep.label, sc.key)),
                )  # fmt: skip
        except scenarios.ClientError as e:
            self._check_alive(ep)
            self.failures.append({"scenario": sc.key, "target": ep.label, "round": rnd,
                                  "error": str(e)})  # fmt: skip
            say(f"  round {rnd} {sc.key:<15} {ep.label:<7} FAILED: {e}")
            return None
        cpu = cpu_seconds(ep.pid) - before
        client = children_cpu_seconds() - client_before
        window = time.monotonic() - started
        others = machine_busy_seconds() - machine_before - cpu - client
        background = max(0.0, others) / max(window, 1e-3)
        return RunRecord(sc.key, ep.label, rnd, run.commands, run.seconds, run.iops, run.mbps,
                         cpu, rss.peak_kib, client, background)  # fmt: skip

    def rounds(self) -> None:
        for rnd in range(1, self.cfg.rounds + 1):
            # ABBA order: drift (thermal, page cache) does not favour one target.
            order = self.endpoints if rnd % 2 else self.endpoints[::-1]
            for sc in self.cfg.scenarios:
                for ep in order:
                    self.measure(sc, ep, rnd)

    def copy_offload(self, ep: Endpoint) -> list[copy_offload.CopyResult]:
        """The EXTENDED COPY row, once per round: the disk LUN copied to the
        copy LUN inside the target, then by the client (pinned like the others)."""
        results = []
        for rnd in range(1, self.cfg.rounds + 1):
            self._check_alive(ep)
            argv = [*self.client_pin, sys.executable, str(Path(copy_offload.__file__)),
                    "--portal", ep.portal, "--iqn", ep.iqn, "--src", str(ep.luns["disk"]),
                    "--dst", str(ep.luns["copy"]), "--target-pid", str(ep.pid)]  # fmt: skip
            try:
                out = scenarios.run_bounded(argv, timeout=600)
                result = copy_offload.CopyResult(**{
                    k: v for k, v in json.loads(out.strip().splitlines()[-1]).items()
                    if k != "ratio"
                })  # fmt: skip
            except (scenarios.ClientError, ValueError, IndexError, TypeError) as e:
                self.failures.append({"scenario": XCOPY_KEY, "target": ep.label,
                                      "round": rnd, "error": str(e)})  # fmt: skip
                say(f"  round {rnd} {XCOPY_KEY:<15} {ep.label:<7} FAILED: {e}")
                continue
            say(f"  round {rnd} {XCOPY_KEY:<15} {ep.label:<7} in target {result.xcopy_s:.2f} s, "
                f"through the initiator {result.host_s:.2f} s ({result.ratio:.2f}x)")
            results.append(result)
        return results

    def soak(self, ep: Endpoint) -> dict[str, object]:
        """Load `ep` for cfg.soak seconds; RSS every few seconds should stay flat."""
        sc = scenarios.SCENARIOS_BY_KEY["rr4k_qd32"]
        interval = 2.0 if self.cfg.soak <= 120 else 5.0
        say(f"soak: {sc.title} on {ep.label} for {self.cfg.soak:.0f}s, RSS every {interval:.0f}s")
        with RssSampler(ep.pid, interval=interval) as rss:
            run = scenarios.run_client(sc, ep.url(sc.role), seconds=self.cfg.soak,
                                       block_size=self.block_size[ep.label, sc.role],
                                       pin=self.client_pin)  # fmt: skip
        kib = [s.kib for s in rss.samples]
        tenth = max(1, len(kib) // 10)
        start = statistics.median(kib[:tenth]) if kib else None
        end = statistics.median(kib[-tenth:]) if kib else None
        result: dict[str, object] = {
            "target": ep.label,
            "seconds": self.cfg.soak,
            "iops": run.iops,
            "samples": [[round(s.at, 1), s.kib] for s in rss.samples],
            "start_kib": start,  # median of the first tenth of the samples
            "end_kib": end,  # median of the last tenth
            "max_kib": max(kib, default=None),
        }
        if start is not None and end is not None:
            say(f"soak: RSS first {kib[0] / 1024:.1f} MiB, last {kib[-1] / 1024:.1f} MiB, "
                f"max {max(kib) / 1024:.1f} MiB, growth {(end - start) / 1024:+.1f} MiB "
                f"over {len(kib)} samples at {run.iops:,.0f} IOPS")  # fmt: skip
        return result


def run(cfg: Settings, workdir: Path, pyscst_cmd: Sequence[str] | None) -> Outcome:
    target_cpu = TARGET_CPU if cfg.pin else None
    candidate_label = "pyscst" if cfg.candidate == "pyscst" else "tgt-b"
    cold_dir = None
    if any(sc.cold for sc in cfg.scenarios):
        cold_dir = COLD_DIR / workdir.name
        cold_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if cold_dir is not None:
            stack.callback(shutil.rmtree, cold_dir, ignore_errors=True)
            say(f"cold rows: 1 GiB data-filled image each in {cold_dir}, page cache "
                "dropped (POSIX_FADV_DONTNEED) before every run")  # fmt: skip
        blockdev = None
        if any(sc.blockio for sc in cfg.scenarios):
            blk_dir = COLD_DIR / f"{workdir.name}-blockio"
            blk_dir.mkdir(parents=True, exist_ok=True)
            stack.callback(shutil.rmtree, blk_dir, ignore_errors=True)
            blockdev = stack.enter_context(targets.loop_device(blk_dir))
            say(f"blockio rows: {blockdev} over a 1 GiB data-filled file in {blk_dir}, "
                "shared by pyscst vdisk_blockio and tgt --bstype aio")  # fmt: skip
        say(f"starting targets in {workdir} (1 GiB pre-filled tmpfs image each)")
        tape = any(sc.tape for sc in cfg.scenarios)
        base = stack.enter_context(
            targets.run_tgt("tgt", workdir, target_cpu, cold_dir, blockdev, tape)
        )
        cand = stack.enter_context(
            targets.run_target(
                cfg.candidate, candidate_label, workdir, target_cpu, pyscst_cmd, cold_dir,
                blockdev, tape, copy=cfg.xcopy,
                backend=base.url("disk")
                if any(sc.role == "passthrough" for sc in cfg.scenarios) else None,
            )
        )
        endpoints = [base, cand]
        for ep in endpoints:
            say(f"  {ep.label}: pid {ep.pid} on {ep.portal}")
        bench = Bench(cfg, endpoints)
        bench.probe()
        time.sleep(SETTLE_S)
        idle = {ep.label: rss_kib(ep.pid) for ep in endpoints}
        with_sessions: dict[str, tuple[int, int]] = {}
        if cfg.sessions:
            for ep in endpoints:
                with_sessions[ep.label] = bench.memory_with_sessions(ep)
                say(f"  {ep.label}: RSS {with_sessions[ep.label][0] / 1024:.1f} MiB with "
                    f"{with_sessions[ep.label][1]}/{cfg.sessions} idle sessions")  # fmt: skip
            time.sleep(SETTLE_S)
        say("warm-up (not measured)")
        bench.warm_up()
        say(f"measuring: {cfg.rounds} round(s) x {len(cfg.scenarios)} scenario(s) x 2 targets, "
            f"{cfg.duration:.0f}s per run")  # fmt: skip
        bench.rounds()
        copies = bench.copy_offload(cand) if cfg.xcopy else []
        soak = bench.soak(cand) if cfg.soak else None
        time.sleep(SETTLE_S)
        memory = [
            MemoryReport(
                ep.label, idle[ep.label], cfg.sessions,
                with_sessions.get(ep.label, (0, 0))[1], with_sessions.get(ep.label, (0, 0))[0],
                max((r.rss_peak_kib for r in bench.records if r.target == ep.label), default=0),
                rss_kib(ep.pid),
            )
            for ep in endpoints
        ]
    return Outcome(base.label, cand.label, bench.records, bench.failures, bench.discarded,
                   memory, soak, copies)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings_from(args)
    _interrupt_on_signals()
    try:
        tools.ensure_tools(install=not args.no_install)
    except (tools.ToolError, OSError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    facts = tools.machine_facts()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = targets.REPO_ROOT / "bench-results"
    json_path = args.json or out_dir / f"bench-{stamp}.json"
    png_path = args.png or out_dir / f"bench-{stamp}.png"
    pinning = (f"targets on CPU {TARGET_CPU}, clients on CPU {CLIENT_CPU} (taskset)"
               if cfg.pin else "no CPU pinning")  # fmt: skip
    say(f"{facts['cpu_model']}, {facts['cpus']} CPUs, kernel {facts['kernel']}, "
        f"Python {facts['python']}, tgt {facts['tgt']}; {pinning}")  # fmt: skip

    background = busy_cpus(1.0)
    facts["background_busy_cpus"] = round(background, 2)
    if background > BUSY_WARN_CPUS:
        say(f"WARNING: the machine is already busy ({background:.2f} CPUs in use before we "
            "start); numbers will be noisy")  # fmt: skip
    workdir = Path("/dev/shm") / f"pyscst-bench-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=False)
    started = time.monotonic()
    try:
        result = run(cfg, workdir, shlex.split(args.pyscst_cmd) or None)
    except KeyboardInterrupt:
        print("bench: interrupted; targets stopped", file=sys.stderr)
        return 130
    except (targets.TargetError, scenarios.ClientError, sessions.LoginError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started

    base, cand, records, memory = result.baseline, result.candidate, result.records, result.memory
    comps = report.compare(cfg.scenarios, records, base, cand)
    say("")
    if comps:
        say(report.throughput_table(comps, base, cand))
        for note in (report.latency_note(comps, base, cand), report.background_note(records)):
            if note:
                say(note)
    if cfg.xcopy:
        say(copy_offload.summary(result.copies))
    if comps:
        say("")
        say(report.cpu_table(comps, base, cand))
    if cfg.sessions:
        say("")
        say(report.memory_table(memory, cand))
    say(f"\n{cfg.rounds} round(s), {cfg.duration:.0f}s runs, {pinning}; took {elapsed:.0f}s")

    document = {
        "machine": facts,
        "settings": {**attrs.asdict(cfg, recurse=False),
                     "scenarios": [s.key for s in cfg.scenarios], "pinning": pinning},
        "baseline": base,
        "candidate": cand,
        "elapsed_s": elapsed,
        "comparisons": [report.comparison_json(c) for c in comps],
        "memory": [attrs.asdict(m) for m in memory],
        "rss_goal_mib": report.RSS_GOAL_MIB,
        "soak": result.soak,
        "copy_offload": [c.as_json() for c in result.copies],
        "runs": [attrs.asdict(r) for r in records],
        "failures": result.failures,
        "discarded_noisy_runs": [attrs.asdict(r) for r in result.discarded],
    }  # fmt: skip
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    say(f"JSON: {json_path}")
    if chart.have_matplotlib() and comps:
        footer = (f"{facts['cpu_model']}, {facts['cpus']} CPUs, kernel {facts['kernel']}, "
                  f"Python {facts['python']}, tgt {facts['tgt']}; {pinning}; "
                  f"{cfg.rounds}x{cfg.duration:.0f}s rounds")  # fmt: skip
        chart.draw(comps, png_path, baseline=base, candidate=cand, footer=footer)
        say(f"PNG:  {png_path}")
    elif comps:
        say("PNG:  skipped (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
