"""Streaming tape load for the benchmark: what a backup writes and a restore reads.

``tape_stream.py write|read URL COUNT SIZE`` logs in with the project's
initiator, clears the unit attention, REWINDs, then sends COUNT WRITE(6) (or
READ(6), SILI) commands of SIZE-byte variable records one at a time, as a
tape driver does (a tape has one position: no queueing), and prints the
``Run completed in S seconds`` line that ``parse_qemu_bench`` reads. A read
that reaches end-of-data (or a filemark) rewinds and goes on. No tool of
libiscsi or qemu speaks SSC, so both targets get this same client.
"""

from __future__ import annotations

import sys
import time
from urllib.parse import urlparse

import trio

from pyscst.transports.iscsi.initiator import Initiator

GOOD = 0


def c6(op: int, b1: int, n: int) -> bytes:
    return bytes((op, b1)) + n.to_bytes(3, "big") + b"\0"


async def stream(mode: str, url: str, count: int, size: int) -> float:
    parts = urlparse(url)
    iqn, lun_text = parts.path.strip("/").rsplit("/", 1)
    lun = int(lun_text)
    assert parts.hostname is not None and parts.port is not None
    ini = await Initiator.connect(parts.hostname, parts.port, target_name=iqn,
                                  initiator_name="iqn.2026-11.org.pyscst:tape-bench")  # fmt: skip
    async with ini:
        for _ in range(5):  # unit attentions (power on, medium change)
            if (await ini.execute(lun, bytes(6))).status == GOOD:
                break
        rewind = c6(0x01, 0, 0)
        if (r := await ini.execute(lun, rewind)).status != GOOD:
            raise SystemExit(f"REWIND failed: status {r.status} sense {r.sense.hex()}")
        record = bytes(range(256)) * (size // 256) + bytes(size % 256)
        write = c6(0x0A, 0, size)
        read = c6(0x08, 0x02, size)
        start = time.perf_counter()
        for _ in range(count):
            if mode == "write":
                r = await ini.execute(lun, write, data_out=record)
                if r.status != GOOD:
                    raise SystemExit(f"WRITE failed: status {r.status} sense {r.sense.hex()}")
            else:
                r = await ini.execute(lun, read, read_length=size)
                if r.status != GOOD or len(r.data) != size:
                    await ini.execute(lun, rewind)  # end of data: start over
        return time.perf_counter() - start


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[1] not in ("write", "read"):
        print(__doc__, file=sys.stderr)
        return 2
    seconds = trio.run(stream, argv[1], argv[2], int(argv[3]), int(argv[4]))
    print(f"Run completed in {seconds:.3f} seconds.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
