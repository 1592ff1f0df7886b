"""kill -9 durability: every acknowledged write survives the daemon's death.

A writer logs in and writes verifiable blocks (each 512-byte block carries
its LBA and a generation number, repeated, so a torn block is recognisable)
two ways: WRITE(10) with FUA, acknowledged by its GOOD status; and plain
WRITE(10)s acknowledged together by a later SYNCHRONIZE CACHE's GOOD. Three
sessions write at once, each on its own third of the region (so the order of
writes to one block is the order its writer issued them). At a random moment the daemon gets
SIGKILL; it is restarted on the same backing file and every block is read
back. Each must hold the generation last acknowledged for it, or one written
after that (a write in flight may land or not), and never a mix of two
(torn), nor zeros once a write was acknowledged.

What this does not cover: power loss. The daemon's death leaves the host's
page cache intact, so data the daemon handed to the kernel survives even if
it never reached the disk; only a power cut (or a VM kill) tests that FUA and
SYNCHRONIZE CACHE reach stable storage (fdatasync), which this cannot see.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.daemon import free_port, start_daemon, stop_daemon, write_config

TARGET = "iqn.2026-11.org.pyscst:durability"
BLOCK = 512
REGION = 4096  # blocks written (2 MiB): small, so writes overlap and rewrite
WRITERS = 3
MAGIC = b"DURA"
_STAMP = struct.Struct(">4sIQ")  # magic, LBA, generation: 16 bytes, 32 times a block


def block(lba: int, gen: int) -> bytes:
    return _STAMP.pack(MAGIC, lba, gen) * (BLOCK // _STAMP.size)


def read_stamp(lba: int, data: bytes) -> int | None:
    """The block's generation; 0 for never written; None when torn or foreign."""
    if data == bytes(BLOCK):
        return 0
    first = data[: _STAMP.size]
    if first * (BLOCK // _STAMP.size) != data:
        return None
    magic, got_lba, gen = _STAMP.unpack(first)
    if magic != MAGIC or got_lba != lba:
        return None
    return int(gen)


@attrs.define
class Ledger:
    """What was written and what the target acknowledged, per block."""

    #: lba -> generation last acknowledged durable
    acked: dict[int, int] = attrs.field(factory=dict)
    #: lba -> generations written after (or while) the last acknowledgement
    maybe: dict[int, set[int]] = attrs.field(factory=dict)
    writes_acked: int = 0

    def written(self, lba: int, gen: int) -> None:
        self.maybe.setdefault(lba, set()).add(gen)

    def acknowledged(self, lbas_gens: list[tuple[int, int]]) -> None:
        for lba, gen in lbas_gens:
            if gen > self.acked.get(lba, 0):
                self.acked[lba] = gen
            self.maybe[lba] = {g for g in self.maybe.get(lba, set()) if g > self.acked[lba]}
        self.writes_acked += 1

    def check(self, lba: int, gen: int | None) -> str | None:
        """None if ``gen`` is what the block may hold, else what is wrong."""
        if gen is None:
            return "torn"
        acked = self.acked.get(lba, 0)
        if gen == acked or gen in self.maybe.get(lba, set()):
            return None
        return "lost" if gen < acked else "unexpected"


@attrs.define
class TrialResult:
    writes_acked: int
    blocks_checked: int
    lost: int
    torn: int
    unexpected: int
    killed_after: float


def _write10(lba: int, count: int, fua: bool) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, count, 0)


async def _writer(
    ini: Initiator, ledger: Ledger, rng: random.Random, gens: list[int], part: int
) -> None:
    unsynced: list[tuple[int, int]] = []
    size = REGION // WRITERS
    while True:
        lba = part * size + rng.randrange(size - 8)
        count = rng.randrange(1, 9)
        gens[0] += 1
        gen = gens[0]
        stamps = [(lba + i, gen) for i in range(count)]
        for b, g in stamps:
            ledger.written(b, g)
        data = b"".join(block(b, g) for b, g in stamps)
        fua = rng.random() < 0.5
        result = await ini.execute(0, _write10(lba, count, fua), data)
        if result.status != 0:
            continue
        if fua:
            ledger.acknowledged(stamps)
        else:
            unsynced.extend(stamps)
            if rng.random() < 0.3:
                sync = await ini.execute(0, bytes([0x35]) + bytes(9))
                if sync.status == 0:
                    ledger.acknowledged(unsynced)
                    unsynced = []


