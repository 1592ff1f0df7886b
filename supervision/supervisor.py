"""Supervisors: run actors as children, restart or retire them when they fail.

An actor is anything with ``async def run(self, task_status)``; it reports
readiness through ``task_status.started()``. A supervisor runs each child in
its own cancel scope (so one child can be stopped alone), catches a child's
crash so siblings live on, and applies the child's restart policy with an
intensity limit (Erlang's one_for_one): more than ``max_restarts`` crashes
within ``period`` seconds and the supervisor gives up on that child and
escalates by failing itself, so its own supervisor decides.
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


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted after a crash (device handlers, LUs)
    TRANSIENT = "transient"  # restarted after a crash, not after a normal return
    TEMPORARY = "temporary"  # never restarted (sessions: the initiator reconnects)


class Actor(Protocol):
    name: str

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


class SupervisorGaveUp(Exception):
    """A child crashed more often than the restart intensity allows."""


@attrs.define(eq=False)
class Child:
    """The supervisor's handle on one running child."""

    actor: Actor
    restart: Restart
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    crashes: deque[float] = attrs.field(factory=deque)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    last_error: BaseException | None = None
    restarts: int = 0

    def stop(self) -> None:
        """Ask the child to stop (cancels its scope); see :meth:`wait_stopped`."""
        self.scope.cancel()

    async def wait_stopped(self) -> None:
        await self.stopped.wait()


class Supervisor:
    """One_for_one supervision of a dynamic set of children in one nursery."""

    def __init__(
        self,
        name: str,
        *,
        max_restarts: int = 5,
        period: float = 10.0,
        backoff: float = 0.1,
        on_exit: Callable[[Child], None] | None = None,
    ) -> None:
        self.name = name
        self.max_restarts = max_restarts
        self.period = period
        self.backoff = backoff
        self.children: set[Child] = set()
        self._nursery: trio.Nursery | None = None
        self._on_exit = on_exit

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

    async def _supervise(self, child: Child, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        status = _StartedFlag(task_status)
        try:
            with child.scope:
                while True:
                    try:
                        await child.actor.run(task_status=status)
                    except Exception as exc:
                        child.last_error = exc
                        if not status.started_once:
                            raise  # a child that cannot start fails its starter
                        log.exception("%s: child %s crashed", self.name, child.actor.name)
                        if child.restart is Restart.TEMPORARY:
                            return
                        if not self._may_restart(child):
                            raise SupervisorGaveUp(
                                f"{self.name}: {child.actor.name} crashed more than "
                                f"{self.max_restarts} times in {self.period:.0f}s"
                            ) from exc
                        child.restarts += 1
                        await trio.sleep(self.backoff)
                        log.info("%s: restarting %s", self.name, child.actor.name)
                        continue
                    if child.restart is not Restart.PERMANENT:
                        return
                    # a permanent child that returned on its own is restarted
                    await trio.sleep(self.backoff)
        finally:
            self.children.discard(child)
            child.stopped.set()
            if self._on_exit is not None:
                self._on_exit(child)

    def _may_restart(self, child: Child) -> bool:
        now = trio.current_time()
        child.crashes.append(now)
        while child.crashes and now - child.crashes[0] > self.period:
            child.crashes.popleft()
        return len(child.crashes) <= self.max_restarts


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
