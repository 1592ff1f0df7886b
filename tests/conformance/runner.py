"""Run libiscsi's ``iscsi-test-cu`` against a target and collect per-test outcomes.

Three runs make up the suite: everything (``ALL``) against a read-write LUN
with destructive tests allowed, ``ALL.ReadOnly`` against a LUN mapped
read-only (those tests skip on a writable LUN), and ``ALL.MultipathIO`` with
two sessions to the same LUN (those skip with a single path). Each run is bounded twice: a
total deadline and an idle limit (no output for too long means a test hung,
typically waiting for a response we never sent); a killed run still yields
the outcomes of every test that finished, the rest count as ERROR.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from tests.conformance.outcomes import Outcome, TestResult, parse_output, parse_test_list

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = "iscsi-test-cu"
INITIATOR_1 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
INITIATOR_2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
TOTAL_TIMEOUT = float(os.environ.get("PYSCST_CONFORMANCE_TIMEOUT", "1800"))
IDLE_TIMEOUT = float(os.environ.get("PYSCST_CONFORMANCE_IDLE_TIMEOUT", "120"))


@attrs.frozen
class Run:
    """One iscsi-test-cu invocation: which tests, on which LUN, named how."""

    label: str
    pattern: str  # iscsi-test-cu --test
    lun: int
    suffix: str = ""  # appended to test names so runs do not collide
    multipath: bool = False  # give the LUN's URL twice: two sessions, one LU


RUN_ALL = Run("all", "ALL", lun=0)
RUN_READONLY = Run("readonly", "ALL.ReadOnly", lun=1, suffix="[readonly]")
RUN_MULTIPATH = Run("multipath", "ALL.MultipathIO", lun=0, suffix="[multipath]", multipath=True)
#: the tests ALL skips on a fixed disk ("not removable") run on a removable LUN
RUNS_REMOVABLE = (
    Run("removable-prevent", "ALL.PreventAllow", lun=2, suffix="[removable]"),
    Run("removable-startstop", "ALL.StartStopUnit", lun=2, suffix="[removable]"),
)
#: and those it skips for LBPPB < 2 on a LUN with 4096-byte physical blocks
RUNS_4K_PHYSICAL = (
    Run("4k-physical-caw", "ALL.CompareAndWrite", lun=3, suffix="[4k-physical]"),
    Run("4k-physical-ws10", "ALL.WriteSame10", lun=3, suffix="[4k-physical]"),
    Run("4k-physical-ws16", "ALL.WriteSame16", lun=3, suffix="[4k-physical]"),
)
RUNS = (RUN_ALL, RUN_READONLY, RUN_MULTIPATH, *RUNS_REMOVABLE, *RUNS_4K_PHYSICAL)
#: against a target with two portals in two ALUA port groups (test_libiscsi.py):
#: MultipathIO with its two paths through the two target ports, and the families
#: whose answers ALUA changes (INQUIRY's TPGS and VPD 0x83, RSOC's RTPG/STPG rows)
RUNS_ALUA = (
    Run("alua-multipath", "ALL.MultipathIO", lun=0, suffix="[alua]", multipath=True),
    Run("alua-inquiry", "ALL.Inquiry", lun=0, suffix="[alua]"),
    Run("alua-rsoc", "ALL.ReportSupportedOpcodes", lun=0, suffix="[alua]"),
)


@attrs.frozen
class RunOutput:
    text: str
    returncode: int | None
    log_path: Path
    killed_because: str | None = None


def results_dir() -> Path:
    """Where logs and results-latest.txt go (gitignored build dir unless overridden)."""
    path = Path(os.environ.get("PYSCST_CONFORMANCE_DIR", REPO_ROOT / "build" / "conformance"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_tool(install: bool = True) -> str | None:
    """Path of iscsi-test-cu; as root, apt-get install libiscsi-bin if missing."""
    found = shutil.which(TOOL)
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "libiscsi-bin"]):
        subprocess.run(args, env=env, check=False, capture_output=True, timeout=900)
    return shutil.which(TOOL)


def list_tests(tool: str, pattern: str) -> list[str]:
    """Every FAMILY.Suite.Test that ``--test pattern`` would run."""
    listing = subprocess.run(
        [tool, "--list"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    family = pattern.split(".")[0]
    names = parse_test_list(listing, family)
    if pattern == family:
        return names
    return [n for n in names if n == pattern or n.startswith(pattern + ".")]


def run_tool(
    tool: str,
    url: str,
    pattern: str,
    log_path: Path,
    *,
    total_timeout: float = TOTAL_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    dataloss: bool = True,
    multipath_url: str | None = None,
) -> RunOutput:
    """Run iscsi-test-cu, output line-buffered into ``log_path``; kill on a hang."""
    args = [tool, "-i", INITIATOR_1, "-I", INITIATOR_2, "--test", pattern]
    if dataloss:
        args.append("--dataloss")
        # SANITIZE runs only where destructive tests are allowed anyway
        args.append("--allow-sanitize")
    args.append(url)
    if multipath_url:
        args.append(multipath_url)
    if shutil.which("stdbuf"):  # keep output of a run we must kill, in order
        args = ["stdbuf", "-oL", "-eL", *args]
    started = time.monotonic()
    killed: str | None = None
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        last_size, last_change = -1, started
        while proc.poll() is None:
            time.sleep(0.25)
            now = time.monotonic()
            size = log_path.stat().st_size
            if size != last_size:
                last_size, last_change = size, now
            if now - started > total_timeout:
                killed = f"run exceeded {total_timeout:.0f}s"
            elif now - last_change > idle_timeout:
                killed = f"no output for {idle_timeout:.0f}s (a test hung)"
            if killed:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                break
    text = log_path.read_text(errors="replace")
    return RunOutput(text=text, returncode=proc.returncode, log_path=log_path,
                     killed_because=killed)


def collect(output: RunOutput, listed: list[str], suffix: str) -> dict[str, TestResult]:
    """Parsed outcomes plus an ERROR for each listed test that never finished."""
    results = parse_output(output.text, suffix=suffix)
    why = output.killed_because or f"did not run (iscsi-test-cu exit code {output.returncode})"
    for result in list(results.values()):
        if result.outcome is Outcome.ERROR and output.killed_because:
            results[result.name] = attrs.evolve(result, reason=f"killed: {why}")
    for name in listed:
        full = name + suffix
        if full not in results:
            results[full] = TestResult(full, Outcome.ERROR, why)
    return results


def run_suite(
    tool: str,
    url_for_lun: Callable[[int], str],
    out_dir: Path,
    runs: tuple[Run, ...] = RUNS,
    log: Callable[[str], None] = print,
    second_url_for_lun: Callable[[int], str] | None = None,
) -> dict[str, TestResult]:
    """Every run in ``runs``; logs land in ``out_dir``, results are merged. A
    multipath run's second path is ``second_url_for_lun`` (default: the same URL,
    a second session through the same port)."""
    results: dict[str, TestResult] = {}
    for run in runs:
        log_path = out_dir / f"iscsi-test-cu-{run.label}.log"
        url = url_for_lun(run.lun)
        log(f"running {TOOL} --test {run.pattern} on {url}; log: {log_path}")
        second = (second_url_for_lun or url_for_lun)(run.lun)
        output = run_tool(tool, url, run.pattern, log_path,
                          multipath_url=second if run.multipath else None)
        if output.killed_because:
            log(f"  killed: {output.killed_because}")
        results.update(collect(output, list_tests(tool, run.pattern), run.suffix))
    return results
