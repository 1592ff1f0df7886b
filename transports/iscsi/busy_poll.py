"""Bounded busy-polling for the next PDU of a queue-depth-1 initiator.

Why: at queue depth 1 the initiator sends its next command a few tens of
microseconds after our answer. Parking the reader in Trio for it costs an
``epoll_ctl`` re-arm, an ``epoll_wait``, a scheduler pass, and, on a virtual
machine, a halted vCPU to wake up again with cold caches. Watching the socket
in a short loop instead keeps the CPU and its caches warm: on the 2-vCPU
benchmark VM a 50 µs budget took depth-1 4K reads from about 7,700 to about
13,800 IOPS, with less target CPU per command, not more.

It never works at anyone else's expense:

- it does not start while Trio has a runnable task;
- each round polls Trio's own epoll descriptor beside the socket, so the
  moment any other descriptor Trio waits on is ready (another connection, a
  listener, a thread or signal wake-up) it stops and the reader parks as
  usual; only timers can be late, by at most the budget;
- a wait that the budget did not cover (an idle initiator, other work
  arriving) turns polling off for the next ``BACKOFF`` waits, so a busy
  target with many connections, or an idle one, parks every time.

Trio has no public way to name its epoll descriptor or (cheaply) its run
queue; ``loop_handles`` reaches for them and, where they are not found
(another Trio version, another platform), polling is simply off. A test checks
they are found on the Trio we install.
"""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Sized
from types import FrameType
from typing import Any, NamedTuple

import trio

try:  # (the clock Trio runs on unless told otherwise; another one: no sleep())
    from trio._core._run import SystemClock
except ImportError:  # pragma: no cover
    SystemClock = None  # type: ignore[assignment,misc]

#: waits that park at once after one that polling did not cover
BACKOFF = 32


class LoopHandles(NamedTuple):
    """What the poller watches of the running Trio loop."""

    epoll_fd: int  # its epoll set: readable when another descriptor is ready
    runq: Sized  # its runnable tasks
    runner: Any  # the loop itself (its deadlines, clock and idle waiters: BusyPoll.sleep)
    loop_frame: Any  # the frame of its run loop: the tasks left in this pass (_batch_left)


def loop_handles() -> LoopHandles | None:
    """The running Trio loop's epoll descriptor, run queue, runner and the
    frame of its run loop (whose ``batch`` holds the tasks left in the
    current pass), or None. Call it from a task.

    (``trio.lowlevel.current_statistics()`` counts runnable tasks too, but walks
    every registered descriptor to fill in its I/O figures: O(connections) per
    command. The run queue's length is the one figure needed.)
    """
    try:
        run = trio._core._run
        runner = run.GLOBAL_RUN_CONTEXT.runner
        frame: FrameType | None = sys._getframe()
        while frame is not None and frame.f_code is not run.unrolled_run.__code__:
            frame = frame.f_back
        if frame is None or not isinstance(frame.f_locals.get("batch"), list):
            return None
        epoll_fd = int(runner.io_manager._epoll.fileno())
        runq = runner.runq
        len(runq)
        runner.deadlines.next_deadline  # noqa: B018 (BusyPoll.sleep needs them)
        runner.clock.deadline_to_sleep_time  # noqa: B018
        runner.waiting_for_idle  # noqa: B018
    except (AttributeError, TypeError, ValueError, OSError):
        return None
    return LoopHandles(epoll_fd, runq, runner, frame)


