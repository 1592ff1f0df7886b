"""Standard INQUIRY data (SPC-4 6.6.2): who this logical unit says it is.

Kept apart from the VPD pages because it is the one page every initiator
reads first and its fields (version, HiSup, CmdQue, version descriptors) are
cross-checked by conformance suites against what the device really supports.
"""

from __future__ import annotations

import attrs

T10_VENDOR = "PYSCST"

#: SPC-4 version descriptors (SPC-4 table 31)
VERSION_SAM5 = 0x00A0
VERSION_SPC4 = 0x0460
VERSION_SBC3 = 0x04C0
VERSION_ISCSI = 0x0960

#: VERSION field value claiming SPC-4
SPC4_VERSION = 0x06


def ascii_field(text: str, width: int) -> bytes:
    """Left-aligned, space-padded printable ASCII (SPC-4 4.3.1)."""
    clean = "".join(c if 0x20 <= ord(c) < 0x7F else "_" for c in text)
    return clean.encode("ascii")[:width].ljust(width, b" ")


@attrs.frozen
class StandardInquiry:
    """The fields of the standard INQUIRY data we let devices vary."""

    device_type: int = 0x00  # direct access block device
    removable: bool = False
    vendor: str = T10_VENDOR
    product: str = "pyscst disk"
    revision: str = "0001"
    cmdque: bool = True
    #: 3PC: the LU is a copy manager (EXTENDED COPY)
    third_party_copy: bool = False
    version_descriptors: tuple[int, ...] = (VERSION_SAM5, VERSION_ISCSI, VERSION_SPC4, VERSION_SBC3)

    def encode(self) -> bytes:
        """The full 96 bytes; the caller truncates to the allocation length."""
        data = bytearray(96)
        data[0] = self.device_type & 0x1F  # peripheral qualifier 000: connected
        data[1] = 0x80 if self.removable else 0x00
        data[2] = SPC4_VERSION
        data[3] = 0x10 | 0x02  # HISUP, RESPONSE DATA FORMAT 2
        data[4] = len(data) - 5
        data[5] = 0x08 if self.third_party_copy else 0x00
        data[7] = 0x02 if self.cmdque else 0x00
        data[8:16] = ascii_field(self.vendor, 8)
        data[16:32] = ascii_field(self.product, 16)
        data[32:36] = ascii_field(self.revision, 4)
        for i, vd in enumerate(self.version_descriptors[:8]):
            data[58 + 2 * i : 60 + 2 * i] = vd.to_bytes(2, "big")
        return bytes(data)
