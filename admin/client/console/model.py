"""The console's directory tree, built from the daemon's ``tree`` reply.

Operators move around the running configuration like a file system
(targetcli-style): ``/devices/<name>``, ``/targets/<iqn>/portals/<addr>``,
``/targets/<iqn>/luns/<n>`` (the default LUN map),
``/targets/<iqn>/groups/<g>/{initiators,luns}/...`` and
``/sessions/<target>/<tsih>``, ``/faults/<rule id>`` and, where ALUA is on,
``/targets/<iqn>/port_groups/<name>`` (live access states). This module
turns one ``tree`` result into immutable :class:`Node` records and resolves
typed paths against them, so every command and the completer see the same
picture. The reply is read
leniently (objects keyed by name or lists of objects with a ``name``), since
the tree is a snapshot for display, not a contract the console enforces.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs


class Kind(enum.StrEnum):
    """What a node stands for; containers hold the objects ``create`` makes."""

    ROOT = "root"
    DEVICES = "devices"
    DEVICE = "device"
    TARGETS = "targets"
    TARGET = "target"
    PORTALS = "portals"
    PORTAL = "portal"
    GROUPS = "groups"
    GROUP = "group"
    INITIATORS = "initiators"
    INITIATOR = "initiator"
    LUNS = "luns"
    LUN = "lun"
    SESSIONS = "sessions"
    SESSION_TARGET = "session target"
    SESSION = "session"
    AUTH = "auth"
    CHAP_USERS = "chap users"
    CHAP_USER = "chap user"
    FAULTS = "faults"
    FAULT = "fault rule"
    PORT_GROUPS = "port groups"
    PORT_GROUP = "port group"


#: container kind -> the kind of object it holds
CHILD_KIND: Mapping[Kind, Kind] = {
    Kind.DEVICES: Kind.DEVICE,
    Kind.TARGETS: Kind.TARGET,
    Kind.PORTALS: Kind.PORTAL,
    Kind.GROUPS: Kind.GROUP,
    Kind.INITIATORS: Kind.INITIATOR,
    Kind.LUNS: Kind.LUN,
    Kind.SESSIONS: Kind.SESSION_TARGET,
    Kind.SESSION_TARGET: Kind.SESSION,
    Kind.CHAP_USERS: Kind.CHAP_USER,
    Kind.FAULTS: Kind.FAULT,
    Kind.PORT_GROUPS: Kind.PORT_GROUP,
}

Path = tuple[str, ...]


@attrs.frozen
class Node:
    """One entry of the tree: a container or an object with attributes."""

    name: str
    kind: Kind
    path: Path
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    children: tuple[Node, ...] = ()

    def child(self, name: str) -> Node | None:
        for node in self.children:
            if node.name == name:
                return node
        return None

    @property
    def text_path(self) -> str:
        return format_path(self.path)

    def walk(self) -> Iterator[Node]:
        yield self
        for node in self.children:
            yield from node.walk()


def format_path(path: Path) -> str:
    return "/" + "/".join(path)


def split_path(text: str, cwd: Path) -> Path:
    """``text`` (absolute, or relative to ``cwd``; ``.`` and ``..`` allowed) as parts."""
    parts: list[str] = [] if text.startswith("/") else list(cwd)
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return tuple(parts)


class PathError(LookupError):
    """A typed path names nothing; the message says which part is missing where."""


def resolve(root: Node, path: Path) -> Node:
    """The node at ``path``; PathError names the first part that is missing and where."""
    node = root
    for part in path:
        found = node.child(part)
        if found is None:
            raise PathError(_missing(node, part))
        node = found
    return node


def _missing(node: Node, part: str) -> str:
    where = node.text_path
    if node.kind in CHILD_KIND:
        empty = " (it is empty)" if not node.children else ""
        return f'no {CHILD_KIND[node.kind].value} "{part}" in {where}{empty}'
    if node.children:
        holds = ", ".join(c.name for c in node.children)
        return f'no "{part}" in {where} (it holds {holds})'
    return f'{where} is a {node.kind.value}, not a directory: cannot look up "{part}" in it'


# -- building the tree from a ``tree`` reply --------------------------------------


def build_tree(data: Any) -> Node:
    """Nodes for a ``tree`` op result (unknown keys are kept as attributes)."""
    if not isinstance(data, Mapping):
        data = {}
    targets = list(_named(data.get("targets")))
    sessions = list(_sessions(data, targets))
    alua = {
        str(view.get("target", "")).lower(): view
        for view in (data.get("alua") or [])
        if isinstance(view, Mapping)
    }
    devices = tuple(
        Node(name, Kind.DEVICE, ("devices", name), _scalars(body))
        for name, body in _named(data.get("devices"))
    )
    return Node(
        "",
        Kind.ROOT,
        (),
        children=(
            Node("devices", Kind.DEVICES, ("devices",), children=devices),
            Node(
                "targets",
                Kind.TARGETS,
                ("targets",),
                children=tuple(
                    _target(name, body, alua.get(name.lower())) for name, body in targets
                ),
            ),
            _sessions_node(sessions),
            _faults_node(data.get("faults")),
        ),
    )


def _named(value: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, body) pairs from ``{name: body}`` or ``[{"name": ..., ...}]``."""
    if isinstance(value, Mapping):
        for name, body in value.items():
            yield str(name), body if isinstance(body, Mapping) else {"value": body}
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping) and "name" in item:
                yield str(item["name"]), item


