"""Fault injection rules: the model, the matcher, the triggers and the counters.

Users test initiators, multipath stacks and filesystems against a disk that
misbehaves on purpose, so a fault must be *programmable* (which commands,
how often, what goes wrong) and *reproducible* (a seeded run replays
exactly). This module is pure: no I/O, no awaits, the clock is passed in.
The daemon owns one :class:`FaultEngine`; the logical units and the iSCSI
connections consult it through its non-awaiting ``on_*`` methods (atomic,
like ``LogicalUnit.submit``) and carry out the :class:`Injection` it returns
(``actors/faults_lu.py``, the hooks in ``transports/iscsi/connection.py``).
With no rule armed those callers pay one attribute check per command.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import random
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from pyscst.scsi.command import DataDirection
from pyscst.scsi.sense import ScsiError, Sense, SenseKey, Status

log = logging.getLogger(__name__)

#: injections remembered per rule for ``fault.stats`` / ``fault.list``
RECENT_INJECTIONS = 20

#: READ(6/10/12/16) and VERIFY(10/12/16): the commands that read the medium
READ_OPCODES = frozenset({0x08, 0x28, 0xA8, 0x88, 0x2F, 0xAF, 0x8F})
#: WRITE(6/10/12/16) and WRITE AND VERIFY(10/12/16): the writes whose data-out goes
#: to the medium as it is, so a torn_write can write a prefix of it. COMPARE AND
#: WRITE, WRITE SAME and ORWRITE store something else (a half, a repeated block, an
#: OR): a prefix of their data-out would be data no real device could leave behind.
TEARABLE_OPCODES = frozenset({0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0xAE, 0x8E})


class OpClass(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    OTHER = "other"


class Direction(enum.StrEnum):
    NONE = "none"
    READ = "read"
    WRITE = "write"


_DIRECTIONS = {
    DataDirection.NONE: Direction.NONE,
    DataDirection.READ: Direction.READ,
    DataDirection.WRITE: Direction.WRITE,
}


class Phase(enum.StrEnum):
    """When a delay or a connection drop happens relative to the command's execution."""

    BEFORE = "before"
    AFTER = "after"


class ActionKind(enum.StrEnum):
    # SCSI command faults (the logical unit carries them out)
    CHECK_CONDITION = "check_condition"
    STATUS = "status"
    DELAY = "delay"
    HANG = "hang"
    DROP_CONNECTION = "drop_connection"
    DROP_SESSION = "drop_session"
    CORRUPT_READ = "corrupt_read"
    TORN_WRITE = "torn_write"
    BAD_BLOCKS = "bad_blocks"
    CRASH_DEVICE = "crash_device"
    #: ALUA: force a transition of a target port group (implicit, as the
    #: target would on its own), optionally through a transitioning window
    ALUA_TRANSITION = "alua_transition"
    # ALUA faults (SET TARGET PORT GROUPS and transitions consult them)
    REFUSE_STPG = "refuse_stpg"
    SLOW_TRANSITION = "slow_transition"
    # iSCSI transport faults (the connection carries them out)
    PDU_DROP = "pdu_drop"
    PDU_DELAY = "pdu_delay"
    DIGEST_ERROR = "digest_error"
    NOP_STALL = "nop_stall"
    REFUSE_LOGIN = "refuse_login"


class Hook(enum.Enum):
    """Where an action is consulted."""

    COMMAND = "command"
    PDU = "pdu"
    NOP = "nop"
    LOGIN = "login"
    ALUA = "alua"


HOOK_OF: dict[ActionKind, Hook] = {
    **{kind: Hook.COMMAND for kind in ActionKind},
    ActionKind.PDU_DROP: Hook.PDU,
    ActionKind.PDU_DELAY: Hook.PDU,
    ActionKind.DIGEST_ERROR: Hook.PDU,
    ActionKind.NOP_STALL: Hook.NOP,
    ActionKind.REFUSE_LOGIN: Hook.LOGIN,
    ActionKind.REFUSE_STPG: Hook.ALUA,
    ActionKind.SLOW_TRANSITION: Hook.ALUA,
}

