"""Backing files, PR state and saved configs stay below state_dir / allowed_dirs (D7).

Hostile cases, each as an attacker on the admin plane (or with write access
to state_dir) would try them: a backing file that is a symlink to a file
outside, a directory component that is a symlink, ``../`` escapes, absolute
paths elsewhere, a FIFO, a symlink planted as the PR state file or its
directory, ``save`` to a file elsewhere or through a symlinked directory.
Every one must be refused with a message, and nothing outside may be
created, extended or overwritten. The daemon-level cases drive the real
``pyscst admin``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import tomli_w

from pyscst.actors.pr_state import PrState, Registrant, Registration
from pyscst.actors.pr_store import AptplStore
from pyscst.admin.config.files import ConfigError, parse_config
from pyscst.devices.confine import SymlinkRefusedError, open_beneath, outside_roots
from pyscst.devices.stores import FileStore
from tests.daemon import running_daemon_async
from tests.e2e.test_admin_cli import admin_for

SECRET = b"root:the-real-secret\n"


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside state_dir and the config's directory, with a file an
    attacker wants."""
    path = tmp_path_factory.mktemp("outside")
    (path / "victim").write_bytes(SECRET)
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def _config_problems(doc: dict[str, object], base: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomli_w.dumps(doc), base)
    return [str(p) for p in info.value.problems]


def _device(path: str) -> dict[str, object]:
    return {"devices": {"disk1": {"handler": "vdisk_fileio", "size": "1M", "path": path}}}


# -- the config file ------------------------------------------------------------------


def test_config_refuses_paths_outside_state_dir_naming_the_key(tmp_path: Path) -> None:
    base = {"state_dir": "/srv/var"}
    assert _config_problems({**base, **_device("/etc/passwd")}, tmp_path) == [
        'devices.disk1.path: "/etc/passwd" is outside state_dir and allowed_dirs (/srv/var)'
    ]
    assert _config_problems({**base, **_device("../../etc/passwd")}, tmp_path) == [
        'devices.disk1.path: "../../etc/passwd" (= /etc/passwd) is outside state_dir '
        "and allowed_dirs (/srv/var)"
    ]
    # a ../ that stays inside is fine: resolved lexically, not by the filesystem
    config = parse_config(tomli_w.dumps({**base, **_device("a/../b.img")}), tmp_path)
    assert config.device("disk1").path == Path("/srv/var/b.img")
    # allowed_dirs opens more directories (relative ones resolve against the file)
    doc = {**base, "allowed_dirs": ["/dev", "images"], **_device("/dev/sdb")}
    config = parse_config(tomli_w.dumps(doc), tmp_path)
    assert config.allowed_dirs == (Path("/dev"), tmp_path / "images")
    assert config.device("disk1").path == Path("/dev/sdb")
    doc = {**base, "allowed_dirs": ["/dev"], **_device("/dev/../etc/shadow")}
    assert "outside state_dir and allowed_dirs (/srv/var, /dev)" in _config_problems(
        doc, tmp_path
    )[0]
    assert _config_problems({"allowed_dirs": [""]}, tmp_path) == ["allowed_dirs[0]: empty path"]


def test_outside_roots_is_lexical_and_strict() -> None:
    roots = [Path("/srv/var")]
    assert not outside_roots(Path("/srv/var/a.img"), roots)
    assert outside_roots(Path("/srv/var"), roots)  # the directory itself is no file
    assert outside_roots(Path("/srv/variant/a.img"), roots)  # not a string prefix test
    assert outside_roots(Path("/etc/passwd"), roots)


# -- opening backing files --------------------------------------------------------------


async def test_a_symlinked_backing_file_is_refused_and_its_target_untouched(
    state: Path, outside: Path
) -> None:
    (state / "disk1.img").symlink_to(outside / "victim")
    with pytest.raises(SymlinkRefusedError, match="is a symlink"):
        await FileStore.open(state / "disk1.img", size=1 << 20, roots=[state], grow=True)
    assert (outside / "victim").read_bytes() == SECRET  # not served, not extended


