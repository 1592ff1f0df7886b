"""The EXTENDED COPY row: 1 GiB copied inside the target vs through the initiator.

A copy offload (EXTENDED COPY LID1, block device to block device segments,
devices/disk_xcopy.py) moves the data store to store inside the target; the
alternative is the initiator reading every block and writing it back, twice
over the network. Both copy the same range from one LUN to another of the
same target. The in-target copy is sent by the project's initiator
(libiscsi's tools cannot send an EXTENDED COPY) as EXTENDED COPY commands of
at most ``SEGMENTS_PER_COMMAND`` segments. The other is what a host does
without offload: ``qemu-img convert`` between the two iSCSI LUNs (libiscsi,
8 requests in flight, no sparse detection), or, without qemu-img, the
project's initiator with READ(16)/WRITE(16) pairs of ``CHUNK`` bytes,
``DEPTH`` in flight (a Python initiator: slower than a host's). Each is
timed (wall clock) with the target's CPU time over it; the ratio is the
host copy's time over the offloaded copy's.
Run alone it prints one JSON line (bench.py runs it pinned to the client CPU)::

    python benchmarks/copy_offload.py --portal 127.0.0.1:3260 --iqn IQN --src 0 --dst 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import time
from collections.abc import Callable, Iterator

import attrs
import trio

from procstat import cpu_seconds
from pyscst.transports.iscsi.initiator import Initiator

COPY_BYTES = 1 << 30
#: one segment moves at most this much (the target's limit is 64 MiB, and
#: the segment's block count is 16 bits: 65535 blocks)
SEGMENT_BYTES = 16 << 20
#: the target accepts up to 64 segment descriptors in one parameter list
SEGMENTS_PER_COMMAND = 64
#: the initiator's copy: bytes per READ/WRITE and pairs in flight
CHUNK = 1 << 20
DEPTH = 4
_TARGET_DESCRIPTOR = 0xE4
_BLOCK_TO_BLOCK = 0x02
_GOOD = 0


class CopyError(RuntimeError):
    """A command of the copy did not end GOOD."""


def target_descriptor(designator: bytes, block_size: int) -> bytes:
    """Identification target descriptor (E4h): the LU's designator (VPD 0x83
    descriptor: 4-byte header + designator), disk type, its block length."""
    desc = bytearray(32)
    desc[0] = _TARGET_DESCRIPTOR
    desc[4 : 4 + len(designator)] = designator
    desc[29:32] = block_size.to_bytes(3, "big")
    return bytes(desc)


def segments(first_lba: int, blocks: int, block_size: int) -> Iterator[tuple[int, int]]:
    """``(lba, blocks)`` pieces of at most SEGMENT_BYTES covering the range."""
    per = max(1, min(0xFFFF, SEGMENT_BYTES // block_size))
    lba, end = first_lba, first_lba + blocks
    while lba < end:
        n = min(per, end - lba)
        yield lba, n
        lba += n


def parameter_lists(
    src: bytes, dst: bytes, block_size: int, blocks: int, list_id: int = 1
) -> list[bytes]:
    """EXTENDED COPY (LID1) parameter lists copying LBA 0..blocks-1 of the LU
    designated ``src`` to the same LBAs of ``dst``: target descriptor 0 is the
    source, 1 the destination; no held results (LIST ID USAGE 11b)."""
    targets = target_descriptor(src, block_size) + target_descriptor(dst, block_size)
    pieces = list(segments(0, blocks, block_size))
    lists = []
    for at in range(0, len(pieces), SEGMENTS_PER_COMMAND):
        segs = b"".join(
            struct.pack(">BBHHH2xHQQ", _BLOCK_TO_BLOCK, 0, 0x18, 0, 1, n, lba, lba)
            for lba, n in pieces[at : at + SEGMENTS_PER_COMMAND]
        )
        header = struct.pack(">BBHIII", (list_id + at) & 0xFF, 0x18, len(targets), 0,
                             len(segs), 0)  # fmt: skip
        lists.append(header + targets + segs)
    return lists


def xcopy_cdb(length: int) -> bytes:
    return bytes((0x83, 0)) + bytes(8) + length.to_bytes(4, "big") + bytes(2)


def read16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


def write16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0, lba, blocks, 0, 0)


@attrs.frozen
class CopyResult:
    """Both ways of copying the same bytes, with the target's CPU over each."""

    copied: int
    xcopy_s: float
    host_s: float
    xcopy_cpu_s: float | None = None
    host_cpu_s: float | None = None
    #: what copied through the initiator: "qemu-img" or "initiator" (ours)
    host_tool: str = "qemu-img"

    @property
    def ratio(self) -> float:
        """How many times faster the in-target copy was (host time / xcopy time)."""
        return self.host_s / self.xcopy_s if self.xcopy_s > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        return {**attrs.asdict(self), "ratio": self.ratio}


async def _check(ini: Initiator, lun: int, cdb: bytes, **kw: object) -> bytes:
    r = await ini.execute(lun, cdb, **kw)  # type: ignore[arg-type]
    if r.status != _GOOD:
        raise CopyError(f"{cdb[:1].hex()} on LUN {lun}: status {r.status:#x} sense {r.sense!r}")
    return bytes(r.data or b"")


async def designator(ini: Initiator, lun: int) -> bytes:
    """The LU's first designator in VPD 0x83 (pyscst's is its NAA name)."""
    page = await _check(ini, lun, bytes((0x12, 1, 0x83, 0, 255, 0)), read_length=255)
    return page[4 : 8 + page[7]]


async def block_size_of(ini: Initiator, lun: int) -> tuple[int, int]:
    """(block size, blocks) from READ CAPACITY(16)."""
    data = await _check(ini, lun, struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0),
                        read_length=32)  # fmt: skip
    last, size = struct.unpack_from(">QI", data)
    return size, last + 1