def _scalars(body: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    """The attributes worth showing: everything but the name and nested tables."""
    omit = {"name", *skip}
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in omit:
            continue
        if isinstance(value, Mapping | list) and not _is_scalar_list(value):
            continue
        out[key] = value
    return out


def _is_scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, str | int | float | bool) or v is None for v in value
    )


def _target(name: str, body: Mapping[str, Any], alua: Mapping[str, Any] | None = None) -> Node:
    base: Path = ("targets", name)
    port_groups = tuple(
        Node(g, Kind.PORT_GROUP, (*base, "port_groups", g), _scalars(gbody))
        for g, gbody in _named((alua or {}).get("port_groups"))
    )
    portals = tuple(
        Node(p, Kind.PORTAL, (*base, "portals", p)) for p in _portal_names(body.get("portals"))
    )
    groups = tuple(_group(base, g, gbody) for g, gbody in _named(body.get("groups")))
    attributes = _scalars(body, skip=("portals", "luns", "groups", "sessions", "auth"))
    return Node(
        name,
        Kind.TARGET,
        base,
        attributes,
        children=(
            Node("portals", Kind.PORTALS, (*base, "portals"), children=portals),
            _luns_node((*base, "luns"), body.get("luns")),
            Node("groups", Kind.GROUPS, (*base, "groups"), children=groups),
            _auth_node((*base, "auth"), body.get("auth")),
            # (only where ALUA is on: its live port groups, from the tree's "alua")
            *(
                (Node("port_groups", Kind.PORT_GROUPS, (*base, "port_groups"),
                      children=port_groups),)
                if alua and alua.get("alua") else ()
            ),
        ),
    )


def _auth_node(path: Path, value: Any) -> Node:
    """``auth/``: initiators and mutual as attributes, ``chap/`` the CHAP users
    (names and secret files only: the tree never carries a secret)."""
    body = value if isinstance(value, Mapping) else {}
    initiators = body.get("initiators")
    mutual = body.get("mutual")
    attributes: dict[str, Any] = {
        "initiators": list(initiators) if isinstance(initiators, list) else "any",
        "mutual": _credential_text(mutual) if isinstance(mutual, Mapping) else None,
    }
    chap = body.get("chap")
    users = tuple(
        Node(str(u.get("user")), Kind.CHAP_USER, (*path, "chap", str(u.get("user"))),
             _scalars(u, skip=("user",)))
        for u in (chap if isinstance(chap, list) else [])
        if isinstance(u, Mapping)
    )
    return Node("auth", Kind.AUTH, path, attributes,
                children=(Node("chap", Kind.CHAP_USERS, (*path, "chap"), children=users),))


def _credential_text(cred: Mapping[str, Any]) -> str:
    return f"{cred.get('user')} ({cred.get('secret_file') or 'inline secret'})"


