"""[targets.X.port_groups]: what ALUA configuration is accepted, refused (with the
key path), and written back unchanged by dump and save."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyscst.admin.config import edit
from pyscst.admin.config.files import ConfigError, dump_config, parse_config
from pyscst.scsi.alua import AccessState

T = "iqn.2026-11.org.pyscst:alua"
BASE = f"""
[devices.d0]
handler = "vdisk_nullio"
size = "1MiB"
[targets."{T}"]
portals = ["127.0.0.1:4000", "127.0.0.2:4000"]
luns = [{{ lun = 0, device = "d0" }}]
alua_transition_time = 12
[targets."{T}".auth]
initiators = ["iqn.2026-11.org.example:*"]
"""
GROUPS = f"""
[targets."{T}".port_groups.a]
id = 1
portals = ["127.0.0.1:4000"]
[targets."{T}".port_groups.b]
id = 2
portals = ["127.0.0.2:4000"]
state = "standby"
relative_port = 9
preferred = true
[targets."{T}".port_groups.remote]
id = 3
"""
P = f'targets."{T}"'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/srv")
    return [str(p) for p in info.value.problems]


def test_port_groups_resolve() -> None:
    target = parse_config(BASE + GROUPS, "/srv").targets[0]
    assert target.alua_explicit and target.alua_transition_time == 12
    got = [(g.name, g.group_id, [str(p) for p in g.portals], g.state, g.relative_port,
            g.preferred) for g in target.port_groups]  # fmt: skip
    assert got == [
        ("a", 1, ["127.0.0.1:4000"], AccessState.ACTIVE_OPTIMIZED, 1, False),
        ("b", 2, ["127.0.0.2:4000"], AccessState.STANDBY, 9, True),
        ("remote", 3, [], AccessState.ACTIVE_OPTIMIZED, 3, False),  # ports on another node
    ]


def test_dump_and_save_keep_port_groups() -> None:
    config = parse_config(BASE + GROUPS, "/srv")
    assert parse_config(dump_config(config), "/srv") == config
    assert parse_config(edit.render(config), "/srv") == config
    # an edit of a file that had none adds them; of one that had them, removes them
    without = parse_config(BASE, "/srv")
    srv = Path("/srv")
    assert parse_config(edit.render(config, BASE, srv, srv), "/srv") == config
    assert parse_config(edit.render(without, BASE + GROUPS, srv, srv), "/srv") == without


@pytest.mark.parametrize(("extra", "message"), [
    ('id = 0\nportals = ["127.0.0.1:4000"]',
     '.port_groups.x.id: expected 1..65535, got 0'),
    ('id = 7\nportals = ["127.0.0.9:4000"]',
     ".port_groups.x.portals[0]: 127.0.0.9:4000 is not one of the target's portals"),
    ('id = 7\nportals = ["127.0.0.1:4000"]',
     '.port_groups.x.portals[0]: 127.0.0.1:4000 is already in port group "a"'),
    ('id = 1', '.port_groups.x.id: id 1 is already port group "a"'),
    ('id = 7\nrelative_port = 1',
     '.port_groups.x.relative_port: relative port 1 is already port group "a"\'s'),
    ('id = 7\nrelative_port = 70000', ".port_groups.x.relative_port: expected 1..65535"),
    ('id = 7\nstate = "sleepy"', '.port_groups.x.state: expected one of active/optimized'),
    ('id = 7\nstate = "transitioning"', ".port_groups.x.state: a group passes through"),
    ('id = 7\ncolour = "red"', ".port_groups.x.colour"),
])  # fmt: skip
def test_bad_port_groups_name_the_key(extra: str, message: str) -> None:
    text = BASE + f'[{P}.port_groups.a]\nid = 1\nportals = ["127.0.0.1:4000"]\n'
    text += f'[{P}.port_groups.z]\nid = 99\nportals = ["127.0.0.2:4000"]\n'
    text += f"[{P}.port_groups.x]\n{extra}\n"
    found = problems(text)
    assert any(P in p and message in p for p in found), found


def test_every_portal_needs_a_group_and_transition_time_is_a_byte() -> None:
    text = BASE.replace("= 12", "= 256")
    text += f'[{P}.port_groups.a]\nid = 1\nportals = ["127.0.0.1:4000"]\n'
    assert problems(text) == [
        f"{P}.alua_transition_time: expected 0..255, got 256",
        f"{P}.portals[1]: 127.0.0.2:4000 is in no port group (with port_groups, every "
        "portal is in one)",
    ]
