"""Configuration edits behind the admin ops, done on a plain TOML-shaped document.

Each edit changes the ``dict`` form of the running configuration (what the
file would say) and returns a short description. The caller then validates
the whole edited document with the same code that checks config files, so a
live edit can never produce a model the daemon could not have loaded from
disk, and its errors carry the same key paths (``devices.disk1.size: ...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyscst.admin.config.values import parse_portal
from pyscst.admin.control.ops.args import Args
from pyscst.admin.control.protocol import ErrorCode, OpError
from pyscst.devices.registry import HANDLERS, PathRule

Doc = dict[str, Any]


def _not_found(what: str, path: str) -> OpError:
    return OpError(ErrorCode.NOT_FOUND, what, path)


def device_table(doc: Doc, name: str) -> dict[str, Any]:
    table = doc.setdefault("devices", {}).get(name)
    if table is None:
        known = ", ".join(sorted(doc.get("devices", {}))) or "none"
        raise _not_found(f'no device named "{name}" (devices: {known})', f"devices.{name}")
    return table


def target_table(doc: Doc, name: str) -> dict[str, Any]:
    targets = doc.setdefault("targets", {})
    for key, table in targets.items():
        if key.lower() == name.lower():
            return table
    known = ", ".join(sorted(targets)) or "none"
    raise _not_found(f'no target named "{name}" (targets: {known})', f'targets."{name}"')


def target_key(doc: Doc, name: str) -> str:
    for key in doc.get("targets", {}):
        if key.lower() == name.lower():
            return str(key)
    return name


def group_table(doc: Doc, target: str, group: str) -> dict[str, Any]:
    groups = target_table(doc, target).setdefault("groups", {})
    table = groups.get(group)
    if table is None:
        known = ", ".join(sorted(groups)) or "none"
        raise _not_found(
            f'target "{target}" has no group "{group}" (groups: {known})',
            f'targets."{target}".groups.{group}',
        )
    return table


def lun_list(doc: Doc, target: str, group: str | None) -> tuple[list[dict[str, Any]], str]:
    """The LUN map (default or a group's) and its key path."""
    if group is None:
        return target_table(doc, target).setdefault("luns", []), f'targets."{target}".luns'
    table = group_table(doc, target, group)
    return table.setdefault("luns", []), f'targets."{target}".groups.{group}.luns'


def mappings_of(doc: Doc, device: str) -> Iterator[tuple[str, str | None, int]]:
    """(target, group or None, lun) for every mapping of ``device``."""
    for tname, table in doc.get("targets", {}).items():
        for entry in table.get("luns", []):
            if entry.get("device") == device:
                yield tname, None, entry.get("lun")
        for gname, gtable in table.get("groups", {}).items():
            for entry in gtable.get("luns", []):
                if entry.get("device") == device:
                    yield tname, gname, entry.get("lun")


def describe_mapping(target: str, group: str | None, lun: int) -> str:
    where = f"group {group} of " if group else ""
    return f"LUN {lun} of {where}target {target}"


# -- devices ----------------------------------------------------------------------


def device_add(doc: Doc, a: Args) -> str:
    name = a.text("name")
    handler = a.text("handler")
    info = HANDLERS.get(handler)
    if info is not None and info.path is PathRule.DIRECTORY:
        # a library's layout, drives and cartridges are a table, not options
        raise OpError(
            ErrorCode.INVALID,
            f"device.add: a {handler} device needs its [devices.{name}.library] table "
            "(drives, slots, mail_slots, cartridges), which only the config file holds: "
            "write the device and its table there, then `pyscst admin reload`",
            "args.handler",
        )
    table: dict[str, Any] = {"handler": handler}
    for key, value in (
        ("size", a.opt_size("size")),  # (a CD-ROM's is its image's)
        ("path", a.opt_text("path")),
        ("block_size", a.opt_integer("block_size")),
        ("read_only", a.opt_flag("read_only")),
        ("write_cache", a.opt_flag("write_cache")),
        ("serial", a.opt_text("serial")),
        ("rotational", a.opt_flag("rotational")),
        ("removable", a.opt_flag("removable")),
        ("physical_block_size", a.opt_integer("physical_block_size")),
        ("backend", a.opt_text("backend")),
    ):
        if value is not None:
            table[key] = value
    a.done()
    devices = doc.setdefault("devices", {})
    if name in devices:
        raise OpError(ErrorCode.EXISTS, f'device "{name}" already exists', f"devices.{name}")
    devices[name] = table
    return f"added device {name}"


def device_remove(doc: Doc, a: Args) -> str:
    name = a.text("name")
    force = a.flag("force")
    a.done()
    device_table(doc, name)
    used = list(mappings_of(doc, name))
    if used and not force:
        where = ", ".join(describe_mapping(*m) for m in used)
        raise OpError(
            ErrorCode.IN_USE,
            f'device "{name}" is mapped as {where}; unmap it first or pass force',
            f"devices.{name}",
        )
    for table in doc.get("targets", {}).values():
        table["luns"] = [e for e in table.get("luns", []) if e.get("device") != name]
        for gtable in table.get("groups", {}).values():
            gtable["luns"] = [e for e in gtable.get("luns", []) if e.get("device") != name]
    del doc["devices"][name]
    return f"removed device {name}" + (f" and {len(used)} mapping(s)" if used else "")


def device_resize(doc: Doc, a: Args) -> str:
    name = a.text("name")
    size = a.size("size")
    a.done()
    device_table(doc, name)["size"] = size
    return f"resized device {name} to {size}"


def device_set(doc: Doc, a: Args) -> str:
    name = a.text("name")
    read_only = a.opt_flag("read_only")
    a.done()
    table = device_table(doc, name)
    if read_only is None:
        raise OpError(ErrorCode.INVALID, "device.set: nothing to set (read_only)", "args")
    table["read_only"] = read_only
    return f"device {name} is now {'read-only' if read_only else 'writable'}"


# -- targets and portals -----------------------------------------------------------


def _portal_text(a: Args, key: str) -> str:
    text = a.text(key)
    try:
        return str(parse_portal(text))
    except ValueError as exc:
        raise OpError(ErrorCode.INVALID, str(exc), f"args.{key}") from None


def target_add(doc: Doc, a: Args, default_portals: list[str]) -> str:
    name = a.text("name")
    alias = a.opt_text("alias")
    portal = a.opt_text("portal")
    a.done()
    targets = doc.setdefault("targets", {})
    if any(key.lower() == name.lower() for key in targets):
        raise OpError(ErrorCode.EXISTS, f'target "{name}" already exists', f'targets."{name}"')
    portals = [_portal_text(a, "portal")] if portal is not None else list(default_portals)
    if not portals:
        raise OpError(
            ErrorCode.INVALID,
            "target.add: the daemon listens nowhere yet; give a portal (host:port)",
            "args.portal",
        )
    table: dict[str, Any] = {"portals": portals, "luns": []}
    if alias is not None:
        table["alias"] = alias
    targets[name] = table
    return f"added target {name} on {', '.join(portals)}"


def target_remove(doc: Doc, a: Args) -> str:
    name = a.text("name")
    a.flag("force")  # sessions are checked against the live tree
    a.done()
    target_table(doc, name)
    del doc["targets"][target_key(doc, name)]
    return f"removed target {name}"


def portal_add(doc: Doc, a: Args) -> str:
    target = a.text("target")
    portal = _portal_text(a, "portal")
    a.done()
    portals = target_table(doc, target).setdefault("portals", [])
    if portal in portals:
        raise OpError(
            ErrorCode.EXISTS,
            f"target {target} already has portal {portal}",
            f'targets."{target}".portals',
        )
    portals.append(portal)
    return f"target {target} now also listens on {portal}"


def _remove_listed(items: list[Any], item: str, missing: str, path: str) -> None:
    """Take ``item`` out of a TOML array, or say it was not there (and where)."""
    if item not in items:
        raise _not_found(missing, path)
    items.remove(item)


def portal_remove(doc: Doc, a: Args) -> str:
    target = a.text("target")
    portal = _portal_text(a, "portal")
    a.done()
    portals = target_table(doc, target).setdefault("portals", [])
    _remove_listed(
        portals, portal,
        f"target {target} has no portal {portal} (portals: {', '.join(portals)})",
        f'targets."{target}".portals',
    )  # fmt: skip
    return f"target {target} no longer listens on {portal}"


# -- groups and initiators -----------------------------------------------------------


def group_add(doc: Doc, a: Args) -> str:
    target = a.text("target")
    group = a.text("group")
    initiators = a.opt_strings("initiators") or []
    a.done()
    if not initiators:
        raise OpError(
            ErrorCode.INVALID,
            f"group.add: give the group's first initiator pattern(s) in initiators "
            f"(an empty group {group} would match no initiator)",
            "args.initiators",
        )
    groups = target_table(doc, target).setdefault("groups", {})
    if group in groups:
        raise OpError(
            ErrorCode.EXISTS,
            f'target {target} already has group "{group}"',
            f'targets."{target}".groups.{group}',
        )
    groups[group] = {"initiators": list(initiators), "luns": []}
    return f"added group {group} to target {target}"


def group_remove(doc: Doc, a: Args) -> str:
    target = a.text("target")
    group = a.text("group")
    a.flag("force")
    a.done()
    group_table(doc, target, group)
    del target_table(doc, target)["groups"][group]
    return f"removed group {group} from target {target}"


def initiator_add(doc: Doc, a: Args) -> str:
    target, group, pattern = a.text("target"), a.text("group"), a.text("pattern")
    a.done()
    patterns = group_table(doc, target, group).setdefault("initiators", [])
    if pattern in patterns:
        raise OpError(
            ErrorCode.EXISTS,
            f'group {group} of target {target} already has "{pattern}"',
            f'targets."{target}".groups.{group}.initiators',
        )
    patterns.append(pattern)
    return f'added "{pattern}" to group {group} of target {target}'


def initiator_remove(doc: Doc, a: Args) -> str:
    target, group, pattern = a.text("target"), a.text("group"), a.text("pattern")
    a.flag("force")
    a.done()
    patterns = group_table(doc, target, group).setdefault("initiators", [])
    _remove_listed(
        patterns, pattern,
        f'group {group} of target {target} has no initiator "{pattern}"',
        f'targets."{target}".groups.{group}.initiators',
    )  # fmt: skip
    return f'removed "{pattern}" from group {group} of target {target}'


# -- LUN maps ----------------------------------------------------------------------


def lun_add(doc: Doc, a: Args) -> str:
    target, group = a.text("target"), a.opt_text("group")
    lun, device = a.integer("lun"), a.text("device")
    read_only = a.flag("read_only")
    a.done()
    entries, path = lun_list(doc, target, group)
    if any(e.get("lun") == lun for e in entries):
        raise OpError(ErrorCode.EXISTS, f"LUN {lun} is already mapped in {path}", path)
    device_table(doc, device)
    entries.append({"lun": lun, "device": device, "read_only": read_only})
    return f"mapped {device} as {describe_mapping(target, group, lun)}"


def _entry(doc: Doc, target: str, group: str | None, lun: int) -> dict[str, Any]:
    entries, path = lun_list(doc, target, group)
    for entry in entries:
        if entry.get("lun") == lun:
            return entry
    mapped = ", ".join(str(e.get("lun")) for e in entries) or "none"
    raise _not_found(f"LUN {lun} is not mapped in {path} (mapped: {mapped})", path)


def lun_remove(doc: Doc, a: Args) -> str:
    target, group, lun = a.text("target"), a.opt_text("group"), a.integer("lun")
    a.flag("force")
    a.done()
    entry = _entry(doc, target, group, lun)
    entries, _ = lun_list(doc, target, group)
    entries.remove(entry)
    return f"unmapped {describe_mapping(target, group, lun)}"


def lun_set(doc: Doc, a: Args) -> str:
    target, group, lun = a.text("target"), a.opt_text("group"), a.integer("lun")
    read_only = a.flag("read_only")
    a.done()
    _entry(doc, target, group, lun)["read_only"] = read_only
    mode = "read-only" if read_only else "read-write"
    return f"{describe_mapping(target, group, lun)} is now {mode}"
