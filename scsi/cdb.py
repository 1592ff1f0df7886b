"""CDB tables: one table per device type drives validation and RSOC.

Each :class:`OpSpec` row says how long the CDB is, which bits it may set (the
CDB USAGE DATA that REPORT SUPPORTED OPERATION CODES reports), which way data
flows, how the command behaves under reservations and which handler runs it.
:meth:`OpTable.lookup` is on every command's path, so it works from a
precomputed dict and an integer mask per opcode: any bit set outside the mask
is INVALID FIELD IN CDB pointing at the first offending byte and its highest
offending bit. Because the table is the single source of truth, RSOC output
and CDB checking can never disagree.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import attrs

from pyscst.scsi.command import Buffer, DataDirection, ExecContext, ScsiCommand
from pyscst.scsi.opcodes import SERVICE_ACTION_OPCODES
from pyscst.scsi.sense import ScsiError

Handler = Callable[[Any, ScsiCommand, ExecContext], Awaitable[Buffer | None]]


class NeedsAwait:
    """What a fast handler returns when it cannot finish without awaiting."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEEDS_AWAIT"


NEEDS_AWAIT = NeedsAwait()


class Pending:
    """What a fast handler returns when it started I/O that ends later (a read
    queued on the store's io_uring ring): the LU keeps the command in its task
    set, without a task of its own, and answers it from :meth:`finish`.

    A spawned task per cache miss (plus its cancel scope and the handler's
    coroutine chain) costs more CPU than the rest of the command; this is the
    same command without it. Whoever made it calls :meth:`finish` exactly
    once; :meth:`cancel` (a TMF, a lost nexus) asks the I/O to stop early and
    the command still ends through :meth:`finish`, only after the I/O no
    longer touches the command's buffer.
    """

    __slots__ = ("_cancel", "_done", "_result")

    def __init__(self) -> None:
        self._done: Callable[[Any], object] | None = None
        self._result: Any = _UNSET
        self._cancel: Callable[[], object] | None = None

    def on_cancel(self, cancel: Callable[[], object]) -> None:
        self._cancel = cancel

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()

    def finish(self, result: Any) -> None:
        """The I/O ended. ``result``: the command's data (None: GOOD, no
        data), an exception (a ScsiError is answered as such), or NEEDS_AWAIT:
        run the command's awaiting handler after all (a short read, an engine
        that broke)."""
        done = self._done
        if done is None:
            self._result = result  # (before the LU took it: it is handed over then)
        else:
            self._done = None
            done(result)

    def then(self, done: Callable[[Any], object]) -> None:
        """Call ``done`` with the result (at once if it is there already)."""
        result = self._result
        if result is _UNSET:
            self._done = done
        else:
            self._result = _UNSET
            done(result)


_UNSET = object()
#: Synchronous twin of a handler for the common case (a page-cache hit, data
#: that came as immediate data): the LU runs it inline, in arrival order, and
#: only spawns a task when it answers NEEDS_AWAIT; a store that queues the
#: I/O instead of blocking answers a :class:`Pending`. Same checks, same results.
FastHandler = Callable[[Any, ScsiCommand, ExecContext], "Buffer | NeedsAwait | Pending | None"]


class OpFlags(enum.IntFlag):
    """What the middle level must know about a command before running it."""

    NONE = 0
    #: not failed by a pending UNIT ATTENTION (INQUIRY, REPORT LUNS, REQUEST SENSE)
    UA_EXEMPT = 1
    #: modifies the medium: DATA PROTECT / WRITE PROTECTED on a read-only mapping
    WRITES_MEDIUM = 2
    #: accesses the medium: NOT READY while stopped or without medium
    NEEDS_MEDIUM = 4
    #: reports or changes LU-wide state; runs as if ORDERED (MODE SELECT, ...)
    SERIALIZING = 8
    #: describes the medium without reading it (READ CAPACITY): NOT READY only
    #: while no medium is present (a stopped unit still answers)
    NEEDS_PRESENT = 16
    #: an atomic write (WRITE ATOMIC): overlapping commands are ordered around
    #: it even when the Control page allows unrestricted reordering (QAM=1)
    ATOMIC = 32


