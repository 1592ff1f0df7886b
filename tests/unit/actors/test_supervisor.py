"""The supervisor's restart budget, giving up without escalating, and the root
that never gives up (actors/supervisor.py).

Runs under pytest-trio's ``autojump_clock``: restarts pause (backoff) without the test
waiting for real time, and nothing here asserts a duration.
"""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any

import pytest
import trio
import trio.testing

from pyscst.actors.supervisor import Budget, Child, Supervisor, SupervisorGaveUp


class Boom(RuntimeError):
    """(A Python subclass: builtin exceptions take no weak references.)"""


class Crasher:
    """Starts, then crashes ``crashes`` times (each run one crash), then stays up."""

    def __init__(self, name: str, crashes: int) -> None:
        self.name = name
        self.left = crashes
        self.runs = 0
        self.errors: list[weakref.ref[BaseException]] = []

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        task_status.started()
        await trio.sleep(0.01)
        if self.left > 0:
            self.left -= 1
            exc = Boom(f"{self.name} boom {self.runs}")
            self.errors.append(weakref.ref(exc))
            raise exc
        await trio.sleep_forever()


class Steady:
    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        task_status.started()
        await trio.sleep_forever()


async def settle() -> None:
    """Let every restart and backoff happen (virtual time)."""
    await trio.sleep(120)


async def test_within_budget_a_crashing_child_is_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gave_up: list[str] = []
    sup = Supervisor("dev", budget=Budget(3, 60.0), on_give_up=lambda c, r: gave_up.append(r))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        crasher = Crasher("c", crashes=3)
        child = await sup.start(crasher)
        await settle()
        assert crasher.runs == 4 and child.restarts == 3
        assert gave_up == [] and not child.stopped.is_set()
        nursery.cancel_scope.cancel()


async def test_beyond_budget_the_child_is_retired_and_siblings_live_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gave_up: list[tuple[Child, str]] = []
    crashed: list[str] = []
    sup = Supervisor(
        "dev",
        budget=Budget(2, 60.0),
        on_give_up=lambda c, r: gave_up.append((c, r)),
        on_crash=lambda c, e: crashed.append(str(e)),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        steady = Steady("s")
        await sup.start(steady)
        crasher = Crasher("c", crashes=100)
        child = await sup.start(crasher)
        await settle()
        # 2 restarts allowed: the third crash retires it, and it is not run again
        assert crasher.runs == 3 and len(crashed) == 3
        [(retired, reason)] = gave_up
        assert retired is child and child.stopped.is_set()
        assert reason == "c crashed more than 2 times in 60s (last: Boom: c boom 3)"
        assert steady.runs == 1 and any(ch.actor is steady for ch in sup.children)
        # the supervisor itself still runs and takes new children
        await sup.start(Steady("late"))
        # an operator's restart: a fresh budget
        sup.forget_restarts()
        crasher.left = 2
        await sup.start(crasher)
        await settle()
        assert len(gave_up) == 1 and crasher.runs == 6
        nursery.cancel_scope.cancel()


async def test_the_budget_is_the_supervisors_not_each_childs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """OTP: restarts of all children count together (a device's actor and LU)."""
    gave_up: list[str] = []
    sup = Supervisor("dev", budget=Budget(3, 60.0), on_give_up=lambda c, r: gave_up.append(r))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        a, b = Crasher("a", crashes=2), Crasher("b", crashes=2)
        await sup.start(a)
        await sup.start(b)
        await settle()
        assert len(gave_up) == 1  # 4 crashes in all, 3 allowed
        nursery.cancel_scope.cancel()


async def test_crashes_older_than_the_period_do_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gave_up: list[str] = []
    sup = Supervisor("dev", budget=Budget(1, 5.0), on_give_up=lambda c, r: gave_up.append(r))

    class Slow(Crasher):
        async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            self.runs += 1
            task_status.started()
            await trio.sleep(10)  # one crash every 10 s: never 2 within 5 s
            if self.left > 0:
                self.left -= 1
                raise RuntimeError("slow boom")
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        slow = Slow("slow", crashes=5)
        await sup.start(slow)
        await trio.sleep(200)
        assert slow.runs == 6 and gave_up == []
        nursery.cancel_scope.cancel()


async def test_without_on_give_up_the_supervisor_escalates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = Supervisor("dev", budget=Budget(1, 60.0))
    with pytest.RaisesGroup(SupervisorGaveUp, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start(Crasher("c", crashes=10))
            await settle()


async def test_a_root_without_budget_never_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = Supervisor("root", budget=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        crasher = Crasher("c", crashes=50)
        child = await sup.start(crasher)
        await trio.sleep(600)
        assert crasher.runs == 51 and child.restarts == 50 and not child.stopped.is_set()
        nursery.cancel_scope.cancel()


async def test_no_crash_is_kept_alive_after_it_was_handled(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept exception keeps its traceback and every frame in it alive (the
    old ``Child.last_error``): once handled, nothing may refer to it."""
    # (pytest's log capture keeps each record's exc_info: keep the log out of it)
    monkeypatch.setattr(logging.getLogger("pyscst.actors.supervisor"), "propagate", False)
    sup = Supervisor("dev", budget=Budget(1, 60.0), on_give_up=lambda c, r: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        crasher = Crasher("c", crashes=5)
        child = await sup.start(crasher)
        await settle()
        assert child.stopped.is_set() and len(crasher.errors) == 2
        gc.collect()
        assert [ref() for ref in crasher.errors] == [None, None]
        assert not hasattr(child, "last_error")
        nursery.cancel_scope.cancel()
