"""How one SCSI command's data crosses iSCSI, decided without I/O (RFC 7143 10.7, 11.7, 11.8).

The Trio shell (``connection.py``) owns the socket, the tasks and the tables of
commands; what it sends and what it accepts is decided here, by plain functions
and small objects that take numbers and return PDUs or verdicts, as h11's
``_connection.py`` is to its users. So every rule can be tested alone, by
property tests over all sizes (``tests/unit/transports/test_iscsi_transfer.py``), not only
through a daemon:

- :func:`response_frames`: Data-In split by the initiator's
  MaxRecvDataSegmentLength, F at each MaxBurstLength sequence's end, status
  collapsed into the last Data-In when it is GOOD, else a SCSI Response; and the
  residual flags and count (:func:`residual`).
- :class:`R2TPlan`: the R2Ts that solicit what immediate and unsolicited data
  did not bring, at most MaxBurstLength each and MaxOutstandingR2T at a time.
- :func:`unsolicited_error` and :class:`DataOutBurst`: whether a Data-Out fits
  (its TTT, DataSN order, offsets inside what was asked for, no overlap).

The two commonest answers, a whole read in one Data-In that carries the status
and GOOD with no data, stay built inline in ``IscsiConnection._respond``: a
function call per command is measurable at queue depth 1. They are the bytes
:func:`response_frames` gives for the same command (a test checks that).
"""

from __future__ import annotations

from pyscst.scsi.sense import Status
from pyscst.transports.iscsi.pdu_codec import (
    encode_data_in_header,
    encode_scsi_response_header,
    encode_sense_segment,
)
from pyscst.transports.iscsi.pdu_types import Buffer

#: statuses a last Data-In may carry (a module global: ``Status.GOOD`` costs an
#: EnumType.__getattr__ slot call on CPython 3.11)
_COLLAPSIBLE = (Status.GOOD, Status.CONDITION_MET)

#: one PDU to send: its 48-byte header and its data segment (None: none)
Frame = tuple[bytes, Buffer | None]


def residual(produced: int, expected: int) -> tuple[bool, bool, int]:
    """(overflow, underflow, residual count) for a command that moved
    ``produced`` bytes against the initiator's Expected Data Transfer Length."""
    if produced > expected:
        return True, False, produced - expected
    if produced < expected:
        return False, True, expected - produced
    return False, False, 0


def data_in_segments(length: int, mrdsl: int, max_burst: int) -> list[tuple[int, int, bool]]:
    """(offset, end, F bit) of each Data-In carrying ``length`` bytes: at most
    ``mrdsl`` bytes each, none across a MaxBurstLength boundary (a sequence,
    the PDUs up to one with F, carries at most ``max_burst`` bytes: RFC 7143's
    MaxBurstLength key); F ends each sequence and the last PDU."""
    out = []
    off = 0
    while off < length:
        boundary = off - off % max_burst + max_burst
        end = min(off + mrdsl, length, boundary)
        out.append((off, end, end == length or end == boundary))
        off = end
    return out


def response_frames(
    *,
    itt: int,
    lun_raw: int,
    status: int,
    sense: bytes | None,
    data: Buffer | None,
    read: bool,
    transfer_length: int,
    expected_length: int,
    mrdsl: int,
    max_burst: int,
    statsn: int,
    expcmdsn: int,
    maxcmdsn: int,
) -> list[Frame]:
    """Every PDU that answers one command: its Data-In (read data, when the
    initiator asked for data-in), then status, in the last Data-In when it is
    GOOD (or CONDITION MET) without sense, else in a SCSI Response.

    ``data`` is what the command produced (None: nothing to send; then
    ``transfer_length``, what the CDB asked to move, decides the residual).
    ``statsn`` is used by exactly one PDU, the one with the status.
    """
    if data is not None:
        produced = len(data)
        if not read:
            data = None  # the initiator did not ask for data-in: nothing to send
    else:
        produced = transfer_length
    overflow, underflow, count = residual(produced, expected_length)
    frames: list[Frame] = []
    expdatasn = 0
    if data is not None and produced and expected_length:
        view = memoryview(data)[: min(produced, expected_length)]
        collapse = sense is None and status in _COLLAPSIBLE
        segments = data_in_segments(len(view), mrdsl, max_burst)
        last = len(segments) - 1
        for datasn, (off, end, final) in enumerate(segments):
            if datasn == last and collapse:
                header = encode_data_in_header(
                    itt, datasn, off, end - off, lun=lun_raw, final=True,
                    status_present=True, status=int(status), overflow=overflow,
                    underflow=underflow, residual_count=count, statsn=statsn,
                    expcmdsn=expcmdsn, maxcmdsn=maxcmdsn,
                )  # fmt: skip
            else:
                header = encode_data_in_header(
                    itt, datasn, off, end - off, lun=lun_raw, final=final,
                    expcmdsn=expcmdsn, maxcmdsn=maxcmdsn,
                )  # fmt: skip
            frames.append((header, view[off:end]))
        if collapse:
            return frames
        expdatasn = len(segments)
    segment = encode_sense_segment(sense) if sense else b""
    header = encode_scsi_response_header(
        itt, int(status), data_length=len(segment), statsn=statsn, expcmdsn=expcmdsn,
        maxcmdsn=maxcmdsn, expdatasn=expdatasn, overflow=overflow, underflow=underflow,
        residual_count=count,
    )  # fmt: skip
    frames.append((header, segment or None))
    return frames


