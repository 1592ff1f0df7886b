"""libiscsi conformance: the real daemon against iscsi-test-cu, held to expectations.

The end-to-end test runs the whole ``ALL`` family on a writable LUN,
``ALL.ReadOnly`` on a LUN mapped read-only, ``ALL.MultipathIO`` over two
sessions, the PREVENT ALLOW / START STOP UNIT families on a removable disk and
the WRITE SAME / COMPARE AND WRITE families on a disk with 4096-byte physical
blocks (what ``ALL`` skips on the plain disk), then fails on any test that did
worse than tests/conformance/libiscsi-expected.txt says. The other tests pin
down the harness itself (output parsing, comparison, the update rule) on real
iscsi-test-cu output captured from tgtd, and, where tgtd can run, live.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import expectations as ex
from tests.conformance.outcomes import Outcome, TestResult, parse_output, totals
from tests.conformance.runner import (
    RUN_READONLY,
    RUNS,
    RUNS_ALUA,
    Run,
    collect,
    find_tool,
    list_tests,
    results_dir,
    run_suite,
)
from tests.conformance.update import main as update_main
from tests.daemon import (
    alua_portals,
    free_ports,
    running_daemon,
    start_daemon,
    stop_daemon,
    write_config,
)

HERE = Path(__file__).resolve().parent
SAMPLE_ALL = (HERE / "sample-tgt-all.log").read_text()
SAMPLE_READONLY = (HERE / "sample-tgt-readonly.log").read_text()

CONFORMANCE_DEVICES: dict[str, dict[str, Any]] = {
    "disk0": {"handler": "vdisk_fileio", "size": "128MiB"},
    "disk1": {"handler": "vdisk_fileio", "size": "16MiB"},
    "rdisk": {"handler": "vdisk_fileio", "size": "16MiB", "removable": True},
    "pdisk": {"handler": "vdisk_fileio", "size": "64MiB", "physical_block_size": 4096},
}
CONFORMANCE_LUNS = (
    {"lun": 0, "device": "disk0"},
    {"lun": 1, "device": "disk1", "read_only": True},
    {"lun": 2, "device": "rdisk"},
    {"lun": 3, "device": "pdisk"},
)


# --- parsing real iscsi-test-cu output ---------------------------------------


def test_parse_real_output_outcomes() -> None:
    results = parse_output(SAMPLE_ALL)
    got = {name: r.outcome for name, r in results.items()}
    assert got["ALL.GetLBAStatus.Simple"] is Outcome.PASS
    assert got["ALL.GetLBAStatus.BeyondEol"] is Outcome.FAIL
    assert got["ALL.GetLBAStatus.UnmapSingle"] is Outcome.SKIP  # CUnit says "passed"
    assert got["ALL.Inquiry.BlockLimits"] is Outcome.SKIP
    assert got["ALL.Reserve6.2Initiators"] is Outcome.FAIL
    assert got["ALL.Reserve6.Logout"] is Outcome.PASS
    assert got["ALL.Reserve6.TargetColdReset"] is Outcome.SKIP
    # verdict first, then stray output from the next setup: still a pass
    assert got["ALL.Reserve6.LUNReset"] is Outcome.PASS
    assert len(results) == 3 + 7 + 7


def test_parse_reasons_and_logs() -> None:
    results = parse_output(SAMPLE_ALL)
    skipped = results["ALL.Inquiry.BlockLimits"]
    assert skipped.reason == "Logical unit is fully provisioned. Skipping test"
    failed = results["ALL.GetLBAStatus.BeyondEol"]
    assert "LBA_OUT_OF_RANGE" in failed.reason
    assert "test_get_lba_status_beyond_eol.c:38" in failed.log
    assert "2Initiators" not in results["ALL.Reserve6.Logout"].log


def test_failure_wins_over_skip_markers() -> None:
    results = parse_output(SAMPLE_READONLY, suffix="[readonly]")
    result = results["ALL.ReadOnly.ReadOnlySBC[readonly]"]
    assert result.outcome is Outcome.FAIL
    assert "WRITESAME10" in result.reason


def test_truncated_output_is_error_and_missing_tests_reported() -> None:
    cut = SAMPLE_ALL.index("FAILED\n    1. test_reserve6")
    results = parse_output(SAMPLE_ALL[:cut])
    assert results["ALL.Reserve6.2Initiators"].outcome is Outcome.ERROR
    assert results["ALL.Reserve6.Simple"].outcome is Outcome.PASS
    assert "ALL.Reserve6.Logout" not in results
    from tests.conformance.runner import RunOutput

    output = RunOutput(SAMPLE_ALL[:cut], -15, Path("x.log"), killed_because="a test hung")
    merged = collect(output, ["ALL.Reserve6.Simple", "ALL.Reserve6.Logout"], "")
    assert merged["ALL.Reserve6.Logout"].outcome is Outcome.ERROR
    assert merged["ALL.Reserve6.2Initiators"].reason.startswith("killed: a test hung")


# --- expectations: compare and only move forward -----------------------------


def _result(name: str, outcome: Outcome) -> TestResult:
    return TestResult(name, outcome, log=f"log of {name}")


def test_compare_ranks_fail_below_skip_below_pass() -> None:
    expected = {"a": Outcome.PASS, "b": Outcome.SKIP, "c": Outcome.FAIL, "d": Outcome.SKIP}
    results = {
        "a": _result("a", Outcome.SKIP),  # regression
        "b": _result("b", Outcome.PASS),  # improvement
        "c": _result("c", Outcome.ERROR),  # same rank as FAIL: neither
        "e": _result("e", Outcome.PASS),  # not expected
    }  # d missing: regression (did not run)
    comparison = ex.compare(expected, results)
    assert [c.name for c in comparison.regressions] == ["a", "d"]
    assert [c.name for c in comparison.improvements] == ["b"]
    assert [r.name for r in comparison.unexpected] == ["e"]
    assert not comparison.ok
    text = ex.report(comparison, totals(results), Path("/tmp/r.txt"))
    assert "log of a" in text and "expected SKIP, got ERROR" in text
    assert "python -m tests.conformance.update /tmp/r.txt" in text


def test_advance_moves_forward_and_refuses_regressions() -> None:
    expected = {"a": Outcome.FAIL, "b": Outcome.SKIP}
    assert ex.advance(expected, {"a": Outcome.PASS, "b": Outcome.SKIP, "n": Outcome.ERROR}) == {
        "a": Outcome.PASS, "b": Outcome.SKIP, "n": Outcome.FAIL,
    }
    with pytest.raises(ex.ExpectationsError, match="b: expected SKIP, got FAIL"):
        ex.advance(expected, {"a": Outcome.PASS, "b": Outcome.FAIL})


def test_update_command_writes_forward_only(tmp_path: Path) -> None:
    expected_path = tmp_path / "expected.txt"
    expected_path.write_text(ex.format_expectations({"t.a": Outcome.FAIL, "t.b": Outcome.PASS}))
    good = tmp_path / "good.txt"
    good.write_text(ex.format_results([_result("t.a", Outcome.SKIP), _result("t.b", Outcome.PASS)]))
    assert update_main([str(good), "--expected", str(expected_path)]) == 0
    assert ex.read_outcomes(expected_path) == {"t.a": Outcome.SKIP, "t.b": Outcome.PASS}
    bad = tmp_path / "bad.txt"
    bad.write_text(ex.format_results([_result("t.a", Outcome.PASS), _result("t.b", Outcome.FAIL)]))
    before = expected_path.read_text()
    assert update_main([str(bad), "--expected", str(expected_path)]) == 1
    assert expected_path.read_text() == before


def test_checked_in_expectations_cover_every_listed_test() -> None:
    expected = ex.read_outcomes(ex.EXPECTED_PATH)
    tool = shutil.which("iscsi-test-cu")
    if tool is None:
        pytest.skip("iscsi-test-cu not installed")
    runs = (*RUNS, *RUNS_ALUA)
    listed = {n + run.suffix for run in runs for n in list_tests(tool, run.pattern)}
    assert listed == set(expected)


# --- live runs ---------------------------------------------------------------


def _tool_or_skip() -> str:
    tool = find_tool()
    if tool is None:
        pytest.skip("iscsi-test-cu (libiscsi-bin) is absent and we are not root to install it")
    return tool


@pytest.mark.skipif(shutil.which("tgtd") is None or os.geteuid() != 0,
                    reason="needs tgtd and root to validate the harness on a reference target")
def test_harness_against_reference_tgtd(tmp_path: Path) -> None:
    from tests.conformance.tgt import running_tgtd

    tool = _tool_or_skip()
    runs = (Run("inquiry", "ALL.Inquiry", lun=0), RUN_READONLY)
    with running_tgtd(tmp_path) as (port, target):  # tgt's disks start at LUN 1
        results = run_suite(tool, lambda lun: f"iscsi://127.0.0.1:{port}/{target}/{lun + 1}",
                            tmp_path, runs=runs)
    assert set(results) == set(list_tests(tool, "ALL.Inquiry")) | {
        "ALL.ReadOnly.ReadOnlySBC[readonly]"
    }
    assert results["ALL.Inquiry.Standard"].outcome is Outcome.PASS
    assert results["ALL.Inquiry.BlockLimits"].outcome is Outcome.SKIP  # tgt: no thin provisioning
    assert all(r.outcome is not Outcome.ERROR for r in results.values())


@pytest.mark.timeout(900)
def test_libiscsi_conformance(tmp_path: Path) -> None:
    tool = _tool_or_skip()
    out_dir = results_dir()
    with running_daemon(tmp_path, devices=CONFORMANCE_DEVICES, luns=CONFORMANCE_LUNS) as daemon:
        results = run_suite(tool, daemon.url, out_dir)
    results_path = out_dir / "results-latest.txt"
    results_path.write_text(ex.format_results(results.values()))
    comparison = ex.compare(_expected_for(tool, RUNS), results)
    summary = ex.report(comparison, totals(results), results_path)
    print(summary)
    assert comparison.ok, summary


def _expected_for(tool: str, runs: tuple[Run, ...]) -> dict[str, Outcome]:
    listed = {n + run.suffix for run in runs for n in list_tests(tool, run.pattern)}
    return {k: v for k, v in ex.read_outcomes(ex.EXPECTED_PATH).items() if k in listed}


@pytest.mark.timeout(600)
def test_libiscsi_over_two_alua_port_groups(tmp_path: Path) -> None:
    """One target, two portals, two port groups (active/optimized and
    active/non-optimized: both carry I/O): MultipathIO with one path through
    each target port, and INQUIRY / RSOC as ALUA changes them."""
    tool = _tool_or_skip()
    out_dir = results_dir()
    host = "127.0.0.1"
    port, port_b = free_ports(host, 2)
    target = "iqn.2026-11.org.pyscst:alua-conformance"
    config = write_config(
        tmp_path, port=port, host=host, target=target, devices=CONFORMANCE_DEVICES,
        luns=CONFORMANCE_LUNS,
        target_extra=alua_portals(
            host, (port, port_b), ("active/optimized", "active/non-optimized")
        ),
    )  # fmt: skip
    proc, daemon = start_daemon(config, host=host, port=port, target=target)
    try:
        results = run_suite(
            tool, daemon.url, out_dir, runs=RUNS_ALUA,
            second_url_for_lun=lambda lun: f"iscsi://{host}:{port_b}/{target}/{lun}",
        )  # fmt: skip
    finally:
        stop_daemon(proc, daemon)
    results_path = out_dir / "results-alua.txt"
    results_path.write_text(ex.format_results(results.values()))
    comparison = ex.compare(_expected_for(tool, RUNS_ALUA), results)
    summary = ex.report(comparison, totals(results), results_path)
    print(summary)
    assert comparison.ok, summary


# --- the same run on a CHAP-protected target -----------------------------------

CHAP_SECRET = "conformance-secret-1"
CHAP_TARGET_SECRET = "conformance-target-2"
CHAP_TARGET_USER = "iqn.2026-11.org.pyscst:conformance"
#: PYSCST_CONFORMANCE_CHAP=subset runs only these families with CHAP (the ones that
#: log in, out and again, with two initiator names and sessions): 29 s instead of the
#: full run's 68 s (measured on the 2-vCPU development VM; the full run is the default).
CHAP_SUBSET = (
    Run("chap-tmf", "ALL.iSCSITMF", lun=0),
    Run("chap-cmdsn", "ALL.iSCSIcmdsn", lun=0),
    Run("chap-reserve6", "ALL.Reserve6", lun=0),
    Run("chap-prout-register", "ALL.ProutRegister", lun=0),
    Run("chap-readonly", "ALL.ReadOnly", lun=1, suffix="[readonly]"),
    Run("chap-multipath", "ALL.MultipathIO", lun=0, suffix="[multipath]", multipath=True),
)


def _chap_runs() -> tuple[Run, ...]:
    if os.environ.get("PYSCST_CONFORMANCE_CHAP") == "subset":
        return CHAP_SUBSET
    return tuple(Run(f"chap-{r.label}", r.pattern, r.lun, r.suffix, r.multipath) for r in RUNS)


@pytest.mark.timeout(1800)
def test_libiscsi_conformance_with_mutual_chap(tmp_path: Path) -> None:
    """The same expectations hold when every login does mutual CHAP and only
    libiscsi's two initiator names may log in."""
    tool = _tool_or_skip()
    out_dir = results_dir()
    state = tmp_path / "state"
    state.mkdir()
    fd = os.open(state / "tgt.secret", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, CHAP_TARGET_SECRET.encode())
    os.close(fd)
    auth = {
        "initiators": ["iqn.2007-10.com.github:sahlberg:libiscsi:*"],
        "chap": [{"user": "alice", "secret": CHAP_SECRET}],
        "mutual": {"user": CHAP_TARGET_USER, "secret_file": "tgt.secret"},
    }
    runs = _chap_runs()
    with running_daemon(tmp_path, devices=CONFORMANCE_DEVICES, luns=CONFORMANCE_LUNS,
                        auth=auth, discovery_auth={"chap": auth["chap"]}) as daemon:
        def url(lun: int) -> str:
            return (f"iscsi://alice%{CHAP_SECRET}@{daemon.host}:{daemon.port}/{daemon.target}/"
                    f"{lun}?target_user={CHAP_TARGET_USER}&target_password={CHAP_TARGET_SECRET}")

        results = run_suite(tool, url, out_dir, runs=runs)
        log = daemon.stderr_text()
    results_path = out_dir / "results-chap.txt"
    results_path.write_text(ex.format_results(results.values()))
    listed = {n + run.suffix for run in runs for n in list_tests(tool, run.pattern)}
    expected = {k: v for k, v in ex.read_outcomes(ex.EXPECTED_PATH).items() if k in listed}
    comparison = ex.compare(expected, results)
    summary = ex.report(comparison, totals(results), results_path)
    print(summary)
    assert comparison.ok, summary
    assert "CHAP refused" not in log  # every login authenticated
    assert CHAP_SECRET not in log and CHAP_TARGET_SECRET not in log


