"""iSCSI header and data digests (CRC32C, RFC 7143 section 13.1).

Both digests are CRC32C over the protected bytes (BHS + AHS for the header
digest; data segment *including* its padding for the data digest), sent as
4 bytes in little-endian order, the byte order RFC 3720 appendix B.4 shows.
The ``crc32c`` package is a C extension using the SSE4.2/ARMv8 instructions
where available, which keeps digests off the profile of the hot path.
"""

from __future__ import annotations

import struct

import crc32c as _crc32c

#: What may be digested: anything supporting the buffer protocol.
Buffer = bytes | bytearray | memoryview

DIGEST_LENGTH = 4

_LE32 = struct.Struct("<I")


def crc32c(data: Buffer, value: int = 0) -> int:
    """CRC32C of ``data``; pass a previous result as ``value`` to continue it."""
    return int(_crc32c.crc32c(data, value))


def digest_bytes(*parts: Buffer) -> bytes:
    """The 4-byte wire form of the CRC32C over the concatenation of ``parts``."""
    value = 0
    for part in parts:
        value = _crc32c.crc32c(part, value)
    return _LE32.pack(value)


def digest_value(wire: Buffer) -> int:
    """Decode a 4-byte wire digest into the CRC value it carries."""
    return int(_LE32.unpack_from(wire)[0])


def digest_ok(wire: Buffer, *parts: Buffer) -> bool:
    """True when the 4-byte ``wire`` digest matches the CRC32C of ``parts``."""
    value = 0
    for part in parts:
        value = _crc32c.crc32c(part, value)
    return bool(_LE32.unpack_from(wire)[0] == value)
