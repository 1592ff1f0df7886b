"""Two daemons (nodes A and B) export one disk on shared storage, coordinated by etcd.

Real initiators log in to each node; persistent and SPC-2 reservations made
through one node bind the other, preemptions made through B reach their victim
on A as UNIT ATTENTIONs, PREEMPT AND ABORT aborts tasks on the other node,
APTPL registrations survive restarts, a partitioned node fences itself within
its lease TTL, and hostile values in etcd crash nothing.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.scsi.sense import Status
from pyscst.supervision.cluster.etcd_client import EtcdClient
from pyscst.supervision.daemon import Daemon, StartupError
from pyscst.supervision.metrics import DaemonCollector
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import read10
from tests.daemon import REPO_ROOT, daemon_command, free_port, in_process_daemon, write_config
from tests.e2e.test_reservations import (
    BS,
    EA,
    NAME_A,
    NAME_B,
    PREEMPT,
    REGISTER,
    RESERVE,
    asc,
    keys,
    prout,
    read,
    reservation,
    write,
)
from tests.e2e.test_tmf import hang
from tests.helpers_etcd import EtcdInstance, etcd_unavailable, running_etcd

pytestmark = pytest.mark.skipif(etcd_unavailable() is not None, reason=str(etcd_unavailable()))

HOST = "127.0.0.1"
TARGET = "iqn.2026-11.org.pyscst:cluster"
ISID_1 = 0x23D000000011
ISID_2 = 0x23D000000012
PREEMPT_AND_ABORT = 5
TTL = 3


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdInstance]:
    with running_etcd(tmp_path / "etcd") as instance:
        yield instance


def node_body(shared: Path, name: str, etcd_url: str, ttl: int = TTL) -> str:
    """A node's config after state_dir: ``@PORT@`` is its portal's port."""
    return f"""
allowed_dirs = ["{shared}"]
[cluster]
etcd = ["{etcd_url}"]
node = "{name}"
lease_ttl = {ttl}
[devices.disk0]
handler = "vdisk_fileio"
path = "{shared}/disk0.img"
size = "4MiB"
[targets."{TARGET}"]
portals = ["{HOST}:@PORT@"]
luns = [{{lun = 0, device = "disk0"}}]
"""


@contextlib.asynccontextmanager
async def node(
    tmp_path: Path, name: str, etcd: EtcdInstance, ttl: int = TTL
) -> AsyncIterator[tuple[Daemon, int]]:
    shared = tmp_path / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    state = tmp_path / name
    state.mkdir(exist_ok=True)
    async with in_process_daemon(state, node_body(shared, name, etcd.url, ttl)) as running:
        yield running


def metric(daemon: Daemon, name: str) -> float:
    """One sample of the daemon's /metrics, as Prometheus would read it."""
    for family in DaemonCollector(daemon).collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise KeyError(name)


@contextlib.asynccontextmanager
async def login(port: int, name: str, isid: int) -> AsyncIterator[Initiator]:
    async with await Initiator.connect(
        HOST, port, initiator_name=name, target_name=TARGET, isid=isid
    ) as ini:
        for _ in range(5):  # the power-on UA first
            if (await ini.execute(0, bytes(6))).status == Status.GOOD:
                break
        yield ini


@contextlib.asynccontextmanager
async def two_nodes(
    tmp_path: Path, etcd: EtcdInstance
) -> AsyncIterator[tuple[Daemon, Daemon, Initiator, Initiator]]:
    """Nodes a and b; initiator 1 logged in through a, initiator 2 through b."""
    async with node(tmp_path, "a", etcd) as (a, port_a), node(tmp_path, "b", etcd) as (b, port_b):
        async with login(port_a, NAME_A, ISID_1) as one, login(port_b, NAME_B, ISID_2) as two:
            yield a, b, one, two


