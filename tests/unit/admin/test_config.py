"""The config model: resolution, validation messages, and dump/load round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from pyscst.admin.config.files import (
    Config,
    ConfigError,
    Digest,
    Handler,
    LogLevel,
    Portal,
    default_serial,
    dump_config,
    load_config,
    parse_config,
)
from pyscst.admin.config.values import check_iscsi_name, format_size, parse_portal, parse_size

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET = "iqn.2026-11.org.pyscst:default"

EXAMPLE = f"""
state_dir = "../var"
control_socket = "pyscst.sock"
log_level = "info"

[iscsi]
max_recv_data_segment_length = 262144
header_digest = ["None", "CRC32C"]
queue_depth = 64

[devices.disk0]
handler = "vdisk_fileio"
path = "disk0.img"
size = "1GiB"
block_size = 512
write_cache = true

[devices.null]
handler = "vdisk_nullio"
size = 1048576
block_size = 4096
read_only = true

[targets."{TARGET}"]
portals = ["127.0.0.1:3260", "[::1]:3261"]
alias = "pyscst"
luns = [ {{ lun = 0, device = "disk0" }}, {{ lun = 1, device = "null" }} ]
[targets."{TARGET}".groups.hosts]
initiators = ["iqn.1994-05.com.redhat:*"]
luns = [ {{ lun = 0, device = "disk0", read_only = true }} ]
"""


def problems(text: str, base: str = "/srv/etc") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base)
    return [str(p) for p in info.value.problems]


def minimal(**device: Any) -> str:
    dev = {"handler": "vdisk_fileio", "size": "1MiB", **device}
    return tomli_w.dumps({
        "devices": {"d": dev},
        "targets": {TARGET: {"portals": ["127.0.0.1"], "luns": [{"lun": 0, "device": "d"}]}},
    })


# --- a good file ---------------------------------------------------------------


def test_example_resolves_paths_and_values() -> None:
    config = parse_config(EXAMPLE, "/srv/pyscst/etc")
    assert config.state_dir == Path("/srv/pyscst/var")
    assert config.control_socket == Path("/srv/pyscst/var/pyscst.sock")
    assert config.log_level is LogLevel.INFO
    assert config.iscsi.queue_depth == 64
    assert config.iscsi.data_digest == (Digest.NONE, Digest.CRC32C)  # default
    assert config.iscsi.poll_us == 50  # default
    disk = config.device("disk0")
    assert disk.handler is Handler.VDISK_FILEIO
    assert disk.path == Path("/srv/pyscst/var/disk0.img")
    assert disk.size == 2**30 and disk.block_count == 2**21
    assert disk.serial == default_serial("disk0") != default_serial("null")
    null = config.device("null")
    assert null.path is None and null.read_only and null.block_size == 4096
    target = config.target(TARGET)
    assert target.portals == (Portal("127.0.0.1", 3260), Portal("::1", 3261))
    assert [str(p) for p in target.portals] == ["127.0.0.1:3260", "[::1]:3261"]
    assert [m.lun for m in target.luns] == [0, 1]
    assert target.groups[0].name == "hosts"
    assert target.luns_for("iqn.1994-05.com.redhat:box1")[0].read_only
    assert target.luns_for("iqn.2000-01.com.example:other") == target.luns


def test_defaults_fill_a_minimal_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(minimal())
    config = load_config(path)
    assert config.state_dir == tmp_path
    assert config.device("d").path == tmp_path / "d.img"
    assert config.device("d").write_cache and not config.device("d").rotational
    assert config.target(TARGET).portals == (Portal("127.0.0.1", 3260),)
    assert config.iscsi.max_burst_length == 1048576 and not config.iscsi.initial_r2t


def test_embedded_default_config() -> None:
    config = load_config(REPO_ROOT / "etc" / "pyscst.toml")
    assert config.state_dir == REPO_ROOT / "var"
    (target,) = config.targets
    assert target.name == TARGET and target.portals == (Portal("127.0.0.1", 3260),)
    (lun0,) = target.luns
    disk = config.device(lun0.device)
    assert lun0.lun == 0 and disk.size == 2**30 and disk.handler is Handler.VDISK_FILEIO
    assert disk.path is not None and disk.path.parent == REPO_ROOT / "var"


def test_group_choice_exact_beats_glob_then_file_order() -> None:
    doc = {
        "devices": {"d": {"handler": "vdisk_fileio", "size": "1MiB"}},
        "targets": {TARGET: {
            "portals": ["127.0.0.1"],
            "luns": [{"lun": 0, "device": "d"}],
            "groups": {
                "globbed": {"initiators": ["iqn.2000-01.com.example:*"], "luns": []},
                "second": {"initiators": ["iqn.2000-01.com.*"],
                           "luns": [{"lun": 5, "device": "d"}]},
                "exact": {"initiators": ["iqn.2000-01.com.example:host1"],
                          "luns": [{"lun": 7, "device": "d"}]},
            },
        }},
    }
    target = parse_config(tomli_w.dumps(doc), "/x").target(TARGET)
    group = target.group_for("IQN.2000-01.com.example:HOST1")  # names compare caseless
    assert group is not None and group.name == "exact"
    assert target.luns_for("iqn.2000-01.com.example:host2") == ()
    assert [m.lun for m in target.luns_for("iqn.2000-01.com.other:x")] == [5]
    assert [m.lun for m in target.luns_for("iqn.1999-01.org.else:x")] == [0]


# --- errors: every problem, with its key path ----------------------------------


def test_brief_examples_of_messages() -> None:
    text = f"""
