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


def _spawn_tgtd(port: int | None) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start tgtd on a fresh management channel, listening on ``port`` (a free
    one if None): the process, its channel and its iSCSI port."""
    for _attempt in range(8):
        control = random.randint(20000, 32000)
        if Path(f"/var/run/tgtd/socket.{control}").exists():
            continue
        listen = port or _free_port()
        proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(control), "--iscsi", f"portal=127.0.0.1:{listen}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _wait_listening(listen, proc):
            return proc, control, listen
        proc.kill()
        proc.wait()
    raise RuntimeError("could not start tgtd")


class TgtDaemon:
    """A private tgtd that can be killed and started again on the same port
    with the same backing file (a backend target going away mid-I/O)."""

    def __init__(self, backing: Path, size: int, nop_interval: int = 1,
                 chap: tuple[str, str] | None = None, port: int | None = None,
                 tape: Path | None = None, changer: Path | None = None,
                 lun_args: tuple[str, ...] = ()) -> None:
        self.backing = backing
        #: LUN 1's device type and backing store type (default: a disk)
        self.lun_args = lun_args
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
        self.proc, self.control, self.port = _spawn_tgtd(self.port)
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
                "--backing-store", str(self.backing), *self.lun_args)  # fmt: skip
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
def _tgtd() -> Iterator[tuple[int, int]]:
    """A private tgtd: its management channel and iSCSI port; always killed."""
    proc, control, port = _spawn_tgtd(None)
    try:
        yield control, port
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_tgtd(
    tmp: Path, size: int = 64 << 20, nop_interval: int = 1, tape_barcode: str | None = None
) -> Iterator[TgtTarget]:
    """Start tgtd with one 512-byte-block disk at LUN 1, bound to everyone
    (with ``tape_barcode``: an SSC tape drive with a ``tgtimg`` cartridge of
    ``size`` bytes, rounded to MB, instead).

    Digests are allowed (CRC32C,None) and tgtd sends a NOP-In ping every
    ``nop_interval`` seconds, dropping initiators that miss three.
    """
    if tape_barcode is None:
        with tgtd_daemon(tmp, size, nop_interval) as tgt:
            yield tgt.target
        return
    backing = tmp / f"tgt-{tape_barcode}.tape"
    subprocess.run(
        ["tgtimg", "--op", "new", "--device-type", "tape", f"--barcode={tape_barcode}",
         f"--size={max(1, size >> 20)}", "--type=data", f"--file={backing}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    tape_lun = ("--device-type", "tape", "--bstype", "ssc")
    tgt = TgtDaemon(backing, size, nop_interval, lun_args=tape_lun)
    try:
        tgt.start()
        yield tgt.target
    finally:
        tgt.kill()


@attrs.frozen
class TgtLibrary:
    """A tgt virtual tape library: its changer LUN and drive LUNs."""

    host: str
    port: int
    target_name: str
    changer_lun: int
    drive_luns: tuple[int, ...]
    media_home: Path


@contextlib.contextmanager
def running_tgt_library(
    tmp: Path,
    *,
    drives: int,
    slots: int,
    mail_slots: int,
    cartridges: dict[int, str],
    addresses: tuple[int, int, int, int] = (0x0001, 0x0400, 0x0010, 0x0100),
    size_mb: int = 16,
) -> Iterator[TgtLibrary]:
    """Start tgtd with a changer (``--device-type changer``, tgt's smc) at LUN 0 and
    ``drives`` empty tape drives at LUNs 1..; ``cartridges``: slot number (1-based)
    -> barcode, each a ``tgtimg`` tape in the media home. ``addresses``: the first
    element address of the transport, storage, import/export and data transfer
    elements (pyscst's layout by default, so both answer about the same library)."""
    home = tmp / "tgt-vtl"
    home.mkdir(parents=True, exist_ok=True)
    (home / "smc").write_bytes(bytes(1024))
    for barcode in cartridges.values():
        subprocess.run(
            ["tgtimg", "--op", "new", "--device-type", "tape", f"--barcode={barcode}",
             f"--size={size_mb}", "--type=data", f"--file={home / barcode}"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    with _tgtd() as (control, port):

        changer = drives + 1  # LUN 0 is tgt's own controller

        def lu(lun: int, *args: str) -> None:
            _tgtadm(control, "--mode", "logicalunit", "--tid", "1", "--lun", str(lun), *args)

        def params(text: str) -> None:
            lu(changer, "--op", "update", "--params", text)

        _tgtadm(control, "--mode", "target", "--op", "new", "--tid", "1",
                "--targetname", TARGET_NAME)  # fmt: skip
        for i in range(drives):
            tape = home / f"empty-{i}"
            subprocess.run(
                ["tgtimg", "--op", "new", "--device-type", "tape", f"--barcode=EMPTY{i}",
                 "--size=1", "--type=data", f"--file={tape}"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            lu(i + 1, "--op", "new", "--backing-store", str(tape), "--device-type", "tape",
               "--bstype", "ssc")  # fmt: skip
            lu(i + 1, "--op", "update", "--params", "online=0")
        lu(changer, "--op", "new", "--backing-store", str(home / "smc"),
           "--device-type", "changer")  # fmt: skip
        params(f"media_home={home}")
        transport, storage, mail, drive = addresses
        params(f"element_type=1,start_address={transport},quantity=1")
        params(f"element_type=2,start_address={storage},quantity={slots}")
        if mail_slots:
            params(f"element_type=3,start_address={mail},quantity={mail_slots}")
        params(f"element_type=4,start_address={drive},quantity={drives}")
        for i in range(drives):
            params(f"element_type=4,address={drive + i},tid=1,lun={i + 1}")
        for slot, barcode in cartridges.items():
            params(f"element_type=2,address={storage + slot - 1},barcode={barcode},sides=1")
        _tgtadm(control, "--mode", "target", "--op", "bind", "--tid", "1",
                "--initiator-address", "ALL")  # fmt: skip
        yield TgtLibrary("127.0.0.1", port, TARGET_NAME, changer, tuple(range(1, drives + 1)),
                         home)  # fmt: skip


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
