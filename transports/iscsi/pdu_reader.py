"""Sans-I/O iSCSI PDU stream parser: bytes in, PDU records or errors out.

A connection hands whatever the socket gave it to :meth:`PduReader.feed` and
iterates the reader for events: decoded PDU records, or
:class:`ProtocolError` events for malformed input, which tell the caller
which Reject reason to answer with and whether the stream is still framed.
Parsing is lazy (one event per step), so digests and MaxRecvDataSegmentLength
can be switched between two PDUs, e.g. right after the final Login Response.

Memory is bounded: the reader keeps references to the chunks it was handed
and at most one PDU part (a header, or one data segment no longer than
``max_recv_data_segment_length``) of its own. A length field over the limit
is reported before anything is buffered and its segment is skipped, not
stored. Payloads are not copied when a PDU lies inside one fed chunk, and
copied once when it straddles chunks, unless the caller reads such a segment
itself, into the buffer it ends up in (``detach_opcode``, the initiator's
Data-In).

What may arrive depends on the side and the phase: :meth:`PduReader.expect`
narrows the opcodes decoded (a target in full feature phase takes no Login
Request and nothing only targets send). Any other known opcode is reported
as a ProtocolError (Reject reason Protocol Error) carrying the header as it
came, its segment skipped; an unknown opcode as Command not supported.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable, Iterator

import attrs

from pyscst.transports.iscsi.digest import digest_ok
from pyscst.transports.iscsi.pdu_constants import (
    BHS_LENGTH,
    DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
    Opcode,
    RejectReason,
)
from pyscst.transports.iscsi.pdu_types import (
    BHS_STRUCT,
    BULK_DATA_OPCODES,
    CLASS_BY_OPCODE,
    COMMAND_STRUCT,
    Buffer,
    Pdu,
    PduFormatError,
    ScsiCommand,
    decode_pdu,
)


@attrs.frozen
class ProtocolError:
    """A malformed PDU on the stream.

    ``header`` is the rejected BHS (the data segment of a Reject), None when
    not even a BHS was read. ``fatal`` means the stream can no longer be
    framed (bad header digest): the reader stops and the connection must be
    dropped. Otherwise the offending PDU has been skipped and parsing goes on.
    """

    reason: str
    header: bytes | None
    reject_reason: int
    fatal: bool = False


Event = Pdu | ProtocolError

_LENGTHS = struct.Struct(">B3xI")

_BHS, _HEADER_TAIL, _DATA, _DISCARD, _BROKEN = range(5)


def _pad4(n: int) -> int:
    return (n + 3) & ~3


class PduReader:
    """Incremental parser; set the three attributes when login negotiates them."""

    __slots__ = (
        "_acc",
        "_acc_fill",
        "_bhs",
        "_classes",
        "_data_length",
        "_discard",
        "_header",
        "_inputs",
        "_opcode",
        "_state",
        "_tail_length",
        "buffered",
        "data_digest",
        "detach_opcode",
        "header_digest",
        "max_recv_data_segment_length",
        "parts",
    )

    def __init__(
        self,
        *,
        header_digest: bool = False,
        data_digest: bool = False,
        max_recv_data_segment_length: int = DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
    ) -> None:
        self.header_digest = header_digest
        self.data_digest = data_digest
        self.max_recv_data_segment_length = max_recv_data_segment_length
        self._inputs: deque[memoryview] = deque()
        #: bytes handed over and not yet consumed (excluding a partial part);
        #: read-only to others (a plain attribute: the connection reads it
        #: once per answer)
        self.buffered = 0
        #: the pieces of a part that straddles chunks, until it is all there
        self._acc: list[memoryview] | None = None
        self._acc_fill = 0
        self._state = _BHS
        self._bhs: memoryview = memoryview(b"")
        self._header: memoryview = memoryview(b"")
        self._opcode = 0
        self._tail_length = 0
        self._data_length = 0
        self._discard = 0
        #: PDU parts (headers, data segments, whole PDUs) completed so far: a
        #: connection tells a stalled part from steady progress by it
        self.parts = 0
        #: the opcodes decoded (the rest are refused): all, until ``expect``
        self._classes = CLASS_BY_OPCODE
        #: a PDU of this opcode whose segment has not all arrived stops the
        #: parsing before its header (see incomplete_bulk); -1: none does
        self.detach_opcode = -1

    def expect(self, opcodes: Iterable[int] | None) -> None:
        """Decode only these opcodes from now on (None: every known one)."""
        if opcodes is None:
            self._classes = CLASS_BY_OPCODE
        else:
            self._classes = {op: CLASS_BY_OPCODE[op] for op in opcodes}

    # ------------------------------------------------------------------ input

    def feed(self, data: Buffer) -> None:
        """Hand over received bytes. ``bytes`` are kept without copying;
        mutable buffers are copied, since PDUs may keep views of them."""
        if not data:
            return
        # (a view of bytes is always flat unsigned bytes: no cast needed)
        view = memoryview(data if isinstance(data, bytes) else bytes(data))
        self._inputs.append(view)
        self.buffered += len(view)

    @property
    def in_pdu(self) -> bool:
        """True when part of a PDU has been consumed: EOF now would truncate it."""
        return self._state in (_HEADER_TAIL, _DATA, _DISCARD) or self._acc is not None

    @property
    def broken(self) -> bool:
        """True after a fatal error: no more events will be produced."""
        return self._state == _BROKEN

    def __iter__(self) -> Iterator[Event]:
        while (event := self.next_event()) is not None:
            yield event

    # ------------------------------------------------ a segment read elsewhere

    def incomplete_bulk(self, opcode: int) -> memoryview | None:
        """The BHS of the next PDU when it has this opcode, is whole in the
        first chunk, and its data segment has not all arrived (else None).

        The caller may then read that segment itself (:meth:`detach_segment`),
        straight into the buffer it ends up in, instead of the reader copying
        it together from what the socket gave. With ``detach_opcode`` set to
        the opcode, parsing stops before such a PDU, so that the caller can
        (if it does not, it feeds more, and the PDU is decoded as usual once
        all of it is there). Only the plain case: between
        two PDUs, no digests, no AHS, a segment of a multiple of 4 bytes (no
        padding) within MaxRecvDataSegmentLength.
        """
        if self._state != _BHS or self._acc is not None or self.header_digest or self.data_digest:
            return None
        inputs = self._inputs
        if not inputs:
            return None
        head = inputs[0]
        if len(head) < BHS_LENGTH:
            return None
        b0, lens = _LENGTHS.unpack_from(head)
        # (lens < 2**24: TotalAHSLength, its top byte, is 0)
        if (b0 & 0x3F != opcode or opcode not in self._classes or not lens or lens & 3
                or lens > self.max_recv_data_segment_length
                or self.buffered >= BHS_LENGTH + lens):  # fmt: skip
            return None
        return head[:BHS_LENGTH]

    def detach_segment(self) -> list[memoryview]:
        """Consume the header :meth:`incomplete_bulk` returned and every byte
        buffered after it (all part of its data segment); they are returned,
        in order. The caller owes the rest of the segment, ``length - sum of
        these``: it reads that from the stream itself before feeding the
        reader anything again. Call only right after ``incomplete_bulk``
        returned a header."""
        inputs = self._inputs
        head = inputs[0]
        parts: list[memoryview] = []
        if len(head) > BHS_LENGTH:
            parts.append(head[BHS_LENGTH:])
        inputs.popleft()
        parts += inputs
        inputs.clear()
        self.buffered = 0
        self.parts += 1
        return parts

    # ---------------------------------------------------------------- parsing

    def next_event(self) -> Event | None:
        """The next complete PDU or error, or None until more bytes are fed."""
        if self._state == _BHS and self._acc is None:
            inputs = self._inputs
            if not inputs:
                return None
            # Fast path: a whole AHS-less PDU with good digests in the first
            # chunk. Anything else (including a bad digest) takes the slow path.
            head = inputs[0]
            size = len(head)
            if size >= BHS_LENGTH:
                b0, lens = _LENGTHS.unpack_from(head)
                cls = self._classes.get(b0 & 0x3F)
                # (lens < 2**24: TotalAHSLength, its top byte, is 0)
                if cls is not None and lens <= self.max_recv_data_segment_length < 0x1000000:
                    if self.header_digest or self.data_digest:
                        end = self._digested_end(head, lens)
                        start = BHS_LENGTH + 4 if self.header_digest else BHS_LENGTH
                    else:
                        start = BHS_LENGTH
                        end = BHS_LENGTH + ((lens + 3) & ~3)
                        if size < end:
                            end = 0
                            if (b0 & 0x3F == self.detach_opcode
                                    and self.incomplete_bulk(self.detach_opcode) is not None):
                                return None  # (the caller reads the segment itself)
                    if end:
                        if size == end:
                            inputs.popleft()
                        else:
                            inputs[0] = head[end:]
                        self.buffered -= end
                        self.parts += 1
                        data: Buffer = head[start : start + lens]
                        if cls is ScsiCommand:
                            return cls.unpack(COMMAND_STRUCT.unpack_from(head), b"", data)
                        if b0 & 0x3F not in BULK_DATA_OPCODES:
                            data = bytes(data)
                        return cls.unpack(BHS_STRUCT.unpack_from(head), b"", data)
        while True:
            state = self._state
            if state == _BHS:
                bhs = self._take(BHS_LENGTH)
                if bhs is None:
                    return None
                self._bhs = bhs
                self._opcode = bhs[0] & 0x3F
                self._data_length = int.from_bytes(bhs[5:8], "big")
                self._tail_length = bhs[4] * 4 + (4 if self.header_digest else 0)
                if self._tail_length:
                    self._state = _HEADER_TAIL
                    continue
                self._header = bhs
                error = self._check_header()
                if error is not None:
                    return error
            elif state == _HEADER_TAIL:
                tail = self._take(self._tail_length)
                if tail is None:
                    return None
                self._header = memoryview(bytes(self._bhs) + bytes(tail))
                error = self._check_header()
                if error is not None:
                    return error
            elif state == _DATA:
                return self._finish_data()
            elif state == _DISCARD:
                if not self._skip():
                    return None
                self._state = _BHS
            else:
                return None

    def _digested_end(self, head: memoryview, lens: int) -> int:
        """Where a PDU with digests ends in ``head``, if it is all there and
        both digests are good; else 0 (the slow path reports what is wrong)."""
        hd = 4 if self.header_digest else 0
        start = BHS_LENGTH + hd
        end = start + ((lens + 3) & ~3)
        dd = 4 if self.data_digest and lens else 0
        if (
            len(head) >= end + dd
            and (not hd or digest_ok(head[BHS_LENGTH:start], head[:BHS_LENGTH]))
            and (not dd or digest_ok(head[end : end + 4], head[start:end]))
        ):
            return end + dd
        return 0

    def _check_header(self) -> ProtocolError | None:
        """Validate a complete header; set the state for what follows it."""
        header = self._header
        if self.header_digest:
            cut = len(header) - 4
            if not digest_ok(header[cut:], header[:cut]):
                self._state = _BROKEN
                return ProtocolError(
                    "header digest error", bytes(self._bhs), RejectReason.DATA_DIGEST_ERROR, True
                )
        length = self._data_length
        segment = _pad4(length) + (4 if self.data_digest and length else 0)
        if self._opcode not in self._classes:
            if self._opcode in CLASS_BY_OPCODE:
                return self._skip_segment(
                    segment,
                    f"opcode {self._opcode:#04x} is not expected here",
                    RejectReason.PROTOCOL_ERROR,
                )
            return self._skip_segment(
                segment,
                f"unknown opcode {self._opcode:#04x}",
                RejectReason.COMMAND_NOT_SUPPORTED,
            )
        if length > self.max_recv_data_segment_length:
            return self._skip_segment(
                segment,
                f"data segment of {length} bytes exceeds MaxRecvDataSegmentLength "
                f"{self.max_recv_data_segment_length}",
                RejectReason.PROTOCOL_ERROR,
            )
        self._state = _DATA
        self._discard = segment
        return None

    def _skip_segment(self, segment: int, reason: str, reject: int) -> ProtocolError:
        self._discard = segment
        self._state = _DISCARD if segment else _BHS
        return ProtocolError(reason, bytes(self._bhs), reject)

    def _finish_data(self) -> Event | None:
        segment = self._discard
        length = self._data_length
        if segment:
            body = self._take(segment)
            if body is None:
                return None
        else:
            body = memoryview(b"")
        self._state = _BHS
        data = body[:length]
        if self.data_digest and length:
            if not digest_ok(body[segment - 4 :], body[: segment - 4]):
                return ProtocolError(
                    "data digest error", bytes(self._bhs), RejectReason.DATA_DIGEST_ERROR
                )
        bhs = self._bhs
        ahs = self._header[BHS_LENGTH : len(self._header) - (4 if self.header_digest else 0)]
        try:
            if self._opcode in BULK_DATA_OPCODES:
                return decode_pdu(bhs, ahs, data)
            return decode_pdu(bhs, ahs, bytes(data))
        except PduFormatError as exc:
            return ProtocolError(str(exc), bytes(bhs), exc.reject_reason)

    # ------------------------------------------------------------ buffering

    def _take(self, n: int) -> memoryview | None:
        """Exactly ``n`` bytes, zero-copy when one chunk holds them; else None
        after moving what is there into the part buffer."""
        acc = self._acc
        inputs = self._inputs
        if acc is None:
            if not inputs:
                return None
            head = inputs[0]
            size = len(head)
            if size >= n:
                if size == n:
                    inputs.popleft()
                else:
                    inputs[0] = head[n:]
                self.buffered -= n
                self.parts += 1
                return head[:n]
            acc = self._acc = []
            self._acc_fill = 0
        fill = self._acc_fill
        while fill < n and inputs:
            head = inputs[0]
            k = min(len(head), n - fill)
            acc.append(head if k == len(head) else head[:k])
            fill += k
            self.buffered -= k
            if k == len(head):
                inputs.popleft()
            else:
                inputs[0] = head[k:]
        if fill < n:
            self._acc_fill = fill
            return None
        self._acc = None
        self.parts += 1
        # (joined once, into memory not zeroed first: a zero-filled buffer
        # written piece by piece wrote every byte twice)
        return memoryview(b"".join(acc))

    def _skip(self) -> bool:
        """Drop ``_discard`` bytes as they arrive; True once all are gone."""
        inputs = self._inputs
        while self._discard and inputs:
            head = inputs[0]
            k = min(len(head), self._discard)
            self._discard -= k
            self.buffered -= k
            if k == len(head):
                inputs.popleft()
            else:
                inputs[0] = head[k:]
        if self._discard:
            return False
        self.parts += 1
        return True


__all__ = ["Event", "Opcode", "PduReader", "ProtocolError"]
