"""The control socket checks who connected, not just its own file mode (D7).

Hostile cases run real client processes under other credentials: the tests
run as root, so a subprocess drops to ``nobody`` (uid 65534) with or without
a group, and connects to a socket whose mode was loosened on purpose (0666,
in a world-searchable directory), as a mistaken chmod or a too-wide ACL
would. Only SO_PEERCRED stands between that process and the admin plane.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.admin.config.files import ConfigError, parse_config
from pyscst.admin.control.peercred import PeerCredentials, PeerPolicy
from pyscst.admin.control.server import ControlServer, ControlSocketError, OpHandler

NOBODY = 65534
NOGROUP = 65534
#: a group nobody is not in by default, present on every Debian system
GROUP = "users"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run clients as nobody")


async def _hello(args: Mapping[str, Any]) -> Any:
    return {"hello": "admitted"}


OPS: dict[str, OpHandler] = {"hello": _hello}

#: a bare client: connect, send one request, print the first reply line
CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"v": 1, "id": 1, "op": "hello", "args": {}}\n')
except OSError:
    pass
data = b""
while b"\n" not in data:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode().strip())
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may search (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="pyscst-peer-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def serving(path: Path, group: str | None = None) -> AsyncIterator[ControlServer]:
    server = ControlServer(path, dict(OPS), group=group)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


def run_as(
    argv: list[str], uid: int, gid: int, groups: list[int], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, user=uid, group=gid, extra_groups=groups, capture_output=True, text=True,
        timeout=60, cwd="/", env=dict(env) if env is not None else None,
    )


async def client_as(sock: Path, uid: int, gid: int, groups: list[int]) -> dict[str, Any]:
    done = await trio.to_thread.run_sync(
        run_as, [python_for_nobody(), "-I", "-c", CLIENT, str(sock)], uid, gid, groups
    )
    assert done.returncode == 0, done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


def _reachable_by_others(path: str, need: int = stat.S_IXOTH) -> bool:
    """May a user that is neither owner nor in the group reach ``path`` (``need``: x or r)?"""
    real = Path(os.path.realpath(path))
    dirs_ok = all(os.stat(p).st_mode & stat.S_IXOTH for p in real.parents)
    return dirs_ok and bool(os.stat(real).st_mode & need)


def python_for_nobody() -> str:
    """An interpreter nobody may run (ours may live under /root, mode 0700)."""
    system = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (sys.executable, system):
        if os.path.exists(candidate) and _reachable_by_others(candidate):
            return candidate
    pytest.skip("no Python interpreter that uid 65534 may execute")


def _site_packages() -> list[str]:
    """Where the client finds pyscst and its dependencies; skip if nobody may read it.

    The clone itself must be searchable by others too: the editable install
    maps ``pyscst.<package>`` to the repository's folders, and CI may clone
    into a 0700 directory (``mktemp -d``) that uid 65534 cannot enter.
    """
    import attrs

    site = Path(attrs.__file__).resolve().parent.parent
    repo = Path(__file__).resolve().parents[2]
    for needed in (site / "attrs" / "__init__.py", repo / "actors" / "__init__.py"):
        if not _reachable_by_others(str(needed), need=stat.S_IROTH):
            pytest.skip(f"uid 65534 cannot read {needed}: a parent directory is not"
                        " searchable by others (a 0700 clone or venv)")
    return [str(site)]


@pytest.fixture
def site_for_nobody() -> list[str]:
    """A fixture, so that its skip is reported with its reason (not from inside Trio)."""
    return _site_packages()


def _group_gid() -> int:
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        pytest.skip(f'no group "{GROUP}" on this system')


@needs_root
async def test_another_uid_is_refused_even_when_the_socket_mode_lets_it_in(
    open_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sock = open_dir / "c.sock"
    async with serving(sock):
        os.chmod(sock, 0o666)  # the file mode alone would let anyone in
        with caplog.at_level(logging.WARNING, logger="pyscst.admin.control.server"):
            reply = await client_as(sock, NOBODY, NOGROUP, [])
        assert reply["ok"] is False and reply["id"] is None
        assert reply["error"]["code"] == "forbidden"
        message = reply["error"]["message"]
        assert "uid 65534" in message and "no control_group is configured" in message
        warning = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warning and "refused pid" in warning[0].getMessage()
        assert "uid 65534" in warning[0].getMessage()
        # root (and the daemon's own user) still get in
        assert (await client_as(sock, 0, 0, []))["result"] == {"hello": "admitted"}


@needs_root
async def test_control_group_members_get_in_and_others_do_not(open_dir: Path) -> None:
    gid = _group_gid()
    sock = open_dir / "c.sock"
    async with serving(sock, group=GROUP):
        st = os.lstat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid
        # a supplementary group (SO_PEERGROUPS) and a primary group both count
        assert (await client_as(sock, NOBODY, NOGROUP, [gid]))["ok"] is True
        assert (await client_as(sock, NOBODY, gid, []))["ok"] is True
        os.chmod(sock, 0o666)
        reply = await client_as(sock, NOBODY, NOGROUP, [])
        assert reply["error"]["code"] == "forbidden"
        assert f'nor in control_group "{GROUP}"' in reply["error"]["message"]


@needs_root
@pytest.mark.parametrize("command", ["admin", "console"])
async def test_pyscst_admin_and_console_print_the_refusal_and_exit_1(
    open_dir: Path, command: str, site_for_nobody: list[str]
) -> None:
    sock = open_dir / "c.sock"
    async with serving(sock):
        os.chmod(sock, 0o666)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
        # addsitedir, not PYTHONPATH: the editable install maps pyscst.<package>
        # to the repository's folders from a .pth file, which PYTHONPATH skips
        boot = ("import runpy, site, sys; [site.addsitedir(d) for d in sys.argv.pop(1).split(':')];"
                " runpy.run_module('pyscst', run_name='__main__', alter_sys=True)")
        argv = [python_for_nobody(), "-c", boot, ":".join(site_for_nobody),
                command, "--socket", str(sock)]
        if command == "admin":
            argv.append("hello")
        done = await trio.to_thread.run_sync(run_as, argv, NOBODY, NOGROUP, [], env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    prefix = "pyscst admin: hello: " if command == "admin" else "pyscst console: "
    assert f"{prefix}permission denied: uid 65534" in done.stderr
    if command == "admin":
        assert "(forbidden)" in done.stderr


def test_policy_admits_root_own_user_and_group_members() -> None:
    policy = PeerPolicy(own_uid=1000, group="ops", gid=4242)
    assert policy.refusal(PeerCredentials(1, 0, 0, ())) is None
    assert policy.refusal(PeerCredentials(1, 1000, 1000, ())) is None
    assert policy.refusal(PeerCredentials(1, 1001, 4242, ())) is None
    assert policy.refusal(PeerCredentials(1, 1001, 1001, (7, 4242))) is None
    why = policy.refusal(PeerCredentials(99, 1001, 1001, (7,)))
    assert why is not None and "uid 1001 (pid 99)" in why and 'control_group "ops"' in why
    assert PeerPolicy(own_uid=1000).refusal(PeerCredentials(1, 1001, 4242, (4242,))) is not None


def test_an_unknown_control_group_is_a_config_error_and_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('control_group = "no-such-group-here"\n', tmp_path)
    assert [str(p) for p in info.value.problems] == [
        'control_group: no group named "no-such-group-here" on this system'
    ]
    with pytest.raises(ControlSocketError, match="no such group"):
        ControlServer(tmp_path / "c.sock", {}, group="no-such-group-here")
    assert parse_config('control_group = "root"\n', tmp_path).control_group == "root"
