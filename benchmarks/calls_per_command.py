"""Function calls per command made by the iSCSI connection code, counted, not timed.

Wall-clock benchmarks on a shared 2-CPU host drift by more than a change to
the hot path costs; a count of calls does not. This script runs the daemon and
the test initiator in one Trio run, 4 KiB READ(10)s and WRITE(10)s (immediate
data) against a RAM-backed file at queue depth 1 and 32, and counts with
``sys.setprofile`` every call (Python and C) made *from* a frame of the
connection shell or its sans-I/O cores (``transports/iscsi/connection.py``,
``transfer.py``, ``requests.py``), per command. ``poll_us = 0`` keeps the
depth-1 reader from busy-polling, so at depth 1 the count is exact; at depth
32 it depends a little on how commands batch into reads. Also prints all
calls in the process per command (initiator included) for scale. With ``--time``
it counts nothing and prints the process CPU time per command instead
(initiator included: compare trees, not absolute numbers). With ``--enums`` it
counts, by the line that reads it, every enum member read off its class
(``Status.GOOD``): on CPython 3.11 each costs an ``EnumType.__getattr__`` slot
call, hundreds of instructions, where a module global is one dict probe::

    .venv/bin/python benchmarks/calls_per_command.py [--commands N] [--time | --enums]
        [--mrdsl B] [--blockio DEV]

Run it against another tree (e.g. the commit before a change) with
``PYTHONPATH=$(python benchmarks/tree_shim.py TREE)``: a plain PYTHONPATH of the
tree would still import this tree's subpackages (see tree_shim.py).
"""

from __future__ import annotations

import argparse
import collections
import enum
import shutil
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import pyscst.transports.iscsi.connection as connection_module
from pyscst.admin.config.files import parse_config
from pyscst.supervision.daemon import start, stop
from pyscst.transports.iscsi.initiator import Initiator

TARGET = "iqn.2026-12.org.pyscst:calls"
BS = 512
SHELL_DIR = str(Path(connection_module.__file__).parent)
SHELL_FILES = {f"{SHELL_DIR}/{name}" for name in ("connection.py", "transfer.py", "requests.py")}


#: (write, queue depth, bytes): the hot path, then the R2T-driven write (FirstBurstLength
#: 64K: the rest by R2T and Data-Out) and a read that the initiator's 64K segments split,
#: then what a tape streams (256 KiB one at a time: with ``--mrdsl 262144`` one Data-In)
SCENARIOS = (
    (False, 1, 4096),
    (True, 1, 4096),
    (False, 32, 4096),
    (True, 32, 4096),
    (True, 16, 131072),
    (False, 16, 131072),
    (True, 1, 262144),
    (False, 1, 262144),
)


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


class Counter:
    def __init__(self) -> None:
        self.shell = 0
        self.total = 0
        self.by_name: collections.Counter[str] = collections.Counter()

    def __call__(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            caller = frame.f_back
            self.total += 1
            if caller is not None and caller.f_code.co_filename in SHELL_FILES:
                self.shell += 1
                self.by_name[frame.f_code.co_name] += 1
        elif event == "c_call":
            self.total += 1
            if frame.f_code.co_filename in SHELL_FILES:
                self.shell += 1
                self.by_name[getattr(arg, "__qualname__", str(arg))] += 1


class EnumLookups:
    """Counts enum class-attribute reads (``Status.GOOD``) made by daemon code
    while on, by member and reading line, through a wrapper of
    ``EnumType.__getattribute__`` (a member is in the class dict, so
    ``__getattr__`` never runs: the cost is the slot that looks for it)."""

    def __init__(self) -> None:
        self.on = False
        self.by_site: collections.Counter[str] = collections.Counter()
        lookup = type.__getattribute__
        caller = sys._getframe

        def counted(cls: type, name: str) -> Any:
            if self.on and name[:1] != "_":
                frame = caller(1)
                where = frame.f_code.co_filename
                if "initiator" not in where and where != __file__:
                    site = f"{where.rsplit('/', 1)[-1]}:{frame.f_lineno} {frame.f_code.co_name}"
                    self.by_site[f"{cls.__name__}.{name} {site}"] += 1
            return lookup(cls, name)

        enum.EnumType.__getattribute__ = counted  # type: ignore[method-assign,assignment]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scenario(
    ini: Initiator, write: bool, depth: int, commands: int, size: int, lun: int = 0
) -> None:
    data = bytes(size)
    blocks = size // BS
    lba = 0
    done = 0
    while done < commands:
        itts = []
        for _ in range(depth):
            if write:
                itts.append(ini.submit(lun, write10(lba, blocks), data))
            else:
                itts.append(ini.submit(lun, read10(lba, blocks), read_length=size))
            lba = (lba + blocks) % (8192 - blocks)
        for itt in itts:
            r = await ini.wait(itt)
            assert r.status == 0, r
        done += depth


