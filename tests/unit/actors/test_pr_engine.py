"""The PERSISTENT RESERVE OUT/IN state machine, driven with plain values.

Every service action's success and error rules (SPC-4 5.14, 6.16, 6.17):
the state it leaves, PRGENERATION, the UNIT ATTENTIONs it asks for and the
nexuses PREEMPT AND ABORT must abort, plus the PRIN encodings.
"""

from __future__ import annotations

import struct

import pytest

from pyscst.actors import pr_transport_id as tid
from pyscst.actors.persistent_reservations import (
    ProutOutcome,
    persistent_reserve_in,
    persistent_reserve_out,
)
from pyscst.actors.pr_state import PrState, PrType, Registrant
from pyscst.scsi.command import Nexus
from pyscst.scsi.opcodes import PersistentReserveIn as In
from pyscst.scsi.opcodes import PersistentReserveOut as Out
from pyscst.scsi.sense import Asc, ScsiError, Status

TARGET = "iqn.2026-11.org.pyscst:t"
A = Nexus.iscsi("iqn.2026-11.org.example:a", 0x400001, TARGET, 1)
B = Nexus.iscsi("iqn.2026-11.org.example:b", 0x400002, TARGET, 1)
C = Nexus.iscsi("iqn.2026-11.org.example:c", 0x400003, TARGET, 1)
A_OTHER_PORT = Nexus.iscsi("iqn.2026-11.org.example:a", 0x400001, TARGET, 2, relative_port=2)
ALL_TYPES = list(PrType)


def cdb_out(sa: int, ptype: int = 0, scope: int = 0, length: int = 24) -> bytes:
    return struct.pack(">BBBHIB", 0x5F, sa, (scope << 4) | ptype, 0, length, 0)


def cdb_in(sa: int, alloc: int = 8192) -> bytes:
    return struct.pack(">BB5xHB", 0x5E, sa, alloc, 0)


def params(
    key: int = 0,
    sark: int = 0,
    *,
    spec_i_pt: bool = False,
    all_tg_pt: bool = False,
    aptpl: bool = False,
    ports: bytes | None = None,
) -> bytes:
    flags = (0x08 if spec_i_pt else 0) | (0x04 if all_tg_pt else 0) | (0x01 if aptpl else 0)
    base = struct.pack(">QQ4xBx2x", key, sark, flags)
    if ports is not None:
        base += struct.pack(">I", len(ports)) + ports
    return base


def resolve(rel: int) -> str | None:
    return {1: A.target_port, 2: A_OTHER_PORT.target_port}.get(rel)


def out(
    state: PrState, nexus: Nexus, sa: int, p: bytes, ptype: int = 0, scope: int = 0
) -> ProutOutcome:
    return persistent_reserve_out(state, nexus, cdb_out(sa, ptype, scope, len(p)), p, resolve)


def register(state: PrState, nexus: Nexus, key: int, **kw: bool) -> PrState:
    return out(state, nexus, Out.REGISTER_AND_IGNORE_EXISTING_KEY, params(0, key, **kw)).state


def reserve(state: PrState, nexus: Nexus, key: int, ptype: PrType) -> PrState:
    return out(state, nexus, Out.RESERVE, params(key), ptype).state


def keys(state: PrState) -> list[int]:
    data = persistent_reserve_in(state, cdb_in(In.READ_KEYS))
    gen, length = struct.unpack_from(">II", data)
    assert gen == state.generation
    return [k for (k,) in struct.iter_unpack(">Q", data[8 : 8 + length])]


def reservation(state: PrState) -> tuple[int, int] | None:
    data = persistent_reserve_in(state, cdb_in(In.READ_RESERVATION))
    (length,) = struct.unpack_from(">I", data, 4)
    if length == 0:
        return None
    assert length == 16
    return struct.unpack_from(">Q", data, 8)[0], data[21]


def conflict(fn: object, *args: object, **kw: object) -> None:
    with pytest.raises(ScsiError) as err:
        fn(*args, **kw)  # type: ignore[operator]
    assert err.value.status == Status.RESERVATION_CONFLICT


def check(fn: object, *args: object, asc: tuple[int, int], **kw: object) -> ScsiError:
    with pytest.raises(ScsiError) as err:
        fn(*args, **kw)  # type: ignore[operator]
    e = err.value
    assert e.status == Status.CHECK_CONDITION and e.sense is not None
    assert (e.sense.asc, e.sense.ascq) == asc
    return e


