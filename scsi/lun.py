"""SAM LUN encoding: the 8-byte LUN field <-> the LUN numbers users configure.

Initiators address LUN n < 256 with peripheral addressing (00 nn) and larger
ones with flat addressing (40|hi lo); both map to the same number here. Other
address methods are not ours and decode to None (LOGICAL UNIT NOT SUPPORTED).
"""

from __future__ import annotations

MAX_LUN = 0x3FFF


def encode_lun(lun: int) -> bytes:
    """Encode a LUN number as the 8-byte SAM LUN field."""
    if not 0 <= lun <= MAX_LUN:
        raise ValueError(f"LUN {lun} outside 0..{MAX_LUN}")
    if lun < 256:
        return bytes((0x00, lun)) + bytes(6)
    return bytes((0x40 | (lun >> 8), lun & 0xFF)) + bytes(6)


def decode_lun(raw: int | bytes) -> int | None:
    """Decode the 8-byte LUN field (bytes, or the big-endian 64-bit integer)."""
    value = raw if isinstance(raw, int) else int.from_bytes(raw[:8], "big")
    if value & 0x0000_FFFF_FFFF_FFFF:
        return None  # second-level addressing: not something we export
    top = value >> 48
    method = top >> 14
    if method == 0:  # peripheral device addressing, bus 0 only
        if top & 0x3F00:
            return None
        return top & 0xFF
    if method == 1:  # flat space
        return top & 0x3FFF
    return None
