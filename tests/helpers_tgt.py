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


@contextlib.contextmanager
def _tgtd() -> Iterator[tuple[int, int]]:
    """A private tgtd: its management channel and iSCSI port; always killed."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(8):
            control = random.randint(20000, 32000)
            if Path(f"/var/run/tgtd/socket.{control}").exists():
                continue
            port = _free_port()
            proc = subprocess.Popen(
                ["tgtd", "-f", "-C", str(control), "--iscsi", f"portal=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _wait_listening(port, proc):
                break
            proc.kill()
            proc.wait()
            proc = None
        if proc is None:
            raise RuntimeError("could not start tgtd")
        yield control, port
    finally:
        if proc is not None:
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
    lun_args: tuple[str, ...] = ()
    if tape_barcode is not None:
        backing = tmp / f"tgt-{tape_barcode}.tape"
        subprocess.run(
            ["tgtimg", "--op", "new", "--device-type", "tape", f"--barcode={tape_barcode}",
             f"--size={max(1, size >> 20)}", "--type=data", f"--file={backing}"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        lun_args = ("--device-type", "tape", "--bstype", "ssc")
    else:
        backing = tmp / "tgt-disk.img"
        with backing.open("wb") as f:
            f.truncate(size)
    with _tgtd() as (control, port):
        _tgtadm(control, "--mode", "target", "--op", "new", "--tid", "1",
                "--targetname", TARGET_NAME)  # fmt: skip
        for name, value in (
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "CRC32C,None"),
            ("nop_interval", str(nop_interval)),  # tgtd pings idle initiators
            ("nop_count", "3"),
        ):
            _tgtadm(control, "--mode", "target", "--op", "update", "--tid", "1",
                    "--name", name, "--value", value)  # fmt: skip
        _tgtadm(control, "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1",
                "--backing-store", str(backing), *lun_args)  # fmt: skip
        _tgtadm(control, "--mode", "target", "--op", "bind", "--tid", "1",
                "--initiator-address", "ALL")  # fmt: skip
        yield TgtTarget("127.0.0.1", port, TARGET_NAME, 1, backing, size, control)


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
