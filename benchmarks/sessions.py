"""Idle iSCSI sessions for the memory measurement, with a minimal raw login.

"RSS with 100 logged-in sessions" needs sessions that are fully logged in and
then do nothing; a few dozen lines of Login PDUs (RFC 7143 11.12/11.13) do
that against any target without depending on the project's own initiator, so
both targets are measured by the same client. Target NOP-In pings are answered
so sessions stay alive while we sample.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator

import attrs

BHS_LEN = 48
OP_NOP_OUT = 0x00
OP_LOGIN_REQ = 0x03
OP_NOP_IN = 0x20
OP_LOGIN_RSP = 0x23
RESERVED_TAG = 0xFFFFFFFF
STAGE_SECURITY = 0
STAGE_OPERATIONAL = 1
STAGE_FULL_FEATURE = 3
MAX_LOGIN_STEPS = 8


class LoginError(RuntimeError):
    """The target refused the login or answered something unexpected."""


@attrs.frozen
class LoginResponse:
    """The fields of a Login Response the login loop acts on."""

    transit: bool
    csg: int
    nsg: int
    tsih: int
    stat_sn: int
    status_class: int
    status_detail: int
    keys: dict[str, str]


def encode_keys(pairs: dict[str, str]) -> bytes:
    """key=value\\0 ... text, as carried in Login and Text PDUs."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs.items())


