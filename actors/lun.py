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

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from pyscst.actors.faults import FaultEngine
from pyscst.actors.faults_lu import run_with_faults
from pyscst.actors.lu_stats import IoStats, StatsSnapshot
from pyscst.actors.messages import (
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
    reply_to,
)
from pyscst.actors.persistent_reservations import PortResolver
from pyscst.actors.pr_state import Registrant
from pyscst.actors.pr_store import AptplStore
from pyscst.actors.reservations import (
    Reservations,
    plan_prout,
    plan_spc2,
    plan_spc2_drop,
)
from pyscst.actors.shared_state import (
    SHARED_RESETS,
    FenceSwitch,
    LocalReservationStore,
    Plan,
    ReservationStore,
    ResvChange,
)
from pyscst.actors.unit_attention import UnitAttentionQueue
from pyscst.devices.device_type import DeviceType, check_ready_for
from pyscst.devices.spc import SPC_TABLE
from pyscst.scsi.alua import check_access
from pyscst.scsi.cdb import NEEDS_AWAIT, OpSpec, OpTable, Pending
from pyscst.scsi.command import (
    Buffer,
    DataDirection,
    Nexus,
    ScsiCommand,
    TaskAttribute,
    TransportGone,
)
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status

log = logging.getLogger(__name__)

_INQUIRY = 0x12
#: an empty span of active LBAs (above every LBA)
_NO_SPAN_LO = 1 << 64
_REQUEST_SENSE = 0x03

MAILBOX_DEPTH = 64

# The hot path's enum members as module globals: reading ``Status.GOOD`` goes
# through EnumType.__getattr__'s slot on CPython 3.11 (hundreds of
# instructions each, several per command); a module global is one dict probe.
_GOOD = Status.GOOD
_WRITE = DataDirection.WRITE
_ORDERED = TaskAttribute.ORDERED
_ACA = TaskAttribute.ACA
_HEAD_OF_QUEUE = TaskAttribute.HEAD_OF_QUEUE
_now_ns = time.perf_counter_ns


class NexusState:
    """What the LU keeps per I_T nexus: its UA queue and execution contexts."""

    __slots__ = ("contexts", "gone", "nexus", "stats", "tasks", "ua")

    def __init__(self, nexus: Nexus) -> None:
        self.nexus = nexus
        self.ua = UnitAttentionQueue()
        #: this nexus' share of the LU's statistics (the LU adds them up)
        self.stats = IoStats()
        #: the nexus is gone: its stats were folded into the LU's, and its
        #: last commands (cancelled, finishing late) count there too
        self.gone = False
        self.tasks: dict[int, Task] = {}
        self.contexts: dict[tuple[int, bool], CommandContext] = {}


class CommandContext:
    """The :class:`pyscst.scsi.command.ExecContext` a device handler sees (one per mapping)."""

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

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._lu.start_background(fn)


class Task:
    """One command in the task set."""

    __slots__ = (
        "_scope",
        "atomic",
        "cmd",
        "ctx",
        "device",
        "done",
        "error",
        "failure",
        "finished",
        "lba",
        "nblocks",
        "ordered",
        "pending",
        "seq",
        "spec",
        "started_ns",
        "state",
        "tas",
        "writes",
    )

    def __init__(self, cmd: ScsiCommand, state: NexusState, ctx: CommandContext, seq: int) -> None:
        self.cmd = cmd
        self.state = state
        self.ctx = ctx
        self.seq = seq
        #: made on first use: a command done on the fast path never needs one
        self._scope: trio.CancelScope | None = None
        self.done: trio.Event | None = None
        self.finished = False
        #: set when aborted by another nexus with TAS=1: answer TASK ABORTED
        self.tas = False
        self.writes = False
        #: an atomic write: overlapping tasks are ordered around it even
        #: under unrestricted reordering (QAM=1)
        self.atomic = False
        #: waits for every older task and holds back younger ones: an ORDERED
        #: task, or a SERIALIZING command (MODE SELECT, START STOP UNIT, ...)
        self.ordered = cmd.attr == _ORDERED
        self.lba = -1
        self.nblocks = 0
        self.spec: OpSpec | None = None
        self.device: DeviceType | None = None
        self.error: ScsiError | None = None
        self.started_ns = 0
        #: sense to answer with when cancelled by a device crash (retryable)
        self.failure: bytes | None = None
        #: the I/O this task waits on without a Trio task of its own (a fast
        #: handler's Pending), until it ends
        self.pending: Pending | None = None

    @property
    def scope(self) -> trio.CancelScope:
        """The command's cancel scope (TMFs cancel it; its task runs inside)."""
        scope = self._scope
        if scope is None:
            scope = self._scope = trio.CancelScope()
        return scope

    def cancel(self) -> None:
        """Abort (TMF, nexus loss, device loss): its scope, and its I/O if
        it waits on one without a task (that ends through the Pending)."""
        self.scope.cancel()
        pending = self.pending
        if pending is not None:
            pending.cancel()

    @property
    def cancelled(self) -> bool:
        return self._scope is not None and self._scope.cancel_called

    async def wait_done(self) -> None:
        if self.finished:
            return
        if self.done is None:
            self.done = trio.Event()
        await self.done.wait()


