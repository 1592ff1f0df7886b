"""The RESERVATION CONFLICT table, for every opcode the disk LU answers.

Each command's ``ResvClass`` is checked against SPC-4 5.13.1 (table "SPC
commands that are allowed in the presence of various reservations") for all
six persistent reservation types, from the holder, a registered non-holder
and an unregistered nexus, and against the SPC-2 rules; plus the SPC-4 5.12.3
meeting points of the two (RESERVE/RELEASE under registrations, PR commands
under an SPC-2 reservation).
"""

from __future__ import annotations

import struct

import pytest

from pyscst.actors.core_table import CORE_TABLE
from pyscst.actors.pr_state import PrState, PrType, Registrant, Registration, Reservation
from pyscst.actors.reservations import Reservations
from pyscst.devices.disk_table import SBC_TABLE
from pyscst.scsi.cdb import OpSpec, ResvClass
from pyscst.scsi.command import Nexus
from pyscst.scsi.opcodes import Op
from pyscst.scsi.sense import ScsiError, Status

TABLE = CORE_TABLE.merged(SBC_TABLE)
TARGET = "iqn.2026-11.org.pyscst:t"
HOLDER = Nexus.iscsi("iqn.2026-11.org.example:holder", 1, TARGET, 1)
REGISTERED = Nexus.iscsi("iqn.2026-11.org.example:registered", 2, TARGET, 1)
STRANGER = Nexus.iscsi("iqn.2026-11.org.example:stranger", 3, TARGET, 1)

OK, CONFLICT = "ok", "conflict"
WE, EA = PrType.WRITE_EXCLUSIVE, PrType.EXCLUSIVE_ACCESS
WE_RO, EA_RO = PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY
WE_AR, EA_AR = PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS

#: SPC-4 table 61 by command class: type -> (registered non-holder, unregistered)
PR_TABLE: dict[ResvClass, dict[PrType, tuple[str, str]]] = {
    ResvClass.READ: {
        WE: (OK, OK), EA: (CONFLICT, CONFLICT),
        WE_RO: (OK, OK), EA_RO: (OK, CONFLICT),
        WE_AR: (OK, OK), EA_AR: (OK, CONFLICT),
    },
    ResvClass.WRITE: {
        WE: (CONFLICT, CONFLICT), EA: (CONFLICT, CONFLICT),
        WE_RO: (OK, CONFLICT), EA_RO: (OK, CONFLICT),
        WE_AR: (OK, CONFLICT), EA_AR: (OK, CONFLICT),
    },
}  # fmt: skip


def sample_cdbs(spec: OpSpec) -> list[bytes]:
    """Zeroed CDBs for a row; both variants where the class depends on a field."""
    cdb = bytearray(spec.cdb_length)
    cdb[0] = spec.opcode
    if spec.service_action is not None:
        cdb[1] = spec.service_action
    variants = [bytes(cdb)]
    if spec.resv_of is not None:
        for byte4 in (0x01, 0x03, 0x11):
            other = bytearray(cdb)
            other[4] = byte4
            variants.append(bytes(other))
    return variants


CASES = [(spec, cdb) for spec in TABLE for cdb in sample_cdbs(spec)]
IDS = [f"{spec.name}-{cdb.hex()}" for spec, cdb in CASES]


def pr_reserved(ptype: PrType) -> Reservations:
    holder = Registrant.of(HOLDER)
    state = PrState(
        generation=2,
        registrations=(Registration(holder, 1), Registration(Registrant.of(REGISTERED), 2)),
        reservation=Reservation(ptype, None if ptype.all_registrants else holder),
    )
    return Reservations(state)


def outcome(resv: Reservations, spec: OpSpec, cdb: bytes, nexus: Nexus) -> str:
    try:
        resv.check(spec, cdb, nexus)
    except ScsiError as exc:
        assert exc.status == Status.RESERVATION_CONFLICT
        return CONFLICT
    return OK


@pytest.mark.parametrize("ptype", list(PrType))
@pytest.mark.parametrize(("spec", "cdb"), CASES, ids=IDS)
def test_persistent_reservation_conflicts(spec: OpSpec, cdb: bytes, ptype: PrType) -> None:
    resv = pr_reserved(ptype)
    klass = spec.reservation_class(cdb)
    expected = PR_TABLE.get(klass, {}).get(ptype, (OK, OK))
    got = (outcome(resv, spec, cdb, REGISTERED), outcome(resv, spec, cdb, STRANGER))
    assert got == expected, f"{spec.name} ({klass.value}) under {ptype.name}"
    assert outcome(resv, spec, cdb, HOLDER) == OK


