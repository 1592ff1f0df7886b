"""The control endpoint itself: who may use the socket, and what bad clients get.

The socket is the daemon's whole admin surface, so it is created 0600 and a
path that is a symlink, a file or another live daemon's socket is refused
(the daemon does not start) rather than followed or stolen. On the wire,
every malformed line gets a specific ``bad_request`` reply and the
connection (and the daemon) carry on; only a line too long to frame ends
the connection.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyscst.admin.client.connection import AsyncClient, Client
from pyscst.admin.control.protocol import MAX_LINE, VERSION, OpError
from pyscst.admin.control.server import (
    ControlServer,
    ControlSocketError,
    OpHandler,
    claim_socket_path,
)
from tests.daemon import REPO_ROOT, daemon_command, free_port, running_daemon, write_config


async def _echo(args: Mapping[str, Any]) -> Any:
    return {"echo": dict(args)}


async def _broken(args: Mapping[str, Any]) -> Any:
    raise RuntimeError("boom")


async def _refusing(args: Mapping[str, Any]) -> Any:
    raise OpError("not_found", "no such thing", "devices.x")


OPS: dict[str, OpHandler] = {"echo": _echo, "broken": _broken, "refusing": _refusing}


@asynccontextmanager
async def serving(path: Path) -> AsyncIterator[ControlServer]:
    server = ControlServer(path, dict(OPS))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


class Raw:
    """A bare stream on the socket: send lines, read reply objects."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reply(self) -> dict[str, Any]:
        with trio.fail_after(5):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise EOFError("the server hung up")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        doc: dict[str, Any] = json.loads(line)
        return doc


def request(rid: Any, op: str, args: Any = None, v: Any = VERSION) -> bytes:
    doc: dict[str, Any] = {"v": v, "id": rid, "op": op}
    if args is not None:
        doc["args"] = args
    return json.dumps(doc).encode() + b"\n"


async def test_socket_is_private_and_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "run" / "c.sock"
    async with serving(path):
        mode = os.lstat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert not path.exists()


async def test_each_bad_line_gets_its_own_error_and_the_connection_lives_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sock"
    async with serving(path):
        raw = Raw(await trio.open_unix_socket(str(path)))
        cases: list[tuple[bytes, Any, str, str]] = [
            (b"not json\n", None, "bad_request", "not JSON"),
            (b"\xff\xfe\n", None, "bad_request", "not UTF-8"),
            (b"[1, 2]\n", None, "bad_request", "must be a JSON object"),
            (request(7, "echo", v=2), 7, "bad_request", "protocol version 2 not supported"),
            (request("x", "echo"), None, "bad_request", 'integer "id"'),
            (request(8, ""), 8, "bad_request", 'string "op"'),
            (request(9, "echo", args=[1]), 9, "bad_request", '"args" must be an object'),
            (request(10, "nope"), 10, "unsupported", 'unknown op "nope"'),
            (request(11, "broken"), 11, "internal", "broken failed: RuntimeError('boom')"),
        ]
        for line, rid, code, words in cases:
            await raw.send(line)
            reply = await raw.reply()
            assert reply["v"] == VERSION and reply["id"] == rid and reply["ok"] is False
            assert reply["error"]["code"] == code and words in reply["error"]["message"]
        await raw.send(request(12, "refusing"))
        error = (await raw.reply())["error"]
        assert error == {"code": "not_found", "message": "no such thing", "path": "devices.x"}
        # pipelined requests: answered in order, ids echoed, blank lines ignored
        await raw.send(request(13, "echo", {"a": 1}) + b"\n\n" + request(14, "echo"))
        assert await raw.reply() == {"v": VERSION, "id": 13, "ok": True,
                                     "result": {"echo": {"a": 1}}}
        assert (await raw.reply())["id"] == 14
        # a line that cannot be framed ends this connection, not the server
        await raw.send(b"x" * (MAX_LINE + 10))
        error = (await raw.reply())["error"]
        assert error["code"] == "bad_request" and "longer than" in error["message"]
        with pytest.raises((EOFError, trio.BrokenResourceError)):
            await raw.reply()
        async with await AsyncClient.connect(path) as client:
            assert await client.call("echo", b=2) == {"echo": {"b": 2}}


def test_claiming_the_path_refuses_symlinks_files_and_live_sockets(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.sock"
    link = tmp_path / "link.sock"
    link.symlink_to(target)
    with pytest.raises(ControlSocketError, match="is a symlink"):
        claim_socket_path(link)
    plain = tmp_path / "plain"
    plain.write_text("mine\n")
    with pytest.raises(ControlSocketError, match="not a socket"):
        claim_socket_path(plain)
    assert plain.read_text() == "mine\n"  # untouched
    live = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(live))
        other.listen(1)
        with pytest.raises(ControlSocketError, match="in use by another process"):
            claim_socket_path(live)
    # the other process is gone but left its socket file: stale, so it is reclaimed
    assert live.exists()
    claim_socket_path(live)
    assert not live.exists()