def _portal_names(value: Any) -> Iterator[str]:
    for item in value if isinstance(value, list) else []:
        if isinstance(item, Mapping):
            host, port = str(item.get("host", "")), item.get("port", 3260)
            yield f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        else:
            yield str(item)


def _group(base: Path, name: str, body: Mapping[str, Any]) -> Node:
    path = (*base, "groups", name)
    patterns = body.get("initiators", [])
    initiators = tuple(
        Node(str(p), Kind.INITIATOR, (*path, "initiators", str(p)))
        for p in (patterns if isinstance(patterns, list) else [])
    )
    return Node(
        name,
        Kind.GROUP,
        path,
        _scalars(body, skip=("initiators", "luns")),
        children=(
            Node("initiators", Kind.INITIATORS, (*path, "initiators"), children=initiators),
            _luns_node((*path, "luns"), body.get("luns")),
        ),
    )


def _luns_node(path: Path, value: Any) -> Node:
    entries: list[tuple[int, Mapping[str, Any]]] = []
    if isinstance(value, Mapping):
        for key, body in value.items():
            if isinstance(body, Mapping):
                entries.append((int(key), body))
            else:
                entries.append((int(key), {"device": body}))
    elif isinstance(value, list):
        entries = [
            (int(item["lun"]), item)
            for item in value
            if isinstance(item, Mapping) and isinstance(item.get("lun"), int)
        ]
    entries.sort(key=lambda e: e[0])
    luns = tuple(
        Node(str(n), Kind.LUN, (*path, str(n)), _scalars(body, skip=("lun",)))
        for n, body in entries
    )
    return Node("luns", Kind.LUNS, path, children=luns)


def _sessions(
    data: Mapping[str, Any], targets: list[tuple[str, Mapping[str, Any]]]
) -> Iterator[Mapping[str, Any]]:
    """Every session record, with its target name filled in."""
    top = data.get("sessions")
    if isinstance(top, list):
        yield from (s for s in top if isinstance(s, Mapping))
    elif isinstance(top, Mapping):  # {target: [sessions]}
        for target, items in top.items():
            for s in items if isinstance(items, list) else []:
                if isinstance(s, Mapping):
                    yield {"target": target, **s}
    for name, body in targets:
        for s in body.get("sessions", []) if isinstance(body.get("sessions"), list) else []:
            if isinstance(s, Mapping):
                yield {"target": name, **s}


def _sessions_node(sessions: list[Mapping[str, Any]]) -> Node:
    by_target: dict[str, list[Node]] = {}
    for session in sessions:
        target = str(session.get("target", "?"))
        tsih = str(session.get("tsih", "?"))
        node = Node(
            tsih,
            Kind.SESSION,
            ("sessions", target, tsih),
            _scalars(session, skip=("target",)),
        )
        by_target.setdefault(target, []).append(node)
    return Node(
        "sessions",
        Kind.SESSIONS,
        ("sessions",),
        children=tuple(
            Node(t, Kind.SESSION_TARGET, ("sessions", t), children=tuple(nodes))
            for t, nodes in sorted(by_target.items())
        ),
    )


def _faults_node(value: Any) -> Node:
    """``/faults``: one node per rule, its counters and its ``[[faults]]`` keys."""
    rules = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, Mapping) or "id" not in item:
            continue
        name = str(item["id"])
        rule = item.get("rule")
        attributes = _scalars(item, skip=("id", "rule"))
        if isinstance(rule, Mapping):
            attributes.update(_scalars(rule, skip=("id", *attributes)))
        rules.append(Node(name, Kind.FAULT, ("faults", name), attributes))
    return Node("faults", Kind.FAULTS, ("faults",), children=tuple(rules))


def raw_session(data: Any, target: str, tsih: str) -> Mapping[str, Any]:
    """The full session record (with per-LUN counters) for ``info`` on a session."""
    if not isinstance(data, Mapping):
        return {}
    targets = list(_named(data.get("targets")))
    for session in _sessions(data, targets):
        if str(session.get("target")) == target and str(session.get("tsih")) == tsih:
            return session
    return {}