class BusyPoll:
    """One connection's poller; owned by its reader task, used inside Trio."""

    __slots__ = (
        "_budget_ns",
        "_fd",
        "_loop_frame",
        "_no_loop",
        "_poll",
        "_runner",
        "_runq",
        "_skip",
        "_sleep_skip",
        "hits",
        "misses",
    )

    def __init__(self, fd: int, budget_us: int) -> None:
        self._fd = fd
        self._budget_ns = budget_us * 1000
        self._poll: select.poll | None = None
        self._runq: Sized = ()
        self._runner: Any = None
        self._loop_frame: Any = None
        #: loop_handles() found nothing once: it is not looked for again (it
        #: walks the stack; the reader would repeat that on every wait)
        self._no_loop = False
        self._skip = 0
        #: waits that park at once after a sleep_for_socket the socket did not end
        self._sleep_skip = 0
        #: waits polling covered, and those it gave up on
        self.hits = 0
        self.misses = 0

    def ready(self) -> bool:
        """True when the socket turned readable within the budget; False when
        the caller should park in Trio as usual (no budget, backing off,
        other work waiting, or nothing came in time)."""
        if not self._budget_ns:
            return False
        if self._skip:
            self._skip -= 1
            return False
        poll = self._poll or self._open()
        if poll is None:
            self._budget_ns = 0
            return False
        if len(self._runq) or self._batch_left():
            return False  # a task is ready to run: it goes first
        deadline = time.perf_counter_ns() + self._budget_ns
        while True:
            events = poll.poll(0)
            if events:
                if all(fd == self._fd for fd, _ in events):
                    self.hits += 1
                    return True
                break  # Trio has other work: let it run
            if time.perf_counter_ns() >= deadline:
                break
        self.misses += 1
        self._skip = BACKOFF
        return False

    def _batch_left(self) -> bool:
        """Tasks still to run in the loop's current pass. Trio moves its run
        queue into a local list before it runs a pass, so a task woken in
        the same pass as this reader (another connection's reader whose bytes
        came in the same ``epoll_wait``, the engine's reaper) is in neither
        ``runq`` nor the epoll set: without this look it would wait out the
        whole poll (found so: a 10 ms stall per such command)."""
        return bool(self._loop_frame.f_locals.get("batch"))

    def _open(self) -> select.poll | None:
        if self._no_loop:
            return None
        handles = loop_handles()
        if handles is None:
            self._no_loop = True
            return None
        poll = self._poll = select.poll()
        poll.register(self._fd, select.POLLIN)
        poll.register(handles.epoll_fd, select.POLLIN)
        self._runq = handles.runq
        self._runner = handles.runner
        self._loop_frame = handles.loop_frame
        return poll

    def sleep(self, cap: float) -> bool:
        """Sleep in the kernel (no spinning) until the socket or any descriptor
        Trio waits on is readable, for at most ``cap`` seconds and never past
        Trio's next deadline; True when it slept (whatever woke it), False
        when it must not block now: a runnable task, a
        ``wait_all_tasks_blocked`` waiter, a clock that is not the system's,
        or no loop handles.

        Why: a reader whose chunk's disk I/O is in flight has nothing else to
        do, and neither has Trio, until that I/O completes (its eventfd is in
        Trio's epoll set) or something else arrives; one ``poll`` here, then
        the completions reaped by the reader itself, costs less than parking:
        Trio's loop pass, a wake of the engine's reaper task and its
        ``epoll_ctl`` re-arm (devices/io_engine.py, ``reap_inline``). It is
        Trio's own wait, done early: every other connection, the listener,
        thread and signal wake-ups end it at once (the epoll descriptor), and
        timers are never late (the deadline bound)."""
        return self._sleep(cap) is not None

    def sleep_for_socket(self, cap: float) -> bool:
        """:meth:`sleep` while an idle depth-1 connection waits for its next
        PDU: True when it was the socket that woke it (the caller reads at
        once, without parking in Trio), False when the caller should park as
        usual (it may not block now, or something else woke it, or the cap
        passed: the next ``BACKOFF`` waits then park at once, so a connection
        among busier ones, or an idle one, does not pay a poll per wait).

        Why: after a busy-poll that found nothing, parking costs Trio's loop
        pass, the task's wake and two ``epoll_ctl`` calls before the bytes
        are read; at queue depth 1 (a tape streaming records, one initiator's
        synchronous I/O) that is paid twice per command, on the latency the
        initiator sees."""
        if self._sleep_skip:
            self._sleep_skip -= 1
            return False
        events = self._sleep(cap)
        if events is None:
            return False
        fd = self._fd
        for ready_fd, _ in events:
            if ready_fd == fd:
                return True
        self._sleep_skip = BACKOFF
        return False

    def _sleep(self, cap: float) -> list[tuple[int, int]] | None:
        """The poll of :meth:`sleep`: what it returned, or None when it must
        not block now."""
        poll = self._poll or self._open()
        if poll is None or len(self._runq) or self._batch_left():
            return None
        runner = self._runner
        if runner.waiting_for_idle or type(runner.clock) is not SystemClock:
            return None
        timeout = min(cap, runner.clock.deadline_to_sleep_time(runner.deadlines.next_deadline()))
        if timeout <= 0:
            return None
        return poll.poll(timeout * 1000)
