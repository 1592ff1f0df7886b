"""``pyscst admin``: one-shot control of a running daemon, for people and scripts.

Each subcommand is one control-protocol op (``pyscst admin lun add T 1 disk1``
sends ``lun.add``); the reply is shown as a table or sentence, or as JSON
with ``--json``. Exit codes say what happened without parsing output:
0 done, 1 the daemon refused (the message names what and where), 2 bad
usage, 3 no daemon to talk to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from pyscst.admin.client.connection import Client, Unreachable
from pyscst.admin.client.faults import add_fault_commands, render_faults
from pyscst.admin.control.protocol import OpError
from pyscst.devices.registry import HANDLERS

EXIT_OK = 0
EXIT_OP_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

#: builds (op, args) from the parsed command line
Builder = Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--socket", "-s", metavar="PATH", default=default,
                        help="the daemon's control socket")
    parser.add_argument("--config", "-c", metavar="PATH", default=default,
                        help="find the control socket in this config file")
    parser.add_argument("--json", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="print the reply as JSON (for scripts)")


def _library_op(op: str, a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return op, {"name": a.name, "barcode": a.barcode}


def add_admin_parser(sub: Any) -> None:
    """Register ``admin`` and its subcommands on the ``pyscst`` parser."""
    admin = sub.add_parser("admin", help="change a running daemon (one command, then exit)")
    _common(admin, suppress=False)
    admin.set_defaults(func=run)
    verbs = admin.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, suppress=True)

    def leaf(parent: Any, name: str, help_text: str, build: Builder) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, parents=[common]
        )
        parser.set_defaults(build=build)
        return parser

    def group(name: str, help_text: str) -> Any:
        parser = verbs.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)

    leaf(verbs, "hello", "protocol version and the ops the daemon knows",
         lambda a: ("hello", {}))
    leaf(verbs, "tree", "the whole running tree: devices, targets, sessions",
         lambda a: ("tree", {}))
    p = leaf(verbs, "call", "send any op with JSON arguments (e.g. fault.list)",
             lambda a: (a.op, _json_object(a.args)))
    p.add_argument("op")
    p.add_argument("args", nargs="?", default="{}", help="a JSON object")

    dev = group("device", "add, remove, resize, write-protect, list, restart, eject or load "
                "devices")
    leaf(dev, "list", "every device with its state (online, restarting, offline)",
         lambda a: ("device.list", {}))
    p = leaf(dev, "show", "one device: configuration, state, last error",
             lambda a: ("device.show", {"name": a.name}))
    p.add_argument("name")
    p = leaf(dev, "restart", "bring an offline device back (initiators get a power-on UA)",
             lambda a: ("device.restart", {"name": a.name}))
    p.add_argument("name")
    p = leaf(dev, "eject", "take out a removable device's medium (initiators: 3A/00)",
             lambda a: ("device.eject", {"name": a.name}))
    p.add_argument("name")
    p = leaf(dev, "load", "load a removable device's medium (initiators: 28/00)",
             lambda a: ("device.load", {"name": a.name, "path": a.path}))
    p.add_argument("--path", help="a CD-ROM: this ISO image instead (relative to state_dir)")
    p.add_argument("name")
    p = leaf(dev, "add", "add a device", lambda a: ("device.add", {
        "name": a.name, "handler": a.handler, "size": a.size and _size(a.size),
        "path": a.path,
        "block_size": a.block_size, "read_only": a.read_only or None,
        "write_cache": False if a.no_write_cache else None, "serial": a.serial,
        "rotational": a.rotational or None, "grow": a.grow or None,
        "removable": a.removable or None, "physical_block_size": a.physical_block_size,
        "backend": a.backend}))
    p.add_argument("name")
    p.add_argument("--handler", default="vdisk_fileio",
                   help="; ".join(f"{h.name}: {h.summary}" for h in HANDLERS.values()))
    p.add_argument("--size", help='bytes, or e.g. "1G" (required but for vcdrom)')
    p.add_argument("--path", help="backing file, relative to state_dir (or below allowed_dirs)")
    p.add_argument("--grow", action="store_true",
                   help="extend an existing backing file smaller than --size (else refused)")
    p.add_argument("--block-size", type=int)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--no-write-cache", action="store_true")
    p.add_argument("--serial")
    p.add_argument("--rotational", action="store_true")
    p.add_argument("--removable", action="store_true",
                   help="removable medium (eject/load, START STOP UNIT LOEJ)")
    p.add_argument("--physical-block-size", type=int,
                   help="bytes per physical block, e.g. 4096 over 512-byte blocks")
    p.add_argument("--backend", help='passthrough: "iscsi://host:port/iqn/lun" or a /dev path '
                   "(CHAP credentials toward it: backend_chap in the config file)")
    p = leaf(dev, "remove", "remove a device (--force also unmaps it)",
             lambda a: ("device.remove", {"name": a.name, "force": a.force}))
    p.add_argument("name")
    p.add_argument("--force", action="store_true")
    p = leaf(dev, "resize", "change a device's size (initiators get CAPACITY DATA HAS CHANGED)",
             lambda a: ("device.resize", {"name": a.name, "size": _size(a.size)}))
    p.add_argument("name")
    p.add_argument("size")
    p = leaf(dev, "set", "write-protect a device or lift it",
             lambda a: ("device.set", {"name": a.name, "read_only": a.read_only}))
    p.add_argument("name")
    ro = p.add_mutually_exclusive_group(required=True)
    ro.add_argument("--read-only", dest="read_only", action="store_true")
    ro.add_argument("--writable", dest="read_only", action="store_false")

    lib = group("library", "a tape library (vchanger): list, create, import, export or delete "
                "cartridges")
    p = leaf(lib, "list", "every element and the cartridge in it, and the shelf",
             lambda a: ("library.list", {"name": a.name}))
    p.add_argument("name", help="the vchanger device")
    p = leaf(lib, "create", "a blank cartridge on the shelf (outside the library)",
             lambda a: ("library.create", {"name": a.name, "barcode": a.barcode,
                                           "capacity": a.capacity, "worm": a.worm}))
    p.add_argument("name", help="the vchanger device")
    p.add_argument("barcode")
    p.add_argument("--capacity", help='bytes, or e.g. "100G" (default 1G)')
    p.add_argument("--worm", action="store_true", help="write once, read many")
    for action, text in (
        ("import", "put a shelf cartridge into a free mail slot (initiators: 28/01)"),
        ("export", "take a cartridge out of its mail slot onto the shelf (initiators: 28/01)"),
        ("delete", "delete a shelf cartridge and its data"),
    ):
        p = leaf(lib, action, text, partial(_library_op, f"library.{action}"))
        p.add_argument("name", help="the vchanger device")
        p.add_argument("barcode")

    tgt = group("target", "add or remove targets")
    p = leaf(tgt, "add", "add a target (on --portal, else wherever the daemon listens)",
             lambda a: ("target.add", {"name": a.name, "alias": a.alias, "portal": a.portal}))
    p.add_argument("name")
    p.add_argument("--alias")
    p.add_argument("--portal")
    p = leaf(tgt, "remove", "remove a target (--force ends its sessions)",
             lambda a: ("target.remove", {"name": a.name, "force": a.force}))
    p.add_argument("name")
    p.add_argument("--force", action="store_true")

    por = group("portal", "add or remove a target's listening addresses")
    for action in ("add", "remove"):
        p = leaf(por, action, f"{action} a portal (host:port)", _portal_builder(f"portal.{action}"))
        p.add_argument("target")
        p.add_argument("portal")
        if action == "remove":
            p.add_argument("--force", action="store_true",
                           help="even if sessions are connected through it (they end)")

    grp = group("group", "add or remove initiator groups (LUN masking)")
    p = leaf(grp, "add", "add a group with its first initiator patterns",
             lambda a: ("group.add", {"target": a.target, "group": a.group,
                                      "initiators": a.initiators, "force": a.force}))
    p.add_argument("target")
    p.add_argument("group")
    p.add_argument("initiators", nargs="+", metavar="INITIATOR")
    p.add_argument("--force", action="store_true",
                   help="even if a logged-in initiator it matches loses LUNs by it")
    p = leaf(grp, "remove", "remove a group",
             lambda a: ("group.remove", {"target": a.target, "group": a.group, "force": a.force}))
    p.add_argument("target")
    p.add_argument("group")
    p.add_argument("--force", action="store_true")

    ini = group("initiator", "add or remove initiator name patterns of a group")
    for action in ("add", "remove"):
        p = leaf(ini, action, f"{action} an initiator name or glob",
                 _initiator_builder(f"initiator.{action}"))
        p.add_argument("target")
        p.add_argument("group")
        p.add_argument("pattern")
        p.add_argument("--force", action="store_true",
                       help="even if a logged-in initiator loses LUNs by it")

    _add_auth_commands(group("auth", "who may log in to a target (or discover: target "
                             "\"discovery\") and with which CHAP credentials"), leaf)

    lun = group("lun", "map, unmap or write-protect LUNs")
    p = leaf(lun, "add", "map a device as a LUN (default map, or --group's)",
             lambda a: ("lun.add", {"target": a.target, "group": a.group, "lun": a.lun,
                                    "device": a.device, "read_only": a.read_only}))
    p.add_argument("target")
    p.add_argument("lun", type=int)
    p.add_argument("device")
    p.add_argument("--group")
    p.add_argument("--read-only", action="store_true")
    p = leaf(lun, "remove", "unmap a LUN (--force when a session uses it)",
             lambda a: ("lun.remove", {"target": a.target, "group": a.group, "lun": a.lun,
                                       "force": a.force}))
    p.add_argument("target")
    p.add_argument("lun", type=int)
    p.add_argument("--group")
    p.add_argument("--force", action="store_true")
    p = leaf(lun, "set", "make a mapping read-only or read-write",
             lambda a: ("lun.set", {"target": a.target, "group": a.group, "lun": a.lun,
                                    "read_only": a.read_only}))
    p.add_argument("target")
    p.add_argument("lun", type=int)
    p.add_argument("--group")
    ro = p.add_mutually_exclusive_group(required=True)
    ro.add_argument("--read-only", dest="read_only", action="store_true")
    ro.add_argument("--read-write", dest="read_only", action="store_false")

    ses = group("session", "list or close sessions")
    p = leaf(ses, "list", "sessions, with per-LUN counters",
             lambda a: ("session.list", {"target": a.target}))
    p.add_argument("target", nargs="?")
    p = leaf(ses, "close", "end a session (the initiator may log in again)",
             lambda a: ("session.close", {"target": a.target, "tsih": a.tsih}))
    p.add_argument("target")
    p.add_argument("tsih", type=int)

    rst = group("reset", "reset a logical unit or a whole target")
    p = leaf(rst, "lun", "LOGICAL UNIT RESET of a device",
             lambda a: ("reset.lun", {"device": a.device}))
    p.add_argument("device")
    p = leaf(rst, "target", "reset every logical unit of a target",
             lambda a: ("reset.target", {"target": a.target}))
    p.add_argument("target")

    alua = group("alua", "ALUA: show target port groups, set a group's access state "
                 "(docs/alua.md)")
    p = leaf(alua, "show", "port groups with their live access states",
             lambda a: ("alua.show", {"target": a.target}))
    p.add_argument("target", nargs="?")
    p = leaf(alua, "set", "put a port group in an access state (initiators: 2A/06)",
             lambda a: ("alua.set", {"target": a.target, "group": a.group, "state": a.state,
                                     "transition": a.transition}))
    p.add_argument("target")
    p.add_argument("group", help="its name or TARGET PORT GROUP id")
    p.add_argument("state", help="active/optimized, active/non-optimized, standby, "
                                 "unavailable or offline")
    p.add_argument("--transition", type=float, metavar="SECONDS",
                   help="pass through transitioning for this long first")

    leaf(verbs, "cluster", "cluster mode: this node, its lease and fence, the members, "
         "each device's shared reservations (docs/cluster.md)", lambda a: ("cluster.show", {}))

    add_fault_commands(group("fault", "inject faults: add, list, enable, disable, remove, "
                             "stats (docs/faults.md)"), leaf)

    p = leaf(verbs, "stats", "commands, bytes, errors, latency percentiles",
             lambda a: ("stats", {"device": a.device, "target": a.target, "tsih": a.tsih}))
    p.add_argument("--device")
    p.add_argument("--target")
    p.add_argument("--tsih", type=int)
    p = leaf(verbs, "save", "write the running configuration to the config file (or PATH)",
             lambda a: ("config.save", {"path": _abspath(a.path)}))
    p.add_argument("path", nargs="?")
    p = leaf(verbs, "reload", "re-read the config file and apply the difference",
             lambda a: ("config.reload", {"force": a.force or None}))
    p.add_argument("--force", action="store_true")


def _add_auth_commands(auth: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    def secret_args(p: argparse.ArgumentParser) -> None:
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--secret-file", metavar="PATH",
                           help="a file (mode 0600, ours) holding the secret; relative to "
                                "state_dir")
        which.add_argument("--secret", help="the secret itself (visible to ps: prefer "
                                             "--secret-file)")

    def credential(op: str) -> Builder:
        return lambda a: (op, {"target": a.target, "user": a.user, "secret": a.secret,
                               "secret_file": a.secret_file})

    p = leaf(auth, "chap-add", "add a CHAP user initiators may log in as",
             credential("auth.chap_add"))
    p.add_argument("target", help='an IQN, or "discovery"')
    p.add_argument("user")
    secret_args(p)
    p = leaf(auth, "chap-remove", "remove a CHAP user",
             lambda a: ("auth.chap_remove", {"target": a.target, "user": a.user}))
    p.add_argument("target")
    p.add_argument("user")
    p = leaf(auth, "mutual-set", "the name and secret the target proves itself with",
             credential("auth.mutual_set"))
    p.add_argument("target")
    p.add_argument("user")
    secret_args(p)
    p = leaf(auth, "mutual-clear", "no mutual CHAP",
             lambda a: ("auth.mutual_clear", {"target": a.target}))
    p.add_argument("target")
    p = leaf(auth, "initiators", "who may log in (names or globs); --anyone lifts the list",
             lambda a: ("auth.initiators_set", {
                 "target": a.target, "anyone": a.anyone or None,
                 "initiators": None if a.anyone else a.initiators}))
    p.add_argument("target")
    p.add_argument("initiators", nargs="*", metavar="INITIATOR")
    p.add_argument("--anyone", action="store_true")


def _portal_builder(op: str) -> Builder:
    return lambda a: (op, {"target": a.target, "portal": a.portal,
                           "force": getattr(a, "force", False) or None})


def _initiator_builder(op: str) -> Builder:
    return lambda a: (op, {"target": a.target, "group": a.group, "pattern": a.pattern,
                           "force": getattr(a, "force", False) or None})


class UsageError(Exception):
    """The command line names no daemon or carries malformed arguments."""


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"arguments are not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("arguments must be a JSON object")
    return value


def _abspath(path: str | None) -> str | None:
    """The daemon has its own working directory: send the path the user means."""
    return os.path.abspath(os.path.expanduser(path)) if path else None


def _size(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        from pyscst.admin.config.files import ConfigError, load_config

        try:
            return str(load_config(args.config).control_socket)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    env = os.environ.get("PYSCST_SOCKET")
    if env:
        return env
    raise UsageError("say which daemon: --socket PATH, --config PATH or $PYSCST_SOCKET")


def run(args: argparse.Namespace) -> int:
    try:
        op, op_args = args.build(args)
        path = socket_path(args)
    except UsageError as exc:
        print(f"pyscst admin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    op_args = {k: v for k, v in op_args.items() if v is not None}
    try:
        with Client(path) as client:
            result = client.call(op, **op_args)
    except Unreachable as exc:
        print(f"pyscst admin: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except OpError as exc:
        if args.json:
            error = {"code": str(exc.code), "message": exc.message, "path": exc.path}
            print(json.dumps({"ok": False, "error": error}, indent=2))
        where = f" [{exc.path}]" if exc.path else ""
        print(f"pyscst admin: {op}: {exc.message}{where} ({exc.code})", file=sys.stderr)
        return EXIT_OP_ERROR
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(render(op, result))
    return EXIT_OK


# -- human output ---------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _luns(entries: Sequence[dict[str, Any]]) -> str:
    return ", ".join(
        f"{e['lun']}->{e['device']}{' (ro)' if e.get('read_only') else ''}" for e in entries
    ) or "none"


def render(op: str, result: Any) -> str:
    if op == "tree":
        return render_tree(result)
    if op == "session.list":
        return render_sessions(result)
    if op == "device.list":
        return render_devices(result)
    if op == "device.show":
        return "\n".join(f"{k}: {_cell(v)}" for k, v in result.items())
    if op == "stats":
        return render_stats(result)
    if op == "hello":
        return f"pyscst {result['pyscst']}, protocol {result['version']}: " + ", ".join(
            result["ops"]
        )
    if op == "config.save":
        return f"saved {result['path']}"
    if op.startswith("fault."):
        return render_faults(op, result)
    if op == "alua.show":
        return "\n".join(render_alua(view) for view in result) or "no targets"
    if op == "alua.set":
        return f"{result['message']}\n{render_alua(result)}"
    if isinstance(result, dict) and "message" in result:
        return str(result["message"])
    if op == "config.reload":
        changes = {k: v for k, v in result["changes"].items() if v}
        return f"reloaded {result['path']}: " + (json.dumps(changes) if changes else "no changes")
    return json.dumps(result, indent=2, ensure_ascii=False)


def render_tree(tree: dict[str, Any]) -> str:
    out = ["devices:"]
    out.append(_indent(table(
        ["NAME", "HANDLER", "SIZE", "BLOCK", "RO", "PATH", "STATE"],
        [[d["name"], d["handler"], d["size"], d["block_size"], d["read_only"], d["path"],
          d.get("state")] for d in tree["devices"]],
    )))
    out.append("targets:")
    for t in tree["targets"]:
        alias = f" ({t['alias']})" if t.get("alias") else ""
        out.append(f"  {t['name']}{alias}")
        out.append(f"    portals: {', '.join(t['portals'])}")
        out.append(f"    luns: {_luns(t['luns'])}")
        for g in t["groups"]:
            out.append(f"    group {g['name']}: {', '.join(g['initiators'])}")
            out.append(f"      luns: {_luns(g['luns'])}")
        if _auth_configured(t.get("auth")):
            out.append(f"    auth: {_auth_line(t['auth'])}")
    if _auth_configured(tree.get("discovery_auth")):
        out.append(f"discovery auth: {_auth_line(tree['discovery_auth'])}")
    for view in tree.get("alua", []):
        out.append(render_alua(view))
    out.append("sessions:")
    out.append(_indent(render_sessions(tree["sessions"])))
    return "\n".join(out)


def render_alua(view: dict[str, Any]) -> str:
    """One target's port groups and their live access states."""
    if not view.get("alua"):
        return f"{view['target']}: no port groups (ALUA off)"
    mode = "implicit and explicit" if view["explicit"] else "implicit only"
    head = f"{view['target']}: ALUA {mode}, transition time {view['transition_time']} s"
    rows = [
        [g["name"], g["id"], g["relative_port"], g["state"], "yes" if g["preferred"] else "",
         g["status"], ", ".join(g["portals"]) or "(none here)"]
        for g in view["port_groups"]
    ]
    return head + "\n" + _indent(table(
        ["GROUP", "ID", "PORT", "STATE", "PREF", "LAST CHANGE", "PORTALS"], rows
    ))


