"""Carrying out a SCSI-command fault inside the logical unit's command task.

The logical unit calls :func:`run_with_faults` instead of the device handler
while command rules are armed. It asks the engine (atomically, no await in
between) whether this command is hit and then does what the injection says:
fail it, delay it, never finish it, drop the initiator's connection, flip
bits in the data it read, write only a prefix of it, or crash the device
handler. Everything that waits does so inside the command's cancel scope, so
ABORT TASK, LUN RESET and a lost nexus end an injected fault like any command.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from pyscst.actors.alua import PortGroup
from pyscst.actors.faults import (
    READ_OPCODES,
    ActionKind,
    CommandFacts,
    FaultEngine,
    Injection,
    OpClass,
    Phase,
)
from pyscst.scsi.alua import AccessState, check_access
from pyscst.scsi.cdb import OpFlags, OpSpec
from pyscst.scsi.command import Buffer, ExecContext, ScsiCommand
from pyscst.scsi.sense import Asc, ScsiError, SenseKey

log = logging.getLogger(__name__)


class FaultTask(Protocol):
    """What the logical unit's task offers (``pyscst.actors.lun.Task``)."""

    cmd: ScsiCommand
    ctx: Any
    lba: int
    nblocks: int
    device: Any


def command_facts(device_name: str, task: FaultTask, spec: OpSpec) -> CommandFacts:
    cmd = task.cmd
    opcode = cmd.cdb[0]
    if spec.flags & OpFlags.WRITES_MEDIUM:
        op_class = OpClass.WRITE
    elif opcode in READ_OPCODES:
        op_class = OpClass.READ
    else:
        op_class = OpClass.OTHER
    nexus = cmd.nexus
    return CommandFacts(
        initiator=nexus.initiator_name,
        target=nexus.target_name,
        device=device_name,
        lun=task.ctx.lun,
        opcode=opcode,
        op_class=op_class,
        direction=CommandFacts.direction_of(cmd.direction),
        lba=task.lba,
        nblocks=task.nblocks,
        tag=cmd.tag,
        portal=portal_of(cmd.transport),
    )


def portal_of(transport: object) -> str | None:
    """The target portal a command came in on: the connection's local address."""
    local = getattr(transport, "local", None)
    if not isinstance(local, tuple) or len(local) != 2:
        return None
    host, port = local
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def run_with_faults(
    engine: FaultEngine, device_name: str, task: FaultTask, spec: OpSpec
) -> Buffer | None:
    """Run the command's handler, or the fault a rule injects instead / around it."""
    facts = command_facts(device_name, task, spec)
    injection = engine.on_command(facts, trio.current_time())
    device, cmd, ctx = task.device, task.cmd, task.ctx
    if injection is None:
        return await spec.handler(device, cmd, ctx)
    return await _inject(engine, injection, facts, spec, device, cmd, ctx)


async def _inject(
    engine: FaultEngine,
    injection: Injection,
    facts: CommandFacts,
    spec: OpSpec,
    device: Any,
    cmd: ScsiCommand,
    ctx: ExecContext,
) -> Buffer | None:
    action = injection.action
    kind = action.kind
    if kind is ActionKind.TORN_WRITE:
        await _tear(device, cmd, facts, injection)
        # _tear only returns when it could not tear: run the real write
        return await spec.handler(device, cmd, ctx)
    if injection.error is not None:
        raise injection.error
    if kind is ActionKind.DELAY:
        if action.phase is Phase.BEFORE:
            await trio.sleep(injection.delay)
        data = await spec.handler(device, cmd, ctx)
        if action.phase is Phase.AFTER:
            await trio.sleep(injection.delay)
        return data
    if kind is ActionKind.HANG:
        await trio.sleep_forever()
    if kind in (ActionKind.DROP_CONNECTION, ActionKind.DROP_SESSION):
        if action.phase is Phase.AFTER:
            await spec.handler(device, cmd, ctx)  # executed; the answer is lost
        cmd.transport.drop(cmd, session=kind is ActionKind.DROP_SESSION)
        await trio.sleep_forever()  # the nexus loss that follows cancels this task
    if kind is ActionKind.CORRUPT_READ:
        data = await spec.handler(device, cmd, ctx)
        return corrupt(data, injection.flips)
    if kind is ActionKind.TAPE:
        # (a tape drive arms it; any other type's default hook injects nothing)
        device.arm_fault(action.event, action.record, action.after_bytes, action.alerts)
        return await spec.handler(device, cmd, ctx)
    if kind is ActionKind.ALUA_TRANSITION:
        if force_transition(cmd, ctx, action.group, AccessState(action.state), injection.delay):
            # this very command meets the new state, as the next ones will
            port = cmd.port_group
            if port is not None:
                check_access(port.state, spec.opcode, spec.service_action)
        return await spec.handler(device, cmd, ctx)
    if kind is ActionKind.CRASH_DEVICE:
        if not engine.crash_device(facts.device):
            raise ScsiError.check(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
        # the logical unit ends every in-flight command when the device goes down
        await trio.sleep_forever()
    raise AssertionError(f"unhandled fault action {kind}")


def force_transition(
    cmd: ScsiCommand, ctx: ExecContext, which: str | None, state: AccessState, delay: float
) -> bool:
    """alua_transition: move a port group of the command's target (``which``, or
    the one of the port the command came in on) to ``state``, an implicit
    transition; with ``delay``, through a transitioning window of that many
    seconds (run beside the task set: the command does not wait for it)."""
    port = cmd.port_group
    if not isinstance(port, PortGroup):
        return False  # the target has no port groups: nothing to move
    groups = port.owner
    name = which if which is not None else port.name
    try:
        groups.get(name)
    except KeyError:
        log.warning("fault: target %s has no port group %s", groups.target_name, name)
        return False
    if delay <= 0:
        groups.set_state(name, state)
        return True

    async def window() -> None:
        await groups.transition(name, state, delay)

    ctx.start_background(window)
    return True


def corrupt(data: Buffer | None, flips: tuple[int, ...]) -> Buffer | None:
    """Flip one bit per entry of ``flips`` (bit numbers, modulo the data's size)."""
    if not data or not flips:
        return data
    buf = data if isinstance(data, bytearray) else bytearray(data)
    nbits = len(buf) * 8
    for flip in flips:
        bit = flip % nbits
        buf[bit >> 3] ^= 1 << (bit & 7)
    return buf


async def _tear(device: Any, cmd: ScsiCommand, facts: CommandFacts, injection: Injection) -> None:
    """Write the first ``keep_blocks`` blocks of the data-out, then fail with
    MEDIUM ERROR / WRITE ERROR (0C/00), INFORMATION = the first LBA not written.
    Returns without writing when the command would fail anyway (range, not
    ready): the real handler then reports that error."""
    store = getattr(device, "store", None)
    shift = getattr(device, "block_shift", None)
    if store is None or shift is None or facts.lba + facts.nblocks > device.blocks:
        return
    try:
        device.check_ready()
    except ScsiError:
        return
    data = await cmd.receive_data(facts.nblocks << shift)
    keep = min(injection.keep_blocks, len(data) >> shift)
    if keep:
        await store.write(facts.lba << shift, data[: keep << shift], fua=True)
    assert injection.error is not None
    raise injection.error
