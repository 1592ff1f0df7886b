"""transports/iscsi/iovec.py: what a partial gather write leaves to send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyscst.transports.iscsi.iovec import unsent
from pyscst.transports.iscsi.pdu_types import Buffer

CHUNKS = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.binary(max_size=40).map(bytearray),
        st.binary(max_size=40).map(lambda b: memoryview(b)),
    ),
    max_size=8,
)


@given(CHUNKS, st.integers(min_value=0, max_value=400))
def test_the_rest_is_the_bytes_after_what_was_sent(chunks: list[Buffer], sent: int) -> None:
    rest = unsent(chunks, sent)
    assert b"".join(bytes(b) for b in rest) == b"".join(bytes(b) for b in chunks)[sent:]


@given(CHUNKS, st.integers(min_value=0, max_value=400))
def test_the_rest_starts_with_a_byte_and_copies_nothing(chunks: list[Buffer], sent: int) -> None:
    rest = unsent(chunks, sent)
    if rest:
        assert len(rest[0])  # the next writev sends at least one byte of its first buffer
    # whole buffers stay the very objects given; only the cut one is a view of its tail
    for buf in rest[1:]:
        assert any(buf is c for c in chunks)


def test_a_cut_buffer_is_a_view_of_the_same_memory() -> None:
    payload = bytearray(b"0123456789")
    header = b"HDR"
    rest = unsent([header, payload], 5)
    assert isinstance(rest[0], memoryview) and bytes(rest[0]) == b"23456789"
    payload[9] = ord("X")
    assert bytes(rest[0]).endswith(b"X")  # no copy was made


def test_nothing_sent_keeps_the_list_and_everything_sent_leaves_none() -> None:
    chunks: list[Buffer] = [b"ab", b"cd"]
    assert unsent(chunks, 0) == chunks
    assert unsent(chunks, 4) == []
    assert unsent(chunks, 2) == [b"cd"]
