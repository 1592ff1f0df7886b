"""iSCSI text key=value data segments (RFC 7143 section 6).

Login and Text PDUs carry ``key=value`` pairs, each NUL-terminated. Order
matters (responses follow request order) and a key may legally appear once,
so we keep a list of pairs and let the negotiation layer reject repeats.
"""

from __future__ import annotations

MAX_KEY_LENGTH = 63
MAX_VALUE_LENGTH = 8192  # RFC 7143 6.1: 255 for most, 8192 for some; the cap we accept


class TextKeyError(ValueError):
    """A malformed text segment (no '=', bad key characters, oversize)."""


def decode_text(data: bytes | bytearray | memoryview) -> list[tuple[str, str]]:
    """Split a data segment into ordered (key, value) pairs.

    Trailing padding NULs are ignored; an empty segment gives an empty list.
    """
    raw = bytes(data)
    pairs: list[tuple[str, str]] = []
    for chunk in raw.split(b"\x00"):
        if not chunk:
            continue
        key, sep, value = chunk.partition(b"=")
        if not sep:
            raise TextKeyError(f"text item without '=': {chunk[:64]!r}")
        if not key or len(key) > MAX_KEY_LENGTH:
            raise TextKeyError(f"bad key length {len(key)}")
        if len(value) > MAX_VALUE_LENGTH:
            raise TextKeyError(f"value of {key[:64]!r} too long ({len(value)} bytes)")
        try:
            k = key.decode("ascii")
            v = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextKeyError(f"text item is not valid UTF-8: {chunk[:64]!r}") from exc
        if not all(c.isalnum() or c in ".-+@_#" for c in k):
            raise TextKeyError(f"bad characters in key {k!r}")
        pairs.append((k, v))
    return pairs


def encode_text(pairs: list[tuple[str, str]] | dict[str, str]) -> bytes:
    """Join pairs into a data segment, each item NUL-terminated."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return b"".join(f"{k}={v}".encode() + b"\x00" for k, v in items)
