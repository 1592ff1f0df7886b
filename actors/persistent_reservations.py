"""PERSISTENT RESERVE IN / OUT (SPC-4 5.14, 6.16, 6.17) as pure functions.

A PROUT is a request in and an outcome out: the new :class:`PrState`, the
UNIT ATTENTIONs to raise (which registrants, which code) and the registrants
whose tasks PREEMPT AND ABORT must abort. Nothing here awaits or touches the
LU, so every service action and error rule is unit-testable with plain
values, and the LU commits a state only after it is durable (APTPL).
A failed service action raises :class:`ScsiError` and changes nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs

from pyscst.actors import pr_transport_id as tid
from pyscst.actors.pr_state import LU_SCOPE, PrState, PrType, Registrant, Registration, Reservation
from pyscst.scsi.command import Nexus
from pyscst.scsi.opcodes import PersistentReserveIn as In
from pyscst.scsi.opcodes import PersistentReserveOut as Out
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status

#: REPORT CAPABILITIES: TEST UNIT READY passes Exclusive Access, and MODE SENSE,
#: READ DEFECT DATA, RSOC, ... pass Write Exclusive (SPC-4 table 169, 011b)
ALLOW_COMMANDS = 0b011

#: finds the target port with a RELATIVE TARGET PORT IDENTIFIER (REGISTER AND MOVE)
PortResolver = Callable[[int], str | None]

_BASIC_LENGTH = 24
_SCOPED = frozenset(
    {Out.RESERVE, Out.RELEASE, Out.PREEMPT, Out.PREEMPT_AND_ABORT, Out.REGISTER_AND_MOVE}
)


@attrs.frozen
class Notice:
    """A UNIT ATTENTION for the initiator ports of one registrant."""

    who: Registrant
    asc: Asc


@attrs.frozen
class ProutOutcome:
    """What a successful PERSISTENT RESERVE OUT did."""

    state: PrState
    notices: tuple[Notice, ...] = ()
    #: PREEMPT AND ABORT: the tasks of these registrants' nexuses are aborted
    abort: tuple[Registrant, ...] = ()
    #: the state changed: write it (APTPL) or drop a stale APTPL file
    changed: bool = True


@attrs.frozen
class _Params:
    """The basic PROUT parameter list (SPC-4 6.17.3)."""

    key: int
    sark: int
    spec_i_pt: bool
    all_tg_pt: bool
    aptpl: bool
    ports: tuple[tid.InitiatorPortId, ...] = ()


def invalid_release() -> ScsiError:
    """ILLEGAL REQUEST, INVALID RELEASE OF PERSISTENT RESERVATION (26/04)."""
    return ScsiError(Status.CHECK_CONDITION, Sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x04))


def _conflict() -> ScsiError:
    return ScsiError.reservation_conflict()


def _checked_type(cdb: bytes) -> PrType:
    if cdb[2] >> 4 != LU_SCOPE:
        raise ScsiError.invalid_field_in_cdb(2, 7)
    try:
        return PrType(cdb[2] & 0x0F)
    except ValueError:
        raise ScsiError.invalid_field_in_cdb(2, 3) from None


def _basic_params(sa: int, params: bytes) -> _Params:
    if len(params) < _BASIC_LENGTH:
        raise ScsiError.parameter_list_length_error()
    key, sark = struct.unpack_from(">QQ", params, 0)
    flags = params[20]
    spec_i_pt = bool(flags & 0x08)
    ports: tuple[tid.InitiatorPortId, ...] = ()
    if spec_i_pt:
        if sa != Out.REGISTER:
            raise ScsiError.invalid_field_in_parameter_list(20, 3)
        if len(params) < _BASIC_LENGTH + 4:
            raise ScsiError.parameter_list_length_error()
        (length,) = struct.unpack_from(">I", params, _BASIC_LENGTH)
        if _BASIC_LENGTH + 4 + length != len(params):
            raise ScsiError.parameter_list_length_error()
        ports = tuple(tid.parse_list(params, _BASIC_LENGTH + 4, length))
    elif len(params) != _BASIC_LENGTH:
        raise ScsiError.parameter_list_length_error()
    return _Params(key, sark, spec_i_pt, bool(flags & 0x04), bool(flags & 0x01), ports)


def persistent_reserve_out(
    state: PrState, nexus: Nexus, cdb: bytes, params: bytes, resolve_port: PortResolver
) -> ProutOutcome:
    """Run one PROUT service action against ``state``; raise on any error."""
    sa = cdb[1] & 0x1F
    ptype = _checked_type(cdb) if sa in _SCOPED else None
    if sa == Out.REGISTER_AND_MOVE:
        assert ptype is not None
        return _register_and_move(state, nexus, ptype, params, resolve_port)
    p = _basic_params(sa, params)
    reg = state.registration_of(nexus)
    if sa == Out.REGISTER:
        return _register(state, nexus, reg, p, ignore_key=False)
    if sa == Out.REGISTER_AND_IGNORE_EXISTING_KEY:
        return _register(state, nexus, reg, p, ignore_key=True)
    if reg is None or reg.key != p.key:
        raise _conflict()
    if sa == Out.CLEAR:
        return _clear(state, reg)
    assert ptype is not None
    if sa == Out.RESERVE:
        return _reserve(state, nexus, reg, ptype)
    if sa == Out.RELEASE:
        return _release(state, nexus, reg, ptype)
    if sa in (Out.PREEMPT, Out.PREEMPT_AND_ABORT):
        return _preempt(state, reg, ptype, p.sark, abort=sa == Out.PREEMPT_AND_ABORT)
    raise ScsiError.invalid_field_in_cdb(1, 4)


# -- REGISTER / REGISTER AND IGNORE EXISTING KEY -------------------------------


def _register(
    state: PrState, nexus: Nexus, reg: Registration | None, p: _Params, ignore_key: bool
) -> ProutOutcome:
    if reg is None:
        if not ignore_key and p.key != 0:
            raise _conflict()
        if p.sark == 0:
            return ProutOutcome(state, changed=False)
        return _new_registrations(state, nexus, p)
    if not ignore_key and p.key != reg.key:
        raise _conflict()
    if p.spec_i_pt:
        raise ScsiError.invalid_field_in_cdb(1)
    if p.sark == 0:
        outcome = _unregister(state, reg)
        return attrs.evolve(outcome, state=attrs.evolve(outcome.state, aptpl=p.aptpl))
    regs = tuple(Registration(r.who, p.sark) if r is reg else r for r in state.registrations)
    return ProutOutcome(
        attrs.evolve(state, registrations=regs, generation=state.bumped(), aptpl=p.aptpl)
    )


def _new_registrations(state: PrState, nexus: Nexus, p: _Params) -> ProutOutcome:
    own = Registrant.of(nexus, p.all_tg_pt)
    if any(r.who.overlaps(own) for r in state.registrations):
        raise ScsiError.invalid_field_in_parameter_list(20, 2)
    added = [Registration(own, p.sark)]
    target_port = None if p.all_tg_pt else nexus.target_port
    for port in p.ports:
        who = Registrant(port.name, port.isid, target_port, nexus.relative_port)
        if who.matches(nexus) and who.isid is not None:
            continue  # the sender names itself: registered once
        if any(r.who.overlaps(who) for r in (*state.registrations, *added)):
            raise ScsiError.invalid_field_in_parameter_list(_BASIC_LENGTH + 4)
        added.append(Registration(who, p.sark))
    return ProutOutcome(
        attrs.evolve(
            state,
            registrations=(*state.registrations, *added),
            generation=state.bumped(),
            aptpl=p.aptpl,
        )
    )


def _unregister(state: PrState, reg: Registration) -> ProutOutcome:
    """Drop one registration; a holder's reservation goes with it (SPC-4 5.14.11.2.3)."""
    regs = tuple(r for r in state.registrations if r is not reg)
    res = state.reservation
    notices: tuple[Notice, ...] = ()
    if res is not None:
        if res.holder is None:
            if not regs:
                res = None
        elif res.holder == reg.who:
            if res.type.registrants_only:
                notices = tuple(Notice(r.who, Asc.RESERVATIONS_RELEASED) for r in regs)
            res = None
    return ProutOutcome(
        attrs.evolve(state, registrations=regs, reservation=res, generation=state.bumped()),
        notices,
    )


