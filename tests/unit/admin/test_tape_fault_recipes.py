"""The tape fault recipes of docs/tape.md are accepted by the daemon's parsers,
and a ``tape`` rule refuses keys and values that mean nothing."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pyscst.admin.client.faults import parse_assignments
from pyscst.admin.config.faults import parse_rule, rule_to_dict
from pyscst.admin.config.files import parse_config
from pyscst.admin.config.schema import Problem

ROOT = Path(__file__).resolve().parents[3]
TEXT = (ROOT / "docs" / "tape.md").read_text()
BASE = 'state_dir = "{state}"\n'
DEVICE = '[devices.tape0]\nhandler = "vtape"\n'
TARGET = '[targets."iqn.2026-11.org.pyscst:t"]\nportals = ["127.0.0.1:3260"]\n' \
         'luns = [{{ lun = 0, device = "tape0" }}]\n'


@pytest.mark.parametrize("block", re.findall(r"```toml\n(.*?)```", TEXT, re.S))
def test_toml_recipes_parse(tmp_path: Path, block: str) -> None:
    device = "" if "[devices.tape0]" in block else DEVICE
    (tmp_path / "A00001L8").mkdir()
    text = BASE.format(state=tmp_path) + device + block + "\n" + TARGET.format()
    config = parse_config(text, tmp_path)
    assert len(config.faults) == block.count("[[faults]]")


def _lines() -> list[list[str]]:
    out = []
    for block in re.findall(r"```sh\n(.*?)```", TEXT, re.S):
        for line in block.splitlines():
            words = shlex.split(line)
            if words[:4] == ["pyscst", "admin", "fault", "add"]:
                out.append(words[4:])
    return out


@pytest.mark.parametrize("words", _lines(), ids=" ".join)
def test_fault_add_lines_parse_and_round_trip(words: list[str]) -> None:
    problems: list[Problem] = []
    rule = parse_rule(parse_assignments(words), (), problems)
    assert rule is not None, problems
    again = parse_rule(rule_to_dict(rule), (), problems)
    assert again == rule


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"action": "tape", "event": "melt"}, "event"),
        ({"action": "tape", "event": "tapealert"}, "alerts"),
        ({"action": "tape", "event": "tapealert", "alerts": [65]}, "alerts"),
        ({"action": "tape", "record": -1}, "record"),
        ({"action": "tape", "lbas": [1]}, "lbas"),
        ({"action": "check_condition", "event": "clean"}, "event"),
    ],
)
def test_bad_tape_rules_name_the_key(table: dict[str, object], key: str) -> None:
    problems: list[Problem] = []
    assert parse_rule(table, ("faults", 0), problems) is None
    assert any(key in p.path for p in problems), problems