#: statuses a STATUS action may return (SAM-5)
FAULT_STATUSES = {
    "busy": Status.BUSY,
    "task_set_full": Status.TASK_SET_FULL,
    "reservation_conflict": Status.RESERVATION_CONFLICT,
    "aca_active": Status.ACA_ACTIVE,
}

#: iSCSI PDU kinds a transport rule may name (initiator -> target, then target -> initiator)
PDU_KINDS: dict[int, str] = {
    0x00: "nop_out",
    0x01: "scsi_command",
    0x02: "tmf_request",
    0x03: "login_request",
    0x04: "text_request",
    0x05: "data_out",
    0x06: "logout_request",
    0x10: "snack",
    0x20: "nop_in",
    0x21: "scsi_response",
    0x22: "tmf_response",
    0x23: "login_response",
    0x24: "text_response",
    0x25: "data_in",
    0x26: "logout_response",
    0x31: "r2t",
    0x32: "async_message",
    0x3F: "reject",
}
PDU_NAMES = frozenset(PDU_KINDS.values())
#: opcodes from here up are sent by the target (RFC 7143 11.1.1)
FIRST_TARGET_OPCODE = 0x20
TARGET_PDU_NAMES = frozenset(n for k, n in PDU_KINDS.items() if k >= FIRST_TARGET_OPCODE)


@attrs.frozen
class Match:
    """Which commands (or PDUs, logins) a rule applies to; None / empty = any."""

    target: str | None = None  # iSCSI target name, case-insensitive
    device: str | None = None  # device (logical unit) name
    lun: int | None = None  # LUN number as the initiator addresses it
    initiator: str | None = None  # initiator name or fnmatch glob, case-insensitive
    opcodes: frozenset[int] = frozenset()
    op_class: OpClass | None = None
    lba: tuple[int, int] | None = None  # first and last LBA, inclusive: overlap matches
    direction: Direction | None = None
    pdus: frozenset[str] = frozenset()  # transport rules: PDU kinds (PDU_NAMES)
    #: the target portal ("host:port", fnmatch glob) the command or PDU came in on
    portal: str | None = None

    def names_match(self, initiator: str, target: str | None, portal: str | None) -> bool:
        """Where it happens: target, initiator and portal (every rule has these)."""
        if self.target is not None and (target is None or target.lower() != self.target.lower()):
            return False
        if self.initiator is not None and not fnmatch.fnmatchcase(
            initiator.lower(), self.initiator.lower()
        ):
            return False
        if self.portal is not None and (
            portal is None or not fnmatch.fnmatchcase(portal, self.portal)
        ):
            return False
        return True

    def command_matches(self, f: CommandFacts) -> bool:
        if self.device is not None and f.device != self.device:
            return False
        if self.lun is not None and f.lun != self.lun:
            return False
        if self.opcodes and f.opcode not in self.opcodes:
            return False
        if self.op_class is not None and f.op_class is not self.op_class:
            return False
        if self.direction is not None and f.direction is not self.direction:
            return False
        if self.lba is not None:
            first, last = self.lba
            if f.nblocks <= 0 or f.lba > last or f.lba + f.nblocks - 1 < first:
                return False
        return self.names_match(f.initiator, f.target, f.portal)


@attrs.frozen
class Trigger:
    """When a matching command is hit. All conditions must hold, checked in this order:
    inside ``window`` (seconds since the rule was armed), past the first ``after``
    matches, every ``every``-th match after those, fewer than ``times`` injections so
    far, then a draw below ``probability`` from the rule's own seeded generator."""

    probability: float = 1.0
    seed: int | None = None  # None: derived from the rule id, so runs still replay
    every: int = 1
    after: int = 0
    times: int | None = None
    window: tuple[float, float | None] | None = None