class R2TPlan:
    """The R2Ts that solicit bytes [``offset``, ``total``) of a write.

    Each asks for at most ``max_burst`` bytes (MaxBurstLength), in order and
    back to back, and at most ``max_outstanding`` (MaxOutstandingR2T) are
    unanswered at a time. :meth:`issue` says which may go out now; the shell
    sends them, waits for the oldest burst and calls :meth:`completed`.
    """

    __slots__ = (
        "max_burst",
        "max_outstanding",
        "next_offset",
        "next_r2tsn",
        "outstanding",
        "total",
    )

    def __init__(self, offset: int, total: int, max_burst: int, max_outstanding: int) -> None:
        self.next_offset = offset
        self.total = total
        self.max_burst = max_burst
        self.max_outstanding = max_outstanding
        self.next_r2tsn = 0
        self.outstanding = 0

    @property
    def done(self) -> bool:
        """Every byte asked for and every burst completed."""
        return self.next_offset >= self.total and not self.outstanding

    def issue(self) -> list[tuple[int, int, int]]:
        """(R2TSN, buffer offset, desired length) of each R2T to send now."""
        out = []
        while self.next_offset < self.total and self.outstanding < self.max_outstanding:
            length = min(self.max_burst, self.total - self.next_offset)
            out.append((self.next_r2tsn, self.next_offset, length))
            self.next_r2tsn += 1
            self.next_offset += length
            self.outstanding += 1
        return out

    def completed(self) -> None:
        """The oldest outstanding burst has all its data."""
        self.outstanding -= 1


def unsolicited_error(
    offset: int, length: int, datasn: int, received: int, unsol_end: int, next_datasn: int
) -> str | None:
    """Why an unsolicited Data-Out (TTT 0xffffffff) does not fit, or None.

    It must continue exactly where the data so far ended (``received``), stay
    within the first burst (``unsol_end``) and carry the next DataSN. (The shell
    asks only while it still waits for unsolicited data.)
    """
    if offset != received or offset + length > unsol_end:
        return "unsolicited Data-Out outside the first burst"
    if datasn != next_datasn:
        return f"DataSN {datasn}, expected {next_datasn}"
    return None


class DataOutBurst:
    """What the Data-Out answering one R2T must be: for task ``itt``, bytes
    [``next_offset``, ``end``) in order, DataSN counting from 0."""

    __slots__ = ("end", "itt", "next_datasn", "next_offset")

    def __init__(self, itt: int, offset: int, length: int) -> None:
        self.itt = itt
        self.next_offset = offset
        self.next_datasn = 0
        self.end = offset + length

    @property
    def complete(self) -> bool:
        return self.next_offset >= self.end


def solicited_error(
    burst: DataOutBurst | None, ttt: int, itt: int, datasn: int, offset: int, length: int
) -> str | None:
    """Why a Data-Out answering R2T ``ttt`` (whose burst is ``burst``, None when
    no R2T of ours has that TTT) does not fit, or None: then it is taken and
    the burst advanced past it."""
    if burst is None or burst.itt != itt:
        # (a TTT of another task's R2T must not write into this one)
        return f"Data-Out for TTT {ttt:#x}, not an R2T of its task"
    if offset != burst.next_offset or offset + length > burst.end:
        return "Data-Out outside its R2T"
    if datasn != burst.next_datasn:
        return f"DataSN {datasn}, expected {burst.next_datasn}"
    burst.next_datasn = datasn + 1
    burst.next_offset = offset + length
    return None
