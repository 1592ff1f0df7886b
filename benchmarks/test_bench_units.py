"""Unit tests of the harness's parsing, arithmetic, login PDUs and EXTENDED COPY
parameter lists (no target needed)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bench
import copy_offload
import report
import scenarios
import sessions
import targets
from report import RunRecord, Spread
from tree_shim import shim_for

PERF_OUTPUT = (
    "iscsi-perf version 0.1\n\nconnected to iscsi://127.0.0.1:1/iqn.x/1\n"
    "capacity is 2097152 blocks or 1073741824 byte (1024 MB)\n"
    "performing RANDOM READ with 32 parallel requests\n"
    "FIXED transfer size of 8 blocks (4096 byte)\nwill run for 2 seconds.\n\n"
    "\r00:00:01 - lba 5, iops current 38845 (151 MB/s), iops average 38845 (151 MB/s), "
    "in_flight 32, busy 0        "
    "\riops average 36315 (141 MB/s)                        \n\nfinished.\n"
)


def test_iscsi_perf_takes_the_final_whole_run_average() -> None:
    run = scenarios.parse_iscsi_perf(PERF_OUTPUT, 2, 4096)
    assert run.commands == 2 * 36315
    assert run.iops == pytest.approx(36315)
    assert run.mbps == pytest.approx(36315 * 4096 / 1e6)


def test_iscsi_perf_login_failure_is_an_error_with_the_reason() -> None:
    out = "Login Failed. SENSE KEY:ILLEGAL_REQUEST(5) ASCQ:LOGICAL_UNIT_NOT_SUPPORTED\n"
    with pytest.raises(scenarios.ClientError, match="LOGICAL_UNIT_NOT_SUPPORTED"):
        scenarios.parse_iscsi_perf(out, 2, 4096)


def test_iscsi_perf_killed_before_finishing_is_an_error() -> None:
    truncated = PERF_OUTPUT.split("\riops average 36315")[0]
    with pytest.raises(scenarios.ClientError):
        scenarios.parse_iscsi_perf(truncated, 2, 4096)


def test_qemu_bench_rate_is_count_over_loop_time() -> None:
    out = (
        "Sending 50000 write requests, 4096 bytes each, 32 in parallel "
        "(starting at offset 0, step size 4096)\nRun completed in 2.500 seconds.\n"
    )
    run = scenarios.parse_qemu_bench(out, 50000, 4096)
    assert run.iops == pytest.approx(20000)
    assert run.mbps == pytest.approx(20000 * 4096 / 1e6)
    with pytest.raises(scenarios.ClientError):
        scenarios.parse_qemu_bench("qemu-img: Could not open 'iscsi://...'", 50000, 4096)


def test_client_argv_follow_the_scenario() -> None:
    sc = scenarios.SCENARIOS_BY_KEY["rr4k_qd32"]
    argv = scenarios.iscsi_perf_argv("iscsi://h/t/0", sc, 5, 512)
    assert argv[argv.index("-m") + 1] == "32"
    assert argv[argv.index("-b") + 1] == "8"
    assert "-r" in argv and argv[-1] == "iscsi://h/t/0"
    seq = scenarios.iscsi_perf_argv("u", scenarios.SCENARIOS_BY_KEY["sr128k_qd16"], 5, 4096)
    assert seq[seq.index("-b") + 1] == "32" and "-r" not in seq
    w = scenarios.qemu_bench_argv("u", scenarios.SCENARIOS_BY_KEY["sw128k_qd16"], 777)
    assert w[w.index("-c") + 1] == "777" and w[w.index("-s") + 1] == str(128 * 1024)
    assert "-w" in w and w[w.index("-d") + 1] == "16"


def test_tape_rows_run_the_tape_client_within_the_cartridge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[str]] = []

    def fake(argv: list[str], timeout: float) -> str:
        seen.append(argv)
        return "Run completed in 2.000 seconds.\n"

    monkeypatch.setattr(scenarios, "run_bounded", fake)
    sc = scenarios.SCENARIOS_BY_KEY["tape_sw256k"]
    run = scenarios.run_client(sc, "iscsi://h:1/t/4", seconds=5, block_size=1, count=10**6)
    argv = seen[-1]
    assert argv[1:3] == [str(scenarios.TAPE_CLIENT), "write"] and argv[3] == "iscsi://h:1/t/4"
    limit = int(scenarios.TAPE_CAPACITY * 0.9) // (256 * 1024)
    assert int(argv[4]) == limit and run.commands == limit  # never past the cartridge
    read = scenarios.SCENARIOS_BY_KEY["tape_sr256k"]
    scenarios.run_client(read, "u", seconds=5, block_size=1, count=7)
    assert seen[-1][2] == "read" and seen[-1][4] == "7"


def test_calibrated_count_is_bounded() -> None:
    assert scenarios.calibrate_count(10_000, 5) == 50_000
    assert scenarios.calibrate_count(1, 5) == 1000
    assert scenarios.calibrate_count(1e9, 5) == 5_000_000


def _rec(scenario: str, target: str, iops: float, cpu: float = 1.0) -> RunRecord:
    return RunRecord(scenario, target, 1, int(iops * 5), 5.0, iops, iops * 4096 / 1e6, cpu, 1)


def test_comparison_uses_medians_and_goal() -> None:
    sc = scenarios.SCENARIOS_BY_KEY["rr4k_qd32"]  # goal 0.8 on IOPS
    recs = [_rec(sc.key, "tgt", v) for v in (100, 300, 200)]
    recs += [_rec(sc.key, "py", v) for v in (150, 170, 1000)]
    (c,) = report.compare([sc], recs, "tgt", "py")
    assert c.baseline == Spread(200, 100, 300, 3)
    assert c.candidate is not None and c.candidate.median == 170
    assert c.ratio == pytest.approx(0.85)
    assert c.verdict == "pass"
    recs[-2] = _rec(sc.key, "py", 10)
    (c,) = report.compare([sc], recs, "tgt", "py")
    assert c.ratio == pytest.approx(150 / 200)
    assert c.verdict == "miss"


def test_comparison_without_candidate_runs_is_not_a_pass() -> None:
    sc = scenarios.SCENARIOS_BY_KEY["sr128k_qd16"]
    (c,) = report.compare([sc], [_rec(sc.key, "tgt", 10)], "tgt", "py")
    assert c.ratio is None and c.verdict == "n/a"
    assert "-" in report.throughput_table([c], "tgt", "py")


def test_cpu_per_100k_commands() -> None:
    rec = _rec("x", "tgt", 20_000, cpu=2.0)  # 100k commands in 5 s, 2 CPU s
    assert rec.cpu_per_100k == pytest.approx(2.0)


def test_memory_goal_needs_all_sessions_up() -> None:
    mib = 1024
    ok = report.MemoryReport("py", 30 * mib, 100, 100, 100 * mib, 120 * mib, 40 * mib)
    assert "pass" in report.memory_table([ok], "py")
    dropped = report.MemoryReport("py", 30 * mib, 100, 90, 100 * mib, 120 * mib, 40 * mib)
    assert "miss" in report.memory_table([dropped], "py")
    fat = report.MemoryReport("py", 30 * mib, 100, 100, 151 * mib, 160 * mib, 40 * mib)
    assert "miss" in report.memory_table([fat], "py")


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9.]{0,20}", fullmatch=True),
                       st.from_regex(r"[A-Za-z0-9.:,-]{0,30}", fullmatch=True)))  # fmt: skip
def test_text_keys_round_trip(pairs: dict[str, str]) -> None:
    assert sessions.decode_keys(sessions.encode_keys(pairs)) == pairs


def test_login_request_layout() -> None:
    isid = bytes.fromhex("80005c570007")
    pdu = sessions.login_request(isid=isid, csg=0, nsg=1, transit=True, itt=9, cmd_sn=1,
                                 exp_stat_sn=0, keys={"AuthMethod": "None"})  # fmt: skip
    data = b"AuthMethod=None\0"
    assert len(pdu) == 48 + len(data) + (-len(data) % 4)
    assert pdu[0] == 0x43  # immediate Login Request
    assert pdu[1] == 0x81  # T=1, CSG=0, NSG=1
    assert int.from_bytes(pdu[5:8], "big") == len(data)
    assert pdu[8:14] == isid
    assert struct.unpack(">I", pdu[16:20])[0] == 9
    assert struct.unpack(">I", pdu[24:28])[0] == 1
    assert pdu[48 : 48 + len(data)] == data


def test_login_response_fields() -> None:
    bhs = bytearray(48)
    bhs[0] = 0x23
    bhs[1] = 0x80 | (1 << 2) | 3
    bhs[14:16] = (0x1234).to_bytes(2, "big")
    bhs[24:28] = (77).to_bytes(4, "big")
    rsp = sessions.parse_login_response(bytes(bhs), b"TargetPortalGroupTag=1\0")
    assert rsp.transit and rsp.csg == 1 and rsp.nsg == 3
    assert rsp.tsih == 0x1234 and rsp.stat_sn == 77 and rsp.status_class == 0
    assert rsp.keys == {"TargetPortalGroupTag": "1"}
    bhs[0] = 0x21
    with pytest.raises(sessions.LoginError):
        sessions.parse_login_response(bytes(bhs), b"")


def test_nop_in_ping_gets_a_nop_out_echoing_its_tag() -> None:
    session = sessions.Session(sock=None, tsih=1, cmd_sn=5, exp_stat_sn=9)  # type: ignore[arg-type]
    ping = bytearray(48)
    ping[0] = 0x20
    ping[8:16] = bytes(range(8))
    ping[16:20] = b"\xff\xff\xff\xff"
    ping[20:24] = (0xABCD).to_bytes(4, "big")
    reply = sessions.nop_out_reply(session, bytes(ping))
    assert reply is not None and len(reply) == 48
    assert reply[0] == 0x40 and reply[1] == 0x80
    assert reply[8:16] == bytes(range(8))
    assert reply[16:20] == b"\xff\xff\xff\xff"
    assert int.from_bytes(reply[20:24], "big") == 0xABCD
    assert int.from_bytes(reply[24:28], "big") == 5
    assert int.from_bytes(reply[28:32], "big") == 9
    ping[20:24] = b"\xff\xff\xff\xff"  # a NOP-In answering nothing wants no reply
    assert sessions.nop_out_reply(session, bytes(ping)) is None


def test_background_note_flags_disturbed_runs() -> None:
    quiet = [attrs.evolve(_rec("x", "tgt", 100), background_cpus=b) for b in (0.01, 0.02, 0.03)]
    note = report.background_note(quiet)
    assert note is not None and "0.02" in note and "noisy" not in note
    loud = [*quiet, attrs.evolve(_rec("x", "tgt", 100), background_cpus=0.9)]
    assert "noisy" in (report.background_note(loud) or "")
    assert report.background_note([]) is None


@given(st.sampled_from([512, 4096]), st.integers(1, 3 << 20))
def test_xcopy_parameter_lists_cover_the_range_within_the_targets_limits(
    block_size: int, blocks: int
) -> None:
    src, dst = bytes((1, 3, 0, 16)) + bytes(range(16)), bytes((1, 3, 0, 16)) + bytes(16)
    lists = copy_offload.parameter_lists(src, dst, block_size, blocks)
    covered = 0
    for params in lists:
        _list_id, flags, target_len, _, segment_len, inline = struct.unpack_from(">BBHIII", params)
        assert flags == 0x18 and inline == 0  # LIST ID USAGE 11b: no held results
        assert target_len == 64 and len(params) == 16 + target_len + segment_len
        tds = params[16:80]
        for i, designator in enumerate((src, dst)):
            td = tds[32 * i : 32 * i + 32]
            assert td[0] == 0xE4 and td[1] == 0  # identification descriptor, disk
            assert td[4 : 4 + len(designator)] == designator
            assert int.from_bytes(td[29:32], "big") == block_size
        assert segment_len % 28 == 0 and 0 < segment_len // 28 <= 64
        for off in range(80, len(params), 28):
            kind, _, length, s_i, d_i, n, s_lba, d_lba = struct.unpack_from(
                ">BBHHH2xHQQ", params, off
            )
            assert (kind, length, s_i, d_i) == (0x02, 0x18, 0, 1)
            assert s_lba == d_lba == covered  # contiguous, in order, same LBAs
            assert 0 < n <= 0xFFFF and n * block_size <= 64 << 20  # the target's limits
            covered += n
    assert covered == blocks


def test_xcopy_cdb_and_the_copy_row_summary() -> None:
    cdb = copy_offload.xcopy_cdb(0x1234)
    assert len(cdb) == 16 and cdb[0] == 0x83 and cdb[1] == 0  # LID1
    assert int.from_bytes(cdb[10:14], "big") == 0x1234
    fast = copy_offload.CopyResult(1 << 30, 2.0, 8.0, 1.5, 9.0)
    assert fast.ratio == pytest.approx(4.0)
    assert fast.as_json()["ratio"] == pytest.approx(4.0)
    line = copy_offload.summary(
        [fast, attrs.evolve(fast, host_s=6.0), attrs.evolve(fast, host_s=10.0)]
    )
    assert "1,024 MiB" in line and "2.00 s" in line and "8.00 s" in line and "4.00x" in line
    assert "target CPU 1.50 s vs 9.00 s" in line
    assert copy_offload.CopyResult(1, 0.0, 1.0).ratio == 0.0
    assert "not measured" in copy_offload.summary([])


def test_only_picks_the_xcopy_row_and_tgt_never_runs_it() -> None:
    assert bench.settings_from(bench.parse_args([])).xcopy
    chosen = bench.settings_from(bench.parse_args(["--only", "rr4k_qd1,xcopy"]))
    assert chosen.xcopy and [s.key for s in chosen.scenarios] == ["rr4k_qd1"]
    assert not bench.settings_from(bench.parse_args(["--only", "rr4k_qd1"])).xcopy
    assert not bench.settings_from(bench.parse_args(["--candidate", "tgt"])).xcopy


def test_tree_shim_loads_the_other_trees_subpackages(tmp_path: Path) -> None:
    """A plain PYTHONPATH would still import this tree's ``pyscst.actors``."""
    other = tmp_path / "other"
    (other / "pyscst").mkdir(parents=True)
    (other / "actors").mkdir()
    (other / "pyscst" / "__init__.py").write_text("")
    (other / "actors" / "__init__.py").write_text("")
    (other / "actors" / "lun.py").write_text("WHO = 'other'\n")
    (other / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\npyscst = "pyscst"\n"pyscst.actors" = "actors"\n'
    )
    probe = "import os, pyscst.actors.lun as m; print(getattr(m, 'WHO', 'this'))"
    env = dict(os.environ, PYTHONPATH=str(other))
    plain = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert plain.stdout.strip() == "this"  # the trap the shim exists for
    env["PYTHONPATH"] = str(shim_for(other, tmp_path / "shim"))
    shimmed = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert shimmed.stdout.strip() == "other", shimmed.stderr


def test_a_given_pyscst_command_runs_where_the_shim_is_honoured(tmp_path: Path) -> None:
    """From the repository root ``python -m pyscst`` loads this tree, shim or not."""
    other = tmp_path / "other"
    (other / "pyscst").mkdir(parents=True)
    (other / "pyscst" / "__init__.py").write_text("WHO = 'other'\n")
    (other / "pyproject.toml").write_text('[tool.setuptools.package-dir]\npyscst = "pyscst"\n')
    probe = "import pyscst; print(getattr(pyscst, 'WHO', 'this'))"
    env = dict(os.environ, PYTHONPATH=str(shim_for(other, tmp_path / "shim")))
    work = tmp_path / "work"
    work.mkdir()
    argv, cwd = targets.given_command([sys.executable, "-c", probe], work / "x.toml", work)
    assert cwd == work and argv[-1] == str(work / "x.toml")
    ran = subprocess.run(argv[:-1], env=env, capture_output=True, text=True, cwd=cwd)
    assert ran.stdout.strip() == "other", ran.stderr
    at_root = subprocess.run(argv[:-1], env=env, capture_output=True, text=True,
                             cwd=targets.REPO_ROOT)  # fmt: skip
    assert at_root.stdout.strip() == "this"  # the trap
