"""The reader's end of a chunk: the chunk's queued disk I/O is submitted, and
answers from completions found right then go out with the chunk's answers."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

import pyscst.transports.iscsi.connection as connection_module
from pyscst.devices.io_engine import SubmissionBatch
from pyscst.transports.iscsi.busy_poll import BusyPoll
from pyscst.transports.iscsi.connection import IscsiConnection


class _Batch(SubmissionBatch):
    """The daemon's submission batch, its submission replaced by a probe."""

    __slots__ = ("on_submit",)

    def __init__(self) -> None:
        super().__init__()
        self.on_submit: Callable[[], object] = lambda: None

    def submit_queued(self) -> None:
        self.on_submit()


@contextmanager
def _connection(
    batch: SubmissionBatch | None = None,
) -> Iterator[tuple[IscsiConnection, socket.socket]]:
    """A connection on one end of a TCP pair on loopback (it names its peer by
    address), and the other end, to read what it sent; both closed after."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    try:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        yield IscsiConnection(stream, host=None, io_batch=batch), b  # type: ignore[arg-type]
    finally:
        a.close()
        b.close()


async def test_answers_from_completions_found_at_submission_share_the_chunks_writev(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = _Batch()
    calls: list[int] = []
    real_writev = os.writev

    def writev(fd: int, buffers: Any) -> int:
        calls.append(len(buffers))
        return real_writev(fd, buffers)

    def submit() -> None:  # two reads completed inline when the chunk's I/O went in
        conn._queue([b"two"])
        conn._queue([b"three"])

    monkeypatch.setattr(connection_module.os, "writev", writev)
    batch.queued.append(object())  # type: ignore[arg-type]  # (a ring has some)
    with _connection(batch) as (conn, b):
        batch.on_submit = submit
        conn._batching = True
        conn._pending.append(b"one")  # the chunk's own answer, not sent yet
        conn._end_batch()
        assert calls == [3]  # one writev for the three
        assert b.recv(100) == b"onetwothree"
        assert not conn._submitting and not conn._batching


async def test_a_chunk_end_submits_only_when_a_ring_has_requests_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = _Batch()
    submitted: list[bool] = []
    queued: list[object] = batch.queued  # type: ignore[assignment]
    batch.on_submit = lambda: submitted.append(True)
    with _connection(batch) as (conn, b):
        conn._batching = True
        conn._pending.append(b"one")
        conn._end_batch()  # a page-cache hit's chunk: nothing queued, no call
        assert submitted == []
        assert b.recv(100) == b"one"
        queued.append(object())
        conn._batching = True
        conn._end_batch()
        assert submitted == [True]


@pytest.mark.parametrize("second", ["all", "part", "full"])
async def test_a_short_writev_is_tried_once_more_before_the_writer_task_takes_it(
    monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    """A 256 KiB Data-In the socket took only in part (most of a tape's QD1
    READ(6)s here): one more writev right away usually takes the rest, with
    no hop to the writer task; what that one does not take (part of it, or
    nothing: the socket is full) goes to the writer, in order, once."""
    calls: list[int] = []
    real_writev = os.writev

    def writev(fd: int, buffers: Any) -> int:
        calls.append(sum(map(len, buffers)))
        if len(calls) == 1:
            return int(real_writev(fd, [memoryview(buffers[0])[:5]]))  # a short write
        if second == "full":
            raise BlockingIOError
        if second == "part":
            return int(real_writev(fd, [b"".join(bytes(x) for x in buffers)[:3]]))
        return int(real_writev(fd, buffers))

    handed: list[list[Any]] = []
    monkeypatch.setattr(connection_module.os, "writev", writev)
    with _connection() as (conn, b):
        monkeypatch.setattr(conn, "_channel", handed.append)
        conn._pending = [b"header-", b"payload"]
        conn._flush_pending()
        assert calls == [14, 9]  # the whole, then what was left, at once
        if second == "all":
            assert handed == []
            assert b.recv(100) == b"header-payload"
        else:
            kept = 3 if second == "part" else 0
            rest = [b"".join(bytes(x) for x in h) for h in handed]
            assert rest == [b"header-payload"[5 + kept :]]
            assert b.recv(100) == b"header-payload"[: 5 + kept]


def _no_wait(waits: list[int]) -> Callable[[int], Any]:
    async def wait_readable(fd: int) -> None:
        waits.append(fd)
        await trio.lowlevel.checkpoint()

    return wait_readable


async def test_the_rest_of_a_pdu_already_in_is_read_without_a_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the middle of a PDU (a read came before a large PDU's last TCP
    segment), the reader reads before it waits: the tail is usually in by
    the time the first part is parsed, and a wait would cost an epoll round
    and a scheduler pass for bytes already there. Between PDUs, after a short
    read, it still waits first (a depth-1 initiator has sent nothing since)."""
    from pyscst.transports.iscsi import pdu_types as P
    from pyscst.transports.iscsi.pdu_codec import encode_pdu

    waits: list[int] = []
    monkeypatch.setattr(trio.lowlevel, "wait_readable", _no_wait(waits))
    raw = encode_pdu(P.NopOut(itt=7, data=bytes(range(250)) * 4))
    with _connection() as (conn, peer):
        reader = conn._reader
        reader.feed(raw[:600])
        assert reader.next_event() is None and reader.in_pdu
        peer.sendall(raw[600:])
        await trio.sleep(0.05)  # (on loopback: in the socket by now)
        conn._last_full = False
        assert await conn._refill(conn.stats_commands, bounded=True)
        assert waits == []
        pdu = reader.next_event()
        assert isinstance(pdu, P.NopOut) and pdu.itt == 7 and len(pdu.data) == 1000
        # between PDUs after a short read: wait first (here in Trio: the
        # poll sleep, tested below, is the other way to wait), then read
        monkeypatch.setattr(BusyPoll, "sleep_for_socket", lambda self, cap: False)
        peer.sendall(raw)
        await trio.sleep(0.05)
        assert await conn._refill(conn.stats_commands)
        assert waits == [conn._fd]
        assert isinstance(reader.next_event(), P.NopOut)


