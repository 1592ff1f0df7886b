"""The control endpoint: a Unix socket speaking :mod:`pyscst.admin.control.protocol` to operators.

A supervised actor in the daemon's tree. It claims the socket path safely
(refusing a symlink, a non-socket or another live daemon's socket; a stale
socket is replaced), creates it mode 0600 (0660 and group ``control_group``
when one is configured), checks every connecting process's kernel
credentials (:mod:`pyscst.admin.control.peercred`: root, the daemon's user or a group
member; anyone else gets one ``forbidden`` line and is hung up on, and a
WARNING is logged), serves each admitted client in its own task,
and turns every request into a call of the op table it was given (op name ->
async handler). Nothing a client sends can crash it: bad lines get
``bad_request``, unknown ops ``unsupported``, a failing op ``internal``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import trio

from pyscst.admin.client.connection import socket_address
from pyscst.admin.control.peercred import PeerPolicy, peer_credentials
from pyscst.admin.control.protocol import (
    MAX_LINE,
    ErrorCode,
    OpError,
    Reply,
    Request,
    decode_request,
    request_id_of,
)

log = logging.getLogger(__name__)

#: An operation: validated arguments in, a JSON-able result out (or OpError).
OpHandler = Callable[[Mapping[str, Any]], Awaitable[Any]]
MAX_CLIENTS = 64


class ControlSocketError(OSError):
    """The control socket path cannot be claimed (symlink, foreign file, live socket)."""


def claim_socket_path(path: Path) -> None:
    """Make ``path`` free for our socket, or raise ControlSocketError saying why not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ControlSocketError(f"control socket {path} is a symlink; refusing to use it")
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(f"control socket {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        with socket_address(path) as address:
            probe.connect(address)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ControlSocketError(f"control socket {path}: cannot check it: {exc}") from exc
        log.info("removing stale control socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ControlSocketError(f"control socket {path} is in use by another process")


def bind_socket(path: Path, gid: int | None = None) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 from the start; with ``gid``
    it then gets that group and mode 0660 (never more than the owner and group)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    claim_socket_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket is open to others
    try:
        with socket_address(path) as address:
            sock.bind(address)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    try:
        if gid is not None:
            os.chown(path, -1, gid, follow_symlinks=False)
        if stat.S_ISSOCK(os.lstat(path).st_mode):  # never chmod what a swapped-in symlink names
            os.chmod(path, 0o600 if gid is None else 0o660)
    except OSError:
        sock.close()
        raise
    sock.listen(16)
    return sock


def _warn_unreachable(path: Path, policy: PeerPolicy) -> None:
    """control_group members need search permission on the socket's directory."""
    st = os.stat(path.parent)
    group_ok = st.st_gid == policy.gid and st.st_mode & stat.S_IXGRP
    if not (group_ok or st.st_mode & stat.S_IXOTH):
        log.warning(
            'control socket %s: members of control_group "%s" cannot reach it: '
            "its directory is mode %o, group %d",
            path, policy.group, stat.S_IMODE(st.st_mode), st.st_gid,
        )


class ControlServer:
    """Actor serving the control protocol on a Unix socket."""

    def __init__(
        self,
        path: Path,
        ops: MutableMapping[str, OpHandler],
        group: str | None = None,
        policy: PeerPolicy | None = None,
    ) -> None:
        self.name = f"control {path}"
        self.path = path
        self._ops = ops  # read at every request: others may register ops later
        self._clients = 0
        try:
            self.policy = policy or PeerPolicy.for_group(os.geteuid(), group)
        except KeyError:
            raise ControlSocketError(f'control_group "{group}": no such group') from None

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raw = bind_socket(self.path, self.policy.gid)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
        inode = os.stat(self.path).st_ino
        if self.policy.gid is not None:
            _warn_unreachable(self.path, self.policy)
        try:
            async with trio.open_nursery() as nursery:
                log.info("control socket listening on %s", self.path)
                task_status.started()
                async with listener:
                    while True:
                        try:
                            stream = await listener.accept()
                        except OSError as exc:
                            log.warning("control: accept failed: %s", exc)
                            await trio.sleep(0.1)
                            continue
                        if self._clients >= MAX_CLIENTS:
                            await stream.aclose()
                            continue
                        nursery.start_soon(self._client, stream)
        finally:
            try:  # only remove the socket if it is still ours
                if os.stat(self.path).st_ino == inode:
                    self.path.unlink()
            except OSError:
                pass

    def _refusal(self, stream: trio.SocketStream) -> str | None:
        """Why this peer may not use the socket (logged at WARNING), or None."""
        try:
            peer = peer_credentials(stream.socket)
        except OSError as exc:
            log.warning("control: refused a client whose credentials are unknown: %s", exc)
            return f"permission denied: cannot tell who you are ({exc})"
        why = self.policy.refusal(peer)
        if why is not None:
            log.warning(
                "control: refused pid %d uid %d gid %d: %s", peer.pid, peer.uid, peer.gid, why
            )
        return why

    async def _client(self, stream: trio.SocketStream) -> None:
        self._clients += 1
        try:
            async with stream:
                why = self._refusal(stream)
                if why is not None:
                    with trio.move_on_after(1):  # one line, then hang up
                        await self._send(stream, Reply.failure(None, OpError(
                            ErrorCode.FORBIDDEN, why)))
                    return
                buffer = bytearray()
                while True:
                    try:
                        chunk = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    if not chunk:
                        return
                    buffer += chunk
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if line.strip():
                            if not await self._answer(stream, line):
                                return
                    if len(buffer) > MAX_LINE:
                        error = OpError(
                            ErrorCode.BAD_REQUEST, f"request line longer than {MAX_LINE} bytes"
                        )
                        await self._send(stream, Reply.failure(None, error))
                        return  # the rest of that line cannot be framed: hang up
        except Exception:
            log.exception("control: client handler failed")
        finally:
            self._clients -= 1

    async def _answer(self, stream: trio.SocketStream, line: bytes) -> bool:
        try:
            request = decode_request(line)
        except OpError as exc:
            return await self._send(stream, Reply.failure(request_id_of(line), exc))
        reply = await self.execute(request)
        return await self._send(stream, reply)

    async def execute(self, request: Request) -> Reply:
        """Run one request through the op table; always a reply, never an exception."""
        handler = self._ops.get(request.op)
        if handler is None:
            known = ", ".join(sorted(self._ops))
            return Reply.failure(
                request.id,
                OpError(ErrorCode.UNSUPPORTED, f'unknown op "{request.op}" (known: {known})', "op"),
            )
        try:
            result = await handler(request.args)
        except OpError as exc:
            return Reply.failure(request.id, exc)
        except Exception as exc:
            log.exception("control: op %s failed", request.op)
            return Reply.failure(
                request.id, OpError(ErrorCode.INTERNAL, f"{request.op} failed: {exc!r}")
            )
        return Reply.success(request.id, result)

    async def _send(self, stream: trio.SocketStream, reply: Reply) -> bool:
        try:
            data = reply.encode()
        except (TypeError, ValueError) as exc:
            log.error("control: unencodable reply %r: %s", reply, exc)
            error = OpError(ErrorCode.INTERNAL, f"reply could not be encoded: {exc}")
            data = Reply.failure(reply.id, error).encode()
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True
