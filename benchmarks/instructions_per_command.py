"""Instructions per command executed by the daemon process, counted by callgrind.

The CPU time of a shared 2-CPU VM drifts by more than a hot-path change costs,
and this VM has no hardware counters (``perf stat -e instructions`` says
"not supported"). valgrind's callgrind counts the instructions one process
executes, which does not depend on load, so two trees can be compared on a busy
machine. This script starts the daemon of any tree under
``valgrind --tool=callgrind --instr-atstart=no``, logs in with the project's
initiator from *this* process (outside valgrind), warms each scenario up, then
turns counting on with ``callgrind_control``, sends a fixed number of 4 KiB
READ(10)s or WRITE(10)s (immediate data) at queue depth 1 or 32 and dumps the
counters: instructions per command = the dump's total / commands. Busy-polling
is off (``poll_us = 0``) so the count is work, not spinning.

    .venv/bin/python benchmarks/instructions_per_command.py [--commands N]
        [--tree DIR --module admin.cli]   # another tree, e.g. a git worktree
        [--size 256 --mrdsl 262144 --depths 1 --handlers vdisk_nullio]
        [--handlers passthrough --backend iscsi://127.0.0.1:PORT/IQN/1]

``--size`` (KiB per command) and ``--mrdsl`` (the MaxRecvDataSegmentLength the
initiator declares) measure large transfers: 256 KiB with 262144 is what the
tape streaming rows send (one Data-In for a read; 64 KiB immediate data, one
R2T and one 192 KiB Data-Out for a write).

``--tree`` runs that tree's daemon with PYTHONPATH set to a shim of DIR
(``tree_shim.py``: the editable install would otherwise load this tree's
subpackages; before 2026-12-07 evening A/B runs measured this tree twice) and
``python -m MODULE serve --config F``: for this tree (the default) the module is
``pyscst``; for trees before the pyscst namespace it is
``admin.cli``. ``--annotate DIR`` keeps the callgrind dumps there for
``callgrind_annotate`` (a per-function diff of two trees).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from calls_per_command import free_port, scenario
from pyscst.transports.iscsi.initiator import Initiator
from tree_shim import shim_for

TARGET = "iqn.2026-12.org.pyscst:instructions"
BS = 512
SIZE = 4096
BLOCKS_ON_DISK = 8192  # 4 MiB: the blocks calls_per_command's load cycles through
HERE = Path(__file__).resolve().parent.parent

#: (handler, write, queue depth)
SCENARIOS = tuple(
    (handler, write, depth)
    for handler in ("vdisk_fileio", "vdisk_nullio", "vdisk_blockio", "passthrough")
    for depth in (1, 32)
    for write in (False, True)
)


def config_text(
    state: Path, port: int, handler: str, blockio: str | None = None, backend: str | None = None
) -> str:
    device = f'handler = "{handler}"\nsize = "{BLOCKS_ON_DISK * BS}"\n'
    dirs = ""
    if handler == "passthrough":
        if backend is None:
            raise SystemExit("passthrough needs --backend iscsi://HOST:PORT/IQN/LUN (e.g. tgt's)")
        device = f'handler = "passthrough"\nbackend = "{backend}"\n'
    elif handler == "vdisk_fileio":
        device += 'path = "disk0.img"\n'
    elif handler == "vdisk_blockio":
        if blockio is None:
            raise SystemExit("vdisk_blockio needs --blockio BLOCKDEV (e.g. a loop device)")
        device += f'path = "{blockio}"\n'
        dirs = f'allowed_dirs = ["{Path(blockio).parent}"]\n'
    return f"""
