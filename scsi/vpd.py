"""Vital product data pages (SPC-4 7.8) and the INQUIRY EVPD dispatch.

The SPC pages live here; a device type adds its own (SBC's block pages:
scsi/vpd_sbc.py). A device describes itself once in a :class:`VpdInfo`; the
pages are rendered from it plus the nexus (target port designators depend on which port the
initiator came in through). The Supported VPD Pages list is generated from
the builders that exist for the device, so it can never list a page that is
not answered.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping

import attrs

from pyscst.scsi.command import Nexus
from pyscst.scsi.inquiry import T10_VENDOR, ascii_field
from pyscst.scsi.sense import ScsiError

SUPPORTED_PAGES = 0x00
UNIT_SERIAL_NUMBER = 0x80
DEVICE_IDENTIFICATION = 0x83
EXTENDED_INQUIRY = 0x86

# designation descriptor fields (SPC-4 7.8.6)
CODE_SET_BINARY = 1
CODE_SET_ASCII = 2
CODE_SET_UTF8 = 3
ASSOC_LU = 0
ASSOC_TARGET_PORT = 1
ASSOC_TARGET_DEVICE = 2
DESIG_T10_VENDOR = 1
DESIG_NAA = 3
DESIG_RELATIVE_PORT = 4
DESIG_TARGET_PORT_GROUP = 5
DESIG_SCSI_NAME = 8
PROTOCOL_ISCSI = 5


def naa_locally_assigned(device_id: str) -> bytes:
    """An 8-byte NAA type 3 (locally assigned) designator stable for ``device_id``."""
    digest = int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:8], "big")
    return ((0x3 << 60) | (digest & ((1 << 60) - 1))).to_bytes(8, "big")


def designator(
    dtype: int,
    code_set: int,
    assoc: int,
    value: bytes,
    protocol: int | None = None,
) -> bytes:
    """One designation descriptor; PIV is set when a protocol is given."""
    b0 = ((protocol or 0) << 4) | code_set
    b1 = (0x80 if protocol is not None else 0) | (assoc << 4) | dtype
    return bytes((b0, b1, 0, len(value))) + value


def scsi_name(text: str) -> bytes:
    """SCSI name string: UTF-8, NUL-terminated, padded to a multiple of 4."""
    raw = text.encode() + b"\x00"
    return raw + bytes(-len(raw) % 4)


@attrs.frozen
class VpdInfo:
    """What the SPC VPD pages say about one logical unit, whatever its type."""

    device_id: str
    serial: str
    #: the LU honours HEAD OF QUEUE / ORDERED / SIMPLE task attributes
    headsup: bool = True
    ordsup: bool = True
    simpsup: bool = True
    volatile_cache: bool = True


#: renders one VPD page for the nexus asking
PageBuilder = Callable[[Nexus], bytes]


def page(code: int, body: bytes, device_type: int = 0) -> bytes:
    """A VPD page: peripheral device type, page code, PAGE LENGTH, body."""
    return bytes((device_type & 0x1F, code)) + struct.pack(">H", len(body)) + body


class VpdPages:
    """Renders the VPD pages of one logical unit: the SPC pages every type
    has, plus ``type_pages`` (a device type's own: SBC's 0xB0-0xB2, ...)."""

    def __init__(
        self, info: VpdInfo, type_pages: Mapping[int, PageBuilder] | None = None,
        device_type: int = 0,
    ) -> None:
        self.info = info
        self.device_type = device_type
        self._builders: dict[int, PageBuilder] = {
            SUPPORTED_PAGES: self._supported,
            UNIT_SERIAL_NUMBER: self._serial,
            DEVICE_IDENTIFICATION: self._device_identification,
            EXTENDED_INQUIRY: self._extended_inquiry,
        }
        for code, builder in (type_pages or {}).items():
            if code in self._builders:
                raise ValueError(f"VPD page {code:#04x} is an SPC page")
            self._builders[code] = builder

    @property
    def page_codes(self) -> list[int]:
        return sorted(self._builders)

    def render(self, page_code: int, nexus: Nexus) -> bytes:
        """One page; an unknown page is INVALID FIELD IN CDB (byte 2)."""
        builder = self._builders.get(page_code)
        if builder is None:
            raise ScsiError.invalid_field_in_cdb(2)
        data = builder(nexus)
        if self.device_type:
            data = bytes((self.device_type & 0x1F,)) + data[1:]
        return data

    def _supported(self, nexus: Nexus) -> bytes:
        return page(SUPPORTED_PAGES, bytes(self.page_codes))

    def designates(self, designation: bytes) -> bool:
        """Is ``designation`` (a designation descriptor: 4-byte header then the
        designator) this LU's NAA designator, as the Device Identification
        page lists it? What an EXTENDED COPY target descriptor names."""
        naa = naa_locally_assigned(self.info.device_id)
        return (
            len(designation) == 4 + len(naa)
            and designation[0] & 0x0F == CODE_SET_BINARY
            and designation[1] & 0x3F == (ASSOC_LU << 4) | DESIG_NAA
            and designation[3] == len(naa)
            and designation[4:] == naa
        )

    def _serial(self, nexus: Nexus) -> bytes:
        return page(UNIT_SERIAL_NUMBER, self.info.serial.encode("ascii", "replace"))

    def _device_identification(self, nexus: Nexus) -> bytes:
        info = self.info
        body = designator(
            DESIG_NAA, CODE_SET_BINARY, ASSOC_LU, naa_locally_assigned(info.device_id)
        )
        body += designator(
            DESIG_T10_VENDOR,
            CODE_SET_ASCII,
            ASSOC_LU,
            ascii_field(T10_VENDOR, 8) + info.device_id.encode("ascii", "replace")[:240],
        )
        body += port_designators(nexus)
        return page(DEVICE_IDENTIFICATION, body)

    def _extended_inquiry(self, nexus: Nexus) -> bytes:
        info = self.info
        body = bytearray(0x3C)
        body[1] = (0x04 if info.headsup else 0) | (0x02 if info.ordsup else 0) | (
            0x01 if info.simpsup else 0
        )
        body[2] = 0x01 if info.volatile_cache else 0  # V_SUP
        return page(EXTENDED_INQUIRY, bytes(body))


def port_designators(nexus: Nexus) -> bytes:
    """The Device Identification designators of the port ``nexus`` came in
    through and of the target device (every device type's LU, and a
    pass-through LU in place of its backend's)."""
    body = designator(
        DESIG_RELATIVE_PORT,
        CODE_SET_BINARY,
        ASSOC_TARGET_PORT,
        struct.pack(">HH", 0, nexus.relative_port & 0xFFFF),
        protocol=PROTOCOL_ISCSI,
    )
    if nexus.port_group_id:  # ALUA: the group the target port belongs to
        body += designator(
            DESIG_TARGET_PORT_GROUP,
            CODE_SET_BINARY,
            ASSOC_TARGET_PORT,
            struct.pack(">HH", 0, nexus.port_group_id & 0xFFFF),
            protocol=PROTOCOL_ISCSI,
        )
    body += designator(
        DESIG_SCSI_NAME,
        CODE_SET_UTF8,
        ASSOC_TARGET_PORT,
        scsi_name(nexus.target_port),
        protocol=PROTOCOL_ISCSI,
    )
    body += designator(
        DESIG_SCSI_NAME,
        CODE_SET_UTF8,
        ASSOC_TARGET_DEVICE,
        scsi_name(nexus.target_name),
        protocol=PROTOCOL_ISCSI,
    )
    return body
