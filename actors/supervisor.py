"""Supervisors: run actors as children, restart or retire them when they fail.

An actor is anything with ``async def run(self, task_status)``; it reports
readiness through ``task_status.started()``. A supervisor runs each child in
its own cancel scope (so one child can be stopped alone), catches a child's
crash so siblings live on, and applies the child's restart policy with a
restart budget, as Erlang/OTP's one_for_one does: more than
``budget.max_restarts`` restarts (of all its children together) within
``budget.period`` seconds and the supervisor gives up on the child that
crashed last. What giving up means is the supervisor's owner's choice:
with ``on_give_up`` the child stays down and the owner decides what that
means (a device goes offline, a portal stops listening); without it the
supervisor escalates by failing itself, so its own supervisor decides. A
supervisor with no budget (``budget=None``: the daemon's root) never gives
up; repeated crashes only lengthen the pause before each restart
(``backoff`` doubling per recent crash, at most ``MAX_BACKOFF``), so a child
in a crash loop cannot spin the CPU.

Nothing here keeps an exception object once its crash is handled: a kept
exception holds its traceback and every frame in it alive. ``on_crash``
receives the exception while it is being handled; keep text, not it.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

log = logging.getLogger(__name__)

#: the longest pause before a restart, however often a child crashed (seconds)
MAX_BACKOFF = 5.0


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted after a crash (device handlers, LUs)
    TEMPORARY = "temporary"  # never restarted (sessions: the initiator reconnects)


class Actor(Protocol):
    name: str

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


class SupervisorGaveUp(Exception):
    """A child crashed more often than the restart budget allows."""


@attrs.frozen
class Budget:
    """At most ``max_restarts`` restarts within ``period`` seconds."""

    max_restarts: int = 5
    period: float = 10.0


@attrs.define(eq=False)
class Child:
    """The supervisor's handle on one running child."""

    actor: Actor
    restart: Restart
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    restarts: int = 0

    def stop(self) -> None:
        """Ask the child to stop (cancels its scope); see :meth:`wait_stopped`."""
        self.scope.cancel()

    async def wait_stopped(self) -> None:
        await self.stopped.wait()


def describe(exc: BaseException) -> str:
    """One line naming a crash (what ``last_error`` fields keep instead of the exception)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a nursery's wrapping says nothing
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """One_for_one supervision of a dynamic set of children in one nursery."""

    def __init__(
        self,
        name: str,
        *,
        budget: Budget | None = Budget(),
        backoff: float = 0.1,
        on_exit: Callable[[Child], None] | None = None,
        on_crash: Callable[[Child, Exception], None] | None = None,
        on_give_up: Callable[[Child, str], None] | None = None,
    ) -> None:
        self.name = name
        self.budget = budget
        self.backoff = backoff
        self.children: set[Child] = set()
        self._nursery: trio.Nursery | None = None
        self._on_exit = on_exit
        self._on_crash = on_crash
        self._on_give_up = on_give_up
        #: when recent restarts happened (all children: the budget is the supervisor's)
        self._restarts: deque[float] = deque()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the children run in; returns when cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep(math.inf)

    async def start(self, actor: Actor, restart: Restart = Restart.PERMANENT) -> Child:
        """Start ``actor`` and wait until it reports itself started."""
        if self._nursery is None:
            raise RuntimeError(f"supervisor {self.name} is not running")
        child = Child(actor, restart)
        self.children.add(child)
        await self._nursery.start(self._supervise, child)
        return child

    def start_soon(self, actor: Actor, restart: Restart = Restart.TEMPORARY) -> Child:
        """Start ``actor`` without waiting for it to be ready."""
        if self._nursery is None:
            raise RuntimeError(f"supervisor {self.name} is not running")
        child = Child(actor, restart)
        self.children.add(child)
        self._nursery.start_soon(self._supervise, child)
        return child

    def forget_restarts(self) -> None:
        """Start the budget afresh (an operator brought a retired child back)."""
        self._restarts.clear()

    async def _supervise(self, child: Child, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        status = _StartedFlag(task_status)
        try:
            with child.scope:
                while True:
                    given_up: str | None = None
                    try:
                        await child.actor.run(task_status=status)
                    except Exception as exc:
                        if not status.started_once:
                            raise  # a child that cannot start fails its starter
                        log.exception("%s: child %s crashed", self.name, child.actor.name)
                        if self._on_crash is not None:
                            self._on_crash(child, exc)
                        if child.restart is Restart.TEMPORARY:
                            return
                        if not self._may_restart():
                            given_up = self._gave_up_text(child, exc)
                            if self._on_give_up is None:
                                raise SupervisorGaveUp(given_up) from exc
                    else:
                        if child.restart is not Restart.PERMANENT:
                            return
                    if given_up is not None:
                        # outside the except block: nothing keeps the exception alive
                        log.error("%s: giving up: %s", self.name, given_up)
                        assert self._on_give_up is not None
                        self._on_give_up(child, given_up)
                        return
                    # a crashed permanent child, or one that returned on its own
                    child.restarts += 1
                    await trio.sleep(self._pause())
                    log.info("%s: restarting %s", self.name, child.actor.name)
        finally:
            self.children.discard(child)
            child.stopped.set()
            if self._on_exit is not None:
                self._on_exit(child)

    def _gave_up_text(self, child: Child, exc: Exception) -> str:
        budget = self.budget
        assert budget is not None
        return (
            f"{child.actor.name} crashed more than {budget.max_restarts} times in "
            f"{budget.period:g}s (last: {describe(exc)})"
        )

    def _may_restart(self) -> bool:
        now = trio.current_time()
        recent = self._restarts
        recent.append(now)
        budget = self.budget
        period = budget.period if budget is not None else 60.0
        while recent and now - recent[0] > period:
            recent.popleft()
        return budget is None or len(recent) <= budget.max_restarts

    def _pause(self) -> float:
        """The wait before a restart: ``backoff``, doubled per other recent restart."""
        return float(min(self.backoff * 2 ** max(len(self._restarts) - 1, 0), MAX_BACKOFF))


class _StartedFlag:
    """Forwards the first ``started()`` to the starter; later ones are no-ops,
    so a restarted actor can call it again without error."""

    def __init__(self, task_status: Any) -> None:
        self._task_status = task_status
        self.started_once = False

    def started(self, value: object = None) -> None:
        if not self.started_once:
            self.started_once = True
            self._task_status.started(value)