state_dir = "{state}"
control_socket = "{state}/c.sock"
log_level = "warning"
{dirs}[iscsi]
poll_us = 0
[devices.disk0]
{device}
[targets."{TARGET}"]
portals = ["127.0.0.1:{port}"]
luns = [{{ lun = 0, device = "disk0" }}]
"""


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def launch(env: dict[str, str], state: Path, module: str, conf: Path, out: Path) -> Any:
    """The daemon under callgrind, counting nothing until told to."""
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, "-m", module, "serve", "--config", str(conf)],
        env=env, cwd=state, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def dumps_in(state: Path) -> set[Path]:
    return set(state.glob("callgrind.out*"))


def new_dump(state: Path, before: set[Path]) -> Path:
    """The one dump file callgrind_control -d wrote (it may take a moment)."""
    for _ in range(100):
        dumps = dumps_in(state) - before
        if dumps:
            (dump,) = dumps
            return dump
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no dump")


def keep_dump(dump: Path, keep: Path, name: str) -> None:
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(dump, keep / name)


def total_of(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {dump}")


async def measure(
    tree: Path, module: str, handler: str, scenarios: list[tuple[bool, int]], commands: int,
    keep: Path | None, size: int = SIZE, mrdsl: int = 65536, blockio: str | None = None,
    backend: str | None = None,
) -> dict[tuple[bool, int], float]:
    state = Path(tempfile.mkdtemp(prefix="pyscst-instr-"))
    port = free_port()
    conf = state / "pyscst.toml"
    conf.write_text(config_text(state, port, handler, blockio, backend))
    out = state / "callgrind.out"
    env = dict(os.environ)
    if tree != HERE:  # the editable install ignores a plain PYTHONPATH (tree_shim.py)
        env["PYTHONPATH"] = str(shim_for(tree, state / "shim"))
    proc = launch(env, state, module, conf, out)
    results: dict[tuple[bool, int], float] = {}
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else "died"
                    raise RuntimeError(err) from None
                await trio.sleep(0.5)
        async with await Initiator.connect(
            "127.0.0.1", port, target_name=TARGET, max_recv_data_segment_length=mrdsl
        ) as ini:
            await ini.execute(0, bytes(6))  # TEST UNIT READY: the power-on UA
            for _ in range(240):  # (a passthrough device is not ready until its backend is)
                if (await ini.execute(0, bytes(6))).status == 0:
                    break
                await trio.sleep(0.5)
            await scenario(ini, False, 32, BLOCKS_ON_DISK // 8, SIZE)  # the whole file: warm
            for n, (write, depth) in enumerate(scenarios, 1):
                await scenario(ini, write, depth, 256, size)  # warm: buffers, caches, engine
                before = dumps_in(state)
                control(proc.pid, "-i", "on")
                control(proc.pid, "-z")
                await scenario(ini, write, depth, commands, size)
                control(proc.pid, "-d", f"scenario{n}")
                control(proc.pid, "-i", "off")
                dump = new_dump(state, before)
                results[(write, depth)] = total_of(dump) / commands
                if keep is not None:
                    kind = "write" if write else "read"
                    keep_dump(dump, keep, f"{handler}-{kind}-{size // 1024}k-qd{depth}.callgrind")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)
    return results


async def main(args: argparse.Namespace) -> None:
    tree = args.tree
    size = args.size * 1024
    for handler in args.handlers.split(","):
        wanted = [(w, d) for h, w, d in SCENARIOS if h == handler and d in args.depths]
        got = await measure(
            tree, args.module, handler, wanted, args.commands, args.annotate, size, args.mrdsl,
            args.blockio, args.backend,
        )
        for (write, depth), per in got.items():
            kind = "WRITE" if write else "READ "
            print(
                f"{handler:13} {kind} {args.size}K QD{depth:<2}: {per:10.0f} instructions/cmd",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2048)
    parser.add_argument("--tree", default=str(HERE), help="the tree whose daemon runs")
    parser.add_argument("--module", default="pyscst")
    parser.add_argument("--annotate", type=Path, default=None, help="keep dumps here")
    parser.add_argument("--size", type=int, default=SIZE // 1024, help="KiB per command")
    parser.add_argument("--mrdsl", type=int, default=65536, help="the initiator's MRDSL")
    parser.add_argument("--depths", type=lambda t: [int(d) for d in t.split(",")],
                        default=[1, 32], help="queue depths, e.g. 1,32")  # fmt: skip
    parser.add_argument("--handlers", default="vdisk_fileio,vdisk_nullio")
    parser.add_argument("--blockio", metavar="BLOCKDEV", default=None,
                        help="the block device of --handlers vdisk_blockio (a loop device)")
    parser.add_argument("--backend", metavar="URL", default=None,
                        help="what --handlers passthrough forwards to (a tgt disk LUN of at "
                        f"least {BLOCKS_ON_DISK * BS >> 20} MiB; tgt's own instructions are "
                        "not counted)")  # fmt: skip
    args = parser.parse_args()
    args.tree = Path(args.tree).resolve()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind (callgrind) is needed: apt-get install valgrind")
    trio.run(main, args)