class Readiness(enum.IntEnum):
    """What a command needs of the unit before it may run (from its flags).

    The LU checks it once, just before the handler runs, through the device
    type's ``check_ready``: handlers never check readiness themselves.
    """

    #: runs whatever the medium's state (INQUIRY, REQUEST SENSE, MODE SENSE, ...)
    ANY = 0
    #: a medium must be present (READ CAPACITY, READ DEFECT DATA)
    PRESENT = 1
    #: the medium must be present and the unit started (READ, WRITE, TUR, ...)
    READY = 2


class ResvClass(enum.Enum):
    """How a command from a non-holder behaves under a reservation.

    Derived from SPC-4 5.13.1 (table "SPC commands that are allowed in the
    presence of various reservations"), SBC-3 4.17 and the SPC-2 RESERVE rules.
    "Holder" means the reserving I_T nexus (SPC-2) or a registrant where the
    persistent reservation type grants registrants access.
    """

    #: allowed under any reservation, SPC-2 or persistent (INQUIRY, REPORT LUNS,
    #: REQUEST SENSE, RSOC, RELEASE, PERSISTENT RESERVE IN)
    ALLOWED = "allowed"
    #: allowed under any persistent reservation; conflicts with an SPC-2
    #: reservation (TEST UNIT READY, READ CAPACITY)
    PR_ALLOWED = "pr-allowed"
    #: allowed under Write Exclusive types; conflicts under Exclusive Access
    #: types and an SPC-2 reservation (READ, VERIFY, MODE SENSE, ...)
    READ = "read"
    #: conflicts for non-registrants under every reservation type and for
    #: anyone but the holder of an SPC-2 reservation (WRITE, MODE SELECT, ...)
    WRITE = "write"
    #: the reservation logic itself decides (RESERVE, PERSISTENT RESERVE OUT)
    SPECIAL = "special"


@attrs.frozen
class OpSpec:
    """One row of a device type's command table."""

    opcode: int
    service_action: int | None
    name: str
    cdb_length: int
    #: CDB USAGE DATA: the bits the CDB may set, byte by byte (byte 0 is the
    #: opcode; for service-action commands byte 1 holds the service action)
    mask: bytes
    direction: DataDirection
    handler: Handler
    flags: OpFlags = OpFlags.NONE
    resv: ResvClass = ResvClass.WRITE
    #: (first LBA, number of blocks) the command touches, for ordering/faults
    lba_range: Callable[[bytes], tuple[int, int]] | None = None
    #: (nominal, recommended) command timeouts in seconds for RSOC (RCTD)
    timeouts: tuple[int, int] | None = None
    #: when the reservation class depends on CDB fields (PREVENT, START)
    resv_of: Callable[[bytes], ResvClass] | None = None
    #: optional synchronous fast path (see FastHandler)
    fast: FastHandler | None = None
    #: ``flags & WRITES_MEDIUM`` once, as a plain bool (enum flag arithmetic
    #: costs microseconds on the per-command path)
    writes_medium: bool = attrs.field(init=False)
    #: the flags the dispatcher reads per command, precomputed the same way
    ua_exempt: bool = attrs.field(init=False)
    serializing: bool = attrs.field(init=False)
    atomic: bool = attrs.field(init=False)
    readiness: Readiness = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        flags = self.flags
        object.__setattr__(self, "writes_medium", bool(flags & OpFlags.WRITES_MEDIUM))
        object.__setattr__(self, "ua_exempt", bool(flags & OpFlags.UA_EXEMPT))
        object.__setattr__(self, "serializing", bool(flags & OpFlags.SERIALIZING))
        object.__setattr__(self, "atomic", bool(flags & OpFlags.ATOMIC))
        if flags & OpFlags.NEEDS_MEDIUM:
            readiness = Readiness.READY
        elif flags & OpFlags.NEEDS_PRESENT:
            readiness = Readiness.PRESENT
        else:
            readiness = Readiness.ANY
        object.__setattr__(self, "readiness", readiness)
        if len(self.mask) != self.cdb_length:
            raise ValueError(f"{self.name}: mask is {len(self.mask)} bytes, CDB {self.cdb_length}")
        if self.mask[0] != self.opcode:
            raise ValueError(f"{self.name}: mask byte 0 must be the opcode")
        if (self.service_action is None) == (self.opcode in SERVICE_ACTION_OPCODES):
            raise ValueError(f"{self.name}: service action presence does not match opcode")
        if self.service_action is not None and self.mask[1] & 0x1F != self.service_action:
            raise ValueError(f"{self.name}: mask byte 1 must carry the service action")

    def reservation_class(self, cdb: bytes) -> ResvClass:
        """The reservation class of this particular CDB."""
        if self.resv_of is not None:
            return self.resv_of(cdb)
        return self.resv