# --- the ALL run on vdisk_blockio (O_DIRECT) over a real loop device --------------

#: SANITIZE BLOCK ERASE over a raw block device: the erase (BLKZEROOUT) finishes at
#: once and GET LBA STATUS still reports the blocks mapped, so libiscsi's BlockErase
#: and Reset (which expects the sanitize still in progress) fail. Open in issue 13.
BLOCKIO_KNOWN_FAILURES = frozenset({"ALL.Sanitize.BlockErase", "ALL.Sanitize.Reset"})


@pytest.mark.timeout(900)
def test_libiscsi_all_on_blockio_loop_device(tmp_path: Path) -> None:
    """``ALL`` on a vdisk_blockio LUN over /dev/loopN: no FAIL, and nothing worse
    than the expectations the page-cache disk is held to."""
    from tests.loopdev import loop_device

    tool = _tool_or_skip()
    out_dir = results_dir()
    with loop_device(128 << 20) as dev:
        devices = {"disk0": {"handler": "vdisk_blockio", "size": "128MiB", "path": str(dev)}}
        with running_daemon(tmp_path, devices=devices, luns=({"lun": 0, "device": "disk0"},),
                            extra={"allowed_dirs": ["/dev"]}) as daemon:
            results = run_suite(tool, daemon.url, out_dir,
                                runs=(Run("blockio-all", "ALL", lun=0),))
    results_path = out_dir / "results-blockio.txt"
    results_path.write_text(ex.format_results(results.values()))
    listed = set(list_tests(tool, "ALL")) - BLOCKIO_KNOWN_FAILURES
    expected = {k: v for k, v in ex.read_outcomes(ex.EXPECTED_PATH).items() if k in listed}
    comparison = ex.compare(expected, {k: v for k, v in results.items() if k in listed})
    summary = ex.report(comparison, totals(results), results_path)
    print(summary)
    failed = sorted(n for n, r in results.items() if r.outcome is Outcome.FAIL)
    # nothing fails beyond the known gaps (Reset depends on timing: it may pass)
    assert set(failed) <= BLOCKIO_KNOWN_FAILURES, summary
    assert "ALL.Sanitize.BlockErase" in failed, "BLOCK ERASE fixed? take it off the list"
    assert comparison.ok, summary