# -- REGISTER ----------------------------------------------------------------------------


def test_register_then_reregister_with_wrong_key_conflicts() -> None:
    s = out(PrState(), A, Out.REGISTER, params(0, 0x11)).state
    assert keys(s) == [0x11] and s.generation == 1
    conflict(out, s, A, Out.REGISTER, params(0, 0x12))  # RESERVATION KEY must be 0x11
    s = out(s, A, Out.REGISTER, params(0x11, 0x12)).state
    assert keys(s) == [0x12] and s.generation == 2
    s = out(s, A, Out.REGISTER, params(0x12, 0)).state
    assert keys(s) == [] and s.generation == 3


def test_register_unregistered_with_nonzero_key_conflicts() -> None:
    conflict(out, PrState(), A, Out.REGISTER, params(5, 6))


def test_register_zero_key_when_unregistered_changes_nothing() -> None:
    o = out(PrState(), A, Out.REGISTER, params(0, 0))
    assert o.state == PrState() and not o.changed


def test_register_and_ignore_ignores_the_old_key() -> None:
    s = register(PrState(), A, 1)
    s = out(s, A, Out.REGISTER_AND_IGNORE_EXISTING_KEY, params(999, 2)).state
    assert keys(s) == [2]


def test_parameter_list_must_be_24_bytes() -> None:
    for length in (0, 23, 25):
        p = params(0, 1).ljust(length, b"\0")[:length]
        check(out, PrState(), A, Out.REGISTER, p, asc=Asc.PARAMETER_LIST_LENGTH_ERROR.value)


def test_spec_i_pt_registers_named_initiator_ports() -> None:
    ports = tid.encode(B.initiator_name, B.isid) + tid.encode(C.initiator_name, None)
    s = out(PrState(), A, Out.REGISTER, params(0, 7, spec_i_pt=True, ports=ports)).state
    assert keys(s) == [7, 7, 7]
    for nexus in (A, B, C, Nexus.iscsi(C.initiator_name, 0x999, TARGET, 1)):
        assert s.registration_of(nexus) is not None
    assert s.registration_of(Nexus.iscsi(B.initiator_name, 0x999, TARGET, 1)) is None


def test_spec_i_pt_is_only_for_register() -> None:
    ports = tid.encode(B.initiator_name, B.isid)
    p = params(0, 7, spec_i_pt=True, ports=ports)
    check(
        out,
        PrState(),
        A,
        Out.REGISTER_AND_IGNORE_EXISTING_KEY,
        p,
        asc=Asc.INVALID_FIELD_IN_PARAMETER_LIST.value,
    )


def test_spec_i_pt_naming_a_registered_port_is_refused() -> None:
    s = register(PrState(), B, 3)
    ports = tid.encode(B.initiator_name, B.isid)
    p = params(0, 7, spec_i_pt=True, ports=ports)
    check(out, s, A, Out.REGISTER, p, asc=Asc.INVALID_FIELD_IN_PARAMETER_LIST.value)


def test_spec_i_pt_from_registered_nexus_is_invalid_field_in_cdb() -> None:
    s = register(PrState(), A, 3)
    p = params(3, 7, spec_i_pt=True, ports=tid.encode(B.initiator_name, B.isid))
    check(out, s, A, Out.REGISTER, p, asc=Asc.INVALID_FIELD_IN_CDB.value)


def test_all_tg_pt_registers_every_target_port() -> None:
    s = register(PrState(), A, 9, all_tg_pt=True)
    assert s.registration_of(A_OTHER_PORT) is not None
    plain = register(PrState(), A, 9)
    assert plain.registration_of(A_OTHER_PORT) is None


# -- RESERVE / RELEASE -----------------------------------------------------------------


@pytest.mark.parametrize("ptype", ALL_TYPES)
def test_reserve_and_release_every_type(ptype: PrType) -> None:
    s = register(PrState(), A, 0xA)
    gen = s.generation
    s = reserve(s, A, 0xA, ptype)
    assert s.generation == gen  # RESERVE does not bump PRGENERATION
    assert reservation(s) == (0 if ptype.all_registrants else 0xA, int(ptype))
    o = out(s, A, Out.RELEASE, params(0xA), ptype)
    assert reservation(o.state) is None and o.state.generation == gen


