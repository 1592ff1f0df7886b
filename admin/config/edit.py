"""Save the running configuration into TOML, keeping the original file's comments.

The TOML file is the saved truth operators also edit by hand, so ``config.save``
must not turn it into a machine dump. The original text is parsed with
tomlkit (a style-preserving TOML library) and compared with the running model
object by object: untouched devices, targets, groups and keys keep their
text, comments and order exactly; a changed key is rewritten in place; new
objects are appended at the end of their table; removed ones are deleted
(with the comments inside them). Values are written the way a person would:
sizes as ``"64M"``, paths relative to ``state_dir``, defaults left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import tomlkit
from tomlkit.items import Table

from pyscst.admin.config.auth import auth_to_dict
from pyscst.admin.config.faults import rule_to_dict
from pyscst.admin.config.files import alua_to_dict, default_serial, parse_config
from pyscst.admin.config.model import (
    AuthConfig,
    Config,
    DeviceConfig,
    InitiatorGroup,
    LunMapping,
    TargetConfig,
)
from pyscst.admin.config.values import format_size

_DEVICE_DEFAULTS = {
    "block_size": 512, "read_only": False, "write_cache": True, "rotational": False,
    "removable": False, "physical_block_size": 0,
    "max_restarts": 5, "restart_period": 60.0, "io_engine": "auto",
}


def render(
    model: Config,
    original: str | None = None,
    original_dir: Path | None = None,
    save_dir: Path | None = None,
) -> str:
    """TOML text for ``model``, as an edit of ``original`` when given.

    ``original_dir`` is where the original file lives (its relative paths
    resolve there); ``save_dir`` where the result goes: when they differ,
    ``state_dir`` is written absolute so it keeps its meaning.
    """
    if original is None:
        doc = tomlkit.document()
        before: Config | None = None
    else:
        doc = tomlkit.parse(original)
        before = parse_config(original, original_dir or Path.cwd())
    moved = before is None or (save_dir is not None and original_dir != save_dir)
    _top(doc, before, model, absolute_state_dir=moved)
    _iscsi(doc, before, model)
    _devices(doc, before, model)
    _targets(doc, before, model)
    _discovery_auth(doc, before, model)
    _faults(doc, before, model)
    _metrics(doc, before, model)
    return tomlkit.dumps(doc).rstrip() + "\n"


def _auth_table(auth: AuthConfig, discovery: bool = False) -> Table:
    """An auth table as a person writes it: secret files by the name the file
    gave them, inline secrets as written (never a secret read from a file)."""
    table = tomlkit.table()
    def inline(entry: Any) -> Any:
        item = tomlkit.inline_table()
        item.update(dict(entry))
        return item

    for key, value in auth_to_dict(auth, discovery).items():
        if key == "chap":
            array = tomlkit.array()
            for entry in value:  # type: ignore[attr-defined]
                array.append(inline(entry))
            table[key] = array
        elif key == "mutual":
            table[key] = inline(value)
        else:
            table[key] = value
    return table


def _discovery_auth(doc: Any, before: Config | None, model: Config) -> None:
    old = before.discovery_auth if before is not None else AuthConfig()
    if old == model.discovery_auth:
        return
    if model.discovery_auth == AuthConfig():
        doc.pop("discovery_auth", None)
        return
    doc["discovery_auth"] = _auth_table(model.discovery_auth, discovery=True)


def _faults(doc: Any, before: Config | None, model: Config) -> None:
    """``[[faults]]`` rules: left as written unless the model's differ."""
    if before is not None and before.faults == model.faults:
        return
    if not model.faults:
        if "faults" in doc:
            del doc["faults"]
        return
    rules = tomlkit.aot()
    for rule in model.faults:
        table = tomlkit.table()
        table.update(rule_to_dict(rule))
        rules.append(table)
    doc["faults"] = rules


def _metrics(doc: Any, before: Config | None, model: Config) -> None:
    """``[metrics]``: left as written unless the model's differs."""
    if before is not None and before.metrics == model.metrics:
        return
    if model.metrics.listen is None:
        if "metrics" in doc:
            del doc["metrics"]
        return
    doc["metrics"] = {"listen": str(model.metrics.listen)}


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _top(doc: Any, before: Config | None, model: Config, absolute_state_dir: bool) -> None:
    if before is None or before.state_dir != model.state_dir or absolute_state_dir:
        doc["state_dir"] = str(model.state_dir)
    default_socket = model.state_dir / "pyscst.sock"
    old_socket = before.control_socket if before is not None else default_socket
    if old_socket != model.control_socket or (
        "control_socket" in doc and before is not None and before.state_dir != model.state_dir
    ):
        doc["control_socket"] = _relative(model.control_socket, model.state_dir)
    old_level = before.log_level.value if before is not None else "info"
    if old_level != model.log_level.value:
        doc["log_level"] = model.log_level.value
    # confinement keys: written absolute when the file moves (they resolve against it)
    old_dirs = before.allowed_dirs if before is not None else ()
    if old_dirs != model.allowed_dirs or (absolute_state_dir and model.allowed_dirs):
        if model.allowed_dirs:
            doc["allowed_dirs"] = [str(p) for p in model.allowed_dirs]
        elif "allowed_dirs" in doc:
            del doc["allowed_dirs"]
    old_group = before.control_group if before is not None else None
    if old_group != model.control_group:
        if model.control_group is not None:
            doc["control_group"] = model.control_group
        elif "control_group" in doc:
            del doc["control_group"]


