"""The fuzz campaign: mutated PDUs against a real daemon process, counted.

One connection at a time, each in one of three phases picked at random:
*pre-login* (mutated Login Requests and garbage from the first byte),
*login* (a valid first Login Request that keeps the security stage open, then
mutated login and text negotiation), and *full feature* (a valid login with
or without CRC32C header/data digests, then a stream of valid and mutated
PDUs with CmdSN tracking, ended by a close, a TCP reset or a Logout). Replies
are drained, never awaited, so the target's reply path is busy too.

The daemon is ``pyscst serve`` itself (tests/daemon.py). After every
connection the campaign checks it is alive (an exit is counted, classified by
the last traceback in its log, and the daemon restarted), samples its RSS, and
classifies the unhandled tracebacks its log gained (exception type and the
innermost frame's function) so a run ends with a table, not a log to read.
"""

from __future__ import annotations

import collections
import contextlib
import random
import re
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from pyscst.scsi.cdb import OpTable
from pyscst.scsi.sense import Sense
from pyscst.transports.iscsi import pdu_types as P
from pyscst.transports.iscsi.textkeys import encode_text
from tests.daemon import RunningDaemon, free_port, start_daemon, stop_daemon, write_config
from tests.fuzz.mutate import PASSTHROUGH_LUNS, TARGET, TYPED_LUNS, Mutator, login_keys

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")
FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')
#: an exception line: optional module path, a CamelCase name, then ":" or the end
EXC = re.compile(r"^[\s|+\-]*((?:[a-z_]\w*\.)*[A-Z]\w*)(?::|$)")


@attrs.define
class Figures:
    """What a campaign counts."""

    pdus: int = 0
    connections: int = 0
    exits: int = 0
    restarts: int = 0
    tracebacks: int = 0
    #: traceback class -> count (exits are also listed as "exit: <class>")
    classes: collections.Counter[str] = attrs.field(factory=collections.Counter)
    #: "device: GOOD" / "device: CHECK CONDITION k/asc/ascq" / ... for the SCSI
    #: Responses to commands sent unmutated: proof the commands reach each
    #: device type's parser, and what it said
    answers: collections.Counter[str] = attrs.field(factory=collections.Counter)
    #: times the pass-through backend (tgtd) died under the forwarded CDBs and was
    #: started again (its own bugs; pyscst must answer and reconnect meanwhile)
    backend_restarts: int = 0
    rss_start_kib: int = 0
    rss_max_kib: int = 0
    rss_last_kib: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.pdus / self.seconds if self.seconds else 0.0

    def report(self) -> str:
        lines = [
            f"PDUs sent          {self.pdus:,} in {self.seconds:.1f}s ({self.rate:,.0f}/s)",
            f"connections        {self.connections:,}",
            f"daemon exits       {self.exits} (restarted {self.restarts} times)",
            f"backend restarts   {self.backend_restarts} (pass-through LUNs' tgtd)",
            f"tracebacks in log  {self.tracebacks}",
            f"daemon RSS         start {self.rss_start_kib / 1024:.1f} MiB, "
            f"max {self.rss_max_kib / 1024:.1f} MiB, last {self.rss_last_kib / 1024:.1f} MiB",
        ]
        if self.answers:
            by_device: dict[str, collections.Counter[str]] = collections.defaultdict(
                collections.Counter
            )
            for key, count in self.answers.items():
                device, _, answer = key.partition(": ")
                kind = "GOOD" if answer == "GOOD" else answer.split(" ", 1)[0]
                by_device[device][kind] += count
                by_device[device]["distinct sense"] += answer.startswith("CHECK")
            lines.append("SCSI answers to unmutated commands, by device:")
            for device, kinds in sorted(by_device.items()):
                lines.append(f"  {device:6s} " + ", ".join(f"{k} {n:,}" for k, n in kinds.items()))
        if self.classes:
            lines.append("by class:")
            for name, count in self.classes.most_common():
                lines.append(f"  {count:7d}  {name}")
        return "\n".join(lines)


def classify(text: str) -> list[str]:
    """One class per log record carrying a traceback: "ExcType in func (file)",
    the innermost frame of our own code (not of a library it called)."""
    out: list[str] = []
    record: list[str] = []

    def close() -> None:
        if not any("Traceback (most recent call last)" in line for line in record):
            return
        exc, where = "?", "?"
        for line in record:
            frame = FRAME.search(line)
            if frame and ("site-packages" not in line or where == "?"):
                where = f"{frame.group(2)} ({Path(frame.group(1)).name})"
            match = EXC.match(line)
            if match and "Traceback" not in line and "Group" not in match.group(1):
                exc = match.group(1)
        out.append(f"{exc} in {where}")

    for line in text.splitlines():
        if RECORD.match(line):
            close()
            record = []
        record.append(line)
    close()
    return out


