"""Measure FileStore's inline RWF_NOWAIT path against a thread hop per I/O.

The store design rests on one number: how much a worker-thread round trip
costs compared with a page-cache copy done inline. Run
``python -m pyscst.devices.store_timing [path]`` to see it on this machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import trio

from pyscst.devices.stores import FileStore

SIZE = 64 << 20
IO = 4096
N = 20000


async def _measure(path: str) -> None:
    store = await FileStore.open(path, size=SIZE)
    try:
        await store.write(0, os.urandom(SIZE))  # warm the page cache
        buf = memoryview(bytearray(IO))
        offsets = [(i * 7919 * IO) % SIZE for i in range(N)]
        for label, nowait in (("inline RWF_NOWAIT", True), ("thread hop", False)):
            store._nowait_reads = nowait
            start = time.perf_counter()
            for off in offsets:
                await store.readinto(off, buf)
            per = (time.perf_counter() - start) / N * 1e6
            print(f"read  4 KiB {label:18s}: {per:6.1f} us")
        nowait = store._nowait_writes
        for label, inline in (("inline", True), ("thread hop", False)):
            store._nowait_writes = nowait and inline
            store.inline_writes = inline
            start = time.perf_counter()
            for off in offsets:
                await store.write(off, buf)
            per = (time.perf_counter() - start) / N * 1e6
            kind = "RWF_NOWAIT" if store._nowait_writes else "plain pwrite"
            print(f"write 4 KiB {label:18s}: {per:6.1f} us ({kind}, stalls {store.stalls})")
    finally:
        await store.close()


def main() -> None:
    if len(sys.argv) > 1:
        trio.run(_measure, sys.argv[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(_measure, os.path.join(tmp, "timing.img"))


if __name__ == "__main__":
    main()
