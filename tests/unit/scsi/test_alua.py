"""The sans-I/O ALUA core: permission table, REPORT TPGS encoding, SET TPGS parsing."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyscst.scsi.alua import (
    ACCESS_RULES,
    SETTABLE,
    AccessState,
    GroupReport,
    StatusCode,
    allows,
    check_access,
    parse_set_target_port_groups,
    report_target_port_groups,
    tpgs_bits,
)
from pyscst.scsi.sense import ScsiError, SenseKey

INQUIRY, REQUEST_SENSE, REPORT_LUNS, TUR, READ_10, WRITE_10 = 0x12, 0x03, 0xA0, 0x00, 0x28, 0x2A
MAINT_IN, MAINT_OUT, PRIN, PROUT, MODE_SENSE_10 = 0xA3, 0xA4, 0x5E, 0x5F, 0x5A
RTPG, STPG = (MAINT_IN, 0x0A), (MAINT_OUT, 0x0A)
RESTRICTED = [s for s in AccessState if s > AccessState.ACTIVE_NON_OPTIMIZED]
#: SPC-4 5.15.2.4.x, written out independently of the module's table
EXPECTED_ASCQ = {
    AccessState.STANDBY: 0x0B,
    AccessState.UNAVAILABLE: 0x0C,
    AccessState.TRANSITIONING: 0x0A,
    AccessState.OFFLINE: 0x12,
}

opcodes = st.integers(0, 0xFF)
service_actions = st.one_of(st.none(), st.integers(0, 0x1F))


@given(st.sampled_from([AccessState.ACTIVE_OPTIMIZED, AccessState.ACTIVE_NON_OPTIMIZED]),
       opcodes, service_actions)
def test_active_states_allow_every_command(state: AccessState, op: int, sa: int | None) -> None:
    check_access(state, op, sa)
    assert allows(state, op, sa)


@given(st.sampled_from(RESTRICTED), opcodes, service_actions)
def test_a_refused_command_gets_its_states_not_ready(
    state: AccessState, op: int, sa: int | None
) -> None:
    try:
        check_access(state, op, sa)
    except ScsiError as exc:
        assert not allows(state, op, sa)
        assert exc.sense is not None
        assert (exc.sense.key, exc.sense.asc, exc.sense.ascq) == (
            SenseKey.NOT_READY, 0x04, EXPECTED_ASCQ[state],
        )
    else:
        assert allows(state, op, sa)


@pytest.mark.parametrize("state", RESTRICTED)
def test_what_every_state_allows(state: AccessState) -> None:
    for always in ((INQUIRY, None), (REQUEST_SENSE, None), (REPORT_LUNS, None), RTPG):
        assert allows(state, *always), (state, always)
    for never in ((READ_10, None), (WRITE_10, None), (TUR, None), (MAINT_IN, 0x0C)):
        assert not allows(state, *never), (state, never)
    # SET TPGS: standby and unavailable (to leave them), not transitioning/offline
    assert allows(state, *STPG) == (state in (AccessState.STANDBY, AccessState.UNAVAILABLE))
    # reservations and mode pages: standby only
    standby = state is AccessState.STANDBY
    assert allows(state, PRIN, 0) == standby and allows(state, PROUT, 1) == standby
    assert allows(state, MODE_SENSE_10, None) == standby


def test_every_state_has_a_rule_and_tpgs_bits() -> None:
    assert set(ACCESS_RULES) == set(AccessState)
    assert tpgs_bits(True) == 0x30 and tpgs_bits(False) == 0x10


@pytest.mark.parametrize(("text", "state"), [
    ("active/optimized", AccessState.ACTIVE_OPTIMIZED), ("AO", AccessState.ACTIVE_OPTIMIZED),
    ("active_non_optimized", AccessState.ACTIVE_NON_OPTIMIZED), ("Standby", AccessState.STANDBY),
    ("offline", AccessState.OFFLINE), ("transitioning", AccessState.TRANSITIONING),
])  # fmt: skip
def test_state_labels_parse(text: str, state: AccessState) -> None:
    assert AccessState.parse(text) is state
    assert AccessState.parse(state.label) is state


def test_an_unknown_state_label_lists_the_settable_ones() -> None:
    with pytest.raises(ValueError, match="standby"):
        AccessState.parse("sleepy")


# -- REPORT TARGET PORT GROUPS --------------------------------------------------------

reports = st.lists(
    st.builds(
        GroupReport,
        st.integers(1, 0xFFFF),
        st.sampled_from(list(AccessState)),
        st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=3).map(tuple),
        st.booleans(),
        st.sampled_from(list(StatusCode)),
    ),
    max_size=6,
)


def rtpg_cdb(alloc: int, extended: bool) -> bytes:
    return struct.pack(">BBxxxxIxx", 0xA3, (0x20 if extended else 0) | 0x0A, alloc)


def decode(data: bytes, extended: bool) -> list[GroupReport]:
    """An independent reading of SPC-4 6.37's parameter data."""
    (length,) = struct.unpack_from(">I", data)
    at = 8 if extended else 4
    assert length == len(data) - 4
    out = []
    while at < len(data):
        b0, supported, gid, _, status, _, count = struct.unpack_from(">BBHBBBB", data, at)
        assert supported == 0xCF
        ports = tuple(struct.unpack_from(">H", data, at + 10 + 4 * i)[0] for i in range(count))
        out.append(GroupReport(gid, AccessState(b0 & 0x0F), ports, bool(b0 & 0x80),
                               StatusCode(status)))
        at += 8 + 4 * count
    return out