def campaign_luns(backend: str | None) -> dict[int, tuple[str, str, OpTable]]:
    """The typed LUNs; with ``backend`` (``iscsi://host:port/iqn``, a tgtd with a
    disk at LUN 1 and a tape at LUN 2) the two pass-through LUNs as well."""
    return {**TYPED_LUNS, **(PASSTHROUGH_LUNS if backend else {})}


def campaign_devices(backend: str | None = None) -> dict[str, dict[str, Any]]:
    """One device of every built-in type: disk, null disk, a tape drive in a
    changer's library (small cartridges, so random WRITEs fill one and reach
    end of medium), and a CD-ROM with an image; with ``backend``, pass-through
    devices in front of its disk and tape."""
    settings: dict[str, dict[str, Any]] = {
        "disk0": {"size": "16MiB"},
        "null1": {"size": "64MiB"},
        "cd0": {"path": "fuzz.iso"},
        "lib0": {"library": {
            "drives": ["tape0"], "slots": 4, "mail_slots": 1,
            "cartridges": [{"barcode": f"F0000{i}L8", "capacity": "4M"} for i in range(3)],
        }},
    }  # fmt: skip
    if backend:
        settings["ptdisk"] = {"backend": f"{backend}/1"}
        settings["pttape"] = {"backend": f"{backend}/2"}
    return {name: {"handler": handler, **settings.get(name, {})}
            for name, handler, _ in campaign_luns(backend).values()}  # fmt: skip


