"""Task management on a passed-through tgt disk, with reads in flight.

The backend (tgt) sees one initiator, pyscst's backend session, carrying
the commands of every initiator of pyscst. A task-set function from one of
them must reach the backend only in a form that cannot hit the others'
commands (docs/passthrough.md, "Task management"): here initiator A sends
ABORT TASK SET, I_T NEXUS RESET, LOGICAL UNIT RESET and CLEAR TASK SET while
A and B both keep reads in flight through pyscst to tgt. Every TMF is
answered at once, B's commands survive A's task-set functions, nothing
waits for a watchdog, and the backend session is never dropped for it. The
same TMFs while tgt is down are answered too, and service resumes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.devices.passthrough import PassthroughDevice
from pyscst.supervision.daemon import Daemon
from pyscst.transports.iscsi.backend import IscsiBackend
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR
from tests.daemon import in_process_daemon
from tests.helpers_tgt import TgtDaemon, tgtd_daemon, tgtd_unavailable, wait_until_ready

pytestmark = pytest.mark.skipif(tgtd_unavailable() is not None, reason=str(tgtd_unavailable()))

F, R = TmfFunction, TmfResponse
TARGET = "iqn.2026-11.org.pyscst:pt-tmf"
NAME_A = "iqn.2026-11.org.example:a"
NAME_B = "iqn.2026-11.org.example:b"
BS = 512
IN_FLIGHT = 24


def read16(lba: int, n: int = 8) -> bytes:
    return bytes((0x88, 0)) + lba.to_bytes(8, "big") + n.to_bytes(4, "big") + bytes(2)


@asynccontextmanager
async def pt_daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, int, TgtDaemon]]:
    with tgtd_daemon(tmp_path) as tgt:
        body = f"""
[devices.pt]
handler = "passthrough"
backend = "{tgt.url}"
[targets."{TARGET}"]
portals = ["127.0.0.1:@PORT@"]
luns = [{{ lun = 0, device = "pt" }}]
"""
        async with in_process_daemon(tmp_path / "d", body) as (daemon, port):
            await trio.to_thread.run_sync(wait_until_ready, "127.0.0.1", port, TARGET)
            yield daemon, port, tgt


@asynccontextmanager
async def two_initiators(port: int) -> AsyncIterator[tuple[Initiator, Initiator]]:
    """Initiators A and B logged in to the daemon, each with its unit
    attentions cleared."""
    async with await connect(port, NAME_A) as a, await connect(port, NAME_B) as b:
        await settle(a)
        await settle(b)
        yield a, b


def backend_of(daemon: Daemon) -> IscsiBackend:
    device = daemon.units["pt"].current_device()
    assert isinstance(device, PassthroughDevice)
    assert isinstance(device.backend, IscsiBackend)
    return device.backend


async def connect(port: int, name: str) -> Initiator:
    ini = await Initiator.connect("127.0.0.1", port, initiator_name=name, target_name=TARGET)
    return ini


async def settle(ini: Initiator) -> None:
    """Past the power-on UA."""
    for _ in range(4):
        if (await ini.execute(0, TUR)).status == 0:
            return
    raise AssertionError("the LU never became ready")


def submit_reads(ini: Initiator, base: int) -> list[int]:
    return [ini.submit(0, read16(base + 8 * i), read_length=8 * BS) for i in range(IN_FLIGHT)]


async def outcomes(ini: Initiator, itts: list[int], wait: float) -> list[int | None]:
    """Each command's status, None for one not answered within ``wait`` (aborted)."""
    got: list[int | None] = []
    deadline = trio.current_time() + wait
    for itt in itts:
        status = None
        with trio.move_on_at(deadline):
            status = (await ini.wait(itt)).status
        got.append(status)
    return got


async def test_abort_task_set_of_the_only_initiator_is_the_backends_abort_task_set(
    tmp_path: Path,
) -> None:
    """Every command pyscst has at tgt is A's: one ABORT TASK SET there does
    what an ABORT TASK each would (and tgt accepts it)."""
    async with pt_daemon(tmp_path) as (daemon, port, _):
        backend = backend_of(daemon)
        async with await connect(port, NAME_A) as a:
            await settle(a)
            aborted = 0
            for _ in range(10):
                mine = submit_reads(a, 0)
                await trio.lowlevel.checkpoint()  # (the reads reach pyscst, and tgt)
                with trio.fail_after(5):
                    assert await a.task_management(F.ABORT_TASK_SET, 0) == R.COMPLETE
                got = await outcomes(a, mine, 0.3)
                assert set(got) <= {0, None}
                aborted += got.count(None)
                assert (await a.execute(0, read16(0), read_length=8 * BS)).status == 0
            assert aborted and backend.aborts_sent["task_set"] >= 1
            assert backend._ini is not None and backend._ini.sent_commands() == set()