def test_reserve_needs_registration_and_key() -> None:
    conflict(out, PrState(), A, Out.RESERVE, params(0), PrType.WRITE_EXCLUSIVE)
    s = register(PrState(), A, 1)
    conflict(out, s, A, Out.RESERVE, params(2), PrType.WRITE_EXCLUSIVE)


def test_reserve_checks_scope_and_type() -> None:
    s = register(PrState(), A, 1)
    e = check(out, s, A, Out.RESERVE, params(1), 2, asc=Asc.INVALID_FIELD_IN_CDB.value)
    assert e.sense is not None and e.sense.field_pointer is not None
    assert e.sense.field_pointer.byte == 2
    check(out, s, A, Out.RESERVE, params(1), 1, 1, asc=Asc.INVALID_FIELD_IN_CDB.value)


def test_second_reserve_by_other_registrant_conflicts_and_holder_type_change_conflicts() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    s = reserve(s, A, 1, PrType.EXCLUSIVE_ACCESS)
    conflict(out, s, B, Out.RESERVE, params(2), PrType.EXCLUSIVE_ACCESS)
    conflict(out, s, A, Out.RESERVE, params(1), PrType.WRITE_EXCLUSIVE)
    assert not out(s, A, Out.RESERVE, params(1), PrType.EXCLUSIVE_ACCESS).changed


def test_all_registrants_reservation_is_held_by_every_registrant() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    s = reserve(s, A, 1, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS)
    assert s.is_holder(B)
    assert not out(s, B, Out.RESERVE, params(2), PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS).changed
    o = out(s, B, Out.RELEASE, params(2), PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS)
    assert o.state.reservation is None
    assert [(n.who, n.asc) for n in o.notices] == [(Registrant.of(A), Asc.RESERVATIONS_RELEASED)]


def test_release_with_wrong_type_is_invalid_release() -> None:
    s = reserve(register(PrState(), A, 1), A, 1, PrType.WRITE_EXCLUSIVE)
    check(out, s, A, Out.RELEASE, params(1), PrType.EXCLUSIVE_ACCESS, asc=(0x26, 0x04))


def test_release_by_non_holder_registrant_is_a_noop_and_by_stranger_conflicts() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    s = reserve(s, A, 1, PrType.WRITE_EXCLUSIVE)
    o = out(s, B, Out.RELEASE, params(2), PrType.WRITE_EXCLUSIVE)
    assert o.state.reservation is not None and not o.changed
    conflict(out, s, C, Out.RELEASE, params(0), PrType.WRITE_EXCLUSIVE)


def test_release_of_registrants_only_notifies_other_registrants() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    s = reserve(s, A, 1, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY)
    o = out(s, A, Out.RELEASE, params(1), PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY)
    assert [(n.who, n.asc) for n in o.notices] == [(Registrant.of(B), Asc.RESERVATIONS_RELEASED)]
    plain = reserve(register(register(PrState(), A, 1), B, 2), A, 1, PrType.EXCLUSIVE_ACCESS)
    assert out(plain, A, Out.RELEASE, params(1), PrType.EXCLUSIVE_ACCESS).notices == ()


@pytest.mark.parametrize("ptype", ALL_TYPES)
def test_unregistering_the_holder(ptype: PrType) -> None:
    """libiscsi ProutReserve.Ownership*: all-registrants reservations outlive the
    reserving registrant; the others go with it (registrants-only with a UA)."""
    s = register(register(PrState(), A, 1), B, 2)
    s = reserve(s, A, 1, ptype)
    o = out(s, A, Out.REGISTER, params(1, 0))
    if ptype.all_registrants:
        assert reservation(o.state) == (0, int(ptype))
        assert o.notices == ()
    else:
        assert reservation(o.state) is None
        expected = [Asc.RESERVATIONS_RELEASED] if ptype.registrants_only else []
        assert [n.asc for n in o.notices] == expected


def test_last_registrant_leaving_ends_an_all_registrants_reservation() -> None:
    s = reserve(register(PrState(), A, 1), A, 1, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)
    assert out(s, A, Out.REGISTER, params(1, 0)).state.reservation is None


