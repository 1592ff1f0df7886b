"""The EXTENDED COPY row against a real pyscst daemon (in process, small): both
ways of copying really copy, and the copy offload's parameter lists are ones
the target accepts."""

from __future__ import annotations

import os
import shutil
import socket
import struct
from pathlib import Path

import trio

import copy_offload
from pyscst.admin.config.files import parse_config
from pyscst.supervision.daemon import start, stop
from pyscst.transports.iscsi.initiator import Initiator

TARGET = "iqn.2026-12.org.pyscst:copy-row"
MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _read_all(ini: Initiator, lun: int, size: int) -> bytes:
    out = bytearray()
    for lba in range(0, size // 512, 2048):
        r = await ini.execute(lun, struct.pack(">BBQIBB", 0x88, 0, lba, 2048, 0, 0),
                              read_length=MIB)  # fmt: skip
        assert r.status == 0 and r.data is not None
        out += r.data
    return bytes(out)


async def _zero(ini: Initiator, lun: int, blocks: int) -> None:
    for lba in range(0, blocks, 2048):
        r = await ini.execute(lun, copy_offload.write16(lba, 2048), data_out=bytes(MIB))
        assert r.status == 0


async def test_both_copies_move_the_bytes(tmp_path: Path) -> None:
    port = _free_port()
    size = 40 * MIB  # three 16 MiB segments, the last one short
    source = os.urandom(size)
    (tmp_path / "src.img").write_bytes(source)
    config = parse_config(f"""
state_dir = "{tmp_path}"
control_socket = "{tmp_path}/c.sock"
log_level = "warning"
[devices.src]
handler = "vdisk_fileio"
path = "src.img"
size = "{size}"
[devices.dst]
handler = "vdisk_fileio"
path = "dst.img"
size = "{size}"
[targets."{TARGET}"]
portals = ["127.0.0.1:{port}"]
luns = [{{ lun = 0, device = "src" }}, {{ lun = 4, device = "dst" }}]
""", tmp_path)
    async with trio.open_nursery() as nursery:
        daemon = await start(config, nursery)
        try:
            async with await Initiator.connect("127.0.0.1", port, target_name=TARGET) as ini:
                for lun in (0, 4):
                    await ini.execute(lun, bytes(6))  # the power-on UA
                bs, blocks = await copy_offload.block_size_of(ini, 0)
                assert (bs, blocks) == (512, size // 512)
                await copy_offload.copy_in_target(ini, 0, 4, bs, blocks)
                assert await _read_all(ini, 4, size) == source
                await _zero(ini, 4, blocks)
                assert await _read_all(ini, 4, size) == bytes(size)
                await copy_offload.copy_through_initiator(ini, 0, 4, bs, blocks)
                assert await _read_all(ini, 4, size) == source
                await _zero(ini, 4, blocks)
            # the row as bench.py runs it (the host copy by qemu-img where installed)
            result = await copy_offload.measure("127.0.0.1", port, TARGET, 0, 4, size,
                                                cpu=lambda: 0.0)  # fmt: skip
            assert result.copied == size and result.xcopy_s > 0 and result.host_s > 0
            assert result.xcopy_cpu_s == 0.0 and result.ratio > 0
            assert result.host_tool == ("qemu-img" if shutil.which("qemu-img") else "initiator")
            async with await Initiator.connect("127.0.0.1", port, target_name=TARGET) as ini:
                await ini.execute(4, bytes(6))
                assert await _read_all(ini, 4, size) == source
        finally:
            await stop(daemon)
            nursery.cancel_scope.cancel()
