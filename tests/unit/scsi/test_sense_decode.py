"""Sense data from another device server (pass-through): read, and kept as it came."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyscst.scsi.sense import Asc, Sense, SenseKey


@given(st.sampled_from(list(SenseKey)), st.sampled_from(list(Asc)), st.booleans(),
       st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_decode_reads_what_encode_wrote_and_keeps_the_bytes(
    key: SenseKey, asc: Asc, descriptor: bool, information: int | None
) -> None:
    raw = Sense.of(key, asc, information=information).encode(descriptor)
    sense = Sense.decode(raw)
    assert sense is not None
    assert (sense.key, sense.asc, sense.ascq) == (key, asc.code, asc.qualifier)
    assert sense.encode(False) == raw and sense.encode(True) == raw  # as it came


@given(st.binary(max_size=64))
def test_decode_of_anything_is_a_sense_or_none(data: bytes) -> None:
    sense = Sense.decode(data)
    if sense is not None:
        assert sense.raw == data and 0 <= sense.key <= 0x0F


def test_decode_refuses_what_it_cannot_read() -> None:
    assert Sense.decode(b"") is None
    assert Sense.decode(bytes((0x70, 0, 5))) is None  # fixed format cut before the ASC
    assert Sense.decode(bytes((0x7F,)) + bytes(17)) is None  # vendor response code