async def test_a_symlinked_directory_component_is_refused(state: Path, outside: Path) -> None:
    (state / "sub").symlink_to(outside)
    with pytest.raises(SymlinkRefusedError, match="sub is a symlink"):
        await FileStore.open(state / "sub" / "victim", size=1 << 20, roots=[state], grow=True)
    with pytest.raises(SymlinkRefusedError, match="sub is a symlink"):
        await FileStore.open(state / "sub" / "new.img", size=1 << 20, roots=[state])
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]  # nothing created there
    assert (outside / "victim").read_bytes() == SECRET


async def test_paths_outside_the_roots_are_refused_before_any_open(
    state: Path, outside: Path
) -> None:
    for path in (outside / "victim", state / ".." / "outside" / "new.img"):
        with pytest.raises(PermissionError, match="is outside"):
            await FileStore.open(Path(os.path.normpath(path)), size=4096, roots=[state])
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


async def test_new_files_are_private_and_made_exclusively(state: Path) -> None:
    store = await FileStore.open(state / "d" / "new.img", size=1 << 20, roots=[state])
    await store.close()
    st = os.stat(state / "d" / "new.img")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 1 << 20
    assert stat.S_IMODE(os.stat(state / "d").st_mode) == 0o700


async def test_only_regular_files_and_block_devices_are_served(state: Path) -> None:
    os.mkfifo(state / "fifo")
    with pytest.raises(ValueError, match="not a regular file or block device"):
        await FileStore.open(state / "fifo", size=4096, roots=[state])


async def test_a_block_device_under_dev_is_reachable_when_allowed() -> None:
    sized, empty = [], []
    for dev in sorted(Path("/dev").iterdir()):
        if dev.is_symlink() or not dev.is_block_device():
            continue
        try:
            fd = os.open(dev, os.O_RDONLY)
        except OSError:  # a sandbox may forbid some
            continue
        try:
            (sized if os.lseek(fd, 0, os.SEEK_END) > 0 else empty).append(dev)
        finally:
            os.close(fd)
    if sized:
        store = await FileStore.open(sized[0], read_only=True, roots=[Path("/dev")])
        try:
            assert store.block_device and store.size > 0
        finally:
            await store.close()
    elif empty:  # e.g. an unattached loop device: opened, found to be a block device
        with pytest.raises(ValueError, match="empty backing store"):
            await FileStore.open(empty[0], read_only=True, roots=[Path("/dev")])
    else:
        pytest.skip("no block device under /dev that this process may open")
    # without /dev among the roots it is out of reach
    with pytest.raises(PermissionError, match="is outside"):
        await FileStore.open((sized or empty)[0], read_only=True, roots=[Path("/srv")])
    # and a character device is not a disk
    with pytest.raises(ValueError, match="not a regular file or block device"):
        await FileStore.open("/dev/null", size=4096, read_only=True, roots=[Path("/dev")])


def test_open_beneath_refuses_a_final_symlink_even_for_reading(state: Path, outside: Path) -> None:
    (state / "link").symlink_to(outside / "victim")
    with pytest.raises(SymlinkRefusedError):
        open_beneath(state / "link", [state], os.O_RDONLY)


# -- persistent reservation state ------------------------------------------------------

STATE = PrState(
    generation=3,
    registrations=(Registration(Registrant("iqn.x", 1, "iqn.t,t,0x1", 1), 0xABC),),
    aptpl=True,
)


async def test_pr_state_never_writes_through_a_planted_symlink(
    state: Path, outside: Path
) -> None:
    (state / "pr").mkdir()
    planted = state / "pr" / "disk0.json"
    planted.symlink_to(outside / "victim")
    # the temp files it writes first (the old fixed name, and today's with the pid)
    for tmp in (".disk0.json.tmp", f".disk0.json.tmp{os.getpid()}"):
        (state / "pr" / tmp).symlink_to(outside / "victim")
    store = AptplStore(planted)
    assert store.load() is None  # a symlink is not read either
    await store.save(STATE)
    assert (outside / "victim").read_bytes() == SECRET  # replaced the link, not its target
    assert not planted.is_symlink() and AptplStore(planted).load() == STATE
    assert stat.S_IMODE(os.stat(planted).st_mode) == 0o600