@pytest.mark.parametrize("kind", ["symlink", "file", "live"])
def test_daemon_refuses_to_start_on_a_foreign_socket_path(tmp_path: Path, kind: str) -> None:
    config = write_config(tmp_path, port=free_port())
    sock = tmp_path / "state" / "pyscst.sock"
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if kind == "symlink":
            sock.symlink_to(tmp_path / "decoy.sock")
        elif kind == "file":
            sock.write_text("not a socket\n")
        else:
            holder.bind(str(sock))
            holder.listen(1)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run(daemon_command(config), capture_output=True, text=True,
                              timeout=60, env=env, cwd=REPO_ROOT)
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    expected = {"symlink": "is a symlink", "file": "is not a socket",
                "live": "in use by another process"}[kind]
    assert "cannot start" in done.stderr and expected in done.stderr
    assert not (tmp_path / "decoy.sock").exists()
    if kind == "file":
        assert sock.read_text() == "not a socket\n"


def test_blocking_client_raises_the_daemon_error(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"

    async def main() -> None:
        async with serving(path):
            def blocking() -> None:
                with Client(path) as client:
                    assert client.call("echo", x="y") == {"echo": {"x": "y"}}
                    with pytest.raises(OpError) as info:
                        client.call("refusing")
                    assert (str(info.value.code), info.value.path) == ("not_found", "devices.x")

            await trio.to_thread.run_sync(blocking)

    trio.run(main)


# -- whatever arguments arrive, the daemon answers with a specific error ---------------

#: each op's arguments (plus "bogus" now and then)
_OP_KEYS = {
    "tree": [], "hello": [], "stats": ["device", "target", "tsih"],
    "session.list": ["target"], "session.close": ["target", "tsih"],
    "reset.lun": ["device"], "reset.target": ["target"],
    "device.list": [], "device.show": ["name"], "device.restart": ["name"],
    "device.eject": ["name"], "device.load": ["name", "path"],
    # "path" is confined to state_dir (a random one is refused or lands there)
    "device.add": ["name", "handler", "size", "path", "grow", "block_size", "read_only",
                   "write_cache", "serial", "rotational", "removable",
                   "physical_block_size"],
    "device.remove": ["name", "force"], "device.resize": ["name", "size"],
    "device.set": ["name", "read_only"], "target.add": ["name", "alias", "portal"],
    "target.remove": ["name", "force"], "portal.add": ["target", "portal"],
    "portal.remove": ["target", "portal"], "group.add": ["target", "group", "initiators"],
    "group.remove": ["target", "group", "force"],
    "initiator.add": ["target", "group", "pattern", "force"],
    "initiator.remove": ["target", "group", "pattern", "force"],
    "lun.add": ["target", "group", "lun", "device", "read_only"],
    "lun.remove": ["target", "group", "lun", "force"],
    "lun.set": ["target", "group", "lun", "read_only"], "config.reload": ["force"],
    "cluster.show": [],
}
_NAMES = ["disk0", "iqn.2026-11.org.pyscst:test", "hosts", "0", "127.0.0.1:1", "", "../x",
          "/etc/passwd", "disk0.img", "sub/new.img",
          "vdisk_nullio", "1M", "iqn.2026-11.org.pyscst:new", "iqn.2026-11.org.example:*"]
_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.sampled_from(_NAMES), st.text(max_size=20), st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    op = draw(st.sampled_from(sorted(_OP_KEYS)))
    keys = [*_OP_KEYS[op], "bogus"] if draw(st.integers(0, 9)) == 0 else _OP_KEYS[op]
    if not keys:
        return op, {}
    args = draw(st.dictionaries(st.sampled_from(keys), _values, max_size=len(keys)))
    if draw(st.booleans()):  # (keys is not empty here) a full set of plausible names now and then
        args.update({k: draw(st.sampled_from(_NAMES)) for k in keys if k not in args})
    return op, args


def test_random_arguments_never_crash_an_op(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        sock = d.state_dir / "pyscst.sock"
        seen: dict[str, int] = {}
        with Client(sock) as client:

            @settings(max_examples=300, deadline=None,
                      suppress_health_check=list(HealthCheck))
            @given(_requests())
            def one(request: tuple[str, dict[str, Any]]) -> None:
                op, args = request
                try:
                    client.call(op, **args)
                    seen["ok"] = seen.get("ok", 0) + 1
                except OpError as exc:
                    assert str(exc.code) != "internal", f"{op} {args}: {exc}"
                    seen[str(exc.code)] = seen.get(str(exc.code), 0) + 1

            one()
            assert client.call("hello")["version"] == VERSION
        # the draw reached past argument checking: some ops worked, some found nothing
        assert min(seen.get(k, 0) for k in ("ok", "invalid", "not_found")) > 0, seen
        # and no path led outside state_dir
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["daemon.stderr", "pyscst.toml", "state"]
