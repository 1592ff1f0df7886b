"""Medium auxiliary memory (MAM) of a tape cartridge: READ / WRITE ATTRIBUTE (SPC-4 7.4).

Backup software reads a cartridge's identity and wear from MAM (barcode,
serial number, load count, capacity, bytes written) and keeps its own labels
there (application name, media pool, LTFS's volume coherency information).
Device and medium attributes are computed from the cartridge and the drive;
host attributes are the ones an initiator stored, kept in cartridge.json.
Pure functions of the cartridge: devices/ssc.py calls them.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from pyscst.scsi.sense import Asc, FieldPointer, ScsiError, SenseKey

if TYPE_CHECKING:
    from pyscst.devices.tape import TapeDevice

BINARY, ASCII, TEXT = 0, 1, 2
#: what a cartridge's MAM holds for host attributes (bytes, ids and headers included)
MAM_SPACE = 16 * 1024
MIB = 1 << 20

#: host attributes: id -> (format, length; 0: any length up to 160)
HOST_ATTRIBUTES: dict[int, tuple[int, int]] = {
    0x0800: (ASCII, 8),     # APPLICATION VENDOR
    0x0801: (ASCII, 32),    # APPLICATION NAME
    0x0802: (ASCII, 8),     # APPLICATION VERSION
    0x0803: (TEXT, 160),    # USER MEDIUM TEXT LABEL
    0x0804: (ASCII, 12),    # DATE AND TIME LAST WRITTEN
    0x0805: (BINARY, 1),    # TEXT LOCALIZATION IDENTIFIER
    0x0806: (ASCII, 32),    # BARCODE
    0x0807: (TEXT, 80),     # OWNING HOST TEXTUAL NAME
    0x0808: (TEXT, 160),    # MEDIA POOL
    0x0809: (ASCII, 16),    # PARTITION USER TEXT LABEL
    0x080A: (BINARY, 1),    # LOAD/UNLOAD AT PARTITION
    0x080B: (ASCII, 16),    # APPLICATION FORMAT VERSION
    0x080C: (BINARY, 0),    # VOLUME COHERENCY INFORMATION (variable)
    0x0820: (BINARY, 36),   # MEDIUM GLOBALLY UNIQUE IDENTIFIER
    0x0821: (BINARY, 36),   # MEDIA POOL GLOBALLY UNIQUE IDENTIFIER
}  # fmt: skip
#: host vendor-specific attributes: any format, up to 160 bytes
VENDOR_HOST = range(0x1400, 0x1800)
MAX_VARIABLE = 160


def _ascii(text: str, width: int) -> bytes:
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


def _attr(ident: int, fmt: int, value: bytes, read_only: bool) -> bytes:
    return struct.pack(">HBH", ident, (0x80 if read_only else 0) | fmt, len(value)) + value


def _u64(n: int) -> bytes:
    return struct.pack(">Q", max(0, n))


def _computed(dev: TapeDevice, partition: int) -> dict[int, tuple[int, bytes]]:
    """The read-only device and medium attributes: id -> (format, value)."""
    cart = dev.loaded()
    part = cart.partitions[partition]
    mam = cart.mam
    drives = [str(d) for d in mam.get("last_drives", [])]
    out: dict[int, tuple[int, bytes]] = {
        0x0000: (BINARY, _u64(part.remaining // MIB)),   # REMAINING CAPACITY IN PARTITION
        0x0001: (BINARY, _u64(part.capacity // MIB)),    # MAXIMUM CAPACITY IN PARTITION
        0x0002: (BINARY, _u64(dev.tapealert)),           # TAPEALERT FLAGS
        0x0003: (BINARY, _u64(int(mam.get("load_count", 0)))),  # LOAD COUNT
        0x0004: (BINARY, _u64(MAM_SPACE - host_bytes(dev))),   # MAM SPACE REMAINING
        0x0005: (ASCII, _ascii("PYSCST", 8)),            # ASSIGNING ORGANIZATION
        0x0006: (BINARY, bytes((dev.density,))),         # FORMATTED DENSITY CODE
        0x0007: (BINARY, struct.pack(">H", int(mam.get("initialization_count", 0)) & 0xFFFF)),
        0x0220: (BINARY, _u64(int(mam.get("total_written", 0)) // MIB)),
        0x0221: (BINARY, _u64(int(mam.get("total_read", 0)) // MIB)),
        0x0222: (BINARY, _u64(int(mam.get("written_this_load", 0)) // MIB)),
        0x0223: (BINARY, _u64(int(mam.get("read_this_load", 0)) // MIB)),
        0x0400: (ASCII, _ascii("PYSCST", 8)),            # MEDIUM MANUFACTURER
        0x0401: (ASCII, _ascii(str(mam.get("medium_serial", cart.barcode)), 32)),
        0x0404: (ASCII, _ascii("PYSCST", 8)),            # ASSIGNING ORGANIZATION
        0x0405: (BINARY, bytes((dev.density,))),         # MEDIUM DENSITY CODE
        0x0406: (ASCII, _ascii(str(mam.get("manufactured", "20260101")), 8)),
        0x0407: (BINARY, _u64(MAM_SPACE)),               # MAM CAPACITY
        0x0408: (BINARY, bytes((0x80 if cart.worm else 0x00,))),  # MEDIUM TYPE
        0x0409: (BINARY, b"\x00\x00"),                   # MEDIUM TYPE INFORMATION
    }  # fmt: skip
    for i, serial in enumerate(drives[:4]):  # DEVICE VENDOR/SERIAL AT LAST LOADS
        out[0x020A + i] = (ASCII, _ascii(f"PYSCST  {serial}", 40))
    return out


def host_bytes(dev: TapeDevice) -> int:
    cart = dev.loaded()
    return sum(5 + len(v) for _, v in cart.attributes.values())


def _all(dev: TapeDevice, partition: int) -> dict[int, tuple[int, bytes, bool]]:
    cart = dev.loaded()
    out = {k: (f, v, True) for k, (f, v) in _computed(dev, partition).items()}
    for k, (f, v) in cart.attributes.items():
        out[k] = (f, v, False)
    return out


def _check_location(dev: TapeDevice, cdb: bytes) -> int:
    cart = dev.loaded()
    if cdb[5] != 0:
        raise ScsiError.invalid_field_in_cdb(5)  # one logical volume
    if cdb[7] >= len(cart.partitions):
        raise ScsiError.invalid_field_in_cdb(7)
    return cdb[7]


def read_attribute(dev: TapeDevice, cdb: bytes) -> bytes:
    """READ ATTRIBUTE parameter data for service actions 00h (values), 01h
    (list), 02h (logical volumes), 03h (partitions), 05h (supported)."""
    cart = dev.loaded()
    sa = cdb[1] & 0x1F
    partition = _check_location(dev, cdb)
    first = struct.unpack_from(">H", cdb, 8)[0]
    attrs = _all(dev, partition)
    if sa == 0x00:
        body = b"".join(_attr(k, f, v, ro) for k, (f, v, ro) in sorted(attrs.items())
                        if k >= first)  # fmt: skip
        return struct.pack(">I", len(body)) + body
    if sa in (0x01, 0x05):
        ids = sorted(attrs) if sa == 0x01 else sorted({*_computed(dev, partition),
                                                       *HOST_ATTRIBUTES})  # fmt: skip
        body = b"".join(struct.pack(">H", k) for k in ids if k >= first)
        return struct.pack(">I", len(body)) + body
    if sa == 0x02:
        return struct.pack(">HBB", 2, 0, 1)
    if sa == 0x03:
        return struct.pack(">HBB", 2, 0, len(cart.partitions))
    raise ScsiError.invalid_field_in_cdb(1, 4)


def _bad_param(offset: int) -> ScsiError:
    return ScsiError.check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field_pointer=FieldPointer(offset, None, in_cdb=False),
    )  # fmt: skip


def write_attribute(dev: TapeDevice, cdb: bytes, data: bytes) -> None:
    """Check every attribute in a WRITE ATTRIBUTE parameter list, then store
    them all (a length of 0 deletes one); nothing changes on any error."""
    cart = dev.loaded()
    _check_location(dev, cdb)
    if len(data) < 4:
        raise ScsiError.parameter_list_length_error()
    declared = struct.unpack_from(">I", data, 0)[0]
    if declared + 4 > len(data):
        raise ScsiError.parameter_list_length_error()
    staged: list[tuple[int, int, bytes]] = []
    pos = 4
    end = 4 + declared
    while pos < end:
        if pos + 5 > end:
            raise ScsiError.parameter_list_length_error()
        ident, fmt_byte, length = struct.unpack_from(">HBH", data, pos)
        if pos + 5 + length > end:
            raise ScsiError.parameter_list_length_error()
        fmt = fmt_byte & 0x03
        if ident in HOST_ATTRIBUTES:
            want_fmt, want_len = HOST_ATTRIBUTES[ident]
            if fmt != want_fmt:
                raise _bad_param(pos + 2)
            if want_fmt == TEXT or want_len == 0:
                fits = length <= (want_len or MAX_VARIABLE)
            else:
                fits = length in (0, want_len)
            if not fits:
                raise _bad_param(pos + 3)
        elif ident in VENDOR_HOST:
            if fmt == 3 or length > MAX_VARIABLE:
                raise _bad_param(pos + (2 if fmt == 3 else 3))
        else:
            raise _bad_param(pos)  # read-only or unsupported
        staged.append((ident, fmt, bytes(data[pos + 5 : pos + 5 + length])))
        pos += 5 + length
    current = dict(cart.attributes)
    for ident, fmt, value in staged:
        if value:
            current[ident] = (fmt, value)
        else:
            current.pop(ident, None)
    if sum(5 + len(v) for _, v in current.values()) > MAM_SPACE:
        raise ScsiError.check(SenseKey.ILLEGAL_REQUEST, Asc.AUXILIARY_MEMORY_OUT_OF_SPACE)
    for ident, fmt, value in staged:
        cart.set_attribute(ident, fmt, value)
    if 0x0804 not in {i for i, _, _ in staged}:
        stamp = time.strftime("%Y%m%d%H%M", time.gmtime()).encode()
        cart.set_attribute(0x0804, ASCII, stamp)

