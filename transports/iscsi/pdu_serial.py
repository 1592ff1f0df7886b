"""32-bit serial number arithmetic (RFC 1982) for CmdSN, StatSN, DataSN, R2TSN.

iSCSI sequence numbers wrap at 2**32 and are compared in a window of 2**31,
so plain ``<`` is wrong near the wrap; every comparison goes through here.
"""

from __future__ import annotations

SN_MASK = 0xFFFFFFFF
_HALF = 1 << 31


def sn_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32 (``n`` may be negative)."""
    return (a + n) & SN_MASK


def sn_lt(a: int, b: int) -> bool:
    """True when ``a`` precedes ``b``; undefined pairs (2**31 apart) are False."""
    return a != b and ((b - a) & SN_MASK) < _HALF


def sn_lte(a: int, b: int) -> bool:
    """``a == b`` or ``a`` precedes ``b``."""
    return a == b or sn_lt(a, b)


def sn_gt(a: int, b: int) -> bool:
    """True when ``a`` follows ``b``."""
    return sn_lt(b, a)


def sn_gte(a: int, b: int) -> bool:
    """``a == b`` or ``a`` follows ``b``."""
    return a == b or sn_lt(b, a)


def sn_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in serial arithmetic, in [-2**31, 2**31)."""
    d = (a - b) & SN_MASK
    return d - (1 << 32) if d >= _HALF else d
