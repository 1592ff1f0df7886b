"""``python -m tests.fuzz``: the long hostile-input run (``make fuzz``).

Runs the PDU fuzz campaign for a PDU count or a time budget and prints its
figures, then (unless ``--no-stall``) measures a legitimate login under 2,000
stalled connections against a daemon with the fd soft limit at 1024: from one
source address (asserting the issue's 2 s bound), and from 250 (reported).
Exit status 0 only with no daemon exit, no unhandled traceback and the login
in time. The kill -9 durability trials are
``python -m tests.fuzz.durability`` (``make soak``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import trio

from tests.daemon import running_daemon
from tests.fuzz.campaign import Campaign
from tests.fuzz.stall import Staller, fd_soft_limit, raise_own_fd_limit, timed_login
from tests.helpers_tgt import TgtDaemon, tgtd_daemon, tgtd_unavailable

STALL_TARGET = "iqn.2026-11.org.pyscst:stall"
STALL_BOUND = 2.0


def stall_check(workdir: Path, count: int, sources: list[str]) -> float:
    raise_own_fd_limit(count + 1024)
    with running_daemon(workdir, target=STALL_TARGET, preexec_fn=fd_soft_limit(1024)) as d:
        staller = Staller(d.host, d.port, count, sources)
        staller.start()
        try:
            elapsed = trio.run(timed_login, d.host, d.port, STALL_TARGET)
            print(
                f"login under {staller.open_now} stalled connections from {len(sources)} "
                f"address(es) (daemon fd soft limit 1024): {elapsed:.3f}s "
                f"(attacker reopened {staller.reopened})"
            )
        finally:
            staller.stop()
    return elapsed


def revive(tgt: TgtDaemon) -> bool:
    """Start tgtd again (same port, same files) if the forwarded CDBs killed it."""
    if tgt.proc is not None and tgt.proc.poll() is None:
        return False
    tgt.kill()
    tgt.start()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--pdus", type=int, help="stop after this many PDUs")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="keep the daemon's files here")
    parser.add_argument(
        "--avoid-known", action="store_true",
        help="send no immediate SCSI command, Login or TMF in full feature phase "
        "(the known D1-D3 triggers), to find what hides behind them",
    )  # fmt: skip
    parser.add_argument("--no-stall", action="store_true", help="skip the stalled-login check")
    parser.add_argument(
        "--no-passthrough", action="store_true",
        help="no pass-through LUNs (by default, where tgtd is installed, LUNs 5 and 6 "
        "forward to a private tgtd's disk and tape)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.pdus is None and args.seconds is None:
        args.pdus = 1_000_000
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pyscst-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"fuzzing a real daemon (seed {args.seed}; files in {workdir})", flush=True)
    with contextlib.ExitStack() as stack:
        backend = None
        why_not = "--no-passthrough" if args.no_passthrough else tgtd_unavailable()
        if why_not is None:
            tgt = stack.enter_context(tgtd_daemon(workdir, tape=True))
            backend = tgt.url.rsplit("/", 1)[0]
            print(f"pass-through LUNs 5 (disk) and 6 (tape) forward to tgtd on {tgt.port}")
        else:
            print(f"no pass-through LUNs: {why_not}")
        campaign = Campaign(
            workdir / "fuzz", seed=args.seed, avoid_known=args.avoid_known, backend=backend,
            revive_backend=None if backend is None else lambda: revive(tgt),
        )  # fmt: skip
        figures = campaign.run(args.pdus, args.seconds, progress=50_000)
    print(figures.report(), flush=True)
    ok = figures.exits == 0 and figures.tracebacks == 0
    if not args.no_stall:
        # the case (one source address): asserted
        elapsed = stall_check(workdir / "stall-one", 2000, ["127.0.0.2"])
        if elapsed > STALL_BOUND:
            print(f"FAIL: the login took {elapsed:.3f}s (bound {STALL_BOUND}s)")
            ok = False
        # spread over 250 addresses, each under the per-address bound: the total
        # bound evicts, the attacker reopens at once (worst-case churn): reported
        stall_check(workdir / "stall-many", 2000, [f"127.0.1.{n}" for n in range(1, 251)])
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