[devices.disk0]
handler = "vdisk_fileio"
size = "1GiB"
block_size = 520
[targets."{TARGET}"]
portals = ["127.0.0.1:3260"]
luns = [ {{ lun = 0, device = "disk0" }}, {{ lun = 1, device = "disk9" }} ]
"""
    assert problems(text) == [
        "devices.disk0.block_size: expected 512 or 4096, got 520",
        f'targets."{TARGET}".luns[1].device: no device named "disk9"',
    ]
    typo = f'[targets."{TARGET}"]\nportal = ["127.0.0.1:3260"]\n'
    assert problems(typo) == [
        f'targets."{TARGET}".portals: required key missing',
        f'unknown key targets."{TARGET}".portal (did you mean "portals"?)',
    ]


def test_toml_syntax_error_has_line_and_column() -> None:
    (message,) = problems('log_level = "info"\nstate_dir = \n')
    assert message.startswith("TOML syntax error")
    assert "line 2" in message and "column" in message


def test_many_problems_in_one_error() -> None:
    text = """
log_level = "chatty"
[iscsi]
first_burst_length = 2000000
header_digest = ["None", "crc"]
[devices.d1]
handler = "vdisk_filio"
size = 1000
[devices.d2]
handler = "vdisk_nullio"
path = "x.img"
size = "12 furlongs"
[targets."iqn.2026-13.org.x:y"]
portals = ["127.0.0.1:99999", "::1", "127.0.0.1"]
luns = [ { lun = 0, device = "d1" }, { lun = 0, device = "d1" },
         { lun = 16384, device = "d1" } ]