@attrs.frozen
class _Check:
    """Precomputed per-spec field check: bits that must be zero, as an int."""

    spec: OpSpec
    length: int
    forbidden: int


def _check_of(spec: OpSpec) -> _Check:
    allowed = bytearray(spec.mask)
    allowed[0] = 0xFF
    if spec.service_action is not None:
        allowed[1] |= 0x1F  # matched exactly by the service-action dispatch
    full = (1 << (8 * spec.cdb_length)) - 1
    return _Check(spec, spec.cdb_length, full & ~int.from_bytes(allowed, "big"))


def _locate(bad: int, length: int) -> ScsiError:
    """Field pointer to the first byte with a forbidden bit, highest bit first."""
    raw = bad.to_bytes(length, "big")
    for i, byte in enumerate(raw):
        if byte:
            return ScsiError.invalid_field_in_cdb(i, byte.bit_length() - 1)
    raise AssertionError("no forbidden bit set")


#: rows made on demand for commands a table does not list: a pass-through
#: device forwards what its backend may know and pyscst does not
Fallback = Callable[[bytes], "OpSpec | None"]


class OpTable:
    """The commands one device type supports, indexed for fast lookup.

    ``fallback`` (a pass-through device's) answers for a command no row
    lists: the row it returns runs it unchecked (the device it is forwarded
    to checks it); None from it, or no fallback, is INVALID COMMAND OPERATION
    CODE as usual. REPORT SUPPORTED OPERATION CODES lists only the rows."""

    def __init__(self, specs: Iterable[OpSpec], fallback: Fallback | None = None) -> None:
        self.fallback = fallback
        self._specs: tuple[OpSpec, ...] = tuple(
            sorted(specs, key=lambda s: (s.opcode, s.service_action or 0))
        )
        self._by_op: dict[int, _Check | dict[int, _Check]] = {}
        for spec in self._specs:
            check = _check_of(spec)
            if spec.service_action is None:
                if spec.opcode in self._by_op:
                    raise ValueError(f"duplicate opcode {spec.opcode:#04x} ({spec.name})")
                self._by_op[spec.opcode] = check
            else:
                entry = self._by_op.setdefault(spec.opcode, {})
                assert isinstance(entry, dict)
                if spec.service_action in entry:
                    raise ValueError(f"duplicate {spec.opcode:#04x}/{spec.service_action:#04x}")
                entry[spec.service_action] = check

    def merged(self, other: OpTable) -> OpTable:
        """A table holding both tables' commands (duplicates are an error)."""
        return OpTable((*self._specs, *other._specs), self.fallback or other.fallback)

    def overlaid(self, rows: Iterable[OpSpec]) -> OpTable:
        """This table with ``rows`` added; a row for an opcode (and service
        action) this table already has replaces it. How a device type's table
        builds on the shared SPC layer: it adds its command set and overrides
        what it answers differently."""
        extra = list(rows)
        replaced = {(s.opcode, s.service_action) for s in extra}
        if len(replaced) != len(extra):
            raise ValueError("duplicate rows in a table overlay")
        kept = [s for s in self._specs if (s.opcode, s.service_action) not in replaced]
        return OpTable((*kept, *extra), self.fallback)

    def lookup(self, cdb: bytes) -> OpSpec:
        """The spec for ``cdb``, after checking every field bit against the mask.

        Raises INVALID COMMAND OPERATION CODE for an unknown opcode, INVALID
        FIELD IN CDB (byte 1 bit 4) for an unknown service action, and INVALID
        FIELD IN CDB with a field pointer for any bit outside the usage mask.
        """
        entry = self._by_op.get(cdb[0])
        if entry is None:
            spec = self.fallback(cdb) if self.fallback is not None else None
            if spec is None:
                raise ScsiError.invalid_opcode()
            return spec
        if isinstance(entry, _Check):
            check = entry
        else:
            if len(cdb) < 2:  # no room for the service action
                raise ScsiError.invalid_field_in_cdb(len(cdb))
            found = entry.get(cdb[1] & 0x1F)
            if found is None:
                spec = self.fallback(cdb) if self.fallback is not None else None
                if spec is None:
                    raise ScsiError.invalid_field_in_cdb(1, 4)
                return spec
            check = found
        n = check.length
        if len(cdb) < n:
            raise ScsiError.invalid_field_in_cdb(len(cdb))
        bad = int.from_bytes(cdb[:n], "big") & check.forbidden
        if bad:
            raise _locate(bad, n)
        return check.spec

    def get(self, opcode: int, service_action: int | None = None) -> OpSpec | None:
        """The spec for an opcode (and service action), without CDB checks."""
        entry = self._by_op.get(opcode)
        if entry is None:
            return None
        if isinstance(entry, dict):
            if service_action is None:
                return None
            check = entry.get(service_action)
            return None if check is None else check.spec
        return entry.spec

    def peek(self, cdb: bytes) -> OpSpec | None:
        """The row ``cdb`` would run, without checking its fields (None if
        none): for decisions taken before the CDB is checked (UA exemption)."""
        entry = self._by_op.get(cdb[0])
        if isinstance(entry, dict):
            found = entry.get(cdb[1] & 0x1F) if len(cdb) > 1 else None
            if found is not None:
                return found.spec
        elif entry is not None:
            return entry.spec
        return self.fallback(cdb) if self.fallback is not None else None

    def has_service_actions(self, opcode: int) -> bool:
        return isinstance(self._by_op.get(opcode), dict)

    @property
    def specs(self) -> tuple[OpSpec, ...]:
        return self._specs

    def __iter__(self) -> Iterator[OpSpec]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, int):
            return key in self._by_op
        if isinstance(key, tuple) and len(key) == 2:
            return self.get(key[0], key[1]) is not None
        return False