async def _write_until_killed(
    host: str, port: int, pid: int, ledger: Ledger, rng: random.Random, kill_after: float
) -> None:
    gens = [max([0, *ledger.acked.values(), *(max(s, default=0) for s in ledger.maybe.values())])]

    async def session(seed: float, part: int, task_status: trio.TaskStatus[None]) -> None:
        try:
            async with await Initiator.connect(host, port, target_name=TARGET) as ini:
                while (await ini.execute(0, bytes(6))).status != 0:
                    pass  # the power-on unit attention
                task_status.started()
                await _writer(ini, ledger, random.Random(seed), gens, part)
        except Exception:
            pass  # the daemon died under it: that is the point

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for part in range(WRITERS):
                await nursery.start(session, rng.random(), part)
            await trio.sleep(kill_after)
            os.kill(pid, signal.SIGKILL)


async def _verify(host: str, port: int, ledger: Ledger) -> tuple[int, dict[str, int]]:
    bad = {"lost": 0, "torn": 0, "unexpected": 0}
    async with await Initiator.connect(host, port, target_name=TARGET) as ini:
        while (await ini.execute(0, bytes(6))).status != 0:
            pass
        chunk = 256
        for start in range(0, REGION, chunk):
            cdb = struct.pack(">BBIBHB", 0x28, 0, start, 0, chunk, 0)
            result = await ini.execute(0, cdb, read_length=chunk * BLOCK)
            assert result.status == 0, result
            for i in range(chunk):
                lba = start + i
                gen = read_stamp(lba, result.data[i * BLOCK : (i + 1) * BLOCK])
                problem = ledger.check(lba, gen)
                if problem:
                    bad[problem] += 1
    return REGION, bad


def run_trials(
    workdir: Path,
    trials: int,
    seed: int = 1,
    tamper: Callable[[Path, Ledger], None] | None = None,
) -> list[TrialResult]:
    """``trials`` kill -9 rounds on one backing file, each verified after restart.
    ``tamper`` (tests of the check itself) edits the backing file while the
    daemon is down."""
    rng = random.Random(seed)
    port = free_port()
    config = write_config(
        workdir, port=port, target=TARGET,
        devices={"disk0": {"handler": "vdisk_fileio", "size": "8MiB"}},
    )  # fmt: skip
    ledger = Ledger()
    results = []
    for _ in range(trials):
        proc, info = start_daemon(config, host="127.0.0.1", port=port, target=TARGET)
        kill_after = rng.uniform(0.2, 1.5)
        before = ledger.writes_acked
        trio.run(_write_until_killed, info.host, port, proc.pid, ledger, rng, kill_after)
        proc.wait(10)
        if tamper is not None:
            tamper(config.parent / "state" / "disk0.img", ledger)
        proc, info = start_daemon(config, host="127.0.0.1", port=port, target=TARGET)
        try:
            checked, bad = trio.run(_verify, info.host, port, ledger)
        finally:
            stop_daemon(proc, info)
        # what survived is now the state both ways: the next trial starts from it
        results.append(
            TrialResult(ledger.writes_acked - before, checked, bad["lost"], bad["torn"],
                        bad["unexpected"], kill_after)
        )  # fmt: skip
        ledger.acked = {}
        ledger.maybe = {}
        _adopt_disk(config.parent / "state" / "disk0.img", ledger)
    return results


def _adopt_disk(path: Path, ledger: Ledger) -> None:
    """Start the next trial from what is on disk (and verified) now."""
    data = path.read_bytes()[: REGION * BLOCK]
    for lba in range(REGION):
        gen = read_stamp(lba, data[lba * BLOCK : (lba + 1) * BLOCK])
        if gen:
            ledger.acked[lba] = gen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.durability", description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pyscst-durability-"))
    results = run_trials(workdir, args.trials, args.seed)
    for i, r in enumerate(results, 1):
        print(
            f"trial {i:3d}: killed after {r.killed_after:.2f}s, {r.writes_acked} acknowledged "
            f"writes, {r.blocks_checked} blocks checked: {r.lost} lost, {r.torn} torn, "
            f"{r.unexpected} unexpected"
        )
    total = sum(r.writes_acked for r in results)
    lost = sum(r.lost for r in results)
    torn = sum(r.torn for r in results)
    odd = sum(r.unexpected for r in results)
    print(
        f"{len(results)} kill -9 trials, {total:,} acknowledged writes (FUA or SYNCHRONIZE "
        f"CACHE): {lost} lost, {torn} torn, {odd} unexpected"
    )
    return 0 if lost == torn == odd == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