def test_key_change_keeps_the_reservation() -> None:
    s = reserve(register(PrState(), A, 1), A, 1, PrType.EXCLUSIVE_ACCESS)
    s = out(s, A, Out.REGISTER, params(1, 5)).state
    assert reservation(s) == (5, PrType.EXCLUSIVE_ACCESS)


# -- CLEAR / PREEMPT ---------------------------------------------------------------------


def test_clear_removes_everything_and_bumps_generation_once() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    s = reserve(s, A, 1, PrType.EXCLUSIVE_ACCESS)
    gen = s.generation
    o = out(s, A, Out.CLEAR, params(1))
    assert keys(o.state) == [] and o.state.reservation is None
    assert o.state.generation == gen + 1
    assert [(n.who, n.asc) for n in o.notices] == [(Registrant.of(B), Asc.RESERVATIONS_PREEMPTED)]
    conflict(out, s, C, Out.CLEAR, params(0))


def test_preempt_without_reservation_removes_registrations() -> None:
    """libiscsi ProutPreempt.RemoveRegistration."""
    s = register(register(PrState(), A, 1), B, 2)
    o = out(s, B, Out.PREEMPT, params(2, 1), PrType.EXCLUSIVE_ACCESS)
    assert keys(o.state) == [2] and o.state.reservation is None
    assert o.state.generation == s.generation + 1
    assert [(n.who, n.asc) for n in o.notices] == [(Registrant.of(A), Asc.REGISTRATIONS_PREEMPTED)]
    assert o.abort == ()


def test_preempt_errors() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    conflict(out, s, B, Out.PREEMPT, params(2, 77), PrType.EXCLUSIVE_ACCESS)  # no such key
    conflict(out, s, C, Out.PREEMPT, params(0, 1), PrType.EXCLUSIVE_ACCESS)  # not registered
    check(
        out,
        s,
        B,
        Out.PREEMPT,
        params(2, 0),
        PrType.EXCLUSIVE_ACCESS,
        asc=Asc.INVALID_FIELD_IN_PARAMETER_LIST.value,
    )


def test_preempting_the_holder_takes_the_reservation() -> None:
    s = register(register(register(PrState(), A, 1), B, 2), C, 3)
    s = reserve(s, A, 1, PrType.WRITE_EXCLUSIVE)
    o = out(s, B, Out.PREEMPT, params(2, 1), PrType.EXCLUSIVE_ACCESS)
    assert reservation(o.state) == (2, PrType.EXCLUSIVE_ACCESS)
    assert keys(o.state) == [2, 3]
    assert [(n.who, n.asc) for n in o.notices] == [
        (Registrant.of(A), Asc.REGISTRATIONS_PREEMPTED),
        (Registrant.of(C), Asc.RESERVATIONS_RELEASED),  # the type changed
    ]


def test_preempt_with_zero_key_under_all_registrants_removes_everyone_else() -> None:
    s = register(register(register(PrState(), A, 1), B, 2), C, 3)
    s = reserve(s, A, 1, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS)
    o = out(s, B, Out.PREEMPT_AND_ABORT, params(2, 0), PrType.EXCLUSIVE_ACCESS)
    assert keys(o.state) == [2]
    assert reservation(o.state) == (2, PrType.EXCLUSIVE_ACCESS)
    assert set(o.abort) == {Registrant.of(A), Registrant.of(C)}


def test_preempt_and_abort_names_the_preempted_nexuses() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    s = reserve(s, A, 1, PrType.EXCLUSIVE_ACCESS)
    o = out(s, B, Out.PREEMPT_AND_ABORT, params(2, 1), PrType.EXCLUSIVE_ACCESS)
    assert o.abort == (Registrant.of(A),)
    assert reservation(o.state) == (2, PrType.EXCLUSIVE_ACCESS)


# -- REGISTER AND MOVE --------------------------------------------------------------------


def move_params(key: int, sark: int, dest: Nexus, *, unreg: bool = False, rel: int = 1) -> bytes:
    t = tid.encode(dest.initiator_name, dest.isid)
    return struct.pack(">QQxBHI", key, sark, 0x02 if unreg else 0, rel, len(t)) + t