def decode_keys(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in data.split(b"\0"):
        if item:
            key, _, value = item.decode(errors="replace").partition("=")
            out[key] = value
    return out


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def login_request(
    *,
    isid: bytes,
    csg: int,
    nsg: int,
    transit: bool,
    itt: int,
    cmd_sn: int,
    exp_stat_sn: int,
    keys: dict[str, str],
) -> bytes:
    """One Login Request PDU (immediate, no digests, no AHS)."""
    data = encode_keys(keys)
    flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
    bhs = struct.pack(
        ">BBBBB3s6sHIHHII16x",
        0x40 | OP_LOGIN_REQ,
        flags,
        0,  # version max
        0,  # version min
        0,  # total AHS length
        len(data).to_bytes(3, "big"),
        isid,
        0,  # TSIH: new session
        itt,
        0,  # CID
        0,
        cmd_sn,
        exp_stat_sn,
    )
    return bhs + _pad4(data)


def parse_login_response(bhs: bytes, data: bytes) -> LoginResponse:
    if bhs[0] & 0x3F != OP_LOGIN_RSP:
        raise LoginError(f"expected Login Response, got opcode {bhs[0] & 0x3F:#x}")
    flags = bhs[1]
    return LoginResponse(
        transit=bool(flags & 0x80),
        csg=(flags >> 2) & 3,
        nsg=flags & 3,
        tsih=int.from_bytes(bhs[14:16], "big"),
        stat_sn=int.from_bytes(bhs[24:28], "big"),
        status_class=bhs[36],
        status_detail=bhs[37],
        keys=decode_keys(data),
    )


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise LoginError("connection closed by target")
        buf += chunk
    return bytes(buf)


def recv_pdu(sock: socket.socket) -> tuple[bytes, bytes]:
    """(BHS, data segment without padding); AHS is skipped."""
    bhs = _recv_exact(sock, BHS_LEN)
    ahs_len = bhs[4] * 4
    data_len = int.from_bytes(bhs[5:8], "big")
    rest = _recv_exact(sock, ahs_len + data_len + (-data_len % 4))
    return bhs, rest[ahs_len : ahs_len + data_len]


@attrs.define
class Session:
    """A logged-in, idle session; we own its socket."""

    sock: socket.socket
    tsih: int
    cmd_sn: int
    exp_stat_sn: int


def login(
    host: str, port: int, target: str, initiator: str, isid: bytes, timeout: float = 10.0
) -> Session:
    """Log in a Normal session: security stage (AuthMethod=None), operational, FFP."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        return _login_on(sock, target, initiator, isid)
    except BaseException:
        sock.close()
        raise


def _login_on(sock: socket.socket, target: str, initiator: str, isid: bytes) -> Session:
    cmd_sn, exp_stat_sn = 1, 0
    stage_keys = {
        STAGE_SECURITY: {
            "InitiatorName": initiator,
            "TargetName": target,
            "SessionType": "Normal",
            "AuthMethod": "None",
        },
        STAGE_OPERATIONAL: {
            "HeaderDigest": "None",
            "DataDigest": "None",
            "MaxRecvDataSegmentLength": "262144",
            "InitialR2T": "Yes",
            "ImmediateData": "Yes",
        },
    }
    csg = STAGE_SECURITY
    sent_keys_for: set[int] = set()
    for _ in range(MAX_LOGIN_STEPS):
        nsg = STAGE_OPERATIONAL if csg == STAGE_SECURITY else STAGE_FULL_FEATURE
        keys = stage_keys[csg] if csg not in sent_keys_for else {}
        sent_keys_for.add(csg)
        sock.sendall(login_request(
            isid=isid, csg=csg, nsg=nsg, transit=True, itt=1, cmd_sn=cmd_sn,
            exp_stat_sn=exp_stat_sn, keys=keys,
        ))  # fmt: skip
        rsp = parse_login_response(*recv_pdu(sock))
        if rsp.status_class != 0:
            raise LoginError(
                f"login rejected: class {rsp.status_class} detail {rsp.status_detail}"
            )
        exp_stat_sn = (rsp.stat_sn + 1) & 0xFFFFFFFF
        if not rsp.transit:
            continue  # target wants another exchange in this stage
        if rsp.nsg == STAGE_FULL_FEATURE:
            sock.settimeout(None)
            return Session(sock, rsp.tsih, cmd_sn, exp_stat_sn)
        csg = rsp.nsg
    raise LoginError(f"login did not reach full feature phase in {MAX_LOGIN_STEPS} steps")


def nop_out_reply(session: Session, bhs: bytes) -> bytes | None:
    """The NOP-Out answering a target's NOP-In ping, or None when it wants none."""
    ttt = int.from_bytes(bhs[20:24], "big")
    if ttt == RESERVED_TAG:
        return None
    lun = bhs[8:16]
    return struct.pack(
        ">BBH4x8sIIII16x",
        0x40 | OP_NOP_OUT,
        0x80,
        0,
        lun,
        RESERVED_TAG,
        ttt,
        session.cmd_sn,
        session.exp_stat_sn,
    )


class IdleSessions:
    """N idle sessions held open; a thread answers NOP-In pings until closed."""

    def __init__(self, sessions: list[Session]) -> None:
        self.sessions = sessions
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            for s in self.sessions:
                s.sock.setblocking(True)
                s.sock.settimeout(5.0)
                sel.register(s.sock, selectors.EVENT_READ, s)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    session: Session = key.data
                    try:
                        bhs, _data = recv_pdu(session.sock)
                    except (OSError, LoginError):
                        sel.unregister(session.sock)
                        self.dropped += 1
                        continue
                    session.exp_stat_sn = (int.from_bytes(bhs[24:28], "big") + 1) & 0xFFFFFFFF
                    if bhs[0] & 0x3F == OP_NOP_IN:
                        reply = nop_out_reply(session, bhs)
                        if reply is not None:
                            with contextlib.suppress(OSError):
                                session.sock.sendall(reply)

    def alive(self) -> int:
        """Sessions the target has not closed (only the serving thread counts drops)."""
        return len(self.sessions) - self.dropped

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self.sessions:
            s.sock.close()


@contextlib.contextmanager
def idle_sessions(
    host: str, port: int, target: str, count: int, deadline_s: float = 60.0
) -> Iterator[IdleSessions]:
    """Log in `count` sessions (distinct ISIDs, one initiator) and hold them."""
    sessions: list[Session] = []
    deadline = time.monotonic() + deadline_s
    try:
        for i in range(count):
            if time.monotonic() > deadline:
                raise LoginError(f"only {i} of {count} sessions logged in within {deadline_s}s")
            isid = bytes((0x80, 0x00, 0x5C, 0x57)) + i.to_bytes(2, "big")
            sessions.append(
                login(host, port, target, "iqn.2026-11.org.pyscst:bench-idle", isid)
            )
    except BaseException:
        for s in sessions:
            s.sock.close()
        raise
    held = IdleSessions(sessions)
    try:
        yield held
    finally:
        held.close()
