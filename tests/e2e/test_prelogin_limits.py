"""D4: what an unauthenticated peer may hold, and for how long.

The gate's policy is checked sans-I/O; the rest against a real daemon started
with the usual fd soft limit of 1024: 2,000 stalled connections (nothing sent,
or half a header) must not keep a legitimate login out; a silent connection is
dropped after ``login_timeout``; a logged-in connection stalled mid-PDU after
``pdu_timeout``. (The 2 s latency figure is asserted by ``make fuzz``, where
timing belongs; here the login only has to complete.)
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
import trio

from pyscst.transports.iscsi.admission import PreloginGate, Verdict
from pyscst.transports.iscsi.initiator import Initiator
from tests.daemon import running_daemon_async
from tests.fuzz.stall import HALF_HEADER, Staller, fd_soft_limit, raise_own_fd_limit, timed_login

TARGET = "iqn.2026-11.org.pyscst:prelogin"


# -- the gate -------------------------------------------------------------------------


def test_gate_refuses_beyond_the_per_address_bound() -> None:
    gate = PreloginGate()
    for i in range(3):
        assert gate.admit(("a", i), "10.0.0.1", total=100, per_address=3).verdict is Verdict.ADMIT
    assert gate.admit("x", "10.0.0.1", 100, 3).verdict is Verdict.REFUSE_ADDRESS
    assert gate.address_full("10.0.0.1", 3) and not gate.address_full("10.0.0.2", 3)
    assert gate.admit("y", "10.0.0.2", 100, 3).verdict is Verdict.ADMIT  # others unaffected
    gate.leave(("a", 0))
    assert gate.admit("x", "10.0.0.1", 100, 3).verdict is Verdict.ADMIT
    assert gate.refused == 2


def test_gate_full_evicts_the_oldest_idle_connection_not_the_newcomer() -> None:
    gate = PreloginGate()
    for name in ("old", "busy", "young"):
        gate.admit(name, name, total=3, per_address=10)
    gate.progress("old")  # it sent a Login Request: not evictable
    answer = gate.admit("new", "new", 3, 10)
    assert answer == type(answer)(Verdict.ADMIT, "busy")
    assert len(gate) == 3 and gate.count("busy") == 0
    gate.progress("young")
    gate.progress("new")
    # everyone has made progress: now the newcomer is the one refused
    assert gate.admit("late", "late", 3, 10).verdict is Verdict.REFUSE_FULL
    gate.leave("busy")  # (already gone: idempotent)
    gate.leave("old")
    assert gate.admit("late", "late", 3, 10).verdict is Verdict.ADMIT
    assert gate.evicted == 1


# -- a real daemon --------------------------------------------------------------------


async def _closed_by_target(sock: trio.SocketStream, within: float) -> bool:
    with trio.move_on_after(within):
        try:
            while await sock.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


@pytest.mark.parametrize(
    "sources",
    [["127.0.0.2"], [f"127.0.1.{i}" for i in range(1, 251)]],
    ids=["one-address", "250-addresses"],
)
async def test_2000_stalled_connections_do_not_lock_out_a_login(
    tmp_path: Path, sources: list[str]
) -> None:
    raise_own_fd_limit(4096)
    async with running_daemon_async(tmp_path, target=TARGET, preexec_fn=fd_soft_limit(1024)) as d:
        staller = Staller(d.host, d.port, 2000, sources)
        await trio.to_thread.run_sync(staller.start)
        try:
            await trio.sleep(0.5)
            with trio.fail_after(15):
                elapsed = await timed_login(d.host, d.port, TARGET)
            print(f"login with {staller.open_now} stalled connections: {elapsed:.3f}s")
            assert staller.opened >= 1900  # the attack really happened
        finally:
            await trio.to_thread.run_sync(staller.stop)
        log = d.stderr_text()
        assert "raised the open-file limit (RLIMIT_NOFILE soft) from 1024 to" in log
        assert "refused a connection from" in log or "evicting the oldest idle" in log


async def test_silent_connection_is_dropped_after_login_timeout(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, iscsi={"login_timeout": 1}) as d:
        silent = await trio.open_tcp_stream(d.host, d.port)
        half = await trio.open_tcp_stream(d.host, d.port)
        await half.send_all(HALF_HEADER)
        assert await _closed_by_target(silent, 10)  # (was 30 s, and only at login)
        assert await _closed_by_target(half, 10)
        await silent.aclose()
        await half.aclose()


async def test_logged_in_connection_stalled_mid_pdu_is_dropped(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, target=TARGET, iscsi={"pdu_timeout": 1}) as d:
        async with await Initiator.connect(d.host, d.port, target_name=TARGET) as ini:
            await ini.execute(0, bytes(6))
            # half a NOP-Out header, then nothing
            await ini.send_raw(struct.pack(">BB", 0x40, 0x80) + bytes(18))
            with trio.fail_after(10):
                with pytest.raises(Exception):  # noqa: B017 (ConnectionLost/EndOfChannel)
                    while True:
                        await ini.recv_pdu()
        # an idle (between PDUs) logged-in connection stays: only a begun PDU is timed
        async with await Initiator.connect(d.host, d.port, target_name=TARGET) as ini:
            await ini.execute(0, bytes(6))
            await trio.sleep(2.5)
            assert (await ini.execute(0, bytes(6))).status == 0
        assert "a PDU stalled incomplete for 1s" in d.stderr_text()


async def test_a_slow_but_steady_data_segment_is_not_dropped(tmp_path: Path) -> None:
    """The bound is per PDU part: a data segment arriving in pieces over more
    than pdu_timeout in total, but each PDU completing in time, is fine."""
    async with running_daemon_async(tmp_path, target=TARGET, iscsi={"pdu_timeout": 1}) as d:
        async with await Initiator.connect(d.host, d.port, target_name=TARGET) as ini:
            await ini.execute(0, bytes(6))
            for _ in range(4):
                assert await ini.nop(b"x" * 4000) == b"x" * 4000
                await trio.sleep(0.5)


def test_per_address_bound_closes_excess_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_daemon_async(
            tmp_path, target=TARGET, iscsi={"max_prelogin_per_address": 4}
        ) as d:
            socks = []
            for _ in range(8):
                s = socket.socket()
                s.bind(("127.0.0.3", 0))
                s.connect((d.host, d.port))
                s.sendall(HALF_HEADER)  # (silent ones wait in the kernel: TCP_DEFER_ACCEPT)
                socks.append(s)
                time.sleep(0.05)  # accepted in this order
            deadline = time.monotonic() + 10
            closed: set[int] = set()
            while len(closed) < 4 and time.monotonic() < deadline:
                for i, s in enumerate(socks):
                    s.settimeout(0.05)
                    try:
                        if s.recv(10) == b"":
                            closed.add(i)
                    except (TimeoutError, OSError):
                        pass
            assert closed == {4, 5, 6, 7}  # the newcomers, not the first four
            for s in socks:
                s.close()
            with trio.fail_after(10):
                await timed_login(d.host, d.port, TARGET)

    trio.run(main)


def test_reader_counts_pdu_parts_so_a_stall_is_told_from_progress() -> None:
    """The connection times one PDU part (header, data segment) at a time:
    the reader's ``parts`` moves whenever one completes, and only then."""
    from pyscst.transports.iscsi import pdu_types as P
    from pyscst.transports.iscsi.pdu_codec import encode_pdu
    from pyscst.transports.iscsi.pdu_reader import PduReader

    wire = encode_pdu(P.NopOut(immediate=True, itt=1, data=b"x" * 1000))
    reader = PduReader()
    reader.feed(wire)  # whole: the fast path, one part
    assert reader.next_event() is not None and reader.parts == 1 and not reader.in_pdu
    reader.feed(wire[:20])  # half a header
    assert reader.next_event() is None and reader.in_pdu and reader.parts == 1
    reader.feed(wire[20:100])  # header done, data begun
    assert reader.next_event() is None and reader.in_pdu and reader.parts == 2
    reader.feed(wire[100:])
    assert reader.next_event() is not None and reader.parts == 3 and not reader.in_pdu


async def test_silent_connections_take_no_descriptor(tmp_path: Path) -> None:
    """TCP_DEFER_ACCEPT: a connection that sends nothing waits in the kernel,
    not as one of the daemon's descriptors (an initiator always speaks first)."""
    import os

    async with running_daemon_async(tmp_path, target=TARGET) as d:
        before = len(os.listdir(f"/proc/{d.pid}/fd"))
        socks = []
        for _ in range(200):
            s = socket.socket()
            s.bind(("127.0.0.4", 0))
            s.connect((d.host, d.port))
            socks.append(s)
        await trio.sleep(0.5)
        assert len(os.listdir(f"/proc/{d.pid}/fd")) - before < 20
        with trio.fail_after(10):
            await timed_login(d.host, d.port, TARGET)
        for s in socks:
            s.close()
