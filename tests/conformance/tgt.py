"""The reference C target (tgtd) set up like our test daemon, to check the harness.

The harness must be proven against a target that works before it judges
pyscst: ``python -m tests.conformance.tgt`` starts a private tgtd (its own
control port, an ephemeral portal on 127.0.0.1, file-backed LUNs in a temp
dir: one read-write, one read-only), runs the same suite and prints the
comparison with our expectations. tgt's outcomes are a reference only, never
our expectations. Needs root (tgtd) and tgt installed.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conformance.expectations import EXPECTED_PATH, compare, format_results, read_outcomes
from tests.conformance.expectations import report as format_report
from tests.conformance.outcomes import totals
from tests.conformance.runner import find_tool, results_dir, run_suite
from tests.daemon import free_port

TARGET = "iqn.2026-11.org.pyscst:tgt-reference"


def _tgtadm(control_port: int, *args: str) -> None:
    subprocess.run(["tgtadm", "-C", str(control_port), "--lld", "iscsi", *args],
                   check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def running_tgtd(workdir: Path, size: int = 128 * 2**20) -> Iterator[tuple[int, str]]:
    """tgtd with LUN 1 read-write and LUN 2 read-only; yields (port, target).

    tgt puts its controller at LUN 0, so disks start at LUN 1.
    """
    port = free_port()
    control_port = random.randint(20000, 29999)
    log = (workdir / "tgtd.log").open("wb")
    proc = subprocess.Popen(
        ["tgtd", "-f", "-C", str(control_port), "--iscsi", f"portal=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _tgtadm(control_port, "--mode", "target", "--op", "show")
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        _tgtadm(control_port, "--mode", "target", "--op", "new", "--tid", "1",
                "--targetname", TARGET)
        for lun, name in ((1, "rw.img"), (2, "ro.img")):
            backing = workdir / name
            with backing.open("wb") as f:
                f.truncate(size)
            _tgtadm(control_port, "--mode", "logicalunit", "--op", "new", "--tid", "1",
                    "--lun", str(lun), "--backing-store", str(backing))
        _tgtadm(control_port, "--mode", "logicalunit", "--op", "update", "--tid", "1",
                "--lun", "2", "--params", "readonly=1")
        _tgtadm(control_port, "--mode", "target", "--op", "bind", "--tid", "1",
                "--initiator-address", "ALL")
        yield port, TARGET
    finally:
        with contextlib.suppress(subprocess.SubprocessError):  # tgtd's own clean shutdown
            _tgtadm(control_port, "--mode", "system", "--op", "delete", "--force")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def main() -> int:
    tool = find_tool()
    if tool is None or shutil.which("tgtd") is None:
        print("needs iscsi-test-cu and tgtd", file=sys.stderr)
        return 1
    out_dir = results_dir() / "tgt"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, running_tgtd(Path(tmp)) as (port, target):
        results = run_suite(tool, lambda lun: f"iscsi://127.0.0.1:{port}/{target}/{lun + 1}",
                            out_dir)
    results_path = out_dir / "results-tgt.txt"
    results_path.write_text(format_results(results.values()))
    comparison = compare(read_outcomes(EXPECTED_PATH), results)
    print(format_report(comparison, totals(results), results_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