[targets."iqn.2026-13.org.x:y".groups.g]
initiators = ["not-a-name"]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc")
    found = [str(p) for p in info.value.problems]
    t = 'targets."iqn.2026-13.org.x:y"'
    expected_starts = [
        "log_level: expected one of debug",
        "iscsi.first_burst_length: 2000000 exceeds max_burst_length",
        'iscsi.header_digest[1]: expected "None" or "CRC32C", got "crc"',
        'devices.d1.handler: unknown handler "vdisk_filio" (did you mean "vdisk_fileio"?)',
        "devices.d1.size: 1000 bytes is not a multiple of block_size 512",
        "devices.d2.size: expected bytes or a number with a K/M/G/T/P(i)B suffix",
        "devices.d2.path: vdisk_nullio has no backing file",
        f"{t}: \"iqn.2026-13.org.x:y\": month 13",
        f"{t}.portals[0]: \"127.0.0.1:99999\": port 99999 outside 1..65535",
        f"{t}.portals[1]: \"::1\": write IPv6 portals as",
        f"{t}.luns[1].lun: LUN 0 already mapped at index 0",
        f"{t}.luns[2].lun: expected 0..16383, got 16384",
        f"{t}.groups.g.initiators[0]: \"not-a-name\" is not an iSCSI name",
    ]
    assert len(found) == len(expected_starts), found
    for message, start in zip(found, expected_starts, strict=True):
        assert message.startswith(start), (message, start)
    assert str(info.value).count("\n") == len(found)  # header line + one per problem


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("state_dir = 5", "state_dir: expected a string, got integer 5"),
        ("[iscsi]\ninitial_r2t = 1", "iscsi.initial_r2t: expected true or false, got integer 1"),
        ("[iscsi]\nqueue_depth = true", "iscsi.queue_depth: expected an integer, got boolean true"),
        ("[iscsi]\nqueue_depth = 0", "iscsi.queue_depth: expected 1..65536, got 0"),
        ("[iscsi]\npoll_us = 1001", "iscsi.poll_us: expected 0..1000, got 1001"),
        ("[iscsi]\npoll_us = -1", "iscsi.poll_us: expected 0..1000, got -1"),
        ('[iscsi]\ndata_digest = "CRC32C"', 'iscsi.data_digest: expected an array, got string'),
        ("[iscsi]\ndata_digest = []", "iscsi.data_digest: empty list"),
        ("iscsi = 3", "iscsi: expected a table, got integer 3"),
        ("[devices.d]\nsize = 512", "devices.d.handler: required key missing"),
        ("[devices.d]\nhandler = 'vdisk_nullio'\nsize = 1.5",
         "devices.d.size: expected an integer or a string, got float 1.5"),
        ("[devices.'bad name']\nhandler = 'vdisk_nullio'\nsize = 512", 'devices."bad name": '),
        ("[devices.d]\nhandler = 'vdisk_nullio'\nsize = 512\nserial = 'has space'",
         "devices.d.serial: expected 1-32 printable ASCII"),
        ("[devices.d]\nhandler = 'vdisk_nullio'\nsize = 512\nsizes = 1",
         'unknown key devices.d.sizes (did you mean "size"?)'),
        ("[targets.'eui.0123456789ABCDEF']\nportals = []", "targets.\"eui.0123456789ABCDEF\""
         ".portals: empty list"),
        ("[targets.'naa.0123']\nportals = ['h']",
         'targets."naa.0123": "naa.0123" is not a valid naa name'),
        ("[targets.'iqn.2026-11.org.x']\nportals = ['h', 'h:3260']",
         'targets."iqn.2026-11.org.x".portals[1]: h:3260 listed twice'),
    ],
)
def test_single_problem_messages(toml: str, message: str) -> None:
    found = problems(toml)
    assert len(found) == 1, found
    assert found[0].startswith(message), found


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read"):
        load_config(tmp_path / "nope.toml")


def test_duplicate_exact_initiator_across_groups() -> None:
    doc = {"targets": {TARGET: {"portals": ["h"], "groups": {
        "a": {"initiators": ["iqn.2000-01.com.x:h"]},
        "b": {"initiators": ["IQN.2000-01.com.x:h".lower()]},
    }}}}
    (message,) = problems(tomli_w.dumps(doc))
    assert message.endswith('initiators[0]: "iqn.2000-01.com.x:h" is already in group "a"')