# -- RESERVE / RELEASE / CLEAR -----------------------------------------------------


def _reserve(state: PrState, nexus: Nexus, reg: Registration, ptype: PrType) -> ProutOutcome:
    res = state.reservation
    if res is None:
        holder = None if ptype.all_registrants else reg.who
        return ProutOutcome(attrs.evolve(state, reservation=Reservation(ptype, holder)))
    if state.is_holder(nexus) and res.type == ptype and res.scope == LU_SCOPE:
        return ProutOutcome(state, changed=False)
    raise _conflict()


def _release(state: PrState, nexus: Nexus, reg: Registration, ptype: PrType) -> ProutOutcome:
    res = state.reservation
    if res is None or not state.is_holder(nexus):
        return ProutOutcome(state, changed=False)
    if res.type != ptype or res.scope != LU_SCOPE:
        raise invalid_release()
    notices: tuple[Notice, ...] = ()
    if res.type.registrants_have_access:
        notices = tuple(
            Notice(r.who, Asc.RESERVATIONS_RELEASED) for r in state.registrations if r is not reg
        )
    return ProutOutcome(attrs.evolve(state, reservation=None), notices)


def _clear(state: PrState, reg: Registration) -> ProutOutcome:
    notices = tuple(
        Notice(r.who, Asc.RESERVATIONS_PREEMPTED) for r in state.registrations if r is not reg
    )
    cleared = PrState(generation=state.bumped(), aptpl=state.aptpl)
    return ProutOutcome(cleared, notices)


