"""Task management and text requests, decided without I/O (RFC 7143 11.5, 11.10, 4.2.3.3).

The connection (``connection.py``) holds the commands it received and has not
yet handed to a logical unit (waiting for their CmdSN turn); a TMF must count
those too, and what it does to them depends only on its function code. The
text exchange hands out a long answer in pieces, each fetched with the TTT of
the one before. Both are decisions, so they live here as plain objects the
shell asks, tested alone (``tests/unit/transports/test_iscsi_requests.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from pyscst.actors.messages import TmfFunction
from pyscst.transports.iscsi.pdu_constants import RESERVED_TAG


class Held(enum.Enum):
    """What a TMF does to the commands the connection still holds for CmdSN order."""

    #: nothing (the LU or the session answers alone)
    NONE = "none"
    #: ABORT TASK: the referenced task, held or not (``IscsiConnection._abort_task``)
    ABORT_TASK = "abort task"
    #: they are aborted (those of ``lun``, or all when ``whole_nexus``) before the LU is asked
    ABORT = "abort"
    #: QUERY TASK / QUERY TASK SET: a matching held command answers FUNCTION SUCCEEDED
    QUERY = "query"


@attrs.frozen
class TmfPlan:
    """What one Task Management Function Request asks of the connection and the session."""

    function: int
    #: the LUN and referenced task tag handed to ``Session.task_management``
    lun: int
    tag: int
    held: Held
    #: the held commands concerned are all of the session's, not only those of ``lun``
    whole_nexus: bool = False
    #: only the held command with this tag (QUERY TASK); None: any of the LUN
    held_tag: int | None = None

    def holds(self, lun: int, tag: int) -> bool:
        """Whether a held command (its LUN number and tag) is one this TMF concerns."""
        if self.whole_nexus:
            return True
        # (an unaddressable LUN field, -1, concerns no held command)
        return lun == self.lun >= 0 and (self.held_tag is None or tag == self.held_tag)

    @property
    def ends_connection(self) -> bool:
        """TARGET COLD RESET, once complete: the response goes out, then the
        connection is dropped and the initiator logs in again."""
        return self.function == TmfFunction.TARGET_COLD_RESET


def plan_tmf(function: int, lun: int | None, referenced_task_tag: int) -> TmfPlan:
    """The plan for a TMF with ``function`` on LUN number ``lun`` (None: a LUN
    field we cannot address, which no LU has: -1)."""
    number = -1 if lun is None else lun
    if function == TmfFunction.ABORT_TASK:
        return TmfPlan(function, number, referenced_task_tag, Held.ABORT_TASK)
    if function in (
        TmfFunction.ABORT_TASK_SET,
        TmfFunction.CLEAR_TASK_SET,
        TmfFunction.LOGICAL_UNIT_RESET,
    ):
        return TmfPlan(function, number, 0, Held.ABORT)
    if function in (
        TmfFunction.TARGET_WARM_RESET,
        TmfFunction.TARGET_COLD_RESET,
        TmfFunction.I_T_NEXUS_RESET,
    ):
        return TmfPlan(function, 0, 0, Held.ABORT, whole_nexus=True)
    if function == TmfFunction.QUERY_TASK:
        return TmfPlan(
            function, number, referenced_task_tag, Held.QUERY, held_tag=referenced_task_tag
        )
    if function == TmfFunction.QUERY_TASK_SET:
        return TmfPlan(function, number, referenced_task_tag, Held.QUERY)
    # CLEAR ACA, TASK REASSIGN, QUERY ASYNC EVENT, unknown codes: the session answers
    return TmfPlan(function, number, referenced_task_tag, Held.NONE)


@attrs.frozen
class TextPiece:
    """One Text Response's worth of an answer: its data, and the TTT that
    fetches the rest (RESERVED_TAG and ``final`` when nothing is left)."""

    data: bytes
    ttt: int
    final: bool


class TextExchange:
    """A long text answer handed out in pieces (the C bit): each Text Response
    but the last carries a TTT, and an empty Text Request echoing it fetches
    the next piece (RFC 7143 11.10.1). A new request ends an unfinished answer."""

    def __init__(self, new_ttt: Callable[[], int]) -> None:
        self._new_ttt = new_ttt
        self._pending: dict[int, list[bytes]] = {}

    def abandon(self) -> None:
        """A new request arrived: what was left of the last answer is dropped."""
        self._pending.clear()

    def start(self, chunks: list[bytes]) -> TextPiece:
        """The first piece of an answer already split into ``chunks``."""
        self._pending.clear()
        return self._piece(chunks)

    def resume(self, ttt: int) -> TextPiece | None:
        """The next piece for a request echoing ``ttt``; None when no answer of
        ours waits under that TTT (the request is then rejected)."""
        chunks = self._pending.pop(ttt, None)
        if chunks is None:
            return None
        return self._piece(chunks)

    def _piece(self, chunks: list[bytes]) -> TextPiece:
        data = chunks[0] if chunks else b""
        rest = chunks[1:]
        if not rest:
            return TextPiece(data, RESERVED_TAG, True)
        ttt = self._new_ttt()
        self._pending[ttt] = rest
        return TextPiece(data, ttt, False)