# --- value parsers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [(4096, 4096), ("4096", 4096), ("1K", 1024), ("1KiB", 1024), ("1KB", 1000),
     ("64 MiB", 64 * 2**20), ("2g", 2 * 2**30), ("1TB", 10**12), ("3TiB", 3 * 2**40)],
)
def test_parse_size(text: int | str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5G", "-1", "0", 0, "1Gi", "1XB", "iB", "G"])
def test_parse_size_rejects(text: int | str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@given(st.integers(min_value=1, max_value=2**60))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize(
    ("text", "portal"),
    [("10.0.0.1", Portal("10.0.0.1", 3260)), ("[fe80::1]:3261", Portal("fe80::1", 3261)),
     ("[::]", Portal("::", 3260)), ("storage.example:860", Portal("storage.example", 860))],
)
def test_parse_portal(text: str, portal: Portal) -> None:
    assert parse_portal(text) == portal
    assert parse_portal(str(portal)) == portal


@pytest.mark.parametrize("text", ["1.2.3.4:0", "[::1", "[zz::1]:1", "host:port", "a..b", "1.2.3"])
def test_parse_portal_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_portal(text)


@pytest.mark.parametrize(
    "name",
    ["iqn.2026-11.org.pyscst:default", "iqn.1994-05.com.redhat:abc.def-1",
     "iqn.2001-04.com.example", "eui.02004567A425678D", "naa.52004567BA64678D",
     "naa.62004567BA64678D0123456789ABCDEF"],
)
def test_iscsi_names_accepted(name: str) -> None:
    assert check_iscsi_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["iqn.2026-11", "iqn.26-11.org.x", "iqn.2026-00.org.x", "iqn.2026-11.Org.x:y",
     "iqn.2026-11.org.x:has space", "eui.0123", "naa.0123456789ABCDEF0", "foo.bar",
     "iqn.2026-11.org.x:" + "a" * 220],
)
def test_iscsi_names_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        check_iscsi_name(name)


# --- dump/load round trip on generated configs ----------------------------------------

_device_names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
_group_names = st.from_regex(r"[A-Za-z][A-Za-z0-9.]{0,8}", fullmatch=True)
_target_names = st.builds(
    lambda y, m, dom, uniq: f"iqn.{y:04d}-{m:02d}.{dom}" + (f":{uniq}" if uniq else ""),
    st.integers(1990, 2099), st.integers(1, 12),
    st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z0-9.:-]{0,12}", fullmatch=True),
)
_portals = st.one_of(
    st.builds(lambda a, b, p: f"10.{a}.{b}.1:{p}", st.integers(0, 255), st.integers(0, 255),
              st.integers(1, 65535)),
    st.builds(lambda h, p: f"[fd00::{h:x}]:{p}", st.integers(1, 0xFFFF), st.integers(1, 65535)),
    st.just("localhost"),
)


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[str, Any]:
    devices: dict[str, Any] = {}
    for name in draw(st.lists(_device_names, min_size=1, max_size=4, unique=True)):
        block = draw(st.sampled_from([512, 4096]))
        blocks = draw(st.integers(1, 2**30))
        dev: dict[str, Any] = {
            "handler": draw(st.sampled_from(["vdisk_fileio", "vdisk_nullio"])),
            "block_size": block,
            "size": draw(st.sampled_from([block * blocks, format_size(block * blocks)])),
        }
        if dev["handler"] == "vdisk_fileio" and draw(st.booleans()):
            dev["path"] = draw(st.sampled_from(["a.img", "/dev/sdz", "sub/dir/x.raw"]))
        for key in ("read_only", "write_cache", "rotational"):
            if draw(st.booleans()):
                dev[key] = draw(st.booleans())
        if draw(st.booleans()):
            dev["serial"] = draw(st.from_regex(r"[!-~]{1,32}", fullmatch=True))
        devices[name] = dev
    names = sorted(devices)

    def lun_map() -> list[dict[str, Any]]:
        luns = draw(st.lists(st.integers(0, 16383), max_size=4, unique=True))
        return [{"lun": n, "device": draw(st.sampled_from(names)),
                 "read_only": draw(st.booleans())} for n in luns]

    targets: dict[str, Any] = {}
    for tname in draw(st.lists(_target_names, max_size=3, unique=True)):
        target: dict[str, Any] = {
            "portals": draw(st.lists(_portals, min_size=1, max_size=3, unique=True)),
            "luns": lun_map(),
        }
        if draw(st.booleans()):
            target["alias"] = draw(st.text(min_size=1, max_size=20))
        groups = {}
        for i, gname in enumerate(draw(st.lists(_group_names, max_size=3, unique=True))):
            groups[gname] = {
                "initiators": [f"iqn.2000-01.com.example:{gname.lower()}{i}", "iqn.1994-*"],
                "luns": lun_map(),
            }
        if groups:
            target["groups"] = groups
        targets[tname] = target
    doc: dict[str, Any] = {
        "state_dir": draw(st.sampled_from([".", "../var", "/var/lib/pyscst", "~/pyscst"])),
        # a block device under /dev must be allowed explicitly
        "allowed_dirs": ["/dev", *draw(st.lists(st.sampled_from(["imgs", "/srv/images"]),
                                                max_size=2, unique=True))],
        "log_level": draw(st.sampled_from([lvl.value for lvl in LogLevel])),
        "devices": devices,
        "targets": targets,
        "iscsi": {
            "queue_depth": draw(st.integers(1, 65536)),
            "header_digest": draw(st.sampled_from([["None"], ["CRC32C", "None"]])),
            "nop_interval": draw(st.sampled_from([0, 5, 2.5])),
            "poll_us": draw(st.integers(0, 1000)),
        },
    }
    if draw(st.booleans()):
        doc["control_group"] = "root"  # a group every system has
    return doc


