"""The console's commands: each one a line of help, a parser and a handful of ops.

A command reads the tree through a :class:`ShellContext` (the shell's current
directory and its cached ``tree`` reply), turns its arguments into one control
op (``create`` in ``/devices`` is ``device.add``, ``delete`` on a LUN is
``lun.remove``...) and returns formatted text. It never prints and never
catches the daemon's errors: the shell shows every failure the same way.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from pyscst.admin.client.console.attrs import (
    CREATE_ATTRS,
    FORCE,
    FORCEABLE,
    SET_ATTRS,
    UsageError,
    parse_int,
    parse_options,
)
from pyscst.admin.client.console.model import CHILD_KIND, Kind, Node, Path, format_path
from pyscst.admin.client.console.render import (
    Cell,
    Fragments,
    key_values,
    line,
    render_value,
    show,
    table,
    value_cell,
)
from pyscst.admin.config.values import parse_size

MAX_LUN = 0x3FFF


class ShellContext(Protocol):
    """What commands may use of the shell."""

    @property
    def cwd(self) -> Path: ...

    def tree(self) -> Node: ...

    def raw_tree(self) -> Any: ...

    def resolve(self, text: str | None) -> Node: ...

    def call(self, op: str, **args: Any) -> Any: ...

    def change_dir(self, path: Path) -> None: ...


@attrs.frozen
class Invocation:
    """A parsed command line: positionals and ``key=value`` options, in order."""

    name: str
    positionals: tuple[str, ...] = ()
    options: Mapping[str, str] = attrs.field(factory=dict)


class ExitRequest(Exception):
    """``exit``/``quit``: the shell stops reading lines."""


Runner = Callable[[ShellContext, Invocation], Fragments]


@attrs.frozen
class Command:
    """One console command and how its arguments complete."""

    name: str
    usage: str
    summary: str
    details: str
    run: Runner
    #: what positional arguments are: path, container, command, file, op or none
    args: str = "path"
    max_positionals: int = 1
    takes_options: bool = False
    aliases: tuple[str, ...] = ()


# -- helpers -------------------------------------------------------------------------


def _ok(text: str) -> Fragments:
    return line(text, "class:ok")


def _one_path(inv: Invocation) -> str | None:
    return inv.positionals[0] if inv.positionals else None


def _no_options(inv: Invocation) -> None:
    if inv.options:
        keys = ", ".join(inv.options)
        raise UsageError(f"{inv.name}: takes no key=value attributes (got {keys})")


def target_and_group(node: Node) -> tuple[str, str | None]:
    """(target, group or None) of a node under /targets/<t>[/groups/<g>]."""
    path = node.path
    if len(path) < 2 or path[0] != "targets":
        raise UsageError(f"{node.text_path} is not inside a target")
    group = path[3] if len(path) >= 4 and path[2] == "groups" else None
    return path[1], group


def _lun_args(node: Node) -> dict[str, Any]:
    target, group = target_and_group(node)
    args: dict[str, Any] = {"target": target, "lun": int(node.name)}
    if group is not None:
        args["group"] = group
    return args


def _describe(node: Node) -> str:
    names = {
        Kind.DEVICE: "device",
        Kind.TARGET: "target",
        Kind.PORTAL: "portal",
        Kind.GROUP: "group",
        Kind.INITIATOR: "initiator pattern",
        Kind.LUN: "LUN",
        Kind.SESSION: "session",
        Kind.CHAP_USER: "CHAP user",
        Kind.FAULT: "fault rule",
        Kind.PORT_GROUP: "port group",
    }
    return f"{names.get(node.kind, node.kind.value)} {node.name} ({node.text_path})"


# -- navigation ----------------------------------------------------------------------


def run_cd(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    node = shell.resolve(_one_path(inv) or "/")
    shell.change_dir(node.path)
    return []


def run_pwd(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    return line(format_path(shell.cwd))


def run_ls(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    node = shell.resolve(_one_path(inv))
    return listing(node, shell.tree())


PREFERRED_COLUMNS: Mapping[Kind, tuple[str, ...]] = {
    Kind.DEVICE: ("handler", "size", "block_size", "read_only", "write_cache", "path", "state"),
    Kind.LUN: ("device", "read_only"),
    Kind.SESSION: ("initiator", "isid", "address"),
    Kind.FAULT: ("enabled", "action", "matches", "injections", "seed"),
    Kind.PORT_GROUP: ("id", "relative_port", "state", "preferred", "portals"),
}


#: kinds whose tables show only the preferred columns (they carry many attributes)
WIDE_KINDS = frozenset({Kind.DEVICE, Kind.SESSION, Kind.FAULT})


def listing(node: Node, root: Node) -> Fragments:
    """``ls``: a container's objects as a table, a directory's entries, or attributes."""
    if node.kind in CHILD_KIND:
        if not node.children:
            hint = " (add one with create)" if node.kind in CREATE_ATTRS else ""
            return line(f"{node.text_path} is empty{hint}", "class:dim")
        return _object_table(node, root)
    if node.children:
        rows: list[list[Cell]] = [
            [("class:dir", child.name + "/"), _count(child, root)] for child in node.children
        ]
        out: Fragments = []
        if node.attributes:
            out += key_values(node.attributes)
        return out + table(["entry", "contents"], rows)
    return key_values(node.attributes)


def _count(node: Node, root: Node) -> str:
    kind = CHILD_KIND.get(node.kind)
    if kind is None:
        return str(len(node.children))
    noun = {Kind.SESSION_TARGET: "target", Kind.LUN: "LUN"}.get(kind, kind.value)
    n = len(node.children)
    if node.kind is Kind.SESSIONS:
        total = sum(len(c.children) for c in node.children)
        return f"{total} session{'s' if total != 1 else ''}"
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _object_table(node: Node, root: Node) -> Fragments:
    kind = CHILD_KIND[node.kind]
    columns = list(PREFERRED_COLUMNS.get(kind, ()))
    if kind not in WIDE_KINDS:  # the rest is in ``info``
        for child in node.children:
            for key in child.attributes:
                if key not in columns:
                    columns.append(key)
    columns = [c for c in columns if any(c in ch.attributes for ch in node.children)]
    sub_dirs = [c.name for c in node.children[0].children] if kind is Kind.TARGET else []
    if kind is Kind.GROUP:
        sub_dirs = ["initiators", "luns"]
    sessions = root.child("sessions")
    headers = [kind.value if kind is not Kind.SESSION else "tsih", *columns, *sub_dirs]
    if kind is Kind.TARGET:
        headers.append("sessions")
    rows: list[list[Cell]] = []
    for child in node.children:
        row: list[Cell] = [("class:name", child.name)]
        row += [value_cell(c, child.attributes.get(c)) for c in columns]
        for sub in sub_dirs:
            entry = child.child(sub)
            if entry is not None and entry.kind is Kind.AUTH:
                row.append(_auth_cell(entry))
                continue
            row.append(str(len(entry.children)) if entry else "0")
        if kind is Kind.TARGET:
            per_target = sessions.child(child.name) if sessions else None
            row.append(str(len(per_target.children)) if per_target else "0")
        if kind is Kind.SESSION_TARGET:
            row.append(f"{len(child.children)}")
        rows.append(row)
    if kind is Kind.SESSION_TARGET:
        headers.append("sessions")
    return table(headers, rows)


def _auth_cell(auth: Node) -> str:
    """A target's auth in one word or two: CHAP users, an access list, or open."""
    chap = auth.child("chap")
    users = len(chap.children) if chap else 0
    listed = auth.attributes.get("initiators") not in (None, "any")
    parts = ([f"chap:{users}"] if users else []) + (["list"] if listed else [])
    return ",".join(parts) or "open"


