"""The fault rule engine and the ``[[faults]]`` schema, without any I/O.

Matching, every trigger, replay of seeded probabilities, the bad-block list
and its healing, and the config checks with their key paths.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from pyscst.actors.faults import (
    Action,
    ActionKind,
    CommandFacts,
    Direction,
    FaultEngine,
    FaultRule,
    Match,
    OpClass,
    Trigger,
)
from pyscst.admin.config.files import ConfigError, dump_config, parse_config
from pyscst.admin.config.faults import parse_rule, rule_to_dict
from pyscst.admin.config.schema import Problem
from pyscst.scsi.sense import SenseKey, Status


def facts(lba: int = 0, n: int = 1, op: int = 0x28, initiator: str = "iqn.2026-11.org.x:a",
          op_class: OpClass = OpClass.READ, lun: int = 0) -> CommandFacts:  # fmt: skip
    direction = Direction.READ if op_class is OpClass.READ else Direction.WRITE
    return CommandFacts(initiator=initiator, target="iqn.2026-11.org.pyscst:t", device="d0",
                        lun=lun, opcode=op, op_class=op_class, direction=direction, lba=lba,
                        nblocks=n, tag=7)  # fmt: skip


def engine(**kw: Any) -> FaultEngine:
    action = kw.pop("action", Action(ActionKind.CHECK_CONDITION))
    match = kw.pop("match", Match())
    return FaultEngine([FaultRule("r", action, match, Trigger(**kw))])


def hits(e: FaultEngine, n: int, now: float = 0.0, **kw: Any) -> list[int]:
    return [i for i in range(n) if e.on_command(facts(lba=i, **kw), now) is not None]


def test_matching() -> None:
    m = Match(initiator="IQN.2026-11.org.x:*", lun=0, lba=(10, 19), op_class=OpClass.READ)
    assert m.command_matches(facts(lba=5, n=5)) is False  # 5..9
    assert m.command_matches(facts(lba=5, n=6)) is True  # overlaps 10
    assert m.command_matches(facts(lba=19)) is True
    assert m.command_matches(facts(lba=20)) is False
    assert m.command_matches(facts(lba=12, initiator="iqn.2026-11.org.y:a")) is False
    assert m.command_matches(facts(lba=12, lun=1)) is False
    assert m.command_matches(facts(lba=12, op_class=OpClass.WRITE)) is False
    assert Match(opcodes=frozenset({0x2A})).command_matches(facts()) is False
    assert Match(direction=Direction.READ).command_matches(facts()) is True
    on_b = attrs.evolve(facts(), portal="10.0.0.2:3261")
    assert Match(portal="*:3261").command_matches(on_b) is True
    assert Match(portal="10.0.0.1:*").command_matches(on_b) is False
    assert Match(portal="*:3261").command_matches(facts()) is False  # portal unknown


def test_every_after_times_window() -> None:
    assert hits(engine(every=3), 10) == [2, 5, 8]
    assert hits(engine(after=4), 7) == [4, 5, 6]
    assert hits(engine(times=2), 5) == [0, 1]
    assert hits(engine(after=2, every=2, times=2), 10) == [3, 5]
    e = engine(window=(1.0, 2.0))
    assert hits(e, 3, now=0.5) == [] and hits(e, 3, now=1.5) == [0, 1, 2]
    assert hits(e, 3, now=2.0) == []


def test_seeded_probability_replays_and_differs_by_seed() -> None:
    runs = [hits(engine(probability=0.25, seed=s), 400) for s in (5, 5, 6)]
    assert runs[0] == runs[1] != runs[2]
    assert 60 <= len(runs[0]) <= 140
    # no explicit seed: derived from the id, still reproducible
    assert hits(engine(probability=0.5), 50) == hits(engine(probability=0.5), 50)


def test_check_condition_information_and_status() -> None:
    e = engine(match=Match(lba=(100, 200)))
    injection = e.on_command(facts(lba=90, n=20), 0.0)
    assert injection is not None and injection.error is not None
    sense = injection.error.sense
    assert sense is not None and sense.key is SenseKey.MEDIUM_ERROR and sense.information == 100
    e = engine(action=Action(ActionKind.STATUS, status=Status.TASK_SET_FULL))
    injection = e.on_command(facts(), 0.0)
    assert injection is not None and injection.error is not None
    assert injection.error.status is Status.TASK_SET_FULL and injection.error.sense is None


def test_bad_blocks_heal_on_write_and_grow() -> None:
    e = engine(action=Action(ActionKind.BAD_BLOCKS, lbas=frozenset({5, 7})))
    first = e.on_command(facts(lba=0, n=10), 0.0)
    assert first is not None and first.error is not None and first.error.sense is not None
    assert first.error.sense.information == 5
    assert e.on_command(facts(lba=5, n=1, op=0x2A, op_class=OpClass.WRITE), 0.0) is None
    again = e.on_command(facts(lba=0, n=10), 0.0)
    assert again is not None and again.error is not None and again.error.sense is not None
    assert again.error.sense.information == 7
    assert e.status()[0]["bad_blocks"] == [7]
    grow = engine(action=Action(ActionKind.BAD_BLOCKS, grow=True), every=2, seed=3)
    assert hits(grow, 6) == [1, 3, 5]
    assert grow.status()[0]["bad_blocks"] == [1, 3, 5]  # one-block reads: that block


def test_torn_write_keeps_half_by_default() -> None:
    e = engine(action=Action(ActionKind.TORN_WRITE))
    injection = e.on_command(facts(lba=10, n=8, op=0x2A, op_class=OpClass.WRITE), 0.0)
    assert injection is not None and injection.keep_blocks == 4
    assert injection.error is not None and injection.error.sense is not None
    assert injection.error.sense.information == 14
    assert e.on_command(facts(lba=10, n=8), 0.0) is None  # reads are never torn
    # writes whose data-out is not what lands on the medium are not torn either:
    # COMPARE AND WRITE, WRITE SAME(10/16), ORWRITE(16)
    for op in (0x89, 0x41, 0x93, 0x8B):
        assert e.on_command(facts(lba=10, n=8, op=op, op_class=OpClass.WRITE), 0.0) is None
    for op in (0x0A, 0xAA, 0x8A, 0x2E):  # the plain writes are
        assert e.on_command(facts(lba=10, n=8, op=op, op_class=OpClass.WRITE), 0.0) is not None


def test_crash_rules_are_not_rate_limited_by_the_engine() -> None:
    """Containment is the device supervisor's job (it offlines a device beyond its
    budget), so the engine injects every crash its trigger says."""
    e = engine(action=Action(ActionKind.CRASH_DEVICE))
    crashed: list[str] = []

    def crash() -> bool:
        crashed.append("d0")
        return True

    e.register_device("d0", crash)
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    fired = [t for t in times if e.on_command(facts(), t) is not None]
    assert fired == times
    assert e.status()[0]["injections"] == len(times)
    assert e.crash_device("d0") and crashed == ["d0"]
    assert not e.crash_device("nobody")  # no handler registered: nothing crashed


def test_digest_errors_only_on_pdus_the_target_sends() -> None:
    e = FaultEngine([FaultRule("d", Action(ActionKind.DIGEST_ERROR), trigger=Trigger(times=1))])
    assert e.on_pdu(0x01, "iqn.2026-11.org.x:a", "t", None, 0.0) is None  # SCSI Command: incoming
    assert e.on_pdu(0x05, "iqn.2026-11.org.x:a", "t", None, 0.0) is None  # Data-Out
    assert e.on_pdu(0x21, "iqn.2026-11.org.x:a", "t", None, 0.0) is not None  # SCSI Response
    assert e.status()[0]["matches"] == 1 and e.status()[0]["injections"] == 1
    assert parse({"action": "digest_error", "pdus": ["data_in", "data_out"]})[1] == [
        'faults[0].pdus[1]: not sent by the target: "data_out" (one of async_message, data_in, '
        "login_response, logout_response, nop_in, r2t, reject, scsi_response, text_response, "
        'tmf_response)'
    ]
    assert parse({"action": "pdu_drop", "pdus": ["data_out"]})[1] == []


def test_admin_methods_and_armed_flags() -> None:
    e = FaultEngine()
    assert not (e.command_armed or e.pdu_armed or e.nop_armed or e.login_armed)
    e.add(FaultRule("p", Action(ActionKind.PDU_DROP)), 0.0)
    assert e.pdu_armed and not e.command_armed
    e.set_enabled("p", False, 1.0)
    assert not e.pdu_armed
    with pytest.raises(ValueError):
        e.add(FaultRule("p", Action(ActionKind.HANG)), 0.0)
    assert e.new_id() == "fault-2"  # one rule exists
    e.remove("p")
    assert e.status() == []


def parse(data: dict[str, Any]) -> tuple[FaultRule | None, list[str]]:
    problems: list[Problem] = []
    rule = parse_rule(data, ("faults", 0), problems, {"disk0"}, {"iqn.2026-11.org.x:t"})
    return rule, [str(p) for p in problems]


def test_schema_errors_have_key_paths() -> None:
    assert parse({"action": "explode"})[1] == [
        "faults[0].action: expected one of " + ", ".join(k.value for k in ActionKind)
        + ', got "explode"'
    ]
    _, problems = parse({"action": "hang", "probability": 2, "lba": [9, 3], "device": "x",
                         "bits": 2, "lun": "0"})  # fmt: skip
    assert "faults[0].lun: expected an integer, got string \"0\"" in problems
    _, problems = parse({"action": "hang", "probability": 2, "lba": [9, 3], "device": "x",
                         "bits": 2})  # fmt: skip
    assert problems == [
        "faults[0].bits: does not apply to action hang",
        "faults[0].device: no device named \"x\"",
        "faults[0].lba: expected [first] or [first, last] with 0 <= first <= last < 2**64",
        "faults[0].probability: expected 0..1, got 2.0",
    ]
    assert parse({"action": "refuse_login", "portal": "*:1"})[1] == []  # any rule has one
    assert parse({"action": "refuse_login", "lun": 0})[1] == [
        "faults[0].lun: does not apply to action refuse_login"
    ]
    assert parse({"action": "hang", "portal": "a b"})[1] == [
        'faults[0].portal: expected "host:port" or a glob such as "*:3261"'
    ]
    _, problems = parse({"action": "pdu_drop", "pdus": ["scsi_resp"], "lba": [1]})
    assert problems[0] == "faults[0].lba: does not apply to action pdu_drop"
    assert problems[1].startswith('faults[0].pdus[0]: unknown PDU kind "scsi_resp"')
    assert parse({"action": "hang", "seed": 2**63, "lba": [0, 2**64]})[1] == [
        "faults[0].lba: expected [first] or [first, last] with 0 <= first <= last < 2**64",
        f"faults[0].seed: expected 0..{2**63 - 1}, got {2**63}",
    ]
    assert parse({"action": "bad_blocks", "lbas": [2**64]})[1] == [
        f"faults[0].lbas[0]: expected an LBA 0..2**64-1, got {2**64}"
    ]
    assert parse({"action": "bad_blocks"})[1] == [
        "faults[0].lbas: a bad_blocks rule needs lbas, grow = true, or both"
    ]


@pytest.mark.parametrize(
    "data",
    [
        {"id": "a", "action": "check_condition", "sense_key": 4, "asc": 0x44, "lba": [3, 9],
         "initiator": "iqn.2026-11.org.x:*", "probability": 0.5, "seed": 3, "window": [1, 5]},
        {"id": "b", "action": "delay", "delay": 0.5, "jitter": 0.1, "phase": "after",
         "op_class": "write", "every": 4, "after": 2, "times": 9, "enabled": False},
        {"id": "c", "action": "bad_blocks", "lbas": [5, 1], "grow": True, "device": "disk0"},
        {"id": "d", "action": "pdu_delay", "pdus": ["data_in", "r2t"], "delay": 1.0,
         "target": "iqn.2026-11.org.x:t"},
        {"id": "e", "action": "status", "status": "aca_active", "opcodes": [0x28, 0x88]},
        {"id": "f", "action": "drop_connection", "portal": "*:3261", "direction": "none"},
    ],
)  # fmt: skip
def test_rule_round_trip(data: dict[str, Any]) -> None:
    rule, problems = parse(data)
    assert problems == [] and rule is not None
    again, problems = parse(rule_to_dict(rule))
    assert problems == [] and again == rule


def test_config_file_faults(tmp_path: Any) -> None:
    text = """
[devices.disk0]
handler = "vdisk_nullio"
size = "1MiB"
[targets."iqn.2026-11.org.x:t"]
portals = ["127.0.0.1:3261"]
luns = [{ lun = 0, device = "disk0" }]
[[faults]]
action = "hang"
device = "disk0"
[[faults]]
id = "two"
action = "refuse_login"
window = [0, 30]
"""
    config = parse_config(text, tmp_path)
    assert [r.id for r in config.faults] == ["fault-1", "two"]
    assert parse_config(dump_config(config), tmp_path) == config
    with pytest.raises(ConfigError) as bad:
        parse_config(text + '[[faults]]\nid = "two"\naction = "hang"\ndevice = "disk1"\n', tmp_path)
    assert [str(p) for p in bad.value.problems] == [
        'faults[2].device: no device named "disk1"',
    ]
    with pytest.raises(ConfigError) as dup:
        parse_config(text + '[[faults]]\nid = "two"\naction = "hang"\n', tmp_path)
    assert [str(p) for p in dup.value.problems] == ['faults[2].id: "two" already used by faults[1]']
