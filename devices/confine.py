"""Files the daemon opens by name stay inside the directories the operator named.

Why: the daemon usually runs as root, and anyone allowed on the control
socket (root, its own user, or ``control_group``) names paths through it:
``device add --path``, ``save PATH``. Without confinement a group member could
have root create or extend ``/etc/anything``, serve ``/etc/shadow`` as a disk,
or overwrite a file with a saved config. So every such path must lie under a
*root*: ``state_dir`` or one of ``allowed_dirs`` (for ``save`` also the config
file's directory). The roots themselves are trusted as configured (they may be
or contain symlinks the operator chose); below a root no symlink is followed.

Two layers:

* :func:`outside_roots` checks the text of a path: ``..`` is resolved
  lexically (``os.path.normpath``) and the result must lie strictly below a
  root. The config loader and the admin plane use it to refuse a path with a
  message naming the key, before anything touches the filesystem.
* :func:`open_beneath` opens the file race-free: the root is opened as a
  directory descriptor, then each component below it with
  ``openat(..., O_NOFOLLOW)`` relative to the previous descriptor, and the
  last one with ``O_NOFOLLOW`` too. A component swapped for a symlink between
  the check and the open is refused (ELOOP/ENOTDIR), never followed, which a
  ``realpath`` comparison could not promise. Missing directories are created
  (mode 0700) and a missing file only with ``O_CREAT|O_EXCL`` (mode 0600), so
  an existing file, or a symlink planted meanwhile, is never created "through".
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "OutsideRootsError",
    "SymlinkRefusedError",
    "confining_root",
    "dir_beneath",
    "lexical",
    "open_beneath",
    "outside_roots",
    "read_beneath",
    "unlink_beneath",
    "write_beneath",
]

_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_MODE = 0o700
FILE_MODE = 0o600


class SymlinkRefusedError(OSError):
    """A path component below a confining root is a symlink (or is not what it should be)."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message names the path already


class OutsideRootsError(PermissionError):
    """A path that lies below none of the confining roots."""

    def __str__(self) -> str:
        return str(self.strerror)


