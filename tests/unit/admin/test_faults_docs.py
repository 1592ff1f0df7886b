"""The fault recipes in README.md and docs/faults.md are rules the daemon accepts.

Recipes are copied into real configs and shells; one that no longer parses
(a renamed key, a key that does not apply to its action) would fail the user
at the worst moment. Every ```toml block becomes part of a config file and
every ``fault add`` line goes through the same parser as ``pyscst admin``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pyscst.admin.client.faults import parse_assignments
from pyscst.admin.config.files import parse_config
from pyscst.admin.config.faults import parse_rule
from pyscst.admin.config.schema import Problem

ROOT = Path(__file__).resolve().parent.parent
BASE = """
state_dir = "{state}"
[devices.disk0]
handler = "vdisk_nullio"
size = "4GiB"
"""
DEFAULT_TARGET = """
[targets."iqn.2026-11.org.pyscst:docs"]
portals = ["127.0.0.1:3260"]
luns = [{ lun = 0, device = "disk0" }]
"""


def fault_text() -> str:
    """docs/faults.md and the README's "Fault injection" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Fault injection") :]
    section = section[: section.index("\n## ", 1)]
    return section + (ROOT / "docs" / "faults.md").read_text()


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", fault_text(), re.S)


def fault_add_lines() -> list[list[str]]:
    out = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "fault" in words and words[words.index("fault") + 1 :][:1] == ["add"]:
                out.append(words[words.index("fault") + 2 :])
    return out


def test_the_docs_have_recipes() -> None:
    assert len(blocks("toml")) >= 5 and len(fault_add_lines()) >= 3


@pytest.mark.parametrize("block", blocks("toml"))
def test_toml_recipe_parses(tmp_path: Path, block: str) -> None:
    targets = "" if "[targets." in block else DEFAULT_TARGET
    config = parse_config(BASE.format(state=tmp_path) + targets + block, tmp_path)
    assert len(config.faults) == block.count("[[faults]]")


@pytest.mark.parametrize("words", fault_add_lines(), ids=" ".join)
def test_admin_fault_add_line_parses(words: list[str]) -> None:
    problems: list[Problem] = []
    rule = parse_rule(parse_assignments(words), (), problems)
    assert rule is not None, problems
