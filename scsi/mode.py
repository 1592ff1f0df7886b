"""Mode pages: current / changeable / default values, MODE SENSE and MODE SELECT.

A device keeps one :class:`ModePages` holding each page's default bytes, the
mask of bits an initiator may change, and the current bytes. MODE SENSE
(6/10) is rendered from it with the block descriptor and device-specific
parameter the device supplies (WP depends on the initiator's mapping, so it
is never stored). MODE SELECT validates every page against the changeable
mask before applying any of them, so a rejected parameter list changes
nothing. Saved values are not implemented: PC=11b and SP=1 are refused.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import attrs

from pyscst.scsi.sense import Asc, FieldPointer, ScsiError, SenseKey

PC_CURRENT = 0
PC_CHANGEABLE = 1
PC_DEFAULT = 2
PC_SAVED = 3

ALL_PAGES = 0x3F
ALL_SUBPAGES = 0xFF

# page codes
RW_ERROR_RECOVERY = 0x01
CACHING = 0x08
CONTROL = 0x0A
INFORMATIONAL_EXCEPTIONS = 0x1C


@attrs.frozen
class PageDef:
    """One mode page: default bytes (header included) and the changeable mask."""

    code: int
    subpage: int
    default: bytes
    changeable: bytes

    def __attrs_post_init__(self) -> None:
        if len(self.default) != len(self.changeable):
            raise ValueError(f"page {self.code:#x}: default and mask lengths differ")
        if self.header_length + self.page_length != len(self.default):
            raise ValueError(f"page {self.code:#x}: PAGE LENGTH does not match its bytes")

    @property
    def header_length(self) -> int:
        return 4 if self.subpage else 2

    @property
    def page_length(self) -> int:
        if self.subpage:
            return int.from_bytes(self.default[2:4], "big")
        return self.default[1]


class ModePages:
    """The mode page state of one logical unit."""

    def __init__(self, defs: Iterable[PageDef]) -> None:
        ordered = sorted(defs, key=lambda d: (d.code, d.subpage))
        self._defs = {(d.code, d.subpage): d for d in ordered}
        self._current = {k: bytearray(d.default) for k, d in self._defs.items()}

    def current(self, code: int, subpage: int = 0) -> bytes:
        return bytes(self._current[(code, subpage)])

    def live(self, code: int, subpage: int = 0) -> bytearray:
        """One page's current bytes themselves, not a copy: every change
        (MODE SELECT, :meth:`store`, :meth:`reset`) updates them in place, so
        a per-command reader (a disk's WCE) keeps it and asks nothing."""
        return self._current[(code, subpage)]

    def bits(self, code: int, byte: int, mask: int, subpage: int = 0) -> int:
        """``current[byte] & mask`` of one page (for the device's state accessors)."""
        return self._current[(code, subpage)][byte] & mask

    def store(self, code: int, data: bytes, subpage: int = 0) -> None:
        """Set a page's current bytes from the device's own state (a value the
        device keeps elsewhere, e.g. a tape's active partition): no checks."""
        cur = self._current[(code, subpage)]
        if len(data) != len(cur):
            raise ValueError(f"page {code:#x}: {len(data)} bytes, expected {len(cur)}")
        cur[:] = data

    def reset(self) -> None:
        """Back to defaults (e.g. power on)."""
        for key, d in self._defs.items():
            self._current[key][:] = d.default

    def _value(self, key: tuple[int, int], pc: int) -> bytes:
        d = self._defs[key]
        if pc == PC_CURRENT:
            return bytes(self._current[key])
        if pc == PC_DEFAULT:
            return d.default
        # changeable: the header bytes as in the page, the rest the mask
        return d.default[: d.header_length] + d.changeable[d.header_length :]

    def render(self, page_code: int, subpage: int, pc: int) -> bytes:
        """The pages a MODE SENSE with these PAGE CODE / SUBPAGE CODE asks for."""
        if pc == PC_SAVED:
            raise ScsiError.check(
                SenseKey.ILLEGAL_REQUEST,
                Asc.SAVING_PARAMETERS_NOT_SUPPORTED,
                field_pointer=FieldPointer(2, 7),
            )
        if page_code == ALL_PAGES:
            if subpage == 0:
                keys = [k for k in self._defs if k[1] == 0]
            elif subpage == ALL_SUBPAGES:
                keys = list(self._defs)
            else:
                raise ScsiError.invalid_field_in_cdb(3)
        elif subpage == ALL_SUBPAGES:
            keys = [k for k in self._defs if k[0] == page_code]
            if not keys:
                raise ScsiError.invalid_field_in_cdb(2, 5)
        else:
            if (page_code, subpage) not in self._defs:
                if any(k[0] == page_code for k in self._defs):
                    raise ScsiError.invalid_field_in_cdb(3)
                raise ScsiError.invalid_field_in_cdb(2, 5)
            keys = [(page_code, subpage)]
        return b"".join(self._value(k, pc) for k in keys)

    def select(self, data: bytes | memoryview, base: int) -> bool:
        """Apply the mode pages in ``data`` (offset ``base`` in the parameter list).

        Every page is checked first: unknown pages, wrong PAGE LENGTH and any
        change to a non-changeable bit are INVALID FIELD IN PARAMETER LIST with
        a pointer into the parameter list; a page cut short is PARAMETER LIST
        LENGTH ERROR. Returns whether any current value changed.
        """
        raw = bytes(data)
        staged: list[tuple[tuple[int, int], bytes]] = []
        pos = 0
        while pos < len(raw):
            spf = bool(raw[pos] & 0x40)
            code = raw[pos] & 0x3F
            hdr = 4 if spf else 2
            if pos + hdr > len(raw):
                raise ScsiError.parameter_list_length_error()
            sub = raw[pos + 1] if spf else 0
            length = int.from_bytes(raw[pos + 2 : pos + 4], "big") if spf else raw[pos + 1]
            key = (code, sub)
            d = self._defs.get(key)
            if d is None:
                if spf and any(k[0] == code for k in self._defs):
                    raise ScsiError.invalid_field_in_parameter_list(base + pos + 1)
                raise ScsiError.invalid_field_in_parameter_list(base + pos, 5)
            if length != d.page_length:
                raise ScsiError.invalid_field_in_parameter_list(base + pos + (2 if spf else 1))
            end = pos + hdr + length
            if end > len(raw):
                raise ScsiError.parameter_list_length_error()
            page = raw[pos:end]
            cur = self._current[key]
            for i in range(hdr, len(page)):
                bad = (page[i] ^ cur[i]) & ~d.changeable[i] & 0xFF
                if bad:
                    raise ScsiError.invalid_field_in_parameter_list(
                        base + pos + i, bad.bit_length() - 1
                    )
            staged.append((key, page))
            pos = end
        changed = False
        for key, page in staged:
            cur = self._current[key]
            hdr = self._defs[key].header_length
            if cur[hdr:] != page[hdr:]:
                cur[hdr:] = page[hdr:]
                changed = True
        return changed


def spc_mode_page_defs() -> list[PageDef]:
    """The pages every device type has: Control and Informational Exceptions."""
    control = bytearray(12)
    control[0], control[1] = CONTROL, 0x0A
    control[2] = 0x02  # GLTSD: we do not save log parameters
    control[8:10] = b"\xff\xff"  # BUSY TIMEOUT PERIOD: unlimited
    control_mask = bytearray(12)
    control_mask[2] = 0x04  # D_SENSE
    control_mask[3] = 0xF0  # QUEUE ALGORITHM MODIFIER
    control_mask[4] = 0x08  # SWP
    control_mask[5] = 0x40  # TAS
    iec = bytes((INFORMATIONAL_EXCEPTIONS, 0x0A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0))  # DEXCPT
    return [
        PageDef(CONTROL, 0, bytes(control), bytes(control_mask)),
        PageDef(INFORMATIONAL_EXCEPTIONS, 0, iec, bytes(12)),
    ]


def sbc_mode_page_defs(write_cache: bool = True) -> list[PageDef]:
    """A disk's own pages: Read-Write Error Recovery and Caching."""
    rw_recovery = bytes((RW_ERROR_RECOVERY, 0x0A, 0xC0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    caching = bytearray(20)
    caching[0], caching[1] = CACHING, 0x12
    caching[2] = 0x04 if write_cache else 0x00  # WCE
    caching_mask = bytearray(20)
    caching_mask[2] = 0x05  # WCE, RCD
    return [
        PageDef(RW_ERROR_RECOVERY, 0, rw_recovery, bytes(12)),
        PageDef(CACHING, 0, bytes(caching), bytes(caching_mask)),
    ]


def sbc_mode_pages(write_cache: bool = True) -> ModePages:
    """The mode pages of an SBC disk: the SPC pages plus its own."""
    return ModePages([*spc_mode_page_defs(), *sbc_mode_page_defs(write_cache)])


def block_descriptor(blocks: int, block_size: int, long_lba: bool) -> bytes:
    """Short (8-byte) or long (16-byte) direct-access block descriptor."""
    if long_lba:
        return struct.pack(">QII", blocks, 0, block_size)
    return struct.pack(">I", min(blocks, 0xFFFFFFFF)) + b"\x00" + block_size.to_bytes(3, "big")


def build_mode_sense(
    cdb: bytes,
    pages: ModePages,
    *,
    blocks: int,
    block_size: int,
    device_specific: int,
) -> bytes:
    """MODE SENSE (6) or (10) parameter data, truncated to the allocation length."""
    ten = cdb[0] == 0x5A
    dbd = bool(cdb[1] & 0x08)
    llbaa = ten and bool(cdb[1] & 0x10)
    pc = cdb[2] >> 6
    body = pages.render(cdb[2] & 0x3F, cdb[3], pc)
    if dbd:
        desc = b""
    elif pc == PC_CHANGEABLE:
        desc = bytes(16 if llbaa else 8)
    else:
        desc = block_descriptor(blocks, block_size, llbaa)
    return mode_parameter_data(cdb, desc, body, device_specific, long_lba=llbaa)


def mode_parameter_data(
    cdb: bytes, desc: bytes, body: bytes, device_specific: int, long_lba: bool = False
) -> bytes:
    """MODE SENSE (6) or (10): the header for ``desc`` (block descriptors, as
    the device type shapes them) and ``body`` (pages), truncated to the
    allocation length; a (6) reply over 255 bytes is INVALID FIELD IN CDB."""
    if cdb[0] == 0x5A:
        total = 8 + len(desc) + len(body)
        head = struct.pack(
            ">HBBBBH", total - 2, 0, device_specific, 1 if long_lba else 0, 0, len(desc)
        )
        allocation = int.from_bytes(cdb[7:9], "big")
    else:
        total = 4 + len(desc) + len(body)
        if total > 0xFF:
            raise ScsiError.invalid_field_in_cdb(2, 5)
        head = bytes((total - 1, 0, device_specific, len(desc)))
        allocation = cdb[4]
    return (head + desc + body)[:allocation]


def parse_mode_select(
    cdb: bytes, data: bytes | memoryview, pages: ModePages, *, blocks: int, block_size: int
) -> bool:
    """Check and apply a MODE SELECT (6) or (10) parameter list; True if changed.

    The CDB's SP bit must be clear (no saved pages). A block descriptor may
    restate the capacity (or 0) and must restate the block size.
    """
    if cdb[1] & 0x01:
        raise ScsiError.invalid_field_in_cdb(1, 0)
    ten = cdb[0] == 0x55
    hdr = 8 if ten else 4
    raw = bytes(data)
    if not raw:
        return False
    if len(raw) < hdr:
        raise ScsiError.parameter_list_length_error()
    if raw[1] != 0:
        raise ScsiError.invalid_field_in_parameter_list(1)
    if ten:
        long_lba = bool(raw[4] & 0x01)
        bd_len = int.from_bytes(raw[6:8], "big")
    else:
        long_lba = False
        bd_len = raw[3]
    unit = 16 if long_lba else 8
    if bd_len % unit or bd_len > unit:
        raise ScsiError.invalid_field_in_parameter_list(6 if ten else 3)
    if hdr + bd_len > len(raw):
        raise ScsiError.parameter_list_length_error()
    if bd_len:
        bd = raw[hdr : hdr + bd_len]
        if long_lba:
            nblocks, _res, size = struct.unpack(">QII", bd)
            size_at = hdr + 12
        else:
            nblocks = int.from_bytes(bd[0:4], "big")
            size = int.from_bytes(bd[5:8], "big")
            size_at = hdr + 5
        if nblocks not in (0, blocks, min(blocks, 0xFFFFFFFF)):
            raise ScsiError.invalid_field_in_parameter_list(hdr)
        if size != block_size:
            raise ScsiError.invalid_field_in_parameter_list(size_at)
    start = hdr + bd_len
    return pages.select(raw[start:], start)
