"""The iSCSI side of fault injection: the PDUs a transport fault sends.

The connection (``transports/iscsi/connection.py``) asks the fault engine at
its hooks (outgoing and incoming PDUs, NOP-Out pings, a login about to
succeed) and uses these helpers for what it sends instead: a copy of a PDU
batch with a broken CRC32C, the Async Message announcing a session drop, the
Login Response refusing a login for now. Kept apart so the connection only
grows by its hooks.
"""

from __future__ import annotations

from typing import Any

from pyscst.scsi.command import Buffer
from pyscst.transports.iscsi import pdu_types as P

#: RFC 7143 11.13.5: Status-Class 3 (target error), detail 1: service unavailable
LOGIN_SERVICE_UNAVAILABLE = (0x03, 0x01)
#: RFC 7143 11.9.1 AsyncEvent 3: the target will drop all connections of the session
ASYNC_DROP_SESSION = 3


def corrupt_digest(
    buffers: list[Buffer], header_digest: bool, data_digest: bool
) -> list[Buffer] | None:
    """The same PDU buffers with a wrong CRC32C: the first PDU's header digest
    when header digests are in use, else the data digest of the last PDU (the
    one carrying status in a response). None when no digest protects them."""
    if header_digest and len(buffers) >= 2 and len(buffers[1]) == 4:
        out = list(buffers)
        out[1] = _flip(out[1])
        return out
    if data_digest and len(buffers) >= 3 and len(buffers[-1]) == 4:
        out = list(buffers)
        out[-1] = _flip(out[-1])
        return out
    return None


def _flip(digest: Buffer) -> bytes:
    raw = bytearray(digest)
    raw[0] ^= 0xFF
    return bytes(raw)


def drop_session_message(statsn: int, expcmdsn: int, maxcmdsn: int) -> P.AsyncMessage:
    """Async Message: all connections of this session are about to be dropped,
    reconnect after Time2Wait 0, state kept for Time2Retain 0."""
    return P.AsyncMessage(
        statsn=statsn,
        expcmdsn=expcmdsn,
        maxcmdsn=maxcmdsn,
        async_event=ASYNC_DROP_SESSION,
        parameter2=0,
        parameter3=0,
    )


def login_refusal(request: Any, version: int, statsn: int) -> P.LoginResponse:
    """The Login Response that refuses ``request`` as temporarily unavailable."""
    status_class, status_detail = LOGIN_SERVICE_UNAVAILABLE
    return P.LoginResponse(
        transit=False,
        cont=False,
        csg=request.csg,
        nsg=request.nsg,
        version_max=version,
        version_active=version,
        isid=request.isid,
        tsih=0,
        itt=request.itt,
        statsn=statsn,
        expcmdsn=request.cmdsn,
        maxcmdsn=request.cmdsn,
        status_class=status_class,
        status_detail=status_detail,
    )
