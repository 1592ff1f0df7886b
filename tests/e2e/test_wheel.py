"""The installed package: a wheel built from the tracked files runs from a clean venv.

The repository keeps its packages as top-level folders (``actors/``, ``admin/``,
...) and setuptools' package-dir installs them under the one name ``pyscst``.
The editable install and the tests' ``sys.path`` hide mistakes in that mapping
(a package missing from the list, a bare ``import admin`` left behind, the
version not found), so this builds a wheel with ``python -m build`` from a copy
of the tracked files (what a fresh clone holds), installs it into a new venv and
runs it from outside the repository. About half a minute: building and pip
installing the dependencies from the local package index.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import pyscst
from pyscst.admin.config.files import load_config
from tests.daemon import REPO_ROOT, free_port, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: the repository's top-level package folders: none may be importable once installed
BARE_NAMES = ("actors", "admin", "devices", "scsi", "supervision", "transports")


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _fresh_copy(dest: Path) -> None:
    """The tracked files as the working tree has them (a fresh clone, uncommitted
    edits included; build output, venvs and untracked files left out)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO_ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only the built wheel (and its dependencies) installed."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    work = tmp_path_factory.mktemp("wheel")
    src, dist, venv = work / "src", work / "dist", work / "venv"
    _fresh_copy(src)
    built = _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)], work)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list(dist.glob("pyscst-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as whl:
        tops = {name.split("/")[0] for name in whl.namelist()}
    assert tops == {"pyscst", f"pyscst-{pyscst.__version__}.dist-info"}, tops

    made = _run([sys.executable, "-m", "venv", str(venv)], work)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    done = _run([*pip, "--quiet", str(wheels[0])], work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv


def test_version(installed: Path, tmp_path: Path) -> None:
    expected = f"pyscst {pyscst.__version__}"
    for argv in ([str(installed / "bin" / "pyscst"), "--version"],
                 [str(installed / "bin" / "python"), "-m", "pyscst", "--version"]):  # fmt: skip
        done = _run(argv, tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected


def test_no_generic_top_level_modules(installed: Path, tmp_path: Path) -> None:
    python = str(installed / "bin" / "python")
    for name in BARE_NAMES:
        done = _run([python, "-c", f"import {name}"], tmp_path)
        assert done.returncode != 0 and f"No module named '{name}'" in done.stderr, (name, done)
        done = _run([python, "-c", f"import pyscst.{name}"], tmp_path)
        assert done.returncode == 0, done.stderr


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def test_serve_starts_and_stops(installed: Path, tmp_path: Path) -> None:
    host, port = "127.0.0.1", free_port()
    config = write_config(tmp_path, port=port, host=host)
    control_socket = load_config(config).control_socket  # opened last, after the portals
    log = (tmp_path / "serve.log").open("w+")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen(
        [str(installed / "bin" / "pyscst"), "serve", "--config", str(config)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (_port_open(host, port) and control_socket.exists()):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    assert "pyscst ready" in (tmp_path / "serve.log").read_text()
