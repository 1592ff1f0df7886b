"""Run a private tgtd (the stgt C target) as a reference iSCSI target in tests.

Each instance gets its own iSCSI port and its own management channel
(``tgtd -C N`` / ``tgtadm -C N``) so it can neither collide with a system
tgtd nor with other test runs; it is always killed on exit.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

TARGET_NAME = "iqn.2026-11.org.pyscst:tgt-reference"


def tgtd_unavailable() -> str | None:
    """Why tgtd cannot be used here, or None."""
    if shutil.which("tgtd") is None or shutil.which("tgtadm") is None:
        return "tgtd/tgtadm not installed (apt-get install tgt)"
    if os.geteuid() != 0:
        return "tgtd needs root"
    return None


@attrs.frozen
class TgtTarget:
    host: str
    port: int
    target_name: str
    lun: int
    backing: Path
    size: int
    control_port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
            return True
        time.sleep(0.05)
    return False


def _tgtadm(control: int, *args: str) -> None:
    subprocess.run(
        ["tgtadm", "-C", str(control), "--lld", "iscsi", *args],
        check=True,
        capture_output=True,
        timeout=30,
    )


class TgtDaemon:
    """A private tgtd that can be killed and started again on the same port
    with the same backing file (a backend target going away mid-I/O)."""

    def __init__(self, backing: Path, size: int, nop_interval: int = 1,
                 chap: tuple[str, str] | None = None, port: int | None = None,
                 tape: Path | None = None, changer: Path | None = None) -> None:
        self.backing = backing
        #: a directory for tgt's changer (bstype smc): served at LUN 3, two
        #: slots (1000, 1001), one picker (1), the tape drive as element 500
        self.changer = changer
        #: a tgtimg tape image: served as a tape drive (bstype ssc) at LUN 2
        self.tape = tape
        self.size = size
        self.nop_interval = nop_interval
        self.chap = chap
        self.port = port or _free_port()
        self.control = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> TgtTarget:
        return TgtTarget("127.0.0.1", self.port, TARGET_NAME, 1, self.backing, self.size,
                         self.control)  # fmt: skip

    @property
    def url(self) -> str:
        return f"iscsi://127.0.0.1:{self.port}/{TARGET_NAME}/1"

    def start(self) -> None:
        """Start tgtd and configure its target (LUN 1 on the backing file)."""
        proc = None
        for _attempt in range(8):
            control = random.randint(20000, 32000)
            if Path(f"/var/run/tgtd/socket.{control}").exists():
                continue
            proc = subprocess.Popen(
                ["tgtd", "-f", "-C", str(control), "--iscsi", f"portal=127.0.0.1:{self.port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _wait_listening(self.port, proc):
                self.control = control
                break
            proc.kill()
            proc.wait()
            proc = None
        if proc is None:
            raise RuntimeError("could not start tgtd")
        self.proc = proc
        control = self.control
        _tgtadm(control, "--mode", "target", "--op", "new", "--tid", "1",
                "--targetname", TARGET_NAME)  # fmt: skip
        for name, value in (
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "CRC32C,None"),
            ("nop_interval", str(self.nop_interval)),  # tgtd pings idle initiators
            ("nop_count", "3"),
        ):
            _tgtadm(control, "--mode", "target", "--op", "update", "--tid", "1",
                    "--name", name, "--value", value)  # fmt: skip
        _tgtadm(control, "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1",
                "--backing-store", str(self.backing))  # fmt: skip
        if self.tape is not None:
            _tgtadm(control, "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "2",
                    "--device-type", "tape", "--bstype", "ssc",
                    "--backing-store", str(self.tape))  # fmt: skip
        if self.changer is not None:
            self._add_changer(control, self.changer)
        _tgtadm(control, "--mode", "target", "--op", "bind", "--tid", "1",
                "--initiator-address", "ALL")  # fmt: skip
        if self.chap is not None:
            user, secret = self.chap
            _tgtadm(control, "--mode", "account", "--op", "new", "--user", user,
                    "--password", secret)  # fmt: skip
            _tgtadm(control, "--mode", "account", "--op", "bind", "--tid", "1", "--user", user)

    @staticmethod
    def _add_changer(control: int, home: Path) -> None:
        state = home / "smc"
        state.touch()
        _tgtadm(control, "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "3",
                "--device-type", "changer", "--bstype", "smc", "--backing-store", str(state))
        for params in ("element_type=1,start_address=1,quantity=1",
                       "element_type=2,start_address=1000,quantity=2",
                       "element_type=4,start_address=500,quantity=1",
                       "element_type=4,address=500,tid=1,lun=2", f"media_home={home}"):
            _tgtadm(control, "--mode", "logicalunit", "--op", "update", "--tid", "1",
                    "--lun", "3", "--params", params)  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@contextlib.contextmanager
def tgtd_daemon(tmp: Path, size: int = 64 << 20, nop_interval: int = 1,
                chap: tuple[str, str] | None = None, start: bool = True,
                tape: bool = False, changer: bool = False) -> Iterator[TgtDaemon]:
    """A :class:`TgtDaemon` on a fresh sparse backing file (and, with ``tape``,
    a fresh 16 MB tape image at LUN 2), killed on exit."""
    backing = tmp / "tgt-disk.img"
    with backing.open("wb") as f:
        f.truncate(size)
    image = None
    if tape:
        image = tmp / "tgt-tape.img"
        subprocess.run(["tgtimg", "--op", "new", "--device-type", "tape", "--barcode", "PYS001",
                        "--size", "16", "--type", "data", "--file", str(image)],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
    home = None
    if changer:
        home = tmp / "tgt-changer"
        home.mkdir()
    tgt = TgtDaemon(backing, size, nop_interval, chap, tape=image, changer=home)
    try:
        if start:
            tgt.start()
        yield tgt
    finally:
        tgt.kill()


@contextlib.contextmanager
def running_tgtd(tmp: Path, size: int = 64 << 20, nop_interval: int = 1) -> Iterator[TgtTarget]:
    """Start tgtd with one 512-byte-block disk at LUN 1, bound to everyone.

    Digests are allowed (CRC32C,None) and tgtd sends a NOP-In ping every
    ``nop_interval`` seconds, dropping initiators that miss three.
    """
    with tgtd_daemon(tmp, size, nop_interval) as tgt:
        yield tgt.target


def wait_until_ready(host: str, port: int, target: str, lun: int = 0,
                     timeout: float = 30.0) -> list[tuple[int, int, int]]:
    """TEST UNIT READY on ``lun`` until GOOD (a passthrough LU whose backend is
    still being reached answers NOT READY); the senses seen on the way."""
    import trio

    from pyscst.transports.iscsi.initiator import Initiator

    async def poll() -> list[tuple[int, int, int]]:
        seen: list[tuple[int, int, int]] = []
        with trio.fail_after(timeout):
            async with await Initiator.connect(host, port, target_name=target) as ini:
                while True:
                    r = await ini.execute(lun, bytes(6))
                    if r.status == 0:
                        return seen
                    sense = r.sense
                    seen.append((sense[2] & 0x0F, sense[12], sense[13]) if len(sense) > 13
                                else (-1, -1, -1))  # fmt: skip
                    await trio.sleep(0.2)

    return trio.run(poll)
