"""iSCSI TransportIDs (SPC-4 7.6.4.6): how PR commands name initiator ports.

SPEC_I_PT registrations and REGISTER AND MOVE name other initiators by
TransportID, and READ FULL STATUS reports each registrant by one. iSCSI has
two formats: 00b carries the iSCSI name alone (every initiator port of that
name), 01b the name, ``,i,0x`` and the 12 hex digits of the ISID (one port).
Any other protocol or format is INVALID FIELD IN PARAMETER LIST.
"""

from __future__ import annotations

import struct

import attrs

from pyscst.scsi.sense import ScsiError

PROTOCOL_ISCSI = 0x5
FORMAT_NAME = 0b00
FORMAT_PORT = 0b01
_SEPARATOR = ",i,0x"
_MIN_ADDITIONAL = 20


@attrs.frozen
class InitiatorPortId:
    """An iSCSI initiator port (or every port of a name when ``isid`` is None)."""

    name: str
    isid: int | None


def encode(name: str, isid: int | None) -> bytes:
    """The TransportID for ``name`` (format 01b with an ISID, 00b without)."""
    if isid is None:
        text, fmt = name, FORMAT_NAME
    else:
        text, fmt = f"{name}{_SEPARATOR}{isid:012x}", FORMAT_PORT
    body = text.encode() + b"\0"
    body += b"\0" * (-len(body) % 4)
    if len(body) < _MIN_ADDITIONAL:
        body += b"\0" * (_MIN_ADDITIONAL - len(body))
    return struct.pack(">BBH", (fmt << 6) | PROTOCOL_ISCSI, 0, len(body)) + body


def parse(buf: bytes, offset: int) -> tuple[InitiatorPortId, int]:
    """One TransportID at ``offset`` of the parameter list: (port, bytes used)."""
    if offset + 4 > len(buf):
        raise ScsiError.parameter_list_length_error()
    first = buf[offset]
    if first & 0x0F != PROTOCOL_ISCSI:
        raise ScsiError.invalid_field_in_parameter_list(offset, 3)
    fmt = first >> 6
    if fmt not in (FORMAT_NAME, FORMAT_PORT) or first & 0x30:
        raise ScsiError.invalid_field_in_parameter_list(offset, 7)
    (length,) = struct.unpack_from(">H", buf, offset + 2)
    end = offset + 4 + length
    if end > len(buf):
        raise ScsiError.parameter_list_length_error()
    raw = buf[offset + 4 : end].split(b"\0", 1)[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScsiError.invalid_field_in_parameter_list(offset + 4) from None
    if fmt == FORMAT_NAME:
        name, isid = text, None
    else:
        head, sep, tail = text.lower().rpartition(_SEPARATOR)
        if not sep or not tail or len(tail) > 12:
            raise ScsiError.invalid_field_in_parameter_list(offset + 4)
        try:
            isid = int(tail, 16)
        except ValueError:
            raise ScsiError.invalid_field_in_parameter_list(offset + 4) from None
        name = head
    if not name:
        raise ScsiError.invalid_field_in_parameter_list(offset + 4)
    return InitiatorPortId(name.lower(), isid), end - offset


def parse_list(buf: bytes, offset: int, length: int) -> list[InitiatorPortId]:
    """``length`` bytes of back-to-back TransportIDs starting at ``offset``."""
    end = offset + length
    if end > len(buf):
        raise ScsiError.parameter_list_length_error()
    region = buf[:end]
    ports: list[InitiatorPortId] = []
    while offset < end:
        port, used = parse(region, offset)
        ports.append(port)
        offset += used
    return ports
