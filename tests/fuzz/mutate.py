"""PDU mutation for the fuzz campaign: valid PDUs, then bent out of shape.

Sans-I/O and seeded: a :class:`Mutator` builds a PDU an initiator could
legally send at this point of a connection (a Login Request before and during
login; SCSI commands, Data-Out, NOP-Out, Text, TMF, Logout, SNACK in full
feature phase) and mutates it the way hostile input tends to break targets:
header bytes flipped or set, opcode and flag bytes replaced, DataSegmentLength
and TotalAHSLength huge or inconsistent with the bytes that follow, text keys
multiplied, oversized, malformed or not UTF-8, data segments cut or extended.
Framing adds CRC32C digests when the connection negotiated them, computed over
the mutated bytes (so the mutation reaches the parser behind the digest check),
and occasionally wrong.
"""

from __future__ import annotations

import random
import struct

from pyscst.devices.disk_table import SBC_TABLE
from pyscst.devices.mmc import MMC_TABLE
from pyscst.devices.smc import SMC_TABLE
from pyscst.devices.ssc import SSC_TABLE
from pyscst.scsi.cdb import OpSpec, OpTable
from pyscst.scsi.command import DataDirection
from pyscst.transports.iscsi import pdu_types as P
from pyscst.transports.iscsi.digest import digest_bytes
from pyscst.transports.iscsi.pdu_codec import encode_pdu
from pyscst.transports.iscsi.textkeys import encode_text

TARGET = "iqn.2026-11.org.pyscst:fuzz"
INITIATOR = "iqn.2026-11.org.pyscst:fuzzer"

