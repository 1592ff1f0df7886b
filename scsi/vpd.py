"""Vital product data pages (SPC-4 7.8, SBC-3 6.5) and the INQUIRY EVPD dispatch.

A device describes itself once in a :class:`VpdInfo`; the pages are rendered
from it plus the nexus (target port designators depend on which port the
initiator came in through). The Supported VPD Pages list is generated from
the builders that exist for the device, so it can never list a page that is
not answered, and the block-limits and provisioning pages are derived from
flags the device's opcode table also drives.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import attrs

from pyscst.scsi.command import Nexus
from pyscst.scsi.inquiry import T10_VENDOR, ascii_field
from pyscst.scsi.sense import ScsiError

SUPPORTED_PAGES = 0x00
UNIT_SERIAL_NUMBER = 0x80
DEVICE_IDENTIFICATION = 0x83
EXTENDED_INQUIRY = 0x86
BLOCK_LIMITS = 0xB0
BLOCK_DEVICE_CHARACTERISTICS = 0xB1
LOGICAL_BLOCK_PROVISIONING = 0xB2

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
    """Everything the VPD pages say about one logical unit."""

    device_id: str
    serial: str
    block_size: int
    #: MAXIMUM TRANSFER LENGTH in logical blocks (enforced by the device)
    max_transfer_blocks: int
    optimal_granularity: int = 1
    #: the LU honours HEAD OF QUEUE / ORDERED / SIMPLE task attributes
    headsup: bool = True
    ordsup: bool = True
    simpsup: bool = True
    volatile_cache: bool = True
    #: UNMAP, WRITE SAME(16) UNMAP, WRITE SAME(10) UNMAP supported
    lbpu: bool = False
    lbpws: bool = False
    lbpws10: bool = False
    max_unmap_blocks: int = 0
    max_unmap_descriptors: int = 0
    max_write_same_blocks: int = 0
    max_compare_write_blocks: int = 0
    non_rotating: bool = True
    #: an unmapped block reads as zeros (B2 LBPRZ, thin provisioning type)
    lbprz: bool = False

    @property
    def provisioning(self) -> bool:
        return self.lbpu or self.lbpws or self.lbpws10


def _page(code: int, body: bytes, device_type: int = 0) -> bytes:
    return bytes((device_type & 0x1F, code)) + struct.pack(">H", len(body)) + body


class VpdPages:
    """Renders the VPD pages of one logical unit."""

    def __init__(self, info: VpdInfo) -> None:
        self.info = info
        self._builders: dict[int, Callable[[Nexus], bytes]] = {
            SUPPORTED_PAGES: self._supported,
            UNIT_SERIAL_NUMBER: self._serial,
            DEVICE_IDENTIFICATION: self._device_identification,
            EXTENDED_INQUIRY: self._extended_inquiry,
            BLOCK_LIMITS: self._block_limits,
            BLOCK_DEVICE_CHARACTERISTICS: self._characteristics,
        }
        if info.provisioning:
            self._builders[LOGICAL_BLOCK_PROVISIONING] = self._provisioning

    @property
    def page_codes(self) -> list[int]:
        return sorted(self._builders)

    def render(self, page_code: int, nexus: Nexus) -> bytes:
        """One page; an unknown page is INVALID FIELD IN CDB (byte 2)."""
        builder = self._builders.get(page_code)
        if builder is None:
            raise ScsiError.invalid_field_in_cdb(2)
        return builder(nexus)

    def _supported(self, nexus: Nexus) -> bytes:
        return _page(SUPPORTED_PAGES, bytes(self.page_codes))

    def _serial(self, nexus: Nexus) -> bytes:
        return _page(UNIT_SERIAL_NUMBER, self.info.serial.encode("ascii", "replace"))

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
        body += designator(
            DESIG_RELATIVE_PORT,
            CODE_SET_BINARY,
            ASSOC_TARGET_PORT,
            struct.pack(">HH", 0, nexus.relative_port & 0xFFFF),
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
        return _page(DEVICE_IDENTIFICATION, body)

    def _extended_inquiry(self, nexus: Nexus) -> bytes:
        info = self.info
        body = bytearray(0x3C)
        body[1] = (0x04 if info.headsup else 0) | (0x02 if info.ordsup else 0) | (
            0x01 if info.simpsup else 0
        )
        body[2] = 0x01 if info.volatile_cache else 0  # V_SUP
        return _page(EXTENDED_INQUIRY, bytes(body))

    def _block_limits(self, nexus: Nexus) -> bytes:
        info = self.info
        body = bytearray(0x3C)
        body[1] = min(info.max_compare_write_blocks, 0xFF)
        struct.pack_into(">H", body, 2, info.optimal_granularity)
        struct.pack_into(">I", body, 4, info.max_transfer_blocks)
        struct.pack_into(">I", body, 8, info.max_transfer_blocks)  # optimal transfer length
        if info.lbpu:
            struct.pack_into(">I", body, 16, info.max_unmap_blocks)
            struct.pack_into(">I", body, 20, info.max_unmap_descriptors)
            struct.pack_into(">I", body, 24, info.optimal_granularity)
        if info.lbpws or info.lbpws10:
            struct.pack_into(">Q", body, 32, info.max_write_same_blocks)
        return _page(BLOCK_LIMITS, bytes(body))

    def _characteristics(self, nexus: Nexus) -> bytes:
        body = bytearray(0x3C)
        struct.pack_into(">H", body, 0, 1 if self.info.non_rotating else 0)
        return _page(BLOCK_DEVICE_CHARACTERISTICS, bytes(body))

    def _provisioning(self, nexus: Nexus) -> bytes:
        info = self.info
        body = bytearray(4)
        body[1] = (0x80 if info.lbpu else 0) | (0x40 if info.lbpws else 0) | (
            0x20 if info.lbpws10 else 0
        ) | (0x04 if info.lbprz else 0)
        body[2] = 0x02 if info.lbprz else 0  # PROVISIONING TYPE: thin
        return _page(LOGICAL_BLOCK_PROVISIONING, bytes(body))