@attrs.frozen
class Action:
    """What goes wrong. Only the fields of ``kind`` matter (admin/config/faults.py
    rejects the others)."""

    kind: ActionKind
    sense_key: SenseKey = SenseKey.MEDIUM_ERROR
    asc: int = 0x11
    ascq: int = 0x00
    information: bool = True  # INFORMATION = first failing LBA
    status: Status = Status.BUSY
    delay: float = 0.0
    jitter: float = 0.0  # uniform extra 0..jitter seconds
    phase: Phase = Phase.BEFORE
    bits: int = 1  # corrupt_read: bits flipped per command
    blocks: int | None = None  # torn_write: blocks written before failing (None: half)
    lbas: frozenset[int] = frozenset()  # bad_blocks: the initial list
    grow: bool = False  # bad_blocks: a trigger hit turns one more LBA bad
    #: alua_transition: the ASYMMETRIC ACCESS STATE code to go to, and the group
    #: (name or id) to move; None: the group of the port the command came in on
    state: int = 0
    group: str | None = None


@attrs.frozen
class FaultRule:
    id: str
    action: Action
    match: Match = Match()
    trigger: Trigger = Trigger()
    enabled: bool = True

    @property
    def hook(self) -> Hook:
        return HOOK_OF[self.action.kind]

    @property
    def seed(self) -> int:
        if self.trigger.seed is not None:
            return self.trigger.seed
        return zlib.crc32(self.id.encode())


@attrs.frozen
class CommandFacts:
    """What a rule may look at in one SCSI command (built only while rules are armed)."""

    initiator: str
    target: str
    device: str
    lun: int
    opcode: int
    op_class: OpClass
    direction: Direction
    lba: int  # -1: the command addresses no LBA range
    nblocks: int
    tag: int
    portal: str | None = None  # "host:port" (IPv6 host in brackets) it arrived on

    @staticmethod
    def direction_of(direction: DataDirection) -> Direction:
        return _DIRECTIONS[direction]

    def describe(self) -> dict[str, Any]:
        return {
            "initiator": self.initiator,
            "target": self.target,
            "device": self.device,
            "lun": self.lun,
            "opcode": self.opcode,
            "lba": self.lba if self.lba >= 0 else None,
            "blocks": self.nblocks,
            "tag": self.tag,
            "portal": self.portal,
        }


@attrs.frozen
class Injection:
    """One decision to inject: the rule, its action and the values drawn for it."""

    rule_id: str
    action: Action
    error: ScsiError | None = None  # check_condition, status, bad_blocks, torn_write
    delay: float = 0.0
    flips: tuple[int, ...] = ()  # corrupt_read: bit numbers, reduced modulo the data size
    keep_blocks: int = 0  # torn_write


class UnknownRule(KeyError):
    """No rule with that id."""


@attrs.frozen
class CrashDevice:
    """Message to a device actor: fail now (crash_device), so supervision restarts it."""


class DeviceCrashed(Exception):
    """Raised by a device actor told to crash."""


class _RuleState:
    """The engine's private per-rule state: generator, counters, bad-block list."""

    __slots__ = ("armed_at", "bad", "enabled", "injections", "matches", "recent", "rng", "rule")

    def __init__(self, rule: FaultRule, now: float) -> None:
        self.rule = rule
        self.enabled = rule.enabled
        self.rng = random.Random(rule.seed)
        self.armed_at = now
        self.matches = 0
        self.injections = 0
        self.bad: set[int] = set(rule.action.lbas)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_INJECTIONS)

    def fires(self, now: float) -> bool:
        t = self.rule.trigger
        if t.window is not None:
            start, end = t.window
            elapsed = now - self.armed_at
            if elapsed < start or (end is not None and elapsed >= end):
                return False
        self.matches += 1
        if self.matches <= t.after:
            return False
        if (self.matches - t.after) % t.every:
            return False
        if t.times is not None and self.injections >= t.times:
            return False
        return t.probability >= 1.0 or self.rng.random() < t.probability

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.rule.id,
            "enabled": self.enabled,
            "action": self.rule.action.kind.value,
            "seed": self.rule.seed,
            "matches": self.matches,
            "injections": self.injections,
        }
        if self.rule.action.kind is ActionKind.BAD_BLOCKS:
            out["bad_blocks"] = sorted(self.bad)
        return out


