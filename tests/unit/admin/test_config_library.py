"""``vchanger`` devices in TOML: the library table, its drives, its cartridges,
and every mistake reported with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyscst.admin.config.files import ConfigError, dump_config, parse_config

GOOD = """
state_dir = "/srv/vtl"
[devices.t0]
handler = "vtape"
[devices.t1]
handler = "vtape"
[devices.lib0]
handler = "vchanger"
[devices.lib0.library]
drives = ["t0", "t1"]
slots = 8
mail_slots = 2
cartridges = [
  { barcode = "A00001L8", capacity = "100M" },
  { barcode = "A00002L8", capacity = "2G", worm = true, slot = 5 },
]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc")
    return [str(p) for p in info.value.problems]


def test_a_library_resolves_and_round_trips() -> None:
    config = parse_config(GOOD, "/etc")
    lib = next(d for d in config.devices if d.name == "lib0")
    assert lib.path == Path("/srv/vtl/lib0") and lib.size == 0
    assert lib.library is not None
    assert lib.library.layout.drives == ("t0", "t1") and lib.library.layout.mail_slots == 2
    assert lib.library.state_file == Path("/srv/vtl/library/lib0.json")
    worm = lib.library.cartridges[1]
    assert (worm.barcode, worm.capacity, worm.worm, worm.slot) == ("A00002L8", 2 << 30, True, 5)
    assert parse_config(dump_config(config), "/") == config


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (('drives = ["t0", "t1"]', 'drives = ["t0", "t9"]'),
         'devices.lib0.library.drives[1]: no device named "t9"'),
        (('drives = ["t0", "t1"]', 'drives = ["t0", "t0"]'),
         'devices.lib0.library.drives[1]: "t0" listed twice'),
        (('[devices.t1]\nhandler = "vtape"', '[devices.t1]\nhandler = "vdisk_nullio"\nsize = "1M"'),
         'devices.lib0.library.drives[1]: "t1" is a vdisk_nullio device, not vtape'),
        (("slots = 8", "slots = 0"), "devices.lib0.library.slots: expected 1..64512, got 0"),
        (("mail_slots = 2", "mail_slots = 300"),
         "devices.lib0.library.mail_slots: expected 0..240, got 300"),
        (('barcode = "A00001L8"', 'barcode = "../etc"'),
         'devices.lib0.library.cartridges[0].barcode: barcode "../etc"'),
        (('barcode = "A00002L8"', 'barcode = "A00001L8"'),
         'devices.lib0.library.cartridges[1].barcode: "A00001L8" is also cartridges[0]'),
        (('capacity = "100M"', 'capacity = "1K"'),
         "devices.lib0.library.cartridges[0].capacity: at least 1MiB"),
        (("slot = 5", "slot = 9"), "devices.lib0.library.cartridges[1].slot: expected 1..8"),
        (('handler = "vchanger"', 'handler = "vchanger"\nsize = "1G"'),
         "devices.lib0.size: vchanger takes"),
        (("slots = 8", "slots = 8\nrobots = 2"), "unknown key devices.lib0.library.robots"),
        (('[devices.lib0.library]', '[devices.t0.library]'), "devices.t0.library: only vchanger"),
        (('[devices.t0]\nhandler = "vtape"', '[devices.t0]\nhandler = "vtape"\npath = "A1"'),
         'devices.t0.path: "t0" is a drive of library "lib0", whose changer loads it'),
    ],
)
def test_mistakes_name_their_key(edit: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    found = problems(text)
    assert any(expected in p for p in found), found


def test_missing_library_table_and_a_drive_in_two_libraries() -> None:
    found = problems('[devices.lib1]\nhandler = "vchanger"\n')
    assert any("devices.lib1.library: required for vchanger" in p for p in found), found
    two = GOOD + '[devices.lib1]\nhandler = "vchanger"\n[devices.lib1.library]\ndrives = ["t1"]\n'
    found = problems(two)
    assert any('devices.lib1.library.drives[0]: "t1" is also a drive of library "lib0"' in p
               for p in found), found


def test_save_writes_the_library_table_back() -> None:
    from pyscst.admin.config import edit as config_edit

    config = parse_config(GOOD, "/etc")
    fresh = config_edit.render(config)
    assert parse_config(fresh, "/etc") == config
    unchanged = config_edit.render(config, GOOD, Path("/etc"), Path("/etc"))
    assert unchanged.strip() == GOOD.strip()


def test_the_documented_library_parses(tmp_path: Path) -> None:
    import re

    root = Path(__file__).resolve().parents[3]
    block = re.findall(r"```toml\n(.*?)```", (root / "docs" / "changer.md").read_text(), re.S)[0]
    config = parse_config(f'state_dir = "{tmp_path}"\n' + block, tmp_path)
    lib = next(d for d in config.devices if d.library is not None)
    assert lib.library is not None and lib.library.layout.drives == ("t0", "t1")
