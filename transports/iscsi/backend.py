"""The iSCSI backend of a pass-through device: pyscst as initiator to another target.

A ``passthrough`` device with ``backend = "iscsi://host:port/iqn/lun"``
forwards its commands to that LUN through the project's own Trio initiator
(initiator.py). It satisfies the device layer's :class:`ScsiBackend` protocol
(devices/backend.py); the daemon hands :func:`connect_iscsi` to the device
actors, so the device layer never imports the transports (the layer rule).

:meth:`IscsiBackend.run` is the backend's actor body, run in the device
actor's nursery (the device's supervisor supervises it). It logs in (CHAP
when configured), lets the device probe the backend, then serves until the
connection is lost: closed, a PDU it cannot parse, an Async Message asking
us to go, or a command unanswered for ``command_timeout``. Then every
command outstanding ends with :class:`BackendDown` (the initiator of pyscst
hears a retryable status) and it reconnects, with backoff, for ever; a
failed login (CHAP refused, target gone) is retried the same way and logged
once per change of reason. At most ``queue_depth`` commands are in flight
toward the backend. A command whose caller is cancelled (an ABORT TASK, a
reset, a nexus loss at pyscst) is aborted at the backend with ABORT TASK.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from pyscst.devices.backend import (
    RECONNECT_FIRST,
    RECONNECT_MAX,
    BackendDown,
    BackendFault,
    BackendReply,
    BackendSpec,
    LinkState,
)
from pyscst.scsi.command import Buffer, DataDirection, TaskAttribute
from pyscst.transports.iscsi import pdu
from pyscst.transports.iscsi.chap import InitiatorChap
from pyscst.transports.iscsi.initiator import (
    DEFAULT_INITIATOR_NAME,
    CommandRejected,
    ConnectionLost,
    Initiator,
    InitiatorError,
    LoginError,
    Result,
)
from pyscst.transports.iscsi.pdu import ProtocolError

log = logging.getLogger(__name__)

#: login (TCP connect included) must finish within this (seconds)
LOGIN_TIMEOUT = 10.0
_ABORT_TASK = 1
_ABORT_TASK_SET = 2
_LOGICAL_UNIT_RESET = 5
_FUNCTION_COMPLETE = 0


def _chap(spec: BackendSpec) -> InitiatorChap | None:
    chap = spec.chap
    if chap is None:
        return None
    return InitiatorChap(chap.user, chap.secret, chap.target_user, chap.target_secret)


def _why(exc: BaseException) -> str:
    if isinstance(exc, LoginError) and exc.status_class == 2 and exc.status_detail == 1:
        return "login refused: authentication failed (check backend_chap)"
    if isinstance(exc, LoginError):
        return f"login refused: {exc}"
    if isinstance(exc, trio.TooSlowError):
        return f"no login within {LOGIN_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {exc}"


class IscsiBackend(LinkState):
    """One pass-through device's session with its backend target."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec.url)
        self.spec = spec
        self._ini: Initiator | None = None
        self._slots = trio.Semaphore(max(1, spec.queue_depth))
        #: ITT -> when it was sent, for the watchdog (the session's commands)
        self._started: dict[int, int] = {}
        #: the watchdog's tick count: a command stamped with an old tick is late
        self._tick = 0
        self._timed_out: set[int] = set()
        self._resets = 0
        self._reset_wanted = trio.Event()
        #: a LOGICAL UNIT RESET is on its way to the backend (it ends every
        #: command there: no abort of its own is sent meanwhile)
        self._resetting = False
        #: commands given up while a reset was due: it ends them, or, if it
        #: fails, they are aborted one by one after it
        self._after_reset: list[tuple[Initiator, int]] = []
        #: commands given up since the abort task last ran (see _abort_later)
        self._batch: _AbortBatch | None = None
        #: how the last aborts were sent (tests and logs read it)
        self.aborts_sent = {"task": 0, "task_set": 0}
        self._closed = False
        #: how many times it has logged in (tests and the admin plane read it)
        self.logins = 0

    @property
    def connected(self) -> bool:
        return self._up and self._ini is not None

    # --- the actor -----------------------------------------------------------
    async def _serve(self, on_connect: Callable[[], Awaitable[None]]) -> None:
        delay = RECONNECT_FIRST
        while not self._closed:
            try:
                with trio.fail_after(LOGIN_TIMEOUT):
                    ini = await self._login()
            except Exception as exc:  # whatever the peer sent: log, retry
                self._down(_why(exc))
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            self.logins += 1
            try:
                served = await self._session(ini, on_connect)
            except Exception as exc:  # the initiator choked on what the backend sent
                self._down(f"connection failed: {_why(exc)}")
                served = False
            finally:
                self._up = False
                self._ini = None
            if served:
                delay = RECONNECT_FIRST
            await trio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _login(self) -> Initiator:
        spec = self.spec
        return await Initiator.connect(
            spec.host, spec.port,
            initiator_name=spec.initiator_name or DEFAULT_INITIATOR_NAME,
            target_name=spec.target, chap=_chap(spec),
        )  # fmt: skip

    async def _session(self, ini: Initiator, on_connect: Callable[[], Awaitable[None]]) -> bool:
        """One logged-in session until it is lost; True if it got to serve."""
        served = False
        ini.zero_copy_reads = True  # the data goes on to our initiator as it is
        async with ini, trio.open_nursery() as conn:
            self._ini = ini
            self._started.clear()
            self._timed_out.clear()
            conn.start_soon(self._watch, ini, conn.cancel_scope)
            conn.start_soon(self._watchdog, ini)
            try:
                await on_connect()
            except (BackendDown, BackendFault) as exc:
                self._down(f"probe failed: {exc}")
                conn.cancel_scope.cancel()
                return False
            served = True
            self._resets = 0
            self._back_up()
            conn.start_soon(self._send_resets, ini)
        return served

    async def _watch(self, ini: Initiator, scope: trio.CancelScope) -> None:
        """Read what no command claimed; end the session when it is lost."""
        reason = "connection closed by the backend"
        try:
            while True:
                event = await ini.recv_pdu()
                if isinstance(event, ProtocolError):
                    reason = f"backend sent a bad PDU: {event.reason}"
                    break
                if isinstance(event, pdu.AsyncMessage) and event.async_event in (1, 2, 3):
                    # logout requested, connection or session dropped
                    reason = f"backend sent Async Message event {event.async_event}"
                    break
                log.debug("pass-through backend %s: ignored %s", self.spec.url,
                          type(event).__name__)  # fmt: skip
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        self._down(reason)
        scope.cancel()

    async def _send_resets(self, ini: Initiator) -> None:
        while True:
            await self._reset_wanted.wait()
            self._reset_wanted = trio.Event()
            while self._resets:
                self._resets -= 1
                self._resetting = True
                try:
                    complete = await self._reset(ini)
                finally:
                    self._resetting = False
                left, self._after_reset = self._after_reset, []
                for owner, itt in left:
                    if complete and owner is ini:
                        owner.forget(itt)  # (ended by the reset)
                    else:
                        self._abort_later(owner, itt)

    async def _reset(self, ini: Initiator) -> bool:
        """LOGICAL UNIT RESET at the backend. It ends every command we had
        there without an answer (SAM): those still waiting when it is
        complete end BackendDown (retryable) now, not at the watchdog.
        True when the backend said it is complete."""
        with trio.move_on_after(self.spec.command_timeout):
            ended = ini.sent_commands()  # (what the reset reaches: taken as it is sent)
            try:
                response = await ini.task_management(_LOGICAL_UNIT_RESET, self.spec.lun)
            except InitiatorError as exc:
                log.warning("pass-through backend %s: LUN reset failed: %s",
                            self.spec.url, exc)  # fmt: skip
                return False
            log.info("pass-through backend %s: LUN reset, response %d",
                     self.spec.url, response)  # fmt: skip
            if response == _FUNCTION_COMPLETE:
                for itt in ended:
                    ini.forget(itt)
                return True
        return False

    # --- what the device asks -------------------------------------------------
    def reset_lu(self) -> None:
        if self._ini is None:
            return  # a new session is a fresh nexus anyway
        self._resets += 1
        self._reset_wanted.set()

    def start(
        self, cdb: bytes, data_out: Buffer | list[Buffer], read_length: int, attr: TaskAttribute,
        direction: DataDirection | None, done: Callable[[BackendReply | Exception], object],
    ) -> Callable[[], None] | None:
        """``execute`` without a task: the command is queued now and ``done``
        is called once, from the initiator's reader, with the reply or the
        BackendDown / BackendFault ``execute`` would raise. Returns the
        function that aborts it (``done`` hears BackendDown at once, the
        backend an ABORT TASK), or None when it cannot be queued now (not
        connected, no slot free): ``execute`` then waits or says why."""
        ini = self._ini
        if ini is None or not self._up:
            return None
        slots = self._slots
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            return None
        command = _Forwarded(self, ini, done)
        try:
            itt = ini.submit(self.spec.lun, cdb, data_out, read_length, attr,
                             read=direction == DataDirection.READ or None,
                             write=direction == DataDirection.WRITE or None,
                             done=command.complete,
                             quick=command.quick_done)  # fmt: skip
        except (ConnectionLost, RuntimeError):
            slots.release()
            return None
        command.itt = itt
        self._started[itt] = self._tick
        return command.cancel

    async def execute(
        self, cdb: bytes, data_out: Buffer, read_length: int, attr: TaskAttribute,
        direction: DataDirection | None = None,
    ) -> BackendReply:
        slots = self._slots
        try:  # (no checkpoint while a slot is free: one less trip through the scheduler)
            slots.acquire_nowait()
        except trio.WouldBlock:
            await slots.acquire()
        try:
            result = await self._execute(cdb, data_out, read_length, attr, direction)
        finally:
            slots.release()
        return _reply(result)

    async def _execute(
        self, cdb: bytes, data_out: Buffer, read_length: int, attr: TaskAttribute,
        direction: DataDirection | None,
    ) -> Result:
        ini = self._ini
        if ini is None:
            raise BackendDown(self._reason or "not connected")
        try:
            itt = ini.submit(self.spec.lun, cdb, data_out, read_length, attr,
                             read=direction == DataDirection.READ or None,
                             write=direction == DataDirection.WRITE or None)  # fmt: skip
        except (ConnectionLost, RuntimeError) as exc:
            raise BackendDown(str(exc)) from None
        # (no deadline per command: the watchdog finds the ones stuck too long)
        self._started[itt] = self._tick
        try:
            return await ini.wait(itt)
        except trio.Cancelled:
            if self._started.pop(itt, None) is not None:
                self._abort_later(ini, itt)
            raise
        except ConnectionLost as exc:
            if itt in self._timed_out:
                raise BackendDown("the backend did not answer in time") from None
            raise BackendDown(str(exc)) from None
        except CommandRejected as exc:
            raise BackendFault(f"the backend rejected the command: {exc}") from None
        except InitiatorError as exc:  # e.g. Data-In beyond what we asked
            ini.forget(itt)
            raise BackendFault(str(exc)) from None
        finally:
            self._started.pop(itt, None)

    async def _watchdog(self, ini: Initiator) -> None:
        """A command unanswered for ``command_timeout``: the backend is hung;
        drop the session (its commands end BackendDown) and reconnect."""
        timeout = self.spec.command_timeout
        period = min(1.0, timeout / 4)
        ticks = max(1, round(timeout / period))  # (no clock read per command: a tick count)
        while True:
            await trio.sleep(period)
            self._tick += 1
            oldest = self._tick - ticks
            late = [itt for itt, tick in self._started.items() if tick < oldest]
            if late:
                self._timed_out.update(late)
                self._down(f"a command went unanswered for {timeout:g} s")
                await ini.close()
                return

    def _abort_later(self, ini: Initiator, itt: int) -> None:
        """A command whose caller went away (ABORT TASK, a task-set TMF, a
        reset or a lost nexus at pyscst): aborted at the backend soon.
        Commands given up together (a TMF cancels its tasks in one step) are
        aborted together, by :meth:`_abort_batch`."""
        nursery = self._nursery
        if nursery is None:
            ini.forget(itt)
            return
        if ini.withdraw(itt):
            return  # never sent: nothing to abort
        batch = self._batch
        if batch is None or batch.ini is not ini:
            batch = self._batch = _AbortBatch(ini)
            nursery.start_soon(self._abort_batch, batch)
        batch.itts.append(itt)

    async def _abort_batch(self, batch: _AbortBatch) -> None:
        """Abort what was given up in one step, as the backend's one nexus
        (pyscst's session) allows: the backend cannot tell our initiators
        apart, so its task-set function (ABORT TASK SET) would hit every
        command we have there. It is sent only when that is exactly the
        commands to abort (every one we have outstanding there); otherwise
        one ABORT TASK each. During a LOGICAL UNIT RESET nothing is sent:
        the reset ends them all."""
        if self._batch is batch:
            self._batch = None
        ini = batch.ini
        if self._resetting or self._resets:
            # the reset ends them when it is complete (else they are aborted after it)
            self._after_reset += [(ini, itt) for itt in batch.itts]
            return
        outstanding = ini.sent_commands()
        itts = []
        for itt in batch.itts:
            if itt in outstanding:
                itts.append(itt)
            else:
                ini.forget(itt)  # answered meanwhile: nothing to abort
        if not itts:
            return
        if len(itts) > 1 and outstanding == set(itts):
            with trio.move_on_after(self.spec.command_timeout):
                try:
                    response = await ini.task_management(_ABORT_TASK_SET, self.spec.lun)
                except InitiatorError:
                    response = _FUNCTION_COMPLETE  # the connection went: they went with it
                if response == _FUNCTION_COMPLETE:
                    self.aborts_sent["task_set"] += 1
                    for itt in itts:
                        ini.forget(itt)
                    return
                log.info("pass-through backend %s: ABORT TASK SET answered %d; aborting "
                         "task by task", self.spec.url, response)  # fmt: skip
        async with trio.open_nursery() as nursery:
            for itt in itts:
                nursery.start_soon(self._abort, ini, itt)

    async def _abort(self, ini: Initiator, itt: int) -> None:
        """ABORT TASK at the backend for one command."""
        self.aborts_sent["task"] += 1
        with trio.move_on_after(self.spec.command_timeout):
            try:
                await ini.task_management(_ABORT_TASK, self.spec.lun, referenced_task_tag=itt)
            except InitiatorError:
                pass  # the connection went: the command went with it
        ini.forget(itt)

    async def close(self) -> None:
        self._closed = True
        ini = self._ini
        if ini is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await ini.close()