@settings(max_examples=150, deadline=None)
@given(raw_configs())
def test_load_dump_load_is_identity(doc: dict[str, Any]) -> None:
    first = parse_config(tomli_w.dumps(doc), "/srv/etc")
    text = dump_config(first)
    second = parse_config(text, "/somewhere/else")
    assert second == first
    assert dump_config(second) == text
    assert isinstance(second, Config) and hash(second) == hash(first)


# --- config.save: load -> save -> load, and an edit keeps the rest of the file ----------

import attrs  # noqa: E402

from pyscst.admin.config import edit as config_edit  # noqa: E402
from pyscst.admin.control.ops import edit as ops_edit  # noqa: E402
from pyscst.admin.control.operations import config_document, validate_document  # noqa: E402
from pyscst.admin.control.ops.args import Args  # noqa: E402
from pyscst.admin.control.protocol import OpError  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(raw_configs())
def test_load_save_load_is_identity(doc: dict[str, Any]) -> None:
    first = parse_config(tomli_w.dumps(doc), "/srv/etc")
    text = config_edit.render(first)
    second = parse_config(text, "/somewhere/else")
    assert second == first
    # saving over itself changes nothing
    elsewhere = Path("/somewhere/else")
    assert config_edit.render(second, text, elsewhere, elsewhere) == text


def _annotated(doc: dict[str, Any]) -> str:
    """The file as a person keeps it: a header comment, a comment in every table."""
    lines = ["# operator header: keep me"]
    header = ""
    for line in tomli_w.dumps(doc).split("\n"):  # not splitlines: an alias may hold U+0085
        if line.startswith("    { lun = "):  # an entry of a multi-line LUN map
            lun = int(line.split()[3].rstrip(","))
            line += f"  # entry {lun} of {header}"
        lines.append(line)
        if line.startswith("[") and not line.startswith("[["):
            header = line.strip("[]")
            lines.append(f"# note for {header}")
    return "\n".join(lines) + "\n"


def _entry_notes(text: str) -> list[str]:
    return [line.split("  # ", 1)[1] for line in text.split("\n") if "  # entry " in line]


def _entry_still_there(note: str, model: Config) -> bool:
    lun_text, _, header = note.removeprefix("entry ").partition(" of ")
    name = header.split('"')[1]
    target = next((t for t in model.targets if t.name == name), None)
    if target is None:
        return False
    luns = target.luns
    if ".groups." in header:
        group = header.rsplit(".groups.", 1)[1].strip('"')
        found = next((g for g in target.groups if g.name == group), None)
        if found is None:
            return False
        luns = found.luns
    return any(m.lun == int(lun_text) for m in luns)


def _notes(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.startswith("# note for ")]


