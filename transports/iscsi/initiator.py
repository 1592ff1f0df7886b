"""A small Trio iSCSI initiator for the end-to-end tests and the fuzz harness.

(The benchmarks measure throughput with libiscsi's tools; they use this
initiator only to count calls or instructions per command and to send the
EXTENDED COPY that libiscsi's tools cannot.)

It speaks enough RFC 7143 to drive a real target: login (security phase with
AuthMethod=None or CHAP, one-way or mutual, or straight to operational), the
usual operational keys,
SendTargets discovery, SCSI commands with immediate / unsolicited / R2T
solicited Data-Out and Data-In reassembly, many commands in flight within
the target's CmdSN window, task management, NOP pings both ways and logout.
It is *not* a general initiator: one connection per session, ErrorRecovery
Level 0, no SNACK.

Structure: login runs lockstep on the caller's task; afterwards one reader
task decodes PDUs and completes tasks by ITT (answering target NOP-Ins and
R2Ts itself), and one writer task owns the socket's send side, batching
whatever PDUs are queued into a single ``send_all``. Everything that sends
just queues bytes, synchronously, so CmdSN order is the queue order and no
lock is needed.

    async with await Initiator.connect("127.0.0.1", port, target_name=iqn) as ini:
        r = await ini.execute(0, inquiry_cdb, read_length=96)
"""

from __future__ import annotations

import logging
import math
import os
import struct
import sys
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import attrs
import trio

from pyscst.scsi.command import TaskAttribute
from pyscst.scsi.lun import encode_lun
from pyscst.transports.iscsi import pdu
from pyscst.transports.iscsi.chap import (
    ChapError,
    InitiatorAnswer,
    InitiatorChap,
    initiator_answer,
    verify_target,
)
from pyscst.transports.iscsi.digest import digest_bytes
from pyscst.transports.iscsi.iovec import unsent
from pyscst.transports.iscsi.pdu import (
    R2T,
    RESERVED_TAG,
    Buffer,
    DataIn,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Opcode,
    PduReader,
    ProtocolError,
    Reject,
    ScsiCommand,
    ScsiResponse,
    TaskManagementRequest,
    TaskManagementResponse,
    TextRequest,
    TextResponse,
    padding,
    sn_add,
    sn_lte,
)
from pyscst.transports.iscsi.pdu_types import BHS_STRUCT, COMMAND_STRUCT
from pyscst.transports.iscsi.textkeys import decode_text, encode_text

log = logging.getLogger(__name__)

DEFAULT_INITIATOR_NAME = "iqn.2026-11.org.pyscst:test"
#: our MaxRecvDataSegmentLength: what the target may put in one PDU to us
DEFAULT_MAX_RECV = 262144
_RECEIVE_SIZE = 1 << 18
#: what the reader asks for right after a large Data-In: the next PDU's header
_HEADER_ONLY = 48
#: data-in buffers of at least this size are reused (see Initiator._fresh)
_SPARE_MIN = 1 << 16
#: bytes of reusable data-in buffers kept per size, and sizes kept
_SPARE_BYTES = 4 << 20
_SPARE_SIZES = 4
#: sys.getrefcount of a kept buffer nothing else holds (the ring, the local
#: name ``buf`` in _fresh, the call's argument)
_SPARE_FREE = 3
#: reads in a row that found data before the reader lets other tasks run
_EAGER_READS = 8
#: a Data-Out's BHS up to its DataSN (opcode, flags, DataSegmentLength, LUN,
#: ITT, TTT, ExpStatSN), and the rest (DataSN, Buffer Offset)
_DATA_OUT_HEAD = struct.Struct(">BBxxIQIIxxxxIxxxx")
_DATA_OUT_TAIL = struct.Struct(">II4x")
#: buffers per writev (Linux's UIO_MAXIOV)
_IOV_MAX = 1024
_FINAL = 0x80
_SN_MOD = 1 << 32
_SN_HALF = 1 << 31


class InitiatorError(Exception):
    """The target did something this initiator cannot go on with."""


class LoginError(InitiatorError):
    """Login rejected: Status-Class / Status-Detail as the target sent them."""

    def __init__(self, status_class: int, status_detail: int) -> None:
        super().__init__(f"login failed: class {status_class:#x} detail {status_detail:#x}")
        self.status_class = status_class
        self.status_detail = status_detail


class CommandRejected(InitiatorError):
    """The target answered a request with a Reject PDU."""

    def __init__(self, reject: Reject) -> None:
        super().__init__(f"rejected, reason {reject.reason:#x}")
        self.reject = reject


class ConnectionLost(InitiatorError):
    """The connection closed (or failed) with the request still outstanding."""


@attrs.frozen
class Result:
    """How a SCSI command ended."""

    status: int
    sense: bytes
    data: bytes
    response: int = 0
    residual_overflow: bool = False
    residual_underflow: bool = False
    residual_count: int = 0
    #: with ``Initiator.zero_copy_reads``: the data-in as a view of the
    #: command's own buffer, and ``data`` empty
    view: memoryview | None = None

    @property
    def payload(self) -> bytes | memoryview:
        """The data-in, however it was kept."""
        return self.view if self.view is not None else self.data


@attrs.frozen
class SessionParams:
    """Operational values in force after login (RFC 7143 section 13)."""

    header_digest: bool
    data_digest: bool
    #: the target's limit: our Data-Out / immediate data PDUs stay under it
    target_max_recv_data_segment_length: int
    #: ours: what the target may send us
    max_recv_data_segment_length: int
    max_burst_length: int
    first_burst_length: int
    initial_r2t: bool
    immediate_data: bool


def _random_isid() -> int:
    """A 'random' format ISID (T=10b, RFC 7143 11.12.5)."""
    return (0x80 << 40) | int.from_bytes(os.urandom(3), "big")


#: what a command submitted with a callback hears when it ends: its Result,
#: or None and the error
Completion = Callable[["Result | None", "BaseException | None"], object]
#: how a command submitted with ``quick`` ends in the usual case: its status
#: and its data-in, as read (empty for a command without data-in)
QuickRead = Callable[[int, memoryview], object]
_NO_DATA = memoryview(b"")