def _reply(result: Result) -> BackendReply:
    """The device's view of how the backend ended a command."""
    if result.response != 0:  # iSCSI "target failure": the command did not run
        raise BackendDown(f"iSCSI response {result.response:#x}")
    residual = 0
    if result.residual_underflow:
        residual = result.residual_count
    elif result.residual_overflow:
        residual = -result.residual_count
    return BackendReply(result.status, result.sense, result.payload, residual)


class _AbortBatch:
    """Commands of one session given up in one step, to abort together."""

    __slots__ = ("ini", "itts")

    def __init__(self, ini: Initiator) -> None:
        self.ini = ini
        self.itts: list[int] = []


class _Forwarded:
    """One command queued by :meth:`IscsiBackend.start`: its slot, its
    watchdog stamp, and the one call of ``done`` (on completion, or at once
    on an abort, whichever comes first)."""

    __slots__ = ("_backend", "_done", "_ini", "itt")

    def __init__(
        self, backend: IscsiBackend, ini: Initiator,
        done: Callable[[BackendReply | Exception], object],
    ) -> None:  # fmt: skip
        self._backend = backend
        self._ini = ini
        self._done: Callable[[BackendReply | Exception], object] | None = done
        self.itt = -1

    def _end(self) -> Callable[[BackendReply | Exception], object] | None:
        done, self._done = self._done, None
        if done is not None:
            backend = self._backend
            backend._started.pop(self.itt, None)
            backend._slots.release()
        return done

    def complete(self, result: Result | None, error: BaseException | None) -> None:
        done = self._end()
        if done is None:
            return  # aborted: its caller has heard already
        outcome: BackendReply | Exception
        if result is not None and result.response == 0 and not (
            result.residual_underflow or result.residual_overflow
        ):
            done(BackendReply(result.status, result.sense, result.payload))  # (the usual)
            return
        if isinstance(error, ConnectionLost):
            timed_out = self.itt in self._backend._timed_out
            outcome = BackendDown("the backend did not answer in time" if timed_out
                                  else str(error))  # fmt: skip
        elif isinstance(error, CommandRejected):
            outcome = BackendFault(f"the backend rejected the command: {error}")
        elif error is not None:  # e.g. Data-In beyond what we asked
            outcome = BackendFault(str(error))
        else:
            assert result is not None
            try:
                outcome = _reply(result)
            except BackendDown as exc:
                outcome = exc
        done(outcome)

    def quick_done(self, status: int, data: memoryview) -> None:
        """The usual end of a command (see Initiator.submit's ``quick``): what
        ``complete`` makes of it, without the Result."""
        done = self._end()
        if done is not None:
            done(BackendReply(status, b"", data))

    def cancel(self) -> None:
        """The caller gave up (ABORT TASK, a reset, a lost nexus at pyscst):
        it hears BackendDown now; the backend hears ABORT TASK."""
        done = self._end()
        if done is None:
            return
        self._backend._abort_later(self._ini, self.itt)
        done(BackendDown("aborted"))


def connect_iscsi(spec: BackendSpec) -> IscsiBackend:
    """The :data:`pyscst.devices.backend.BackendConnector` for ``iscsi://`` backends."""
    if spec.kind != "iscsi":
        raise ValueError(f"not an iSCSI backend: {spec.url}")
    return IscsiBackend(spec)
