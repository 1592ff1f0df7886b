"""What a partial gather write (``writev``/``sendmsg``) left to send, without copying.

The connection sends a command's PDUs as one list of buffers (headers,
payload views) in one ``writev``: joining them first would copy every
payload once more, 256 KiB for a large read. A socket may take only part of
the list; :func:`unsent` gives the rest as views of the same buffers, so
the next call goes on where the last stopped. Pure: property-tested in
``tests/unit/transports/test_iscsi_iovec.py``.
"""

from __future__ import annotations

from pyscst.transports.iscsi.pdu_types import Buffer


def unsent(buffers: list[Buffer], sent: int) -> list[Buffer]:
    """The bytes of ``buffers`` after the first ``sent``, as a list of the same
    buffers (the one cut in two as a memoryview of its tail). Empty buffers
    before the first unsent byte are dropped; past the total, nothing is left."""
    for i, buf in enumerate(buffers):
        size = len(buf)
        if sent < size:
            if sent == 0:
                return buffers[i:]
            rest: list[Buffer] = [memoryview(buf)[sent:]]
            rest.extend(buffers[i + 1 :])
            return rest
        sent -= size
    return []