def lexical(base: Path, path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against ``base`` (``~`` expanded), ``..`` resolved lexically."""
    return Path(os.path.normpath(base / Path(path).expanduser()))


def confining_root(path: Path, roots: Sequence[Path]) -> Path | None:
    """The innermost root ``path`` lies strictly below (both absolute, normalised), or None."""
    best: Path | None = None
    for root in roots:
        if path != root and path.is_relative_to(root):
            if best is None or len(root.parts) > len(best.parts):
                best = root
    return best


def outside_roots(path: Path, roots: Sequence[Path]) -> bool:
    """True when ``path`` (absolute, normalised) lies below none of ``roots``."""
    return confining_root(path, roots) is None


def _refuse(path: Path, shown: Path, fd: int, name: str, exc: OSError) -> OSError:
    """The error for a failed ``openat(name)``: a symlink gets its own message."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return exc
    if stat.S_ISLNK(st.st_mode):
        return SymlinkRefusedError(
            errno.ELOOP, f"{shown} is a symlink; refusing to follow it", str(path)
        )
    if exc.errno == errno.ENOTDIR:
        return SymlinkRefusedError(errno.ENOTDIR, f"{shown} is not a directory", str(path))
    return exc


def _walk(root: Path, parts: Sequence[str], path: Path, create: bool) -> int:
    """A descriptor (O_PATH) of ``root/parts...``, no symlink followed below ``root``."""
    if create:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    shown = root
    try:
        for part in parts:
            if part in ("", ".", ".."):  # normalised paths never have these
                raise SymlinkRefusedError(errno.EINVAL, f"bad path component {part!r}", str(path))
            shown = shown / part
            try:
                child = os.open(part, _WALK_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: the open below checks what it is
                try:
                    child = os.open(part, _WALK_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _refuse(path, shown, fd, part, exc) from None
            except OSError as exc:
                raise _refuse(path, shown, fd, part, exc) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _split(path: Path, roots: Sequence[Path]) -> tuple[Path, tuple[str, ...]]:
    root = confining_root(path, roots)
    if root is None:
        allowed = ", ".join(str(r) for r in roots) or "nothing"
        raise OutsideRootsError(errno.EACCES, f"{path} is outside {allowed}", str(path))
    return root, path.relative_to(root).parts


@contextmanager
def dir_beneath(path: Path, roots: Sequence[Path], create: bool = False) -> Iterator[int]:
    """A directory descriptor (O_PATH) of ``path`` itself, walked from its root."""
    root, parts = _split(path / "x", roots)  # path itself may be the root
    fd = _walk(root, parts[:-1], path, create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_beneath(
    path: Path,
    roots: Sequence[Path],
    flags: int,
    *,
    create: bool = False,
    make_dirs: bool = False,
) -> tuple[int, bool]:
    """Open ``path`` (below one of ``roots``) with ``flags``, never through a symlink.

    With ``create`` a missing file is made with ``O_CREAT|O_EXCL`` mode 0600;
    ``make_dirs`` creates missing directories below the root (mode 0700).
    Returns the descriptor and whether the file was created. Raises
    PermissionError when ``path`` is outside every root, SymlinkRefusedError
    for a symlink on the way, OSError otherwise.
    """
    root, parts = _split(path, roots)
    flags = (flags & ~(os.O_CREAT | os.O_EXCL)) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    parent = _walk(root, parts[:-1], path, make_dirs)
    name = parts[-1]
    try:
        for _ in range(2):  # an O_EXCL race with another creator: open what it made
            try:
                return os.open(name, flags, dir_fd=parent), False
            except FileNotFoundError:
                if not create:
                    raise
            except OSError as exc:
                raise _refuse(path, path, parent, name, exc) from None
            try:
                return os.open(name, flags | os.O_CREAT | os.O_EXCL, FILE_MODE, dir_fd=parent), True
            except FileExistsError:
                continue
            except OSError as exc:
                raise _refuse(path, path, parent, name, exc) from None
        raise FileExistsError(errno.EEXIST, f"{path} keeps changing", str(path))
    finally:
        os.close(parent)


def write_beneath(path: Path, roots: Sequence[Path], data: bytes, keep_mode: bool = False) -> None:
    """Replace ``path`` (below one of ``roots``) with ``data``, crash-safe and symlink-safe.

    A temp file beside it (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600; with
    ``keep_mode`` the replaced regular file's mode), fsync, rename over
    ``path`` and fsync of the directory: a crash leaves the old or the new
    content, and a symlink at ``path`` is replaced, never written through.
    """
    tmp = f".{path.name}.tmp{os.getpid()}"
    with dir_beneath(path.parent, roots, create=True) as parent:
        try:
            os.unlink(tmp, dir_fd=parent)
        except FileNotFoundError:
            pass
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, FILE_MODE, dir_fd=parent)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if keep_mode:
                    try:
                        st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
                    except FileNotFoundError:
                        pass
                    else:
                        if stat.S_ISREG(st.st_mode):
                            os.fchmod(fd, st.st_mode & 0o777)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path.name, src_dir_fd=parent, dst_dir_fd=parent)
        finally:
            try:
                os.unlink(tmp, dir_fd=parent)
            except FileNotFoundError:
                pass
        fsync_dir(parent)


def fsync_dir(dir_fd: int) -> None:
    """fsync a directory given by an O_PATH descriptor (renames and unlinks in it)."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_beneath(path: Path, roots: Sequence[Path], limit: int = 1 << 24) -> bytes:
    """The content of ``path`` (a regular file below one of ``roots``), no symlink followed."""
    fd, _ = open_beneath(path, roots, os.O_RDONLY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SymlinkRefusedError(errno.EINVAL, f"{path} is not a regular file", str(path))
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes", str(path))
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def unlink_beneath(path: Path, roots: Sequence[Path]) -> bool:
    """Remove ``path`` (the name, never what a symlink there names); False if absent."""
    try:
        with dir_beneath(path.parent, roots) as parent:
            try:
                os.unlink(path.name, dir_fd=parent)
            except FileNotFoundError:
                return False
            fsync_dir(parent)
            return True
    except FileNotFoundError:
        return False
