"""The daemon's malloc thresholds keep freed datapath buffers mapped.

Buffers of a few hundred KiB to a few MiB (received chunks, large transfers)
come and go with every command. Under glibc's defaults, this pattern maps and
unmaps them again and again, so each reuse faults its pages back in; after
``tune_malloc`` it faults nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pyscst.supervision.malloc_tuning import tune_malloc

CHURN = textwrap.dedent(
    """
    import resource, sys
    if sys.argv[1] == "tuned":
        from pyscst.supervision.malloc_tuning import tune_malloc
        assert tune_malloc()
    def churn():
        for n in (300_000, 1_000_000, 2_000_000, 3_000_000, 200_000):
            b = bytearray(n)
            b[::4096] = b"\\x01" * len(b[::4096])
            del b
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        churn()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_reused_buffers_fault_nothing_after_tuning() -> None:
    if not tune_malloc():
        pytest.skip("not glibc: mallopt is not available")
    default, tuned = _faults("default"), _faults("tuned")
    assert default > 100  # the pattern does churn under the defaults
    assert tuned < 20