class Target:
    """The daemon under test: started, watched, restarted."""

    def __init__(self, workdir: Path, backend: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        luns = campaign_luns(backend)
        state = workdir / "state"
        state.mkdir(parents=True, exist_ok=True)
        (state / "fuzz.iso").write_bytes(bytes(range(256)) * 8 * 64)  # 64 sectors
        self.config = write_config(
            workdir, port=self.port, target=TARGET,
            devices=campaign_devices(backend),
            luns=[{"lun": lun, "device": name} for lun, (name, _, _) in luns.items()],
            iscsi={"login_timeout": 5, "pdu_timeout": 5},
            # ALUA on: REPORT / SET TPGS and the per-port check take fuzzed input too
            # (group "remote" has no portal here: its state flips nothing locally)
            target_extra={"port_groups": {
                "local": {"id": 1, "portals": [f"127.0.0.1:{self.port}"]},
                "remote": {"id": 2, "state": "standby"},
            }},
        )  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: RunningDaemon | None = None
        self._seen = 0
        self.log_archive = workdir / "daemon-all.log"

    def start(self) -> None:
        self.proc, self.info = start_daemon(
            self.config, host="127.0.0.1", port=self.port, target=TARGET
        )
        self._seen = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def new_log(self) -> str:
        """Log text written since the last call (archived in daemon-all.log)."""
        assert self.info is not None
        try:
            with self.info.stderr_path.open("rb") as f:
                f.seek(self._seen)
                raw = f.read()
        except OSError:
            return ""
        # only whole lines: a record being written is read next time
        cut = raw.rfind(b"\n") + 1
        self._seen += cut
        text = raw[:cut].decode(errors="replace")
        with self.log_archive.open("a") as archive:
            archive.write(text)
        return text

    def rss_kib(self) -> int:
        if self.proc is None:
            return 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.info is not None and self.alive():
            stop_daemon(self.proc, self.info)


def describe_answer(status: int, segment: bytes) -> str:
    """GOOD, or the status with the sense key/ASC/ASCQ (fixed or descriptor)."""
    if status == 0:
        return "GOOD"
    if status != 2:
        return f"status {status:#04x}"
    sense = Sense.decode(segment[2:])  # (after the segment's SenseLength)
    if sense is None:
        return "CHECK CONDITION without sense"
    return f"CHECK CONDITION {sense.key:x}/{sense.asc:02x}/{sense.ascq:02x}"


class Client:
    """One raw connection (blocking socket, drained without waiting)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.closed = False
        #: full feature phase: replies are framed and SCSI Responses tallied
        self.framing: tuple[bool, bool] | None = None
        self._rx = bytearray()
        #: ITT -> device, for the commands sent unmutated
        self.sent: dict[int, str] = {}
        self.answers: collections.Counter[str] = collections.Counter()

    def send(self, wire: bytes) -> bool:
        try:
            self.sock.sendall(wire)
        except OSError:
            self.closed = True
        return not self.closed

    def drain(self) -> None:
        """Read whatever the target has sent, without waiting (a timeout
        socket would wait despite MSG_DONTWAIT)."""
        self.sock.settimeout(0)
        try:
            while not self.closed:
                try:
                    got = self.sock.recv(1 << 20)
                except BlockingIOError:
                    return
                except OSError:
                    got = b""
                if not got:
                    self.closed = True
                elif self.framing is not None:
                    self._rx += got
                    self._tally()
        finally:
            self.sock.settimeout(2)

    def _tally(self) -> None:
        """Frame what arrived; count each SCSI Response to a command in ``sent``."""
        assert self.framing is not None
        hd, dd = self.framing
        rx = self._rx
        while len(rx) >= 48:
            length = int.from_bytes(rx[5:8], "big")
            data_at = 48 + rx[4] * 4 + (4 if hd else 0)
            end = data_at + ((length + 3) & ~3) + (4 if dd and length else 0)
            if len(rx) < end:
                return
            if rx[0] & 0x3F == 0x21:
                device = self.sent.pop(int.from_bytes(rx[16:20], "big"), None)
                if device is not None:
                    answer = describe_answer(rx[3], bytes(rx[data_at : data_at + length]))
                    self.answers[f"{device}: {answer}"] += 1
            del rx[:end]

    def recv_pdu(self, header_digest: bool = False, timeout: float = 2) -> bytes | None:
        """One whole reply PDU's header (None: closed or silent for ``timeout``)."""
        self.sock.settimeout(timeout)
        try:
            bhs = self._exact(48)
            length = int.from_bytes(bhs[5:8], "big")
            self._exact(bhs[4] * 4 + (4 if header_digest else 0) + ((length + 3) & ~3))
            return bhs
        except (OSError, EOFError):
            self.closed = True
            return None

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            got = self.sock.recv(n - len(buf))
            if not got:
                raise EOFError
            buf += got
        return bytes(buf)

    def close(self, reset: bool) -> None:
        if reset:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class Campaign:
    def __init__(
        self, workdir: Path, seed: int = 1, avoid_known: bool = False,
        backend: str | None = None, revive_backend: Callable[[], bool] | None = None,
    ) -> None:  # fmt: skip
        #: restarts the backend if it died (True then); checked with the daemon
        self.revive_backend = revive_backend
        #: steer clear of the known D1-D3 triggers (see Mutator.ffp_wire)
        self.avoid_known = avoid_known
        self.rng = random.Random(seed)
        self.luns = campaign_luns(backend)
        self.mutator = Mutator(self.rng, self.luns)
        self.target = Target(workdir, backend)
        self.figures = Figures()
        self._last_class = "no traceback"

    def run(
        self, pdus: int | None = None, seconds: float | None = None, progress: int = 0
    ) -> Figures:
        """Fuzz until ``pdus`` sent or ``seconds`` passed; a line of figures
        every ``progress`` PDUs (0: none)."""
        next_report = progress
        figures = self.figures
        target = self.target
        target.start()
        figures.rss_start_kib = target.rss_kib()
        start = time.monotonic()
        try:
            while True:
                elapsed = time.monotonic() - start
                if (pdus is not None and figures.pdus >= pdus) or (
                    seconds is not None and elapsed >= seconds
                ):
                    break
                self.one_connection()
                figures.connections += 1
                if figures.connections % 16 == 0 or not target.alive():
                    self.check()
                if progress and figures.pdus >= next_report:
                    next_report += progress
                    print(
                        f"  {figures.pdus:,} PDUs, {time.monotonic() - start:.0f}s, "
                        f"{figures.exits} exits, {figures.tracebacks} tracebacks, "
                        f"RSS {figures.rss_last_kib / 1024:.1f} MiB", flush=True,
                    )  # fmt: skip
        finally:
            figures.seconds = time.monotonic() - start
            self.check()
            target.stop()
            self.account(target.new_log())
        return figures

    def check(self) -> None:
        figures = self.figures
        target = self.target
        rss = target.rss_kib()
        if rss:
            figures.rss_last_kib = rss
            figures.rss_max_kib = max(figures.rss_max_kib, rss)
        self.account(target.new_log())
        if self.revive_backend is not None and self.revive_backend():
            figures.backend_restarts += 1
        if not target.alive():
            figures.exits += 1
            figures.classes[f"exit: {self._last_class}"] += 1
            target.start()
            figures.restarts += 1

    def account(self, text: str) -> list[str]:
        classes = classify(text)
        self.figures.tracebacks += len(classes)
        self.figures.classes.update(classes)
        if classes:
            self._last_class = classes[-1]
        return classes

    # -- one connection ----------------------------------------------------------------
    def one_connection(self) -> None:
        rng = self.rng
        try:
            client = Client(self.target.port)
        except OSError:
            time.sleep(0.05)
            return
        try:
            phase = rng.random()
            if phase < 0.25:
                self.prelogin(client)
            elif phase < 0.4:
                self.in_login(client)
            else:
                self.full_feature(client, scsi_only=phase >= 0.7)
        finally:
            client.close(reset=rng.random() < 0.3)
            self.figures.answers.update(client.answers)

    def _sent(self, client: Client, wire: bytes, count: int = 1) -> bool:
        ok = client.send(wire)
        if ok:
            self.figures.pdus += count
        return ok

    def prelogin(self, client: Client) -> None:
        rng, mut = self.rng, self.mutator
        for _ in range(rng.randrange(1, 6)):
            if rng.random() < 0.1:
                wire = rng.randbytes(rng.randrange(1, 200))
            else:
                wire = mut.mutated(mut.login(), False, False)
                if rng.random() < 0.2:
                    wire = wire[: rng.randrange(len(wire) + 1)]  # and then close mid-PDU
            if not self._sent(client, wire) or self._logged_in(client):
                return

    def _logged_in(self, client: Client) -> bool:
        """Drain replies; in avoid-known mode, wait for the Login Response and
        say whether it took us to full feature phase (where one more Login
        Request would be the known D3 trigger)."""
        if not self.avoid_known:
            client.drain()
            return client.closed
        bhs = client.recv_pdu(timeout=0.5)
        if bhs is None:
            return True
        return bhs[0] & 0x3F == 0x23 and bhs[36] == 0 and bhs[1] & 0x83 == 0x83

    def in_login(self, client: Client) -> None:
        rng, mut = self.rng, self.mutator
        isid = rng.getrandbits(40) | (0x80 << 40)
        first = P.LoginRequest(
            transit=False, csg=0, nsg=0, isid=isid, itt=1, cmdsn=1,
            data=encode_text([*login_keys(False, False), ("AuthMethod", "None")]),
        )  # fmt: skip
        if not self._sent(client, mut.valid(first, False, False)) or self._logged_in(client):
            return
        for i in range(rng.randrange(1, 8)):
            pdu = P.LoginRequest(
                transit=rng.random() < 0.5, cont=rng.random() < 0.3, csg=rng.choice([0, 1]),
                nsg=rng.choice([1, 3]), isid=isid, itt=1, cmdsn=1, expstatsn=i + 1,
                data=mut.text(),
            )  # fmt: skip
            wire = (
                mut.mutated(pdu, False, False)
                if rng.random() < 0.5
                else mut.valid(pdu, False, False)
            )
            if not self._sent(client, wire) or self._logged_in(client):
                return

    def full_feature(self, client: Client, scsi_only: bool = False) -> None:
        """Log in, then send batches of PDUs. ``scsi_only``: only well-formed SCSI
        commands with CDBs fuzzed per device type (a stream of mutated PDUs
        ends most connections before a command reaches a device)."""
        rng, mut = self.rng, self.mutator
        hd, dd = rng.random() < 0.3, rng.random() < 0.3
        login = P.LoginRequest(
            transit=True, csg=1, nsg=3, isid=rng.getrandbits(40) | (0x80 << 40), itt=1,
            cmdsn=1, data=encode_text(login_keys(hd, dd)),
        )  # fmt: skip
        if not self._sent(client, mut.valid(login, False, False)):
            return
        reply = client.recv_pdu()
        if reply is None or reply[0] & 0x3F != 0x23 or reply[36] != 0:
            return
        statsn = int.from_bytes(reply[24:28], "big") + 1
        client.framing = (hd, dd)
        cmdsn = 1
        for _ in range(rng.randrange(5, 120)):
            batch = []
            for _ in range(rng.randrange(1, 9)):
                pdu = mut.typed_command(cmdsn, statsn) if scsi_only else mut.ffp(cmdsn, statsn)
                if isinstance(pdu, P.ScsiCommand | P.NopOut | P.TextRequest) and not getattr(
                    pdu, "immediate", False
                ):
                    cmdsn = (cmdsn + 1) & 0xFFFFFFFF
                mutate = not scsi_only and rng.random() < 0.6
                if isinstance(pdu, P.ScsiCommand) and not mutate:
                    number = pdu.lun >> 48 if not pdu.lun & ((1 << 48) - 1) else -1
                    name = self.luns.get(number, (f"lun{pdu.lun:#x}",))[0]
                    client.sent[pdu.itt] = name
                batch.append(mut.ffp_wire(pdu, hd, dd, mutate, self.avoid_known))
            if not self._sent(client, b"".join(batch), len(batch)):
                return
            client.drain()
            if client.closed:
                return
        if rng.random() < 0.3:
            logout = P.LogoutRequest(immediate=True, itt=2, cmdsn=cmdsn, expstatsn=statsn)
            self._sent(client, mut.valid(logout, hd, dd))
            client.recv_pdu(hd, timeout=0.2)