# -- PREEMPT / PREEMPT AND ABORT ---------------------------------------------------


def _preempt(
    state: PrState, reg: Registration, ptype: PrType, sark: int, abort: bool
) -> ProutOutcome:
    """SPC-4 5.14.11.4: remove the registrations SARK names, maybe take the reservation."""
    res = state.reservation
    others = [r for r in state.registrations if r is not reg]
    new_res = res
    if res is not None and res.holder is None and sark == 0:
        removed = others  # all registrants: everybody else goes
        new_res = Reservation(ptype, None if ptype.all_registrants else reg.who)
    elif res is not None and res.holder is not None and sark != 0 and sark == state.holder_key():
        removed = [r for r in others if r.key == sark]
        new_res = Reservation(ptype, None if ptype.all_registrants else reg.who)
    else:
        if sark == 0:
            raise ScsiError.invalid_field_in_parameter_list(8)
        removed = [r for r in others if r.key == sark]
        if not removed:
            raise _conflict()
    gone = {id(r) for r in removed}
    kept = tuple(r for r in state.registrations if id(r) not in gone)
    notices = [Notice(r.who, Asc.REGISTRATIONS_PREEMPTED) for r in removed]
    if res is not None and new_res is not res and (res.type, res.scope) != (ptype, LU_SCOPE):
        notices += [Notice(r.who, Asc.RESERVATIONS_RELEASED) for r in kept if r is not reg]
    new_state = attrs.evolve(
        state, registrations=kept, reservation=new_res, generation=state.bumped()
    )
    return ProutOutcome(new_state, tuple(notices), tuple(r.who for r in removed) if abort else ())


# -- REGISTER AND MOVE ------------------------------------------------------------------