async def test_pr_state_directory_that_is_a_symlink_is_refused(
    state: Path, outside: Path
) -> None:
    (state / "pr").symlink_to(outside)
    store = AptplStore(state / "pr" / "disk0.json")
    with pytest.raises(SymlinkRefusedError, match="pr is a symlink"):
        await store.save(STATE)
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


# -- the admin plane, against the real daemon ------------------------------------------

DEVICES = {"disk0": {"handler": "vdisk_fileio", "size": "1MiB"}}


async def test_admin_device_add_is_confined_and_never_follows_or_extends(
    tmp_path: Path, outside: Path
) -> None:
    async with running_daemon_async(tmp_path, devices=DEVICES) as d:
        admin = admin_for(d)
        for path in ("../outside/victim", str(outside / "new.img")):
            stderr = await admin.fails(1, "device", "add", "x", "--size", "1M", "--path", path)
            assert "devices.x.path:" in stderr and "is outside state_dir and allowed_dirs" in stderr
        (d.state_dir / "link.img").symlink_to(outside / "victim")
        stderr = await admin.fails(1, "device", "add", "x", "--size", "1M", "--path", "link.img")
        assert "link.img is a symlink; refusing to follow it" in stderr
        (d.state_dir / "dir").symlink_to(outside)
        stderr = await admin.fails(1, "device", "add", "x", "--size", "1M", "--path", "dir/a.img")
        assert "dir is a symlink; refusing to follow it" in stderr
        assert sorted(p.name for p in outside.iterdir()) == ["victim"]
        assert (outside / "victim").read_bytes() == SECRET
        # an existing file smaller than --size: refused with both sizes unless --grow
        (d.state_dir / "small.img").write_bytes(b"s" * 4096)
        stderr = await admin.fails(1, "device", "add", "x", "--size", "1M", "--path", "small.img")
        assert "is 4096 bytes, smaller than the configured size 1048576" in stderr
        assert os.path.getsize(d.state_dir / "small.img") == 4096
        assert [x["name"] for x in (await admin.ok("tree"))["devices"]] == ["disk0"]
        await admin.ok("device", "add", "x", "--size", "1M", "--path", "small.img", "--grow")
        assert os.path.getsize(d.state_dir / "small.img") == 1 << 20
        # a new file is created private
        await admin.ok("device", "add", "y", "--size", "1M", "--path", "sub/y.img")
        assert stat.S_IMODE(os.stat(d.state_dir / "sub" / "y.img").st_mode) == 0o600
        assert "Traceback" not in d.stderr_text()


async def test_admin_save_is_confined(tmp_path: Path, outside: Path) -> None:
    async with running_daemon_async(tmp_path, devices=DEVICES) as d:
        admin = admin_for(d)
        elsewhere = outside / "x.toml"
        stderr = await admin.fails(1, "save", str(elsewhere))
        assert "is outside the config file's directory, state_dir and allowed_dirs" in stderr
        assert "[args.path]" in stderr
        stderr = await admin.fails(1, "save", str(d.state_dir / ".." / ".." / "x.toml"))
        assert "is outside" in stderr
        (d.state_dir / "via").symlink_to(outside)
        stderr = await admin.fails(1, "save", str(d.state_dir / "via" / "x.toml"))
        assert "via is a symlink" in stderr
        assert sorted(p.name for p in outside.iterdir()) == ["victim"]
        # planted as the file itself, a symlink is replaced, never written through
        (d.state_dir / "copy.toml").symlink_to(outside / "victim")
        await admin.ok("save", str(d.state_dir / "copy.toml"))
        assert (outside / "victim").read_bytes() == SECRET
        assert "disk0" in (d.state_dir / "copy.toml").read_text()
        assert (await admin.ok("save", str(d.config_path.parent / "beside.toml")))["path"]
