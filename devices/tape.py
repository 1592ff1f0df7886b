"""The virtual tape drive (``vtape``): an SSC sequential-access device with a cartridge.

A :class:`TapeDevice` is peripheral device type 1 with removable medium. Its
medium is a :class:`~pyscst.devices.tape_cartridge.TapeCartridge` (a
directory of records, filemarks and MAM, devices/tape_cartridge.py), put in
and taken out through the :class:`DeviceType` ``load``/``eject`` the operator,
a medium changer and LOAD UNLOAD share. The drive owns the cartridge it
holds: ``eject`` rewinds, makes it durable and closes it; whoever moves it
on (a changer) opens it again by path in the next drive.

The drive's state is what a real drive keeps: the current partition and the
logical object number in it (both records and filemarks count, SSC-4 4.2.2),
the block length of fixed-block mode (0: variable), the density and the
data-compression setting, counters for the log pages and the TapeAlert flags.
The position operations here (read, write, space, locate, erase) are plain
synchronous methods over the cartridge's index that raise the sense SSC
requires; devices/ssc.py parses the CDBs and moves the data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import attrs
import trio

from pyscst.devices.medium import Medium
from pyscst.devices.spc import ControlPageState, MediumHooks, ReadinessSense, RemovableIdentity
from pyscst.devices.ssc import SSC_TABLE
from pyscst.devices.stores import BackingStore, NullStore
from pyscst.devices.tape_cartridge import HEADER_SIZE, Kind, Partition, Record, TapeCartridge
from pyscst.devices.tape_pages import tape_mode_pages
from pyscst.devices.tape_sense import stream_error, volume_overflow
from pyscst.scsi.cdb import OpTable, Readiness
from pyscst.scsi.command import ExecContext
from pyscst.scsi.mode import ModePages
from pyscst.scsi.sense import Asc, ScsiError, Sense, SenseKey, Status

log = logging.getLogger(__name__)

PERIPHERAL_SEQUENTIAL = 0x01
#: SSC-4 version descriptor (T10/BSR INCITS 516)
VERSION_SSC4 = 0x0560
#: the density code the drive reports (a vendor-neutral "virtual" format)
DENSITY_CODE = 0x40
#: READ BLOCK LIMITS: the largest record (bytes) and the fixed-block granularity
MAX_BLOCK = 1 << 23
MIN_BLOCK = 1
GRANULARITY = 0
#: TapeAlert flag 20: CLEAN NOW
CLEAN_NOW = 20
#: how far before the end of a partition the early-warning zone starts (bytes)
EARLY_WARNING_MAX = 256 << 20
#: ... and at least this (or a quarter of a small partition): room for records
EARLY_WARNING_MIN = 1 << 20


def empty_drive() -> BackingStore:
    """What the store is while no cartridge is in the drive (never read or
    written: no medium; not read-only, so a live read_only edit has nothing
    to reopen)."""
    return NullStore(512)


@attrs.define
class TapeCounters:
    """What the log pages count since the cartridge was loaded (SSC-4 8.2)."""

    records_written: int = 0
    bytes_written: int = 0
    records_read: int = 0
    bytes_read: int = 0
    filemarks_written: int = 0
    write_errors: int = 0
    read_errors: int = 0


@attrs.define
class TapeFaults:
    """Tape faults a ``tape`` fault rule armed (``TapeDevice.arm_fault``):
    one-shot MEDIUM ERRORs at an object number and an early end of medium
    (TapeAlert flags and cleaning are the drive's own state)."""

    #: object numbers (current partition) whose read / write fails once
    read_error_at: set[int] = attrs.Factory(set)
    write_error_at: set[int] = attrs.Factory(set)
    #: bytes after which a partition's physical end comes (None: its capacity)
    early_end: int | None = None


class TapeDevice(RemovableIdentity, ControlPageState, ReadinessSense, MediumHooks):
    """One SSC tape drive, empty or with a cartridge."""

    table: ClassVar[OpTable] = SSC_TABLE

    def __init__(
        self,
        name: str,
        cartridge: TapeCartridge | None,
        *,
        serial: str | None = None,
        product: str = "pyscst tape",
        revision: str = "0001",
    ) -> None:
        self.name = name
        self.cartridge: TapeCartridge | None = None
        self.store: BackingStore = empty_drive()
        self.read_only = False
        self.removable = True
        self.set_identity(name, serial, PERIPHERAL_SEQUENTIAL, product, revision, VERSION_SSC4)
        self.mode: ModePages = tape_mode_pages()
        self.medium = Medium(present=False)
        self.unavailable: Sense | None = None
        #: the cartridge is threaded and positioned (False after UNLOAD)
        self.threaded = False
        self.partition = 0
        self.position = 0
        #: fixed-block mode's block length (0: variable-block mode)
        self.block_size = 0
        self.density = DENSITY_CODE
        self.counters = TapeCounters()
        #: TapeAlert flags 1-64 raised (bit n-1 for flag n), cleared when read
        self.tapealert = 0
        self.faults = TapeFaults()
        #: objects written since the cartridge was last synchronized
        self.unsynced = False
        #: counts the times ``unsynced`` became True: a synchronize that
        #: began before a write must not mark that write synchronized
        self.write_gen = 0
        #: a synchronize an IMMED=1 command left running (set when it ends)
        self._settling: trio.Event | None = None
        #: the failure of such a synchronize, for the next command (deferred)
        self.deferred: Sense | None = None
        #: the drive asks for cleaning (fault injection; a drive property,
        #: kept across cartridges until power on)
        self.needs_cleaning = False
        if cartridge is not None:
            self._insert(cartridge)

    # --- the medium: load and eject ---------------------------------------------

    def _insert(self, cartridge: TapeCartridge) -> None:
        self.cartridge = cartridge
        self.store = cartridge
        self.medium.present = True
        self.threaded = True
        self.partition = 0
        self.position = 0
        self.counters = TapeCounters()
        mam = cartridge.mam
        mam["load_count"] = int(mam.get("load_count", 0)) + 1
        mam["written_this_load"] = 0
        mam["read_this_load"] = 0
        drives = [d for d in mam.get("last_drives", []) if d != self.serial]
        mam["last_drives"] = [self.serial, *drives][:4]
        cartridge.note_changed()
        if not cartridge.write_protected:
            try:
                cartridge.save_meta()
            except OSError as exc:
                log.warning("%s: cannot save MAM of %s: %s", self.name, cartridge.barcode, exc)

    def load(self, image: BackingStore | None = None) -> bool:
        """Put ``image`` (an opened TapeCartridge) in the drive and thread it,
        or, without one, thread the cartridge already in the drive (after an
        UNLOAD). True if the medium changed. MediumLocked while an initiator
        prevents removal; ValueError for no cartridge or a non-cartridge."""
        if image is None:
            if self.cartridge is None:
                raise ValueError(f"{self.name}: no cartridge in the drive; give a path")
            if self.threaded:
                return False
            self.threaded = True
            self.partition = self.position = 0
            return True
        if not isinstance(image, TapeCartridge):
            raise ValueError(f"{self.name}: not a tape cartridge: {image!r}")
        if self.medium.locked:
            self.medium.load()  # raises MediumLocked
        if self.cartridge is not None and self.cartridge is not image:
            self._remove()
        self._insert(image)
        return True

    def eject(self) -> bool:
        """Take the cartridge out: rewind, make it durable, close it. True if
        there was one. MediumLocked while an initiator prevents removal."""
        changed = self.medium.eject()
        if self.cartridge is not None:
            self._remove()
            changed = True
        return changed

    def take_cartridge(self) -> TapeCartridge | None:
        """The changer's way out: like :meth:`eject` but the cartridge comes
        back open (durable, rewound) instead of closed. MediumLocked as eject."""
        self.medium.eject()
        cartridge = self.cartridge
        if cartridge is not None:
            self._detach(cartridge)
        return cartridge

    def _detach(self, cartridge: TapeCartridge) -> None:
        try:
            cartridge.sync()
            cartridge.save_meta()
        except OSError as exc:
            log.warning("%s: cannot sync %s on eject: %s", self.name, cartridge.barcode, exc)
        self.cartridge = None
        self.store = empty_drive()
        self.medium.present = False
        self.threaded = False
        self.partition = self.position = 0
        self.unsynced = False

    def _remove(self) -> None:
        cartridge = self.cartridge
        assert cartridge is not None
        self._detach(cartridge)
        cartridge.close_now()

    def unload(self) -> None:
        """LOAD UNLOAD with LOAD=0: rewind and unthread; the cartridge stays in
        the drive (a changer or the operator takes it out)."""
        self.threaded = False
        self.partition = self.position = 0

    # --- what the LU reads -------------------------------------------------------

    def check_ready(self, readiness: Readiness = Readiness.READY) -> None:
        if self.deferred is not None:
            self.take_deferred()
        if self.cartridge is None:
            raise ScsiError.check(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)
        if not self.threaded and readiness == Readiness.READY:
            raise ScsiError.check(
                SenseKey.NOT_READY, Asc.LUN_NOT_READY_INITIALIZING_COMMAND_REQUIRED
            )

    @property
    def write_protected(self) -> bool:
        cart = self.cartridge
        return self.read_only or self.software_write_protect or (
            cart is not None and cart.write_protected)

    def device_specific(self, read_only: bool) -> int:
        """MODE SENSE header: WP, BUFFERED MODE 1, SPEED 0."""
        wp = 0x80 if read_only or self.write_protected else 0
        return wp | 0x10

    def mode_parameters(self, read_only: bool) -> tuple[int, int, int]:
        return self.device_specific(read_only), 0, self.block_size

    async def resize(self, new_size: int) -> None:
        raise ValueError(f"{self.name}: a tape's capacity is its cartridge's")

    # --- position ------------------------------------------------------------------

    @property
    def part(self) -> Partition:
        return self.loaded().partitions[self.partition]

    def loaded(self) -> TapeCartridge:
        """The cartridge in the drive, or NOT READY 3A/00: a command passed the
        LU's readiness check, but the changer may take the cartridge out while
        the command awaits (a sync in a worker thread)."""
        cart = self.cartridge
        if cart is None:
            raise ScsiError.check(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)
        return cart

    def _capacity(self, part: Partition) -> int:
        early = self.faults.early_end
        return part.capacity if early is None else min(part.capacity, early)

    def early_warning(self, part: Partition) -> bool:
        """Is end-of-data in the early-warning zone of ``part``?"""
        cap = self._capacity(part)
        zone = max(min(cap // 16, EARLY_WARNING_MAX), min(cap // 4, EARLY_WARNING_MIN))
        return part.end >= cap - zone

    @property
    def at_bop(self) -> bool:
        return self.position == 0

    def file_number(self) -> int:
        return self.part.files_before(self.position)

    # --- writing ---------------------------------------------------------------------

    def check_writable(self) -> None:
        """DATA PROTECT when the cartridge is write-protected, or WORM and the
        write would overwrite (only appending at end-of-data is allowed)."""
        if self.write_protected:
            raise ScsiError.write_protected()
        cart = self.loaded()
        if cart.worm and self.position != self.part.eod:
            raise ScsiError.check(SenseKey.DATA_PROTECT, Asc.WORM_MEDIUM_OVERWRITE_ATTEMPTED)

    def write_objects(self, kind: Kind, records: Sequence[Record] | int) -> bool:
        """Append records (or ``records`` filemarks) at the current position,
        which becomes end-of-data; True when end-of-data is now past the early
        warning (the caller reports it once the data is safe). VOLUME OVERFLOW
        at the physical end (INFORMATION: what was not written), MEDIUM ERROR
        on an injected or real write error."""
        self.check_writable()
        part = self.part
        if self.position < part.eod or part.damaged:
            part.truncate(self.position)
        marks = isinstance(records, int)
        count: int = records if isinstance(records, int) else len(records)
        fit = 0
        room = self._capacity(part) - part.end
        fault = None
        failing = self.faults.write_error_at
        position = self.position
        for i in range(count):
            if failing and position + i in failing:
                fault = position + i
                break
            need = HEADER_SIZE + (0 if marks else len(records[i]))  # type: ignore[index]
            if need > room:
                break
            room -= need
            fit += 1
        batch: Sequence[Record] | int = (
            fit if marks else records if fit == count else records[:fit]  # type: ignore[index]
        )
        done = fit
        try:
            part.append_many(kind, batch)
        except OSError as exc:
            log.error("%s: write to %s failed: %s", self.name, part.path, exc)
            done = part.eod - self.position
            self._written(kind, records, done)
            self.counters.write_errors += 1
            raise stream_error(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR,
                               information=self._residue(records, done)) from exc
        self._written(kind, records, done)
        if fault is not None:
            self.faults.write_error_at.discard(fault)
            self.counters.write_errors += 1
            raise stream_error(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR,
                               information=self._residue(records, done))  # fmt: skip
        if done < count:
            raise volume_overflow(self._residue(records, done))
        return self.early_warning(part)

    def _written(self, kind: Kind, records: Sequence[Record] | int, done: int) -> None:
        self.position += done
        if not done:
            return
        self.unsynced = True
        self.write_gen += 1
        if isinstance(records, int):
            self.counters.filemarks_written += done
            return
        n = sum(map(len, records[:done]))
        self.counters.records_written += done
        self.counters.bytes_written += n
        cart = self.loaded()
        mam = cart.mam
        mam["total_written"] = int(mam.get("total_written", 0)) + n
        mam["written_this_load"] = int(mam.get("written_this_load", 0)) + n
        cart.note_changed()

    def _residue(self, records: Sequence[Record] | int, done: int) -> int:
        """INFORMATION of a write stopped early: filemarks or fixed blocks not
        written, or, for a variable record, its byte count."""
        if isinstance(records, int):
            return records - done
        if self.block_size:
            return len(records) - done
        return sum(len(r) for r in records[done:])

    def account_read(self, n: int) -> None:
        cart = self.loaded()
        mam = cart.mam
        mam["total_read"] = int(mam.get("total_read", 0)) + n
        mam["read_this_load"] = int(mam.get("read_this_load", 0)) + n
        self.counters.bytes_read += n
        cart.note_changed()

    async def synchronize(self) -> None:
        """Make what was written durable (WRITE FILEMARKS IMMED=0, REWIND, ...),
        after any synchronize an IMMED=1 command left running."""
        while (settling := self._settling) is not None:
            await settling.wait()
        await self._sync_now()

    async def _sync_now(self) -> None:
        cart = self.cartridge
        if cart is None or not self.unsynced:
            return
        gen = self.write_gen
        try:
            await trio.to_thread.run_sync(cart.sync)
        except OSError as exc:
            log.error("%s: sync of %s failed: %s", self.name, cart.barcode, exc)
            raise ScsiError.check(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR) from exc
        if self.cartridge is not cart:  # moved out meanwhile (its removal synced it)
            raise ScsiError.check(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)
        if self.write_gen == gen:
            self.unsynced = False

    def synchronize_later(self, ctx: ExecContext) -> None:
        """IMMED=1 (REWIND, LOCATE, LOAD UNLOAD, ERASE): the command's status
        goes now and the synchronize runs on beside the task set; a later
        ``synchronize`` waits for it; its failure becomes a deferred error
        (``deferred``: MEDIUM ERROR / WRITE ERROR, response code 0x71) that
        the next command needing the medium, or REQUEST SENSE, reports."""
        cart = self.cartridge
        if cart is None or not self.unsynced:
            return
        before = self._settling
        done = self._settling = trio.Event()

        async def run() -> None:
            try:
                if before is not None:
                    await before.wait()
                await self._sync_now()
            except ScsiError as exc:
                if self.cartridge is cart and exc.sense is not None:
                    self.deferred = attrs.evolve(exc.sense, deferred=True)
            finally:
                if self._settling is done:
                    self._settling = None
                done.set()

        ctx.start_background(run)

    def take_deferred(self) -> None:
        """Raise the deferred error an IMMED=1 operation left, once."""
        sense = self.deferred
        if sense is not None:
            self.deferred = None
            raise ScsiError(Status.CHECK_CONDITION, sense)

    # --- reading -----------------------------------------------------------------------

    def medium_error_here(self, residue: int) -> ScsiError | None:
        """A read at the current position hits damage or an armed fault."""
        part = self.part
        pos = self.position
        if pos in self.faults.read_error_at:
            self.faults.read_error_at.discard(pos)
            self.counters.read_errors += 1
            self.position = min(pos + 1, part.eod)
            return stream_error(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR,
                                information=residue)  # fmt: skip
        if pos >= part.eod and part.damaged:
            self.counters.read_errors += 1
            return stream_error(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR,
                                information=residue)  # fmt: skip
        return None

    async def read_record(self, buf: memoryview) -> int:
        """Read the record at the position into ``buf`` (truncated to it);
        its full length. The caller has checked it is a record. From the page
        cache inline; what is not cached is read in a worker thread, so a
        cold cartridge never stalls the event loop."""
        length = self.read_record_now(buf)
        if length is not None:
            return length
        cart = self.cartridge
        part = self.part
        index = self.position
        try:
            n = await trio.to_thread.run_sync(part.read, index, buf)
        except OSError as exc:
            raise self._read_failed(part, exc) from exc
        if self.cartridge is not cart:  # the operator took it out meanwhile
            raise ScsiError.check(SenseKey.NOT_READY, Asc.MEDIUM_NOT_PRESENT)
        assert n is not None
        return self._record_read(index, n)

    def read_record_now(self, buf: memoryview) -> int | None:
        """:meth:`read_record` if the record is in the page cache; None (and
        nothing changed) when reading it would wait for the disk."""
        part = self.part
        index = self.position
        try:
            n = part.read(index, buf, nowait=True)
        except OSError as exc:
            raise self._read_failed(part, exc) from exc
        return None if n is None else self._record_read(index, n)

    def read_record_inline(self, limit: int) -> bytes | None:
        """:meth:`read_record_now` into new bytes (up to ``limit``) when the
        cartridge is in memory (Partition.read_inline); None, nothing changed,
        otherwise."""
        part = self.part
        index = self.position
        try:
            data = part.read_inline(index, limit)
        except OSError as exc:
            raise self._read_failed(part, exc) from exc
        if data is not None:
            self._record_read(index, len(data), part)
        return data

    def _read_failed(self, part: Partition, exc: OSError) -> ScsiError:
        log.error("%s: read of %s failed: %s", self.name, part.path, exc)
        self.counters.read_errors += 1
        return stream_error(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR)

    def _record_read(self, index: int, n: int, part: Partition | None = None) -> int:
        self.position = index + 1
        self.counters.records_read += 1
        self.account_read(n)
        return (self.part if part is None else part).length(index)

    # --- fault injection ---------------------------------------------------------------

    def arm_fault(self, event: str, record: int, after_bytes: int, alerts: frozenset[int]) -> bool:
        """A ``tape`` fault rule fired on this drive (actors/faults_lu.py): arm
        a one-shot MEDIUM ERROR at ``record`` (read or write), an early end of
        medium after ``after_bytes`` per partition, raise TapeAlert flags, or
        make the drive ask for cleaning."""
        if event == "read_error":
            self.faults.read_error_at.add(record)
        elif event == "write_error":
            self.faults.write_error_at.add(record)
        elif event == "early_end":
            self.faults.early_end = after_bytes
        elif event == "tapealert":
            for flag in alerts:
                self.tapealert |= 1 << (flag - 1)
        elif event == "clean":
            self.needs_cleaning = True
            self.tapealert |= 1 << (CLEAN_NOW - 1)
        else:
            return False
        log.warning("%s: tape fault armed: %s", self.name, event)
        return True

    def not_ready_sense(self) -> Sense | None:
        """REQUEST SENSE: the readiness condition, else CLEANING REQUESTED
        (00/17) while the drive wants cleaning."""
        sense = super().not_ready_sense()
        if sense is None and self.needs_cleaning:
            return Sense.of(SenseKey.NO_SENSE, Asc.CLEANING_REQUESTED)
        return sense

    # --- hooks --------------------------------------------------------------------------

    def power_on(self) -> None:
        super().power_on()  # (PREVENT ends, mode pages back to defaults)
        self.needs_cleaning = False
        self.deferred = None  # (a power on clears sense data, deferred errors too)
        self.block_size = 0

    async def close(self) -> None:
        cart = self.cartridge
        if cart is not None:
            await self.synchronize()
            await cart.close()

    def __repr__(self) -> str:
        cart = self.cartridge
        state = cart.barcode if cart is not None else "empty"
        return f"<TapeDevice {self.name} {state} p{self.partition}@{self.position}>"