def _register_and_move(
    state: PrState, nexus: Nexus, ptype: PrType, params: bytes, resolve_port: PortResolver
) -> ProutOutcome:
    if len(params) < _BASIC_LENGTH:
        raise ScsiError.parameter_list_length_error()
    key, sark = struct.unpack_from(">QQ", params, 0)
    unreg, aptpl = bool(params[17] & 0x02), bool(params[17] & 0x01)
    relative_port, length = struct.unpack_from(">HI", params, 18)
    if _BASIC_LENGTH + length > len(params):
        raise ScsiError.parameter_list_length_error()
    reg = state.registration_of(nexus)
    if reg is None or reg.key != key:
        raise _conflict()
    res = state.reservation
    if res is None or not state.is_holder(nexus) or res.type.all_registrants:
        raise _conflict()
    if sark == 0:
        raise ScsiError.invalid_field_in_parameter_list(8)
    port, _used = tid.parse(params[: _BASIC_LENGTH + length], _BASIC_LENGTH)
    target_port = resolve_port(relative_port)
    if target_port is None:
        raise ScsiError.invalid_field_in_parameter_list(18)
    dest = Registrant(port.name, port.isid, target_port, relative_port)
    if dest.overlaps(reg.who):
        raise ScsiError.invalid_field_in_parameter_list(_BASIC_LENGTH)
    regs = list(state.registrations)
    existing = next((r for r in regs if r.who.overlaps(dest)), None)
    if existing is None:
        regs.append(Registration(dest, sark))
        holder = dest
    else:
        holder = existing.who
    if unreg:
        regs.remove(reg)
    new_state = PrState(
        generation=state.bumped(),
        registrations=tuple(regs),
        reservation=Reservation(ptype, holder),
        aptpl=aptpl,
    )
    return ProutOutcome(new_state)


# -- PERSISTENT RESERVE IN ------------------------------------------------------------------


def persistent_reserve_in(state: PrState, cdb: bytes) -> bytes:
    """READ KEYS, READ RESERVATION, REPORT CAPABILITIES or READ FULL STATUS data."""
    sa = cdb[1] & 0x1F
    allocation = int.from_bytes(cdb[7:9], "big")
    if sa == In.REPORT_CAPABILITIES:
        data = report_capabilities(state)
    else:
        if sa == In.READ_KEYS:
            body = b"".join(struct.pack(">Q", r.key) for r in state.registrations)
        elif sa == In.READ_RESERVATION:
            body = _reservation_descriptor(state)
        elif sa == In.READ_FULL_STATUS:
            body = b"".join(_full_status_descriptor(state, r) for r in state.registrations)
        else:
            raise ScsiError.invalid_field_in_cdb(1, 4)
        data = struct.pack(">II", state.generation, len(body)) + body
    return data[:allocation]


def _scope_type(res: Reservation) -> int:
    return (res.scope << 4) | int(res.type)


def _reservation_descriptor(state: PrState) -> bytes:
    res = state.reservation
    if res is None:
        return b""
    return struct.pack(">QIBBH", state.holder_key(), 0, 0, _scope_type(res), 0)


def _full_status_descriptor(state: PrState, reg: Registration) -> bytes:
    res = state.reservation
    holder = res is not None and (res.holder is None or res.holder == reg.who)
    who = reg.who
    transport_id = tid.encode(who.initiator_name, who.isid)
    flags = (0x02 if who.target_port is None else 0) | (0x01 if holder else 0)
    return (
        struct.pack(
            ">Q4xBB4xHI",
            reg.key,
            flags,
            _scope_type(res) if holder and res is not None else 0,
            who.relative_port & 0xFFFF,
            len(transport_id),
        )
        + transport_id
    )


def report_capabilities(state: PrState) -> bytes:
    """SPC-4 6.16.4: CRH, SIP_C, ATP_C, PTPL_C; TMV with all six types; PTPL_A."""
    caps = 0x10 | 0x08 | 0x04 | 0x01
    flags = 0x80 | (ALLOW_COMMANDS << 4) | (0x01 if state.aptpl else 0)
    return struct.pack(">HBBBBH", 8, caps, flags, 0x80 | 0x40 | 0x20 | 0x08 | 0x02, 0x01, 0)
