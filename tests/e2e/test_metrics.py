"""Prometheus metrics: config, the exact histogram, and real scrapes of a real daemon.

The end-to-end tests run ``pyscst serve`` with ``[metrics] listen`` set, drive
I/O with the project's initiator (and with libiscsi's iscsi-test-cu), and read
``/metrics`` over HTTP as Prometheus would, asserting that the counters moved
by what was done. The HTTP endpoint also gets hostile requests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pyscst.actors.lu_stats import IoStats
from pyscst.admin.config.files import ConfigError, dump_config, parse_config
from pyscst.admin.config.values import Portal
from pyscst.supervision.metrics import latency_buckets
from pyscst.supervision.metrics_http import MAX_CLIENTS, REQUEST_TIMEOUT
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import read10, sense_triplet, write10
from tests.daemon import (
    DEFAULT_TARGET,
    REPO_ROOT,
    RunningDaemon,
    _port_open,
    daemon_command,
    free_port,
    running_daemon_async,
    write_config,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

BASE = 'state_dir = "."\n'


# -- configuration -------------------------------------------------------------------


def test_metrics_off_by_default(tmp_path: Path) -> None:
    assert parse_config(BASE, tmp_path).metrics.listen is None


def test_metrics_listen_parsed_and_dumped(tmp_path: Path) -> None:
    config = parse_config(BASE + '[metrics]\nlisten = "127.0.0.1:9119"\n', tmp_path)
    assert config.metrics.listen == Portal("127.0.0.1", 9119)
    assert parse_config(dump_config(config), tmp_path) == config


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('listen = "127.0.0.1"', 'metrics.listen: "127.0.0.1": give the port'),
        ('listen = "127.0.0.1:99999"', "metrics.listen: \"127.0.0.1:99999\": port 99999"),
        ('listen = "no such host!:9119"', "metrics.listen: "),
        ("listen = 9119", "metrics.listen: expected a string"),
        ('lisen = "127.0.0.1:9119"', 'unknown key metrics.lisen (did you mean "listen"?)'),
    ],
)
def test_metrics_config_errors_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "[metrics]\n" + body + "\n", tmp_path)
    assert message in str(info.value)


def test_metrics_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metrics: expected a table"):
        parse_config(BASE + 'metrics = "on"\n', tmp_path)


# -- the histogram --------------------------------------------------------------------


def test_latency_buckets_are_exact_at_powers_of_two() -> None:
    stats = IoStats()
    samples_ns = [500, 1023, 1024, 1500, 2047, 2048, 70_000, 3_000_000, 40_000_000_000]
    for ns in samples_ns:
        stats.record(ns, 0, 0, False)
    buckets = dict(latency_buckets(stats.snapshot()))
    for exponent in range(10, 35):
        le = 2**exponent
        expected = sum(1 for ns in samples_ns if ns < le)
        assert buckets[repr(le / 1e9)] == expected, le
    assert buckets["+Inf"] == len(samples_ns)
    counts = [count for _, count in latency_buckets(stats.snapshot())]
    assert counts == sorted(counts)  # cumulative


# -- a real daemon ---------------------------------------------------------------------


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample ``name`` with exactly ``labels`` (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:  # closed with our unread request bytes in its buffer
            pass
    return b"".join(chunks)


FAULT = {"id": "bad-1000", "action": "check_condition", "op_class": "read", "lba": [1000, 1000]}


@contextlib.asynccontextmanager
async def metrics_daemon(
    tmp_path: Path, mport: int, faults: bool = True, **kwargs: Any
) -> AsyncIterator[RunningDaemon]:
    """A daemon with metrics on ``mport`` (and the fault rule), once that listens too."""
    extra: dict[str, Any] = {"metrics": {"listen": f"127.0.0.1:{mport}"}}
    if faults:
        extra["faults"] = [FAULT]
    async with running_daemon_async(tmp_path, extra=extra, **kwargs) as d:
        with trio.fail_after(30):  # opened just after the control socket
            while not await trio.to_thread.run_sync(_port_open, "127.0.0.1", mport):
                await trio.sleep(0.05)
        yield d


async def test_scrape_counts_what_the_initiator_did(tmp_path: Path) -> None:
    mport = free_port()
    async with metrics_daemon(tmp_path, mport) as d:
        before = await trio.to_thread.run_sync(scrape, mport)
        assert value(before, "pyscst_lu_commands_total", device="disk0") == 0
        assert value(before, "pyscst_fault_injections_total", rule="bad-1000",
                     action="check_condition") == 0  # fmt: skip
        async with await Initiator.connect(d.host, d.port, target_name=DEFAULT_TARGET) as ini:
            await ini.execute(0, bytes(6))  # TEST UNIT READY: the power-on UA
            for lba in range(8):
                r = await ini.execute(0, write10(lba, 8), data_out=bytes(4096))
                assert r.status == 0
            for lba in range(8):
                r = await ini.execute(0, read10(lba, 8), read_length=4096)
                assert r.status == 0
            r = await ini.execute(0, read10(1000, 1), read_length=512)  # the fault rule
            assert sense_triplet(r.sense) == (0x3, 0x11, 0x00)
            r = await ini.execute(0, read10(10**6, 1), read_length=512)  # beyond capacity
            assert sense_triplet(r.sense)[0] == 0x5
            during = await trio.to_thread.run_sync(scrape, mport)
        after = await trio.to_thread.run_sync(scrape, mport)

    dev = {"device": "disk0"}
    assert value(during, "pyscst_lu_commands_total", **dev) == 1 + 8 + 8 + 2
    assert value(during, "pyscst_lu_errors_total", **dev) == 3
    assert value(during, "pyscst_lu_written_bytes_total", **dev) == 8 * 4096
    assert value(during, "pyscst_lu_read_bytes_total", **dev) == 8 * 4096
    for key, count in (("unit_attention", 1), ("medium_error", 1), ("illegal_request", 1)):
        assert value(during, "pyscst_lu_check_conditions_total", sense_key=key, **dev) == count
    assert value(during, "pyscst_lu_latency_seconds_count", **dev) == 19
    assert value(during, "pyscst_lu_latency_seconds_bucket", le="+Inf", **dev) == 19
    assert value(during, "pyscst_lu_tasks", **dev) == 0
    assert value(during, "pyscst_fault_injections_total", rule="bad-1000",
                 action="check_condition") == 1  # fmt: skip
    assert value(during, "pyscst_fault_rule_enabled", rule="bad-1000",
                 action="check_condition") == 1  # fmt: skip
    portal = f"127.0.0.1:{d.port}"
    assert value(during, "pyscst_sessions", target=DEFAULT_TARGET, portal=portal) == 1
    session = [k for k in during if k[0] == "pyscst_session_commands_total"]
    assert len(session) == 1 and during[session[0]] == 19
    labels = dict(session[0][1])
    assert labels["target"] == DEFAULT_TARGET and labels["lun"] == "0"
    assert labels["device"] == "disk0"
    # after logout the session is gone from the gauges; the LU keeps its totals
    assert value(after, "pyscst_sessions", target=DEFAULT_TARGET, portal=portal) == 0
    assert value(after, "pyscst_lu_commands_total", **dev) == 19


async def test_metrics_endpoint_answers_hostile_requests(tmp_path: Path) -> None:
    mport = free_port()
    async with metrics_daemon(tmp_path, mport):

        def probes() -> None:
            assert raw_http(mport, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
            assert raw_http(mport, b"\xff\xfe / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
            assert raw_http(mport, b"GET /x HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
            assert raw_http(mport, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(
                b"HTTP/1.1 405 "
            )
            huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
            answer = raw_http(mport, huge)  # refused: 400, or a reset that lost it
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400 ")
            head = raw_http(mport, b"HEAD /metrics HTTP/1.0\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
            # a client that connects and says nothing, then one that hangs up
            with socket.create_connection(("127.0.0.1", mport)):
                pass
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"http://127.0.0.1:{mport}/nope", timeout=10)
            assert info.value.code == 404
            assert value(scrape(mport), "pyscst_lu_commands_total", device="disk0") == 0

        def crowd() -> None:
            """MAX_CLIENTS silent clients hold every slot: one more is closed
            unanswered; once they are gone, scrapes work again."""
            silent = [socket.create_connection(("127.0.0.1", mport)) for _ in range(MAX_CLIENTS)]
            try:
                # (until the daemon has accepted all of them, one more may still be served)
                deadline = time.monotonic() + 20
                while raw_http(mport, b"GET /metrics HTTP/1.1\r\n\r\n") != b"":
                    assert time.monotonic() < deadline, "an extra client was always served"
                # a silent client is dropped after REQUEST_TIMEOUT, unanswered
                silent[0].settimeout(REQUEST_TIMEOUT + 20)
                assert silent[0].recv(100) == b""
            finally:
                for sock in silent:
                    sock.close()
            deadline = time.monotonic() + 10
            while True:
                try:
                    scrape(mport)
                    return
                except (OSError, urllib.error.URLError):
                    if time.monotonic() > deadline:
                        raise

        await trio.to_thread.run_sync(probes)
        await trio.to_thread.run_sync(crowd)


def test_busy_metrics_port_stops_the_start(tmp_path: Path) -> None:
    """Exit 1 naming the address, as for a busy portal (and never READY)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        mport = busy.getsockname()[1]
        config = write_config(
            tmp_path, port=free_port(), extra={"metrics": {"listen": f"127.0.0.1:{mport}"}}
        )
        done = subprocess.run(
            daemon_command(config), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot start: cannot listen for metrics on 127.0.0.1:{mport}" in done.stderr


async def test_counters_move_during_a_libiscsi_run(tmp_path: Path) -> None:
    """``curl`` on the metrics address while iscsi-test-cu runs: counters move."""
    tool, curl = shutil.which("iscsi-test-cu"), shutil.which("curl")
    if tool is None or curl is None:
        pytest.skip("needs iscsi-test-cu (libiscsi-bin) and curl")
    mport = free_port()
    async with metrics_daemon(tmp_path, mport, faults=False) as d:

        def curl_commands() -> float:
            text = subprocess.run(
                [curl, "-sf", f"http://127.0.0.1:{mport}/metrics"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout  # fmt: skip
            for line in text.splitlines():
                if line.startswith('pyscst_lu_commands_total{device="disk0"}'):
                    return float(line.split()[-1])
            raise AssertionError(f"no pyscst_lu_commands_total in:\n{text}")

        def run() -> tuple[list[float], int]:
            seen = [curl_commands()]
            proc = subprocess.Popen(
                [tool, "--test", "SCSI.Read10", "--dataloss", d.url()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )  # fmt: skip
            while proc.poll() is None:
                seen.append(curl_commands())
            seen.append(curl_commands())
            return seen, proc.wait()

        seen, code = await trio.to_thread.run_sync(run)
    assert code == 0
    assert seen[0] == 0
    assert seen == sorted(seen)  # counters never go back
    assert seen[-1] > 100  # SCSI.Read10 sends a few hundred commands