# --- field helpers shared by handlers ---------------------------------------


def rw6(cdb: bytes) -> tuple[int, int]:
    """(LBA, blocks) of a 6-byte READ/WRITE; a transfer length of 0 means 256."""
    lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
    return lba, cdb[4] or 256


# (compiled once: struct.unpack_from(format, ...) looks the format up in a
# cache on every call, and these run for every READ and WRITE)
_RW10 = struct.Struct(">IBH").unpack_from
_RW12 = struct.Struct(">II").unpack_from
_RW16 = struct.Struct(">QI").unpack_from


def rw10(cdb: bytes) -> tuple[int, int]:
    """(LBA, blocks) of a 10-byte LBA command (READ/WRITE/VERIFY/PRE-FETCH/SYNC)."""
    lba, _group, n = _RW10(cdb, 2)
    return lba, n


def rw12(cdb: bytes) -> tuple[int, int]:
    """(LBA, blocks) of a 12-byte LBA command."""
    lba, n = _RW12(cdb, 2)
    return lba, n


def rw16(cdb: bytes) -> tuple[int, int]:
    """(LBA, blocks) of a 16-byte LBA command."""
    lba, n = _RW16(cdb, 2)
    return lba, n


def alloc_len(cdb: bytes, offset: int, size: int) -> int:
    """The big-endian ALLOCATION LENGTH (or PARAMETER LIST LENGTH) field."""
    return int.from_bytes(cdb[offset : offset + size], "big")


def truncate(data: bytes | bytearray, allocation_length: int) -> bytes | bytearray:
    """Data-in never exceeds the allocation length (SPC-4 4.2.5.6)."""
    if len(data) > allocation_length:
        return data[:allocation_length]
    return data


# --- REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS ------------

_SUPPORT_NOT_SUPPORTED = 0b001
_SUPPORT_STANDARD = 0b011


