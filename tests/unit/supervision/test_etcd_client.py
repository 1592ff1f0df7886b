"""The etcd client against a hostile fake etcd: every failure is an EtcdError, in time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from pyscst.supervision.cluster.etcd_client import EtcdClient
from pyscst.supervision.cluster.etcd_proto import EtcdError

Reply = Callable[[trio.SocketStream], Awaitable[None]]


async def _serve(reply: Reply, task_status: trio.TaskStatus[int]) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        with trio.move_on_after(5):
            await stream.receive_some(65536)  # the request (small: one read)
            await reply(stream)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


def _http(status: str, body: bytes, *, chunked: bool = False) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + body
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _answer(data: bytes) -> Reply:
    async def reply(stream: trio.SocketStream) -> None:
        await stream.send_all(data)

    return reply


async def _hang(stream: trio.SocketStream) -> None:
    await trio.sleep(10)


@pytest.mark.parametrize(
    "reply",
    [
        _answer(_http("200 OK", b"<html>hello</html>")),
        _answer(_http("500 Internal Server Error", b'{"error":"boom","code":2,"message":"boom"}')),
        _answer(_http("200 OK", b'{"header":{"revision":"nope"},"kvs":[]}')),
        _answer(_http("200 OK", b'{"kvs":[{"key":"!!!"}]}')),
        _answer(b"NOT HTTP AT ALL\r\n\r\n"),
        _answer(_http("200 OK", b'{"kvs": [')[:-3]),  # closed mid-body
        _hang,
    ],
    ids=["html", "error", "bad-int", "bad-base64", "not-http", "truncated", "silent"],
)
async def test_a_bad_etcd_is_an_etcd_error(reply: Reply) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve, reply)
        client = EtcdClient([f"http://127.0.0.1:{port}"], timeout=0.5)
        with trio.fail_after(3), pytest.raises(EtcdError):
            await client.range(b"/pyscst/", prefix=True)
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_unreachable_endpoints_are_named_and_the_next_one_is_tried() -> None:
    good = _answer(_http("200 OK", b'{"header":{"revision":"5"}}'))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve, good)
        client = EtcdClient(["http://127.0.0.1:9", f"http://127.0.0.1:{port}"], timeout=0.5)
        assert await client.range(b"/x") == (5, [])
        await client.aclose()
        client = EtcdClient(["http://127.0.0.1:9"], timeout=0.5)
        with pytest.raises(EtcdError, match=r"127\.0\.0\.1:9"):
            await client.range(b"/x")
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_a_garbage_watch_stream_is_an_etcd_error() -> None:
    chunks = b"5\r\nhello\r\n0\r\n\r\n"  # one chunk of garbage, then the end
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve, _answer(_http("200 OK", chunks, chunked=True)))
        client = EtcdClient([f"http://127.0.0.1:{port}"], timeout=0.5)
        with trio.fail_after(3), pytest.raises(EtcdError):
            async for _message in client.watch(b"/pyscst/", 1):
                pass
        await client.aclose()
        nursery.cancel_scope.cancel()
