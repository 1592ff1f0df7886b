"""``[targets."IQN".auth]`` and ``[discovery_auth]``: access lists and CHAP secrets.

Why a module of its own: secrets are the one part of the configuration read
from other files, and those files are checked like ssh checks its keys (a
regular file, ours, readable by nobody else, not reached through a symlink)
before a byte is used. Every problem is reported at its key path; a secret
never appears in a message.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from pyscst.admin.config.model import AuthConfig, ChapUser
from pyscst.admin.config.schema import KeyPath, Problem, RawAuth, RawChap, RawDiscoveryAuth
from pyscst.admin.config.values import check_initiator_pattern

#: RFC 7143 12.1.3: secrets of at least 96 bits; more than 255 bytes is a mistake.
MIN_SECRET = 12
MAX_SECRET = 255
MAX_USER = 255


def read_secret_file(path: Path) -> bytes:
    """The secret in ``path`` (one line; a final newline is not part of it).

    Refused (ValueError) unless it is a regular file owned by our effective
    user with no group or other permission bits, opened without following a
    symlink.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if info.st_uid != os.geteuid():
            raise ValueError(f"{path} is owned by uid {info.st_uid}, not by us ({os.geteuid()})")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise ValueError(f"{path} has mode {mode:04o}: others may read it (chmod 600)")
        data = os.read(fd, MAX_SECRET + 3)
    finally:
        os.close(fd)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if b"\n" in data or b"\r" in data:
        raise ValueError(f"{path} holds more than one line (the secret is the only line)")
    return data


def _check_length(secret: bytes) -> str | None:
    if len(secret) < MIN_SECRET:
        return f"secret shorter than {MIN_SECRET} bytes (RFC 7143 12.1.3)"
    if len(secret) > MAX_SECRET:
        return f"secret longer than {MAX_SECRET} bytes"
    return None


def resolve_chap(
    path: KeyPath,
    raw: RawChap,
    secret_dir: Path,
    fail: Callable[[KeyPath, str], None],
    read: Callable[[Path], bytes] = read_secret_file,
) -> ChapUser | None:
    """One ``{ user, secret | secret_file }`` entry, checked."""
    ok = True
    if not 1 <= len(raw.user.encode()) <= MAX_USER or any(c in raw.user for c in "\0\n"):
        fail((*path, "user"), f"expected 1-{MAX_USER} bytes without NUL or newline")
        ok = False
    if (raw.secret is None) == (raw.secret_file is None):
        fail(path, "give exactly one of secret and secret_file")
        return None
    if raw.secret is not None:
        secret = raw.secret.encode()
        where: KeyPath = (*path, "secret")
    else:
        assert raw.secret_file is not None
        where = (*path, "secret_file")
        if not raw.secret_file.strip():
            fail(where, "empty path")
            return None
        file = Path(os.path.normpath(secret_dir / Path(raw.secret_file).expanduser()))
        try:
            secret = read(file)
        except ValueError as exc:
            fail(where, str(exc))
            return None
    error = _check_length(secret)
    if error:
        fail(where, error)
        return None
    if not ok:
        return None
    return ChapUser(raw.user, secret, raw.secret_file)


def resolve_auth(
    path: KeyPath,
    raw: RawAuth | RawDiscoveryAuth,
    secret_dir: Path,
    problems: list[Problem],
) -> AuthConfig:
    """An auth table, checked; problems are appended with their key paths."""

    def fail(where: KeyPath, message: str) -> None:
        problems.append(Problem(where, message))

    initiators: tuple[str, ...] | None = None
    if isinstance(raw, RawAuth) and raw.initiators is not None:
        for i, pattern in enumerate(raw.initiators):
            try:
                check_initiator_pattern(pattern)
            except ValueError as exc:
                fail((*path, "initiators", i), str(exc))
        initiators = tuple(raw.initiators)
    users: list[ChapUser] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw.chap):
        cred = resolve_chap((*path, "chap", i), entry, secret_dir, fail)
        if entry.user in seen:
            fail((*path, "chap", i, "user"), f'"{entry.user}" already at index {seen[entry.user]}')
            continue
        seen[entry.user] = i
        if cred is not None:
            users.append(cred)
    mutual = None
    if raw.mutual is not None:
        mutual = resolve_chap((*path, "mutual"), raw.mutual, secret_dir, fail)
        if not raw.chap:
            fail((*path, "mutual"), "needs chap users: the initiator proves itself first")
        if mutual is not None and any(u.secret == mutual.secret for u in users):
            key = "secret" if raw.mutual.secret is not None else "secret_file"
            fail((*path, "mutual", key), "the mutual secret must differ from every chap secret")
    return AuthConfig(initiators=initiators, chap=tuple(users), mutual=mutual)


def auth_to_dict(auth: AuthConfig, discovery: bool = False) -> dict[str, object]:
    """The table ``save`` writes: references as written, inline secrets as written."""

    def entry(user: ChapUser) -> dict[str, str]:
        if user.secret_file is not None:
            return {"user": user.user, "secret_file": user.secret_file}
        return {"user": user.user, "secret": user.secret.decode()}

    out: dict[str, object] = {}
    if not discovery and auth.initiators is not None:
        out["initiators"] = list(auth.initiators)
    if auth.chap:
        out["chap"] = [entry(u) for u in auth.chap]
    if auth.mutual is not None:
        out["mutual"] = entry(auth.mutual)
    return out
