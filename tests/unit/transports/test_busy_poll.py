"""The depth-1 busy-poll: it sees the socket's next bytes, gives way to any other
work Trio has, stays within its budget and backs off while it does not pay."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import trio
import trio.testing

from pyscst.transports.iscsi import busy_poll
from pyscst.transports.iscsi.busy_poll import BACKOFF, BusyPoll, loop_handles

#: the largest budget the config allows
LONG_US = 1000


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


@contextlib.asynccontextmanager
async def another_connection_parked() -> AsyncIterator[tuple[socket.socket, list[bytes]]]:
    """Another connection's reader parked in Trio's epoll set: its peer (send
    it bytes, as the test must, or the reader never ends) and what it read."""
    other_a, other_b = socket.socketpair()
    other_a.setblocking(False)
    woke: list[bytes] = []

    async def other_reader() -> None:
        await trio.lowlevel.wait_readable(other_a)
        woke.append(other_a.recv(10))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_reader)
            await trio.testing.wait_all_tasks_blocked()  # parked in Trio's epoll set
            yield other_b, woke
    finally:
        other_a.close()
        other_b.close()


async def test_the_installed_trio_lets_us_find_its_epoll_set_and_run_queue() -> None:
    # if a Trio upgrade moves these, polling silently turns off: fail loudly instead
    handles = loop_handles()
    assert handles is not None and handles.epoll_fd >= 0
    assert len(handles.runq) == 0  # (only this task, and it is running)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)
        assert len(handles.runq) == 1  # the very queue Trio runs tasks from


async def test_bytes_already_waiting_are_seen(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.send(b"x" * 48)
    poller = BusyPoll(ours.fileno(), LONG_US)
    assert poller.ready()
    assert ours.recv(100) == b"x" * 48
    assert (poller.hits, poller.misses) == (1, 0)


async def test_bytes_arriving_during_the_poll_are_seen(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    poller = BusyPoll(ours.fileno(), 2_000_000)  # two seconds: ample for the thread below
    # a plain thread writes while the poll runs (the poll never yields to Trio)
    writer = threading.Timer(0.002, peer.send, args=(b"y",))
    writer.start()
    try:
        assert poller.ready()
    finally:
        writer.join()
    assert ours.recv(10) == b"y"
    assert poller.hits == 1


async def test_nothing_coming_gives_up_and_backs_off(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    poller = BusyPoll(ours.fileno(), 20)
    assert not poller.ready()
    assert poller.misses == 1
    # the next BACKOFF waits park at once, without polling (no miss counted)
    for _ in range(BACKOFF):
        assert not poller.ready()
    assert poller.misses == 1
    assert not poller.ready()  # polling again after the back-off
    assert poller.misses == 2


async def test_other_ready_io_stops_the_poll_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    async with another_connection_parked() as (peer, woke):
        peer.send(b"z")
        poller = BusyPoll(ours.fileno(), 10_000_000)  # ten seconds
        started = time.monotonic()
        assert not poller.ready()
        # gave way at once instead of spending the budget (nothing in the
        # poll yields, so only the clock can tell)
        assert time.monotonic() - started < 5
        assert poller.misses == 1
    assert woke == [b"z"]  # and the other connection's bytes were served


async def test_a_runnable_task_means_no_poll(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    poller = BusyPoll(ours.fileno(), LONG_US * 1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)  # runnable, not yet run
        assert not poller.ready()
    assert (poller.hits, poller.misses) == (0, 0)  # a poll that ran would count a miss


async def test_no_budget_never_polls(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.send(b"x")
    poller = BusyPoll(ours.fileno(), 0)
    assert not poller.ready()  # even with bytes waiting: the caller parks as usual
    assert (poller.hits, poller.misses) == (0, 0)


# -- sleep: the blocking wait of a depth-1 reader whose disk I/O is in flight --


def _sleep_while_a_thread_sends(
    sleep: Callable[[float], bool], sock: socket.socket, data: bytes
) -> None:
    """``sleep`` (a poller's ``sleep`` or ``sleep_for_socket``) with a ten-second
    cap while a thread sends ``data`` on ``sock`` 5 ms in: it must say yes, and
    be woken by those bytes, not by the cap."""
    writer = threading.Timer(0.005, sock.send, args=(data,))
    writer.start()
    started = time.monotonic()
    try:
        assert sleep(10.0)
    finally:
        writer.join()
    assert time.monotonic() - started < 5


async def test_sleep_ends_when_the_socket_turns_readable(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    poller = BusyPoll(ours.fileno(), 0)  # (no busy-poll budget: sleep does not need one)
    _sleep_while_a_thread_sends(poller.sleep, peer, b"y")
    assert ours.recv(10) == b"y"


async def test_sleep_gives_way_to_another_connection_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # the starvation guard: bytes for another connection (a descriptor in
    # Trio's epoll set) end the sleep, and that connection is then served
    ours, _ = pair
    async with another_connection_parked() as (peer, woke):
        _sleep_while_a_thread_sends(BusyPoll(ours.fileno(), 0).sleep, peer, b"z")
    assert woke == [b"z"]


async def test_sleep_never_passes_a_trio_deadline(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    poller = BusyPoll(ours.fileno(), 0)
    # (the scope's deadline is the loop's next one: the one sleep() must honour)
    with trio.CancelScope(deadline=trio.current_time() + 0.2):  # noqa: ASYNC100
        started = time.monotonic()
        assert poller.sleep(10.0)
        slept = time.monotonic() - started
    assert 0.1 < slept < 5  # up to the deadline, not the ten seconds


async def test_sleep_is_capped(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    poller = BusyPoll(ours.fileno(), 0)
    started = time.monotonic()
    assert poller.sleep(0.01)
    assert 0.005 < time.monotonic() - started < 5


@pytest.mark.parametrize("method", ["sleep", "sleep_for_socket"])
async def test_no_sleep_while_a_task_is_runnable(
    pair: tuple[socket.socket, socket.socket], method: str
) -> None:
    ours, _ = pair
    sleep = getattr(BusyPoll(ours.fileno(), 0), method)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)  # runnable, not yet run
        started = time.monotonic()
        assert not sleep(10.0)
        assert time.monotonic() - started < 5


def test_no_sleep_on_another_clock(pair: tuple[socket.socket, socket.socket]) -> None:
    # a MockClock's virtual time means nothing to poll(2): never block on it
    ours, _ = pair

    async def main() -> bool:
        return BusyPoll(ours.fileno(), 0).sleep(10.0)

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) is False


async def test_no_sleep_while_a_task_waits_for_idleness(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    poller = BusyPoll(ours.fileno(), 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.testing.wait_all_tasks_blocked)
        handles = loop_handles()
        assert handles is not None
        while not handles.runner.waiting_for_idle:
            await trio.lowlevel.checkpoint()  # (until it is registered as waiting for idleness)
        started = time.monotonic()
        assert not poller.sleep(10.0)
        assert time.monotonic() - started < 5


async def test_tasks_woken_in_the_same_pass_are_never_made_to_wait(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # Trio runs a pass from a list it took out of the run queue: a task woken
    # in the same pass (another connection's reader, the engine's reaper) is
    # neither in runq nor in the epoll set. The first of two such tasks to run
    # must not sleep (before: it slept out the whole cap) nor busy-poll.
    ours, _ = pair
    poller = BusyPoll(ours.fileno(), LONG_US)
    parked: list[trio.lowlevel.Task] = []
    results: list[tuple[bool, bool, float]] = []

    async def woken() -> None:
        parked.append(trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)
        started = time.monotonic()
        polled = poller.ready()
        slept = poller.sleep(0.2)
        results.append((polled, slept, time.monotonic() - started))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(woken)
        nursery.start_soon(woken)
        await trio.testing.wait_all_tasks_blocked()
        for task in parked:
            trio.lowlevel.reschedule(task)  # both runnable in the next pass
    first = results[0]
    assert first[:2] == (False, False) and first[2] < 0.1
    assert (poller.hits, poller.misses) == (0, 1)  # (only the second one polled)
    assert results[1][1]  # (and slept: nothing was left in its pass)


# -- sleep_for_socket: an idle depth-1 reader's wait for its next PDU --


async def test_sleep_for_socket_says_yes_only_when_its_own_bytes_woke_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    _sleep_while_a_thread_sends(BusyPoll(ours.fileno(), 0).sleep_for_socket, peer, b"y")
    assert ours.recv(10) == b"y"


async def test_sleep_for_socket_woken_by_another_connection_backs_off(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # another connection's bytes end the sleep: the caller parks in Trio (which
    # serves that connection), and the next BACKOFF waits park at once
    ours, peer = pair
    poller = BusyPoll(ours.fileno(), 0)
    async with another_connection_parked() as (other, woke):
        writer = threading.Timer(0.005, other.send, args=(b"z",))
        writer.start()
        try:
            assert not poller.sleep_for_socket(10.0)
        finally:
            writer.join()
    assert woke == [b"z"]
    peer.send(b"x")  # our own bytes are there now, yet the back-off holds
    for _ in range(BACKOFF):
        assert not poller.sleep_for_socket(10.0)
    assert poller.sleep_for_socket(10.0)  # and ends: sleeping (not at all) again


async def test_sleep_for_socket_that_times_out_backs_off(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    poller = BusyPoll(ours.fileno(), 0)
    started = time.monotonic()
    assert not poller.sleep_for_socket(0.02)  # an idle connection: nothing came
    assert time.monotonic() - started >= 0.015
    started = time.monotonic()
    for _ in range(BACKOFF):
        assert not poller.sleep_for_socket(10.0)  # at once, no sleep
    assert time.monotonic() - started < 5


async def test_a_loop_not_found_is_looked_for_once(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    # (loop_handles walks the stack: a reader whose Trio it cannot read must not
    # repeat that on every wait; it simply never polls nor sleeps)
    looks: list[None] = []

    def no_handles() -> None:
        looks.append(None)

    monkeypatch.setattr(busy_poll, "loop_handles", no_handles)
    ours, peer = pair
    peer.send(b"x")
    poller = BusyPoll(ours.fileno(), LONG_US)
    for _ in range(3):
        assert not poller.ready()
        assert not poller.sleep(10.0)
        assert not poller.sleep_for_socket(10.0)
    assert len(looks) == 1
