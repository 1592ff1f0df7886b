"""Keep glibc malloc from handing freed buffers back to the kernel between commands.

The daemon allocates a fresh buffer per received chunk (up to 256 KiB) and per
large transfer. With glibc's defaults, freeing one that sits at the top of the
heap shrinks the heap (``brk``) and the next allocation faults the same pages
back in: measured on a 128 KiB write workload, one ``brk`` and about 14 page
faults per command, 15-20 % of its CPU time. A fixed mmap threshold and a high
trim threshold keep those pages mapped. The price is bounded: at most
``TRIM_THRESHOLD`` of freed memory stays resident after a burst.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

#: mallopt() parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: allocations above this use their own mmap (and give it back when freed)
MMAP_THRESHOLD = 4 * 1024 * 1024
#: free memory at the top of the heap is returned only beyond this
TRIM_THRESHOLD = 32 * 1024 * 1024


def tune_malloc() -> bool:
    """Apply the thresholds; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not ok:
        log.debug("mallopt refused the thresholds; keeping the defaults")
    return ok
