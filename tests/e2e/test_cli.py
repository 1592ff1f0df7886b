"""The ``pyscst`` command line: exit codes and messages users and scripts rely on."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pyscst.supervision.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from tests.daemon import (
    REPO_ROOT,
    daemon_command,
    free_port,
    running_daemon,
    running_daemon_async,
    write_config,
)

DEFAULT_CONFIG = REPO_ROOT / "etc" / "pyscst.toml"
BAD_CONFIG = """
[devices.disk0]
handler = "vdisk_fileio"
size = "1GiB"
block_size = 520
[targets."iqn.2026-11.org.pyscst:t"]
portal = ["127.0.0.1:3260"]
"""


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(DEFAULT_CONFIG)]) == EXIT_OK
    assert capsys.readouterr().out == "ok: 1 devices, 1 targets\n"


def test_check_config_reports_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    assert main(["check-config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"pyscst: {path}: 3 problems:\n")
    assert "devices.disk0.block_size: expected 512 or 4096, got 520" in err
    assert 'unknown key targets."iqn.2026-11.org.pyscst:t".portal (did you mean "portals"?)' in err


def test_serve_refuses_a_bad_config_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    assert main(["serve", "--config", str(path)]) == EXIT_USAGE
    assert "block_size" in capsys.readouterr().err
    assert not (tmp_path / "disk0.img").exists()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as info:
        main(["serve"])  # --config is required
    assert info.value.code == EXIT_USAGE
    assert "--config" in capsys.readouterr().err


def test_installed_entry_point(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "pyscst"
    if not script.exists():
        pytest.skip("project not installed in this interpreter's environment (pip install -e .)")
    proc = subprocess.run([str(script), "check-config", str(DEFAULT_CONFIG)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (EXIT_OK, "ok: 1 devices, 1 targets\n")


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as daemon:  # asserts exit code 0 after SIGTERM
        with socket.create_connection((daemon.host, daemon.port), timeout=5):
            pass
    log = daemon.stderr_text()
    assert "starting pyscst" in log  # timestamped log lines on stderr
    assert (daemon.state_dir / "disk0.img").stat().st_size == 64 * 2**20


def test_serve_busy_port_is_a_one_line_failure(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, port=port)
        proc = subprocess.run(daemon_command(config), cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=60, check=False)
    assert proc.returncode == EXIT_FAILURE, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pyscst: cannot start: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_free_port_is_never_the_iscsi_default() -> None:
    assert all(free_port() != 3260 for _ in range(20))


async def test_async_daemon_helper_serves_trio_tests(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path) as daemon:
        stream = await trio.open_tcp_stream(daemon.host, daemon.port)
        await stream.aclose()
    assert daemon.stderr_path.exists()
