"""Keep Python's cyclic garbage collector off the datapath.

What it cost before (in-process blockio 4K reads at queue depth 32, 16,384
commands, ``gc.callbacks`` timing): three full collections of the ~55,000
objects the daemon holds for good (modules, configuration, actors, tables)
took 118-151 ms, 7-9 us a command and a 40-50 ms stall each; the young
collections that the default threshold (700 net allocations) sets off every
~35 commands added about 2 us a command, though nearly all a command
allocates is freed by reference counting long before.

So, once the daemon is up: one collection, then ``gc.freeze()`` moves what
survives out of the collector's sight (a full collection then only walks
what was made since), and the young generation's threshold goes to
:data:`GEN0_THRESHOLD` net allocations. Reference cycles made later are still
collected, only less often; what is frozen is never freed even if it becomes
cyclic garbage (a reload's replaced configuration: small and rare).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

#: net allocations of tracked objects between young collections (default 700)
GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Freeze what the started daemon holds and raise the young threshold."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    log.debug("gc: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())
