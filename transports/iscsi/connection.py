"""The Trio shell of the iSCSI target driver: one TCP connection, one session.

The protocol's decisions are made by sans-I/O cores: the PDU codec, the login
machine, the CmdSN window, ``transfer.py`` (Data-In segmentation and residuals,
R2T planning, Data-Out acceptance) and ``requests.py`` (what a TMF does, text
answers in pieces). This module moves bytes between them, the socket and the
middle level, and keeps the state they decide on: the commands of the session
by ITT, the open R2T bursts, StatSN. Two answers are still built here, inline,
because they are the hot path: a whole read in one Data-In with the status,
and GOOD without data (the same bytes ``transfer.response_frames`` gives).

It is the session actor for its I_T nexus (MaxConnections=1): a reader task
turns PDUs into commands for the logical units; answers go out by one
gather write (``writev``) from the task that made them when the socket takes
them, else through one writer task that batches what waits; and it implements
:class:`pyscst.scsi.command.Transport` for the commands it carried.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
import trio

from pyscst.actors.faults import ActionKind, FaultEngine
from pyscst.actors.faults_lu import portal_of
from pyscst.actors.messages import TmfFunction, TmfResponse
from pyscst.actors.session import LunMapping, Session
from pyscst.actors.target import SessionInfo
from pyscst.devices.io_engine import INLINE_WAIT, SubmissionBatch
from pyscst.scsi.cdb import Pending
from pyscst.scsi.command import (
    Buffer,
    DataDirection,
    Nexus,
    ScsiCommand,
    TaskAttribute,
    Transport,
    TransportGone,
)
from pyscst.scsi.lun import decode_lun
from pyscst.scsi.sense import Asc, ScsiError, SenseKey, Status
from pyscst.transports.iscsi import faults_iscsi
from pyscst.transports.iscsi import pdu_types as P
from pyscst.transports.iscsi.admission import PreloginGate
from pyscst.transports.iscsi.busy_poll import BusyPoll
from pyscst.transports.iscsi.cmdsn import CmdSNWindow, Rejected, sn_lt
from pyscst.transports.iscsi.digest import digest_bytes
from pyscst.transports.iscsi.iovec import unsent
from pyscst.transports.iscsi.login import (
    LoginMachine,
    LoginRequest,
    LoginResult,
    TargetPolicy,
    answer_text,
    split_text,
    text_declarations,
)
from pyscst.transports.iscsi.params import SessionParams
from pyscst.transports.iscsi.pdu_codec import (
    PduReader,
    ProtocolError,
    encode_pdu,
    encode_r2t_header,
)
from pyscst.transports.iscsi.pdu_constants import RESERVED_TAG, Opcode, RejectReason
from pyscst.transports.iscsi.requests import Held, TextExchange, TextPiece, plan_tmf
from pyscst.transports.iscsi.textkeys import TextKeyError, decode_text, encode_text
from pyscst.transports.iscsi.transfer import (
    DataOutBurst,
    R2TPlan,
    response_frames,
    solicited_error,
    unsolicited_error,
)

log = logging.getLogger(__name__)

RECV_SIZE = 256 * 1024
#: most buffers one writev takes (Linux UIO_MAXIOV)
IOV_MAX = 1024
#: reads in a row that found data before the reader yields to other tasks
EAGER_READS = 8
#: seconds a depth-1 reader may sleep in poll(2) for its next PDU once the
#: busy-poll found nothing (BusyPoll.sleep_for_socket; any other event Trio
#: waits on, and Trio's next deadline, end it sooner)
IDLE_WAIT = 0.002
WRITE_BATCH = 512 * 1024
LOGIN_MAX_RECV = 8192


class IscsiHost(Protocol):
    """What a connection needs from the target side (implemented by the portal)."""

    def login_policy(self, local: tuple[str, int]) -> TargetPolicy: ...

    def send_targets(
        self, initiator_name: str, which: str, current: str | None, local: tuple[str, int]
    ) -> list[tuple[str, list[str]]]: ...

    async def open_session(self, result: LoginResult, conn: IscsiConnection) -> Session: ...

    def close_session(self, result: LoginResult, conn: IscsiConnection) -> None: ...

    @property
    def settings(self) -> ConnectionSettings: ...


@attrs.frozen
class ConnectionSettings:
    """How a connection runs, beyond what login negotiates (the [iscsi] table)."""

    #: commands outstanding per session: the CmdSN window
    queue_depth: int
    #: busy-poll budget of a depth-1 reader, µs (0: always park in Trio)
    poll_us: int
    #: seconds between NOP-In pings (0: none), and how long one may go unanswered
    nop_interval: float
    nop_timeout: float
    #: seconds from accept to the final Login Response
    login_timeout: float
    #: seconds one part of a PDU (header, data segment) may take once begun
    pdu_timeout: float
    #: pre-login connections per portal, in total and per source address
    max_prelogin_connections: int
    max_prelogin_per_address: int


class ConnectionClosed(TransportGone):
    """The connection went away while a command still needed it."""


class _Burst(DataOutBurst):
    """One R2T's worth of solicited Data-Out, and the event its task waits on
    (None: no task waits; the command's ``later`` Pending goes on instead)."""

    __slots__ = ("event",)

    def __init__(self, itt: int, offset: int, length: int, event: trio.Event | None) -> None:
        super().__init__(itt, offset, length)
        self.event = event


class IscsiCommand(ScsiCommand):
    """A SCSI command as this connection carries it: the middle level's view
    plus the iSCSI transfer state (Data-Out reassembly, answer bookkeeping).
    One object per command, so the hot path makes and follows no second one."""

    __slots__ = (
        "aborted",
        "buf",
        "delivered",
        "failed",
        "finished",
        "immediate",
        "later",
        "lun_raw",
        "next_datasn",
        "parts",
        "plan",
        "received",
        "segments",
        "unsol_done",
        "unsol_end",
        "wanted",
    )

    def __init__(
        self,
        itt: int,
        lun_raw: int,
        cdb: bytes,
        lun: int,
        attr: TaskAttribute,
        expected_length: int,
        direction: DataDirection,
        nexus: Nexus,
        transport: Transport,
    ) -> None:
        # ScsiCommand.__init__'s fields, set here: one constructor frame per
        # command instead of two plus a super() object (the hot path passes
        # these positionally too: a keyword call builds a dict per command).
        # tests/unit/transports/test_iscsi_transfer.py checks they match.
        self.cdb = cdb
        self.lun = lun
        self.tag = itt
        self.attr = attr
        self.expected_length = expected_length
        self.direction = direction
        self.nexus = nexus
        self.transport = transport
        self.transfer_length = 0
        self.copy_targets = None
        self.port_group = None
        self.lun_raw = lun_raw
        #: the data-out: the immediate data itself when it is all the data,
        #: else a buffer the Data-Outs fill
        self.buf: bytearray | memoryview = bytearray()
        self.received = 0
        self.next_datasn = 0
        self.unsol_end = 0
        self.unsol_done: trio.Event | None = None
        self.delivered = False
        self.failed = False
        self.finished = False
        self.aborted = False
        #: sent with the I bit: runs outside the CmdSN window (no slot to free)
        self.immediate = False
        #: the data-out length the last data_now found missing (for data_later)
        self.wanted = 0
        #: data_later's Pending while its R2Ts are answered (no task waits)
        self.later: Pending | None = None
        self.plan: R2TPlan | None = None
        #: a data_later command's data-out so far, as it came (immediate data,
        #: then each Data-Out's segment), joined once when it is all there
        self.parts: list[Buffer] | None = None
        #: those pieces once all there, not joined yet: a handler that takes
        #: them (data_segments_now) writes them with one pwritev, no copy
        self.segments: list[Buffer] | None = None


def _join_segments(st: IscsiCommand) -> None:
    """The data-out in one buffer, for whoever wants it so (``data_now``, the
    task path): the pieces ``data_later`` kept are joined now, once."""
    segments = st.segments
    if segments is not None:
        st.buf = bytearray().join(segments)
        st.segments = None


class IscsiConnection:
    """One iSCSI connection and (for normal sessions) its session."""

    def __init__(
        self,
        stream: trio.SocketStream,
        host: IscsiHost,
        name: str = "iscsi",
        faults: FaultEngine | None = None,
        gate: PreloginGate | None = None,
        io_batch: SubmissionBatch | None = None,
    ) -> None:
        self.name = name
        self._faults = faults
        #: the daemon's io_uring submission batch: the reader submits the
        #: disk I/O each chunk queued (_end_batch); a connection without one
        #: (tests) leaves it to the engines' flushers
        self._io_batch = io_batch if io_batch is not None else SubmissionBatch()
        #: the portal's pre-login admission table (we report progress and leave it)
        self._gate = gate
        #: the reader's part count when the current partial PDU part began, and when
        self._partial_mark = -1
        self._partial_since = 0.0
        self.stream = stream
        #: the socket's descriptor, for the reader's direct read and writev
        self._fd = stream.socket.fileno()
        # trio's SocketStream caps unsent bytes at 16 KiB (TCP_NOTSENT_LOWAT):
        # with a paced congestion control (BBR, the default here) a 256 KiB
        # Data-In writev was then taken only in part (3 x 65,483 B on
        # loopback) and the rest cost a retry, often the writer task and an
        # epoll round. We write whole PDUs and bound what we queue ourselves
        # (WRITE_BATCH, the socket's send buffer): 0 = the host's default.
        with contextlib.suppress(OSError, AttributeError):
            stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 0)
        self.host = host
        self._reader = PduReader(max_recv_data_segment_length=LOGIN_MAX_RECV)
        self._out_send, self._out_recv = trio.open_memory_channel[list[Buffer]](math.inf)
        #: output produced while the reader handles one received chunk; the
        #: reader sends it itself before it waits for more (see _flush_pending)
        self._pending: list[Buffer] = []
        self._batching = False
        #: the chunk's I/O is being submitted (_end_batch): answers from
        #: completions found right then join the chunk's answers, one writev
        self._submitting = False
        #: an answer from outside the reader went straight out since the
        #: reader's last chunk (later ones wait for the writer: see _queue)
        self._sent_direct = False
        self._eager = 0
        #: the writer holds or is about to get bytes: direct writes must not
        #: overtake them (set when anything enters the channel, cleared by the
        #: writer once it has sent everything)
        self._writer_busy = False
        #: the writer's channel is closed: output made outside the reader's
        #: batch is dropped, as the closed channel would drop it
        self._output_closed = False
        self._statsn = 0
        self._itt: dict[int, IscsiCommand] = {}
        self._bursts: dict[int, _Burst] = {}
        self._ttt = itertools.count(1)
        self._text = TextExchange(lambda: next(self._ttt) & 0x7FFFFFFF)
        self._window: CmdSNWindow[Any] | None = None
        self.session: Session | None = None
        self.login: LoginResult | None = None
        self.params: SessionParams | None = None
        self._header_digest = False
        self._data_digest = False
        self._max_send = LOGIN_MAX_RECV
        #: the longest read answered in one Data-In: MaxRecvDataSegmentLength,
        #: and never longer than a Data-In sequence may be (MaxBurstLength)
        self._whole_read = LOGIN_MAX_RECV
        self._closed = trio.Event()
        self._writer_done = trio.Event()
        self._dead = False
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        #: set by a Logout or a fatal protocol error: read no further PDUs
        self._stop_reading = False
        #: a Logout that closes the session: its ITT, answered at teardown once
        #: every LU has the nexus loss queued (see _on_logout)
        self._logout_itt: int | None = None
        #: the last read filled its buffer: more is probably waiting
        self._last_full = True
        self.peer = _peer(stream)
        self.local = _local(stream)
        #: the target portal this connection came in on, as fault rules name it
        self.portal = portal_of(self)
        self.stats_commands = 0
        #: how the reader waits for a depth-1 initiator (set at full feature)
        self._busy = BusyPoll(self._fd, 0)
        #: the TTT of our NOP-In ping awaiting its NOP-Out, and its answer
        self._ping_ttt = RESERVED_TAG
        self._ping_answered = trio.Event()

    # -- actor plumbing -------------------------------------------------
    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    def abort(self) -> None:
        """Drop the connection (reinstatement, admin close, fatal error)."""
        self._scope.cancel()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def update_luns(self, luns: Mapping[int, LunMapping]) -> None:
        """The target's LUN map for this session changed (live admin edit)."""
        if self.session is not None:
            self.session.update_luns(luns)

    def info(self) -> SessionInfo | None:
        """The admin plane's view of this session (None until logged in)."""
        login, session = self.login, self.session
        if login is None or session is None:
            return None
        return SessionInfo(
            nexus=session.nexus,
            initiator_name=login.initiator_name,
            isid=login.isid,
            tsih=login.tsih,
            address=self.peer,
            luns=dict(session.luns),
        )

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._writer)
                    try:
                        with trio.fail_after(self.host.settings.login_timeout):
                            result = await self._login()
                        if self._gate is not None:
                            self._gate.leave(self)
                        if result is not None:
                            await self._full_feature(result)
                    except trio.TooSlowError:
                        log.info("%s: login timed out", self.peer)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                        log.debug("%s: connection lost", self.peer)
                    finally:
                        await self._teardown()
                        nursery.cancel_scope.cancel()
        finally:
            if self._gate is not None:
                self._gate.leave(self)
            self._closed.set()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _teardown(self) -> None:
        with trio.CancelScope(shield=True):
            if self.session is not None:
                await self.session.close()
                if self.login is not None:
                    self.host.close_session(self.login, self)
            if self._logout_itt is not None:
                self._send_logout_response(self._logout_itt, 0)
                self._logout_itt = None
            # let queued responses (e.g. the Logout Response) reach the wire
            self._dead = True
            self._close_output()
            with trio.move_on_after(2):
                await self._writer_done.wait()
            for cmd in self._itt.values():
                if cmd.unsol_done is not None:
                    cmd.unsol_done.set()
            for burst in self._bursts.values():
                if burst.event is not None:
                    burst.event.set()
            for cmd in list(self._itt.values()):
                self._end_later(cmd, ConnectionClosed(), now=False)

    # -- byte movement -------------------------------------------------------
    async def _writer(self) -> None:
        recv = self._out_recv
        try:
            async for first in recv:
                batch = list(first)
                size = sum(map(len, batch))
                while size < WRITE_BATCH:
                    try:
                        more = recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.extend(more)
                    size += sum(map(len, more))
                if self._pending:  # (answers gathered by _queue, after the above)
                    batch.extend(self._pending)
                    self._pending = []
                if batch:
                    await self._send_all(batch)
                if not recv.statistics().current_buffer_used and not self._pending:
                    self._writer_busy = False
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.abort()
        finally:
            self._writer_done.set()

    async def _send_all(self, buffers: list[Buffer]) -> None:
        """Gather-write ``buffers`` to the socket, waiting while it is full:
        headers and payload views go out as they are, never joined (a join
        would copy every payload once more)."""
        fd = self._fd
        while buffers:
            try:
                sent = os.writev(fd, buffers[:IOV_MAX])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            buffers = unsent(buffers, sent)

    def _queue(self, buffers: list[Buffer]) -> None:
        faults = self._faults
        if faults is not None and faults.pdu_armed and self._outgoing_fault(faults, buffers):
            return
        pending = self._pending
        if self._batching:
            pending.extend(buffers)
            if not self._reader.buffered and not self._submitting:
                # nothing more to work through: answer now, and do the rest of
                # this command's bookkeeping while the initiator reads it
                self._flush_pending()
            return
        if self._output_closed or self._dead:
            return  # (closing: the writer sends only what was queued before)
        # An answer made outside the reader (an I/O completion, a task: an R2T,
        # a write's status). The first since the reader's last chunk goes
        # straight out by one writev when nothing waits before it (queue depth
        # 1: no loop tick for the writer); the rest wait in _pending, behind
        # everything before them, and wake the writer once for the lot, so a
        # burst of completions goes out in one send instead of one each.
        if not pending and not self._writer_busy and not self._sent_direct:
            self._sent_direct = True
            self._pending = buffers
            self._flush_pending()
            return
        pending.extend(buffers)
        if len(pending) == len(buffers):
            self._channel([])

    def _close_output(self) -> None:
        """No more output but what the writer holds (Logout, session drop, cold reset)."""
        self._output_closed = True
        self._out_send.close()

    def _flush_pending(self) -> None:
        """Send what handling one received chunk produced, from the reader itself.

        Answers made while the reader worked through a chunk (a cache-hit
        READ's Data-In, R2Ts, NOP-Ins) go out in one ``writev`` before it waits
        for more bytes: one system call for the lot and no hop to the writer
        task. Only when the writer is idle with nothing queued, so order holds;
        what the socket does not take now goes to the writer. (``_queue``
        sends the first answer made outside the reader's batch since its last
        chunk, in a command's task or an I/O completion, the same way: an R2T
        or a write's status costs one ``writev``, not a wake-up of the writer
        task and a pass of the scheduler; later ones wake the writer once.)
        """
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._writer_busy or self._dead:
            # (after teardown the descriptor may be closed and reused: never
            # write to it; the closed writer channel drops the bytes)
            self._channel(pending)
            return
        try:
            sent = os.writev(self._fd, pending[:IOV_MAX])
            if 0 < sent < sum(map(len, pending)):
                # A short write with room a moment later (a 256 KiB Data-In on
                # loopback, most QD1 tape READs here): one more try takes the
                # rest, instead of a hop to the writer task, a scheduler pass
                # and an epoll round for it; a full socket just says so.
                pending = unsent(pending, sent)
                sent = os.writev(self._fd, pending[:IOV_MAX])
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return
        if sent < sum(map(len, pending)):
            self._channel(unsent(pending, sent))

    def _end_batch(self) -> None:
        # the chunk's disk I/O (cache misses, BLOCKIO) starts before its
        # answers are written and before we wait for more: one submission for
        # the chunk, no loop tick for the engines' flusher (devices/io_engine.py);
        # what completed meanwhile is answered in the same writev as the rest
        io_batch = self._io_batch
        if io_batch.queued:  # (nothing queued, as on a page-cache hit: no call)
            self._submitting = True
            try:
                io_batch.submit_queued()
            finally:
                self._submitting = False
        self._batching = False
        self._sent_direct = False
        self._flush_pending()

    def _channel(self, buffers: list[Buffer]) -> None:
        """Hand bytes to the writer task (they go out after all before them)."""
        self._writer_busy = True
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._out_send.send_nowait(buffers)

    def _frame(self, header: bytes, data: Buffer | None = None) -> list[Buffer]:
        """Header (+digest) + data segment (+padding, +digest) as buffers."""
        out: list[Buffer] = [header]
        if self._header_digest:
            out.append(digest_bytes(header))
        if data is not None and len(data):
            out.append(data)
            pad = -len(data) & 3
            padding = b"\x00" * pad
            if pad:
                out.append(padding)
            if self._data_digest:
                out.append(digest_bytes(data, padding))
        return out

    def _send_pdu(self, pdu: Any) -> None:
        raw = encode_pdu(pdu)
        if not self._header_digest and not self._data_digest:
            self._queue([raw])
            return
        dlen = len(pdu.data) if getattr(pdu, "data", None) else 0
        header_len = len(raw) - ((dlen + 3) & ~3)
        header = raw[:header_len]
        data = pdu.data if dlen else None
        self._queue(self._frame(header, data))

    async def _refill(self, commands_before: int, bounded: bool = False) -> bool:
        """Send what the last chunk produced, then wait for and take in the next
        one; False at end of stream. The readers call it each time the
        ``PduReader`` has no complete PDU left (no async generator and no
        further coroutine in between: at queue depth 1 every layer is paid
        once per command).

        The socket is read directly, without ``receive_some``'s two scheduler
        passes when bytes are already waiting (the common case under load); we
        wait first only when it is empty or likely to be: after a short chunk
        with one command or none, a queue-depth-1 initiator has sent nothing
        since. That wait is a short busy-poll when nothing else needs the loop
        (see busy_poll.py), else a park in ``wait_readable``. Every
        ``EAGER_READS`` reads in a row that found data, we yield once, so a
        busy connection cannot starve the others.

        In the middle of a PDU the wait is bounded (see ``_refill_partial``).
        """
        if not bounded and self._reader.in_pdu:
            return await self._refill_partial(commands_before)
        self._end_batch()
        fd = self._fd
        # (in the middle of a PDU the rest is usually in already: a read that
        # came before a large PDU's last TCP segment, which the parsing took
        # longer than. Read first; wait only if the socket is empty.)
        if not bounded and not self._last_full and self.stats_commands - commands_before <= 1:
            self._eager = 0
            io_batch = self._io_batch
            if io_batch.waiting and self._busy.sleep(INLINE_WAIT):
                io_batch.reap_inline()  # (answers go out from here: _queue)
            if not self._busy.ready() and not self._busy.sleep_for_socket(IDLE_WAIT):
                await trio.lowlevel.wait_readable(fd)
        self._eager += 1
        if self._eager >= EAGER_READS:
            self._eager = 0
            await trio.lowlevel.checkpoint()
        while True:
            try:
                data = os.read(fd, RECV_SIZE)
                break
            except BlockingIOError:
                self._eager = 0
                await trio.lowlevel.wait_readable(fd)
        if not data:
            return False
        self._last_full = len(data) == RECV_SIZE
        self._reader.feed(data)
        # Output made while we work through what arrived waits in _pending
        # and goes out in one write before we wait for more bytes.
        self._batching = True
        return True

    async def _refill_partial(self, commands_before: int) -> bool:
        """``_refill`` while a PDU part (header or data segment) is incomplete:
        that part must complete within ``pdu_timeout`` seconds of its first
        byte, else the peer is stalling (a slow-loris holding a descriptor and
        a task forever) and the connection is dropped, as at end of stream."""
        mark = self._reader.parts
        now = trio.current_time()
        if mark != self._partial_mark:
            self._partial_mark = mark
            self._partial_since = now
        timeout = self.host.settings.pdu_timeout
        with trio.CancelScope(deadline=self._partial_since + timeout):
            return await self._refill(commands_before, True)
        log.warning(
            "%s: a PDU stalled incomplete for %gs: dropping the connection", self.peer, timeout
        )
        return False

    def _next_statsn(self) -> int:
        sn = self._statsn
        self._statsn = (sn + 1) & 0xFFFFFFFF
        return sn

    def _windows(self) -> tuple[int, int]:
        w = self._window
        assert w is not None
        return w.edges()

    def _status_numbers(self) -> tuple[int, int, int]:
        """StatSN (taken), ExpCmdSN, MaxCmdSN for one status-bearing PDU."""
        return (self._next_statsn(), *self._windows())

    # -- login phase ---------------------------------------------------------
    async def _login(self) -> LoginResult | None:
        policy = self.host.login_policy(self.local)
        machine = LoginMachine(policy)
        # Whatever is not a Login Request from the first byte on (a port
        # scanner, an HTTP client) is closed at once, not after the timeout.
        opening = await self.stream.receive_some(RECV_SIZE)
        if not opening or opening[0] & 0x3F != 0x03:
            log.info("%s: not iSCSI (first byte %r); closing", self.peer, opening[:1])
            return None
        self._reader.feed(opening)
        first = True
        next_event = self._reader.next_event
        self._batching = True
        try:
            while True:
                before = self.stats_commands
                while (event := next_event()) is not None:
                    if isinstance(event, ProtocolError) or not isinstance(event, P.LoginRequest):
                        log.info("%s: not a login request during login: %r", self.peer, event)
                        return None
                    if self._gate is not None:
                        self._gate.progress(self)
                    if first:
                        self._statsn = event.expstatsn
                        first = False
                    req = LoginRequest(
                        transit=event.transit,
                        cont=event.cont,
                        csg=event.csg,
                        nsg=event.nsg,
                        version_max=event.version_max,
                        version_min=event.version_min,
                        isid=event.isid,
                        tsih=event.tsih,
                        itt=event.itt,
                        cid=event.cid,
                        cmdsn=event.cmdsn,
                        expstatsn=event.expstatsn,
                        data=bytes(event.data),
                    )
                    reply = machine.receive(req)
                    if reply.failed:  # e.g. 02/01 CHAP, 02/02 not on the access list
                        log.info("%s: login refused %02x/%02x: %s", self.peer,
                                 reply.status_class, reply.status_detail, reply.reason[:200])
                    if reply.done and not reply.failed and reply.result is not None:
                        result = reply.result
                        faults = self._faults
                        if faults is not None and faults.login_armed and self._refuse_login(
                            faults, result, event, reply.version_max
                        ):
                            return None
                        self.login = result
                        if result.session_type == "Normal":
                            self.session = await self.host.open_session(result, self)
                    depth = self.host.settings.queue_depth
                    resp = P.LoginResponse(
                        transit=reply.transit,
                        cont=reply.cont,
                        csg=reply.csg,
                        nsg=reply.nsg,
                        version_max=reply.version_max,
                        version_active=reply.version_active,
                        isid=reply.isid,
                        tsih=reply.tsih,
                        itt=reply.itt,
                        statsn=self._next_statsn(),
                        expcmdsn=event.cmdsn,
                        maxcmdsn=(event.cmdsn + depth - 1) & 0xFFFFFFFF,
                        status_class=reply.status_class,
                        status_detail=reply.status_detail,
                        data=reply.data,
                    )
                    self._send_pdu(resp)
                    if reply.done:
                        if reply.failed or reply.result is None:
                            return None
                        self._window = CmdSNWindow(event.cmdsn, depth)
                        return reply.result
                if not await self._refill(before):
                    return None
        finally:
            self._end_batch()  # the last Login Response goes out now

    # -- full feature phase -------------------------------------------------------
    async def _full_feature(self, result: LoginResult) -> None:
        params = result.params
        self.params = params
        self._header_digest = result.header_digest
        self._data_digest = result.data_digest
        self._max_send = params.initiator_max_recv_data_segment_length
        self._whole_read = min(self._max_send, params.max_burst_length)
        reader = self._reader
        reader.header_digest = self._header_digest
        reader.data_digest = self._data_digest
        reader.max_recv_data_segment_length = params.target_max_recv_data_segment_length
        # a Login Request now, or a PDU only targets send, is a protocol error:
        # the reader refuses it with the header as it came (RFC 7143 11.17)
        reader.expect(_FULL_FEATURE_OPCODES)
        discovery = result.session_type == "Discovery"
        settings = self.host.settings
        if not discovery:
            self._busy = BusyPoll(self._fd, settings.poll_us)
            if settings.nop_interval > 0:
                self.nursery.start_soon(self._ping, settings.nop_interval, settings.nop_timeout)
        log.info(
            "%s: %s session for %s (isid %#x tsih %d)",
            self.peer,
            result.session_type,
            result.initiator_name,
            result.isid,
            result.tsih,
        )
        debug = log.isEnabledFor(logging.DEBUG)
        faults = self._faults
        window = self._window
        assert window is not None
        command_pdu = P.ScsiCommand
        admit = self._admit_command
        # (a discovery session has none, and never takes the command path)
        dispatch = self.session.dispatch if self.session is not None else None
        deliver = self._deliver
        next_event = self._reader.next_event
        ready: list[Any] | Rejected | None
        self._batching = True
        # this task submits the disk I/O its chunks queue itself (_end_batch
        # before every wait): the engines' flusher need not wake for it
        reader_task = trio.lowlevel.current_task()
        self._io_batch.register_reader(reader_task)
        try:
            while True:
                before = self.stats_commands
                while (event := next_event()) is not None:
                    if debug:
                        log.debug("%s: <- %r", self.peer, event)
                    if (
                        faults is not None
                        and faults.pdu_armed
                        and not isinstance(event, ProtocolError)
                        and await self._incoming_fault(faults, event)
                    ):
                        continue
                    if type(event) is command_pdu and not discovery:
                        # the hot path: one SCSI command, usually next in CmdSN order
                        st = admit(event)
                        if st is None:
                            continue
                        if not event.immediate and window.accept_next(event.cmdsn):
                            # (_start_command, inline: just admitted, so it is
                            # in _itt and nothing can have aborted it yet)
                            st.delivered = True
                            self.stats_commands += 1
                            dispatch(st)  # type: ignore[misc]
                            continue
                        ready = window.offer(event.cmdsn, event.immediate, event)
                    else:
                        ready = self._arrival(event, discovery)
                        if ready is None:
                            continue
                    if isinstance(ready, Rejected):
                        log.debug("%s: CmdSN outside window: %s", self.peer, ready)
                        if isinstance(event, P.ScsiCommand):
                            self._itt.pop(event.itt, None)
                        continue
                    for item in ready:
                        deliver(item)
                    if self._stop_reading:
                        return
                if not await self._refill(before):
                    return
        finally:
            # a return (logout, fatal error): what the last chunk produced (the
            # Logout Response) still goes out
            try:
                self._end_batch()
            finally:
                self._io_batch.unregister_reader(reader_task)

    def _arrival(self, event: Any, discovery: bool) -> list[Any] | Rejected | None:
        """Any PDU but a SCSI command in a normal session: handle it now, or
        offer it to the CmdSN window (what that returns); None when done."""
        if isinstance(event, ProtocolError):
            self._reject(event.reject_reason, event.header)
            if event.fatal:
                log.warning("%s: fatal protocol error: %s", self.peer, event.reason)
                self._stop_reading = True
                return []
            return None
        if isinstance(event, P.DataOut):
            self._on_data_out(event)
            return None
        if isinstance(event, P.SnackRequest):
            self._reject_pdu(RejectReason.COMMAND_NOT_SUPPORTED, event)
            return None
        if not isinstance(event, _NUMBERED_REQUESTS) or (
            discovery and isinstance(event, P.ScsiCommand | P.TaskManagementRequest)
        ):
            # a Login Request after login, a target-only PDU from the
            # initiator, or a command a discovery session may not send
            self._reject_pdu(RejectReason.PROTOCOL_ERROR, event)
            return None
        assert self._window is not None
        return self._window.offer(event.cmdsn, event.immediate, event)

    def _deliver(self, pdu: Any) -> None:
        if isinstance(pdu, P.ScsiCommand):
            self._start_command(pdu)
            return
        immediate = pdu.immediate
        if isinstance(pdu, P.NopOut):
            faults = self._faults
            if pdu.itt != RESERVED_TAG and faults is not None and faults.nop_armed:
                if self._stall_nop(faults, pdu):
                    return
            if pdu.itt != RESERVED_TAG:
                exp, mx = self._nop_window(immediate)
                data = pdu.data[: self._max_send]
                self._send_pdu(
                    P.NopIn(
                        lun=pdu.lun,
                        itt=pdu.itt,
                        ttt=RESERVED_TAG,
                        statsn=self._next_statsn(),
                        expcmdsn=exp,
                        maxcmdsn=mx,
                        data=data,
                    )
                )
            else:
                if pdu.ttt == self._ping_ttt and pdu.ttt != RESERVED_TAG:
                    self._ping_answered.set()  # the answer to our ping
                if not immediate:
                    self._complete_slot()
        elif isinstance(pdu, P.TextRequest):
            self._on_text(pdu)
        elif isinstance(pdu, P.LogoutRequest):
            self._on_logout(pdu)
        elif isinstance(pdu, P.TaskManagementRequest):
            assert self._nursery is not None
            self._nursery.start_soon(self._on_tmf, pdu)
        else:
            self._reject_pdu(RejectReason.PROTOCOL_ERROR, pdu)

    async def _ping(self, interval: float, timeout: float) -> None:
        """NOP-In pings (RFC 7143 11.19), one every ``interval`` seconds: each
        asks for a NOP-Out echoing its TTT. A ping unanswered for ``timeout``
        seconds means the initiator or the path is gone: the connection is
        dropped, which ends the session's commands (nexus loss) instead of
        leaving them hanging on a dead socket."""
        while True:
            await trio.sleep(interval)
            ttt = next(self._ttt) & 0x7FFFFFFF
            answered = self._ping_answered = trio.Event()
            self._ping_ttt = ttt
            exp, mx = self._windows()
            # (ITT reserved: StatSN is the next one, not taken)
            self._send_pdu(
                P.NopIn(
                    lun=0, itt=RESERVED_TAG, ttt=ttt, statsn=self._statsn, expcmdsn=exp,
                    maxcmdsn=mx,
                )
            )  # fmt: skip
            with trio.move_on_after(timeout):
                await answered.wait()
            self._ping_ttt = RESERVED_TAG
            if not answered.is_set():
                log.warning(
                    "%s: NOP-In ping unanswered for %gs: dropping the connection",
                    self.peer, timeout,
                )  # fmt: skip
                self.abort()
                return

    def _nop_window(self, immediate: bool) -> tuple[int, int]:
        if not immediate:
            self._complete_slot()
        return self._windows()

    def _complete_slot(self) -> None:
        assert self._window is not None
        self._window.complete()

    def _reject_pdu(self, reason: int, pdu: Any) -> None:
        """Reject ``pdu``: the Reject carries its 48-byte header (RFC 7143 11.17)."""
        self._reject(reason, encode_pdu(pdu)[:48])

    def _reject(self, reason: int, header: bytes | None) -> None:
        exp, mx = self._windows() if self._window is not None else (0, 0)
        self._send_pdu(
            P.Reject(
                reason=reason,
                statsn=self._next_statsn(),
                expcmdsn=exp,
                maxcmdsn=mx,
                datasn_r2tsn=0,
                data=bytes(header or b""),
            )
        )

    # -- SCSI commands -------------------------------------------------------------
    def _admit_command(self, pdu: P.ScsiCommand) -> IscsiCommand | None:
        """Register a command at arrival (before CmdSN ordering) so unsolicited
        Data-Out finds it; refuse malformed ones with a Reject (None)."""
        itt = pdu.itt
        if itt == RESERVED_TAG or itt in self._itt:
            self._reject_pdu(RejectReason.INVALID_PDU_FIELD, pdu)
            return None
        data = pdu.data
        dlen = len(data)
        edtl = pdu.expected_data_transfer_length
        params = self.params
        assert params is not None
        if dlen and (
            not pdu.write
            or not params.immediate_data
            or dlen > params.first_burst_length
            or dlen > edtl
        ):
            self._reject_pdu(RejectReason.PROTOCOL_ERROR, pdu)
            return None
        if pdu.immediate:
            # RFC 7143 3.2.2.1: immediate commands take no CmdSN slot, and
            # may be refused for lack of resources
            window = self._window
            assert window is not None
            if not window.take_immediate():
                self._reject_pdu(RejectReason.IMMEDIATE_COMMAND_REJECT, pdu)
                return None
        if pdu.write:
            direction = _WRITE
        else:
            direction = _READ if pdu.read else _NO_DATA
        lun_raw = pdu.lun
        lun = _lun_number(lun_raw)
        assert self.session is not None
        st = self._itt[itt] = IscsiCommand(
            itt,
            lun_raw,
            pdu.cdb,
            -1 if lun is None else lun,
            _ATTRS[pdu.attr & 7],
            edtl,
            direction,
            self.session.nexus,
            self,
        )
        st.immediate = pdu.immediate
        if pdu.write:
            if pdu.final or params.initial_r2t:
                st.unsol_end = dlen
            else:
                st.unsol_end = min(edtl, params.first_burst_length)
            if dlen == st.unsol_end:
                # no unsolicited Data-Out to come: the received bytes themselves,
                # uncopied (whatever R2Ts bring later is copied once, in
                # receive_data, into a buffer of the validated length)
                st.buf = memoryview(data)
            else:
                st.buf = bytearray(st.unsol_end)
                memoryview(st.buf)[:dlen] = data
            st.received = dlen
            if dlen < st.unsol_end:
                st.unsol_done = trio.Event()
        return st

    def _start_command(self, pdu: P.ScsiCommand) -> None:
        cmd = self._itt.get(pdu.itt)
        if cmd is None:
            self._complete_slot_for(pdu)
            return
        if cmd.aborted:
            self._finish(cmd)
            return
        cmd.delivered = True
        self.stats_commands += 1
        assert self.session is not None
        self.session.dispatch(cmd)

    def _complete_slot_for(self, pdu: P.ScsiCommand) -> None:
        if not pdu.immediate:
            self._complete_slot()

    def _on_data_out(self, pdu: P.DataOut) -> None:
        st = self._itt.get(pdu.itt)
        if st is None:
            log.debug("%s: Data-Out for unknown ITT %#x dropped", self.peer, pdu.itt)
            return
        if st.failed:
            return  # the rest of a sequence already found broken
        data = pdu.data
        n = len(data)
        off = pdu.buffer_offset
        ttt = pdu.ttt
        if ttt == RESERVED_TAG:
            unsol_done = st.unsol_done
            error = (
                "unsolicited Data-Out outside the first burst"
                if unsol_done is None
                else unsolicited_error(
                    off, n, pdu.datasn, st.received, st.unsol_end, st.next_datasn
                )
            )
            if error is not None or unsol_done is None:
                self._data_out_error(pdu, st, error)
                return
            st.next_datasn += 1
            # (through a memoryview: one copy; bytearray slice assignment
            # from a buffer copies it to a temporary bytearray first)
            memoryview(st.buf)[off : off + n] = data
            st.received = off + n
            if st.received >= st.unsol_end or pdu.final:
                unsol_done.set()
            return
        burst = self._bursts.get(ttt)
        error = solicited_error(burst, ttt, pdu.itt, pdu.datasn, off, n)
        if error is not None or burst is None:
            self._data_out_error(pdu, st, error)
            return
        parts = st.parts
        if parts is not None:
            if off == st.received:  # (in order: always, at MaxOutstandingR2T=1)
                parts.append(data)
                st.received = off + n
                if burst.next_offset >= burst.end:
                    del self._bursts[ttt]
                    self._later_burst_done(st)
                return
            # out of order (only with more than one R2T outstanding): one
            # buffer of the whole length after all, written at offsets as on
            # the task path
            plan = st.plan
            assert plan is not None
            buf = bytearray().join(parts)
            buf += bytes(plan.total - len(buf))
            st.buf = buf
            st.parts = None
        memoryview(st.buf)[off : off + n] = data
        if burst.next_offset >= burst.end:
            del self._bursts[ttt]
            event = burst.event
            if event is not None:
                event.set()
            else:
                self._later_burst_done(st)

    def _data_out_error(self, pdu: P.DataOut, st: IscsiCommand, reason: str | None) -> None:
        """A broken Data-Out sequence: Reject the PDU and end the command with
        ABORTED COMMAND / DATA PHASE ERROR (no within-command recovery at
        ErrorRecoveryLevel 0); the connection itself stays usable."""
        log.warning("%s: ITT %#x: %s", self.peer, pdu.itt, reason)
        self._reject_pdu(RejectReason.PROTOCOL_ERROR, pdu)
        st.failed = True
        if st.unsol_done is not None:
            st.unsol_done.set()
        for ttt, burst in list(self._bursts.items()):
            if burst.itt == st.tag:
                del self._bursts[ttt]
                if burst.event is not None:
                    burst.event.set()
        if st.later is not None:
            self._end_later(st, _data_phase_error(), now=True)

    # Transport protocol -------------------------------------------------------------
    async def receive_data(self, cmd: ScsiCommand, length: int) -> memoryview:
        st: IscsiCommand = cmd  # type: ignore[assignment]
        params = self.params
        assert params is not None
        total = min(length, cmd.expected_length)
        if st.unsol_done is not None:
            await st.unsol_done.wait()
        if self._dead:
            raise ConnectionClosed()
        if st.failed:
            raise _data_phase_error()
        _join_segments(st)
        if total > len(st.buf):
            grown = bytearray(total)
            memoryview(grown)[: len(st.buf)] = st.buf
            st.buf = grown
        offset = max(st.unsol_end, st.received)
        if offset < total:
            await self._solicit(st, offset, total, params)
        return memoryview(st.buf)[:total]

    async def _solicit(
        self, st: IscsiCommand, offset: int, total: int, params: SessionParams
    ) -> None:
        plan = R2TPlan(offset, total, params.max_burst_length, params.max_outstanding_r2t)
        outstanding: list[tuple[int, _Burst]] = []
        try:
            while not plan.done:
                outstanding += self._issue_r2ts(st, plan, waited=True)
                ttt, burst = outstanding.pop(0)
                assert burst.event is not None
                await burst.event.wait()
                if st.failed:
                    raise _data_phase_error()
                if self._dead or not burst.complete:
                    raise ConnectionClosed()
                plan.completed()
            st.received = total
        finally:
            for ttt, _ in outstanding:
                self._bursts.pop(ttt, None)

    def data_now(self, cmd: ScsiCommand, length: int) -> memoryview | None:
        st: IscsiCommand = cmd  # type: ignore[assignment]
        total = min(length, cmd.expected_length)
        if st.failed or (st.unsol_done is not None and not st.unsol_done.is_set()):
            return None
        if st.received < total:
            st.wanted = total
            return None  # R2Ts needed
        if st.segments is not None:
            _join_segments(st)
        buf = st.buf
        # (immediate data that is all the data is a view already: no new one)
        view = buf if type(buf) is memoryview else memoryview(buf)
        return view if len(view) == total else view[:total]

    def data_segments_now(self, cmd: ScsiCommand, length: int) -> list[Buffer] | None:
        """``data_now`` as the pieces the data-out came in (the immediate
        data, each Data-Out's segment), ``length`` bytes in all, without
        joining them: a 256 KiB record written with one pwritev of them is
        256 KiB less to copy."""
        st: IscsiCommand = cmd  # type: ignore[assignment]
        segments = st.segments
        if segments is None:
            data = self.data_now(cmd, length)
            return None if data is None else [data]
        total = min(length, cmd.expected_length)
        if st.failed or st.received < total:
            return None
        out: list[Buffer] = []
        for piece in segments:
            if total <= 0:
                break
            out.append(piece if len(piece) <= total else memoryview(piece)[:total])
            total -= len(piece)
        return out

    def data_later(self, cmd: ScsiCommand) -> Pending | None:
        st: IscsiCommand = cmd  # type: ignore[assignment]
        total = st.wanted
        st.wanted = 0
        if not total or st.failed or self._dead or st.later is not None:
            return None
        if st.unsol_done is not None and not st.unsol_done.is_set():
            return None  # (unsolicited Data-Out still coming: the task path waits for it)
        params = self.params
        assert params is not None
        # what came so far, then each Data-Out's segment as it arrives, joined
        # into one buffer at the end (see _on_data_out): a zero-filled buffer
        # of the whole length would write every byte once more, and growing
        # one moves what it holds
        st.parts = [st.buf] if len(st.buf) else []
        pending = Pending()
        pending.on_cancel(functools.partial(self._cancel_later, st))
        st.later = pending
        st.plan = R2TPlan(
            max(st.unsol_end, st.received), total, params.max_burst_length,
            params.max_outstanding_r2t,
        )  # fmt: skip
        self._issue_r2ts(st, st.plan)
        return pending

    def _issue_r2ts(
        self, st: IscsiCommand, plan: R2TPlan, waited: bool = False
    ) -> list[tuple[int, _Burst]]:
        """Send the R2Ts ``plan`` allows now; their bursts, each with an event
        to wait on if a task ``waited`` for them (else the command's ``later``
        Pending goes on when they are complete)."""
        issued: list[tuple[int, _Burst]] = []
        for r2tsn, start, length in plan.issue():
            ttt = next(self._ttt) & 0x7FFFFFFF
            burst = _Burst(st.tag, start, length, trio.Event() if waited else None)
            self._bursts[ttt] = burst
            issued.append((ttt, burst))
            exp, mx = self._windows()
            header = encode_r2t_header(
                st.tag, ttt, r2tsn, start, length, lun=st.lun_raw,
                statsn=self._statsn, expcmdsn=exp, maxcmdsn=mx,
            )  # fmt: skip
            self._queue(self._frame(header))
        return issued

    def _later_burst_done(self, st: IscsiCommand) -> None:
        """One R2T of a ``data_later`` command has all its Data-Out: solicit
        what the plan still allows, or hand the command back to its LU (in
        this reader's turn: no task is woken)."""
        plan = st.plan
        if st.later is None or plan is None:
            return
        plan.completed()
        if plan.done:
            parts = st.parts
            if parts is not None:
                if len(parts) == 1:
                    st.buf = memoryview(parts[0])
                else:
                    st.segments = parts  # (joined only for a handler that wants one buffer)
                st.parts = None
            st.received = plan.total
            self._end_later(st, None, now=True)
        else:
            self._issue_r2ts(st, plan)

    def _end_later(self, st: IscsiCommand, result: BaseException | None, now: bool) -> None:
        """Finish ``st``'s data_later Pending once: ``now`` from the reader,
        else at the next scheduler turn (a cancel or teardown must not run
        the LU's completion inside its own loop over its tasks)."""
        pending = st.later
        if pending is None:
            return
        st.later = None
        st.plan = None
        st.parts = None
        if now:
            pending.finish(result)
        else:
            trio.lowlevel.current_trio_token().run_sync_soon(self._finish_soon, pending, result)

    def _finish_soon(self, pending: Pending, result: BaseException | None) -> None:
        # (a callback of run_sync_soon that raised would end the whole Trio
        # run, every connection and LU with it: a bug here ends one command)
        try:
            pending.finish(result)
        except Exception:
            log.exception("%s: finishing an aborted command's data-out failed", self.peer)

    def _cancel_later(self, st: IscsiCommand) -> None:
        """The LU aborted a command whose R2Ts are out: ask for no more data
        (a late Data-Out for its TTTs is refused as for any unknown TTT)."""
        for ttt, burst in list(self._bursts.items()):
            if burst.itt == st.tag and burst.event is None:
                del self._bursts[ttt]
        self._end_later(st, TransportGone(), now=False)

    def respond_now(
        self, cmd: ScsiCommand, status: Status, sense: bytes | None, data: Buffer | None
    ) -> bool:
        st: IscsiCommand = cmd  # type: ignore[assignment]
        if not st.finished:
            if st.unsol_done is not None and not st.unsol_done.is_set():
                return False  # unsolicited data still coming: answer after it
            self._respond(st, status, sense, data)
        return True

    async def send_response(
        self, cmd: ScsiCommand, status: Status, sense: bytes | None, data: Buffer | None
    ) -> None:
        st: IscsiCommand = cmd  # type: ignore[assignment]
        if st.finished:
            return
        if st.unsol_done is not None and not st.unsol_done.is_set():
            await st.unsol_done.wait()
        self._respond(st, status, sense, data)

    def _respond(
        self,
        cmd: IscsiCommand,
        status: Status,
        sense: bytes | None,
        data: Buffer | None,
    ) -> None:
        """Queue Data-In and status for one command (never awaits)."""
        # (_finish, inline: once per command)
        cmd.finished = True
        itts = self._itt
        if itts.get(cmd.tag) is cmd:
            del itts[cmd.tag]
        window = self._window
        if window is not None:
            window.complete(cmd.immediate)
        edtl = cmd.expected_length
        if sense is None and status == 0:
            # (the two common answers below take their StatSN, ExpCmdSN and
            # MaxCmdSN here, as _status_numbers would: three calls fewer each)
            if data is not None:
                if len(data) == edtl and 0 < edtl <= self._whole_read and cmd.direction is _READ:
                    # the common read: one Data-In carrying the data and the status
                    statsn = self._statsn
                    self._statsn = (statsn + 1) & 0xFFFFFFFF
                    exp, mx = window.edges()  # type: ignore[union-attr]
                    header = _PACK_BHS(
                        0x25, 0x81, 0, 0, edtl, cmd.lun_raw, cmd.tag, RESERVED_TAG, statsn, exp,
                        mx, 0, 0, 0,
                    )  # fmt: skip
                    if self._header_digest or self._data_digest or edtl & 3:
                        self._queue(self._frame(header, data))
                    else:
                        self._queue([header, data])
                    return
            elif cmd.transfer_length == edtl and not self._header_digest:
                # the common write (or a no-data command): GOOD, nothing left over
                statsn = self._statsn
                self._statsn = (statsn + 1) & 0xFFFFFFFF
                exp, mx = window.edges()  # type: ignore[union-attr]
                self._queue(
                    [_PACK_BHS(0x21, 0x80, 0, 0, 0, 0, cmd.tag, 0, statsn, exp, mx, 0, 0, 0)]
                )
                return
        # everything else: split Data-In, residuals, sense (transfer.py decides)
        exp, mx = self._windows()
        frames = response_frames(
            itt=cmd.tag,
            lun_raw=cmd.lun_raw,
            status=status,
            sense=sense,
            data=data,
            read=cmd.direction is _READ,
            transfer_length=cmd.transfer_length,
            expected_length=edtl,
            mrdsl=self._max_send,
            max_burst=self.params.max_burst_length if self.params else len(data or b""),
            statsn=self._next_statsn(),
            expcmdsn=exp,
            maxcmdsn=mx,
        )
        buffers: list[Buffer] = []
        for header, segment in frames:
            buffers.extend(self._frame(header, segment))
        self._queue(buffers)

    def command_finished(self, cmd: ScsiCommand) -> None:
        st: IscsiCommand = cmd  # type: ignore[assignment]
        if not st.finished:
            self._finish(st)

    def drop(self, cmd: ScsiCommand, session: bool) -> None:
        log.warning(
            "%s: fault injection drops the %s (ITT %#x)",
            self.peer, "session" if session else "connection", cmd.tag,
        )  # fmt: skip
        if not session:
            self.abort()
            return
        # RFC 7143 11.9.1 AsyncEvent 3: the target drops all connections of the session
        exp, mx = self._windows()
        self._send_pdu(faults_iscsi.drop_session_message(self._next_statsn(), exp, mx))
        self._close_output()  # the writer sends what is queued, then we go
        self.nursery.start_soon(self._abort_when_flushed)

    async def _abort_when_flushed(self) -> None:
        with trio.move_on_after(2):
            await self._writer_done.wait()
        self.abort()

    # -- fault injection hooks (the rules: actors/faults.py) ---------------------------
    def _outgoing_fault(self, faults: FaultEngine, buffers: list[Buffer]) -> bool:
        """Drop, delay or corrupt the digest of outgoing PDUs; True when handled."""
        login = self.login
        if login is None or not buffers:
            return False
        kind = buffers[0][0] & 0x3F
        hit = faults.on_pdu(
            kind, login.initiator_name, login.target_name, self.portal, trio.current_time()
        )
        if hit is None:
            return False
        action = hit.action.kind
        if action is ActionKind.PDU_DROP:
            return True
        if action is ActionKind.PDU_DELAY:
            self.nursery.start_soon(self._queue_later, buffers, hit.delay)
            return True
        bad = faults_iscsi.corrupt_digest(buffers, self._header_digest, self._data_digest)
        if bad is None:
            log.warning("%s: digest_error fault: no digest negotiated", self.peer)
            return False
        self._channel(bad)
        return True

    async def _queue_later(self, buffers: list[Buffer], delay: float) -> None:
        await trio.sleep(delay)
        self._channel(buffers)

    async def _incoming_fault(self, faults: FaultEngine, pdu: Any) -> bool:
        """Drop (True) or delay an incoming PDU; a delay holds back all that follow."""
        login = self.login
        assert login is not None
        now = trio.current_time()
        hit = faults.on_pdu(pdu.opcode, login.initiator_name, login.target_name, self.portal, now)
        if hit is None or hit.action.kind is ActionKind.DIGEST_ERROR:
            return False
        if hit.action.kind is ActionKind.PDU_DELAY:
            self._batching = False  # what is answered so far goes out meanwhile
            self._io_batch.submit_queued()  # (the disk I/O queued so far starts)
            self._flush_pending()
            await trio.sleep(hit.delay)
            self._batching = True
            return False
        return True

    def _stall_nop(self, faults: FaultEngine, pdu: P.NopOut) -> bool:
        """Withhold (or delay) the NOP-In answering a ping; True when withheld."""
        login = self.login
        assert login is not None
        hit = faults.on_nop(
            login.initiator_name, login.target_name, self.portal, trio.current_time()
        )
        if hit is None:
            return False
        if not pdu.immediate:
            self._complete_slot()
        if hit.delay > 0:

            async def answer_late() -> None:
                await trio.sleep(hit.delay)
                exp, mx = self._windows()
                self._send_pdu(
                    P.NopIn(
                        lun=pdu.lun, itt=pdu.itt, ttt=RESERVED_TAG, statsn=self._next_statsn(),
                        expcmdsn=exp, maxcmdsn=mx, data=pdu.data[: self._max_send],
                    )
                )  # fmt: skip

            self.nursery.start_soon(answer_late)
        return True

    def _refuse_login(
        self, faults: FaultEngine, result: LoginResult, event: Any, version: int
    ) -> bool:
        """Answer a login that would succeed with 03/01 (service unavailable)."""
        hit = faults.on_login(
            result.initiator_name, result.target_name, self.portal, trio.current_time()
        )
        if hit is None:
            return False
        self._send_pdu(
            faults_iscsi.login_refusal(event, version, self._next_statsn())
        )
        return True

    def _finish(self, st: IscsiCommand) -> None:
        st.finished = True
        if self._itt.get(st.tag) is st:
            del self._itt[st.tag]
        if self._window is not None:
            self._window.complete(st.immediate)

    # -- task management ---------------------------------------------------------------
    async def _on_tmf(self, pdu: P.TaskManagementRequest) -> None:
        session = self.session
        assert session is not None
        plan = plan_tmf(pdu.function, decode_lun(pdu.lun), pdu.referenced_task_tag)
        held = plan.held
        response: int
        if held is Held.ABORT_TASK:
            response = await self._abort_task(pdu, plan.lun)
        elif held is Held.QUERY and plan.lun in session.luns and self._undelivered(plan.holds):
            # QUERY TASK / QUERY TASK SET: a command received and waiting for
            # its CmdSN turn is a task of this nexus too
            response = TmfResponse.SUCCEEDED
        else:
            if held is Held.ABORT:
                self._drop_undelivered(plan.holds)
            response = await session.task_management(plan.function, plan.lun, plan.tag)
        if not pdu.immediate:
            self._complete_slot()
        exp, mx = self._windows()
        self._send_pdu(
            P.TaskManagementResponse(
                response=int(response),
                itt=pdu.itt,
                statsn=self._next_statsn(),
                expcmdsn=exp,
                maxcmdsn=mx,
            )
        )
        if plan.ends_connection and response == TmfResponse.COMPLETE:
            # cold reset: the response reaches the wire, then the initiator logs in again
            self._close_output()
            self.nursery.start_soon(self._abort_when_flushed)

    async def _abort_task(self, pdu: P.TaskManagementRequest, lun: int) -> int:
        assert self.session is not None
        cmd = self._itt.get(pdu.referenced_task_tag)
        if cmd is not None:
            if not cmd.delivered:
                cmd.aborted = True
                if cmd.unsol_done is not None:
                    cmd.unsol_done.set()
                return TmfResponse.COMPLETE
            return int(
                await self.session.task_management(TmfFunction.ABORT_TASK, cmd.lun, cmd.tag)
            )
        # RFC 7143 4.2.3.3: a command not yet received whose CmdSN is in range
        # and below the TMF's own counts as received-and-aborted. (Not one at or
        # beyond it: an immediate command's RefCmdSN is the TMF's CmdSN, and
        # a number the initiator has not used yet must stay usable.)
        assert self._window is not None
        if self._window.covers(pdu.refcmdsn) and sn_lt(pdu.refcmdsn, pdu.cmdsn):
            for item in self._window.discard(pdu.refcmdsn):
                self._deliver(item)
            return TmfResponse.COMPLETE
        return TmfResponse.TASK_DOES_NOT_EXIST

    def _undelivered(self, match: Callable[[int, int], bool]) -> list[IscsiCommand]:
        """The commands received on this connection and still held for CmdSN
        order (the LU has not seen them): TMFs must count them too. ``match``
        takes a command's LUN number and tag."""
        return [
            cmd
            for cmd in self._itt.values()
            if not cmd.delivered and not cmd.aborted and match(cmd.lun, cmd.tag)
        ]

    def _drop_undelivered(self, match: Callable[[int, int], bool]) -> None:
        for cmd in self._undelivered(match):
            cmd.aborted = True

    # -- text and logout ------------------------------------------------------------
    def _on_text(self, pdu: P.TextRequest) -> None:
        """Text Request: SendTargets and declarations; long answers go out in
        pieces with the C bit, each fetched by an empty request echoing our TTT."""
        if not pdu.immediate:
            self._complete_slot()
        if pdu.ttt != RESERVED_TAG:
            piece = self._text.resume(pdu.ttt)
            if piece is None:
                self._reject_pdu(RejectReason.INVALID_PDU_FIELD, pdu)
                return
            self._send_text_piece(pdu.itt, piece)
            return
        self._text.abandon()  # a new request ends any unfinished one
        try:
            keys = decode_text(pdu.data)
        except TextKeyError:
            self._reject_pdu(RejectReason.PROTOCOL_ERROR, pdu)
            return
        declared = text_declarations(keys)
        mrdsl = declared.get("MaxRecvDataSegmentLength")
        if isinstance(mrdsl, int):
            self._max_send = mrdsl
            if self.params is not None:
                self._whole_read = min(mrdsl, self.params.max_burst_length)
        login = self.login
        initiator = login.initiator_name if login else ""
        current = login.target_name if login else None
        answer = answer_text(
            keys,
            login.session_type if login else "Discovery",
            lambda which: self.host.send_targets(initiator, which, current, self.local),
        )
        piece = self._text.start(split_text(encode_text(answer), self._max_send))
        self._send_text_piece(pdu.itt, piece)

    def _send_text_piece(self, itt: int, piece: TextPiece) -> None:
        exp, mx = self._windows()
        self._send_pdu(
            P.TextResponse(
                final=piece.final,
                cont=not piece.final,
                lun=0,
                itt=itt,
                ttt=piece.ttt,
                statsn=self._next_statsn(),
                expcmdsn=exp,
                maxcmdsn=mx,
                data=piece.data,
            )
        )

    def _on_logout(self, pdu: P.LogoutRequest) -> None:
        """Logout. One that closes the session or this (its only) connection is
        answered only at teardown, after the session has queued its nexus loss
        to every LU: an initiator that reads the Logout Response and goes on
        through another session (libiscsi does) must find what this one held
        (a RESERVE(6), PREVENT) already released, not race its release."""
        if not pdu.immediate:
            self._complete_slot()
        if pdu.reason_code in (0, 1):
            self._logout_itt = pdu.itt
            self._stop_reading = True
            return
        self._send_logout_response(pdu.itt, 2)  # recovery removal: not supported

    def _send_logout_response(self, itt: int, response: int) -> None:
        exp, mx = self._windows()
        self._send_pdu(
            P.LogoutResponse(
                response=response,
                itt=itt,
                statsn=self._next_statsn(),
                expcmdsn=exp,
                maxcmdsn=mx,
                time2wait=0,
                time2retain=0,
            )
        )


