"""The LU's span of active LBAs: the shortcut ``_blockers`` takes for a
command outside every active task's LBAs must never miss an overlap inside
it, at its edges, or after the task set emptied and filled again."""

from __future__ import annotations

import trio

from pyscst.scsi.sense import Status
from tests.cdbs import write10
from tests.unit.actors.test_task_set import (
    BS,
    Recorder,
    clear_power_on_ua,
    command,
    running_lu,
    wait_answers,
)


async def test_writes_outside_the_span_run_and_overlaps_at_its_edges_wait() -> None:
    async with running_lu() as (lu, store):
        await clear_power_on_ua(lu)
        low, high = Recorder(b"a" * BS), Recorder(b"b" * BS)
        gate_low, gate_high = store.gate(10), store.gate(20)
        lu.submit(command(low, write10(10), 1), 0, False)  # held: span [10, 21)
        lu.submit(command(high, write10(20), 2), 0, False)  # held
        await trio.sleep(0.02)
        assert lu._span_lo == 10 and lu._span_hi == 21
        between = Recorder(b"c" * BS)
        above = Recorder(b"d" * BS)
        below = Recorder(b"e" * BS)
        lu.submit(command(between, write10(15), 3), 0, False)  # inside the span, no overlap
        lu.submit(command(above, write10(21), 4), 0, False)  # just past its end
        lu.submit(command(below, write10(9), 5), 0, False)  # just before its start
        for r in (between, above, below):
            await wait_answers(r, 1)
        edge_high = Recorder(b"f" * BS)
        edge_low = Recorder(b"g" * BS)
        lu.submit(command(edge_high, write10(20), 6), 0, False)  # the span's last block
        lu.submit(command(edge_low, write10(10), 7), 0, False)  # its first block
        await trio.sleep(0.05)
        assert edge_high.answered == [] and edge_low.answered == []  # both wait
        gate_high.set()
        await wait_answers(edge_high, 1)
        gate_low.set()
        await wait_answers(edge_low, 1)
        await wait_answers(low, 1)
        await wait_answers(high, 1)
        # the later overlapping writes landed last
        assert bytes(store.data[20 * BS : 21 * BS]) == b"f" * BS
        assert bytes(store.data[10 * BS : 11 * BS]) == b"g" * BS
        assert lu.task_count() == 0
        assert (lu._span_lo, lu._span_hi) == (1 << 64, -1)  # empty again: reset
        # after the reset, a held write far away defines the span afresh
        far = Recorder(b"h" * BS)
        gate_far = store.gate(500)
        lu.submit(command(far, write10(500), 8), 0, False)
        await trio.sleep(0.02)
        assert (lu._span_lo, lu._span_hi) == (500, 501)
        late = Recorder(b"i" * BS)
        lu.submit(command(late, write10(500), 9), 0, False)
        await trio.sleep(0.05)
        assert late.answered == []
        gate_far.set()
        await wait_answers(late, 1)
        assert far.answered[0][1] == Status.GOOD
        assert bytes(store.data[500 * BS : 501 * BS]) == b"i" * BS