def _auth_configured(auth: Any) -> bool:
    return isinstance(auth, dict) and bool(auth.get("chap") or auth.get("initiators") is not None)


def _auth_line(auth: dict[str, Any]) -> str:
    """Access list and CHAP users (names and secret files only)."""
    def who(c: dict[str, Any]) -> str:
        return f"{c['user']} ({c.get('secret_file') or 'inline secret'})"

    initiators = auth.get("initiators")
    parts = ["initiators " + (", ".join(initiators) if initiators is not None else "any")]
    if auth.get("chap"):
        parts.append("chap " + ", ".join(who(c) for c in auth["chap"]))
    if auth.get("mutual"):
        parts.append("mutual " + who(auth["mutual"]))
    return "; ".join(parts)


def render_devices(devices: Sequence[dict[str, Any]]) -> str:
    return table(
        ["NAME", "STATE", "HANDLER", "SIZE", "PATH", "LAST ERROR"],
        [[d["name"], d["state"], d["handler"], d["size"], d["path"], d.get("last_error")]
         for d in devices],
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def render_sessions(sessions: Sequence[dict[str, Any]]) -> str:
    return table(
        ["TARGET", "TSIH", "INITIATOR", "ISID", "ADDRESS", "LUNS (commands)"],
        [[s["target"], s["tsih"], s["initiator"], s["isid"], s["address"],
          ", ".join(f"{e['lun']}:{e['commands']}" for e in s["luns"]) or "none"]
         for s in sessions],
    )


def _stats_row(name: Any, s: dict[str, Any]) -> list[Any]:
    lat = s["latency_us"]
    return [name, s["commands"], s["errors"], s["bytes_read"], s["bytes_written"],
            lat["p50"], lat["p90"], lat["p99"], lat["max"]]


_STATS_HEADERS = ["WHAT", "COMMANDS", "ERRORS", "READ", "WRITTEN",
                  "P50us", "P90us", "P99us", "MAXus"]


def render_stats(result: dict[str, Any]) -> str:
    if "device" in result:
        return table(_STATS_HEADERS, [_stats_row(f"device {result['device']}", result)])
    if "tsih" in result:
        rows = [_stats_row(f"session {result['tsih']}", result)]
        rows += [_stats_row(f"  lun {e['lun']}", e) for e in result["luns"]]
        return table(_STATS_HEADERS, rows)
    rows = [_stats_row(f"device {d['device']}", d) for d in result.get("devices", [])]
    rows += [_stats_row(f"session {s['tsih']} {s['initiator']}", s) for s in result["sessions"]]
    return table(_STATS_HEADERS, rows)