class _Task:
    """One outstanding request, owned by the reader task once sent.

    It ends exactly once (:meth:`finish`): a caller awaiting it is woken (the
    event is made only when someone waits), or a command submitted with a
    callback has it called right there, in the reader (no task wakes up per
    command: what the pass-through backend forwards at queue depth 32).
    """

    __slots__ = ("callback", "data_out", "done", "error", "event", "finished", "itt", "kind",
                 "lun", "out_len", "pieces", "quick", "read_buf", "read_length", "received",
                 "result", "text", "view")  # fmt: skip

    def __init__(self, itt: int, kind: type, lun: int = 0) -> None:
        self.itt = itt
        self.kind = kind
        self.lun = lun
        self.data_out = _NO_DATA
        #: the data-out when it was handed over in pieces (see Initiator.submit)
        self.pieces: list[memoryview] | None = None
        #: the data-out's length (of ``data_out``, or of all the ``pieces``)
        self.out_len = 0
        self.read_length = 0
        #: the data-in, copied here when it came in pieces (made on first use)
        self.read_buf: bytearray | None = None
        #: the data-in when it came whole in one Data-In: a view of what was read
        self.view: memoryview | None = None
        self.received = 0
        self.finished = False
        self.event: trio.Event | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.callback: Callable[[_Task], object] | None = None
        #: see Initiator.submit's ``done`` (called by the callback)
        self.done: Completion | None = None
        #: see Initiator.submit's ``quick``
        self.quick: QuickRead | None = None
        #: Text Response continuation state
        self.text = bytearray()

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        self.result = result
        self.error = error
        if self.event is not None:
            self.event.set()
        callback = self.callback
        if callback is not None:
            self.callback = None
            callback(self)

    def data_in(self) -> memoryview:
        """The data-in received, as one view (no copy)."""
        view = self.view
        if view is not None:
            return view
        buf = self.read_buf
        return memoryview(buf)[: self.received] if buf is not None else _NO_DATA

    def put(self, offset: int, data: Buffer) -> None:
        """Take one Data-In's payload: kept as it came when it is the whole
        data-in, else copied into the read buffer (unless it was read there
        already: Initiator._data_in_sink)."""
        end = offset + len(data)
        if offset == 0 and not self.received and self.read_buf is None:
            self.view = data if isinstance(data, memoryview) else memoryview(data)
            self.received = end
            return
        buf = self.buffer()
        if not (isinstance(data, memoryview) and data.obj is buf):
            buf[offset:end] = data
        if end > self.received:
            self.received = end

    def buffer(self) -> bytearray:
        """The read buffer (made on first use, holding a first piece kept whole)."""
        buf = self.read_buf
        if buf is None:
            buf = self.read_buf = bytearray(self.read_length)
            view = self.view
            if view is not None:  # a first piece kept whole: the second joins it
                buf[: len(view)] = view
                self.view = None
        return buf