def test_register_and_move_hands_the_reservation_over() -> None:
    s = reserve(register(PrState(), A, 1), A, 1, PrType.WRITE_EXCLUSIVE)
    o = out(s, A, Out.REGISTER_AND_MOVE, move_params(1, 8, B, unreg=True), PrType.EXCLUSIVE_ACCESS)
    assert o.state.is_holder(B) and not o.state.is_holder(A)
    assert keys(o.state) == [8]
    assert reservation(o.state) == (8, PrType.EXCLUSIVE_ACCESS)


def test_register_and_move_errors() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    p = move_params(1, 8, C)
    conflict(out, s, A, Out.REGISTER_AND_MOVE, p, PrType.EXCLUSIVE_ACCESS)  # no reservation
    held = reserve(s, A, 1, PrType.EXCLUSIVE_ACCESS)
    conflict(out, held, B, Out.REGISTER_AND_MOVE, move_params(2, 8, C), PrType.EXCLUSIVE_ACCESS)
    bad = PrType.EXCLUSIVE_ACCESS
    fp = Asc.INVALID_FIELD_IN_PARAMETER_LIST.value
    check(out, held, A, Out.REGISTER_AND_MOVE, move_params(1, 0, C), bad, asc=fp)
    check(out, held, A, Out.REGISTER_AND_MOVE, move_params(1, 8, A), bad, asc=fp)
    check(out, held, A, Out.REGISTER_AND_MOVE, move_params(1, 8, C, rel=9), bad, asc=fp)
    ar = reserve(s, A, 1, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)
    conflict(out, ar, A, Out.REGISTER_AND_MOVE, p, PrType.EXCLUSIVE_ACCESS)


# -- PERSISTENT RESERVE IN ------------------------------------------------------------------


def test_read_keys_truncates_but_keeps_additional_length() -> None:
    s = register(register(PrState(), A, 1), B, 2)
    data = persistent_reserve_in(s, cdb_in(In.READ_KEYS, 8))
    assert data == struct.pack(">II", s.generation, 16)


def test_report_capabilities() -> None:
    data = persistent_reserve_in(PrState(aptpl=True), cdb_in(In.REPORT_CAPABILITIES))
    length, caps, flags, mask = struct.unpack(">HBBH2x", data)
    assert length == 8
    assert caps == 0x1D  # CRH, SIP_C, ATP_C, PTPL_C
    assert flags == 0x80 | 0x30 | 0x01  # TMV, ALLOW COMMANDS 011b, PTPL_A
    assert mask == 0xEA01  # all six types


def test_read_full_status_reports_transport_ids_and_holder() -> None:
    s = register(register(PrState(), A, 1), B, 2, all_tg_pt=True)
    s = reserve(s, A, 1, PrType.EXCLUSIVE_ACCESS)
    data = persistent_reserve_in(s, cdb_in(In.READ_FULL_STATUS))
    gen, length = struct.unpack_from(">II", data)
    assert gen == s.generation and length == len(data) - 8
    off, seen = 8, []
    while off < len(data):
        key, flags, st, rel, dlen = struct.unpack_from(">Q4xBB4xHI", data, off)
        port, used = tid.parse(data, off + 24)
        assert used == dlen
        seen.append((key, flags, st, rel, port))
        off += 24 + dlen
    assert seen == [
        (1, 0x01, PrType.EXCLUSIVE_ACCESS, 1, tid.InitiatorPortId(A.initiator_name, A.isid)),
        (2, 0x02, 0, 1, tid.InitiatorPortId(B.initiator_name, B.isid)),
    ]


def test_transport_id_round_trip_and_errors() -> None:
    raw = tid.encode("iqn.2026-11.org.example:x", 0x23D000000001)
    assert raw[0] == 0x45 and (len(raw) - 4) % 4 == 0 and len(raw) - 4 >= 20
    assert b",i,0x23d000000001\0" in raw
    assert tid.parse(raw, 0) == (
        tid.InitiatorPortId("iqn.2026-11.org.example:x", 0x23D000000001),
        len(raw),
    )
    name_only = tid.encode("iqn.2026-11.org.example:x", None)
    assert name_only[0] == 0x05
    with pytest.raises(ScsiError):
        tid.parse(b"\x41" + raw[1:], 0)  # protocol 1 (SPI? no: SRP) is not iSCSI
    with pytest.raises(ScsiError):
        tid.parse(b"\x85" + raw[1:], 0)  # format 10b