def run_tree(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    node = shell.resolve(_one_path(inv))
    out: Fragments = [("class:dir", (node.text_path if node.path else "/") + "\n")]
    _tree_lines(node, "", out)
    return out


def _tree_lines(node: Node, prefix: str, out: Fragments) -> None:
    for i, child in enumerate(node.children):
        last = i == len(node.children) - 1
        out.append(("class:dim", prefix + ("└── " if last else "├── ")))
        if child.kind in CHILD_KIND or (child.children and child.kind is not Kind.TARGET):
            out.append(("class:dir", child.name + "/"))
        else:
            out.append(("class:name", child.name))
        summary = _summary(child)
        if summary:
            out.append(("class:dim", "  " + summary))
        out.append(("", "\n"))
        _tree_lines(child, prefix + ("    " if last else "│   "), out)


def _summary(node: Node) -> str:
    a = node.attributes
    ro = " read-only" if a.get("read_only") else ""
    if node.kind is Kind.DEVICE:
        state = a.get("state")
        down = f" {state}" if state not in (None, "online") else ""
        return f"{a.get('handler', '?')} {show('size', a.get('size'))}{ro}{down}"
    if node.kind is Kind.LUN:
        return f"-> {a.get('device', '?')}{ro}"
    if node.kind is Kind.SESSION:
        return " ".join(str(a[k]) for k in ("initiator", "address") if k in a)
    if node.kind is Kind.TARGET and a.get("alias"):
        return f"alias {a['alias']}"
    if node.kind is Kind.FAULT:
        state = "on" if a.get("enabled") else "off"
        return f"{a.get('action', '?')} {state}, {a.get('injections', 0)} injections"
    return ""


def run_info(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    node = shell.resolve(_one_path(inv))
    out: Fragments = [("class:dir", node.text_path), ("class:dim", f"  ({node.kind.value})\n")]
    if node.kind is Kind.SESSION:
        from pyscst.admin.client.console.model import raw_session

        record = raw_session(shell.raw_tree(), node.path[1], node.name)
        return out + render_value(dict(record) or dict(node.attributes))
    if node.kind in CHILD_KIND or node.children:
        return out + listing(node, shell.tree())
    return out + key_values(node.attributes)


# -- changes -------------------------------------------------------------------------


def run_create(shell: ShellContext, inv: Invocation) -> Fragments:
    arg = _one_path(inv)
    container, name = _creation_place(shell, arg)
    attrs_allowed = CREATE_ATTRS.get(container.kind)
    if attrs_allowed is None:
        raise UsageError(_cannot_create_here(container))
    values = parse_options("create", f"a new {CHILD_KIND[container.kind].value}",
                           inv.options, attrs_allowed)
    op, args = _create_op(container, name, values)
    result = shell.call(op, **args)
    if container.kind is Kind.FAULTS and isinstance(result, Mapping):
        name = str(result.get("id", name))  # the daemon names an unnamed rule
    created = (*container.path, str(args.get("lun", name)))
    return _ok(f"created {CHILD_KIND[container.kind].value} {format_path(created)}")


def _creation_place(shell: ShellContext, arg: str | None) -> tuple[Node, str | None]:
    """The container and the new object's name (``[PATH/]NAME``)."""
    if arg is None:
        return shell.resolve(None), None
    parent_text, slash, name = arg.rpartition("/")
    if name in ("", ".", ".."):
        raise UsageError(f'create: "{arg}" does not end with the name of the new object')
    parent = shell.resolve(parent_text or "/") if slash else shell.resolve(None)
    return parent, name


def _cannot_create_here(node: Node) -> str:
    dirs = [c.name for c in node.children if c.kind in CREATE_ATTRS]
    if dirs:
        hint = ", ".join(f"{d}/NAME" for d in dirs)
        return f"create: cannot create inside {_describe(node)}; name a directory: {hint}"
    return (
        f"create: nothing can be created in {node.text_path} ({node.kind.value}); "
        "cd to /devices, /targets, /faults or a target's portals, luns, groups or initiators"
    )


def _create_op(
    container: Node, name: str | None, values: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    kind = container.kind
    if kind is Kind.LUNS:
        return "lun.add", _lun_create_args(container, name, values)
    if kind is Kind.FAULTS:  # without a name the daemon picks one
        return "fault.add", {**values, **({"id": name} if name is not None else {})}
    if name is None:
        noun = CHILD_KIND[kind].value
        raise UsageError(f"create: name the new {noun} (create NAME ...) in {container.text_path}")
    if kind is Kind.DEVICES:
        return "device.add", {"name": name, **values}
    if kind is Kind.TARGETS:
        return "target.add", {"name": name, **values}
    target, group = target_and_group(container)
    if kind is Kind.CHAP_USERS:
        return "auth.chap_add", {"target": target, "user": name, **values}
    if kind is Kind.PORTALS:
        return "portal.add", {"target": target, "portal": name}
    if kind is Kind.GROUPS:
        return "group.add", {"target": target, "group": name, **values}
    return "initiator.add", {"target": target, "group": group, "pattern": name, **values}


def _lun_create_args(container: Node, name: str | None, values: dict[str, Any]) -> dict[str, Any]:
    target, group = target_and_group(container)
    if name is not None and "lun" in values:
        raise UsageError(f'create: LUN given twice ("{name}" and lun={values["lun"]})')
    if name is not None:
        try:
            values["lun"] = parse_int(name)
        except ValueError:
            raise UsageError(f'create: "{name}" is not a LUN number (0..{MAX_LUN})') from None
    if "lun" not in values:
        values["lun"] = next_free_lun(container)
    if not 0 <= values["lun"] <= MAX_LUN:
        raise UsageError(f"create: LUN {values['lun']} outside 0..{MAX_LUN}")
    args: dict[str, Any] = {"target": target, **values}
    if group is not None:
        args["group"] = group
    return args


def next_free_lun(container: Node) -> int:
    used = {int(c.name) for c in container.children if c.name.isdigit()}
    return next(n for n in range(MAX_LUN + 1) if n not in used)


def run_delete(shell: ShellContext, inv: Invocation) -> Fragments:
    if not inv.positionals:
        raise UsageError("delete: name what to delete (delete PATH [force=true])")
    node = shell.resolve(inv.positionals[0])
    allowed = (FORCE,) if node.kind in FORCEABLE else ()
    values = parse_options("delete", _describe(node), inv.options, allowed)
    op, args = _delete_op(node)
    shell.call(op, **args, **values)
    if node.kind is Kind.SESSION:
        return _ok(f"closed {_describe(node)}")
    return _ok(f"deleted {_describe(node)}")


def _delete_op(node: Node) -> tuple[str, dict[str, Any]]:
    kind = node.kind
    if kind is Kind.DEVICE:
        return "device.remove", {"name": node.name}
    if kind is Kind.TARGET:
        return "target.remove", {"name": node.name}
    if kind is Kind.SESSION:
        return "session.close", _session_args(node)
    if kind is Kind.LUN:
        return "lun.remove", _lun_args(node)
    if kind is Kind.CHAP_USER:
        return "auth.chap_remove", {"target": target_and_group(node)[0], "user": node.name}
    if kind is Kind.FAULT:
        return "fault.remove", {"id": node.name}
    if kind not in (Kind.PORTAL, Kind.GROUP, Kind.INITIATOR):
        raise UsageError(
            f"delete: {node.text_path} is a {kind.value}, not something that can be deleted"
        )
    target, group = target_and_group(node)
    if kind is Kind.PORTAL:
        return "portal.remove", {"target": target, "portal": node.name}
    if kind is Kind.GROUP:
        return "group.remove", {"target": target, "group": node.name}
    return "initiator.remove", {"target": target, "group": group, "pattern": node.name}


def _session_args(node: Node) -> dict[str, Any]:
    try:
        tsih = int(node.name)
    except ValueError:
        raise UsageError(f"{node.text_path}: the session has no numeric TSIH") from None
    return {"target": node.path[1], "tsih": tsih}


def run_set(shell: ShellContext, inv: Invocation) -> Fragments:
    node = shell.resolve(_one_path(inv))
    allowed = SET_ATTRS.get(node.kind)
    if allowed is None:
        raise UsageError(
            f"set: nothing can be changed on {node.text_path} ({node.kind.value}); "
            "settable: read_only and size of a device, read_only of a LUN, "
            "enabled of a fault rule, state of a port group"
        )
    if not inv.options:
        names = ", ".join(f"{a.name}=..." for a in allowed)
        raise UsageError(f"set: give attribute=value for {_describe(node)} ({names})")
    values = parse_options("set", _describe(node), inv.options, allowed)
    if node.kind is Kind.AUTH:
        return _set_auth(shell, node, values)
    if node.kind is Kind.PORT_GROUP:
        if "state" not in values:
            raise UsageError("set: a port group takes state=... (and transition=SECONDS)")
        reply = shell.call(
            "alua.set", target=node.path[1], group=node.name, state=values["state"],
            transition=values.get("transition"),
        )  # fmt: skip
        return _ok(str(reply.get("message", f"{node.text_path}: state = {values['state']}")))
    out: Fragments = []
    for key, value in values.items():
        if node.kind is Kind.FAULT:
            shell.call("fault.enable" if value else "fault.disable", id=node.name)
        elif node.kind is Kind.DEVICE and key == "size":
            shell.call("device.resize", name=node.name, size=value)
        elif node.kind is Kind.DEVICE:
            shell.call("device.set", name=node.name, **{key: value})
        else:
            shell.call("lun.set", **_lun_args(node), **{key: value})
        out += _ok(f"{node.text_path}: {key} = {show(key, value)}")
    return out


def _set_auth(shell: ShellContext, node: Node, values: dict[str, Any]) -> Fragments:
    """``set auth initiators=...`` and ``set auth mutual=USER secret_file=F``."""
    target = target_and_group(node)[0]
    out: Fragments = []
    secrets = {k: values.pop(k) for k in ("secret", "secret_file") if k in values}
    if secrets and "mutual" not in values:
        raise UsageError("set: secret and secret_file go with mutual=USER")
    if "initiators" in values:
        patterns = values.pop("initiators")
        if patterns is None:
            shell.call("auth.initiators_set", target=target, anyone=True)
        else:
            shell.call("auth.initiators_set", target=target, initiators=patterns)
        out += _ok(f"{node.text_path}: initiators = {', '.join(patterns or ['any'])}")
    if "mutual" in values:
        user = values.pop("mutual")
        if user.lower() == "none":
            shell.call("auth.mutual_clear", target=target)
        else:
            shell.call("auth.mutual_set", target=target, user=user, **secrets)
        out += _ok(f"{node.text_path}: mutual = {user}")
    return out


def run_resize(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    if not inv.positionals:
        raise UsageError("resize: give the new size (resize [PATH] SIZE, e.g. resize 2G)")
    path = inv.positionals[0] if len(inv.positionals) == 2 else None
    size_text = inv.positionals[-1]
    node = shell.resolve(path)
    if node.kind is not Kind.DEVICE:
        raise UsageError(f"resize: {node.text_path} is a {node.kind.value}, not a device")
    try:
        size = parse_size(size_text)
    except ValueError as exc:
        raise UsageError(f"resize: size: {exc}") from None
    shell.call("device.resize", name=node.name, size=size)
    return _ok(f"{node.text_path}: size = {show('size', size)}")


def run_reset(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    node = shell.resolve(_one_path(inv))
    if node.kind is Kind.DEVICE:
        shell.call("reset.lun", device=node.name)
        return _ok(f"reset the logical unit of device {node.name}")
    if node.kind is Kind.LUN:
        device = str(node.attributes.get("device", ""))
        shell.call("reset.lun", device=device)
        return _ok(f"reset the logical unit of device {device} ({node.text_path})")
    if node.kind is Kind.TARGET:
        shell.call("reset.target", target=node.name)
        return _ok(f"reset every logical unit of target {node.name}")
    raise UsageError(
        f"reset: {node.text_path} is a {node.kind.value}; reset a device, a LUN or a target"
    )


def _device_named(shell: ShellContext, inv: Invocation, verb: str) -> str:
    """The device a device-only command names: a device, or the device of a LUN."""
    node = shell.resolve(_one_path(inv))
    if node.kind is Kind.LUN:
        return str(node.attributes.get("device", ""))
    if node.kind is Kind.DEVICE:
        return node.name
    raise UsageError(f"{verb}: {node.text_path} is a {node.kind.value}; {verb} a device")


def run_restart(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    name = _device_named(shell, inv, "restart")
    reply = shell.call("device.restart", name=name)
    return _ok(str(reply.get("message", f"restarted {name}")))


def _run_medium(shell: ShellContext, inv: Invocation, verb: str) -> Fragments:
    extra: dict[str, str] = {}
    if verb == "load" and set(inv.options) <= {"image"}:
        if "image" in inv.options:
            extra = {"path": str(inv.options["image"])}
    else:
        _no_options(inv)
    name = _device_named(shell, inv, verb)
    reply = shell.call(f"device.{verb}", name=name, **extra)
    return _ok(str(reply.get("message", f"{verb} {name}")))


def run_eject(shell: ShellContext, inv: Invocation) -> Fragments:
    return _run_medium(shell, inv, "eject")


def run_load(shell: ShellContext, inv: Invocation) -> Fragments:
    return _run_medium(shell, inv, "load")


LIBRARY_ACTIONS = ("list", "create", "import", "export", "delete")


def run_library(shell: ShellContext, inv: Invocation) -> Fragments:
    """``library [PATH] [ACTION BARCODE] [capacity=SIZE] [worm=true]`` on a vchanger."""
    words = list(inv.positionals)
    path = words.pop(0) if words and words[0] not in LIBRARY_ACTIONS else None
    action = words.pop(0) if words else "list"
    node = shell.resolve(path)
    if node.kind is not Kind.DEVICE:
        raise UsageError(f"library: {node.text_path} is a {node.kind.value}; "
                         "give a vchanger device")  # fmt: skip
    if action not in LIBRARY_ACTIONS:
        raise UsageError(f"library: unknown action {action!r} ({', '.join(LIBRARY_ACTIONS)})")
    if action == "list":
        _no_options(inv)
        reply = shell.call("library.list", name=node.name)
        return line(_render_inventory(reply))
    if not words:
        raise UsageError(f"library: {action} needs a barcode (library PATH {action} BARCODE)")
    options = dict(inv.options)
    extra: dict[str, Any] = {}
    if action == "create":
        unknown = set(options) - {"capacity", "worm"}
        if unknown:
            raise UsageError(f"library create: unknown attributes {', '.join(sorted(unknown))}")
        if "capacity" in options:
            extra["capacity"] = options["capacity"]
        if "worm" in options:
            extra["worm"] = options["worm"].lower() in ("true", "yes", "1", "on")
    else:
        _no_options(inv)
    reply = shell.call(f"library.{action}", name=node.name, barcode=words[0], **extra)
    return _ok(str(reply.get("message", f"library {action} {words[0]}")))


def _render_inventory(reply: Mapping[str, Any]) -> str:
    rows = []
    for e in reply.get("elements", []):
        kind = {"transport": "picker", "storage": "slot", "import_export": "mail slot",
                "data_transfer": "drive"}.get(str(e.get("type")), str(e.get("type")))  # fmt: skip
        what = f"{kind} {e.get('drive')}" if e.get("drive") else kind
        state = " (open)" if e.get("open") else ""
        rows.append(f"  {int(e['address']):#06x}  {what:<16} {e.get('barcode') or '-'}{state}")
    shelf = ", ".join(reply.get("shelf", [])) or "-"
    lock = "  (mail slots locked: an initiator prevents removal)" if reply.get("locked") else ""
    return "\n".join([f"library {reply.get('name')}{lock}", *rows, f"  shelf: {shelf}"])


def run_close(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    node = shell.resolve(_one_path(inv))
    if node.kind is not Kind.SESSION:
        raise UsageError(
            f"close: {node.text_path} is a {node.kind.value}; close a session "
            "(/sessions/TARGET/TSIH)"
        )
    shell.call("session.close", **_session_args(node))
    return _ok(f"closed {_describe(node)}")


def run_stats(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    node = shell.resolve(_one_path(inv))
    if node.kind in (Kind.FAULT, Kind.FAULTS):
        from pyscst.admin.client.faults import render_faults

        which = {"id": node.name} if node.kind is Kind.FAULT else {}
        return line(render_faults("fault.stats", shell.call("fault.stats", **which)))
    args: dict[str, Any]
    if node.kind is Kind.DEVICE:
        args = {"device": node.name}
    elif node.kind is Kind.LUN:
        args = {"device": str(node.attributes.get("device", ""))}
    elif node.kind is Kind.TARGET or node.kind is Kind.SESSION_TARGET:
        args = {"target": node.name}
    elif node.kind is Kind.SESSION:
        args = _session_args(node)
    elif node.path and node.path[0] == "targets" and len(node.path) > 1:
        args = {"target": node.path[1]}
    else:
        args = {}
    return render_value(shell.call("stats", **args))


def run_save(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    args: dict[str, Any] = {}
    if inv.positionals:
        # the daemon has its own working directory: send what the user means
        args["path"] = os.path.abspath(os.path.expanduser(inv.positionals[0]))
    written = shell.call("config.save", **args)
    where = written.get("path") if isinstance(written, Mapping) else written
    return _ok(f"saved the running configuration to {where or args.get('path', 'its file')}")


def run_reload(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    summary = shell.call("config.reload")
    changes = summary.get("changes") if isinstance(summary, Mapping) else None
    if isinstance(changes, Mapping):  # only what differed, not a list of empty kinds
        differed = {k: v for k, v in changes.items() if v}
        if not differed:
            return _ok("reloaded the configuration file") + line("no differences", "class:dim")
        return _ok("reloaded the configuration file") + render_value(differed)
    return _ok("reloaded the configuration file") + (
        render_value(summary) if summary else line("no differences", "class:dim")
    )


def run_call(shell: ShellContext, inv: Invocation) -> Fragments:
    if not inv.positionals:
        raise UsageError("call: name the op (call OP [key=value ...]; see help call)")
    import json

    args: dict[str, Any] = {}
    for key, text in inv.options.items():
        try:
            args[key] = json.loads(text)
        except ValueError:
            args[key] = text
    return render_value(shell.call(inv.positionals[0], **args))


def run_exit(shell: ShellContext, inv: Invocation) -> Fragments:
    raise ExitRequest


def run_help(shell: ShellContext, inv: Invocation) -> Fragments:
    _no_options(inv)
    if inv.positionals:
        command = find_command(inv.positionals[0])
        out: Fragments = [("class:usage", f"usage: {command.usage}\n")]
        out += line(command.summary)
        if command.aliases:
            out += line("aliases: " + ", ".join(command.aliases), "class:dim")
        out += line("")
        out += [("", command.details.strip("\n") + "\n")]
        return out
    rows: list[list[Cell]] = [[("class:name", c.usage), c.summary] for c in COMMANDS.values()]
    return table(["command", "does"], rows) + line(
        "Paths: /devices/NAME, /targets/IQN/{portals,luns,groups/G/{initiators,luns}}, "
        "/sessions/TARGET/TSIH, /faults/ID. Tab completes commands, paths and values; "
        "help COMMAND for details.",
        "class:dim",
    )


def find_command(name: str) -> Command:
    command = COMMANDS.get(name) or ALIASES.get(name)
    if command is None:
        close = difflib.get_close_matches(name, list(COMMANDS) + list(ALIASES), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise UsageError(f'unknown command "{name}"{hint}; type help for the list')
    return command


_COMMANDS: Sequence[Command] = (
    Command("cd", "cd [PATH]", "change directory (default /)", """
PATH is absolute or relative to the current directory; .. goes up.
  cd /targets
  cd iqn.2026-11.org.pyscst:test/luns
  cd ../..""", run_cd),
    Command("ls", "ls [PATH]", "list a directory (default: the current one)", """
A container lists its objects as a table (devices with handler, size, block
size, read-only flag and backing file; LUN maps with device and read-only;
sessions with initiator, ISID and address); an object shows its attributes.""",
            run_ls),
    Command("tree", "tree [PATH]", "show everything below PATH", """
The whole configuration and the live sessions below PATH, one line each,
with a short summary (handler and size of devices, the device behind each LUN).""",
            run_tree),
    Command("pwd", "pwd", "print the current directory", "Prints the current path.", run_pwd,
            args="none", max_positionals=0),
    Command("info", "info [PATH]", "every attribute of one object", """
For a session this includes its per-LUN counters.""", run_info, aliases=("show",)),
    Command("create", "create [PATH/]NAME [key=value ...]", "create an object in a directory",
            """
Where you create decides what you create:
  /devices                     create disk1 handler=vdisk_fileio size=1G
                               [path=FILE] [block_size=512|4096] [read_only=false]
                               [write_cache=true] [grow=true: extend an existing
                               smaller FILE; without it that is refused]
  /targets                     create iqn.2026-11.org.example:disk [alias=NAME]
  /targets/T/portals           create 0.0.0.0:3260
  /targets/T/groups            create GROUP initiators=NAME[,GLOB...]
  /targets/T/groups/G/initiators   create iqn.1994-05.com.redhat:*
  /targets/T/luns (or a group's luns)
                               create [LUN] device=disk1 [read_only=true]
                               (without LUN: the lowest free number)
  /faults                      create [ID] action=check_condition [op_class=read]
                               [lba=100-199] [probability=0.1] [seed=7] ...
                               (every [[faults]] key; see docs/faults.md)
From elsewhere, put the directory in front of the name:
  create /targets/T/luns/3 device=disk1""", run_create,
            args="container", takes_options=True, aliases=("mk",)),
    Command("delete", "delete PATH [force=true]", "remove an object", """
Removes a device, target, portal, group, initiator pattern, LUN mapping or
fault rule, or closes a session. A device, target or LUN still in use needs force=true
(or --force); initiators that lose a LUN get REPORTED LUNS DATA HAS CHANGED.
  delete /targets/T/luns/3 force=true""", run_delete, takes_options=True,
            aliases=("rm",)),
    Command("set", "set [PATH] key=value ...", "change attributes live", """
On a device: read_only=true|false, size=SIZE (a resize). On a LUN mapping:
read_only=true|false. On a fault rule: enabled=true|false (arm, disarm). On
an ALUA port group: state=active/optimized|active/non-optimized|standby|
unavailable|offline [transition=SECONDS] (live; docs/alua.md).
PATH defaults to the current directory.
  set /devices/disk0 read_only=true
  set /targets/T/luns/0 read_only=false
  set /targets/T/port_groups/b state=standby transition=2""", run_set, takes_options=True),
    Command("resize", "resize [PATH] SIZE", "grow or shrink a device", """
Initiators get CAPACITY DATA HAS CHANGED. SIZE is bytes or 512M, 2G, 1TiB, 10GB.
  resize /devices/disk0 2G""", run_resize, max_positionals=2),
    Command("reset", "reset [PATH]", "reset a device's logical unit or a whole target", """
On a device or LUN: LOGICAL UNIT RESET (aborts its commands, raises a unit
attention); on a target: every logical unit it maps.""", run_reset),
    Command("restart", "restart [PATH]", "bring an offline device back", """
A device whose handler crashed beyond its restart budget, or whose backing file
was truncated or deleted, is offline (its state in ls, info and tree).
restart reopens it with a fresh budget; initiators get POWER ON OCCURRED.
  restart /devices/disk0""", run_restart),
    Command("eject", "eject [PATH]", "take the medium out of a removable device", """
Initiators then get NOT READY, MEDIUM NOT PRESENT (3A/00). Refused while an
initiator holds PREVENT ALLOW MEDIUM REMOVAL, and on a device without
removable = true.
  eject /devices/disk0""", run_eject),
    Command("load", "load [PATH] [image=FILE]", "load a removable device's medium", """
Every initiator gets NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED (28/00).
A CD-ROM (vcdrom) takes image=FILE to load another ISO image (relative to
state_dir, below state_dir or allowed_dirs); without it, the last one.
  load /devices/disk0
  load /devices/cd0 image=debian.iso""", run_load, takes_options=True),
    Command("library", "library [PATH] [ACTION BARCODE] [key=value]",
            "a tape library: list, create, import, export, delete cartridges", """
On a vchanger device. Without ACTION: every element (picker, mail slots, drives,
slots) and its cartridge, and the shelf (cartridges outside the library).
  library /devices/lib0
  library /devices/lib0 create A00042L8 capacity=100G [worm=true]   (on the shelf)
  library /devices/lib0 import A00042L8    (into a free mail slot; initiators: 28/01)
  library /devices/lib0 export A00042L8    (out of its mail slot; initiators: 28/01)
  library /devices/lib0 delete A00042L8    (a shelf cartridge and its data)
Import and export are refused while an initiator prevents medium removal.""",
            run_library, max_positionals=3, takes_options=True),
    Command("close", "close [PATH]", "close a session", """
  close /sessions/iqn.2026-11.org.pyscst:test/1""", run_close),
    Command("stats", "stats [PATH]", "commands, bytes, errors and latency", """
Of a device (or the device behind a LUN), a target, or a session; at / or
/devices every device. Latency percentiles are in microseconds. Of a fault
rule (or /faults: every rule): its counters and latest injections.""", run_stats),
    Command("save", "save [FILE]", "write the running configuration to TOML", """
Without FILE the daemon's own config file is rewritten (comments kept where
possible). A relative FILE is relative to the console's directory; it must lie
below the config file's directory, state_dir or allowed_dirs.""", run_save,
            args="file"),
    Command("reload", "reload", "re-read the config file and apply the differences", """
Only what changed is applied; sessions the change does not touch continue.""",
            run_reload, args="none", max_positionals=0),
    Command("call", "call OP [key=value ...]", "send any control op (e.g. fault.list)", """
Values are JSON when they parse as JSON, strings otherwise.
  call fault.list
  call stats device=disk0""", run_call, args="op", takes_options=True),
    Command("help", "help [COMMAND]", "list commands, or explain one", """
  help create""", run_help, args="command"),
    Command("exit", "exit", "leave the console (also: quit, Ctrl-D)", "Leaves the console.",
            run_exit, args="none", max_positionals=0, aliases=("quit",)),
)

COMMANDS: Mapping[str, Command] = {c.name: c for c in _COMMANDS}
ALIASES: Mapping[str, Command] = {a: c for c in _COMMANDS for a in c.aliases}