class LogicalUnit:
    """Actor for one logical unit (one exported device)."""

    def __init__(
        self,
        name: str,
        device_source: Callable[[], DeviceType],
        core_table: OpTable,
        faults: FaultEngine | None = None,
        pr_path: Path | None = None,
        standby: Callable[[], DeviceType | None] | None = None,
        store: ReservationStore | None = None,
        fence: FenceSwitch | None = None,
    ) -> None:
        self.name = name
        #: while ``device_source`` raises (the device is down): the device that
        #: still answers INQUIRY and REQUEST SENSE (SPC: those work on an LU
        #: that is not ready), or None
        self._standby = standby
        #: where reservations are kept: the APTPL file (state_dir/pr/<device>.json,
        #: loaded on the first start), or a cluster's etcd (actors/shared_state.py)
        if store is None:
            store = LocalReservationStore(AptplStore(pr_path) if pr_path is not None else None)
        self._pr_store = store
        store.attach(self.apply_shared, self.apply_remote_reset)
        #: a cluster node's fence: while it is up, no command touches the medium
        self._fence = fence
        self._pr_lock = trio.Lock()
        self._faults = faults
        self._device_source = device_source
        self._core_table = core_table
        self._table: OpTable | None = None
        self._table_device: DeviceType | None = None
        self._table_source: OpTable | None = None
        #: what decides UA exemption while no device answers (it is down)
        self._spc_table = core_table.merged(SPC_TABLE)
        self._nursery: trio.Nursery | None = None
        self._mailbox_send, self._mailbox_recv = trio.open_memory_channel[Envelope[Any] | Any](
            MAILBOX_DEPTH
        )
        self._nexuses: dict[tuple[str, str], NexusState] = {}
        #: the context ``submit`` used last (see there)
        self._last_ctx: CommandContext | None = None
        self._active: dict[int, Task] = {}
        self._ordered: dict[int, Task] = {}
        self._writes_active = 0
        #: the LBAs every task in ``_active`` lies within (only ever widened
        #: while the set is not empty): a command outside it overlaps none, so
        #: ``_blockers`` skips its scan (a sequential stream of writes at
        #: queue depth 32 scanned 31 tasks a command)
        self._span_lo = _NO_SPAN_LO
        self._span_hi = -1
        #: atomic writes in the task set (ordered around even under QAM=1)
        self._atomic_active = 0
        self._seq = 0
        self.reservations = Reservations()
        self.stats_commands = 0
        self._stats = IoStats()
        #: CHECK CONDITIONs sent, by sense key (errors only: the good path pays nothing)
        self.sense_key_counts: dict[int, int] = {}

    # -- actor plumbing -------------------------------------------------
    @property
    def mailbox(self) -> trio.MemorySendChannel[Any]:
        return self._mailbox_send

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        saved = self._pr_store.initial()
        if saved is not None:
            self.reservations.apply(saved)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                async for item in self._mailbox_recv:
                    self._handle(item)
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()
                for task in list(self._active.values()):
                    if task.pending is not None:  # (no task of theirs to cancel)
                        task.cancel()

    def start_background(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` beside the task set (a device's background operation):
        no TMF or nexus loss cancels it, only the LU's own end."""
        nursery = self._nursery
        if nursery is None:
            raise ScsiError.check(SenseKey.NOT_READY, Asc.LUN_NOT_READY_CAUSE_NOT_REPORTABLE)
        nursery.start_soon(fn)

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
                reply_to(reply, TmfResponse.TASK_DOES_NOT_EXIST)
                return
            self._cancel_and_reply([task], TmfResponse.COMPLETE, reply)
        elif isinstance(msg, QueryTask):
            state = self._nexuses.get(_key(msg.nexus))
            found = state is not None and msg.tag in state.tasks
            reply_to(reply, TmfResponse.SUCCEEDED if found else TmfResponse.COMPLETE)
        elif isinstance(msg, QueryTaskSet):
            state = self._nexuses.get(_key(msg.nexus))
            found = state is not None and bool(state.tasks)
            reply_to(reply, TmfResponse.SUCCEEDED if found else TmfResponse.COMPLETE)
        elif isinstance(msg, AbortTaskSet):
            state = self._nexuses.get(_key(msg.nexus))
            tasks = list(state.tasks.values()) if state else []
            self._cancel_and_reply(tasks, TmfResponse.COMPLETE, reply)
        elif isinstance(msg, ClearTaskSet):
            tasks = self._abort_all(by=msg.nexus)
            self._cancel_and_reply(tasks, TmfResponse.COMPLETE, reply)
        elif isinstance(msg, ResetLogicalUnit):
            tasks = self._abort_all(by=msg.nexus)
            if self.reservations.holder is not None:
                self.reservations.reset()
                self._share(plan_spc2_drop(None))
            device = self._device_or_none()
            if device is not None:
                if msg.asc is Asc.POWER_ON_OCCURRED:
                    device.power_on()
                else:
                    device.reset()
            self.raise_ua(msg.asc)
            store = self._pr_store
            if store.shared and msg.asc in SHARED_RESETS:
                # the LU is every node's: it is reset on all of them before "complete"
                self._cancel_and_reply(
                    tasks, TmfResponse.COMPLETE, reply, lambda: store.announce_reset(msg.asc)
                )
            else:
                self._cancel_and_reply(tasks, TmfResponse.COMPLETE, reply)
        else:
            log.error("%s: unknown request %r", self.name, msg)
            reply_to(reply, TmfResponse.REJECTED)

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
        return device is not None and device.tas

    def _cancel_and_reply(
        self,
        tasks: list[Task],
        response: TmfResponse,
        reply: trio.MemorySendChannel[Any],
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Cancel now, atomically with the TMF's arrival (a task allowed to run
        on until a spawned task got to cancel it could still answer GOOD, and
        the TMF would then say "complete" too); answer once they are done."""
        for task in tasks:
            task.cancel()
        assert self._nursery is not None
        self._nursery.start_soon(self._reply_when_done, tasks, response, reply, then)

    async def _reply_when_done(
        self,
        tasks: list[Task],
        response: TmfResponse,
        reply: trio.MemorySendChannel[Any],
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        for task in tasks:
            await task.wait_done()
        if then is not None:
            try:
                await then()
            except ScsiError as exc:
                log.warning("%s: reset not shared with the other nodes: %s", self.name, exc)
        reply_to(reply, response)

    def apply_remote_reset(self, asc: Asc) -> None:
        """Another node reset this LU (atomic): every task here is aborted, the
        device's reset hook runs, every nexus here gets ``asc``."""
        tasks = self._abort_all(by=None)
        for task in tasks:
            task.cancel()
        device = self._device_or_none()
        if device is not None:
            device.reset()
        self.raise_ua(asc)
        log.info("%s: reset through another node (%d tasks aborted)", self.name, len(tasks))

    def _nexus_loss(self, msg: NexusLoss) -> list[Task]:
        """End the nexus' tasks (silently) and what it held; returns those tasks."""
        key = _key(msg.nexus)
        state = self._nexuses.get(key)
        tasks = list(state.tasks.values()) if state is not None else []
        for task in tasks:
            task.cancel()
        if self.reservations.holder == msg.nexus:
            self.reservations.nexus_lost(msg.nexus)
            self._share(plan_spc2_drop(msg.nexus))
        device = self._device_or_none()
        if device is not None:
            device.nexus_lost(msg.nexus)
        if msg.reset:
            self._state_for(msg.nexus).ua.add(Asc.I_T_NEXUS_LOSS_OCCURRED)
        else:
            gone = self._nexuses.pop(key, None)
            if gone is not None:
                gone.gone = True
                self._stats.merge(gone.stats)
        return tasks

    async def reset_nexus(self, nexus: Nexus) -> None:
        """I_T NEXUS RESET, called by the session. The state changes at once
        (atomic, like ``submit``), so the very next command of the nexus sees
        I_T NEXUS LOSS OCCURRED; returns when the nexus' tasks have left."""
        for task in self._nexus_loss(NexusLoss(nexus, reset=True)):
            await task.wait_done()

    def device_lost(self, reason: Sense | None = None) -> None:
        """The device handler crashed (atomic): every command in flight ends with
        ABORTED COMMAND (retryable) and every nexus gets DEVICE INTERNAL RESET.
        With ``reason`` (the device was taken offline) they end with that sense
        instead, and no unit attention: becoming not ready raises none (SPC-4)."""
        failure = reason or Sense.of(SenseKey.ABORTED_COMMAND, Asc.INTERNAL_TARGET_FAILURE)
        sense = failure.encode()
        for task in self._active.values():
            if not task.finished:
                task.failure = sense
                task.cancel()
        if reason is None:
            self.raise_ua(Asc.DEVICE_INTERNAL_RESET)
        log.warning("%s: device %s; %d commands aborted", self.name,
                    "handler crashed" if reason is None else "taken offline",
                    len(self._active))  # fmt: skip

    # -- unit attentions ----------------------------------------------------
    def raise_ua(
        self, asc: Asc, exclude: Nexus | None = None, target: str | None = None
    ) -> None:
        """Queue ``asc`` for every nexus of this LU (but ``exclude``; only those
        through ``target`` when given: an access state change of its ports)."""
        for state in self._nexuses.values():
            nexus = state.nexus
            if (exclude is None or nexus != exclude) and (
                target is None or nexus.target_name == target
            ):
                state.ua.add(asc)

    def _state_for(self, nexus: Nexus) -> NexusState:
        key = _key(nexus)
        state = self._nexuses.get(key)
        if state is None:
            state = self._nexuses[key] = NexusState(nexus)
            state.ua.add(Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET)
        return state

    # -- the command path ---------------------------------------------------
    def current_device(self) -> DeviceType | None:
        """The device now serving this LU (None while it is down)."""
        return self._device_or_none()

    def _device_or_none(self) -> DeviceType | None:
        try:
            return self._device_source()
        except ScsiError:
            return None

    def table(self, device: DeviceType) -> OpTable:
        # (a pass-through device learns its command set from its backend, so
        # its table may change while it is the same device)
        if (
            self._table is None
            or self._table_device is not device
            or self._table_source is not device.table
        ):
            self._table = self._core_table.merged(device.table)
            self._table_device = device
            self._table_source = device.table
        return self._table

    def _context(self, nexus: Nexus, lun: int, read_only: bool) -> CommandContext:
        """The execution context of ``nexus`` through one mapping (made on first use)."""
        state = self._state_for(nexus)
        ctx = state.contexts.get((lun, read_only))
        if ctx is None:
            ctx = state.contexts[(lun, read_only)] = CommandContext(self, state, lun, read_only)
        self._last_ctx = ctx
        return ctx

    def submit(self, cmd: ScsiCommand, lun: int, read_only: bool) -> None:
        """Accept one command into the task set (atomic; never awaits)."""
        # The context of the last command, if this one comes through the same
        # mapping of the same nexus (the usual case: one session streaming),
        # spares the key tuple and two dict probes; a nexus that went (its
        # state dropped, ``gone``) or any other mapping looks it up again.
        ctx = self._last_ctx
        if (
            ctx is None
            or ctx._state.nexus is not cmd.nexus
            or ctx.lun != lun
            or ctx.read_only is not read_only
            or ctx._state.gone
        ):
            ctx = self._context(cmd.nexus, lun, read_only)
        state = ctx._state
        if self._nursery is None:
            self._device_source()  # the device's own reason (offline), if it has one
            raise ScsiError.check(SenseKey.NOT_READY, Asc.LUN_NOT_READY_CAUSE_NOT_REPORTABLE)
        if cmd.tag in state.tasks:
            # An overlapped tag. SAM-5 5.11 would abort the nexus' task set and
            # answer OVERLAPPED COMMANDS ATTEMPTED; this LU does not: it logs, the
            # newer task takes the tag (TMFs naming it reach that one) and the older
            # one still runs to its answer, leaving the tag to the newer when done.
            log.warning("%s: overlapped tag %#x from %s", self.name, cmd.tag, cmd.nexus)
        self._seq += 1
        task = Task(cmd, state, ctx, self._seq)
        self.stats_commands += 1
        task.started_ns = _now_ns()
        self._prepare(task)
        if not self._completed_now(task):
            self._enter(task)
            self._nursery.start_soon(self._run_task, task)

    def _enter(self, task: Task) -> None:
        """Put ``task`` in the task set, where TMFs and ordering see it. A
        command finished inside ``submit`` never gets here: nothing could
        observe it between arrival and answer."""
        self._active[task.seq] = task
        task.state.tasks[task.cmd.tag] = task
        lba = task.lba
        if lba >= 0:
            if lba < self._span_lo:
                self._span_lo = lba
            if lba + task.nblocks > self._span_hi:
                self._span_hi = lba + task.nblocks
        if task.ordered:
            self._ordered[task.seq] = task
        if task.writes:
            self._writes_active += 1
            if task.atomic:
                self._atomic_active += 1

    def _completed_now(self, task: Task) -> bool:
        """Run ``task`` to completion right here if nothing makes it wait.

        The common command (a page-cache read, a write whose data came as
        immediate data, an error found on arrival) never needs to await, and a
        spawned task costs more than the command itself. Such a command runs
        in arrival order with no checkpoint, so it needs no cancel scope: it
        leaves the task set before anything else runs and no TMF can observe
        it half done.
        Anything else (a wait for older tasks, a store that would block, data
        still to come, fault rules armed) returns False and gets its task.
        """
        cmd = task.cmd
        error = task.error
        data: Buffer | None = None
        if error is None:
            # (no asserts here: _prepare set spec and device when error is None)
            spec: OpSpec = task.spec  # type: ignore[assignment]
            fast = spec.fast
            if fast is None:
                return False
            faults = self._faults
            if faults is not None and faults.command_armed:
                return False
            # (blockers are older tasks in the task set: with none there, none;
            # an ordered task with nothing older may run now)
            if self._active and (
                task.ordered
                or ((self._ordered or self._writes_active or task.writes) and self._blockers(task))
            ):
                return False
            # No checkpoint runs in here, so nothing can cancel it: the command is
            # atomic to every TMF (its scope is only made if it needs its task).
            device: DeviceType = task.device  # type: ignore[assignment]
            try:
                readiness = spec.readiness
                if readiness:
                    device.check_ready(readiness)
                result = fast(device, cmd, task.ctx)
            except ScsiError as exc:
                error = exc
                data = exc.data
            except Exception:
                log.exception("%s: command %r failed", self.name, cmd)
                error = ScsiError.check(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
            else:
                if result is NEEDS_AWAIT:
                    return self._await_data(task)
                if isinstance(result, Pending):
                    # its I/O is queued: in the task set, answered when it ends
                    self._enter(task)
                    self._answer_when_done(task, result)
                    return True
                data = result  # type: ignore[assignment]
        if error is None:
            status, sense = _GOOD, None
        else:
            status, sense = error.status, self._encode_sense(error.sense)
        transport = cmd.transport
        if not transport.respond_now(cmd, status, sense, data):
            if error is not None and data is None:
                return False  # not executed: the task path answers when it can
            assert self._nursery is not None
            self._enter(task)
            self._nursery.start_soon(self._answer_later, task, status, sense, data)
            return True
        task.finished = True
        if error is None:
            # _account's GOOD case, inline (this is nearly every command)
            state = task.state
            read = 0
            if data is not None:
                read = len(data)
                if read > cmd.expected_length:
                    read = cmd.expected_length
            (self._stats if state.gone else state.stats).record(
                _now_ns() - task.started_ns,
                read,
                cmd.transfer_length if cmd.direction == _WRITE else 0,
                False,
            )
        else:
            self._account(task, status, data)
        transport.command_finished(cmd)
        return True

    def _await_data(self, task: Task) -> bool:
        """A write whose fast handler found its data-out incomplete (R2Ts
        needed): if the transport can fetch it without a task waiting
        (``data_later``), keep the command in the task set and run its fast
        handler again when the data is in (``_data_arrived``); False: the
        command gets its task, as before.

        A task that awaits the Data-Out costs four scheduler passes per
        command (spawn, R2T, wake on the data, answer), more than the
        command itself at queue depth 1 (a tape's stream of 256 KiB records).
        TMFs still work by cancellation: ``Task.cancel`` cancels the Pending,
        the transport stops soliciting and finishes it, and the command
        leaves as an aborted task would."""
        cmd = task.cmd
        if cmd.direction is not _WRITE:
            return False
        later = cmd.transport.data_later(cmd)
        if later is None:
            return False
        self._enter(task)
        task.pending = later
        later.then(functools.partial(self._data_arrived, task))
        return True

    def _data_arrived(self, task: Task, result: BaseException | None) -> None:
        """The data-out of an ``_await_data`` command has all arrived (None)
        or will not (the exception): run its fast handler again now, and
        answer as ``_pending_done`` does."""
        task.pending = None
        if isinstance(result, TransportGone) and not task.cancelled:
            # the connection dropped while its data was coming: aborted, unanswered
            self._leave(task, None, None)
            return
        outcome: Any = result
        if result is None and not task.cancelled:
            outcome = self._fast_again(task)
            if isinstance(outcome, Pending):
                self._answer_when_done(task, outcome)
                return
        self._pending_done(task, outcome)

    def _fast_again(self, task: Task) -> Any:
        """The fast handler of a command that was waiting for its data-out,
        with the checks ``_execute`` makes at execution time; its result, or
        the exception it raised."""
        spec = task.spec
        device = task.device
        assert spec is not None and spec.fast is not None and device is not None
        try:
            self._check_at_execution(device, spec)
            return spec.fast(device, task.cmd, task.ctx)
        except Exception as exc:  # (answered by _pending_done: ScsiError as such)
            return exc

    def _answer_when_done(self, task: Task, pending: Pending) -> None:
        """``task`` (in the task set) waits on ``pending`` without a Trio task;
        a TMF cancels it through ``Task.cancel``; ``_pending_done`` answers."""
        task.pending = pending
        pending.then(functools.partial(self._pending_done, task))

    def _pending_done(self, task: Task, result: Any) -> None:
        """A Pending command's I/O ended (see scsi.cdb.Pending): answer it as
        ``_run_task`` would have, an abort included (TAS, device loss)."""
        task.pending = None
        nursery = self._nursery
        if result is NEEDS_AWAIT:  # (the handler after all: a short read, ...)
            if nursery is None:
                self._leave(task, None, None)
            else:
                nursery.start_soon(self._run_task, task)
            return
        data: Buffer | None = None
        if task.cancelled:
            if task.tas:
                status, sense = Status.TASK_ABORTED, None
            elif task.failure is not None:
                status, sense = Status.CHECK_CONDITION, task.failure
            else:
                self._leave(task, None, None)  # aborted: nothing is answered
                return
        elif isinstance(result, ScsiError):
            status, sense = result.status, self._encode_sense(result.sense)
            data = result.data  # (data sent with the condition: a pass-through ILI)
        elif isinstance(result, BaseException):
            log.error("%s: command %r failed", self.name, task.cmd, exc_info=result)
            status = Status.CHECK_CONDITION
            sense = self._encode_sense(
                Sense.of(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
            )
        else:
            status, sense, data = _GOOD, None, result
        cmd = task.cmd
        if cmd.transport.respond_now(cmd, status, sense, data):
            self._leave(task, status, data)
        elif nursery is not None:
            nursery.start_soon(self._answer_later, task, status, sense, data)
        else:
            self._leave(task, None, None)

    async def _answer_later(
        self, task: Task, status: Status, sense: bytes | None, data: Buffer | None
    ) -> None:
        """A command that executed synchronously but whose answer must wait for
        the rest of its unsolicited data-out."""
        cmd = task.cmd
        answered: Status | None = None
        try:
            with task.scope:
                await cmd.transport.send_response(cmd, status, sense, data)
                answered = status
        finally:
            self._leave(task, answered, data)

    async def _run_task(self, task: Task) -> None:
        cmd = task.cmd
        transport = cmd.transport
        #: the status the initiator got; None: aborted, nothing was answered
        answered: Status | None = None
        data: Buffer | None = None
        try:
            with task.scope:
                gone = False
                try:
                    data = await self._execute(task)
                    status, sense = _GOOD, None
                except ScsiError as exc:
                    status = exc.status
                    sense = self._encode_sense(exc.sense)
                    data = exc.data
                except TransportGone:
                    # the connection dropped while the command waited for it
                    # (its data-out): an aborted task, not a device failure
                    log.debug("%s: command %r aborted: its connection is gone", self.name, cmd)
                    gone = True
                except Exception:
                    log.exception("%s: command %r failed", self.name, cmd)
                    status = Status.CHECK_CONDITION
                    sense = self._encode_sense(
                        Sense.of(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
                    )
                    data = None
                # An abort that landed after the last checkpoint still wins:
                # the TMF answers "complete", so no status may follow.
                if not task.scope.cancel_called and not gone:
                    await transport.send_response(cmd, status, sense, data)
                    answered = status
            if task.scope.cancel_called and task.tas:
                with trio.CancelScope(shield=True):
                    await transport.send_response(cmd, Status.TASK_ABORTED, None, None)
                answered = Status.TASK_ABORTED
            elif task.scope.cancel_called and task.failure is not None:
                with trio.CancelScope(shield=True):
                    await transport.send_response(cmd, Status.CHECK_CONDITION, task.failure, None)
                answered = Status.CHECK_CONDITION
        finally:
            self._leave(task, answered, data)

    def _account(self, task: Task, status: Status | None, data: Buffer | None) -> None:
        """Statistics of one finished command: LU totals and its nexus' share.

        ``status`` is what the initiator was answered; None for a command
        aborted without an answer (TMF, nexus or connection loss), which
        counts as a command but not as an error, and moved no bytes."""
        cmd = task.cmd
        elapsed = _now_ns() - task.started_ns
        error = status is not None and status != _GOOD
        read = written = 0
        if data is not None and status is not None:
            read = min(len(data), cmd.expected_length)
        if status == _GOOD and cmd.direction == _WRITE:
            # bytes that reached the device: a refused or failed write wrote
            # nothing we vouch for
            written = cmd.transfer_length
        state = task.state
        (self._stats if state.gone else state.stats).record(elapsed, read, written, error)

    def _leave(self, task: Task, status: Status | None, data: Buffer | None) -> None:
        """A command is done (answered or aborted): out of the task set, counted,
        and its transport resources freed."""
        self._retire(task)
        self._account(task, status, data)
        task.cmd.transport.command_finished(task.cmd)

    def _retire(self, task: Task) -> None:
        task.finished = True
        active = self._active
        active.pop(task.seq, None)
        if not active:
            self._span_lo, self._span_hi = _NO_SPAN_LO, -1
        if self._ordered:
            self._ordered.pop(task.seq, None)
        if task.writes:
            self._writes_active -= 1
            if task.atomic:
                self._atomic_active -= 1
        tasks = task.state.tasks
        if tasks.get(task.cmd.tag) is task:
            del tasks[task.cmd.tag]
        if task.done is not None:
            task.done.set()

    def _encode_sense(self, sense: Sense | None) -> bytes | None:
        if sense is None:
            return None
        counts = self.sense_key_counts
        counts[sense.key] = counts.get(sense.key, 0) + 1
        device = self._device_or_none()
        return sense.encode(device is not None and device.descriptor_sense)

    def _prepare(self, task: Task) -> None:
        """Arrival-time checks, run synchronously by ``submit`` so they happen in
        command order (Trio does not start spawned tasks in FIFO order): UA,
        CDB, write protection, reservations, and the LBA range that ordering
        needs. A failure is kept on the task and reported when it runs."""
        cmd = task.cmd
        cdb = cmd.cdb
        try:
            state = task.state
            fence = self._fence
            if fence is not None and fence.fenced and not self._ua_exempt(cdb):
                raise _fenced()
            if state.ua.queued and not self._ua_exempt(cdb):
                sense = state.ua.pop()
                assert sense is not None
                raise ScsiError(Status.CHECK_CONDITION, sense)
            if cmd.attr == _ACA:
                # SAM-5: an ACA task with no ACA condition established (never,
                # here: NormACA=0, NACA=1 is refused) is a protocol error
                raise ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_MESSAGE_ERROR)
            device: DeviceType | None
            try:
                device = self._device_source()
            except ScsiError:
                if cdb[0] not in (_INQUIRY, _REQUEST_SENSE) or self._standby is None:
                    raise
                device = self._standby()
                if device is None:
                    raise
            table = self._table  # (self.table(device), without the call when it holds)
            if (
                table is None
                or self._table_device is not device
                or self._table_source is not device.table
            ):
                table = self.table(device)
            spec: OpSpec = table.lookup(cdb)
            port = cmd.port_group
            if port is not None and port.restricted:
                # ALUA: what the state of the port it came in on allows
                # (scsi/alua.py's ACCESS_RULES), before reservations
                check_access(port.state, spec.opcode, spec.service_action)
            if device.medium.busy is not None and not spec.ua_exempt:
                # a sanitize is running: NOT READY now, not after older tasks
                # (the SANITIZE itself, with IMMED=0, is one of them)
                device.medium.check_not_busy()
            writes = spec.writes_medium
            if writes and (task.ctx.read_only or device.read_only):
                raise ScsiError.write_protected()
            self.reservations.check(spec, cdb, cmd.nexus)
            if spec.lba_range is not None:
                task.lba, task.nblocks = spec.lba_range(cdb)
                task.writes = writes
                task.atomic = spec.atomic
            if spec.serializing:
                task.ordered = True
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
        device = task.device
        assert device is not None
        self._check_at_execution(device, spec)
        faults = self._faults
        if faults is not None and faults.command_armed:
            return await run_with_faults(faults, self.name, task, spec)
        return await spec.handler(device, task.cmd, task.ctx)

    def _check_at_execution(self, device: DeviceType, spec: OpSpec) -> None:
        """What a command must pass when it finally runs, on the task path or
        once its data-out is in (``_fast_again``): the one readiness check (an
        older START STOP UNIT, eject or sanitize may have changed it since
        arrival), as the row's flags ask, and the cluster fence for writes
        (fenced while it waited its turn or for its data: not written)."""
        check_ready_for(device, spec)
        fence = self._fence
        if fence is not None and fence.fenced and spec.writes_medium:
            raise _fenced()

    def _blockers(self, task: Task) -> list[Task]:
        """The older tasks ``task`` must wait for: task attributes (SAM-5 8.6)
        and restricted reordering of overlapping writes (QAM=0)."""
        if task.cmd.attr == _HEAD_OF_QUEUE:
            return []
        seq = task.seq
        if task.ordered:
            return [t for s, t in self._active.items() if s < seq]
        blockers = [t for s, t in self._ordered.items() if s < seq] if self._ordered else []
        if (self._writes_active or task.writes) and task.lba >= 0:
            # (Task.overlaps written out: this runs for every active task on
            # every write, 15 method calls a command at queue depth 32)
            lo = task.lba
            hi = lo + task.nblocks
            if lo >= self._span_hi or hi <= self._span_lo:
                pass  # (outside every active task's LBAs: no overlap to find)
            elif not self._unrestricted():
                writes = task.writes
                blockers += [
                    t
                    for s, t in self._active.items()
                    if s < seq and (writes or t.writes) and 0 <= t.lba < hi
                    and lo < t.lba + t.nblocks
                ]  # fmt: skip
            elif task.atomic or self._atomic_active:
                # QAM=1 reorders freely, but never across an atomic write
                atomic = task.atomic
                blockers += [
                    t
                    for s, t in self._active.items()
                    if s < seq and (atomic or t.atomic) and 0 <= t.lba < hi
                    and lo < t.lba + t.nblocks
                ]  # fmt: skip
        return blockers

    async def _wait_turn(self, task: Task) -> None:
        for other in self._blockers(task):
            await other.wait_done()

    def _unrestricted(self) -> bool:
        device = self._device_or_none()
        return device is not None and device.queue_algorithm_modifier == 1

    def _ua_exempt(self, cdb: bytes) -> bool:
        """Does the command's row say a pending UNIT ATTENTION lets it run
        (INQUIRY, REPORT LUNS, REQUEST SENSE: the UA_EXEMPT flag)? Decided
        before the CDB is checked: a UA outranks a bad field."""
        device = self._device_or_none()
        table = self.table(device) if device is not None else self._spc_table
        spec = table.peek(cdb)
        return spec is not None and spec.ua_exempt

    # -- persistent reservations ------------------------------------------------
    def persistent_reserve_in(self, cdb: bytes) -> bytes:
        return self.reservations.read(cdb)

    async def persistent_reserve_out(self, nexus: Nexus, cdb: bytes, params: bytes) -> None:
        """One PROUT: plan, make durable (APTPL) or shared (cluster), commit,
        then raise UAs and abort."""
        await self._update(plan_prout(nexus, cdb, params, self._port_resolver(nexus)))

    async def reserve(self, nexus: Nexus) -> None:
        """SPC-2 RESERVE(6/10)."""
        await self._update(plan_spc2(nexus, reserve=True))

    async def release(self, nexus: Nexus) -> None:
        """SPC-2 RELEASE(6/10)."""
        await self._update(plan_spc2(nexus, reserve=False))

    async def _update(self, plan: Plan) -> None:
        async with self._pr_lock:
            change = await self._pr_store.update(self.reservations.state, plan)
            tasks = self._apply_change(change)
        for task in tasks:
            await task.wait_done()

    def apply_shared(self, change: ResvChange) -> None:
        """A change made on another node (atomic): take its state, raise its
        UAs here, abort the tasks it preempted here."""
        self._apply_change(change)

    def _share(self, plan: Plan) -> None:
        """Make a change this LU already made locally (reset, nexus loss) in the
        shared state too, in the background (a cluster; nothing for one node)."""
        nursery = self._nursery
        if self._pr_store.shared and nursery is not None:
            nursery.start_soon(self._share_now, plan)

    async def _share_now(self, plan: Plan) -> None:
        try:
            await self._update(plan)
        except ScsiError as exc:
            log.warning("%s: reservation change not shared: %s", self.name, exc)

    def _apply_change(self, change: ResvChange) -> list[Task]:
        """Commit ``change`` and tell the nexuses here; returns the tasks aborted."""
        self.reservations.apply(change.state)
        by = change.by
        for notice in change.notices:
            for state in self._nexuses.values():
                if state.nexus != by and notice.who.matches(state.nexus):
                    state.ua.add(notice.asc)
        if change.abort:
            return self._abort_registrants(change.abort, by)
        return []

    def _port_resolver(self, nexus: Nexus) -> PortResolver:
        """RELATIVE TARGET PORT IDENTIFIER -> target port, among the ports seen here."""

        def resolve(relative_port: int) -> str | None:
            if nexus.relative_port == relative_port:
                return nexus.target_port
            for state in self._nexuses.values():
                if state.nexus.relative_port == relative_port:
                    return state.nexus.target_port
            return None

        return resolve

    def _abort_registrants(self, whos: tuple[Registrant, ...], by: Nexus | None) -> list[Task]:
        """PREEMPT AND ABORT: cancel every task of the preempted nexuses (atomic);
        returns them, for the issuer to wait for."""
        tas = self._control_tas()
        tasks: list[Task] = []
        for state in self._nexuses.values():
            if state.nexus == by or not any(w.matches(state.nexus) for w in whos):
                continue
            for task in state.tasks.values():
                if tas:
                    task.tas = True
                else:
                    state.ua.add(Asc.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR)
                tasks.append(task)
        for task in tasks:
            task.cancel()
        return tasks

    # -- introspection ----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._nursery is not None

    def task_count(self) -> int:
        return len(self._active)

    def unit_attentions_queued(self) -> int:
        """UNIT ATTENTION conditions waiting, summed over this LU's nexuses."""
        return sum(len(state.ua) for state in self._nexuses.values())

    def stats(self) -> StatsSnapshot:
        """Totals since start: commands, bytes, errors, latency histogram.
        (Each command is counted once, in its nexus' share; the LU keeps what
        nexuses that are gone had counted.)"""
        return StatsSnapshot.total(
            [self._stats.snapshot(), *(s.stats.snapshot() for s in self._nexuses.values())]
        )

    def nexus_stats(self, nexus: Nexus) -> StatsSnapshot | None:
        """One I_T_L nexus' share of :meth:`stats` (None if it never came here)."""
        state = self._nexuses.get(_key(nexus))
        return state.stats.snapshot() if state is not None else None

    def has_unit_attention(self, nexus: Nexus) -> bool:
        """QUERY ASYNCHRONOUS EVENT: does a UA wait for ``nexus``? (A nexus not
        seen yet has its power-on UA coming.)"""
        state = self._nexuses.get(_key(nexus))
        return state is None or bool(state.ua)

    def unit_attention(self, asc: Asc, nexus: Nexus | None = None) -> None:
        """Queue a UA for ``nexus`` (or every nexus) now (atomic: the admin plane
        and sessions use it so the very next command already sees it)."""
        if nexus is None:
            self.raise_ua(asc)
        else:
            self._state_for(nexus).ua.add(asc)


def _fenced() -> ScsiError:
    """A fenced cluster node: the LU is unreachable through this port (04/0C)."""
    return ScsiError.check(SenseKey.NOT_READY, Asc.LUN_NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE)


def _key(nexus: Nexus) -> tuple[str, str]:
    return (nexus.initiator_port, nexus.target_port)