class FaultEngine:
    """Every fault rule of a daemon, in order; the first rule that fires wins.

    ``command_armed``, ``pdu_armed``, ``nop_armed`` and ``login_armed`` say whether
    any enabled rule listens at that hook: the callers' only cost while they are
    False. They are maintained by the engine; read them, never set them.
    """

    def __init__(self, rules: Iterable[FaultRule] = (), now: float = 0.0) -> None:
        self._rules: dict[str, _RuleState] = {}
        self._by_hook: dict[Hook, list[_RuleState]] = {hook: [] for hook in Hook}
        self._crashers: dict[str, Callable[[], bool]] = {}
        self.command_armed = False
        self.pdu_armed = False
        self.nop_armed = False
        self.login_armed = False
        self.alua_armed = False
        for rule in rules:
            self.add(rule, now)

    # -- administration ------------------------------------------------------
    def add(self, rule: FaultRule, now: float) -> dict[str, Any]:
        if rule.id in self._rules:
            raise ValueError(f'a fault rule "{rule.id}" already exists')
        state = _RuleState(rule, now)
        self._rules[rule.id] = state
        self._rearm()
        log.info("fault rule %s added (%s, seed %d)", rule.id, rule.action.kind.value, rule.seed)
        return state.status()

    def remove(self, rule_id: str) -> dict[str, Any]:
        state = self._state(rule_id)
        del self._rules[rule_id]
        self._rearm()
        log.info("fault rule %s removed after %d injections", rule_id, state.injections)
        return state.status()

    def set_enabled(self, rule_id: str, enabled: bool, now: float) -> dict[str, Any]:
        state = self._state(rule_id)
        if enabled and not state.enabled:
            state.armed_at = now  # a window counts from the moment the rule is live
        state.enabled = enabled
        self._rearm()
        log.info("fault rule %s %s", rule_id, "enabled" if enabled else "disabled")
        return state.status()

    def rules(self) -> list[FaultRule]:
        return [s.rule for s in self._rules.values()]

    def rule(self, rule_id: str) -> FaultRule:
        return self._state(rule_id).rule

    def status(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        states = self._rules.values() if rule_id is None else [self._state(rule_id)]
        return [s.status() for s in states]

    def recent(self, rule_id: str) -> list[dict[str, Any]]:
        return list(self._state(rule_id).recent)

    def new_id(self) -> str:
        n = len(self._rules) + 1
        while f"fault-{n}" in self._rules:
            n += 1
        return f"fault-{n}"

    def register_device(self, name: str, crash: Callable[[], bool]) -> None:
        """How to crash the handler of device ``name`` (crash_device). A crash
        rule is not rate-limited here: the device's own supervisor decides how
        many crashes it takes and retires (offlines) the device beyond its
        budget, which contains it (actors/device_unit.py)."""
        self._crashers[name] = crash

    def crash_device(self, name: str) -> bool:
        """Crash the handler of ``name``; False if there is none running."""
        crash = self._crashers.get(name)
        return crash is not None and crash()

    def _state(self, rule_id: str) -> _RuleState:
        state = self._rules.get(rule_id)
        if state is None:
            raise UnknownRule(rule_id)
        return state

    def _rearm(self) -> None:
        for hook in Hook:
            self._by_hook[hook] = [
                s for s in self._rules.values() if s.enabled and s.rule.hook is hook
            ]
        self.command_armed = bool(self._by_hook[Hook.COMMAND])
        self.pdu_armed = bool(self._by_hook[Hook.PDU])
        self.nop_armed = bool(self._by_hook[Hook.NOP])
        self.login_armed = bool(self._by_hook[Hook.LOGIN])
        self.alua_armed = bool(self._by_hook[Hook.ALUA])

    # -- consultation ----------------------------------------------------------
    def on_command(self, f: CommandFacts, now: float) -> Injection | None:
        """The fault (if any) for one SCSI command about to run its handler."""
        for state in self._by_hook[Hook.COMMAND]:
            if not state.rule.match.command_matches(f):
                continue
            kind = state.rule.action.kind
            if kind is ActionKind.BAD_BLOCKS:
                injection = self._bad_blocks(state, f, now)
            elif state.fires(now):
                injection = self._decide(state, f)
            else:
                continue
            if injection is not None:
                self._record(state, injection, f.describe())
                return injection
        return None

    def on_pdu(
        self, kind: int, initiator: str, target: str | None, portal: str | None, now: float
    ) -> Injection | None:
        """The fault (if any) for one PDU (``kind``: its opcode) in either direction."""
        name = PDU_KINDS.get(kind)
        for state in self._by_hook[Hook.PDU]:
            m = state.rule.match
            if m.pdus and name not in m.pdus:
                continue
            if kind < FIRST_TARGET_OPCODE and state.rule.action.kind is ActionKind.DIGEST_ERROR:
                continue  # only what the target sends gets a bad digest
            if m.names_match(initiator, target, portal) and state.fires(now):
                injection = Injection(state.rule.id, state.rule.action, delay=self._delay(state))
                where = {"initiator": initiator, "target": target, "portal": portal}
                self._record(state, injection, {**where, "pdu": name})
                return injection
        return None

    def on_nop(
        self, initiator: str, target: str | None, portal: str | None, now: float
    ) -> Injection | None:
        """Whether (and how long) to withhold the NOP-In answering a NOP-Out ping."""
        return self._simple(Hook.NOP, initiator, target, portal, now)

    def on_login(
        self, initiator: str, target: str | None, portal: str | None, now: float
    ) -> Injection | None:
        """Whether to refuse a login that would otherwise succeed."""
        return self._simple(Hook.LOGIN, initiator, target, portal, now)

    def on_stpg(
        self, initiator: str, target: str, portal: str | None, now: float
    ) -> Injection | None:
        """Whether to refuse a SET TARGET PORT GROUPS (refuse_stpg)."""
        return self._simple(Hook.ALUA, initiator, target, portal, now, ActionKind.REFUSE_STPG)

    def transition_delay(
        self, initiator: str, target: str, portal: str | None, now: float
    ) -> float:
        """Seconds a transition (SET TPGS, or the operator's: ``initiator`` "")
        spends in transitioning (slow_transition); 0 when no rule fires."""
        hit = self._simple(
            Hook.ALUA, initiator, target, portal, now, ActionKind.SLOW_TRANSITION
        )
        return hit.delay if hit is not None else 0.0

    def _simple(
        self,
        hook: Hook,
        initiator: str,
        target: str | None,
        portal: str | None,
        now: float,
        kind: ActionKind | None = None,
    ) -> Injection | None:
        for state in self._by_hook[hook]:
            if kind is not None and state.rule.action.kind is not kind:
                continue
            if state.rule.match.names_match(initiator, target, portal) and state.fires(now):
                injection = Injection(state.rule.id, state.rule.action, delay=self._delay(state))
                where = {"initiator": initiator, "target": target, "portal": portal}
                self._record(state, injection, where)
                return injection
        return None

    # -- decisions --------------------------------------------------------------
    def _decide(self, state: _RuleState, f: CommandFacts) -> Injection | None:
        rule = state.rule
        a = rule.action
        kind = a.kind
        if kind is ActionKind.CHECK_CONDITION:
            info = _first_failing_lba(rule.match, f) if a.information else None
            sense = Sense(a.sense_key, a.asc, a.ascq, information=info)
            return Injection(rule.id, a, error=ScsiError(Status.CHECK_CONDITION, sense))
        if kind is ActionKind.STATUS:
            return Injection(rule.id, a, error=ScsiError(a.status))
        if kind in (ActionKind.DELAY, ActionKind.ALUA_TRANSITION):
            return Injection(rule.id, a, delay=self._delay(state))
        if kind is ActionKind.CORRUPT_READ:
            if f.direction is not Direction.READ:
                return None
            flips = tuple(state.rng.getrandbits(48) for _ in range(a.bits))
            return Injection(rule.id, a, flips=flips)
        if kind is ActionKind.TORN_WRITE:
            if f.opcode not in TEARABLE_OPCODES or f.nblocks <= 0:
                return None
            keep = f.nblocks // 2 if a.blocks is None else min(a.blocks, f.nblocks)
            sense = Sense(SenseKey.MEDIUM_ERROR, 0x0C, 0x00, information=f.lba + keep)
            error = ScsiError(Status.CHECK_CONDITION, sense)
            return Injection(rule.id, a, error=error, keep_blocks=keep)
        return Injection(rule.id, a)  # hang, drop_*, crash_device

    def _bad_blocks(self, state: _RuleState, f: CommandFacts, now: float) -> Injection | None:
        """dm-dust: reads of listed LBAs fail until a write rewrites the block."""
        if f.nblocks <= 0:
            return None
        first, end = f.lba, f.lba + f.nblocks
        if f.op_class is OpClass.WRITE:
            if state.bad:
                healed = {lba for lba in state.bad if first <= lba < end}
                if healed:
                    state.bad -= healed
                    log.info("fault %s: %d bad blocks rewritten", state.rule.id, len(healed))
            return None
        if f.op_class is not OpClass.READ:
            return None
        hit = [lba for lba in state.bad if first <= lba < end] if state.bad else []
        if not hit and state.rule.action.grow and state.fires(now):
            low, high = first, end - 1
            if state.rule.match.lba is not None:
                low, high = max(low, state.rule.match.lba[0]), min(high, state.rule.match.lba[1])
            new = state.rng.randint(low, high)
            state.bad.add(new)
            hit = [new]
        if not hit:
            return None
        a = state.rule.action
        bad = min(hit)
        sense = Sense(a.sense_key, a.asc, a.ascq, information=bad)
        return Injection(state.rule.id, a, error=ScsiError(Status.CHECK_CONDITION, sense))

    @staticmethod
    def _delay(state: _RuleState) -> float:
        a = state.rule.action
        if a.jitter > 0:
            return a.delay + state.rng.uniform(0.0, a.jitter)
        return a.delay

    @staticmethod
    def _record(state: _RuleState, injection: Injection, what: dict[str, Any]) -> None:
        state.injections += 1
        entry = {"n": state.injections, "action": injection.action.kind.value, **what}
        if injection.delay:
            entry["delay"] = round(injection.delay, 6)
        if injection.error is not None:
            entry["error"] = str(injection.error)
        state.recent.append(entry)
        log.warning(
            "fault %s #%d: %s on %s",
            state.rule.id,
            state.injections,
            injection.action.kind.value,
            " ".join(f"{k}={_show(k, v)}" for k, v in what.items() if v is not None),
        )


def _first_failing_lba(match: Match, f: CommandFacts) -> int | None:
    if f.lba < 0 or f.nblocks <= 0:
        return None
    if match.lba is not None:
        return max(f.lba, match.lba[0])
    return f.lba


def _show(key: str, value: object) -> str:
    if key in ("opcode", "tag") and isinstance(value, int):
        return f"{value:#x}"
    return str(value)
