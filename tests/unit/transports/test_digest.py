"""CRC32C digests against the RFC 3720 appendix B.4 examples and basic laws."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyscst.transports.iscsi.digest import crc32c, digest_bytes, digest_ok, digest_value

# RFC 3720 B.4: input and the CRC bytes as printed (wire order).
RFC_VECTORS = [
    (bytes(32), "aa36918a"),
    (b"\xff" * 32, "43aba862"),
    (bytes(range(32)), "4e79dd46"),
    (bytes(reversed(range(32))), "5cdb3f11"),
    (
        bytes.fromhex(
            "01c00000000000000000000000000000"
            "14000000000004000000001400000018"
            "28000000000000000200000000000000"
        ),
        "563a96d9",
    ),
]


def test_rfc3720_vectors_wire_order() -> None:
    for data, wire in RFC_VECTORS:
        assert digest_bytes(data).hex() == wire
        assert digest_ok(bytes.fromhex(wire), data)


def test_value_is_little_endian_of_wire() -> None:
    for data, wire in RFC_VECTORS:
        assert crc32c(data) == int.from_bytes(bytes.fromhex(wire), "little")
        assert digest_value(bytes.fromhex(wire)) == crc32c(data)


@given(st.binary(max_size=512), st.binary(max_size=512))
def test_incremental_equals_one_shot(a: bytes, b: bytes) -> None:
    assert crc32c(b, crc32c(a)) == crc32c(a + b)
    assert digest_bytes(a, b) == digest_bytes(a + b)
    assert digest_bytes(memoryview(a), bytearray(b)) == digest_bytes(a + b)


@given(st.binary(min_size=1, max_size=256), st.data())
def test_any_single_bit_flip_is_detected(data: bytes, draw: st.DataObject) -> None:
    wire = digest_bytes(data)
    pos = draw.draw(st.integers(0, len(data) - 1))
    bit = draw.draw(st.integers(0, 7))
    corrupted = bytearray(data)
    corrupted[pos] ^= 1 << bit
    assert digest_ok(wire, data)
    assert not digest_ok(wire, bytes(corrupted))
