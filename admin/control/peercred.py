"""Who is on the other end of a control-socket connection, and may they use it.

The socket's file mode is one lock, but a mode can be loosened by mistake, a
directory's ACL can let others in, and a descriptor can be passed on. So the
daemon also asks the kernel who connected (``SO_PEERCRED``: the peer's pid,
uid and gid at ``connect()``; ``SO_PEERGROUPS``: its supplementary groups)
and admits only root, the daemon's own user and members of ``control_group``.
These are the credentials of the connecting process, not what a client says
about itself, so they cannot be forged from user space.
"""

from __future__ import annotations

import errno
import grp
import pwd
import socket
import struct
from typing import Protocol

import attrs

#: Linux's SO_PEERGROUPS (not exported by Python's socket module before 3.13)
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_MAX_GROUPS = 65536  # NGROUPS_MAX


class _HasSockopt(Protocol):
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


@attrs.frozen
class PeerCredentials:
    """The connecting process as the kernel recorded it."""

    pid: int
    uid: int
    gid: int
    #: supplementary groups; None when the kernel cannot tell (pre-4.13)
    groups: tuple[int, ...] | None = None


def peer_credentials(sock: _HasSockopt) -> PeerCredentials:
    """SO_PEERCRED (and SO_PEERGROUPS) of a connected Unix socket; OSError if unavailable."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return PeerCredentials(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: _HasSockopt) -> tuple[int, ...] | None:
    size = 64
    while size <= _MAX_GROUPS:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                size *= 16
                continue
            return None  # ENOPROTOOPT: an old kernel
        count = len(raw) // 4
        return struct.unpack(f"{count}I", raw[: 4 * count])
    return None


@attrs.frozen
class PeerPolicy:
    """Root, the daemon's own user, and members of one group may connect."""

    own_uid: int
    group: str | None = None
    gid: int | None = None

    @classmethod
    def for_group(cls, own_uid: int, group: str | None) -> PeerPolicy:
        """The policy for ``control_group`` (KeyError if no such group)."""
        if group is None:
            return cls(own_uid)
        return cls(own_uid, group, grp.getgrnam(group).gr_gid)

    def refusal(self, peer: PeerCredentials) -> str | None:
        """None when ``peer`` may use the socket, else why not (sent to it, and logged)."""
        if peer.uid in (0, self.own_uid):
            return None
        if self.gid is not None and self._member(peer):
            return None
        who = f"uid {peer.uid} (pid {peer.pid})"
        if self.group is None:
            return (
                f"permission denied: {who} is neither root nor the daemon's user "
                f"(uid {self.own_uid}), and no control_group is configured"
            )
        return (
            f"permission denied: {who} is neither root nor the daemon's user "
            f'(uid {self.own_uid}) nor in control_group "{self.group}"'
        )

    def _member(self, peer: PeerCredentials) -> bool:
        if peer.gid == self.gid:
            return True
        if peer.groups is not None:
            return self.gid in peer.groups
        # no SO_PEERGROUPS: fall back on the group database for the peer's user
        try:
            name = pwd.getpwuid(peer.uid).pw_name
            return name in grp.getgrgid(self.gid).gr_mem  # type: ignore[arg-type]
        except KeyError:
            return False