async def test_reservations_made_through_one_node_bind_the_other(
    tmp_path: Path, etcd: EtcdInstance
) -> None:
    async with two_nodes(tmp_path, etcd) as (a, _b, one, two):
        assert metric(a, "pyscst_cluster_members") == 2.0
        assert metric(a, "pyscst_cluster_fenced") == 0.0
        shown = await a.control_ops["cluster.show"]({})
        assert shown["node"] == "a" and shown["members"] == ["a", "b"] and not shown["fenced"]
        assert shown["devices"]["disk0"]["registrations"] == 0
        assert (await prout(one, REGISTER, sark=0xA)).status == Status.GOOD
        assert (await prout(one, RESERVE, key=0xA, ptype=EA)).status == Status.GOOD
        # through B: the reservation made through A is there, and binds
        assert await reservation(two) == (0xA, EA)
        assert (await read(two)).status == Status.RESERVATION_CONFLICT
        assert (await write(two)).status == Status.RESERVATION_CONFLICT
        assert (await prout(two, RESERVE, key=0, ptype=EA)).status == (Status.RESERVATION_CONFLICT)
        assert (await prout(two, REGISTER, sark=0xB, aptpl=True)).status == Status.GOOD
        assert sorted(await keys(one)) == [0xA, 0xB]
        assert (await write(two)).status == Status.RESERVATION_CONFLICT  # EA: holder only
        assert (await write(one)).status == Status.GOOD
        # B preempts A's registration and takes the reservation
        assert (await prout(two, PREEMPT, key=0xB, sark=0xA, ptype=EA)).status == Status.GOOD
        # through A, initiator 1 hears of it first, then is shut out
        assert asc(await read(one)) == (0x2A, 0x05)  # REGISTRATIONS PREEMPTED
        assert (await read(one)).status == Status.RESERVATION_CONFLICT
        assert await reservation(one) == (0xB, EA)
        assert (await write(two)).status == Status.GOOD
        with trio.fail_after(2):  # b's own ack of its PREEMPT travels in the background
            while (shown := (await a.control_ops["cluster.show"]({}))["devices"]["disk0"])[
                "acknowledged_by"
            ] != ["b"]:
                await trio.sleep(0.02)
        assert shown["registrations"] == 1 and shown["reserved"]


async def test_spc2_reservation_is_shared_and_released_by_lun_reset(
    tmp_path: Path, etcd: EtcdInstance
) -> None:
    async with two_nodes(tmp_path, etcd) as (_a, _b, one, two):
        assert (await one.execute(0, bytes([0x16, 0, 0, 0, 0, 0]))).status == Status.GOOD
        assert (await read(two)).status == Status.RESERVATION_CONFLICT
        assert (await two.execute(0, bytes([0x16, 0, 0, 0, 0, 0]))).status == (
            Status.RESERVATION_CONFLICT
        )
        assert (await one.execute(0, bytes([0x17, 0, 0, 0, 0, 0]))).status == Status.GOOD
        assert (await read(two)).status == Status.GOOD


async def test_aptpl_registrations_survive_restarts_of_every_node(
    tmp_path: Path, etcd: EtcdInstance
) -> None:
    async with node(tmp_path, "b", etcd) as (_b, port_b):
        async with node(tmp_path, "a", etcd) as (_a, port_a):
            async with login(port_a, NAME_A, ISID_1) as one, login(port_b, NAME_B, ISID_2) as two:
                assert (await prout(one, REGISTER, sark=0xA)).status == Status.GOOD
                assert (await prout(two, REGISTER, sark=0xB, aptpl=True)).status == Status.GOOD
                assert (await prout(two, RESERVE, key=0xB, ptype=EA)).status == Status.GOOD
        # node A restarts while B runs: nothing is lost
        async with node(tmp_path, "a", etcd) as (_a, port_a), login(port_a, NAME_A, ISID_1) as one:
            assert sorted(await keys(one)) == [0xA, 0xB]
            assert await reservation(one) == (0xB, EA)
    # every node stopped: the first one up powers the LU on; APTPL (set by the
    # last REGISTER) keeps every registration and the reservation
    async with node(tmp_path, "b", etcd) as (_b, port_b), login(port_b, NAME_A, ISID_1) as one:
        assert sorted(await keys(one)) == [0xA, 0xB]
        assert await reservation(one) == (0xB, EA)
        assert (await prout(one, REGISTER, key=0xA, sark=0xA)).status == Status.GOOD  # APTPL=0
    async with node(tmp_path, "a", etcd) as (_a, port_a), login(port_a, NAME_A, ISID_1) as one:
        assert await keys(one) == []
        assert await reservation(one) is None


