"""One logged-in iSCSI connection driven PDU by PDU, for hostile end-to-end tests.

:class:`pyscst.transports.iscsi.initiator.Initiator` runs reader and writer tasks and
numbers requests itself, which is what a well-behaved initiator does. Tests
that send what a well-behaved initiator never would (an immediate READ, a
Login Request after login, a TCP reset right after a TMF) need each PDU on
the wire exactly when they say so and every answer in order: :class:`Wire`
logs in with the Initiator's login, then has no background tasks at all.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from pyscst.scsi.lun import encode_lun
from pyscst.transports.iscsi import pdu_types as P
from pyscst.transports.iscsi.cmdsn import sn_add
from pyscst.transports.iscsi.digest import digest_bytes
from pyscst.transports.iscsi.initiator import Initiator
from pyscst.transports.iscsi.pdu_codec import PduReader, ProtocolError, encode_pdu
from pyscst.transports.iscsi.pdu_constants import RESERVED_TAG
from tests.cdbs import TUR

GOOD = 0x00


class Wire:
    """A logged-in connection: send PDUs, receive them, one at a time."""

    def __init__(self, ini: Initiator) -> None:
        self.ini = ini
        self.stream = ini.stream
        params = ini.params
        self.header_digest = params.header_digest
        self.data_digest = params.data_digest
        self.reader = PduReader(
            header_digest=params.header_digest,
            data_digest=params.data_digest,
            max_recv_data_segment_length=max(params.max_recv_data_segment_length, 8192),
        )
        self.cmdsn = ini.cmdsn
        self.expstatsn = ini.expstatsn
        #: the window the target advertised last
        self.expcmdsn = ini.expcmdsn
        self.maxcmdsn = ini.maxcmdsn
        self._itt = 0x100
        #: Data-In payloads received, by ITT (offset order)
        self.data_in: dict[int, bytearray] = {}
        #: PDUs received while waiting for another task's, by ITT
        self._stash: dict[int, list[Any]] = {}

    @classmethod
    async def login(cls, host: str, port: int, target: str, **kwargs: Any) -> Wire:
        kwargs.setdefault("initial_r2t", False)
        return cls(await Initiator.connect(host, port, target_name=target, **kwargs))

    # -- building ---------------------------------------------------------------
    def next_itt(self) -> int:
        self._itt += 1
        return self._itt

    def number(self, immediate: bool) -> int:
        """The CmdSN for the next request (advanced unless it is immediate)."""
        sn = self.cmdsn
        if not immediate:
            self.cmdsn = sn_add(sn, 1)
        return sn

    def command(
        self,
        cdb: bytes,
        *,
        lun: int = 0,
        immediate: bool = False,
        read: int = 0,
        write: int = 0,
        data: bytes = b"",
        final: bool = True,
        itt: int | None = None,
    ) -> P.ScsiCommand:
        return P.ScsiCommand(
            immediate=immediate, final=final, read=read > 0, write=write > 0, attr=1,
            lun=int.from_bytes(encode_lun(lun), "big"),
            itt=self.next_itt() if itt is None else itt,
            expected_data_transfer_length=read or write, cmdsn=self.number(immediate),
            expstatsn=self.expstatsn, cdb=cdb, data=data,
        )  # fmt: skip

    def tmf(
        self, function: int, *, lun: int = 0, ref: int = RESERVED_TAG, refcmdsn: int = 0
    ) -> P.TaskManagementRequest:
        sn = self.number(True)
        return P.TaskManagementRequest(
            immediate=True, function=function, lun=int.from_bytes(encode_lun(lun), "big"),
            itt=self.next_itt(), referenced_task_tag=ref, cmdsn=sn, expstatsn=self.expstatsn,
            refcmdsn=refcmdsn,
        )  # fmt: skip

    def data_out(self, r2t: P.R2T, data: bytes) -> P.DataOut:
        return P.DataOut(
            final=True, lun=r2t.lun, itt=r2t.itt, ttt=r2t.ttt, expstatsn=self.expstatsn,
            datasn=0, buffer_offset=r2t.buffer_offset, data=data,
        )  # fmt: skip

    # -- the wire ---------------------------------------------------------------
    def encode(self, pdu: Any) -> bytes:
        return encode_pdu(pdu, self.header_digest, self.data_digest)

    async def send(self, *pdus: Any) -> None:
        await self.stream.send_all(b"".join(self.encode(p) for p in pdus))

    async def send_header(self, header: bytes) -> None:
        """A hand-made 48-byte header (no data segment), with its digest when
        header digests were negotiated."""
        if self.header_digest:
            header += digest_bytes(header)
        await self.stream.send_all(header)

    async def recv(self, timeout: float = 5.0) -> Any:
        """The next PDU (or ProtocolError); EOFError when the target closed."""
        with trio.fail_after(timeout):
            while True:
                event = self.reader.next_event()
                if event is not None:
                    self._track(event)
                    return event
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("the target closed the connection")
                self.reader.feed(data)

    async def recv_for(self, itt: int, timeout: float = 5.0) -> Any:
        """The next PDU about ``itt``; those about other tasks wait their turn
        (for their own ``recv_for``)."""
        stash = self._stash.get(itt)
        if stash:
            return stash.pop(0)
        with trio.fail_after(timeout):
            while True:
                event = await self.recv(timeout)
                other = getattr(event, "itt", None)
                if other == itt:
                    return event
                if other is not None:
                    self._stash.setdefault(other, []).append(event)

    async def r2t_for(self, itt: int, timeout: float = 5.0) -> P.R2T:
        """The next PDU about ``itt``, which must be an R2T (the test fails on
        anything else)."""
        r2t = await self.recv_for(itt, timeout)
        assert isinstance(r2t, P.R2T), r2t
        return r2t

    def _track(self, event: Any) -> None:
        if isinstance(event, ProtocolError):
            return
        if isinstance(event, P.DataIn):
            buf = self.data_in.setdefault(event.itt, bytearray())
            end = event.buffer_offset + len(event.data)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[event.buffer_offset : end] = event.data
        statsn = getattr(event, "statsn", None)
        numbered = not isinstance(event, P.R2T | P.DataIn) or (
            isinstance(event, P.DataIn) and event.status_present
        )
        if statsn is not None and numbered and not (
            isinstance(event, P.NopIn) and event.itt == RESERVED_TAG
        ):
            self.expstatsn = sn_add(statsn, 1)
        if hasattr(event, "maxcmdsn"):
            self.expcmdsn, self.maxcmdsn = event.expcmdsn, event.maxcmdsn

    async def execute(self, cmd: P.ScsiCommand, timeout: float = 5.0) -> Any:
        """Send one command and return its status-bearing answer (Data-In with
        status or SCSI Response; a Reject if it was refused)."""
        await self.send(cmd)
        while True:
            event = await self.recv(timeout)
            if isinstance(event, P.Reject) and event.data[16:20] == struct.pack(">I", cmd.itt):
                return event
            if getattr(event, "itt", None) != cmd.itt:
                continue
            if isinstance(event, P.ScsiResponse):
                return event
            if isinstance(event, P.DataIn) and event.status_present:
                return event

    async def settle(self, lun: int = 0, patience: float = 5.0) -> None:
        """Consume the power-on unit attention (and any other). A command
        another nexus' LOGICAL UNIT RESET or CLEAR TASK SET aborts gets no
        answer at all (TAS=0): with ``patience`` short, such a silence is
        retried instead of failing."""
        for _ in range(6):
            try:
                answer = await self.execute(self.command(TUR, lun=lun), patience)
            except trio.TooSlowError:
                continue
            if answer.status == GOOD:
                return
        raise AssertionError("TEST UNIT READY never GOOD")

    def reset(self) -> None:
        """Drop the connection with a TCP reset (SO_LINGER 0), as a crashed
        host or a hostile one does: no FIN, nothing more read."""
        sock = self.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def wire(host: str, port: int, target: str, **kwargs: Any) -> AsyncIterator[Wire]:
    w = await Wire.login(host, port, target, **kwargs)
    try:
        yield w
    finally:
        with trio.CancelScope(shield=True):
            await w.aclose()
