"""The targets under test: started, described and torn down the same way.

Each target runs as its own process pinned to the same CPU, listens on a free
loopback port and exports a disk LUN over a pre-filled 1 GiB tmpfs file plus a
null LUN. Scenarios ask for a LUN by role ("disk"/"null") because tgt reserves
LUN 0 for its controller while pyscst puts the disk there.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from pyscst.devices.tape_cartridge import create_blank
from scenarios import TAPE_CAPACITY

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_SIZE = 1 << 30
COLD_IMAGE_SIZE = 1 << 30
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class TargetError(RuntimeError):
    """A target failed to start or to accept its configuration."""


@attrs.frozen
class Endpoint:
    """A running target as the clients see it."""

    label: str
    kind: str  # "tgt" or "pyscst"
    pid: int
    portal: str  # "127.0.0.1:PORT"
    iqn: str
    luns: dict[str, int]  # role -> LUN number
    #: the disk-backed image of the "cold" role (None when not set up)
    cold_image: Path | None = None

    def url(self, role: str) -> str:
        return f"iscsi://{self.portal}/{self.iqn}/{self.luns[role]}"


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (never 3260)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 3260:
            return port


def pin_prefix(cpu: int | None) -> list[str]:
    """`taskset -c CPU` when pinning is on and possible."""
    if cpu is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


def fill_image(path: Path, size: int = IMAGE_SIZE) -> None:
    """Write `size` bytes of incompressible data so reads hit real page-cache pages.

    Sparse holes read faster than data, which would flatter whichever target
    has more holes; one random MiB repeated is enough to defeat that cheaply.
    """
    chunk = random.Random(0x5C57).randbytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.truncate(size)


def cold_image(cold_dir: Path | None, label: str) -> Path | None:
    """A data-filled image for the cold rows, on a disk filesystem (not tmpfs)."""
    if cold_dir is None:
        return None
    image = cold_dir / f"{label}-cold.img"
    fill_image(image, COLD_IMAGE_SIZE)
    return image


def drop_cache(image: Path) -> None:
    """Evict ``image``'s pages from the page cache (dirty ones are written
    first): POSIX_FADV_DONTNEED needs no root and leaves other files alone."""
    fd = os.open(image, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetError(f"target exited with status {proc.returncode} during start")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TargetError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the target's process group, SIGKILL it if it lingers past `grace`."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def _process(
    argv: Sequence[str], log: Path, *, grace: float, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it
        )
    try:
        yield proc
    finally:
        _stop(proc, grace)


def _tgt_control_port() -> int:
    """A tgtd control-socket number no other tgtd instance on this host uses."""
    rng = random.Random()
    for _ in range(1000):
        n = rng.randrange(1024, 32768)  # tgtd takes a signed short
        if not os.path.exists(f"/var/run/tgtd/socket.{n}"):
            return n
    raise TargetError("no free tgtd control port")


def _tgtadm(control: int, *args: str) -> None:
    cmd = ["tgtadm", "-C", str(control), "--lld", "iscsi", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
    if out.returncode != 0:
        raise TargetError(f"{' '.join(cmd)}: {out.stderr.strip() or out.stdout.strip()}")


@contextlib.contextmanager
def loop_device(directory: Path, size: int = IMAGE_SIZE) -> Iterator[Path]:
    """/dev/loopN over a data-filled file in ``directory`` (a disk filesystem),
    shared by both targets' blockio LUNs; detached and removed afterwards."""
    image = directory / "blockio.img"
    fill_image(image, size)
    done = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        image.unlink(missing_ok=True)
        raise TargetError(f"losetup failed (blockio rows need root): {done.stderr.strip()}")
    dev = Path(done.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", str(dev)], capture_output=True, check=False)
        image.unlink(missing_ok=True)


@contextlib.contextmanager
def run_tgt(
    label: str,
    workdir: Path,
    cpu: int | None,
    cold_dir: Path | None = None,
    blockdev: Path | None = None,
    tape: bool = False,
) -> Iterator[Endpoint]:
    """tgtd in the foreground with its own control port: disk LUN 1, null LUN 2,
    the cold image LUN 3 (rdwr: buffered I/O in tgt's worker threads), the
    loop device LUN 4 (``--bstype aio``: O_DIRECT with Linux AIO)."""
    image = workdir / f"{label}.img"
    fill_image(image)
    cold = cold_image(cold_dir, label)
    port = free_port()
    control = _tgt_control_port()
    iqn = f"iqn.2026-11.org.pyscst:bench-{label}"
    argv = [
        *pin_prefix(cpu),
        "tgtd", "-f", "-C", str(control), "--iscsi", f"portal=127.0.0.1:{port}",
    ]  # fmt: skip
    log = workdir / f"{label}.log"
    # tgtd ignores SIGTERM while it has targets; it keeps no state worth a clean exit.
    with _process(argv, log, grace=0.5) as proc:
        try:
            _wait_port(port, proc, START_TIMEOUT)
            _tgtadm(control, "--op", "new", "--mode", "target", "--tid", "1", "-T", iqn)
            _tgtadm(
                control, "--op", "new", "--mode", "logicalunit", "--tid", "1",
                "--lun", "1", "--backing-store", str(image),
            )  # fmt: skip
            _tgtadm(
                control, "--op", "new", "--mode", "logicalunit", "--tid", "1",
                "--lun", "2", "--bstype", "null", "--backing-store", f"{label}-null",
            )  # fmt: skip
            if cold is not None:
                _tgtadm(
                    control, "--op", "new", "--mode", "logicalunit", "--tid", "1",
                    "--lun", "3", "--backing-store", str(cold),
                )  # fmt: skip
            if blockdev is not None:
                _tgtadm(
                    control, "--op", "new", "--mode", "logicalunit", "--tid", "1",
                    "--lun", "4", "--bstype", "aio", "--backing-store", str(blockdev),
                )  # fmt: skip
            if tape:
                cartridge = tgt_cartridge(workdir, label)
                _tgtadm(
                    control, "--op", "new", "--mode", "logicalunit", "--tid", "1",
                    "--lun", "5", "--device-type", "tape", "--bstype", "ssc",
                    "--backing-store", str(cartridge),
                )  # fmt: skip
            _tgtadm(control, "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        except TargetError as e:
            raise TargetError(f"{label}: {e}\n{_log_tail(log)}") from e
        # "passthrough": the disk LUN itself, what pyscst's passthrough forwards to
        luns = {"disk": 1, "null": 2, "passthrough": 1, **({"cold": 3} if cold else {}),
                **({"blockio": 4} if blockdev else {}),
                **({"tape": 5} if tape else {})}  # fmt: skip
        yield Endpoint(label, "tgt", proc.pid, f"127.0.0.1:{port}", iqn, luns, cold)


def tgt_cartridge(workdir: Path, label: str) -> Path:
    """A blank tgtimg cartridge (sparse) for tgt's ssc drive."""
    path = workdir / f"{label}.tape"
    megabytes = TAPE_CAPACITY >> 20
    result = subprocess.run(
        ["tgtimg", "--op", "new", "--device-type", "tape", f"--barcode={label.upper()}01",
         f"--size={megabytes}", "--type=data", f"--file={path}", "--thin-provisioning"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode:
        raise TargetError(f"tgtimg: {result.stderr.strip() or result.stdout.strip()}")
    return path


def pyscst_command(config: Path) -> tuple[list[str], Path]:
    """How to start the pyscst daemon: the venv's console script, else the module."""
    script = Path(sys.executable).parent / "pyscst"
    if script.exists():
        return [str(script), "serve", "--config", str(config)], REPO_ROOT
    return [sys.executable, "-m", "pyscst", "serve", "--config", str(config)], REPO_ROOT


def given_command(command: Sequence[str], config: Path, workdir: Path) -> tuple[list[str], Path]:
    """A --pyscst-cmd with the config appended, run from the work directory.

    Not from the repository root: ``python -m`` and ``python -c`` put their
    working directory first on sys.path, so a daemon started there imports this
    tree's ``pyscst`` whatever PYTHONPATH names (the A/B runs of 2026-12-07
    through tree_shim.py measured this tree twice). The command's paths must
    therefore be absolute.
    """
    return [*command, str(config)], workdir


def pyscst_config(
    state_dir: Path,
    image: Path,
    port: int,
    iqn: str,
    cold: Path | None = None,
    blockdev: Path | None = None,
    cartridge: Path | None = None,
    copy: Path | None = None,
    backend: str | None = None,
) -> str:
    """The daemon's TOML config: fileio disk at LUN 0, nullio at LUN 1, the
    cold image at LUN 2, vdisk_blockio on the loop device at LUN 3 (io_engine
    "auto"; PYSCST_IO_ENGINE overrides), a vtape drive with ``cartridge`` at
    LUN 4, the EXTENDED COPY row's destination (a fileio image beside the
    disk's) at LUN 5, a passthrough device forwarding to ``backend`` (tgt's
    disk LUN) at LUN 6."""
    extra_dirs = [*([cold.parent] if cold else []), *([blockdev.parent] if blockdev else [])]
    dirs = ", ".join(f'"{d}"' for d in [image.parent, *extra_dirs])
    blk_device = (
        f'[devices.blk0]\nhandler = "vdisk_blockio"\npath = "{blockdev}"\nsize = "1GiB"\n'
        if blockdev else ""
    )  # fmt: skip
    blk_lun = ', { lun = 3, device = "blk0" }' if blockdev else ""
    cold_device = (
        f'[devices.cold0]\nhandler = "vdisk_fileio"\npath = "{cold}"\nsize = "1GiB"\n'
        if cold else ""
    )  # fmt: skip
    cold_lun = ', { lun = 2, device = "cold0" }' if cold else ""
    tape_device = (
        f'[devices.tape0]\nhandler = "vtape"\npath = "{cartridge}"\n' if cartridge else ""
    )
    tape_lun = ', { lun = 4, device = "tape0" }' if cartridge else ""
    copy_device = (
        f'[devices.copy0]\nhandler = "vdisk_fileio"\npath = "{copy}"\nsize = "1GiB"\n'
        if copy else ""
    )  # fmt: skip
    copy_lun = ', { lun = 5, device = "copy0" }' if copy else ""
    pt_device = (
        f'[devices.pt0]\nhandler = "passthrough"\nbackend = "{backend}"\n' if backend else ""
    )
    pt_lun = ', { lun = 6, device = "pt0" }' if backend else ""
    return (
        f'state_dir = "{state_dir}"\n'
        f"allowed_dirs = [{dirs}]\n"  # the images live beside state_dir
        "[devices.disk0]\n"
        'handler = "vdisk_fileio"\n'
        f'path = "{image}"\n'
        'size = "1GiB"\n'
        "[devices.null0]\n"
        'handler = "vdisk_nullio"\n'
        'size = "1GiB"\n'
        + cold_device
        + blk_device
        + tape_device
        + copy_device
        + pt_device
        + f'[targets."{iqn}"]\n'
        f'portals = ["127.0.0.1:{port}"]\n'
        'luns = [ { lun = 0, device = "disk0" }, { lun = 1, device = "null0" }'
        + cold_lun
        + blk_lun
        + tape_lun
        + copy_lun
        + pt_lun
        + " ]\n"
    )


@contextlib.contextmanager
def run_pyscst(
    label: str,
    workdir: Path,
    cpu: int | None,
    command: Sequence[str] | None = None,
    cold_dir: Path | None = None,
    blockdev: Path | None = None,
    tape: bool = False,
    copy: bool = False,
    backend: str | None = None,
) -> Iterator[Endpoint]:
    """`pyscst serve` on a generated config; `command` overrides the argv prefix;
    ``copy``: with the EXTENDED COPY row's destination LUN (role "copy")."""
    image = workdir / f"{label}.img"
    fill_image(image)
    cold = cold_image(cold_dir, label)
    state_dir = workdir / f"{label}-state"
    state_dir.mkdir(exist_ok=True)
    port = free_port()
    iqn = f"iqn.2026-11.org.pyscst:bench-{label}"
    config = workdir / f"{label}.toml"
    cartridge = None
    if tape:
        cartridge = create_blank(workdir / f"{label}-cartridge", f"{label.upper()}01",
                                 TAPE_CAPACITY)  # fmt: skip
    copy_image = workdir / f"{label}-copy.img" if copy else None
    if copy_image is not None:
        fill_image(copy_image)  # allocated: both copies overwrite pages, none allocates
    config.write_text(pyscst_config(state_dir, image, port, iqn, cold, blockdev, cartridge,
                                    copy_image, backend))
    if command:
        argv, cwd = given_command(command, config, workdir)
    else:
        argv, cwd = pyscst_command(config)
    log = workdir / f"{label}.log"
    with _process([*pin_prefix(cpu), *argv], log, grace=STOP_TIMEOUT, cwd=cwd) as proc:
        try:
            _wait_port(port, proc, START_TIMEOUT)
        except TargetError as e:
            raise TargetError(f"{label}: {e}\n{_log_tail(log)}") from e
        luns = {"disk": 0, "null": 1, **({"cold": 2} if cold else {}),
                **({"blockio": 3} if blockdev else {}), **({"tape": 4} if tape else {}),
                **({"copy": 5} if copy else {}),
                **({"passthrough": 6} if backend else {})}  # fmt: skip
        if backend:
            _wait_passthrough(proc, log)
        yield Endpoint(label, "pyscst", proc.pid, f"127.0.0.1:{port}", iqn, luns, cold)


def _wait_passthrough(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the passthrough device has logged in to its backend (it says so)."""
    deadline = time.monotonic() + START_TIMEOUT
    while "pass-through backend" not in log.read_text(errors="replace") or (
        "connected" not in log.read_text(errors="replace")
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TargetError(f"passthrough backend never connected\n{_log_tail(log)}")
        time.sleep(0.1)


def run_target(
    kind: str,
    label: str,
    workdir: Path,
    cpu: int | None,
    pyscst_cmd: Sequence[str] | None,
    cold_dir: Path | None = None,
    blockdev: Path | None = None,
    tape: bool = False,
    copy: bool = False,
    backend: str | None = None,
) -> contextlib.AbstractContextManager[Endpoint]:
    if kind == "tgt":
        return run_tgt(label, workdir, cpu, cold_dir, blockdev, tape)
    if kind == "pyscst":
        return run_pyscst(label, workdir, cpu, pyscst_cmd, cold_dir, blockdev, tape, copy,
                          backend)
    raise ValueError(f"unknown target kind {kind!r}")