async def test_a_depth_1_reader_sleeps_in_poll_for_its_next_pdu_not_in_trio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between PDUs, with nothing else for the loop to do, the reader sleeps in
    poll(2) until its next PDU arrives and reads it without parking in Trio."""
    from pyscst.transports.iscsi import pdu_types as P
    from pyscst.transports.iscsi.pdu_codec import encode_pdu

    waits: list[int] = []
    monkeypatch.setattr(trio.lowlevel, "wait_readable", _no_wait(waits))
    monkeypatch.setattr(connection_module, "IDLE_WAIT", 10.0)  # (the bytes come 5 ms in)
    raw = encode_pdu(P.NopOut(itt=9, data=bytes(100)))
    with _connection() as (conn, peer):
        conn._last_full = False
        writer = threading.Timer(0.005, peer.sendall, args=(raw,))
        writer.start()
        try:
            assert await conn._refill(conn.stats_commands)
        finally:
            writer.join()
        assert waits == []  # no park in Trio: the poll sleep saw the bytes come
        pdu = conn._reader.next_event()
        assert isinstance(pdu, P.NopOut) and pdu.itt == 9


async def test_the_rest_of_a_pdu_not_in_yet_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The read first finds the socket empty: the reader waits, then reads."""
    from pyscst.transports.iscsi import pdu_types as P
    from pyscst.transports.iscsi.pdu_codec import encode_pdu

    waits: list[int] = []
    raw = encode_pdu(P.NopOut(itt=8, data=bytes(1000)))

    with _connection() as (conn, peer):

        async def wait_readable(fd: int) -> None:
            waits.append(fd)
            peer.sendall(raw[600:])  # (the tail comes while the reader waits)
            await trio.sleep(0.05)

        monkeypatch.setattr(trio.lowlevel, "wait_readable", wait_readable)
        reader = conn._reader
        reader.feed(raw[:600])
        assert reader.next_event() is None
        conn._last_full = False
        assert await conn._refill(conn.stats_commands, bounded=True)
        assert waits == [conn._fd]
        pdu = reader.next_event()
        assert isinstance(pdu, P.NopOut) and pdu.itt == 8


@pytest.mark.skipif(not hasattr(socket, "TCP_NOTSENT_LOWAT"), reason="Linux/macOS option")
async def test_the_connection_lifts_trios_unsent_bytes_cap() -> None:
    """trio's SocketStream caps unsent bytes at 16 KiB; the connection puts
    the host's default back (0), so that a whole 256 KiB Data-In is taken by
    one writev even while a paced congestion control holds its segments."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    with a, b:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == 16384
        IscsiConnection(stream, host=None)  # type: ignore[arg-type]
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == 0
