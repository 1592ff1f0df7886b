"""The io_uring I/O engine: a store's blocking I/O without a thread hop.

Why: a ``trio.to_thread`` round trip per cache miss costs ~60 us of CPU
(thread wake-up, two GIL hand-offs, Trio's re-entry) on top of the I/O; on a
busy core that, not the disk, limits cold reads. Here a request is 64 bytes
written into the submission ring by the task that needs it; a flusher task,
woken once per event-loop tick, submits everything queued in that tick with
one ``io_uring_enter``; completions that finished inline are reaped right
there, the rest signal an eventfd registered with the ring that a reaper task
waits on with ``trio.lowlevel.wait_readable``. The waiting command task is
parked with ``wait_task_rescheduled`` and woken with its result: no Event, no
thread, no copy (the kernel reads into / writes from the command's buffer).
A transport that has worked through a received chunk of PDUs calls its
daemon's :meth:`SubmissionBatch.submit_queued` before it waits for more: the
chunk's requests go to the kernel at once, in one ``io_uring_enter`` per ring (queue depth 1 spends
no loop tick on the flusher, and a deep queue no extra system call); the
flusher still takes whatever was queued elsewhere (command tasks, completion
callbacks) at its turn. A request can also carry a callback instead of a task
(``start_read``/``start_write``): the command that made it has no task at all
and is answered from the callback.

Cancellation (task management, device loss): an aborted command's request is
cancelled in the kernel (IORING_OP_ASYNC_CANCEL), but its task stays parked
until the request's completion arrives, so a buffer the kernel may still be
filling or writing from is never released early; an aborted write leaves old
or new data per block, as the thread path does. The abort itself is delivered
at the task's next checkpoint.

When the ring fails at run time (``io_uring_enter`` errors, fault injection),
:class:`EngineFailedError` reaches every request that was not submitted and
the store redoes it, and all later I/O, through threads.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable

import outcome
import trio

from pyscst.devices import uring

log = logging.getLogger(__name__)

#: how long closing waits for in-flight requests before giving up (seconds)
CLOSE_TIMEOUT = 10.0
#: completions that say "not now" rather than "failed" (the kernel ran out of
#: memory or request slots): a task's request is queued again, a callback
#: request is redone through its task path (the store's ``done(None)``)
TRANSIENT_ERRORS = frozenset({errno.EAGAIN, errno.ENOMEM})
#: the longest a queue-depth-1 reader sleeps for its I/O before it parks in
#: Trio as usual (seconds; anything else ready, or a deadline, ends it sooner):
#: see SubmissionBatch.reap_inline
INLINE_WAIT = 0.01
#: how often a task's request is queued again after such a completion, and
#: the pause before the first retry (seconds; doubled, tripled after that)
TRANSIENT_RETRIES = 3
TRANSIENT_PAUSE = 0.001


class EngineFailedError(OSError):
    """The ring broke before this request was submitted: redo it another way."""


#: what a callback request's ``done`` gets: the result (bytes moved, or a
#: negative errno), or the exception that ended it without a result
#: (:class:`EngineFailedError`: never submitted; OSError: lost in a broken ring)
Completion = Callable[[int | BaseException], object]


class Request:
    """One request on the ring, from its SQE to its completion: the one
    object a request costs (slotted; no separate handle). A callback request
    (:meth:`UringEngine.start_read`) is returned to its caller, whose
    :meth:`cancel` asks the kernel to stop it."""

    __slots__ = ("_engine", "done", "failed", "key", "link", "pin", "result", "task")

    def __init__(self, engine: UringEngine, key: int, pin: object, done: Completion | None) -> None:
        self._engine = engine
        self.key = key
        #: keeps the buffer exported (unresizable, alive) until the completion
        self.pin = pin
        #: a callback request: called once, from the loop, instead of waking a task
        self.done = done
        #: the task parked on it (:meth:`UringEngine._wait`)
        self.task: trio.lowlevel.Task | None = None
        self.result: int | None = None
        self.failed: BaseException | None = None
        #: the request linked behind this one (FUA's fdatasync), cancelled with it
        self.link: Request | None = None

    def cancel(self) -> None:
        """Ask the kernel to stop; ``done`` still comes (with -ECANCELED or
        the result), and only then is the buffer free again."""
        op: Request | None = self
        engine = self._engine
        while op is not None:
            if op.done is not None and op.result is None and engine.broken is None:
                engine._cancel(op)
            op = op.link


class SubmissionBatch:
    """The engines with requests queued since the last submission, and the
    reader tasks that submit them themselves: one per daemon, handed to its
    stores' engines (:meth:`UringEngine.use_batch`, through the device actor)
    and to its connections (through the portal).

    Why an object and not module state: two daemons in one process (the
    tests run many) must not submit each other's rings or treat each
    other's readers as their own, and whoever owns the daemon owns this.
    An engine made without one (tools, tests) has a batch of its own: its
    requests are then submitted by its flusher task, as before.
    """

    __slots__ = ("queued", "readers", "waiting")

    def __init__(self) -> None:
        #: engines that want a submission since :meth:`submit_queued` last ran
        #: (a transport may test it to skip that call: only changed in place)
        self.queued: list[UringEngine] = []
        #: reader tasks that call :meth:`submit_queued` before each of their
        #: checkpoints (:meth:`register_reader`): what they queue wakes no flusher
        self.readers: set[trio.lowlevel.Task] = set()
        #: engines the last :meth:`submit_queued` submitted to, requests then in
        #: flight: whose completions :meth:`reap_inline` looks for
        self.waiting: list[UringEngine] = []

    def register_reader(self, task: trio.lowlevel.Task) -> None:
        """``task`` (a transport's reader) promises to call :meth:`submit_queued`
        before every checkpoint after which it could have queued requests
        (after each received chunk it worked through): the requests it queues
        then wake no flusher task, whose turn would come after that call and
        find nothing to submit (at queue depth 1, one task step a command).
        Requests queued by any other task wake the flusher as always. Undo
        with :meth:`unregister_reader` when the task ends."""
        self.readers.add(task)

    def unregister_reader(self, task: trio.lowlevel.Task) -> None:
        self.readers.discard(task)

    def submit_queued(self) -> None:
        """Submit every listed ring's queued requests now, one ``io_uring_enter`` each.

        Called by a transport when it has worked through a received chunk of
        PDUs and is about to wait for more: the requests its commands queued
        start at once (at queue depth 1 that saves the flusher's loop tick; a
        deep queue's chunk still goes in one system call). Completions found
        inline are handled here, as the flusher would; should one of their
        callbacks queue a request in turn, that one goes in too (a few
        rounds, then the flusher).
        """
        queued = self.queued
        waiting = self.waiting = []
        for _ in range(_SUBMIT_ROUNDS):
            if not queued:
                return
            engines = queued[:]
            queued.clear()
            for engine in engines:
                engine._listed = False
                if engine._flush_wanted and engine.broken is None and engine._ring.fd >= 0:
                    engine._flush()
                    if engine._ops and engine not in waiting:
                        waiting.append(engine)
        for engine in queued:  # (still more: the flushers take it, never stranded)
            engine._wake_flusher()

    def reap_inline(self) -> bool:
        """Complete, from the calling reader, what the engines of the last
        submission have in their completion queues; True if there was any.

        Why: at queue depth 1 a reader that submitted its chunk's I/O sleeps
        until something is ready (the transport's ``BusyPoll.sleep``) and
        then, rather than parking so that Trio wakes each engine's reaper task
        for the eventfd (a loop pass, a task step, an ``epoll_ctl`` re-arm),
        takes the completions itself: the answer goes out from here. The
        eventfd is read first, so the reaper stays parked (nothing is lost: a
        completion posted after that read signals it again). Requests the
        completion callbacks queued are submitted before this returns, as
        the reader promised (:meth:`register_reader`)."""
        engines = self.waiting
        if not engines:
            return False
        self.waiting = []
        got = False
        for engine in engines:
            if engine.broken is None and engine._ring.fd >= 0 and engine._ring.completed():
                engine._reap()
                got = True
        if self.queued:
            self.submit_queued()
        return got


#: how many times submit_queued goes round for requests its completions queued
_SUBMIT_ROUNDS = 4


class UringEngine:
    """One ring serving one store; all methods run in the Trio thread."""

    name = "io_uring"

    def __init__(
        self, ring: uring.Ring, label: str = "", batch: SubmissionBatch | None = None
    ) -> None:
        self._ring = ring
        #: whose submit_queued submits this ring's requests (see SubmissionBatch)
        self._batch = batch if batch is not None else SubmissionBatch()
        self.label = label
        self._ops: dict[int, Request] = {}
        self._next_key = 1  # 0 marks cancel requests, whose answers nobody waits for
        self._flusher: trio.lowlevel.Task | None = None
        self._flush_wanted = False
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None
        self._started = False
        #: why the ring stopped working (None while it works)
        self.broken: str | None = None
        #: requests submitted, submit syscalls made (batching shows as the ratio)
        self.requests = 0
        self.submits = 0
        #: requests with a key from this one on were queued after the last
        #: successful submit: the kernel never saw them
        self._unsubmitted_from = 1
        #: buffers of requests lost in a broken ring: never released
        self._orphans: list[object] = []
        #: in its batch's list of engines with requests to submit
        self._listed = False

    @classmethod
    def create(
        cls, label: str = "", entries: int = 256, batch: SubmissionBatch | None = None
    ) -> UringEngine:
        """Raises :class:`uring.UringUnavailableError` (or OSError) if io_uring cannot work."""
        ring = uring.Ring(entries)
        try:
            ring.register_eventfd()
        except BaseException:
            ring.close()
            raise
        return cls(ring, label, batch)

    def use_batch(self, batch: SubmissionBatch) -> None:
        """Have ``batch`` (the daemon's) submit this ring's requests from now on."""
        old = self._batch
        if old is batch:
            return
        if self._listed:  # (listed in the old one: move, so nothing is stranded there)
            if self in old.queued:
                old.queued.remove(self)
            self._listed = False
        self._batch = batch
        if self._flush_wanted:
            self._flush_wanted = False
            self._want_flush()

    # -- requests -------------------------------------------------------------
    async def read(self, fd: int, buf: memoryview, offset: int, flags: int = 0) -> int:
        """One read(2) at ``offset`` into ``buf``; bytes read (0 at EOF)."""
        addr, pin = uring.buffer_address(buf)
        return await self._run(uring.OP_READ, fd, offset, addr, len(buf), flags, pin)

    def start_read(self, fd: int, buf: memoryview, offset: int, done: Completion) -> Request:
        """Queue one read(2) and return at once; ``done`` is called from the
        loop with its result (never before this returns). No task waits: a
        command whose read misses the cache costs no task of its own (the LU
        answers it from ``done``). The buffer stays pinned until then.
        Raises :class:`EngineFailedError` when the ring cannot take it."""
        addr, pin = uring.buffer_address(buf)
        return self.queue(uring.OP_READ, fd, offset, addr, len(buf), 0, pin, done)

    def start_read_at(
        self, fd: int, addr: int, length: int, pin: object, offset: int, done: Completion
    ) -> Request:
        """As :meth:`start_read`, into memory whose address the caller already
        knows (BLOCKIO's aligned windows: :func:`direct.aligned_window`), so
        the buffer is not looked up through ctypes a second time. ``pin`` must
        keep those ``length`` bytes alive and unmoved until ``done`` (a
        memoryview of a bytearray does: the export forbids resizing)."""
        return self.queue(uring.OP_READ, fd, offset, addr, length, 0, pin, done)

    def start_fsync(self, fd: int, offset: int, length: int, done: Completion) -> Request:
        """Queue a ranged fdatasync (FUA after a cache write); as start_read."""
        return self.queue(uring.OP_FSYNC, fd, offset, 0, length, uring.FSYNC_DATASYNC, None, done)

    def start_write(
        self, fd: int, buf: memoryview, offset: int, done: Completion, datasync: bool = False
    ) -> Request:
        """Queue one write(2) of ``buf`` at ``offset``, with ``datasync`` a
        ranged fdatasync linked behind it (it runs only if the write wrote
        everything: FUA in one submission); return at once. ``done`` gets the
        write's result (bytes written, or its negative errno), or the
        fdatasync's negative errno, from the loop. Raises
        :class:`EngineFailedError` when the ring cannot take it."""
        if buf.readonly:
            buf = memoryview(bytearray(buf))
        addr, pin = uring.buffer_address(buf)
        return self.start_write_at(fd, addr, len(buf), pin, offset, done, datasync)

    def start_write_at(
        self,
        fd: int,
        addr: int,
        n: int,
        pin: object,
        offset: int,
        done: Completion,
        datasync: bool = False,
    ) -> Request:
        """As :meth:`start_write`, from memory whose address the caller
        already knows (see :meth:`start_read_at` for ``pin``)."""
        if not datasync:
            return self.queue(uring.OP_WRITE, fd, offset, addr, n, 0, pin, done)
        self._room(2)  # (a link cannot span two submissions)
        # done once both completions are in (in whichever order they come):
        # the write's result if it failed or was short (the sync then never
        # ran), else the sync's
        results: list[int | BaseException | None] = [None, None]

        def finish(i: int, res: int | BaseException) -> None:
            results[i] = res
            wrote, synced = results
            if wrote is None or synced is None:
                return
            if isinstance(wrote, BaseException) or wrote != n:
                done(wrote)
            else:
                done(synced if isinstance(synced, BaseException) or synced < 0 else n)

        w = self.queue(
            uring.OP_WRITE, fd, offset, addr, n, 0, pin, functools.partial(finish, 0),
            uring.SQE_IO_LINK,
        )  # fmt: skip
        f = self.queue(
            uring.OP_FSYNC, fd, offset, 0, n, uring.FSYNC_DATASYNC, None,
            functools.partial(finish, 1),
        )  # fmt: skip
        w.link = f
        return w

    async def write(self, fd: int, buf: memoryview, offset: int, flags: int = 0) -> int:
        """One write(2) of ``buf`` at ``offset`` (``flags``: RWF_DSYNC for FUA)."""
        if buf.readonly:  # (never from the transports: their buffers are bytearrays)
            buf = memoryview(bytearray(buf))
        addr, pin = uring.buffer_address(buf)
        return await self._run(uring.OP_WRITE, fd, offset, addr, len(buf), flags, pin)

    async def fsync(self, fd: int, datasync: bool = True, offset: int = 0, length: int = 0) -> None:
        """fdatasync (or fsync); with ``length``, of that range only (as
        sync_file_range cannot: this one also flushes the device cache)."""
        flags = uring.FSYNC_DATASYNC if datasync else 0
        await self._run(uring.OP_FSYNC, fd, offset, 0, length, flags, None)

    async def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        # (FALLOCATE carries the length in addr and the mode in len)
        await self._run(uring.OP_FALLOCATE, fd, offset, length, mode, 0, None)

    async def _run(
        self, opcode: int, fd: int, off: int, addr: int, length: int, flags: int, pin: object
    ) -> int:
        for attempt in range(TRANSIENT_RETRIES + 1):
            op = self.queue(opcode, fd, off, addr, length, flags, pin, None)
            res = await self._wait(op)
            if res >= 0:
                return res
            if res == -errno.ECANCELED:
                await trio.lowlevel.checkpoint_if_cancelled()
            elif -res in TRANSIENT_ERRORS and attempt < TRANSIENT_RETRIES:
                # (nothing is in flight now: a cancel during the pause is safe)
                await trio.sleep(TRANSIENT_PAUSE * (attempt + 1))
                continue
            raise OSError(-res, os.strerror(-res))
        raise AssertionError("unreachable")  # pragma: no cover

    def _room(self, n: int) -> None:
        """At least ``n`` free SQEs, or EngineFailedError."""
        if self.broken is not None:
            raise EngineFailedError(errno.EIO, self.broken)
        if not self._started:
            self._start()
        ring = self._ring
        if ring.space() < n:
            self._flush()  # a full ring this tick: submit what is there now
            if self.broken is not None or ring.space() < n:
                if self.broken is None:
                    self._want_flush()  # (what the kernel left: again at the next turn)
                raise EngineFailedError(errno.EAGAIN, self.broken or "submission ring full")

    def queue(
        self,
        opcode: int,
        fd: int,
        off: int,
        addr: int,
        length: int,
        flags: int,
        pin: object,
        done: Completion | None,
        sqe_flags: int = 0,
    ) -> Request:
        """Write one SQE and remember its request: what every ``start_*``
        method comes down to, and what a store's hot path may call directly
        (``done``: a callback request; None: :meth:`_wait` parks a task on
        it). One object and one ``pack_into`` a request; the slow checks
        only when the ring is full, broken or not started yet. Raises
        :class:`EngineFailedError` when the ring cannot take it."""
        ring = self._ring
        if ring.queued >= ring.sq_entries or self.broken is not None or not self._started:
            self._room(1)
        key = self._next_key
        self._next_key = key + 1
        op = Request(self, key, pin, done)
        ring.push(opcode, fd, off, addr, length, flags, key, sqe_flags)
        self._ops[key] = op
        self.requests += 1
        if not self._flush_wanted:
            self._want_flush()
        return op

    def _want_flush(self) -> None:
        """Have what is queued in the SQ submitted: by its batch's
        :meth:`~SubmissionBatch.submit_queued` (the engine is always listed
        there) and by the flusher task, unless the task queuing is one of the
        batch's registered readers (it submits itself)."""
        if not self._flush_wanted:
            self._flush_wanted = True
            batch = self._batch
            if not self._listed:
                self._listed = True
                batch.queued.append(self)
            if batch.readers and trio.lowlevel.current_task() in batch.readers:
                return  # (its submit_queued comes before its next checkpoint)
            self._wake_flusher()

    def _wake_flusher(self) -> None:
        flusher = self._flusher
        if flusher is not None:
            self._flusher = None
            trio.lowlevel.reschedule(flusher)

    async def _wait(self, op: Request) -> int:
        if op.result is None and op.failed is None:
            op.task = trio.lowlevel.current_task()

            def abort(_: Callable[[], object]) -> trio.lowlevel.Abort:
                # Never leave before the completion: the kernel may still be
                # using the buffer. Ask it to stop; the CQE wakes us.
                if op.result is None and op.failed is None and self.broken is None:
                    self._cancel(op)
                return trio.lowlevel.Abort.FAILED

            res: int = await trio.lowlevel.wait_task_rescheduled(abort)
            return res
        await trio.lowlevel.checkpoint()
        if op.failed is not None:
            raise op.failed
        assert op.result is not None
        return op.result

    def _cancel(self, op: Request) -> None:
        ring = self._ring
        if ring.space() == 0:
            return  # the request completes by itself; the abort waits for it
        ring.push(uring.OP_ASYNC_CANCEL, -1, 0, op.key, 0, 0, 0)
        self._want_flush()

    # -- the two pump tasks -----------------------------------------------------
    def _start(self) -> None:
        self._started = True
        self._stopped = trio.Event()
        self._scope = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self._pump, name=f"io_uring {self.label}")

    async def _pump(self) -> None:
        assert self._scope is not None and self._stopped is not None
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._flush_loop)
                    nursery.start_soon(self._reap_loop)
        except Exception as exc:  # the ring broke: nothing may hang on it
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            self._stopped.set()

    async def _flush_loop(self) -> None:
        while True:
            if not self._flush_wanted:
                self._flusher = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_flusher)
            self._flush()
            if self.broken is not None:
                return

    def _abort_flusher(self, _: Callable[[], object]) -> trio.lowlevel.Abort:
        self._flusher = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _flush(self) -> None:
        self._flush_wanted = False
        ring = self._ring
        if ring.queued:
            try:
                ring.submit()
            except OSError as exc:
                self._fail(f"io_uring_enter: {exc.strerror or exc}")
                return
            self.submits += 1
            self._unsubmitted_from = self._next_key
        if ring.completed():
            # Completions posted inside the submission (at queue depth 1 a
            # cached read, every time) signalled the eventfd, for which Trio
            # would wake the reaper to find nothing (an epoll_wait result, a
            # task step, an eventfd read and an epoll_ctl re-arm): _reap drains
            # it before it takes them.
            self._reap()

    async def _reap_loop(self) -> None:
        efd = self._ring._eventfd
        while True:
            await trio.lowlevel.wait_readable(efd)
            self._reap()

    def _reap(self) -> None:
        """Complete what the completion queue holds, the eventfd drained first
        (a completion posted after the drain signals it again)."""
        efd = self._ring._eventfd
        if efd >= 0:
            try:
                os.read(efd, 8)
            except BlockingIOError:
                pass
        self._complete(self._ring.reap())

    def _complete(self, completions: list[tuple[int, int]]) -> None:
        ops = self._ops
        for key, res in completions:
            op = ops.pop(key, None)
            if op is None:
                continue  # a cancel request's own answer
            op.result = res
            op.pin = None
            done = op.done
            if done is not None:
                op.done = None
                try:
                    done(res)
                except Exception:  # (a bug there must not stop the other completions)
                    log.exception("%s: I/O completion callback failed", self.label)
                continue
            task = op.task
            if task is not None:
                op.task = None
                trio.lowlevel.reschedule(task, outcome.Value(res))

    def _fail(self, reason: str) -> None:
        """The ring is unusable: wake every waiter. Requests never submitted
        get EngineFailedError (the store redoes them with threads); requests
        the kernel holds keep their buffers pinned forever (leaked, never
        freed under the kernel) and end with EIO."""
        if self.broken is None:
            log.error("%s: io_uring failed (%s); I/O continues through threads",
                      self.label, reason)  # fmt: skip
        self.broken = reason
        ops = list(self._ops.values())
        self._ops.clear()
        fresh_from = self._unsubmitted_from
        self._unsubmitted_from = self._next_key
        for op in ops:
            if op.key >= fresh_from:
                op.failed = EngineFailedError(errno.EIO, reason)
            else:
                op.failed = OSError(errno.EIO, f"io_uring failed: {reason}")
                self._orphans.append(op.pin)
            done = op.done
            if done is not None:
                op.done = None
                self._call(done, op.failed)
                continue
            task = op.task
            if task is not None:
                op.task = None
                trio.lowlevel.reschedule(task, outcome.Error(op.failed))

    def _call(self, done: Completion, result: int | BaseException) -> None:
        try:
            done(result)
        except Exception:  # (a bug there must not stop the other completions)
            log.exception("%s: I/O completion callback failed", self.label)

    # -- lifetime ---------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._ops)

    async def aclose(self) -> None:
        """Cancel what is in flight, wait for it (shielded), close the ring."""
        with trio.CancelScope(shield=True):
            if self._ops and self.broken is None:
                for op in list(self._ops.values()):
                    self._cancel(op)
                self._flush()
                with trio.move_on_after(CLOSE_TIMEOUT):
                    while self._ops and self.broken is None:
                        await trio.sleep(0.001)
                        self._complete(self._ring.reap())
            if self._ops:  # still held by the kernel: leak the ring, not the buffers
                log.error("%s: %d I/O requests did not finish; ring left open",
                          self.label, len(self._ops))  # fmt: skip
                return
            if self._scope is not None and self._stopped is not None:
                self._scope.cancel()
                await self._stopped.wait()
            efd = self._ring._eventfd
            if efd >= 0:
                trio.lowlevel.notify_closing(efd)
            self._ring.close()