async def copy_in_target(ini: Initiator, src: int, dst: int, block_size: int, blocks: int) -> None:
    lists = parameter_lists(await designator(ini, src), await designator(ini, dst), block_size,
                            blocks)  # fmt: skip
    for params in lists:
        await _check(ini, src, xcopy_cdb(len(params)), data_out=params)


async def copy_through_initiator(
    ini: Initiator, src: int, dst: int, block_size: int, blocks: int
) -> None:
    per = max(1, CHUNK // block_size)
    lbas = iter(range(0, blocks, per))

    async def worker() -> None:
        for lba in lbas:  # (workers share the iterator: each chunk once)
            n = min(per, blocks - lba)
            data = await _check(ini, src, read16(lba, n), read_length=n * block_size)
            await _check(ini, dst, write16(lba, n), data_out=data)

    async with trio.open_nursery() as nursery:
        for _ in range(DEPTH):
            nursery.start_soon(worker)


def qemu_convert_argv(src_url: str, dst_url: str, size: int) -> list[str]:
    """qemu-img convert of the first ``size`` bytes, into the existing LUN (-n),
    every block written (-S 0), 8 requests in flight, writes out of order."""
    source = (f"driver=raw,offset=0,size={size},file.driver=iscsi,"
              f"file.transport=tcp,file.portal={_portal(src_url)},"
              f"file.target={_iqn(src_url)},file.lun={_lun(src_url)}")  # fmt: skip
    return ["qemu-img", "convert", "--image-opts", "-n", "-S", "0", "-O", "raw", "-m", "8",
            "-W", source, dst_url]  # fmt: skip


def _portal(url: str) -> str:
    return url.split("/")[2]


def _iqn(url: str) -> str:
    return url.split("/")[3]


def _lun(url: str) -> str:
    return url.split("/")[4]


async def copy_with_qemu(src_url: str, dst_url: str, size: int) -> None:
    argv = qemu_convert_argv(src_url, dst_url, size)
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        raise CopyError(f"qemu-img convert: {done.stderr.decode(errors='replace')[-300:]}")


async def measure(
    host: str, port: int, iqn: str, src: int, dst: int, size: int = COPY_BYTES,
    cpu: Callable[[], float] | None = None, host_tool: str | None = None,
) -> CopyResult:
    """Copy ``size`` bytes (rounded down to blocks) of LUN ``src`` to ``dst`` both
    ways; ``cpu`` reads the target's CPU seconds (None: not measured);
    ``host_tool``: "qemu-img" or "initiator" (None: qemu-img if installed)."""
    if host_tool is None:
        host_tool = "qemu-img" if shutil.which("qemu-img") else "initiator"
    async with await Initiator.connect(host, port, target_name=iqn) as ini:
        for lun in (src, dst):  # the power-on unit attentions
            for _ in range(3):
                if (await ini.execute(lun, bytes(6))).status == _GOOD:
                    break
        block_size, capacity = await block_size_of(ini, src)
        blocks = min(size // block_size, capacity, (await block_size_of(ini, dst))[1])
        timings = []
        for offload in (True, False):
            cpu_before = cpu() if cpu else 0.0
            began = time.monotonic()
            if offload:
                await copy_in_target(ini, src, dst, block_size, blocks)
            elif host_tool == "qemu-img":
                url = f"iscsi://{host}:{port}/{iqn}"
                await copy_with_qemu(f"{url}/{src}", f"{url}/{dst}", blocks * block_size)
            else:
                await copy_through_initiator(ini, src, dst, block_size, blocks)
            timings.append((time.monotonic() - began, cpu() - cpu_before if cpu else None))
    (xs, xcpu), (hs, hcpu) = timings
    return CopyResult(blocks * block_size, xs, hs, xcpu, hcpu, host_tool)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--portal", required=True, help="host:port")
    p.add_argument("--iqn", required=True)
    p.add_argument("--src", type=int, required=True, help="source LUN")
    p.add_argument("--dst", type=int, required=True, help="destination LUN")
    p.add_argument("--bytes", type=int, default=COPY_BYTES)
    p.add_argument("--target-pid", type=int, help="also measure this process's CPU time")
    p.add_argument("--host-tool", choices=("qemu-img", "initiator"), default=None,
                   help="what copies through the initiator (default: qemu-img if installed)")
    args = p.parse_args()
    host, port = args.portal.rsplit(":", 1)
    pid = args.target_pid
    cpu = (lambda: cpu_seconds(pid)) if pid else None
    result = trio.run(measure, host, int(port), args.iqn, args.src, args.dst, args.bytes, cpu,
                      args.host_tool)
    print(json.dumps(result.as_json()), flush=True)


if __name__ == "__main__":
    main()


def summary(results: list[CopyResult]) -> str:
    """The row as the report prints it: medians over the rounds."""
    if not results:
        return "EXTENDED COPY: not measured"
    xs = statistics.median(r.xcopy_s for r in results)
    hs = statistics.median(r.host_s for r in results)
    ratio = statistics.median(r.ratio for r in results)
    mib = results[0].copied / (1 << 20)
    line = (f"EXTENDED COPY of {mib:,.0f} MiB inside pyscst: {xs:.2f} s; read and written "
            f"by the initiator ({results[0].host_tool}): {hs:.2f} s; {ratio:.2f}x faster in "
            f"the target (median of {len(results)})")
    cpus = [(r.xcopy_cpu_s, r.host_cpu_s) for r in results
            if r.xcopy_cpu_s is not None and r.host_cpu_s is not None]
    if cpus:
        line += (f"; target CPU {statistics.median(c[0] for c in cpus):.2f} s vs "
                 f"{statistics.median(c[1] for c in cpus):.2f} s")
    return line