async def test_partitioned_node_fences_itself_within_the_lease_ttl(
    tmp_path: Path, etcd: EtcdInstance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pyscst.supervision.cluster")
    async with node(tmp_path, "a", etcd) as (daemon, port_a):
        async with login(port_a, NAME_A, ISID_1) as one:
            assert (await write(one)).status == Status.GOOD
            etcd.pause()
            try:
                started = trio.current_time()
                with trio.fail_after(TTL):
                    while not (daemon.cluster and daemon.cluster.fenced):
                        await trio.sleep(0.02)
                fenced_after = trio.current_time() - started
                assert fenced_after < TTL
                assert "FENCED" in caplog.text
                assert metric(daemon, "pyscst_cluster_fenced") == 1.0
                assert metric(daemon, "pyscst_cluster_fences_total") == 1.0
                r = await write(one)
                assert asc(r) == (0x04, 0x0C) and r.sense[2] & 0x0F == 2  # NOT READY
                assert asc(await read(one)) == (0x04, 0x0C)
                assert (await one.execute(0, bytes([0x12, 0, 0, 0, 36, 0]), read_length=36)
                        ).status == Status.GOOD  # fmt: skip
            finally:
                etcd.resume()
            # etcd back, lease still valid or renewed: the node unfences itself
            with trio.fail_after(3 * TTL):
                while daemon.cluster is not None and daemon.cluster.fenced:
                    await trio.sleep(0.05)
            assert (await write(one)).status == Status.GOOD


async def test_a_node_whose_watch_stalls_fences_itself(
    tmp_path: Path, etcd: EtcdInstance, caplog: pytest.LogCaptureFixture
) -> None:
    """Lease renewed, etcd fine, but the watch delivers nothing (a stalled stream):
    the node would serve a stale copy of the reservations, so it fences itself
    before a change's issuer stops waiting for its acknowledgement (one TTL)."""
    caplog.set_level(logging.WARNING, "pyscst.supervision.cluster")
    async with node(tmp_path, "a", etcd) as (daemon, port_a), login(port_a, NAME_A, ISID_1) as one:
        cluster = daemon.cluster
        assert cluster is not None
        deliver = cluster._on_event
        cluster._on_event = lambda event: None  # type: ignore[method-assign]
        started = trio.current_time()
        with trio.fail_after(TTL):
            while not cluster.fenced:
                await trio.sleep(0.02)
        assert trio.current_time() - started < TTL
        assert "the watch delivered nothing" in caplog.text
        assert asc(await write(one)) == (0x04, 0x0C)
        cluster._on_event = deliver  # type: ignore[method-assign]
        with trio.fail_after(3 * TTL):
            while cluster.fenced:
                await trio.sleep(0.05)
        assert (await write(one)).status == Status.GOOD


async def test_killed_etcd_fences_both_nodes_and_they_recover_when_it_returns(
    tmp_path: Path, etcd: EtcdInstance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pyscst.supervision.cluster")
    async with two_nodes(tmp_path, etcd) as (a, b, one, two):
        assert (await prout(one, REGISTER, sark=0xA)).status == Status.GOOD
        etcd.kill()
        with trio.fail_after(TTL):
            while not all(d.cluster and d.cluster.fenced for d in (a, b)):
                await trio.sleep(0.02)
        assert asc(await write(one)) == (0x04, 0x0C)
        assert asc(await prout(two, REGISTER, sark=0xB)) == (0x04, 0x0C)
        await trio.to_thread.run_sync(etcd.start_again)
        # both renew (or, their leases gone, join again), re-read, and serve
        with trio.fail_after(6 * TTL):
            while any(d.cluster is None or d.cluster.fenced for d in (a, b)):
                await trio.sleep(0.05)
        # the watches are back: a change through B is seen through A at once
        for _ in range(5):  # 2A/06 (ALUA) or other UAs of the outage first
            if (r := await prout(two, REGISTER, sark=0xB)).status == Status.GOOD:
                break
        assert r.status == Status.GOOD
        assert sorted(await keys(one)) == [0xA, 0xB]
        assert (await write(one)).status == Status.GOOD
    assert "FENCED" in caplog.text


def test_etcd_unreachable_at_start_is_a_startup_error(tmp_path: Path) -> None:
    """``pyscst serve`` says why and exits non-zero; no traceback."""
    config = write_config(
        tmp_path, port=free_port(),
        extra={"cluster": {"etcd": ["http://127.0.0.1:9"], "node": "a", "lease_ttl": 3}},
    )  # fmt: skip
    done = subprocess.run(
        daemon_command(config), capture_output=True, timeout=60, cwd=REPO_ROOT, check=False
    )
    err = done.stderr.decode(errors="replace") + done.stdout.decode(errors="replace")
    assert done.returncode != 0
    assert "cluster: cannot join through etcd" in err and "127.0.0.1:9" in err
    assert "Traceback" not in err


async def test_a_second_node_with_a_taken_name_does_not_start(
    tmp_path: Path, etcd: EtcdInstance
) -> None:
    async with node(tmp_path, "a", etcd) as (daemon, port_a):
        with pytest.RaisesGroup(
            pytest.RaisesExc(StartupError, match="node name 'a' is taken by a live member"),
            flatten_subgroups=True,
        ):
            async with node(tmp_path / "twin", "a", etcd):
                pass
        # the first one serves on, untouched
        assert daemon.cluster is not None and not daemon.cluster.fenced
        async with login(port_a, NAME_A, ISID_1) as one:
            assert (await write(one)).status == Status.GOOD


async def test_garbage_in_etcd_does_not_crash_a_node(tmp_path: Path, etcd: EtcdInstance) -> None:
    client = EtcdClient([etcd.url])
    key = b"/pyscst/lu/disk0/resv"
    async with node(tmp_path, "a", etcd) as (daemon, port_a):
        async with login(port_a, NAME_A, ISID_1) as one:
            assert (await prout(one, REGISTER, sark=0xA)).status == Status.GOOD
            for value in (
                b"\xff\x00garbage",
                b'{"format": 1, "pr": [], "spc2": 7, "change": null}',
                b'{"format": 1}' + b" " * (1100 << 10),  # over the 1 MiB the node reads
                b"[" * 100000,
                b'{"format": 1, "pr": {"version": 1, "generation": 1, "aptpl": false,'
                b' "registrations": [], "reservation": null}, "spc2": null, "change":'
                b' {"node": "x", "by": null, "notices": [[{}, [41, 0]]], "abort": []}}',
            ):
                await client.put(key, value)
                await client.put(b"/pyscst/members/" + b"\xff" * 3000, value)
                await trio.sleep(0.1)
                # the node kept its last good state and still answers
                assert await keys(one) == [0xA]
            # a change from here overwrites the garbage
            assert (await prout(one, REGISTER, key=0xA, sark=0xC)).status == Status.GOOD
            assert await keys(one) == [0xC]
            assert daemon.cluster is not None and not daemon.cluster.fenced
    await client.aclose()


async def test_junk_under_the_prefix_does_not_keep_a_node_from_starting(
    tmp_path: Path, etcd: EtcdInstance
) -> None:
    """More than an answer may hold (16 MiB) of other keys below the prefix: the
    node reads only its own keys, and the watch skips the rest."""
    client = EtcdClient([etcd.url], timeout=5)
    junk = b"j" * (1 << 20)
    for n in range(18):
        await client.put(b"/pyscst/lu/junk%d/resv" % n, junk)
    await client.aclose()
    async with node(tmp_path, "a", etcd) as (daemon, port_a), login(port_a, NAME_A, ISID_1) as one:
        assert (await prout(one, REGISTER, sark=0xA)).status == Status.GOOD
        assert await keys(one) == [0xA]
        assert daemon.cluster is not None and not daemon.cluster.fenced


async def test_two_nodes_racing_for_the_reservation_one_wins(
    tmp_path: Path, etcd: EtcdInstance
) -> None:
    async with two_nodes(tmp_path, etcd) as (_a, _b, one, two):
        assert (await prout(one, REGISTER, sark=0xA)).status == Status.GOOD
        assert (await prout(two, REGISTER, sark=0xB)).status == Status.GOOD
        results: dict[int, int] = {}
        for _round in range(5):
            async with trio.open_nursery() as nursery:

                async def reserve(ini: Initiator, key: int) -> None:
                    results[key] = (await prout(ini, RESERVE, key=key, ptype=EA)).status

                nursery.start_soon(reserve, one, 0xA)
                nursery.start_soon(reserve, two, 0xB)
            assert sorted(results.values()) == [Status.GOOD, Status.RESERVATION_CONFLICT]
            winner = next(k for k, s in results.items() if s == Status.GOOD)
            assert await reservation(one) == (winner, EA)
            assert await reservation(two) == (winner, EA)
            holder = one if winner == 0xA else two
            assert (await prout(holder, 2, key=winner, ptype=EA)).status == Status.GOOD


async def test_preempt_and_abort_aborts_tasks_on_the_other_node(
    tmp_path: Path, etcd: EtcdInstance
) -> None:
    async with two_nodes(tmp_path, etcd) as (daemon_a, _b, one, two):
        assert (await prout(one, REGISTER, sark=0xA)).status == Status.GOOD
        assert (await prout(two, REGISTER, sark=0xB)).status == Status.GOOD
        assert (await prout(one, RESERVE, key=0xA, ptype=EA)).status == Status.GOOD
        # a READ of initiator 1 hangs on node A until aborted
        await hang(daemon_a, lba=[42])
        held = one.submit(0, read10(42), read_length=BS)
        with trio.fail_after(2):
            while (
                await one.task_management(TmfFunction.QUERY_TASK, 0, held) != TmfResponse.SUCCEEDED
            ):
                await trio.sleep(0.01)
        r = await prout(two, PREEMPT_AND_ABORT, key=0xB, sark=0xA, ptype=EA)
        assert r.status == Status.GOOD
        # by the time B answered, A had aborted the task (no status ever comes)
        assert await one.task_management(TmfFunction.QUERY_TASK, 0, held) == TmfResponse.COMPLETE
        with trio.move_on_after(0.3) as silent:
            await one.wait(held)
        assert silent.cancelled_caught, "the aborted READ answered"
        assert daemon_a.units["disk0"].reservations.pr.holder_key() == 0xB
        assert asc(await read(one)) == (0x2A, 0x05)  # REGISTRATIONS PREEMPTED first
        assert asc(await read(one)) == (0x2F, 0x00)  # COMMANDS CLEARED BY ANOTHER INITIATOR
        assert (await write(two)).status == Status.GOOD