@pytest.mark.parametrize(("spec", "cdb"), CASES, ids=IDS)
def test_spc2_reservation_conflicts(spec: OpSpec, cdb: bytes) -> None:
    resv = Reservations()
    resv.reserve(HOLDER)
    klass = spec.reservation_class(cdb)
    pr_command = spec.opcode in (Op.PERSISTENT_RESERVE_IN, Op.PERSISTENT_RESERVE_OUT)
    assert outcome(resv, spec, cdb, STRANGER) == (OK if klass is ResvClass.ALLOWED else CONFLICT)
    # SPC-2 5.5.1: while reserved, every PR command conflicts, even from the holder
    assert outcome(resv, spec, cdb, HOLDER) == (CONFLICT if pr_command else OK)


def test_no_reservation_no_conflict() -> None:
    resv = Reservations()
    assert all(outcome(resv, spec, cdb, STRANGER) == OK for spec, cdb in CASES)


def test_command_classes_follow_spc4() -> None:
    def klass(op: int, sa: int | None = None, byte4: int = 0) -> ResvClass:
        spec = TABLE.get(op, sa)
        assert spec is not None
        cdb = bytearray(spec.cdb_length)
        cdb[0] = op
        if len(cdb) > 4:
            cdb[4] = byte4
        return spec.reservation_class(bytes(cdb))

    assert klass(Op.INQUIRY) is ResvClass.ALLOWED
    assert klass(Op.REPORT_LUNS) is ResvClass.ALLOWED
    assert klass(Op.REQUEST_SENSE) is ResvClass.ALLOWED
    assert klass(Op.TEST_UNIT_READY) is ResvClass.PR_ALLOWED
    assert klass(Op.READ_CAPACITY_10) is ResvClass.PR_ALLOWED
    assert klass(Op.READ_10) is ResvClass.READ
    assert klass(Op.MODE_SENSE_10) is ResvClass.READ
    assert klass(Op.WRITE_10) is ResvClass.WRITE
    assert klass(Op.MODE_SELECT_10) is ResvClass.WRITE
    assert klass(Op.SYNCHRONIZE_CACHE_10) is ResvClass.WRITE
    assert klass(Op.PERSISTENT_RESERVE_IN, 0) is ResvClass.SPECIAL
    assert klass(Op.PERSISTENT_RESERVE_OUT, 0) is ResvClass.SPECIAL
    assert klass(Op.RESERVE_6) is ResvClass.SPECIAL
    assert klass(Op.RELEASE_6) is ResvClass.ALLOWED
    assert klass(Op.PREVENT_ALLOW_MEDIUM_REMOVAL, byte4=0) is ResvClass.ALLOWED
    assert klass(Op.PREVENT_ALLOW_MEDIUM_REMOVAL, byte4=1) is ResvClass.WRITE


# -- SPC-2 RESERVE/RELEASE meeting persistent reservations (SPC-4 5.12.3) ---------------


def test_reserve_and_release_conflict_while_registrations_exist() -> None:
    state = PrState(registrations=(Registration(Registrant.of(REGISTERED), 2),))
    resv = Reservations(state)
    for fn in (resv.reserve, resv.release):
        for nexus in (REGISTERED, STRANGER):
            with pytest.raises(ScsiError) as err:
                fn(nexus)
            assert err.value.status == Status.RESERVATION_CONFLICT
    assert resv.holder is None


@pytest.mark.parametrize("ptype", list(PrType))
def test_reserve_from_holder_is_good_and_does_nothing(ptype: PrType) -> None:
    resv = pr_reserved(ptype)
    resv.reserve(HOLDER)
    resv.release(HOLDER)
    assert resv.holder is None and resv.pr.reservation is not None
    if ptype.registrants_have_access:
        resv.reserve(REGISTERED)  # registrants too, under these types
    else:
        with pytest.raises(ScsiError):
            resv.reserve(REGISTERED)
    with pytest.raises(ScsiError):
        resv.reserve(STRANGER)


def test_spc2_reservation_is_released_by_reset_and_nexus_loss_but_pr_is_not() -> None:
    resv = pr_reserved(PrType.WRITE_EXCLUSIVE)
    before = resv.pr
    resv.reset()
    resv.nexus_lost(HOLDER)
    assert resv.pr == before
    plain = Reservations()
    plain.reserve(HOLDER)
    plain.nexus_lost(STRANGER)
    assert plain.holder == HOLDER
    plain.nexus_lost(HOLDER)
    assert plain.holder is None


def test_prin_cdb_rows_refuse_unknown_service_actions() -> None:
    for sa in range(4, 0x20):
        with pytest.raises(ScsiError) as err:
            TABLE.lookup(struct.pack(">BB5xHB", 0x5E, sa, 100, 0))
        assert err.value.sense is not None and err.value.sense.asc == 0x24
    assert TABLE.lookup(struct.pack(">BB5xHB", 0x5E, 3, 100, 0)).opcode == 0x5E
    with pytest.raises(ScsiError):  # REPLACE LOST RESERVATION is not offered
        TABLE.lookup(struct.pack(">BBBHIB", 0x5F, 8, 0, 0, 24, 0))
