"""SANITIZE (SBC-4 5.30): overwrite, block erase, exit failure mode.

What a file store can honestly do:

* **OVERWRITE** (service action 01h): every block written with the
  initialization pattern (repeated to fill a block; INVERT flips it between
  passes), OVERWRITE COUNT passes, each pass made durable (``flush``) before
  the next, so the old data is overwritten in the file, not only in the cache.
  Copies the filesystem may keep elsewhere (snapshots, reflinks, a CoW
  filesystem's old extents) are beyond the reach of any file store.
* **BLOCK ERASE** (02h): the whole medium deallocated, in pieces with the
  progress shown (a file's holes punched; on a block device the BLOCKIO
  store's WRITE ZEROES with unmap, see devices/direct.py; the device
  thin-provisions with LBPRZ=1, so every block then reads as zeros and GET
  LBA STATUS reports it deallocated). Block Device Characteristics WABEREQ=1:
  reads after a block erase succeed.
* **CRYPTO ERASE** (03h) is refused (no row: INVALID FIELD IN CDB pointing at
  the SERVICE ACTION): a plain file has no media encryption key to change,
  and claiming otherwise would be a lie about where the data went. WACEREQ=0.
* **EXIT FAILURE MODE** (1Fh): after a failed sanitize, medium access answers
  MEDIUM ERROR / SANITIZE COMMAND FAILED (31/03) until a sanitize succeeds,
  or until EXIT FAILURE MODE when the failed one had AUSE=1 (with AUSE=0 it is
  refused: INVALID FIELD IN CDB at byte 1 bit 4).

While the operation runs (SBC-4 4.11): every command but INQUIRY, REPORT LUNS
and REQUEST SENSE (the table's UA-exempt rows) answers NOT READY, LOGICAL UNIT
NOT READY, SANITIZE IN PROGRESS (04/1B), and REQUEST SENSE reports the same
with the PROGRESS INDICATION in the sense-key-specific bytes. The operation
runs in the LU's nursery, not in the command: ABORT TASK, LU reset, target
resets and the loss of the issuing session do not stop it (an aborted
SANITIZE with IMMED=0 just never answers). With IMMED=1 the command answers
GOOD once the parameters are checked. Commands already running when it
starts (the check is on arrival) finish against the medium as it is then.

The overwrite is paced at ``SANITIZE_BYTES_PER_SECOND``: a sanitize is a
background operation and must not starve the other LUs of the same disk.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import trio

from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.sense import Asc, FieldPointer, ScsiError, Sense, SenseKey

if TYPE_CHECKING:
    from pyscst.devices.disk import DiskDevice

SA_OVERWRITE = 0x01
SA_BLOCK_ERASE = 0x02
SA_EXIT_FAILURE_MODE = 0x1F
#: the overwrite's pace (bytes per second) and chunk size
SANITIZE_BYTES_PER_SECOND = 16 << 20
_CHUNK = 1 << 20
#: a block erase deallocates the medium in this many pieces (progress steps)
_ERASE_STEPS = 64
#: CDB byte of PARAMETER LIST LENGTH (field pointer)
_LENGTH_BYTE = 7
_HEADER = 4


def in_progress_sense(done: int, total: int) -> Sense:
    """NOT READY 04/1B with PROGRESS INDICATION (SKSV=1, done/total in 65536ths)."""
    progress = min(0xFFFF, done * 0x10000 // total) if total else 0
    code, qualifier = Asc.LUN_NOT_READY_SANITIZE_IN_PROGRESS.value
    return Sense(SenseKey.NOT_READY, code, qualifier,
                 specific=bytes((0x80,)) + struct.pack(">H", progress))


def sanitize_failed() -> ScsiError:
    """MEDIUM ERROR, SANITIZE COMMAND FAILED (31/03)."""
    return ScsiError.check(SenseKey.MEDIUM_ERROR, Asc.SANITIZE_COMMAND_FAILED)


def _bad_param(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError.check(
        SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field_pointer=FieldPointer(byte, bit, in_cdb=False),
    )


def overwrite_pattern(dev: DiskDevice, params: bytes) -> tuple[bytes, int, bool]:
    """Validate an OVERWRITE parameter list: (one block of pattern, passes, invert)."""
    flags = params[0]
    if flags & 0x60:
        raise _bad_param(0, 6)  # TEST: vendor test modes are not offered
    count = flags & 0x1F
    if count == 0:
        raise _bad_param(0, 4)
    if params[1]:
        raise _bad_param(1, 7)
    length = struct.unpack_from(">H", params, 2)[0]
    if length == 0 or length > dev.block_size or length > len(params) - _HEADER:
        raise _bad_param(2)
    pattern = params[_HEADER : _HEADER + length]
    block = (pattern * -(-dev.block_size // length))[: dev.block_size]
    return bytes(block), count, bool(flags & 0x80)


async def _overwrite(dev: DiskDevice, block: bytes, passes: int, invert: bool) -> None:
    blocks = dev.blocks
    per_chunk = max(1, _CHUNK >> dev.block_shift)
    total = blocks * passes
    done = 0
    started = trio.current_time()
    inverted = bytes(b ^ 0xFF for b in block)
    for n in range(passes):
        chunk = (inverted if invert and n % 2 else block) * min(per_chunk, blocks)
        lba = 0
        while lba < blocks:
            count = min(per_chunk, blocks - lba)
            await dev.store.write(lba << dev.block_shift,
                                  memoryview(chunk)[: count << dev.block_shift])
            lba += count
            done += count
            dev.medium.busy = in_progress_sense(done, total)
            # paced: the n-th byte no earlier than n / rate after the start
            await trio.sleep_until(
                started + (done << dev.block_shift) / SANITIZE_BYTES_PER_SECOND
            )
        await dev.store.flush()


async def _block_erase(dev: DiskDevice) -> None:
    """Deallocate every block, in ``_ERASE_STEPS`` pieces so that REQUEST SENSE
    and the NOT READY answers show the progress meanwhile."""
    blocks = dev.blocks
    per_step = max(1, -(-blocks // _ERASE_STEPS))
    lba = 0
    while lba < blocks:
        count = min(per_step, blocks - lba)
        await dev.store.discard(lba << dev.block_shift, count << dev.block_shift)
        lba += count
        dev.medium.busy = in_progress_sense(lba, blocks)
    await dev.store.flush()


async def handle_sanitize(dev: DiskDevice, cmd: ScsiCommand, ctx: ExecContext) -> Buffer | None:
    """SANITIZE: check everything, start the operation in the background,
    answer at once (IMMED=1) or when it ends (IMMED=0)."""
    cdb = cmd.cdb
    immed = bool(cdb[1] & 0x80)
    ause = bool(cdb[1] & 0x20)
    action = cdb[1] & 0x1F
    length = struct.unpack_from(">H", cdb, 7)[0]
    if dev.write_protected(ctx.read_only):
        raise ScsiError.write_protected()
    if action == SA_OVERWRITE:
        if length <= _HEADER or length > dev.block_size + _HEADER:
            raise ScsiError.invalid_field_in_cdb(_LENGTH_BYTE)
        params = bytes(await cmd.receive_data(length))
        if len(params) < length:
            raise ScsiError.parameter_list_length_error()
        block, passes, invert = overwrite_pattern(dev, params)
    elif length:
        raise ScsiError.invalid_field_in_cdb(_LENGTH_BYTE)  # no parameter list
    state = dev.sanitize_state
    if action == SA_EXIT_FAILURE_MODE:
        if state.failed and not state.failed_ause:
            raise ScsiError.invalid_field_in_cdb(1, 4)
        state.failed = False
        return None

    async def operation() -> None:
        try:
            if action == SA_OVERWRITE:
                await _overwrite(dev, block, passes, invert)
            else:
                await _block_erase(dev)
        except Exception:  # a store failure: the device enters failure mode
            state.failed, state.failed_ause = True, ause
        else:
            state.failed = False
        finally:
            dev.medium.busy = None
            state.finished.set()

    state.finished = trio.Event()
    dev.medium.busy = in_progress_sense(0, 1)
    finished = state.finished
    ctx.start_background(operation)
    if immed:
        return None
    await finished.wait()
    if state.failed:
        raise sanitize_failed()
    return None


class SanitizeState:
    """A disk's sanitize bookkeeping (the busy sense itself lives on the medium)."""

    __slots__ = ("failed", "failed_ause", "finished")

    def __init__(self) -> None:
        #: the last sanitize failed: medium access is MEDIUM ERROR 31/03
        self.failed = False
        #: ... and it was started with AUSE=1 (EXIT FAILURE MODE allowed)
        self.failed_ause = False
        self.finished = trio.Event()
        self.finished.set()