@given(reports, st.booleans(), st.integers(0, 255))
def test_rtpg_encodes_every_group(groups: list[GroupReport], extended: bool, t: int) -> None:
    data = report_target_port_groups(rtpg_cdb(65536, extended), groups, t)
    assert decode(data, extended) == groups
    if extended:
        assert data[4] == 0x10 and data[5] == t


@given(reports, st.booleans(), st.integers(0, 300))
def test_rtpg_allocation_length_cuts_a_prefix(
    groups: list[GroupReport], extended: bool, alloc: int
) -> None:
    full = report_target_port_groups(rtpg_cdb(65536, extended), groups, 3)
    assert report_target_port_groups(rtpg_cdb(alloc, extended), groups, 3) == full[:alloc]


@pytest.mark.parametrize("fmt", [2, 3, 7])
def test_rtpg_reserved_data_format_points_at_byte_1(fmt: int) -> None:
    cdb = bytearray(rtpg_cdb(64, False))
    cdb[1] |= fmt << 5
    with pytest.raises(ScsiError) as info:
        report_target_port_groups(bytes(cdb), [], 0)
    sense = info.value.sense
    assert sense is not None and (sense.asc, sense.ascq) == (0x24, 0)
    assert sense.field_pointer is not None and sense.field_pointer.byte == 1


# -- SET TARGET PORT GROUPS -------------------------------------------------------------


def stpg_list(pairs: Sequence[tuple[int, int]]) -> bytes:
    return bytes(4) + b"".join(struct.pack(">BxH", state, gid) for gid, state in pairs)


@given(st.dictionaries(st.integers(0, 0xFFFF), st.sampled_from(SETTABLE), max_size=8))
def test_a_valid_list_parses_in_order(wanted: dict[int, AccessState]) -> None:
    pairs = list(wanted.items())
    assert parse_set_target_port_groups(stpg_list(pairs), wanted) == pairs


@given(st.binary(max_size=64), st.sets(st.integers(0, 0xFFFF), max_size=4))
def test_any_bytes_parse_or_get_illegal_request(data: bytes, known: set[int]) -> None:
    try:
        result = parse_set_target_port_groups(data, known)
    except ScsiError as exc:
        assert exc.sense is not None and exc.sense.key is SenseKey.ILLEGAL_REQUEST
        assert (exc.sense.asc, exc.sense.ascq) in ((0x1A, 0), (0x26, 0))
    else:
        assert len(data) >= 4 and (len(data) - 4) % 4 == 0
        assert {g for g, _ in result} <= known and len(result) == (len(data) - 4) // 4


@pytest.mark.parametrize(("data", "asc", "byte", "bit"), [
    (b"", 0x1A, None, None),
    (bytes(3), 0x1A, None, None),
    (bytes(7), 0x1A, None, None),
    (stpg_list([(1, 0), (5, 0)]), 0x26, 10, None),  # unknown group
    (stpg_list([(1, 0), (1, 2)]), 0x26, 10, None),  # the same group twice
    (stpg_list([(1, 0xF)]), 0x26, 4, 3),  # transitioning is passed through, not set
    (stpg_list([(1, 0x4)]), 0x26, 4, 3),  # LBA dependent: not supported
    (stpg_list([(1, 0x9)]), 0x26, 4, 3),  # reserved
    (bytes(4) + b"\x10\x00\x00\x01", 0x26, 4, 7),  # reserved bits of byte 0
    (bytes(4) + b"\x00\x01\x00\x01", 0x26, 5, 7),  # reserved byte 1
])  # fmt: skip
def test_hostile_set_lists(data: bytes, asc: int, byte: int | None, bit: int | None) -> None:
    with pytest.raises(ScsiError) as info:
        parse_set_target_port_groups(data, {1, 2})
    sense = info.value.sense
    assert sense is not None and sense.key is SenseKey.ILLEGAL_REQUEST and sense.asc == asc
    if byte is None:
        assert sense.field_pointer is None
    else:
        pointer = sense.field_pointer
        assert pointer is not None and not pointer.in_cdb
        assert (pointer.byte, pointer.bit) == (byte, bit)