def _timeouts_descriptor(spec: OpSpec) -> bytes:
    nominal, recommended = spec.timeouts or (0, 0)
    return struct.pack(">HBBII", 0x0A, 0, 0, nominal, recommended)


def _one_command(spec: OpSpec | None, rctd: bool) -> bytes:
    if spec is None:
        return bytes((0, _SUPPORT_NOT_SUPPORTED, 0, 0))
    head = bytes((0, (0x80 if rctd else 0) | _SUPPORT_STANDARD)) + struct.pack(
        ">H", spec.cdb_length
    )
    return head + spec.mask + (_timeouts_descriptor(spec) if rctd else b"")


def build_rsoc(table: OpTable, cdb: bytes) -> bytes:
    """REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN / 0x0C) parameter data.

    The CDB's own reserved bits were checked by the table; this validates
    REPORTING OPTIONS against the requested command and truncates to the
    ALLOCATION LENGTH.
    """
    rctd = bool(cdb[2] & 0x80)
    options = cdb[2] & 0x07
    opcode = cdb[3]
    sa = int.from_bytes(cdb[4:6], "big")
    allocation = alloc_len(cdb, 6, 4)
    if options == 0b000:
        body = bytearray()
        for spec in table:
            has_sa = spec.service_action is not None
            body += struct.pack(
                ">BBHBBH",
                spec.opcode,
                0,
                spec.service_action or 0,
                0,
                (0x02 if rctd else 0) | (0x01 if has_sa else 0),
                spec.cdb_length,
            )
            if rctd:
                body += _timeouts_descriptor(spec)
        data = struct.pack(">I", len(body)) + bytes(body)
    elif options == 0b001:
        if table.has_service_actions(opcode):
            raise ScsiError.invalid_field_in_cdb(3)
        if sa:
            raise ScsiError.invalid_field_in_cdb(4)
        data = _one_command(table.get(opcode), rctd)
    elif options == 0b010:
        if opcode in table and not table.has_service_actions(opcode):
            raise ScsiError.invalid_field_in_cdb(3)
        if sa > 0x1F:
            raise ScsiError.invalid_field_in_cdb(4)
        data = _one_command(table.get(opcode, sa), rctd)
    elif options == 0b011:
        if table.has_service_actions(opcode):
            data = _one_command(table.get(opcode, sa) if sa <= 0x1F else None, rctd)
        else:
            data = _one_command(table.get(opcode), rctd)
    else:
        raise ScsiError.invalid_field_in_cdb(2, 2)
    return bytes(data[:allocation])


#: SAM-5 task management function names -> (byte, bit) in the REPORT SUPPORTED
#: TASK MANAGEMENT FUNCTIONS parameter data (SPC-4 6.39)
TMF_BITS: dict[str, tuple[int, int]] = {
    "ABORT_TASK": (0, 7),
    "ABORT_TASK_SET": (0, 6),
    "CLEAR_ACA": (0, 5),
    "CLEAR_TASK_SET": (0, 4),
    "LOGICAL_UNIT_RESET": (0, 3),
    "QUERY_TASK": (0, 2),
    "TARGET_RESET": (0, 1),
    "WAKEUP": (0, 0),
    "QUERY_ASYNCHRONOUS_EVENT": (1, 2),
    "QUERY_TASK_SET": (1, 1),
    "I_T_NEXUS_RESET": (1, 0),
}


def build_report_tmf(cdb: bytes, supported: set[str]) -> bytes:
    """REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (MAINTENANCE IN / 0x0D) data.

    REPD=0 gives the 4-byte format, REPD=1 the 16-byte extended format (no
    timeouts reported). An ALLOCATION LENGTH under 4 is INVALID FIELD IN CDB.
    """
    unknown = supported - TMF_BITS.keys()
    if unknown:
        raise ValueError(f"unknown task management functions {sorted(unknown)}")
    repd = bool(cdb[2] & 0x80)
    allocation = alloc_len(cdb, 6, 4)
    if allocation < 4:
        raise ScsiError.invalid_field_in_cdb(6)
    data = bytearray(16 if repd else 4)
    for name in supported:
        byte, bit = TMF_BITS[name]
        data[byte] |= 1 << bit
    if repd:
        data[3] = 0x0C
    return bytes(data[:allocation])