def _iscsi_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [v.value for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _iscsi(doc: Any, before: Config | None, model: Config) -> None:
    old = before.iscsi if before is not None else type(model.iscsi)()
    changed = {
        f.name: _iscsi_value(getattr(model.iscsi, f.name))
        for f in attrs.fields(type(model.iscsi))
        if getattr(model.iscsi, f.name) != getattr(old, f.name)
    }
    if not changed:
        return
    if "iscsi" not in doc:
        doc["iscsi"] = tomlkit.table()
    for key, value in changed.items():
        doc["iscsi"][key] = value


# -- devices --------------------------------------------------------------------


def _device_values(d: DeviceConfig, state_dir: Path) -> dict[str, Any]:
    """Every key of a device, as it would be written (defaults included)."""
    default_path = state_dir / f"{d.name}.img"
    return {
        "handler": d.handler,
        "size": format_size(d.size) if d.size else None,  # (a CD-ROM: its image's)
        "path": None if d.path is None or d.path == default_path else _relative(d.path, state_dir),
        "block_size": d.block_size,
        "read_only": d.read_only,
        "write_cache": d.write_cache,
        "serial": None if d.serial == default_serial(d.name) else d.serial,
        "rotational": d.rotational,
        "removable": d.removable,
        "physical_block_size": d.physical_block_size,
        "max_restarts": d.max_restarts,
        "restart_period": d.restart_period,
        "io_engine": d.io_engine,
    }


def _spaced(table: Table) -> Table:
    """End a new table with a blank line, as a person separates tables."""
    table.add(tomlkit.nl())
    return table


def _new_device_table(d: DeviceConfig, state_dir: Path) -> Table:
    table = tomlkit.table()
    for key, value in _device_values(d, state_dir).items():
        if value is not None and _DEVICE_DEFAULTS.get(key, object()) != value:
            table[key] = value
    return _spaced(table)


def _devices(doc: Any, before: Config | None, model: Config) -> None:
    old = {d.name: d for d in before.devices} if before is not None else {}
    new = {d.name: d for d in model.devices}
    if not new and "devices" not in doc:
        return
    if "devices" not in doc:
        doc["devices"] = tomlkit.table(is_super_table=True)
    tables = doc["devices"]
    for name in list(tables):
        if name not in new:
            del tables[name]
    for name, d in new.items():
        if name not in tables or name not in old:
            tables[name] = _new_device_table(d, model.state_dir)
            continue
        if old[name] == d and (before is None or before.state_dir == model.state_dir):
            continue
        was = _device_values(old[name], before.state_dir if before else model.state_dir)
        now = _device_values(d, model.state_dir)
        table = tables[name]
        for key, value in now.items():
            if value == was[key]:
                continue  # the file already says it (explicitly or by default)
            if value is None or (key not in table and _DEVICE_DEFAULTS.get(key) == value):
                if key in table:
                    del table[key]
                continue
            table[key] = value


# -- targets --------------------------------------------------------------------


def _luns_array(luns: tuple[LunMapping, ...]) -> Any:
    array = tomlkit.array()
    for m in luns:
        array.append(_luns_entry(m))
    if len(luns) > 1:
        array.multiline(True)
    return array


def _luns_entry(m: LunMapping) -> Any:
    entry = tomlkit.inline_table()
    entry["lun"] = m.lun
    entry["device"] = m.device
    if m.read_only:
        entry["read_only"] = True
    return entry


def _edit_luns(table: Any, was: tuple[LunMapping, ...], now: tuple[LunMapping, ...]) -> None:
    """Change the ``luns`` array of ``table`` in place, so the entries an edit
    did not touch keep their text and comments; rewrite it if the order changed."""
    array = table.get("luns")
    if array is None or len(array) != len(was):
        table["luns"] = _luns_array(now)
        return
    wanted = {m.lun: m for m in now}
    for index in reversed(range(len(was))):
        if was[index].lun not in wanted:
            del array[index]
    kept = [m for m in was if m.lun in wanted]
    if [m.lun for m in kept] != [m.lun for m in now[: len(kept)]]:
        table["luns"] = _luns_array(now)
        return
    for index, old in enumerate(kept):
        new = wanted[old.lun]
        if new == old:
            continue
        entry = array[index]
        entry["device"] = new.device
        if new.read_only:
            entry["read_only"] = True
        elif "read_only" in entry:
            del entry["read_only"]
    for m in now[len(kept) :]:
        array.append(_luns_entry(m))


def _new_group_table(g: InitiatorGroup) -> Table:
    table = tomlkit.table()
    table["initiators"] = list(g.initiators)
    table["luns"] = _luns_array(g.luns)
    return _spaced(table)


def _new_target_table(t: TargetConfig) -> Table:
    table = tomlkit.table()
    table["portals"] = [str(p) for p in t.portals]
    if t.alias is not None:
        table["alias"] = t.alias
    table["luns"] = _luns_array(t.luns)
    if t.auth != AuthConfig():
        table["auth"] = _auth_table(t.auth)
    _alua_tables(table, t)
    if not t.groups:
        return _spaced(table)
    table.add(tomlkit.nl())
    groups = tomlkit.table(is_super_table=True)
    for g in t.groups:
        groups[g.name] = _new_group_table(g)
    table["groups"] = groups
    return table


def _alua_tables(table: Any, t: TargetConfig) -> None:
    """The target's ALUA keys and [port_groups.NAME] tables, as the model has them."""
    for key in ("alua_explicit", "alua_transition_time", "port_groups"):
        table.pop(key, None)
    alua = alua_to_dict(t)
    for key in ("alua_explicit", "alua_transition_time"):
        if key in alua:
            table[key] = alua[key]
    if "port_groups" not in alua:
        return
    groups = tomlkit.table(is_super_table=True)
    for name, body in alua["port_groups"].items():
        group = tomlkit.table()
        group.update(body)
        groups[name] = group
    table["port_groups"] = groups


def _find_key(table: Any, name: str) -> str | None:
    for key in table:
        if str(key).lower() == name.lower():
            return str(key)
    return None


def _targets(doc: Any, before: Config | None, model: Config) -> None:
    old = {t.name.lower(): t for t in before.targets} if before is not None else {}
    new = {t.name.lower(): t for t in model.targets}
    if not new and "targets" not in doc:
        return
    if "targets" not in doc:
        doc["targets"] = tomlkit.table(is_super_table=True)
    tables = doc["targets"]
    for key in list(tables):
        if str(key).lower() not in new:
            del tables[key]
    for lowered, t in new.items():
        key = _find_key(tables, t.name)
        if key is None or lowered not in old:
            if key is not None:
                del tables[key]
            tables[t.name] = _new_target_table(t)
            continue
        was = old[lowered]
        if was == t:
            continue
        _edit_target(tables[key], was, t)


def _edit_target(table: Any, was: TargetConfig, t: TargetConfig) -> None:
    if was.portals != t.portals:
        table["portals"] = [str(p) for p in t.portals]
    if was.alias != t.alias:
        if t.alias is None:
            del table["alias"]
        else:
            table["alias"] = t.alias
    if was.luns != t.luns:
        _edit_luns(table, was.luns, t.luns)
    if was.auth != t.auth:
        if t.auth == AuthConfig():
            table.pop("auth", None)
        else:
            table["auth"] = _auth_table(t.auth)
    if (was.port_groups, was.alua_explicit, was.alua_transition_time) != (
        t.port_groups, t.alua_explicit, t.alua_transition_time
    ):
        _alua_tables(table, t)
    if was.groups == t.groups:
        return
    old_groups = {g.name: g for g in was.groups}
    new_groups = {g.name: g for g in t.groups}
    if "groups" not in table:
        table["groups"] = tomlkit.table(is_super_table=True)
    groups = table["groups"]
    for name in list(groups):
        if name not in new_groups:
            del groups[name]
    if [g.name for g in was.groups if g.name in new_groups] != [
        n for n in new_groups if n in old_groups
    ]:  # reordered: order decides which glob wins, so rewrite them all in order
        for name in list(groups):
            del groups[name]
        old_groups = {}
    for name, g in new_groups.items():
        if name not in old_groups or name not in groups:
            groups[name] = _new_group_table(g)
            continue
        gtable = groups[name]
        if old_groups[name].initiators != g.initiators:
            gtable["initiators"] = list(g.initiators)
        if old_groups[name].luns != g.luns:
            _edit_luns(gtable, old_groups[name].luns, g.luns)
    if not new_groups and not len(groups):
        del table["groups"]
