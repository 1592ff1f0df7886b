"""The harness against a real tgtd: start, idle sessions, one bounded client run, teardown."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import procstat
import scenarios
import sessions
import targets

pytestmark = pytest.mark.skipif(
    shutil.which("tgtd") is None or shutil.which("iscsi-perf") is None or os.geteuid() != 0,
    reason="needs root, tgtd and iscsi-perf",
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_tgt_serves_sessions_and_clients_then_leaves_nothing(workdir: Path) -> None:
    with targets.run_tgt("t", workdir, cpu=None) as ep:
        pid = ep.pid
        host, port = ep.portal.rsplit(":", 1)
        assert int(port) != 3260
        idle = procstat.rss_kib(pid)
        assert idle > 0
        with sessions.idle_sessions(host, int(port), ep.iqn, 5) as held:
            assert held.alive() == 5
        before = procstat.cpu_seconds(pid)
        sc = scenarios.SCENARIOS_BY_KEY["rr4k_qd32_null"]
        bs = scenarios.read_block_size(ep.url("null"))
        run = scenarios.run_client(sc, ep.url(sc.role), seconds=1, block_size=bs)
        assert run.commands > 100
        assert procstat.cpu_seconds(pid) > before  # the target did the work
        w = scenarios.SCENARIOS_BY_KEY["sw4k_qd32"]
        wrun = scenarios.run_client(w, ep.url("disk"), seconds=5, block_size=bs, count=500)
        assert wrun.commands == 500 and wrun.seconds > 0
    assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)


def test_login_to_a_missing_target_is_refused(workdir: Path) -> None:
    with targets.run_tgt("t", workdir, cpu=None) as ep:
        host, port = ep.portal.rsplit(":", 1)
        with pytest.raises(sessions.LoginError, match="class 2"):
            sessions.login(host, int(port), ep.iqn + "-nope", "iqn.2026-11.org.x:i",
                           bytes(6))  # fmt: skip


def test_image_is_filled_not_sparse(workdir: Path) -> None:
    path = workdir / "img"
    targets.fill_image(path, 4 << 20)
    st = path.stat()
    assert st.st_size == 4 << 20
    assert st.st_blocks * 512 >= st.st_size  # every byte allocated
    with open(path, "rb") as f:
        head = f.read(4096)
    assert head.count(0) < 100


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
