"""The logical-unit actor: task set, unit attentions, reservations, task management.

One actor per exported device. It owns everything SAM says a logical unit
shares between initiators: the task set (each command a Trio task under its
own cancel scope in this actor's nursery), the per-nexus UNIT ATTENTION
queues and the reservation state. Command submission is a synchronous
method (atomic: it never awaits); task management and events arrive as
messages on the mailbox. Cancellation *is* task management: ABORT TASK
cancels one scope, LUN RESET the whole task set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from actors.messages import (
    AbortTask,
    AbortTaskSet,
    ClearTaskSet,
    Envelope,
    NexusLoss,
    QueryTask,
    QueryTaskSet,
    RaiseUnitAttention,
    ResetLogicalUnit,
    TmfResponse,
)
from actors.reservations import Reservations
from actors.unit_attention import UnitAttentionQueue
from scsi.cdb import OpFlags, OpSpec, OpTable
from scsi.command import Buffer, Nexus, ScsiCommand, TaskAttribute
from scsi.sense import Asc, ScsiError, Sense, SenseKey, Status

log = logging.getLogger(__name__)

_INQUIRY = 0x12
_REQUEST_SENSE = 0x03
_REPORT_LUNS = 0xA0

MAILBOX_DEPTH = 64


class NexusState:
    """What the LU keeps per I_T nexus: its UA queue and execution contexts."""

    __slots__ = ("contexts", "nexus", "tasks", "ua")

    def __init__(self, nexus: Nexus) -> None:
        self.nexus = nexus
        self.ua = UnitAttentionQueue()
        self.tasks: dict[int, Task] = {}
        self.contexts: dict[tuple[int, bool], CommandContext] = {}


class CommandContext:
    """The :class:`scsi.command.ExecContext` a device handler sees (one per mapping)."""

    __slots__ = ("_lu", "_state", "lun", "read_only")

    def __init__(self, lu: LogicalUnit, state: NexusState, lun: int, read_only: bool) -> None:
        self._lu = lu
        self._state = state
        self.lun = lun
        self.read_only = read_only

    @property
    def nexus(self) -> Nexus:
        return self._state.nexus

    @property
    def lu(self) -> LogicalUnit:
        return self._lu

    def take_sense(self) -> Sense | None:
        return self._state.ua.pop()

    def notify_others(self, asc: Asc) -> None:
        self._lu.raise_ua(asc, exclude=self._state.nexus)

    def notify_all(self, asc: Asc) -> None:
        self._lu.raise_ua(asc)


class Task:
    """One command in the task set."""

    __slots__ = (
        "cmd",
        "ctx",
        "device",
        "done",
        "error",
        "finished",
        "lba",
        "nblocks",
        "scope",
        "seq",
        "spec",
        "state",
        "tas",
        "writes",
    )

    def __init__(self, cmd: ScsiCommand, state: NexusState, ctx: CommandContext, seq: int) -> None:
        self.cmd = cmd
        self.state = state
        self.ctx = ctx
        self.seq = seq
        self.scope = trio.CancelScope()
        self.done: trio.Event | None = None
        self.finished = False
        #: set when aborted by another nexus with TAS=1: answer TASK ABORTED
        self.tas = False
        self.writes = False
        self.lba = -1
        self.nblocks = 0
        self.spec: OpSpec | None = None
        self.device: Any = None
        self.error: ScsiError | None = None

    async def wait_done(self) -> None:
        if self.finished:
            return
        if self.done is None:
            self.done = trio.Event()
        await self.done.wait()

    def overlaps(self, other: Task) -> bool:
        return (
            self.lba >= 0
            and other.lba >= 0
            and self.lba < other.lba + other.nblocks
            and other.lba < self.lba + self.nblocks
        )


class LogicalUnit:
    """Actor for one logical unit (one exported device)."""

    def __init__(self, name: str, device_source: Callable[[], Any], core_table: OpTable) -> None:
        self.name = name
        self._device_source = device_source
        self._core_table = core_table
        self._table: OpTable | None = None
        self._table_device: Any = None
        self._nursery: trio.Nursery | None = None
        self._mailbox_send, self._mailbox_recv = trio.open_memory_channel[Envelope[Any] | Any](
            MAILBOX_DEPTH
        )
        self._nexuses: dict[tuple[str, str], NexusState] = {}
        self._active: dict[int, Task] = {}
        self._ordered: dict[int, Task] = {}
        self._writes_active = 0
        self._seq = 0
        self.reservations = Reservations()
        self.stats_commands = 0

    # -- actor plumbing -------------------------------------------------
    @property
    def mailbox(self) -> trio.MemorySendChannel[Any]:
        return self._mailbox_send

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                async for item in self._mailbox_recv:
                    self._handle(item)
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def _handle(self, item: Any) -> None:
        if isinstance(item, Envelope):
            self._handle_request(item.message, item.reply)
        elif isinstance(item, RaiseUnitAttention):
            if item.nexus is None:
                self.raise_ua(item.asc)
            else:
                self._state_for(item.nexus).ua.add(item.asc)
        elif isinstance(item, NexusLoss):
            self._nexus_loss(item)
        else:
            log.error("%s: unknown message %r", self.name, item)

    def _handle_request(self, msg: Any, reply: trio.MemorySendChannel[Any]) -> None:
        assert self._nursery is not None
        if isinstance(msg, AbortTask):
            state = self._nexuses.get(_key(msg.nexus))
            task = state.tasks.get(msg.tag) if state else None
            if task is None:
                reply.send_nowait(TmfResponse.TASK_DOES_NOT_EXIST)
                return
            self._nursery.start_soon(self._cancel_and_reply, [task], TmfResponse.COMPLETE, reply)
        elif isinstance(msg, QueryTask):
            state = self._nexuses.get(_key(msg.nexus))
            found = state is not None and msg.tag in state.tasks
            reply.send_nowait(TmfResponse.SUCCEEDED if found else TmfResponse.COMPLETE)
        elif isinstance(msg, QueryTaskSet):
            state = self._nexuses.get(_key(msg.nexus))
            found = state is not None and bool(state.tasks)
            reply.send_nowait(TmfResponse.SUCCEEDED if found else TmfResponse.COMPLETE)
        elif isinstance(msg, AbortTaskSet):
            state = self._nexuses.get(_key(msg.nexus))
            tasks = list(state.tasks.values()) if state else []
            self._nursery.start_soon(self._cancel_and_reply, tasks, TmfResponse.COMPLETE, reply)
        elif isinstance(msg, ClearTaskSet):
            tasks = self._abort_all(by=msg.nexus)
            self._nursery.start_soon(self._cancel_and_reply, tasks, TmfResponse.COMPLETE, reply)
        elif isinstance(msg, ResetLogicalUnit):
            tasks = self._abort_all(by=msg.nexus)
            self.reservations.reset()
            self.raise_ua(msg.asc)
            self._nursery.start_soon(self._cancel_and_reply, tasks, TmfResponse.COMPLETE, reply)
        else:
            log.error("%s: unknown request %r", self.name, msg)
            reply.send_nowait(TmfResponse.REJECTED)

    def _abort_all(self, by: Nexus | None) -> list[Task]:
        """Mark every task for abort; other nexuses learn of it per TAS."""
        tas = self._control_tas()
        tasks = list(self._active.values())
        for task in tasks:
            if by is not None and task.state.nexus != by:
                if tas:
                    task.tas = True
                else:
                    task.state.ua.add(Asc.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR)
        return tasks

    def _control_tas(self) -> bool:
        device = self._device_or_none()
        return bool(getattr(device, "tas", False))

    async def _cancel_and_reply(
        self, tasks: list[Task], response: TmfResponse, reply: trio.MemorySendChannel[Any]
    ) -> None:
        for task in tasks:
            task.scope.cancel()
        for task in tasks:
            await task.wait_done()
        reply.send_nowait(response)

    def _nexus_loss(self, msg: NexusLoss) -> None:
        key = _key(msg.nexus)
        state = self._nexuses.get(key)
        if state is not None:
            for task in list(state.tasks.values()):
                task.scope.cancel()
        self.reservations.nexus_lost(msg.nexus)
        if msg.reset:
            self._state_for(msg.nexus).ua.add(Asc.I_T_NEXUS_LOSS_OCCURRED)
        else:
            self._nexuses.pop(key, None)

    # -- unit attentions ----------------------------------------------------
    def raise_ua(self, asc: Asc, exclude: Nexus | None = None) -> None:
        for state in self._nexuses.values():
            if exclude is None or state.nexus != exclude:
                state.ua.add(asc)

    def _state_for(self, nexus: Nexus) -> NexusState:
        key = _key(nexus)
        state = self._nexuses.get(key)
        if state is None:
            state = self._nexuses[key] = NexusState(nexus)
            state.ua.add(Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET)
        return state

    # -- the command path ---------------------------------------------------
    def _device_or_none(self) -> Any:
        try:
            return self._device_source()
        except ScsiError:
            return None

    def table(self, device: Any) -> OpTable:
        if self._table is None or self._table_device is not device:
            self._table = self._core_table.merged(device.table)
            self._table_device = device
        return self._table

    def submit(self, cmd: ScsiCommand, lun: int, read_only: bool) -> None:
        """Accept one command into the task set (atomic; never awaits)."""
        state = self._state_for(cmd.nexus)
        ctx = state.contexts.get((lun, read_only))
        if ctx is None:
            ctx = state.contexts[(lun, read_only)] = CommandContext(self, state, lun, read_only)
        self._seq += 1
        task = Task(cmd, state, ctx, self._seq)
        if self._nursery is None:
            raise ScsiError.check(SenseKey.NOT_READY, Asc.LUN_NOT_READY_CAUSE_NOT_REPORTABLE)
        if cmd.tag in state.tasks:
            # an overlapped tag: SAM-5 says abort the task set of the nexus
            log.warning("%s: overlapped tag %#x from %s", self.name, cmd.tag, cmd.nexus)
        state.tasks[cmd.tag] = task
        self._active[task.seq] = task
        if cmd.attr == TaskAttribute.ORDERED:
            self._ordered[task.seq] = task
        self.stats_commands += 1
        self._prepare(task)
        self._nursery.start_soon(self._run_task, task)

    async def _run_task(self, task: Task) -> None:
        cmd = task.cmd
        transport = cmd.transport
        try:
            with task.scope:
                data: Buffer | None = None
                try:
                    data = await self._execute(task)
                    status, sense = Status.GOOD, None
                except ScsiError as exc:
                    status = exc.status
                    sense = self._encode_sense(exc.sense)
                    data = None
                except Exception:
                    log.exception("%s: command %r failed", self.name, cmd)
                    status = Status.CHECK_CONDITION
                    sense = self._encode_sense(
                        Sense.of(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
                    )
                    data = None
                # An abort that landed after the last checkpoint still wins:
                # the TMF answers "complete", so no status may follow.
                if not task.scope.cancel_called:
                    await transport.send_response(cmd, status, sense, data)
            if task.scope.cancel_called and task.tas:
                with trio.CancelScope(shield=True):
                    await transport.send_response(cmd, Status.TASK_ABORTED, None, None)
        finally:
            self._retire(task)
            transport.command_finished(cmd)

    def _retire(self, task: Task) -> None:
        task.finished = True
        self._active.pop(task.seq, None)
        self._ordered.pop(task.seq, None)
        if task.writes:
            self._writes_active -= 1
        tasks = task.state.tasks
        if tasks.get(task.cmd.tag) is task:
            del tasks[task.cmd.tag]
        if task.done is not None:
            task.done.set()

    def _encode_sense(self, sense: Sense | None) -> bytes | None:
        if sense is None:
            return None
        device = self._device_or_none()
        return sense.encode(bool(getattr(device, "descriptor_sense", False)))

    def _prepare(self, task: Task) -> None:
        """Arrival-time checks, run synchronously by ``submit`` so they happen in
        command order (Trio does not start spawned tasks in FIFO order): UA,
        CDB, write protection, reservations, and the LBA range that ordering
        needs. A failure is kept on the task and reported when it runs."""
        cmd = task.cmd
        cdb = cmd.cdb
        try:
            state = task.state
            if state.ua and cdb[0] not in (_INQUIRY, _REQUEST_SENSE, _REPORT_LUNS):
                sense = state.ua.pop()
                assert sense is not None
                raise ScsiError(Status.CHECK_CONDITION, sense)
            device = self._device_source()
            spec: OpSpec = self.table(device).lookup(cdb)
            flags = spec.flags
            if flags & OpFlags.WRITES_MEDIUM and (task.ctx.read_only or device.read_only):
                raise ScsiError.write_protected()
            self.reservations.check(spec, cdb, cmd.nexus)
            if spec.lba_range is not None:
                task.lba, task.nblocks = spec.lba_range(cdb)
                if flags & OpFlags.WRITES_MEDIUM:
                    task.writes = True
                    self._writes_active += 1
            task.spec = spec
            task.device = device
        except ScsiError as exc:
            task.error = exc

    async def _execute(self, task: Task) -> Buffer | None:
        if task.error is not None:
            raise task.error
        await self._wait_turn(task)
        spec = task.spec
        assert spec is not None
        return await spec.handler(task.device, task.cmd, task.ctx)

    async def _wait_turn(self, task: Task) -> None:
        """Task attributes (SAM-5 8.6) and restricted reordering (QAM=0)."""
        attr = task.cmd.attr
        if attr == TaskAttribute.HEAD_OF_QUEUE:
            return
        if attr == TaskAttribute.ORDERED:
            for other in [t for s, t in self._active.items() if s < task.seq]:
                await other.wait_done()
            return
        if self._ordered:
            for other in [t for s, t in self._ordered.items() if s < task.seq]:
                await other.wait_done()
        if self._writes_active and task.lba >= 0 and not self._unrestricted():
            for other in [
                t
                for s, t in self._active.items()
                if s < task.seq and (t.writes or task.writes) and t.overlaps(task)
            ]:
                await other.wait_done()

    def _unrestricted(self) -> bool:
        device = self._device_or_none()
        return getattr(device, "queue_algorithm_modifier", 0) == 1

    # -- introspection ----------------------------------------------------------
    def task_count(self) -> int:
        return len(self._active)

    def nexus_count(self) -> int:
        return len(self._nexuses)


def _key(nexus: Nexus) -> tuple[str, str]:
    return (nexus.initiator_port, nexus.target_port)