async def main(
    commands: int, timed: bool, mrdsl: int, blockio: str | None, enums: EnumLookups | None = None
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pyscst-calls-", dir="/dev/shm"))
    port = free_port()
    # --blockio: LUN 1 is vdisk_blockio on that block device; every read goes
    # to the device (O_DIRECT): the slow path, without dropping caches
    blk = (
        f'[devices.blk0]\nhandler = "vdisk_blockio"\npath = "{blockio}"\nsize = "4MiB"\n'
        if blockio
        else ""
    )
    blk_lun = ', { lun = 1, device = "blk0" }' if blockio else ""
    dirs = f'allowed_dirs = ["{Path(blockio).parent}"]\n' if blockio else ""
    text = f"""
state_dir = "{tmp}"
control_socket = "{tmp}/c.sock"
log_level = "warning"
{dirs}[iscsi]
poll_us = 0
[devices.disk0]
handler = "vdisk_fileio"
path = "disk0.img"
size = "4MiB"
{blk}[targets."{TARGET}"]
portals = ["127.0.0.1:{port}"]
luns = [{{ lun = 0, device = "disk0" }}{blk_lun}]
"""
    config = parse_config(text, tmp)
    try:
        async with trio.open_nursery() as nursery:
            daemon = await start(config, nursery)
            try:
                async with await Initiator.connect(
                    "127.0.0.1", port, target_name=TARGET, max_recv_data_segment_length=mrdsl
                ) as ini:
                    await ini.execute(0, bytes(6))  # TEST UNIT READY: the power-on UA
                    await ini.execute(0, bytes(6))
                    runs = [(0, *sc) for sc in SCENARIOS]
                    if blockio:
                        await ini.execute(1, bytes(6))
                        runs = [(1, *sc) for sc in SCENARIOS]
                    for lun, write, depth, size in runs:
                        await scenario(ini, write, depth, 256, size, lun)  # warm: cache, buffers
                        kind = "WRITE" if write else "READ "
                        name = f"{'blockio ' if lun else ''}{kind} {size // 1024:>3}K QD{depth:<2}"
                        if enums is not None:
                            enums.by_site.clear()
                            enums.on = True
                            try:
                                await scenario(ini, write, depth, commands, size, lun)
                            finally:
                                enums.on = False
                            total = sum(enums.by_site.values()) / commands
                            print(f"{name}: {total:5.2f} enum member reads/cmd")
                            for site, n in enums.by_site.most_common(12):
                                print(f"    {n / commands:5.2f} {site}")
                            continue
                        if timed:
                            began = time.process_time()
                            await scenario(ini, write, depth, commands, size, lun)
                            spent = time.process_time() - began
                            print(f"{name}: {spent / commands * 1e6:7.1f} µs CPU/cmd")
                            continue
                        counter = Counter()
                        sys.setprofile(counter)
                        try:
                            await scenario(ini, write, depth, commands, size, lun)
                        finally:
                            sys.setprofile(None)
                        top = ", ".join(f"{k} {v / commands:.2f}" for k, v in
                                        counter.by_name.most_common(8))  # fmt: skip
                        print(
                            f"{name}: connection code {counter.shell / commands:6.2f} calls/cmd,"
                            f" whole process {counter.total / commands:7.2f}  [{top}]"
                        )
            finally:
                await stop(daemon)
                nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2048)
    parser.add_argument("--time", action="store_true", help="CPU time per command, no counts")
    parser.add_argument("--mrdsl", type=int, default=65536, help="the initiator's MRDSL")
    parser.add_argument(
        "--blockio",
        metavar="BLOCKDEV",
        help="run on a vdisk_blockio LUN over this block device (a loop device)",
    )
    parser.add_argument(
        "--enums", action="store_true", help="enum member reads per command, by line"
    )
    args = parser.parse_args()
    lookups = EnumLookups() if args.enums else None
    trio.run(main, args.commands, args.time, args.mrdsl, args.blockio, lookups)