#: CDBs worth sending (and mutating): TUR, INQUIRY, READ/WRITE 10/16, SYNC CACHE,
#: REPORT LUNS, MODE SENSE, READ CAPACITY 16, UNMAP, WRITE SAME, PR IN/OUT
CDBS = [
    bytes(6),
    bytes([0x12, 0, 0, 0, 96, 0]),
    bytes([0x12, 1, 0x83, 0, 255, 0]),
    struct.pack(">BBIBHB", 0x28, 0, 0, 0, 8, 0),
    struct.pack(">BBIBHB", 0x2A, 0, 8, 0, 8, 0),
    struct.pack(">BBIBHB", 0x2A, 0x08, 16, 0, 1, 0),
    struct.pack(">BBQIBB", 0x88, 0, 0, 8, 0, 0),
    struct.pack(">BBQIBB", 0x8A, 0, 32, 8, 0, 0),
    bytes([0x35]) + bytes(9),
    bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),
    bytes([0x1A, 0, 0x3F, 0, 255, 0]),
    bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2),
    bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
    struct.pack(">BBIBHB", 0x41, 0, 0, 0, 4, 0),
    bytes([0x5E, 0, 0, 0, 0, 0, 0, 0x10, 0, 0]),
    bytes([0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
    bytes([0xA3, 0x2A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),  # REPORT TPGS, extended
    bytes([0xA4, 0x0A, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0]),  # SET TPGS, two descriptors
]

#: the CDBS that take data-out
WRITE_OPCODES = frozenset({0x2A, 0x8A, 0x35, 0x42, 0x41, 0x5F, 0x9E, 0xA4})

#: the campaign's LUN map (campaign.py builds the daemon's config from it): LUN ->
#: (device name, handler, the table its commands are drawn from)
TYPED_LUNS: dict[int, tuple[str, str, OpTable]] = {
    0: ("disk0", "vdisk_fileio", SBC_TABLE),
    1: ("null1", "vdisk_nullio", SBC_TABLE),
    2: ("tape0", "vtape", SSC_TABLE),
    3: ("lib0", "vchanger", SMC_TABLE),
    4: ("cd0", "vcdrom", MMC_TABLE),
}


#: LUNs 5 and 6 when a tgtd backend runs (campaign.py): ``passthrough`` devices in
#: front of tgt's disk and tape, so hostile CDBs are forwarded and tgt's answers
#: (a real, different implementation) come back through the backend link
PASSTHROUGH_LUNS: dict[int, tuple[str, str, OpTable]] = {
    5: ("ptdisk", "passthrough", SBC_TABLE),
    6: ("pttape", "passthrough", SSC_TABLE),
}


def table_cdb(rng: random.Random, spec: OpSpec) -> bytes:
    """A CDB for ``spec``: random bits inside its usage mask (so it passes the
    reserved-bit check and reaches the device type's own parser), now and then
    with bits outside the mask or the wrong length."""
    fields = bytearray(rng.randbytes(spec.cdb_length))
    if rng.random() < 0.9:
        for i, allowed in enumerate(spec.mask[: spec.cdb_length]):
            fields[i] &= allowed
        if rng.random() < 0.5:  # small lengths and addresses hit edge cases, not just 0s
            for i in range(1, spec.cdb_length):
                if fields[i] and rng.random() < 0.5:
                    fields[i] = rng.choice([0, 1, 0xFF]) & spec.mask[i]
    fields[0] = spec.opcode
    if spec.service_action is not None:
        fields[1] = (fields[1] & 0xE0) | spec.service_action
    if rng.random() < 0.02:
        return bytes(fields[: rng.randrange(1, spec.cdb_length)])
    return bytes(fields)


LOGIN_KEYS = [
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("MaxRecvDataSegmentLength", "262144"),
    ("MaxBurstLength", "262144"),
    ("FirstBurstLength", "65536"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxOutstandingR2T", "1"),
    ("MaxConnections", "1"),
    ("ErrorRecoveryLevel", "0"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "20"),
    ("AuthMethod", "None"),
    ("SendTargets", "All"),
]


def login_keys(header_digest: bool, data_digest: bool) -> list[tuple[str, str]]:
    """What a well-behaved initiator offers in one operational-stage login."""
    return [
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
        ("HeaderDigest", "CRC32C" if header_digest else "None"),
        ("DataDigest", "CRC32C" if data_digest else "None"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("FirstBurstLength", "65536"),
        ("MaxBurstLength", "262144"),
    ]


def frame(
    header: bytes, data: bytes, header_digest: bool, data_digest: bool, bad: bool = False
) -> bytes:
    """Wire bytes of a (possibly inconsistent) header and data segment."""
    out = [header]
    if header_digest:
        out.append(digest_bytes(header))
    if data:
        pad = bytes(-len(data) & 3)
        out.extend((data, pad))
        if data_digest:
            out.append(digest_bytes(data, pad))
    wire = b"".join(out)
    if bad and len(wire) > 48:
        i = 48 if header_digest else len(wire) - 1
        wire = wire[:i] + bytes([wire[i] ^ 0xFF]) + wire[i + 1 :]
    return wire


class Mutator:
    """Valid and mutated PDUs for one connection's phase."""

    def __init__(
        self, rng: random.Random, luns: dict[int, tuple[str, str, OpTable]] | None = None
    ) -> None:
        self.rng = rng
        #: the daemon's typed LUNs: LUN -> (device, handler, table)
        self.luns = TYPED_LUNS if luns is None else luns
        #: the big abusive segments, built once (they cost more than sending them)
        self._many_keys = {
            n: encode_text([(f"X-key{i}", "v") for i in range(n)]) for n in (100, 10000)
        }

    # -- valid PDUs ------------------------------------------------------------------
    def login(self, header_digest: bool = False, data_digest: bool = False) -> P.LoginRequest:
        rng = self.rng
        keys = login_keys(header_digest, data_digest)
        csg, nsg, transit = rng.choice([(1, 3, True), (0, 1, True), (0, 0, False), (1, 1, False)])
        if csg == 0:
            keys.append(("AuthMethod", "None"))
        return P.LoginRequest(
            transit=transit, csg=csg, nsg=nsg, isid=rng.getrandbits(48) | (0x80 << 40),
            itt=rng.getrandbits(32), cmdsn=1, data=encode_text(keys),
        )  # fmt: skip

    def ffp(self, cmdsn: int, expstatsn: int) -> P.Pdu:
        """A PDU a logged-in initiator might send next."""
        rng = self.rng
        itt = rng.getrandbits(16)
        kind = rng.randrange(10)
        if kind < 4:
            if rng.random() < 0.5:
                cdb = rng.choice(CDBS)
                lun = rng.choice([0, 0, 1, 1 << 48])
                write = cdb[0] in WRITE_OPCODES and rng.random() < 0.8
            else:  # any command of any device type's table, to a LUN of that type
                number, spec, cdb = self.typed_cdb()
                lun = number << 48  # the LUN field: single-level, peripheral addressing
                write = spec.direction is DataDirection.WRITE and rng.random() < 0.9
            edtl = rng.choice([0, 512, 4096, rng.randrange(0, 1 << 20)])
            data = bytes(rng.randrange(0, min(edtl, 65536) + 1)) if write and edtl else b""
            return P.ScsiCommand(
                immediate=rng.random() < 0.1, final=rng.random() < 0.9, read=not write,
                write=write, attr=rng.randrange(8), lun=lun, itt=itt,
                expected_data_transfer_length=edtl, cmdsn=cmdsn, expstatsn=expstatsn,
                cdb=cdb.ljust(16, b"\0")[:16], data=data,
            )  # fmt: skip
        if kind == 4:
            return P.DataOut(
                final=rng.random() < 0.5, itt=rng.choice([itt, 1, 2]), ttt=rng.choice(
                    [0xFFFFFFFF, 1, 2]), expstatsn=expstatsn, datasn=rng.randrange(4),
                buffer_offset=rng.choice([0, 512, 4096, 1 << 31]),
                data=bytes(rng.choice([0, 512, 4096])),
            )  # fmt: skip
        if kind == 5:
            return P.NopOut(
                immediate=rng.random() < 0.5, itt=rng.choice([itt, 0xFFFFFFFF]),
                ttt=rng.choice([0xFFFFFFFF, rng.getrandbits(32)]), cmdsn=cmdsn,
                expstatsn=expstatsn, data=bytes(rng.choice([0, 4, 100, 5000])),
            )  # fmt: skip
        if kind == 6:
            return P.TextRequest(
                immediate=rng.random() < 0.5, final=rng.random() < 0.8, cont=rng.random() < 0.2,
                itt=itt, ttt=rng.choice([0xFFFFFFFF, 1]), cmdsn=cmdsn, expstatsn=expstatsn,
                data=self.text(),
            )  # fmt: skip
        if kind == 7:
            return P.TaskManagementRequest(
                immediate=rng.random() < 0.5, function=rng.randrange(1, 16),
                lun=rng.choice([*self.luns, 7]) << 48, itt=itt,
                referenced_task_tag=rng.getrandbits(16),
                cmdsn=cmdsn, expstatsn=expstatsn, refcmdsn=(cmdsn - rng.randrange(3)) & 0xFFFFFFFF,
            )  # fmt: skip
        if kind == 8:
            return P.SnackRequest(
                snack_type=rng.randrange(4), itt=itt, expstatsn=expstatsn,
                begrun=rng.randrange(4), runlength=rng.randrange(4),
            )  # fmt: skip
        if rng.random() < 0.3:
            return P.LogoutRequest(
                immediate=rng.random() < 0.5, reason_code=rng.randrange(4), itt=itt,
                cmdsn=cmdsn, expstatsn=expstatsn,
            )  # fmt: skip
        return self.login()

    def typed_cdb(self) -> tuple[int, OpSpec, bytes]:
        """A LUN of the daemon, a row of its device type's table, and a CDB for it."""
        rng = self.rng
        lun = rng.choice(list(self.luns))
        spec = rng.choice(self.luns[lun][2].specs)
        return lun, spec, table_cdb(rng, spec)

    def typed_command(self, cmdsn: int, expstatsn: int) -> P.ScsiCommand:
        """A well-formed SCSI Command PDU whose CDB is fuzzed from the table of the
        device type behind its LUN: the iSCSI layer passes it on, so the device
        type's own parser and handlers take the hits. Data-out is all immediate
        (no R2T to answer), sized at random against the CDB's own lengths."""
        rng = self.rng
        if rng.random() < 0.05:
            lun, direction = 3, DataDirection.NONE  # keep cartridges moving, valid
            slot, drive = 0x0400 + rng.randrange(4), 0x0100
            src, dst = (slot, drive) if rng.random() < 0.6 else (drive, slot)
            cdb = struct.pack(">BBHHHHBB", 0xA5, 0, 0, src, dst, 0, 0, 0)
        else:
            lun, spec, cdb = self.typed_cdb()
            direction = spec.direction
        size = rng.choice([0, 6, 24, 512, 4096, rng.randrange(0, 65537)])
        write = direction is DataDirection.WRITE
        return P.ScsiCommand(
            final=True, read=direction is DataDirection.READ, write=write,
            attr=rng.choice([0, 0, 0, 0, 0, 0, 1, 2, 4]), lun=lun << 48, itt=rng.getrandbits(16),
            expected_data_transfer_length=size, cmdsn=cmdsn, expstatsn=expstatsn,
            cdb=cdb.ljust(16, b"\0")[:16], data=rng.randbytes(size) if write else b"",
        )  # fmt: skip

    def text(self) -> bytes:
        """A text segment: sensible, abusive or broken."""
        rng = self.rng
        pick = rng.randrange(8)
        if pick == 0:
            return self._many_keys[rng.choice([100, 10000])]
        if pick == 1:
            return encode_text([("SendTargets", "All")] * rng.choice([1, 100]))
        if pick == 2:
            return b"MaxRecvDataSegmentLength=" + b"9" * rng.choice([10, 2000]) + b"\0"
        if pick == 3:
            return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
        if pick == 4:
            return b"\xff\xfe=\xc3\x28\0InitiatorName=\x80\0"
        if pick == 5:
            return b"noequals\0=novalue\0" + b"A" * rng.choice([0, 70000]) + b"=x\0"
        if pick == 6:
            key, value = rng.choice(LOGIN_KEYS)
            return encode_text([(key, rng.choice([value, "", "-1", "0x7fffffffffff", "Yes,No"]))])
        return encode_text([("SendTargets", rng.choice(["All", "", TARGET, "x" * 300]))])

    # -- mutation --------------------------------------------------------------------
    def encode(self, pdu: P.Pdu) -> tuple[bytearray, bytes]:
        wire = encode_pdu(pdu)
        header_len = 48 + wire[4] * 4
        length = int.from_bytes(wire[5:8], "big")
        return bytearray(wire[:header_len]), bytes(wire[header_len : header_len + length])

    def mutate(self, header: bytearray, data: bytes) -> tuple[bytes, bytes]:
        """One to three mutations of a header and data segment."""
        rng = self.rng
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(13)
            if op == 0:
                i = rng.randrange(len(header))
                header[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                header[rng.randrange(len(header))] = rng.getrandbits(8)
            elif op == 2:
                header[0] = (header[0] & 0xC0) | rng.randrange(64)
            elif op == 3:
                header[1] = rng.getrandbits(8)
            elif op == 4:  # DataSegmentLength: huge, or inconsistent with the bytes
                n = rng.choice([0xFFFFFF, 0x1000000 - 4, len(data) + 1, rng.getrandbits(24)])
                header[5:8] = n.to_bytes(3, "big")
            elif op == 5:  # TotalAHSLength
                header[4] = rng.choice([0xFF, 1, rng.getrandbits(8)])
            elif op == 6:
                data = data[: rng.randrange(len(data) + 1)]
            elif op == 7:
                data = data + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
            elif op == 8:
                data = self.text()
                header[5:8] = len(data).to_bytes(3, "big")
            elif op == 9:  # CmdSN / ExpStatSN / tags to extremes
                off = rng.choice([16, 20, 24, 28, 32])
                header[off : off + 4] = rng.choice(
                    [b"\xff\xff\xff\xff", b"\x80\x00\x00\x00", bytes(4), rng.randbytes(4)]
                )
            elif op == 10:  # LUN field
                header[8:16] = rng.randbytes(8)
            elif op == 11:  # CDB bytes (SCSI command) or the rest of the header
                for i in rng.sample(range(32, 48), rng.randrange(1, 5)):
                    header[i] = rng.getrandbits(8)
            else:  # immediate bit / final bit toggles
                header[0] ^= 0x40
        return bytes(header), data

    def mutated(self, pdu: P.Pdu, header_digest: bool, data_digest: bool) -> bytes:
        """Wire bytes of a mutated ``pdu`` (mostly consistent digests)."""
        header, data = self.encode(pdu)
        mut_header, mut_data = self.mutate(header, data)
        bad = self.rng.random() < 0.02
        return frame(mut_header, mut_data, header_digest, data_digest, bad)

    def valid(self, pdu: P.Pdu, header_digest: bool, data_digest: bool) -> bytes:
        return encode_pdu(pdu, header_digest, data_digest)

    def ffp_wire(
        self, pdu: P.Pdu, header_digest: bool, data_digest: bool, mutate: bool, tame: bool
    ) -> bytes:
        """A full-feature-phase PDU, mutated or not; ``tame`` keeps clear of the
        crash triggers already known (issue 11 D1-D3), so that a campaign can
        look for what hides behind them: no SCSI command with the Immediate bit,
        no Login Request, no task management, and lengths that match the bytes
        (a desynchronised stream would make any of those out of data bytes)."""
        header, data = self.encode(pdu)
        out_header, out_data = self.mutate(header, data) if mutate else (bytes(header), data)
        if tame:
            fixed = bytearray(out_header)
            fixed[4] = (len(fixed) - 48) // 4
            fixed[5:8] = len(out_data).to_bytes(3, "big")
            opcode = fixed[0] & 0x3F
            if opcode == 0x01:
                fixed[0] &= 0xBF
            elif opcode in (0x02, 0x03):
                fixed[0] = (fixed[0] & 0xC0) | 0x00  # a NOP-Out instead
            out_header = bytes(fixed)
        bad = mutate and self.rng.random() < 0.02
        return frame(out_header, out_data, header_digest, data_digest, bad)