def _data_phase_error() -> ScsiError:
    return ScsiError.check(SenseKey.ABORTED_COMMAND, Asc.DATA_PHASE_ERROR)


#: the requests an initiator may number with CmdSN in full feature phase
#: (RFC 7143 11.2.1.2); any other decoded PDU there is refused
_NUMBERED_REQUESTS = (
    P.NopOut,
    P.ScsiCommand,
    P.TaskManagementRequest,
    P.TextRequest,
    P.LogoutRequest,
)

#: the opcodes an initiator may send in full feature phase (RFC 7143 11.2.1.2)
_FULL_FEATURE_OPCODES = frozenset(
    {
        Opcode.NOP_OUT,
        Opcode.SCSI_COMMAND,
        Opcode.TASK_MANAGEMENT_REQUEST,
        Opcode.TEXT_REQUEST,
        Opcode.DATA_OUT,
        Opcode.LOGOUT_REQUEST,
        Opcode.SNACK_REQUEST,
    }
)

#: the iSCSI ATTR field (3 bits) as a task attribute; reserved values act as SIMPLE
_ATTRS = tuple(TaskAttribute) + (TaskAttribute.SIMPLE,) * 3
# (enum members the command path reads, as module globals: ``DataDirection.READ``
# is a call through EnumType.__getattr__'s slot on CPython 3.11)
_READ = DataDirection.READ
_PACK_BHS = P.BHS_STRUCT.pack
_WRITE = DataDirection.WRITE
_NO_DATA = DataDirection.NONE


@functools.lru_cache(maxsize=256)
def _lun_number(raw: int) -> int | None:
    """The LUN number of a LUN field (None: not one we can address); cached,
    since a session uses a handful of LUN fields for all its commands."""
    return decode_lun(raw)


def _peer(stream: trio.SocketStream) -> str:
    try:
        addr = stream.socket.getpeername()
        return f"{addr[0]}:{addr[1]}"
    except OSError:
        return "?"


def _local(stream: trio.SocketStream) -> tuple[str, int]:
    try:
        addr = stream.socket.getsockname()
        return (str(addr[0]), int(addr[1]))
    except OSError:
        return ("0.0.0.0", 0)