class Initiator:
    """One logged-in iSCSI session over one TCP connection."""

    def __init__(
        self,
        stream: trio.SocketStream,
        reader: PduReader,
        params: SessionParams,
        negotiated: dict[str, str],
        *,
        isid: int,
        tsih: int,
        cmdsn: int,
        expstatsn: int,
        expcmdsn: int,
        maxcmdsn: int,
        discovery: bool,
    ) -> None:
        self.stream = stream
        self.params = params
        #: the target's answers and declarations during login
        self.negotiated = negotiated
        self.isid = isid
        self.tsih = tsih
        self.discovery = discovery
        self.cmdsn = cmdsn
        self.expstatsn = expstatsn
        self.expcmdsn = expcmdsn
        self.maxcmdsn = maxcmdsn
        self._reader = reader
        self._next_itt = 1
        self._tasks: dict[int, _Task] = {}
        #: built-but-unsent non-immediate requests waiting for the CmdSN window
        self._pending: deque[tuple[_Task, Callable[[int], list[Buffer]]]] = deque()
        #: what waits to be written (headers, payload views), in order; the
        #: writer task takes all of it per ``writev``, woken once per batch
        self._out: list[Buffer] = []
        self._writer_task: trio.lowlevel.Task | None = None
        self._out_closed = False
        #: a direct write is allowed (see _emit): once per chunk read
        self._direct_ok = True
        self._fd = stream.socket.fileno()
        #: LUN number -> the LUN field of our PDUs
        self._lun_fields: dict[int, int] = {}
        self._unsolicited_send, self._unsolicited_recv = trio.open_memory_channel[
            pdu.Pdu | ProtocolError
        ](math.inf)
        self._nursery_cm: Any = None
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._lost: BaseException | None = None
        #: NOP-Ins from the target that asked for an answer (and got one)
        self.nop_in_answered = 0
        #: False plays a hung initiator: target pings go unanswered
        self.answer_pings = True
        #: Result.data is a memoryview of the command's buffer, not a copy
        self.zero_copy_reads = False
        #: the callback of every command submitted with ``done`` (one bound method)
        self._completed_cb = self._completed
        #: reusable data-in buffers by size (see _fresh)
        self._spares: dict[int, deque[bytearray]] = {}

    # ------------------------------------------------------------------ login

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = 3260,
        *,
        initiator_name: str = DEFAULT_INITIATOR_NAME,
        target_name: str | None = None,
        isid: int | None = None,
        tsih: int = 0,
        cid: int = 0,
        discovery: bool | None = None,
        header_digest: bool = False,
        data_digest: bool = False,
        security_phase: bool = True,
        max_recv_data_segment_length: int = DEFAULT_MAX_RECV,
        max_burst_length: int = 262144,
        first_burst_length: int = 65536,
        initial_r2t: bool = False,
        immediate_data: bool = True,
        params: Mapping[str, str] | None = None,
        chap: InitiatorChap | None = None,
    ) -> Initiator:
        """Connect and log in; use the result as ``async with``.

        ``discovery`` defaults to True when no ``target_name`` is given.
        ``params`` adds or overrides operational keys offered to the target.
        ``chap`` offers AuthMethod=CHAP (mutual when it holds a target secret:
        then a target that does not prove itself fails the login).
        """
        if discovery is None:
            discovery = target_name is None
        if isid is None:
            isid = _random_isid()
        stream = await trio.open_tcp_stream(host, port)
        try:
            return await cls._login(
                stream,
                initiator_name=initiator_name,
                target_name=target_name,
                isid=isid,
                tsih=tsih,
                cid=cid,
                discovery=discovery,
                header_digest=header_digest,
                data_digest=data_digest,
                security_phase=security_phase,
                max_recv=max_recv_data_segment_length,
                max_burst=max_burst_length,
                first_burst=first_burst_length,
                initial_r2t=initial_r2t,
                immediate_data=immediate_data,
                extra=dict(params or {}),
                chap=chap,
            )
        except BaseException:
            await stream.aclose()
            raise

    @classmethod
    async def _login(
        cls,
        stream: trio.SocketStream,
        *,
        initiator_name: str,
        target_name: str | None,
        isid: int,
        tsih: int,
        cid: int,
        discovery: bool,
        header_digest: bool,
        data_digest: bool,
        security_phase: bool,
        max_recv: int,
        max_burst: int,
        first_burst: int,
        initial_r2t: bool,
        immediate_data: bool,
        extra: dict[str, str],
        chap: InitiatorChap | None = None,
    ) -> Initiator:
        reader = PduReader(max_recv_data_segment_length=max(max_recv, 8192))
        leading = [("InitiatorName", initiator_name)]
        leading.append(("SessionType", "Discovery" if discovery else "Normal"))
        if target_name is not None and not discovery:
            leading.append(("TargetName", target_name))
        operational = {
            "HeaderDigest": "CRC32C" if header_digest else "None",
            "DataDigest": "CRC32C" if data_digest else "None",
            "MaxRecvDataSegmentLength": str(max_recv),
        }
        if not discovery:
            operational.update(
                {
                    "InitialR2T": "Yes" if initial_r2t else "No",
                    "ImmediateData": "Yes" if immediate_data else "No",
                    "MaxBurstLength": str(max_burst),
                    "FirstBurstLength": str(first_burst),
                    "MaxConnections": "1",
                    "ErrorRecoveryLevel": "0",
                }
            )
        operational.update(extra)

        negotiated: dict[str, str] = {}
        cmdsn = 1
        expstatsn = 0
        itt = 0
        stage = 0 if security_phase else 1
        pairs: list[tuple[str, str]] = list(leading)
        transit = True
        chap_state: str | None = None  # method -> algorithm -> response
        chap_answer: InitiatorAnswer | None = None
        if security_phase and chap is not None:
            pairs.append(("AuthMethod", "CHAP,None"))
            transit, chap_state = False, "method"
        elif security_phase:
            pairs.append(("AuthMethod", "None"))
        else:
            pairs += list(operational.items())
        offered = {k for k, _ in pairs}
        response: LoginResponse | None = None
        for _ in range(16):  # bounded: a target that never transits fails
            next_stage = 1 if stage == 0 else 3
            request = LoginRequest(
                transit=transit, cont=False, csg=stage, nsg=next_stage if transit else 0,
                version_max=0,
                version_min=0, isid=isid, tsih=tsih, itt=itt, cid=cid, cmdsn=cmdsn,
                expstatsn=expstatsn, data=encode_text(pairs),
            )  # fmt: skip
            await stream.send_all(pdu.encode_pdu(request))
            event = await cls._receive_one(stream, reader)
            if isinstance(event, ProtocolError):
                raise InitiatorError(f"bad PDU during login: {event.reason}")
            if not isinstance(event, LoginResponse):
                raise InitiatorError(f"expected a Login Response, got {type(event).__name__}")
            response = event
            if response.status_class != 0:
                raise LoginError(response.status_class, response.status_detail)
            expstatsn = sn_add(response.statsn, 1)
            tsih = response.tsih
            answers = decode_text(response.data)
            negotiated.update(answers)
            if chap_state is not None and chap is not None:
                got = dict(answers)
                try:
                    if chap_state == "method":
                        if got.get("AuthMethod") == "CHAP":
                            algorithms = ",".join(str(int(a)) for a in chap.algorithms)
                            pairs, chap_state = [("CHAP_A", algorithms)], "algorithm"
                            continue
                        if chap.mutual:
                            raise InitiatorError("target refused CHAP: it cannot authenticate")
                        chap_state, transit, pairs = None, True, []
                        continue
                    if chap_state == "algorithm":
                        chap_answer = initiator_answer(chap, got)
                        pairs, chap_state, transit = list(chap_answer.pairs), "response", True
                        continue
                    if chap.mutual and chap_answer is not None:
                        verify_target(chap, chap_answer, got)
                    chap_state = None
                except ChapError as exc:
                    raise InitiatorError(f"CHAP: {exc}") from exc
            # Keys the target proposed on its own get our agreement echoed back.
            unanswered = [(k, v) for k, v in answers if k not in offered and not _declarative(k)]
            if response.transit and response.nsg == 3:
                break
            if response.transit and response.nsg == 1 and stage == 0:
                stage = 1
                pairs = list(operational.items())
                offered |= {k for k, _ in pairs}
            else:
                pairs = unanswered
                offered |= {k for k, _ in pairs}
        else:
            raise InitiatorError("target never completed the login")
        assert response is not None

        def answer(key: str, default: str) -> str:
            return negotiated.get(key, default)

        params = SessionParams(
            header_digest=answer("HeaderDigest", "None") == "CRC32C",
            data_digest=answer("DataDigest", "None") == "CRC32C",
            target_max_recv_data_segment_length=int(answer("MaxRecvDataSegmentLength", "8192")),
            max_recv_data_segment_length=max_recv,
            max_burst_length=int(answer("MaxBurstLength", "262144")),
            first_burst_length=int(answer("FirstBurstLength", "65536")),
            initial_r2t=answer("InitialR2T", "Yes") == "Yes",
            immediate_data=answer("ImmediateData", "Yes") == "Yes",
        )
        if not 512 <= params.target_max_recv_data_segment_length <= 0xFFFFFF:
            # (RFC 7143 13.12; 0 would have us cut data into empty PDUs for ever)
            raise InitiatorError("target declared MaxRecvDataSegmentLength="
                                 f"{params.target_max_recv_data_segment_length}: not 512..2**24-1")
        reader.header_digest = params.header_digest
        reader.data_digest = params.data_digest
        reader.max_recv_data_segment_length = max_recv
        return cls(
            stream, reader, params, negotiated, isid=isid, tsih=tsih, cmdsn=cmdsn,
            expstatsn=expstatsn, expcmdsn=response.expcmdsn, maxcmdsn=response.maxcmdsn,
            discovery=discovery,
        )  # fmt: skip

    @staticmethod
    async def _receive_one(stream: trio.SocketStream, reader: PduReader) -> pdu.Event:
        while True:
            event = reader.next_event()
            if event is not None:
                return event
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise ConnectionLost("connection closed during login")
            reader.feed(data)

    # ------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._nursery.start_soon(self._reader_loop)
        self._nursery.start_soon(self._writer_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            # The body's own exception propagates as is, not wrapped in a group.
            await self._nursery_cm.__aexit__(None, None, None)
            return None
        finally:
            self._close_output()  # (no write may reach the descriptor once closed)
            self._fail_all(ConnectionLost("initiator closed"))
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def close(self) -> None:
        """Drop the connection without logging out."""
        self._closed = True
        self._close_output()
        await self.stream.aclose()

    # ------------------------------------------------------------ SCSI commands

    def submit(
        self,
        lun: int,
        cdb: bytes,
        data_out: bytes | bytearray | memoryview | list[Buffer] = b"",
        read_length: int = 0,
        attr: int = TaskAttribute.SIMPLE,
        immediate: bool = False,
        *,
        read: bool | None = None,
        write: bool | None = None,
        done: Completion | None = None,
        quick: QuickRead | None = None,
    ) -> int:
        """Queue a SCSI command; returns its ITT for :meth:`wait`.

        ``lun`` is a LUN number (0..16383). Commands go out in submission
        order as the target's CmdSN window allows. ``read`` / ``write`` set
        the R / W bits when the lengths alone would not (a read of 0 bytes).
        With ``done``, nobody waits: ``done(result, None)`` or ``done(None,
        error)`` is called once, from the reader (it must not raise), and
        the command is no longer tracked after it (not for :meth:`wait`).
        With ``done`` and ``zero_copy_reads``, ``quick(status, data)`` is
        called instead (no Result made) in the usual cases: a read whose one
        Data-In carries all the data and the status, or a SCSI Response with
        no sense, no residual and response 0 (a write, a command without
        data, a read whose data came in pieces).

        ``data_out`` may be a list of pieces (the data-out as a front
        connection received it): their views go out as they are, a Data-Out
        made of several of them where it spans them, so the pieces are never
        joined into one buffer (a 128 KiB copy per forwarded write). Only
        where the PDUs carry digests (or the target's segment length is not
        a multiple of 4, or the command is bidirectional or has a long CDB)
        are they joined first, as those paths frame one buffer per PDU.
        """
        if self._nursery is None:
            raise RuntimeError("Initiator.submit before `async with`: nothing would send it")
        task = self._new_task(ScsiCommand, lun=lun)
        data: Buffer = (
            self._pieces(task, data_out, len(cdb) <= 16 and not read_length)
            if isinstance(data_out, list) else data_out
        )  # fmt: skip
        if len(data):
            view = data if isinstance(data, memoryview) else memoryview(data)
            task.data_out = view if view.format == "B" and view.ndim == 1 else view.cast("B")
            task.out_len = len(task.data_out)
        task.read_length = read_length
        if done is not None:
            task.callback = self._completed_cb
            task.done = done
            task.quick = quick
        lun_field = self._lun_fields.get(lun)
        if lun_field is None:
            lun_field = self._lun_fields[lun] = int.from_bytes(encode_lun(lun), "big")
        cmdsn = self.cmdsn
        if not immediate and not self._pending and (self.maxcmdsn - cmdsn) % _SN_MOD < _SN_HALF:
            # the window is open and nothing waits before it: out now (the
            # common case; no closure kept for later)
            self.cmdsn = (cmdsn + 1) & 0xFFFFFFFF
            self._emit(self._build_command(task, lun_field, cdb, attr, False, cmdsn, read, write))
            return task.itt

        def build(cmdsn: int) -> list[Buffer]:
            return self._build_command(task, lun_field, cdb, attr, immediate, cmdsn, read, write)

        self._queue(task, build, immediate)
        return task.itt

    def _pieces(self, task: _Task, pieces: list[Buffer], plain: bool) -> Buffer:
        """Keep ``pieces`` on ``task`` as views (returning no single buffer)
        when the wire can carry them as they are, else join them (returned)."""
        views = [piece if isinstance(piece, memoryview) and piece.format == "B"
                 and piece.ndim == 1 else memoryview(piece).cast("B")
                 for piece in pieces if len(piece)]  # fmt: skip
        if len(views) <= 1:
            return views[0] if views else b""
        p = self.params
        if (not plain or p.header_digest or p.data_digest
                or p.target_max_recv_data_segment_length & 3):  # fmt: skip
            return b"".join(views)
        task.pieces = views
        task.out_len = sum(map(len, views))
        return b""

    async def wait(self, itt: int) -> Result:
        """Wait for a submitted command's status."""
        task = self._tasks.get(itt)
        if task is None:
            raise KeyError(f"no outstanding task {itt:#x}")
        result: Result = await self._await(task)
        return result

    def _completed(self, task: _Task) -> None:
        """A command submitted with a callback ended: untracked, then told."""
        if self._tasks.get(task.itt) is task:
            del self._tasks[task.itt]
        done = task.done
        assert done is not None
        error = task.error
        try:
            if error is not None:
                done(None, error)
            else:
                done(task.result, None)
        except Exception:  # (a bug there must not take the reader, and the session, down)
            log.exception("completion of command %#x failed", task.itt)

    def forget(self, itt: int) -> None:
        """Stop tracking a command its caller gave up on (after an ABORT TASK):
        whatever the target still sends for it goes to :meth:`recv_pdu`."""
        task = self._tasks.pop(itt, None)
        if task is not None:
            task.finish(error=ConnectionLost("forgotten"))

    def sent_commands(self) -> set[int]:
        """ITTs of the SCSI commands on the wire and not answered yet (what a
        task-set TMF sent now would reach: those queued behind the CmdSN
        window are not, they get a later CmdSN)."""
        unsent = {task.itt for task, _ in self._pending}
        return {
            itt
            for itt, task in self._tasks.items()
            if task.kind is ScsiCommand and not task.finished and itt not in unsent
        }

    def withdraw(self, itt: int) -> bool:
        """Take back a command still waiting for the CmdSN window (never
        sent: nothing to abort at the target); False if it went out."""
        task = self._tasks.get(itt)
        if task is None or not any(queued is task for queued, _ in self._pending):
            return False
        self.forget(itt)  # (finished: _pump skips it)
        return True

    async def execute(
        self,
        lun: int,
        cdb: bytes,
        data_out: bytes | bytearray | memoryview = b"",
        read_length: int = 0,
        attr: int = TaskAttribute.SIMPLE,
        immediate: bool = False,
    ) -> Result:
        """Run one SCSI command to completion."""
        return await self.wait(self.submit(lun, cdb, data_out, read_length, attr, immediate))

    def _build_command(
        self, task: _Task, lun_field: int, cdb: bytes, attr: int, immediate: bool, cmdsn: int,
        read: bool | None = None, write: bool | None = None,
    ) -> list[Buffer]:
        p = self.params
        data = task.data_out
        total = task.out_len
        if not total and len(cdb) <= 16 and not p.header_digest:
            # a read (or no data at all): one header, nothing else to decide
            read_length = task.read_length
            b1 = (_FINAL | (0x40 if (read_length > 0 if read is None else read) else 0)
                  | (0x20 if write else 0) | (attr & 0x07))  # fmt: skip
            return [COMMAND_STRUCT.pack(
                Opcode.SCSI_COMMAND | (0x40 if immediate else 0), b1, 0, 0, 0, lun_field,
                task.itt, read_length, cmdsn, self.expstatsn,
                cdb if len(cdb) == 16 else cdb.ljust(16, b"\x00"),
            )]  # fmt: skip
        unsolicited_limit = min(total, p.first_burst_length)
        immediate_len = (
            min(unsolicited_limit, p.target_max_recv_data_segment_length) if p.immediate_data else 0
        )
        read_length = task.read_length
        final = (total == 0 or immediate_len == total or p.initial_r2t
                 or immediate_len == unsolicited_limit)  # fmt: skip
        if len(cdb) <= 16 and not (total and read_length):
            # the usual command: its header packed at once, its immediate data
            # a view of the caller's buffer (never copied on the way out)
            b1 = ((_FINAL if final else 0)
                  | (0x40 if (read_length > 0 if read is None else read) else 0)
                  | (0x20 if (total > 0 if write is None else write) else 0)
                  | (attr & 0x07))  # fmt: skip
            header = COMMAND_STRUCT.pack(
                Opcode.SCSI_COMMAND | (0x40 if immediate else 0), b1, 0, 0, immediate_len,
                lun_field, task.itt, total if total else read_length, cmdsn, self.expstatsn,
                cdb if len(cdb) == 16 else cdb.ljust(16, b"\x00"),
            )  # fmt: skip
            pieces = task.pieces
            if pieces is None:
                wire = self._frame(header, data[:immediate_len])
            else:  # (no digests here: see _pieces)
                wire = [header]
                if immediate_len:
                    _cut(pieces, 0, 0, immediate_len, wire)
                    pad = padding(immediate_len)
                    if pad:
                        wire.append(pad)
            if not p.initial_r2t and unsolicited_limit > immediate_len:
                wire += self._data_outs(task, RESERVED_TAG, immediate_len, unsolicited_limit)
            return wire
        command = ScsiCommand(
            immediate=immediate,
            final=final,
            read=read_length > 0 if read is None else read,
            write=total > 0 if write is None else write,
            attr=attr,
            lun=lun_field,
            itt=task.itt,
            expected_data_transfer_length=total if total else read_length,
            cmdsn=cmdsn,
            expstatsn=self.expstatsn,
            cdb=cdb,
            data=data[:immediate_len],
        )  # fmt: skip
        if total and read_length:  # bidirectional: read length goes in an AHS
            bidi = (5).to_bytes(2, "big") + bytes((2, 0)) + read_length.to_bytes(4, "big")
            command = attrs.evolve(command, ahs=bidi)
        out: list[Buffer] = [pdu.encode_pdu(command, p.header_digest, p.data_digest)]
        if not p.initial_r2t and unsolicited_limit > immediate_len:
            out += self._data_outs(task, RESERVED_TAG, immediate_len, unsolicited_limit)
        return out

    def _frame(self, header: bytes, data: Buffer) -> list[Buffer]:
        """A header and its data segment as buffers for ``writev`` (digests and
        padding added as negotiated): the payload is a view, not a copy."""
        p = self.params
        n = len(data)
        if not n and not p.header_digest:
            return [header]
        out: list[Buffer] = [header]
        if p.header_digest:
            out.append(digest_bytes(header))
        if n:
            out.append(data)
            pad = padding(n)
            if pad:
                out.append(pad)
            if p.data_digest:
                out.append(digest_bytes(data, pad))
        return out

    def _data_outs(self, task: _Task, ttt: int, start: int, end: int) -> list[Buffer]:
        """One Data-Out sequence for bytes [start, end) of the task's data
        (headers, and views of the task's buffer).

        A backend that takes 8 KiB per PDU (tgt's default) gets 15 Data-Outs
        for a 128 KiB write: every header but the last is the same 36 bytes
        and its DataSN and offset, packed apart (a quarter of the time of
        packing each whole)."""
        out: list[Buffer] = []
        step = self.params.target_max_recv_data_segment_length
        lun_field = self._lun_field(task.lun)
        datasn = 0
        offset = start
        data = task.data_out
        expstatsn = self.expstatsn
        itt = task.itt
        pieces = task.pieces
        if pieces is not None:  # (no digests, step a multiple of 4: see _pieces)
            return self._data_outs_of_pieces(pieces, ttt, start, end, step, lun_field, itt,
                                             expstatsn)  # fmt: skip
        if not (self.params.header_digest or self.params.data_digest or step & 3):
            # (no digests, no padding but maybe the last's: the header and a view)
            common = _DATA_OUT_HEAD.pack(Opcode.DATA_OUT, 0, step, lun_field, itt, ttt,
                                         expstatsn)  # fmt: skip
            tail = _DATA_OUT_TAIL.pack
            last = end - step
            while offset < last:
                out += (common + tail(datasn, offset), data[offset : offset + step])
                datasn += 1
                offset += step
            if offset < end:
                n = end - offset
                header = _DATA_OUT_HEAD.pack(Opcode.DATA_OUT, _FINAL, n, lun_field, itt, ttt,
                                             expstatsn) + tail(datasn, offset)  # fmt: skip
                out += self._frame(header, data[offset:end])
            return out
        pack = BHS_STRUCT.pack
        while offset < end:
            n = min(step, end - offset)
            header = pack(Opcode.DATA_OUT, _FINAL if offset + n >= end else 0, 0, 0, n,
                          lun_field, itt, ttt, 0, expstatsn, 0, datasn, offset, 0)  # fmt: skip
            out += self._frame(header, data[offset : offset + n])
            datasn += 1
            offset += n
        return out

    @staticmethod
    def _data_outs_of_pieces(
        pieces: list[memoryview], ttt: int, start: int, end: int, step: int, lun_field: int,
        itt: int, expstatsn: int,
    ) -> list[Buffer]:
        """``_data_outs`` of a data-out kept in pieces: each PDU's segment is
        the views of the pieces it spans (one walk through them)."""
        i = 0
        base = 0
        while base + len(pieces[i]) <= start:
            base += len(pieces[i])
            i += 1
        at = start - base
        common = _DATA_OUT_HEAD.pack(Opcode.DATA_OUT, 0, step, lun_field, itt, ttt, expstatsn)
        tail = _DATA_OUT_TAIL.pack
        out: list[Buffer] = []
        datasn = 0
        offset = start
        last = end - step
        piece = pieces[i]
        while offset < last:
            out.append(common + tail(datasn, offset))
            if at + step < len(piece):  # (the usual: within one piece)
                out.append(piece[at : at + step])
                at += step
            else:
                i, at = _cut(pieces, i, at, step, out)
                piece = pieces[i]
            datasn += 1
            offset += step
        if offset < end:
            n = end - offset
            out.append(_DATA_OUT_HEAD.pack(Opcode.DATA_OUT, _FINAL, n, lun_field, itt, ttt,
                                           expstatsn) + tail(datasn, offset))  # fmt: skip
            _cut(pieces, i, at, n, out)
            pad = padding(n)
            if pad:
                out.append(pad)
        return out

    def _lun_field(self, lun: int) -> int:
        """The LUN field of our PDUs for a LUN number (kept per LUN)."""
        field = self._lun_fields.get(lun)
        if field is None:
            field = self._lun_fields[lun] = int.from_bytes(encode_lun(lun), "big")
        return field

    # ------------------------------------------------------- other requests

    async def task_management(
        self, function: int, lun: int = 0, referenced_task_tag: int = RESERVED_TAG,
        refcmdsn: int | None = None,
    ) -> int:  # fmt: skip
        """Send a TMF request (immediate); returns the TMF response code."""
        task = self._new_task(TaskManagementRequest, lun=lun)
        lun_field = int.from_bytes(encode_lun(lun), "big")

        def build(cmdsn: int) -> list[Buffer]:
            req = TaskManagementRequest(
                immediate=True, function=function, lun=lun_field, itt=task.itt,
                referenced_task_tag=referenced_task_tag, cmdsn=cmdsn, expstatsn=self.expstatsn,
                refcmdsn=cmdsn if refcmdsn is None else refcmdsn,
            )  # fmt: skip
            return [self._encode(req)]

        self._queue(task, build, True)
        response: int = await self._await(task)
        return response

    async def nop(self, data: bytes = b"") -> bytes:
        """NOP-Out ping (immediate); returns the NOP-In's echoed data."""
        task = self._new_task(NopOut)

        def build(cmdsn: int) -> list[Buffer]:
            ping = NopOut(
                immediate=True, itt=task.itt, ttt=RESERVED_TAG, cmdsn=cmdsn,
                expstatsn=self.expstatsn, data=data,
            )  # fmt: skip
            return [self._encode(ping)]

        self._queue(task, build, True)
        echoed: bytes = await self._await(task)
        return echoed

    async def text(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """A Text Request exchange (following C-bit continuations)."""
        task = self._new_task(TextRequest)

        def build(cmdsn: int) -> list[Buffer]:
            req = TextRequest(
                final=True, itt=task.itt, ttt=RESERVED_TAG, cmdsn=cmdsn,
                expstatsn=self.expstatsn, data=encode_text(pairs),
            )  # fmt: skip
            return [self._encode(req)]

        self._queue(task, build, False)
        answer: list[tuple[str, str]] = await self._await(task)
        return answer

    async def send_targets(self, which: str = "All") -> list[tuple[str, list[str]]]:
        """SendTargets: [(TargetName, [TargetAddress, ...]), ...]."""
        targets: list[tuple[str, list[str]]] = []
        for key, value in await self.text([("SendTargets", which)]):
            if key == "TargetName":
                targets.append((value, []))
            elif key == "TargetAddress" and targets:
                targets[-1][1].append(value)
        return targets

    async def logout(self, reason_code: int = 0) -> LogoutResponse:
        """Logout (close the session by default); the connection is then closed."""
        task = self._new_task(LogoutRequest)

        def build(cmdsn: int) -> list[Buffer]:
            req = LogoutRequest(
                immediate=True, reason_code=reason_code, itt=task.itt, cid=0, cmdsn=cmdsn,
                expstatsn=self.expstatsn,
            )  # fmt: skip
            return [self._encode(req)]

        self._queue(task, build, True)
        response: LogoutResponse = await self._await(task)
        self._closed = True
        self._close_output()
        await self.stream.aclose()
        return response

    # ---------------------------------------------------- raw access (hostile)

    async def send_raw(self, data: bytes) -> None:
        """Queue raw bytes on the wire as they are (no digests added)."""
        self._emit([data])

    async def send_pdu(self, p: pdu.Pdu) -> None:
        """Queue any PDU, encoded with the session's digests. CmdSN and
        ExpStatSN are the caller's business (see ``cmdsn``/``expstatsn``)."""
        self._emit([self._encode(p)])

    async def recv_pdu(self) -> pdu.Pdu | ProtocolError:
        """The next PDU no outstanding request claimed (Reject, Async, ...)."""
        return await self._unsolicited_recv.receive()

    def next_itt(self) -> int:
        """Reserve an ITT for hand-built PDUs (responses go to recv_pdu)."""
        return self._alloc_itt()

    # --------------------------------------------------------------- plumbing

    def _encode(self, p: pdu.Pdu) -> bytes:
        return pdu.encode_pdu(p, self.params.header_digest, self.params.data_digest)

    def _alloc_itt(self) -> int:
        itt = self._next_itt
        while itt in self._tasks or itt == RESERVED_TAG:
            itt = (itt + 1) & 0xFFFFFFFF
        self._next_itt = (itt + 1) & 0xFFFFFFFF
        return itt

    def _new_task(self, kind: type, lun: int = 0) -> _Task:
        if self._lost is not None or self._closed:
            raise ConnectionLost("connection is closed")
        task = _Task(self._alloc_itt(), kind, lun)
        self._tasks[task.itt] = task
        return task

    def _queue(self, task: _Task, build: Callable[[int], list[Buffer]], immediate: bool) -> None:
        if immediate:
            self._emit(build(self.cmdsn))
        else:
            self._pending.append((task, build))
            self._pump()

    def _pump(self) -> None:
        """Send queued non-immediate requests while CmdSN <= MaxCmdSN."""
        while self._pending and sn_lte(self.cmdsn, self.maxcmdsn):
            task, build = self._pending.popleft()
            if task.finished:
                continue
            cmdsn = self.cmdsn
            self.cmdsn = sn_add(cmdsn, 1)
            self._emit(build(cmdsn))

    async def _await(self, task: _Task) -> Any:
        if not task.finished:
            if task.event is None:
                task.event = trio.Event()
            try:
                await task.event.wait()
            finally:
                if task.finished:
                    self._tasks.pop(task.itt, None)
        else:
            self._tasks.pop(task.itt, None)
        if task.error is not None:
            raise task.error
        return task.result

    def _fail_all(self, error: BaseException) -> None:
        for task in list(self._tasks.values()):
            task.finish(error=error)
        self._pending.clear()

    def _emit(self, buffers: list[Buffer]) -> None:
        """Queue bytes for the writer (synchronous: queue order is wire order).
        The first after the writer emptied the queue wakes it; it writes all
        that was queued meanwhile, so every command sent while a caller works
        through a batch goes out in one ``writev``."""
        if self._out_closed:
            return
        writer = self._writer_task
        if writer is not None and not self._out and self._direct_ok:
            # the writer idles: the first since the last answer goes out now,
            # one writev and no wake-up of the writer (a lone command, the
            # common case below queue depth 32); what follows it before the
            # next answer is read is batched by the writer as usual
            self._direct_ok = False
            try:
                sent = os.writev(self._fd, buffers[:_IOV_MAX])
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # (the writer finds the error and fails the session)
            rest = unsent(buffers, sent)
            if not rest:
                return
            buffers = rest
        self._out += buffers
        if writer is not None:
            self._writer_task = None
            trio.lowlevel.reschedule(writer)

    def _close_output(self) -> None:
        self._out_closed = True
        self._out = []
        writer = self._writer_task
        if writer is not None:
            self._writer_task = None
            trio.lowlevel.reschedule(writer)

    async def _writer_loop(self) -> None:
        fd = self.stream.socket.fileno()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._writer_task = None
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            while not self._out_closed:
                batch = self._out
                if not batch:
                    self._writer_task = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(abort)
                    continue
                self._out = []
                while batch:
                    try:
                        sent = os.writev(fd, batch[:_IOV_MAX])
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(fd)
                        continue
                    batch = unsent(batch, sent)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._lost = exc
            self._out_closed = True
            self._fail_all(ConnectionLost(f"send failed: {exc!r}"))

    async def _reader_loop(self) -> None:
        reader = self._reader
        reader.detach_opcode = Opcode.DATA_IN
        sock = self.stream.socket
        eager = 0
        size = _RECEIVE_SIZE
        try:
            while True:
                for event in reader:
                    self._dispatch(event)
                bhs = reader.incomplete_bulk(Opcode.DATA_IN)
                if bhs is not None:
                    dest = self._data_in_sink(bhs)
                    if dest is not None:
                        # a Data-In still arriving: the rest of its segment is
                        # read straight into the buffer the data-in ends up in
                        if not await self._fill(dest, reader.detach_segment()):
                            break
                        self._direct_ok = True
                        self._dispatch(DataIn.unpack(BHS_STRUCT.unpack_from(bhs), b"", dest))
                        if len(dest) >= _SPARE_MIN:
                            # the next read takes a header only: when it is
                            # another large Data-In's, none of its segment was
                            # read along (to be copied into place): all of it is
                            # read straight into its buffer
                            size = _HEADER_ONLY
                        dest = None  # (its buffer is reusable once its taker lets go)
                        continue
                # (the descriptor is asked for each time: -1 once closed,
                # never a number another socket got meanwhile)
                try:
                    data = os.read(sock.fileno(), size)
                except BlockingIOError:
                    eager = 0
                    await trio.lowlevel.wait_readable(sock)
                    continue
                size = _RECEIVE_SIZE  # (a header only once, right after a large Data-In)
                if not data:
                    break
                reader.feed(data)
                self._direct_ok = True
                eager += 1
                if eager >= _EAGER_READS:  # (a busy socket must not starve the other tasks)
                    eager = 0
                    await trio.lowlevel.checkpoint()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._lost = exc
        self._lost = self._lost or ConnectionLost("connection closed by target")
        self._close_output()
        self._fail_all(ConnectionLost("connection closed"))
        self._unsolicited_send.close()

    def _data_in_sink(self, bhs: memoryview) -> memoryview | None:
        """Where an incoming Data-In's segment goes when it is read straight
        from the socket: a buffer of its own when it is the command's whole
        data-in so far (handed on as it is, see _Task.put), else its place in
        the command's read buffer. None (the reader copies it together as
        usual, and _on_data_in judges it) when no command of ours expects it
        there, e.g. more data than the command asked for."""
        task = self._tasks.get(int.from_bytes(bhs[16:20], "big"))
        if task is None or task.kind is not ScsiCommand or task.finished:
            return None
        offset = int.from_bytes(bhs[40:44], "big")
        end = offset + int.from_bytes(bhs[5:8], "big")
        if end > task.read_length:
            return None
        if offset == 0 and task.read_buf is None and task.view is None:
            return memoryview(self._fresh(end) if end >= _SPARE_MIN else bytearray(end))
        return memoryview(task.buffer())[offset:end]

    def _fresh(self, size: int) -> bytearray:
        """A buffer for a large Data-In read straight from the socket: one
        read earlier that nothing refers to any more (every view of it gone:
        the front connection sent the data on), else a new one. A new 128
        KiB bytearray costs a zero-fill or page faults (about 5 us); the
        reused one is overwritten whole by the read. Kept: up to
        _SPARE_BYTES per size, for _SPARE_SIZES sizes; the one least
        recently looked at is looked at (the likeliest to be free), one look
        per read."""
        spares = self._spares
        ring = spares.get(size)
        if ring is None:
            if len(spares) >= _SPARE_SIZES:
                del spares[next(iter(spares))]
            ring = spares[size] = deque()
        else:
            buf = ring[0]
            ring.rotate(-1)  # (one still held goes to the back: the next is looked at next)
            if sys.getrefcount(buf) == _SPARE_FREE:
                return buf
        buf = bytearray(size)
        if len(ring) * size < _SPARE_BYTES:
            ring.append(buf)
        return buf

    async def _fill(self, dest: memoryview, parts: list[memoryview]) -> bool:
        """Fill ``dest``: first with what was read already, then from the
        socket; False if the target closed the connection first."""
        pos = 0
        for part in parts:
            n = len(part)
            dest[pos : pos + n] = part
            pos += n
        sock = self.stream.socket
        size = len(dest)
        while pos < size:
            try:
                n = os.readv(sock.fileno(), (dest[pos:],))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not n:
                return False
            pos += n
        return True

    # ------------------------------------------------------------- dispatch

    def _track(self, statsn: int | None, expcmdsn: int, maxcmdsn: int) -> None:
        # (serial arithmetic inlined, RFC 1982: a <= b iff (b - a) mod 2**32 < 2**31)
        if statsn is not None and (statsn - self.expstatsn) % _SN_MOD < _SN_HALF:
            self.expstatsn = (statsn + 1) & 0xFFFFFFFF
        if (maxcmdsn - expcmdsn + 1) % _SN_MOD < _SN_HALF:  # else: ignore (RFC 7143 4.2.2.1)
            if 0 < (maxcmdsn - self.maxcmdsn) % _SN_MOD < _SN_HALF:
                self.maxcmdsn = maxcmdsn
            if 0 < (expcmdsn - self.expcmdsn) % _SN_MOD < _SN_HALF:
                self.expcmdsn = expcmdsn
        if self._pending:
            self._pump()

    def _dispatch(self, event: pdu.Pdu | ProtocolError) -> None:
        if type(event) is DataIn:
            self._track(event.statsn if event.status_present else None,
                        event.expcmdsn, event.maxcmdsn)  # fmt: skip
            self._on_data_in(event)
        elif isinstance(event, ScsiResponse):
            self._track(event.statsn, event.expcmdsn, event.maxcmdsn)
            self._on_scsi_response(event)
        elif isinstance(event, R2T):
            self._track(None, event.expcmdsn, event.maxcmdsn)
            self._on_r2t(event)
        elif isinstance(event, NopIn):
            self._track(None if event.itt == RESERVED_TAG else event.statsn,
                        event.expcmdsn, event.maxcmdsn)  # fmt: skip
            self._on_nop_in(event)
        elif isinstance(event, TaskManagementResponse):
            self._track(event.statsn, event.expcmdsn, event.maxcmdsn)
            self._complete(event.itt, event, event.response)
        elif isinstance(event, LogoutResponse):
            self._track(event.statsn, event.expcmdsn, event.maxcmdsn)
            self._complete(event.itt, event, event)
        elif isinstance(event, TextResponse):
            self._track(event.statsn, event.expcmdsn, event.maxcmdsn)
            self._on_text_response(event)
        elif isinstance(event, Reject):
            self._track(event.statsn, event.expcmdsn, event.maxcmdsn)
            self._on_reject(event)
        else:
            if isinstance(event, pdu.AsyncMessage):
                self._track(event.statsn, event.expcmdsn, event.maxcmdsn)
            self._unsolicited_send.send_nowait(event)

    def _complete(self, itt: int, event: pdu.Pdu, result: Any) -> None:
        task = self._tasks.get(itt)
        if task is None:
            self._unsolicited_send.send_nowait(event)
        else:
            task.finish(result)

    def _on_data_in(self, p: DataIn) -> None:
        task = self._tasks.get(p.itt)
        if task is None or task.kind is not ScsiCommand:
            self._unsolicited_send.send_nowait(p)
            return
        data = p.data
        offset = p.buffer_offset
        end = offset + len(data)
        if end > task.read_length:
            task.finish(error=InitiatorError(f"Data-In past the buffer end ({end})"))
            return
        if (offset == 0 and p.status_present and self.zero_copy_reads
                and task.read_buf is None and task.view is None):  # fmt: skip
            # the usual read to pass on: all of it in this one PDU, kept as read
            view = data if isinstance(data, memoryview) else memoryview(data)
            quick = task.quick
            if quick is not None and not (p.overflow or p.underflow) and not task.finished:
                self._quick_end(task, quick, p.status, view)
                return
            task.finish(Result(
                status=p.status, sense=b"", data=b"",
                view=data if isinstance(data, memoryview) else memoryview(data),
                residual_overflow=p.overflow, residual_underflow=p.underflow,
                residual_count=p.residual_count,
            ))  # fmt: skip
            return
        task.put(offset, data)
        if p.status_present:
            task.finish(
                Result(
                    status=p.status, sense=b"", data=self._read_copy(task),
                    view=self._read_view(task),
                    residual_overflow=p.overflow, residual_underflow=p.underflow,
                    residual_count=p.residual_count,
                )
            )  # fmt: skip

    def _quick_end(self, task: _Task, quick: QuickRead, status: int, view: memoryview) -> None:
        """End a command submitted with ``quick`` the usual way (see submit)."""
        task.finished = True  # (no waiter: a command submitted with a callback)
        task.callback = None
        del self._tasks[task.itt]
        try:
            quick(status, view)
        except Exception:  # (as in _completed: not the reader, not the session)
            log.exception("completion of command %#x failed", task.itt)

    def _on_scsi_response(self, p: ScsiResponse) -> None:
        task = self._tasks.get(p.itt)
        if task is None:
            self._unsolicited_send.send_nowait(p)
            return
        quick = task.quick
        if (quick is not None and not (p.response or p.overflow or p.underflow or len(p.data)
                                       or task.finished) and self.zero_copy_reads):  # fmt: skip
            self._quick_end(task, quick, p.status, task.data_in())
            return
        task.finish(
            Result(
                status=p.status, sense=pdu.parse_sense_segment(p.data),
                data=self._read_copy(task), view=self._read_view(task), response=p.response,
                residual_overflow=p.overflow, residual_underflow=p.underflow,
                residual_count=p.residual_count,
            )
        )  # fmt: skip

    def _read_copy(self, task: _Task) -> bytes:
        """A command's data-in, copied (empty with ``zero_copy_reads``)."""
        return b"" if self.zero_copy_reads else bytes(task.data_in())

    def _read_view(self, task: _Task) -> memoryview | None:
        """With ``zero_copy_reads``: the data-in as a view, of the Data-In as
        it was read when one PDU carried it all, else of the task's own
        buffer; nothing else holds either (the pass-through backend hands it
        on uncopied)."""
        return task.data_in() if self.zero_copy_reads else None

    def _on_r2t(self, p: R2T) -> None:
        task = self._tasks.get(p.itt)
        if task is None:
            self._unsolicited_send.send_nowait(p)
            return
        end = p.buffer_offset + p.desired_data_transfer_length
        if end > task.out_len or p.desired_data_transfer_length == 0:
            task.finish(error=InitiatorError(f"R2T outside the data: {p}"))
            return
        self._emit(self._data_outs(task, p.ttt, p.buffer_offset, end))

    def _on_nop_in(self, p: NopIn) -> None:
        if p.ttt != RESERVED_TAG:  # the target pings: answer with the same TTT
            if not self.answer_pings:
                return
            self.nop_in_answered += 1
            answer = NopOut(
                immediate=True, lun=p.lun, itt=RESERVED_TAG, ttt=p.ttt, cmdsn=self.cmdsn,
                expstatsn=self.expstatsn, data=p.data,
            )  # fmt: skip
            self._emit([self._encode(answer)])
            return
        if p.itt != RESERVED_TAG:
            self._complete(p.itt, p, bytes(p.data))

    def _on_text_response(self, p: TextResponse) -> None:
        task = self._tasks.get(p.itt)
        if task is None:
            self._unsolicited_send.send_nowait(p)
            return
        task.text += p.data
        if p.cont or not p.final:  # ask for the rest with the target's TTT
            more = TextRequest(
                final=True, itt=p.itt, ttt=p.ttt, cmdsn=self.cmdsn, expstatsn=self.expstatsn
            )
            self._pending.appendleft((task, lambda cmdsn: [self._encode(attrs.evolve(
                more, cmdsn=cmdsn, expstatsn=self.expstatsn))]))  # fmt: skip
            self._pump()
            return
        try:
            task.finish(decode_text(task.text))
        except ValueError as exc:
            task.finish(error=InitiatorError(f"bad text response: {exc}"))

    def _on_reject(self, p: Reject) -> None:
        itt = int.from_bytes(p.data[16:20], "big") if len(p.data) >= 48 else RESERVED_TAG
        task = self._tasks.get(itt)
        if task is None:
            self._unsolicited_send.send_nowait(p)
        else:
            task.finish(error=CommandRejected(p))


def _cut(pieces: list[memoryview], i: int, at: int, n: int, out: list[Buffer]) -> tuple[int, int]:
    """Append to ``out`` views of the next ``n`` bytes of ``pieces`` from
    byte ``at`` of piece ``i``; returns where the bytes after them start."""
    while n:
        piece = pieces[i]
        avail = len(piece) - at
        if avail > n:
            out.append(piece[at : at + n])
            return i, at + n
        out.append(piece[at:] if at else piece)
        n -= avail
        i += 1
        at = 0
    return i, at


def _declarative(key: str) -> bool:
    """Keys a target declares rather than negotiates (no answer expected)."""
    return key in {
        "TargetAlias",
        "TargetPortalGroupTag",
        "TargetAddress",
        "MaxRecvDataSegmentLength",
        "TargetName",
        "InitiatorAlias",
    }