@st.composite
def edits(draw: st.DrawFn, model: Config) -> tuple[str, dict[str, Any]]:
    """One admin edit that makes sense for ``model`` (it may still be refused)."""
    devices = [d.name for d in model.devices]
    targets = [t.name for t in model.targets]
    choices = ["device.add", "device.resize", "device.set", "target.add"]
    if devices:
        choices += ["device.remove"]
    if targets and devices:
        choices += ["lun.add", "lun.remove", "lun.set", "group.add", "portal.add",
                    "target.remove"]
    op = draw(st.sampled_from(choices))
    device = draw(st.sampled_from(devices)) if devices else "x"
    target = draw(st.sampled_from(targets)) if targets else "x"
    lun = draw(st.integers(0, 40))
    args: dict[str, Any] = {
        "device.add": {"name": draw(_device_names), "handler": "vdisk_nullio",
                       "size": draw(st.sampled_from(["1M", "64M", 8192]))},
        "device.resize": {"name": device, "size": draw(st.sampled_from(["2M", "1G", "4T"]))},
        "device.set": {"name": device, "read_only": draw(st.booleans())},
        "device.remove": {"name": device, "force": True},
        "target.add": {"name": draw(_target_names), "portal": "127.0.0.1:3261",
                       "alias": draw(st.none() | st.just("added"))},
        "target.remove": {"name": target, "force": True},
        "lun.add": {"target": target, "lun": lun, "device": device,
                    "read_only": draw(st.booleans())},
        "lun.remove": {"target": target, "lun": lun},
        "lun.set": {"target": target, "lun": lun, "read_only": draw(st.booleans())},
        "group.add": {"target": target, "group": draw(_group_names),
                      "initiators": ["iqn.2026-01.com.example:new"]},
        "portal.add": {"target": target, "portal": draw(_portals)},
    }[op]
    return op, args


_EDITS = {
    "device.add": ops_edit.device_add, "device.resize": ops_edit.device_resize,
    "device.set": ops_edit.device_set, "device.remove": ops_edit.device_remove,
    "target.add": lambda doc, a: ops_edit.target_add(doc, a, default_portals=[]),
    "target.remove": ops_edit.target_remove, "lun.add": ops_edit.lun_add,
    "lun.remove": ops_edit.lun_remove, "lun.set": ops_edit.lun_set,
    "group.add": ops_edit.group_add,
    "portal.add": ops_edit.portal_add,
}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_saving_an_edit_keeps_comments_and_order_it_did_not_touch(data: st.DataObject) -> None:
    base = Path("/srv/etc")
    original = _annotated(data.draw(raw_configs()))
    before = parse_config(original, base)
    edited = before
    for _ in range(data.draw(st.integers(1, 3))):
        op, args = data.draw(edits(edited))
        doc = config_document(edited)
        try:
            _EDITS[op](doc, Args(op, args))
            edited = validate_document(doc, edited)
        except OpError:
            continue  # refused (exists, not found, invalid): the model is unchanged
    saved = config_edit.render(edited, original, base, base)
    assert parse_config(saved, base) == edited
    assert saved.startswith("# operator header: keep me\n")
    # every table still there keeps its comment, in the original order
    kept = [n for n in _notes(original) if _still_there(n, edited)]
    assert _notes(saved) == kept
    # and so does every LUN map entry still mapped (edits change entries in place)
    entries = [n for n in _entry_notes(original) if _entry_still_there(n, edited)]
    assert _entry_notes(saved) == entries


def _still_there(note: str, model: Config) -> bool:
    key = note.removeprefix("# note for ")
    if key in ("iscsi", "devices", "targets"):  # top-level tables stay, even empty
        return True
    kind, _, rest = key.partition(".")
    if kind == "devices":
        return any(d.name == rest for d in model.devices)
    name = rest.split('"')[1]
    target = next((t for t in model.targets if t.name == name), None)
    if target is None:
        return False
    if ".groups." in rest:
        group = rest.rsplit(".groups.", 1)[1].strip('"')
        return any(g.name == group for g in target.groups)
    return True


def test_save_keeps_fault_rules() -> None:
    text = minimal() + (
        '\n[[faults]]\nid = "flaky"\naction = "check_condition"\nop_class = "read"\n'
        "lba = [100, 199]\nprobability = 0.5\nseed = 42\n"
    )
    model = parse_config(text, "/srv/etc")
    assert [r.id for r in model.faults] == ["flaky"]
    fresh = config_edit.render(model)
    assert parse_config(fresh, "/srv/etc") == model
    # an edit elsewhere leaves the rule's text as it was
    edited = config_edit.render(attrs.evolve(model, log_level=LogLevel.DEBUG), text,
                                Path("/srv/etc"), Path("/srv/etc"))
    assert 'id = "flaky"\naction = "check_condition"\nop_class = "read"' in edited
    assert parse_config(edited, "/srv/etc") == attrs.evolve(model, log_level=LogLevel.DEBUG)
