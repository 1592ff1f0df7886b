"""The ``[[faults]]`` tables of a config file (and ``fault.add`` arguments): one flat
table per rule, shaped by cattrs and checked into :class:`pyscst.actors.faults.FaultRule`.

A rule is written flat, because people type them on a command line too
(``pyscst admin fault add action=check_condition lba=100-199 probability=0.1``):
match keys, trigger keys and the chosen action's own keys side by side. A key
that means nothing for the chosen action is an error rather than silently
ignored, and every problem comes back with its key path, like the rest of the
configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pyscst.actors.faults import (
    FAULT_STATUSES,
    HOOK_OF,
    PDU_NAMES,
    TARGET_PDU_NAMES,
    Action,
    ActionKind,
    Direction,
    FaultRule,
    Hook,
    Match,
    OpClass,
    Phase,
    Trigger,
)
from pyscst.admin.config.schema import (
    KeyPath,
    Problem,
    describe_structure_error,
    describe_value,
    make_converter,
)
from pyscst.admin.config.values import check_initiator_pattern
from pyscst.scsi.alua import AccessState
from pyscst.scsi.lun import MAX_LUN
from pyscst.scsi.sense import SenseKey

#: LBAs are 64 bits (READ(16)); seeds stay within a TOML integer
MAX_LBA = 2**64 - 1
MAX_SEED = 2**63 - 1


@attrs.frozen
class RawFault:
    """One ``[[faults]]`` table, key for key."""

    action: str
    id: str | None = None
    enabled: bool = True
    # match
    target: str | None = None
    device: str | None = None
    lun: int | None = None
    initiator: str | None = None
    opcodes: list[int] = attrs.field(factory=list)
    op_class: str | None = None
    lba: list[int] | None = None
    direction: str | None = None
    portal: str | None = None
    pdus: list[str] = attrs.field(factory=list)
    # trigger
    probability: float = 1.0
    seed: int | None = None
    every: int = 1
    after: int = 0
    times: int | None = None
    window: list[float] | None = None
    # action parameters
    sense_key: int | str = "medium_error"
    asc: int = 0x11
    ascq: int = 0x00
    information: bool = True
    status: str = "busy"
    delay: float = 0.0
    jitter: float = 0.0
    phase: str = "before"
    bits: int = 1
    blocks: int | None = None
    lbas: list[int] = attrs.field(factory=list)
    grow: bool = False
    state: str = "standby"
    group: str | int | None = None


_COMMON = {"action", "id", "enabled", "probability", "seed", "every", "after", "times", "window"}
_NAMES = {"target", "initiator", "portal"}
_COMMAND_MATCH = {"device", "lun", "opcodes", "op_class", "lba", "direction"}
_SENSE = {"sense_key", "asc", "ascq"}
#: the action-specific keys each action accepts (besides _COMMON and its match keys)
ACTION_KEYS: dict[ActionKind, set[str]] = {
    ActionKind.CHECK_CONDITION: {*_SENSE, "information"},
    ActionKind.STATUS: {"status"},
    ActionKind.DELAY: {"delay", "jitter", "phase"},
    ActionKind.HANG: set(),
    ActionKind.DROP_CONNECTION: {"phase"},
    ActionKind.DROP_SESSION: {"phase"},
    ActionKind.CORRUPT_READ: {"bits"},
    ActionKind.TORN_WRITE: {"blocks"},
    ActionKind.BAD_BLOCKS: {*_SENSE, "lbas", "grow"},
    ActionKind.CRASH_DEVICE: set(),
    ActionKind.PDU_DROP: {"pdus"},
    ActionKind.PDU_DELAY: {"pdus", "delay", "jitter"},
    ActionKind.DIGEST_ERROR: {"pdus"},
    ActionKind.NOP_STALL: {"delay", "jitter"},
    ActionKind.REFUSE_LOGIN: set(),
    ActionKind.ALUA_TRANSITION: {"state", "group", "delay", "jitter"},
    ActionKind.REFUSE_STPG: set(),
    ActionKind.SLOW_TRANSITION: {"delay", "jitter"},
}


def allowed_keys(kind: ActionKind) -> set[str]:
    match_keys = _NAMES | (_COMMAND_MATCH if HOOK_OF[kind] is Hook.COMMAND else set())
    return _COMMON | match_keys | ACTION_KEYS[kind]


def parse_faults(
    value: object,
    problems: list[Problem],
    devices: set[str] | None = None,
    targets: set[str] | None = None,
) -> tuple[FaultRule, ...]:
    """The ``faults`` array of a config document; problems appended, bad rules left out."""
    if not isinstance(value, list):
        problems.append(Problem(("faults",), f"expected an array of tables, got "
                                              f"{describe_value(value)}"))
        return ()
    rules: list[FaultRule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        rule = parse_rule(item, ("faults", i), problems, devices, targets, f"fault-{i + 1}")
        if rule is None:
            continue
        if rule.id in seen:
            problems.append(
                Problem(("faults", i, "id"), f'"{rule.id}" already used by faults[{seen[rule.id]}]')
            )
            continue
        seen[rule.id] = i
        rules.append(rule)
    return tuple(rules)


def parse_rule(
    data: object,
    path: KeyPath,
    problems: list[Problem],
    devices: set[str] | None = None,
    targets: set[str] | None = None,
    default_id: str = "fault-1",
) -> FaultRule | None:
    """One rule table; None (with problems appended) when it is not valid."""
    if not isinstance(data, Mapping):
        problems.append(Problem(path, f"expected a table, got {describe_value(data)}"))
        return None
    try:
        raw = make_converter().structure(dict(data), RawFault)
    except Exception as exc:  # cattrs raises a group of every shape/type error
        problems.extend(describe_structure_error(exc, path))
        return None
    checker = _Checker(path, devices, targets)
    rule = checker.rule(raw, set(data), default_id)
    problems.extend(checker.problems)
    return rule if not checker.problems else None


class _Checker:
    def __init__(self, path: KeyPath, devices: set[str] | None, targets: set[str] | None) -> None:
        self.path = path
        self.devices = devices
        self.targets = targets
        self.problems: list[Problem] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(Problem((*self.path, key), message))

    def choice(self, key: str, value: str, choices: Iterable[str]) -> str | None:
        names = list(choices)
        if value.lower() in names:
            return value.lower()
        self.fail(key, f'expected one of {", ".join(names)}, got "{value}"')
        return None

    def rule(self, raw: RawFault, given: set[str], default_id: str) -> FaultRule | None:
        kind_name = self.choice("action", raw.action, [k.value for k in ActionKind])
        if kind_name is None:
            return None
        kind = ActionKind(kind_name)
        for key in sorted(given - allowed_keys(kind)):
            self.fail(key, f"does not apply to action {kind.value}")
        rule_id = raw.id if raw.id is not None else default_id
        if not rule_id or len(rule_id) > 64 or any(c.isspace() for c in rule_id):
            self.fail("id", "expected 1-64 characters without white space")
        return FaultRule(
            id=rule_id,
            action=self.action(kind, raw),
            match=self.match(kind, raw),
            trigger=self.trigger(raw),
            enabled=raw.enabled,
        )

    def match(self, kind: ActionKind, raw: RawFault) -> Match:
        if raw.target is not None and self.targets is not None:
            if raw.target.lower() not in {t.lower() for t in self.targets}:
                self.fail("target", f'no target named "{raw.target}"')
        if raw.device is not None and self.devices is not None and raw.device not in self.devices:
            self.fail("device", f'no device named "{raw.device}"')
        if raw.lun is not None and not 0 <= raw.lun <= MAX_LUN:
            self.fail("lun", f"expected 0..{MAX_LUN}, got {raw.lun}")
        if raw.initiator is not None:
            try:
                check_initiator_pattern(raw.initiator)
            except ValueError as exc:
                self.fail("initiator", str(exc))
        if raw.portal is not None and (not raw.portal or any(c.isspace() for c in raw.portal)):
            self.fail("portal", 'expected "host:port" or a glob such as "*:3261"')
        for i, op in enumerate(raw.opcodes):
            if not 0 <= op <= 0xFF:
                self.problems.append(Problem((*self.path, "opcodes", i), f"expected 0..255, "
                                                                         f"got {op}"))
        op_class = direction = None
        if raw.op_class is not None:
            name = self.choice("op_class", raw.op_class, [c.value for c in OpClass])
            op_class = OpClass(name) if name else None
        if raw.direction is not None:
            name = self.choice("direction", raw.direction, [d.value for d in Direction])
            direction = Direction(name) if name else None
        lba: tuple[int, int] | None = None
        if raw.lba is not None:
            if (
                len(raw.lba) not in (1, 2)
                or min(raw.lba) < 0
                or raw.lba[0] > raw.lba[-1]
                or raw.lba[-1] > MAX_LBA
            ):
                self.fail("lba", "expected [first] or [first, last] with "
                                 "0 <= first <= last < 2**64")  # fmt: skip
            else:
                lba = (raw.lba[0], raw.lba[-1])
        names = TARGET_PDU_NAMES if kind is ActionKind.DIGEST_ERROR else PDU_NAMES
        for i, name in enumerate(raw.pdus):
            if name not in names:
                what = "unknown PDU kind" if name not in PDU_NAMES else "not sent by the target:"
                self.problems.append(Problem(
                    (*self.path, "pdus", i),
                    f'{what} "{name}" (one of {", ".join(sorted(names))})',
                ))  # fmt: skip
        return Match(
            target=raw.target,
            device=raw.device,
            lun=raw.lun,
            initiator=raw.initiator,
            opcodes=frozenset(raw.opcodes),
            op_class=op_class,
            lba=lba,
            direction=direction,
            pdus=frozenset(raw.pdus),
            portal=raw.portal,
        )

    def trigger(self, raw: RawFault) -> Trigger:
        if not 0.0 <= raw.probability <= 1.0:
            self.fail("probability", f"expected 0..1, got {raw.probability}")
        if raw.seed is not None and not 0 <= raw.seed <= MAX_SEED:
            self.fail("seed", f"expected 0..{MAX_SEED}, got {raw.seed}")
        if raw.every < 1:
            self.fail("every", f"expected 1 or more, got {raw.every}")
        if raw.after < 0:
            self.fail("after", f"expected 0 or more, got {raw.after}")
        if raw.times is not None and raw.times < 1:
            self.fail("times", f"expected 1 or more, got {raw.times}")
        window: tuple[float, float | None] | None = None
        if raw.window is not None:
            w = raw.window
            if len(w) not in (1, 2) or w[0] < 0 or (len(w) == 2 and w[1] <= w[0]):
                self.fail("window", "expected [start] or [start, end] seconds, 0 <= start < end")
            else:
                window = (float(w[0]), float(w[1]) if len(w) == 2 else None)
        return Trigger(
            probability=raw.probability,
            seed=raw.seed,
            every=raw.every,
            after=raw.after,
            times=raw.times,
            window=window,
        )

    def action(self, kind: ActionKind, raw: RawFault) -> Action:
        sense_key = self.sense_key(raw.sense_key)
        for key in ("asc", "ascq"):
            if not 0 <= getattr(raw, key) <= 0xFF:
                self.fail(key, f"expected 0..255, got {getattr(raw, key)}")
        status_name = self.choice("status", raw.status, FAULT_STATUSES)
        phase_name = self.choice("phase", raw.phase, [p.value for p in Phase])
        for key in ("delay", "jitter"):
            if not 0 <= getattr(raw, key) <= 3600:
                self.fail(key, f"expected 0..3600 seconds, got {getattr(raw, key)}")
        if not 1 <= raw.bits <= 4096:
            self.fail("bits", f"expected 1..4096, got {raw.bits}")
        if raw.blocks is not None and raw.blocks < 0:
            self.fail("blocks", f"expected 0 or more, got {raw.blocks}")
        for i, lba in enumerate(raw.lbas):
            if not 0 <= lba <= MAX_LBA:
                self.problems.append(Problem((*self.path, "lbas", i), f"expected an LBA "
                                                                      f"0..2**64-1, got {lba}"))
        if kind is ActionKind.BAD_BLOCKS and not raw.lbas and not raw.grow:
            self.fail("lbas", "a bad_blocks rule needs lbas, grow = true, or both")
        state = AccessState.STANDBY
        try:
            state = AccessState.parse(raw.state)
        except ValueError as exc:
            self.fail("state", str(exc))
        if state is AccessState.TRANSITIONING:
            self.fail("state", "a group passes through transitioning (give delay), "
                               "it is not put there")  # fmt: skip
        group = None if raw.group is None else str(raw.group)
        if group is not None and not group.strip():
            self.fail("group", "expected a port group name or id")
        defaults = Action(kind)
        return Action(
            kind=kind,
            sense_key=sense_key if sense_key is not None else defaults.sense_key,
            asc=raw.asc if 0 <= raw.asc <= 0xFF else 0x11,
            ascq=raw.ascq if 0 <= raw.ascq <= 0xFF else 0,
            information=raw.information,
            status=FAULT_STATUSES[status_name] if status_name else defaults.status,
            delay=float(raw.delay),
            jitter=float(raw.jitter),
            phase=Phase(phase_name) if phase_name else Phase.BEFORE,
            bits=raw.bits,
            blocks=raw.blocks,
            lbas=frozenset(raw.lbas),
            grow=raw.grow,
            state=int(state),
            group=group,
        )

    def sense_key(self, value: int | str) -> SenseKey | None:
        if isinstance(value, int):
            try:
                return SenseKey(value)
            except ValueError:
                self.fail("sense_key", f"expected a sense key 0..15, got {value}")
                return None
        by_name = {k.name.lower(): k for k in SenseKey}
        key = by_name.get(value.lower().replace(" ", "_"))
        if key is None:
            self.fail("sense_key", f'unknown sense key "{value}" (e.g. medium_error, '
                                   f"hardware_error, not_ready, aborted_command or 0..15)")
        return key


def rule_to_dict(rule: FaultRule) -> dict[str, Any]:
    """The flat table :func:`parse_rule` reads back as an equal rule (JSON/TOML-able)."""
    kind = rule.action.kind
    m, t, a = rule.match, rule.trigger, rule.action
    out: dict[str, Any] = {"id": rule.id, "action": kind.value}
    if not rule.enabled:
        out["enabled"] = False
    optional = {
        "target": m.target, "initiator": m.initiator, "device": m.device, "lun": m.lun,
        "portal": m.portal,
        "op_class": m.op_class.value if m.op_class else None,
        "direction": m.direction.value if m.direction else None,
        "seed": t.seed, "times": t.times,
    }  # fmt: skip
    out.update({k: v for k, v in optional.items() if v is not None})
    if m.opcodes:
        out["opcodes"] = sorted(m.opcodes)
    if m.lba is not None:
        out["lba"] = list(m.lba)
    if m.pdus and "pdus" in ACTION_KEYS[kind]:
        out["pdus"] = sorted(m.pdus)
    if t.probability != 1.0:
        out["probability"] = t.probability
    if t.every != 1:
        out["every"] = t.every
    if t.after:
        out["after"] = t.after
    if t.window is not None:
        out["window"] = [t.window[0]] if t.window[1] is None else list(t.window)
    keys = ACTION_KEYS[kind]
    params: dict[str, Any] = {
        "sense_key": a.sense_key.name.lower(), "asc": a.asc, "ascq": a.ascq,
        "information": a.information, "delay": a.delay, "jitter": a.jitter,
        "phase": a.phase.value, "bits": a.bits, "grow": a.grow,
        "status": next(n for n, s in FAULT_STATUSES.items() if s is a.status),
    }  # fmt: skip
    out.update({k: v for k, v in params.items() if k in keys})
    if "blocks" in keys and a.blocks is not None:
        out["blocks"] = a.blocks
    if "lbas" in keys:
        out["lbas"] = sorted(a.lbas)
    if "state" in keys:
        out["state"] = AccessState(a.state).label
    if "group" in keys and a.group is not None:
        out["group"] = a.group
    return out
