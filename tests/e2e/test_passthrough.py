"""A tgt disk exported through a ``passthrough`` device of the real daemon.

qemu-img round trip through pyscst to tgt; the backend tgtd killed mid-I/O
and started again (retryable errors, then service, nothing acknowledged
lost, pyscst never restarted); a backend unreachable when pyscst starts;
CHAP toward the backend, right and wrong. (libiscsi's full run through
pyscst to tgt: tests/conformance/test_passthrough_libiscsi.py.)
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import TUR, sense_triplet
from tests.conformance.test_qemu_img import _convert, _digest, _qemu_img_with_iscsi
from tests.daemon import RunningDaemon, running_daemon
from tests.helpers_tgt import TgtDaemon, tgtd_daemon, tgtd_unavailable, wait_until_ready

pytestmark = pytest.mark.skipif(tgtd_unavailable() is not None, reason=str(tgtd_unavailable()))

BS = 512
#: what an initiator of pyscst may see while the backend is away: retry it
RETRYABLE = {(0x0B, 0x08, 0x00), (0x02, 0x04, 0x01), (0x06, 0x29, 0x00), (0x06, 0x29, 0x01),
             (0x06, 0x29, 0x07), (0x0B, 0x4B, 0x00)}  # fmt: skip


def _devices(url: str, **extra: Any) -> dict[str, dict[str, Any]]:
    return {"pt": {"handler": "passthrough", "backend": url, **extra}}


LUNS = ({"lun": 0, "device": "pt"},)


def write16(lba: int, n: int = 1) -> bytes:
    return bytes((0x8A, 0)) + lba.to_bytes(8, "big") + n.to_bytes(4, "big") + bytes(2)


def read16(lba: int, n: int = 1) -> bytes:
    return bytes((0x88, 0)) + lba.to_bytes(8, "big") + n.to_bytes(4, "big") + bytes(2)


def _until_ready(daemon: RunningDaemon) -> list[tuple[int, int, int]]:
    return wait_until_ready(daemon.host, daemon.port, daemon.target)


def test_qemu_img_round_trip_through_passthrough(tmp_path: Path) -> None:
    tool = _qemu_img_with_iscsi()
    if tool is None:
        pytest.skip("qemu-img with iscsi support is absent")
    size = 32 << 20
    source = tmp_path / "source.img"
    source.write_bytes(os.urandom(size))
    back = tmp_path / "back.img"
    with tgtd_daemon(tmp_path, size=size) as tgt, running_daemon(
        tmp_path / "d", devices=_devices(tgt.url), luns=LUNS
    ) as daemon:
        _until_ready(daemon)
        _convert(tool, str(source), daemon.url(0), existing_target=True)
        _convert(tool, daemon.url(0), str(back), existing_target=False)
        backing = tgt.backing
    assert _digest(back) == _digest(source)
    assert _digest(backing) == _digest(source)  # it went all the way to tgt's file


async def _io_through_backend_restart(daemon: RunningDaemon, tgt: TgtDaemon) -> dict[str, Any]:
    """Write numbered blocks while tgtd is killed and restarted; retry on the
    retryable senses; then read back every block that was acknowledged."""
    acked: dict[int, bytes] = {}
    senses: list[tuple[int, int, int]] = []
    others: list[str] = []
    killed = trio.Event()
    restarted = trio.Event()
    rng = random.Random(7)

    async def writer(ini: Initiator) -> None:
        lba = 0
        while len(acked) < 600 or not restarted.is_set():
            block = hashlib.sha256(f"{lba}:{rng.random()}".encode()).digest() * (BS // 32)
            r = await ini.execute(0, write16(lba), data_out=block)
            if r.status == 0:
                acked[lba] = block
                lba = (lba + 1) % 4096
            elif r.status == 2 and sense_triplet(r.sense) in RETRYABLE:
                senses.append(sense_triplet(r.sense))
                await trio.sleep(0.05)
            else:
                others.append(f"status {r.status:#x} sense {r.sense.hex()}")
                return
            if len(acked) == 200 and not killed.is_set():
                killed.set()

    async def saboteur() -> None:
        await killed.wait()
        await trio.to_thread.run_sync(tgt.kill)
        await trio.sleep(2.0)
        await trio.to_thread.run_sync(tgt.start)
        restarted.set()

    with trio.fail_after(120):
        async with await Initiator.connect(daemon.host, daemon.port,
                                           target_name=daemon.target) as ini:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(saboteur)
                await writer(ini)
                await restarted.wait()
            mismatched = []
            for lba, block in acked.items():
                while True:
                    r = await ini.execute(0, read16(lba), read_length=BS)
                    if r.status == 0:
                        break
                    assert sense_triplet(r.sense) in RETRYABLE, r.sense.hex()
                    await trio.sleep(0.05)
                if r.data != block:
                    mismatched.append(lba)
    return {"acked": len(acked), "senses": senses, "others": others, "mismatched": mismatched}


def test_backend_killed_mid_io_and_restarted(tmp_path: Path) -> None:
    with tgtd_daemon(tmp_path) as tgt, running_daemon(
        tmp_path / "d", devices=_devices(tgt.url, backend_timeout=5), luns=LUNS
    ) as daemon:
        _until_ready(daemon)
        outcome = trio.run(_io_through_backend_restart, daemon, tgt)
        log = daemon.stderr_text()
        os.kill(daemon.pid, 0)  # the same pyscst process served throughout
    assert outcome["others"] == [], outcome["others"]
    assert outcome["acked"] >= 600
    assert outcome["senses"], "the backend went away and nobody noticed"
    assert outcome["mismatched"] == []
    assert "connected again" in log
    assert log.count("starting pyscst") == 1


def test_backend_unreachable_at_start_then_served(tmp_path: Path) -> None:
    with tgtd_daemon(tmp_path, start=False) as tgt, running_daemon(
        tmp_path / "d", devices=_devices(tgt.url), luns=LUNS
    ) as daemon:

        async def not_ready() -> tuple[int, int, int]:
            async with await Initiator.connect(daemon.host, daemon.port,
                                               target_name=daemon.target) as ini:
                await ini.execute(0, TUR)  # our power-on UA
                r = await ini.execute(0, TUR)
                return sense_triplet(r.sense)

        assert trio.run(not_ready) == (0x02, 0x04, 0x01)
        tgt.start()
        _until_ready(daemon)
        assert "cannot" not in daemon.stderr_text().split("connected")[-1]


def test_backend_chap_right_and_wrong(tmp_path: Path) -> None:
    secret = "backend-secret-77"
    with tgtd_daemon(tmp_path, chap=("pyscst", secret)) as tgt:
        good = _devices(tgt.url, backend_chap={"user": "pyscst", "secret": secret})
        with running_daemon(tmp_path / "a", devices=good, luns=LUNS) as daemon:
            _until_ready(daemon)
        bad = _devices(tgt.url, backend_chap={"user": "pyscst", "secret": "not-the-secret-1"})
        with running_daemon(tmp_path / "b", devices=bad, luns=LUNS) as daemon:
            trio.run(trio.sleep, 1.5)
            log = daemon.stderr_text()
    assert "authentication failed (check backend_chap)" in log
    assert secret not in log and "not-the-secret-1" not in log


def _tape_cdb(op: int, b1: int = 0, length: int = 0) -> bytes:
    return bytes((op, b1)) + length.to_bytes(3, "big") + b"\0"


TapeAnswer = tuple[int, bytes, bytes, bool, int]


async def _tape_session(host: str, port: int, target: str, lun: int) -> list[TapeAnswer]:
    """INQUIRY, then records and a filemark written, rewound and read back
    (READ(6), variable length, SILI): every answer as the initiator got it."""
    records = [bytes([i]) * (100 + 37 * i) for i in range(1, 4)]
    script: list[tuple[bytes, bytes, int]] = [(bytes((0x12, 0, 0, 0, 96, 0)), b"", 96)]
    script += [(_tape_cdb(0x0A, 0, len(r)), r, 0) for r in records]  # WRITE(6)
    script += [(_tape_cdb(0x10, 0, 1), b"", 0), (_tape_cdb(0x01), b"", 0)]  # WFM, REWIND
    script += [(_tape_cdb(0x08, 0x02, 4096), b"", 4096)] * 4  # READ(6) x4: 3 records, a mark
    answers: list[TapeAnswer] = []
    async with await Initiator.connect(host, port, target_name=target) as ini:
        for _ in range(6):  # REWIND until the UAs (power on, medium loaded) are spent
            if (await ini.execute(lun, _tape_cdb(0x01))).status == 0:
                break
        for cdb, data_out, read_length in script:
            r = await ini.execute(lun, cdb, data_out=data_out, read_length=read_length)
            answers.append((r.status, bytes(r.sense), bytes(r.data), r.residual_underflow,
                            r.residual_count))  # fmt: skip
    return answers


async def _changer_session(host: str, port: int, target: str, lun: int) -> list[TapeAnswer]:
    """INQUIRY, READ ELEMENT STATUS (all, then storage only, with and without
    DVCID), MODE SENSE of the Element Address Assignment page, a MOVE MEDIUM
    from an empty slot (refused), INITIALIZE ELEMENT STATUS."""
    script = [
        (bytes((0x12, 0, 0, 0, 96, 0)), 96),
        (bytes((0xB8, 0x10, 0, 0, 0, 0xFF, 0, 0, 4, 0, 0, 0)), 1024),
        (bytes((0xB8, 0x12, 0x03, 0xE8, 0, 2, 0x01, 0, 4, 0, 0, 0)), 1024),
        (bytes((0x1A, 0x08, 0x1D, 0, 255, 0)), 255),
        (bytes((0xA5, 0, 0, 1, 0x03, 0xE8, 0x01, 0xF4, 0, 0, 0, 0)), 0),
        (bytes((0x07, 0, 0, 0, 0, 0)), 0),
    ]
    answers: list[TapeAnswer] = []
    async with await Initiator.connect(host, port, target_name=target) as ini:
        for _ in range(6):
            if (await ini.execute(lun, TUR)).status == 0:
                break
        for cdb, read_length in script:
            r = await ini.execute(lun, cdb, read_length=read_length)
            answers.append((r.status, bytes(r.sense), bytes(r.data), r.residual_underflow,
                            r.residual_count))  # fmt: skip
    return answers


def test_a_tgt_changer_passed_through(tmp_path: Path) -> None:
    """A medium changer (peripheral type 8) answers through pyscst exactly as
    tgt does directly, element status and refusals alike."""
    with tgtd_daemon(tmp_path, tape=True, changer=True) as tgt:
        url = tgt.url.rsplit("/", 1)[0] + "/3"
        direct = trio.run(_changer_session, "127.0.0.1", tgt.port, tgt.target.target_name, 3)
        with running_daemon(tmp_path / "d", devices=_devices(url), luns=LUNS) as daemon:
            trio.run(_until_tape_ready, daemon)
            through = trio.run(_changer_session, daemon.host, daemon.port, daemon.target, 0)
    assert through[0][2][0] & 0x1F == 0x08  # INQUIRY: a medium changer
    assert through[1][0] == 0 and len(through[1][2]) > 8  # element status read
    assert through[4][0] == 2  # MOVE MEDIUM from an empty slot: refused, as by tgt
    assert through == direct


def test_a_tgt_tape_drive_passed_through(tmp_path: Path) -> None:
    """Peripheral type, INQUIRY and the SSC command set are the backend's, and
    every answer (status, sense, data, residual) is what tgt itself gives:
    the same session against tgt directly and through pyscst."""
    with tgtd_daemon(tmp_path, tape=True) as tgt:
        url = tgt.url.rsplit("/", 1)[0] + "/2"
        direct = trio.run(_tape_session, "127.0.0.1", tgt.port, tgt.target.target_name, 2)
        with running_daemon(tmp_path / "d", devices=_devices(url), luns=LUNS) as daemon:
            trio.run(_until_tape_ready, daemon)
            through = trio.run(_tape_session, daemon.host, daemon.port, daemon.target, 0)
    assert through[0][2][0] & 0x1F == 0x01  # INQUIRY: a sequential-access device
    assert through == direct
    reads = through[-4:]
    records = [b"\1" * 137, b"\2" * 174, b"\3" * 211]
    assert [r[2][: len(b)] for r, b in zip(reads, records, strict=False)] == records
    assert reads[3][0] == 2 and reads[3][1][2] & 0x80  # the filemark: FILEMARK bit


async def _until_tape_ready(daemon: RunningDaemon, luns: tuple[int, ...] = (0,)) -> None:
    """Until INQUIRY on each of ``luns`` shows the backend's device (a tape
    drive with no tape, or a changer, may stay NOT READY: TEST UNIT READY
    cannot tell)."""
    with trio.fail_after(20):
        for lun in luns:
            while True:
                async with await Initiator.connect(daemon.host, daemon.port,
                                                   target_name=daemon.target) as ini:
                    r = await ini.execute(lun, bytes((0x12, 0, 0, 0, 96, 0)), read_length=96)
                    if r.status == 0 and r.data[0] >> 5 == 0:  # qualifier 000b: connected
                        break
                await trio.sleep(0.2)


async def _admin_adds_passthrough(daemon: RunningDaemon, url: str) -> dict[str, Any]:
    from tests.e2e.test_admin_cli import admin_for

    admin = admin_for(daemon)
    await admin.ok("device", "add", "pt1", "--handler", "passthrough", "--backend", url)
    stderr = await admin.fails(1, "device", "add", "pt2", "--handler", "passthrough",
                               "--backend", "iscsi://nowhere/iqn.x:y")  # fmt: skip
    assert "devices.pt2.backend" in stderr
    await admin.ok("lun", "add", daemon.target, "1", "pt1")
    with trio.fail_after(20):
        while True:
            shown: dict[str, Any] = await admin.ok("device", "show", "pt1")
            if shown.get("backend_state", "").endswith(" up"):
                return shown
            await trio.sleep(0.2)


def test_admin_adds_a_passthrough_device_live(tmp_path: Path) -> None:
    with tgtd_daemon(tmp_path) as tgt, running_daemon(
        tmp_path / "d", devices=_devices(tgt.url), luns=LUNS
    ) as daemon:
        shown = trio.run(_admin_adds_passthrough, daemon, tgt.url)
    assert shown["handler"] == "passthrough" and shown["backend"] == tgt.url
    assert shown["state"] == "online"


async def test_a_crash_injected_into_a_passthrough_device_is_contained(tmp_path: Path) -> None:
    """crash_device on a passed-through LUN: the in-flight command ends retryable,
    every nexus hears 29/04, the device actor (and its backend session) come
    back under their supervisor, and the data is still the backend's."""
    from tests.daemon import in_process_daemon
    from tests.e2e.test_faults import op

    with tgtd_daemon(tmp_path) as tgt:
        tgt.backing.write_bytes(b"\x5a" * 512 + bytes(tgt.size - 512))
        body = f"""
[devices.pt]
handler = "passthrough"
backend = "{tgt.url}"
[targets."iqn.2026-11.org.pyscst:pt"]
portals = ["127.0.0.1:@PORT@"]
luns = [{{ lun = 0, device = "pt" }}]
"""
        async with in_process_daemon(tmp_path / "d", body) as (daemon, port):
            await trio.to_thread.run_sync(wait_until_ready, "127.0.0.1", port,
                                          "iqn.2026-11.org.pyscst:pt")  # fmt: skip
            async with await Initiator.connect("127.0.0.1", port,
                                               target_name="iqn.2026-11.org.pyscst:pt") as ini:
                await ini.execute(0, TUR)  # power-on UA
                await op(daemon, "fault.add", {"action": "crash_device", "lba": [7],
                                               "times": 1})  # fmt: skip
                r = await ini.execute(0, read16(7), read_length=BS)
                assert r.status == 2 and sense_triplet(r.sense)[0] == 0x0B  # ABORTED COMMAND
                r = await ini.execute(0, TUR)
                assert sense_triplet(r.sense) == (0x06, 0x29, 0x04)  # DEVICE INTERNAL RESET
                with trio.fail_after(20):  # NOT READY until restarted and reconnected
                    while (await ini.execute(0, TUR)).status != 0:
                        await trio.sleep(0.1)
                r = await ini.execute(0, read16(0), read_length=BS)
                assert r.status == 0 and r.data == b"\x5a" * 512
                unit = daemon.device_unit("pt")
                assert unit is not None and unit.crashes == 1 and unit.state.value == "online"
