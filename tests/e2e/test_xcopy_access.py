"""EXTENDED COPY may only name LUs the issuing initiator can reach (CVE-2020-28374).

LIO let any initiator copy from or into any LU of the target by naming its
designator in an EXTENDED COPY. Here two initiators share a daemon: the admin
sees disk0 and a "secret" LU; the reader sees its own scratch LU and disk1
read-only. The reader knows every designator (they are not secrets) and still
must neither read the secret LU into its scratch, nor write into it, nor into
the LU it may only read; a copy between its own LUs works.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import read10, sense_triplet, write10
from tests.daemon import running_daemon_async

TARGET = "iqn.2026-11.org.pyscst:xcopy"
ADMIN = "iqn.2026-11.org.example:admin"
READER = "iqn.2026-11.org.example:reader"
BS = 512

DEVICES = {
    "disk0": {"handler": "vdisk_fileio", "size": "4MiB"},
    "secret": {"handler": "vdisk_fileio", "size": "4MiB"},
    "scratch": {"handler": "vdisk_fileio", "size": "4MiB"},
    "disk1": {"handler": "vdisk_fileio", "size": "4MiB"},
}
GROUPS = {
    "admins": {
        "initiators": [ADMIN],
        "luns": [{"lun": 0, "device": "disk0"}, {"lun": 1, "device": "secret"},
                 {"lun": 2, "device": "disk1"}],
    },
    "readers": {
        "initiators": [READER],
        "luns": [{"lun": 0, "device": "scratch"},
                 {"lun": 3, "device": "disk1", "read_only": True}],
    },
}


def target_descriptor(designation: bytes) -> bytes:
    desc = bytearray(32)
    desc[0] = 0xE4
    desc[4 : 4 + len(designation)] = designation
    desc[29:32] = BS.to_bytes(3, "big")
    return bytes(desc)


def xcopy(targets: list[bytes], src: int, dst: int, blocks: int, list_id: int = 1) -> bytes:
    tds = b"".join(target_descriptor(t) for t in targets)
    seg = struct.pack(">BBHHH2xHQQ", 0x02, 0, 0x18, src, dst, blocks, 0, 0)
    header = struct.pack(">BBHIII", list_id, 0, len(tds), 0, len(seg), 0)
    return header + tds + seg


def xcopy_cdb(length: int) -> bytes:
    return bytes((0x83, 0)) + bytes(8) + length.to_bytes(4, "big") + bytes(2)


async def naa_of(ini: Initiator, lun: int) -> bytes:
    r = await ini.execute(lun, bytes((0x12, 1, 0x83, 0, 255, 0)), read_length=255)
    assert r.status == 0 and r.data[5] & 0x0F == 3  # the first designator: NAA
    return bytes(r.data[4 : 8 + r.data[7]])


def field_pointer(sense: bytes) -> tuple[int, int]:
    """(SKSV/C-D byte, FIELD POINTER) of fixed-format sense."""
    return sense[15], struct.unpack_from(">H", sense, 16)[0]


async def test_xcopy_cannot_reach_luns_the_initiator_cannot(tmp_path: Path) -> None:
    async with running_daemon_async(
        tmp_path, target=TARGET, devices=DEVICES, luns=(), groups=GROUPS
    ) as d:
        async with await Initiator.connect(
            d.host, d.port, initiator_name=ADMIN, target_name=TARGET
        ) as admin, await Initiator.connect(
            d.host, d.port, initiator_name=READER, target_name=TARGET
        ) as reader:
            for ini in (admin, reader):  # the power-on unit attentions
                for lun in ((0, 1, 2) if ini is admin else (0, 3)):
                    await ini.execute(lun, bytes(6))
            secret = await naa_of(admin, 1)
            disk1 = await naa_of(admin, 2)
            assert await naa_of(reader, 3) == disk1
            scratch = await naa_of(reader, 0)
            r = await admin.execute(1, write10(0, 8), data_out=b"S" * 8 * BS)
            assert r.status == 0
            r = await reader.execute(0, write10(0, 8), data_out=b"r" * 8 * BS)
            assert r.status == 0

            # copy FROM the masked LU into the reader's own: unreachable
            params = xcopy([secret, scratch], 0, 1, 8)
            r = await reader.execute(0, xcopy_cdb(len(params)), data_out=params)
            assert r.status == 2 and sense_triplet(r.sense) == (0xA, 0x0D, 0x02)
            assert field_pointer(r.sense) == (0x80, 16)  # target descriptor 0
            r = await reader.execute(0, read10(0, 8), read_length=8 * BS)
            assert r.data == b"r" * 8 * BS  # nothing of the secret arrived

            # copy INTO the masked LU: unreachable, and it stays untouched
            params = xcopy([scratch, secret], 0, 1, 8)
            r = await reader.execute(0, xcopy_cdb(len(params)), data_out=params)
            assert r.status == 2 and sense_triplet(r.sense) == (0xA, 0x0D, 0x02)
            assert field_pointer(r.sense) == (0x80, 48)  # target descriptor 1
            r = await admin.execute(1, read10(0, 8), read_length=8 * BS)
            assert r.data == b"S" * 8 * BS

            # into an LU it sees read-only: DATA PROTECT, nothing written
            params = xcopy([scratch, disk1], 0, 1, 8)
            r = await reader.execute(0, xcopy_cdb(len(params)), data_out=params)
            assert r.status == 2 and sense_triplet(r.sense) == (0x7, 0x27, 0x00)
            r = await admin.execute(2, read10(0, 8), read_length=8 * BS)
            assert r.data == bytes(8 * BS)

            # the admin may copy from the secret LU into disk1 (it sees both)
            params = xcopy([secret, disk1], 0, 1, 8)
            r = await admin.execute(1, xcopy_cdb(len(params)), data_out=params)
            assert r.status == 0
            r = await admin.execute(2, read10(0, 8), read_length=8 * BS)
            assert r.data == b"S" * 8 * BS

            # and the reader from disk1 (read-only for it) into its own LU
            params = xcopy([disk1, scratch], 0, 1, 8, list_id=7)
            r = await reader.execute(0, xcopy_cdb(len(params)), data_out=params)
            assert r.status == 0
            r = await reader.execute(0, read10(0, 8), read_length=8 * BS)
            assert r.data == b"S" * 8 * BS
            rcr = bytes((0x84, 0x00, 7)) + bytes(7) + (64).to_bytes(4, "big") + bytes(2)
            r = await reader.execute(0, rcr, read_length=64)
            assert r.status == 0
            assert r.data[4] == 0x01 and struct.unpack_from(">H", r.data, 5)[0] == 1
            assert r.data[7] == 0 and struct.unpack_from(">I", r.data, 8)[0] == 8 * BS