@pytest.mark.parametrize("function", [F.ABORT_TASK_SET, F.I_T_NEXUS_RESET])
async def test_a_task_set_function_of_one_initiator_spares_the_others_at_the_backend(
    tmp_path: Path, function: int
) -> None:
    async with pt_daemon(tmp_path) as (daemon, port, _):
        backend = backend_of(daemon)
        logins = backend.logins
        async with two_initiators(port) as (a, b):
            for round_ in range(5):
                mine = submit_reads(a, 0)
                theirs = submit_reads(b, 4096)
                with trio.fail_after(5):
                    assert await a.task_management(function, 0) == R.COMPLETE
                # B's commands ran at the backend beside A's: none was hit
                with trio.fail_after(10):
                    assert await outcomes(b, theirs, 10) == [0] * IN_FLIGHT, round_
                got = await outcomes(a, mine, 0.3)
                assert set(got) <= {0, None}  # done before the TMF, or aborted silently
                if function == F.I_T_NEXUS_RESET:
                    assert (await a.execute(0, TUR)).status == 2  # 29/07 for A only
                assert (await a.execute(0, read16(0), read_length=8 * BS)).status == 0
            assert (await b.execute(0, TUR)).status == 0  # no UA for B
        assert backend.logins == logins  # the backend session was never dropped


async def test_lun_reset_amid_reads_resets_the_backend_lu_once(tmp_path: Path) -> None:
    async with pt_daemon(tmp_path) as (daemon, port, _):
        backend = backend_of(daemon)
        logins = backend.logins
        async with two_initiators(port) as (a, b):
            before = dict(backend.aborts_sent)
            for _ in range(3):
                mine = submit_reads(a, 0)
                theirs = submit_reads(b, 4096)
                with trio.fail_after(5):
                    assert await a.task_management(F.LOGICAL_UNIT_RESET, 0) == R.COMPLETE
                assert set(await outcomes(a, mine, 0.3)) <= {0, None}
                assert set(await outcomes(b, theirs, 0.3)) <= {0, None}
                for ini in (a, b):  # 29/xx once, then served
                    await settle(ini)
                    assert (await ini.execute(0, read16(8), read_length=8 * BS)).status == 0
            # the backend's LUN reset ended the commands there: no abort of each
            assert backend.aborts_sent == before
            assert backend._ini is not None and backend._ini.sent_commands() == set()
        assert backend.logins == logins


async def test_clear_task_set_amid_reads_leaves_nothing_behind(tmp_path: Path) -> None:
    async with pt_daemon(tmp_path) as (daemon, port, _):
        backend = backend_of(daemon)
        async with two_initiators(port) as (a, b):
            for _ in range(3):
                mine = submit_reads(a, 0)
                theirs = submit_reads(b, 4096)
                with trio.fail_after(5):
                    assert await a.task_management(F.CLEAR_TASK_SET, 0) == R.COMPLETE
                assert set(await outcomes(a, mine, 0.3)) <= {0, None}
                assert set(await outcomes(b, theirs, 0.3)) <= {0, None}
                await settle(b)  # (2F/00 if B lost commands)
            with trio.fail_after(10):
                while daemon.units["pt"].task_count() or (
                    backend._ini is not None and backend._ini.sent_commands()
                ):
                    await trio.sleep(0.05)


async def test_task_management_while_the_backend_is_down_is_answered(tmp_path: Path) -> None:
    async with pt_daemon(tmp_path) as (daemon, port, tgt):
        backend = backend_of(daemon)
        async with await connect(port, NAME_A) as a:
            await settle(a)
            mine = submit_reads(a, 0)
            tgt.kill()
            for function in (F.ABORT_TASK_SET, F.CLEAR_TASK_SET, F.LOGICAL_UNIT_RESET,
                             F.I_T_NEXUS_RESET):  # fmt: skip
                with trio.fail_after(5):
                    assert await a.task_management(function, 0) == R.COMPLETE
            assert set(await outcomes(a, mine, 1)) <= {0, 2, None}
            with trio.fail_after(5):
                r = await a.execute(0, read16(0), read_length=8 * BS)
            assert r.status == 2  # retryable: NOT READY / ABORTED COMMAND / UA
            await trio.to_thread.run_sync(tgt.start)
            with trio.fail_after(30):
                while (await a.execute(0, read16(0), read_length=8 * BS)).status != 0:
                    await trio.sleep(0.1)
        assert backend.connected
