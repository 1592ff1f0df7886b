"""The standing hostile-input campaign, short: fuzzing and kill -9 durability.

``make fuzz`` and ``make soak`` run the long versions (tests/fuzz). Here: the
harness's own pieces (traceback classes, the durability ledger) without a
daemon, then a short fuzz run against a real daemon that must end with no
daemon exit and no unhandled traceback, and a few kill -9 trials that must
lose and tear nothing acknowledged.
"""

from __future__ import annotations

import random
from pathlib import Path

from pyscst.transports.iscsi import pdu_types as P
from tests.fuzz.campaign import Campaign, classify
from tests.fuzz.durability import BLOCK, Ledger, block, read_stamp, run_trials
from tests.fuzz.mutate import Mutator

SHORT_RUN = 20_000

LOG = """\
2026-12-07 14:19:53.025 WARNING transports.iscsi.connection: x: fatal protocol error
2026-12-07 14:19:53.026 ERROR   actors.supervisor: connections@x: child iscsi crashed
  + Exception Group Traceback (most recent call last):
  |   File "/w/supervision/supervisor.py", line 114, in _supervise
  | ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "/w/transports/iscsi/connection.py", line 666, in _arrival
    |     return self._window.offer(event.cmdsn, event.immediate, event)
    |   File "/w/.venv/lib/python3.11/site-packages/trio/_channel.py", line 215, in send_nowait
    | AttributeError: 'LoginRequest' object has no attribute 'immediate'
    +------------------------------------
2026-12-07 14:19:53.100 INFO    transports.iscsi.connection: x: Normal session
"""


def test_classify_names_exception_and_innermost_own_frame() -> None:
    assert classify(LOG) == ["AttributeError in _arrival (connection.py)"]
    assert classify("2026-12-07 14:19:53.100 INFO    a: no traceback here\n") == []


def test_mutator_is_reproducible() -> None:
    def wires(seed: int) -> list[bytes]:
        mut = Mutator(random.Random(seed))
        return [mut.mutated(mut.ffp(i, i), True, True) for i in range(50)]

    assert wires(7) == wires(7)
    assert wires(7) != wires(8)


def test_tame_mutation_avoids_the_known_triggers() -> None:
    mut = Mutator(random.Random(3))
    for i in range(500):
        wire = mut.ffp_wire(mut.ffp(i, i), False, False, True, True)
        opcode = wire[0] & 0x3F
        assert opcode not in (0x02, 0x03)
        assert not (opcode == 0x01 and wire[0] & 0x40)
        assert len(wire) == 48 + wire[4] * 4 + ((int.from_bytes(wire[5:8], "big") + 3) & ~3)
    login = mut.ffp_wire(P.LoginRequest(), False, False, False, True)
    assert login[0] & 0x3F == 0x00


def test_ledger_tells_lost_and_torn_blocks() -> None:
    ledger = Ledger()
    ledger.written(5, 1)
    assert ledger.check(5, 0) is None  # in flight: may not have landed
    ledger.acknowledged([(5, 1)])
    assert ledger.check(5, 1) is None
    assert ledger.check(5, 0) == "lost"
    ledger.written(5, 2)  # written, not acknowledged: old or new both fine
    assert ledger.check(5, 1) is None and ledger.check(5, 2) is None
    torn = block(5, 1)[: BLOCK // 2] + block(5, 2)[BLOCK // 2 :]
    assert read_stamp(5, torn) is None
    assert ledger.check(5, read_stamp(5, torn)) == "torn"
    assert read_stamp(6, block(5, 1)) is None  # another block's data
    assert read_stamp(5, bytes(BLOCK)) == 0


def test_short_fuzz_run_leaves_the_daemon_standing(tmp_path: Path) -> None:
    """Tens of thousands of mutated PDUs (pre-login, login, full feature, with
    and without digests) against a real daemon: no exit, no traceback."""
    figures = Campaign(tmp_path, seed=11).run(pdus=SHORT_RUN)
    print(figures.report())
    assert figures.pdus >= SHORT_RUN
    assert (figures.exits, figures.tracebacks) == (0, 0), figures.report()


#: issue 11 D5, open on another branch: a WRITE whose connection is gone by the
#: time it asks for its data is logged with a traceback. A teardown race, no
#: client can steer clear of it (the target itself drops connections on fatal
#: errors), so the avoid-known run below tolerates it; the strict run does not.
D5_CLASS = "transports.iscsi.connection.ConnectionClosed in receive_data (connection.py)"


def test_short_fuzz_run_clear_of_known_triggers(tmp_path: Path) -> None:
    """The same, steering clear of the known D1-D3 triggers (and tolerating
    D5): whatever else breaks shows up here even while those are open."""
    figures = Campaign(tmp_path, seed=12, avoid_known=True).run(pdus=SHORT_RUN)
    print(figures.report())
    unknown = {name: n for name, n in figures.classes.items() if name != D5_CLASS}
    assert (figures.exits, unknown) == (0, {}), figures.report()


def test_kill_9_check_sees_a_lost_and_a_torn_block(tmp_path: Path) -> None:
    """The check itself: an acknowledged block zeroed and another half
    overwritten while the daemon is down are reported as lost and torn."""

    def tamper(image: Path, ledger: Ledger) -> None:
        lost, torn = sorted(ledger.acked)[:2]
        with image.open("r+b") as f:
            f.seek(lost * BLOCK)
            f.write(bytes(BLOCK))
            f.seek(torn * BLOCK + BLOCK // 2)
            f.write(bytes(range(256)) * (BLOCK // 512))

    [result] = run_trials(tmp_path, trials=1, seed=6, tamper=tamper)
    assert (result.lost, result.torn) == (1, 1), result


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    results = run_trials(tmp_path, trials=3, seed=5)
    assert all(r.writes_acked > 0 for r in results), results
    assert sum(r.lost + r.torn + r.unexpected for r in results) == 0, results
