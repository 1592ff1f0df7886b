"""One device under its own supervisor: online, restarting, or offline.

A crash loop in one device must never end the daemon, nor disturb any other
device. So each device's actor and its logical unit run under a supervisor
of their own (OTP's nested supervision), with the device's own restart
budget (``[devices.NAME] max_restarts`` within ``restart_period`` seconds).
While the budget lasts a crashed child is restarted; when it is spent, or
when the device actor finds its backing file truncated or deleted
(devices/store_health.py), the device goes **offline**: its store is closed
and its LU answers every command except INQUIRY, REPORT LUNS and REQUEST
SENSE with NOT READY, LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED
(04/03). That sense is the one SPC-4 has for "this will not get better by
itself: an operator must act", which is the truth; initiators (Linux sd)
fail such commands at once instead of retrying them, and REQUEST SENSE
reports it as the LU's current condition, as SPC asks of a not-ready LU. A
HARDWARE ERROR (3E/01) would claim a fault in the medium, and it cannot be
reported as a condition that goes away. ``restart()`` (``pyscst admin device
restart NAME``) brings it back with a fresh budget and POWER ON, RESET, OR
BUS DEVICE RESET OCCURRED (29/00) for every I_T nexus: to the initiators it
was a power cycle.

The unit keeps the last error as text, never the exception: a kept exception
keeps its traceback and every frame in it alive.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any

import trio

from pyscst.actors.device import DeviceActor
from pyscst.actors.lun import LogicalUnit
from pyscst.actors.supervisor import Budget, Child, Restart, Supervisor, describe
from pyscst.scsi.sense import Asc, Sense, SenseKey

log = logging.getLogger(__name__)

#: what an offline device answers (see the module docstring for why this one)
OFFLINE_SENSE = Sense.of(SenseKey.NOT_READY, Asc.LUN_NOT_READY_MANUAL_INTERVENTION)


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    RESTARTING = "restarting"  # a child crashed; its supervisor brings it back
    OFFLINE = "offline"  # retired: only an operator's restart brings it back


class RestartFailed(Exception):
    """``restart()`` could not reopen the backing store; the device stays offline."""


class DeviceUnit:
    """Supervisor of one device's actor and LU, and the device's service state."""

    def __init__(self, device: DeviceActor, lu: LogicalUnit, budget: Budget) -> None:
        self.device_name = device.cfg.name
        self.name = f"device unit {self.device_name}"
        self.device = device
        self.lu = lu
        self.budget = budget
        #: the last crash or backing-file problem, as text (None: none yet)
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # wall-clock time of it
        #: why the device is offline (None while online or restarting)
        self.offline_reason: str | None = None
        self.crashes = 0
        self._supervisor: Supervisor | None = None
        self._children: dict[str, Child] = {}
        device.on_crash(lu.device_lost)
        device.on_trouble = self._trouble

    # -- state -------------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        if self.offline_reason is not None:
            return DeviceState.OFFLINE
        if not (self.device.running and self.lu.running):
            return DeviceState.RESTARTING
        return DeviceState.ONLINE

    def status(self) -> dict[str, Any]:
        """The state as the admin plane shows it (JSON-able)."""
        return {
            "state": self.state.value,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "offline_reason": self.offline_reason,
            "crashes": self.crashes,
            "max_restarts": self.budget.max_restarts,
            "restart_period": self.budget.period,
        }

    # -- running -----------------------------------------------------------------
    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        supervisor = Supervisor(
            f"device {self.device_name}",
            budget=self.budget,
            on_crash=self._crashed,
            on_give_up=self._gave_up,
        )
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            self._supervisor = supervisor
            try:
                if self.offline_reason is None:
                    self._children["device"] = await supervisor.start(self.device)
                self._children["lu"] = await supervisor.start(self.lu)
            except (OSError, ValueError) as exc:  # the store would not open
                failure = exc
                nursery.cancel_scope.cancel()
            else:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._supervisor = None
                self._children.clear()
        if failure is not None:
            raise failure  # as itself, not wrapped by the nursery

    async def shutdown(self) -> None:
        """Stop the LU first (its commands end), then the device (flush, close)."""
        for key in ("lu", "device"):
            child = self._children.pop(key, None)
            if child is not None:
                child.stop()
                await child.wait_stopped()

    # -- going offline -----------------------------------------------------------
    def _crashed(self, child: Child, exc: Exception) -> None:
        self.crashes += 1
        self._note(f"{child.actor.name} crashed: {describe(exc)}")

    def _gave_up(self, child: Child, reason: str) -> None:
        self.go_offline(reason)

    def _trouble(self, problem: str) -> None:
        self.go_offline(problem)

    def go_offline(self, reason: str) -> None:
        """Retire the device (atomic): close its store, answer 04/03 from now on."""
        if self.offline_reason is not None:
            return
        self.offline_reason = reason
        self._note(reason)
        self.device.offline = OFFLINE_SENSE
        log.error(
            "device %s is offline: %s; `pyscst admin device restart %s` brings it back",
            self.device_name, reason, self.device_name,
        )  # fmt: skip
        child = self._children.get("device")
        if child is not None and not child.stopped.is_set():
            if self.device.running:
                self.lu.device_lost(OFFLINE_SENSE)  # commands in flight end with it
            child.stop()

    def _note(self, text: str) -> None:
        self.last_error = text
        self.last_error_at = time.time()

    # -- coming back ---------------------------------------------------------------
    async def restart(self) -> str:
        """Bring an offline device back (an operator's decision); a sentence says what."""
        supervisor = self._supervisor
        if supervisor is None:
            raise RestartFailed(f"device {self.device_name} is not running")
        state = self.state
        if state is DeviceState.ONLINE:
            return f"device {self.device_name} is online; nothing to restart"
        if state is DeviceState.RESTARTING:
            return f"device {self.device_name} is being restarted by its supervisor"
        supervisor.forget_restarts()
        self.device.offline = None
        try:
            for key, actor in (("device", self.device), ("lu", self.lu)):
                child = self._children.get(key)
                if child is None or child.stopped.is_set():
                    self._children[key] = await supervisor.start(actor, Restart.PERMANENT)
        except (OSError, ValueError) as exc:
            self.device.offline = OFFLINE_SENSE
            reason = f"restart failed: cannot open backing store: {exc}"
            self.offline_reason = reason
            self._note(reason)
            raise RestartFailed(f"device {self.device_name}: {reason}") from None
        self.offline_reason = None
        # to every initiator this was a power cycle of the logical unit
        self.lu.unit_attention(Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET)
        log.info("device %s restarted by the operator: online", self.device_name)
        return f"device {self.device_name} restarted: online"


async def stop_unit(child: Child) -> None:
    """Stop a device unit in order (LU, then device), then its supervisor."""
    unit = child.actor
    if isinstance(unit, DeviceUnit):
        await unit.shutdown()
    child.stop()
    await child.wait_stopped()
