"""``pyscst admin fault ...``: fault rules from a shell, one KEY=VALUE per ``[[faults]]`` key.

``pyscst admin fault add action=check_condition lba=100-199 probability=0.1 seed=7``
sends ``fault.add`` with the same table the config file would hold, so the
daemon checks it with the same code and answers with the same key paths.
Values are typed the way TOML would type them: integers (``0x11`` too),
floats, ``true``/``false``, and lists written ``a,b,c`` (``a-b`` for the
two-element ranges ``lba`` and ``window``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

#: keys whose value is a list in the rule table
LIST_KEYS = {"opcodes", "lba", "window", "pdus", "lbas", "alerts"}
#: keys that stay strings even when they look like numbers
STRING_KEYS = {"id", "action", "target", "device", "initiator", "op_class", "direction",
               "status", "phase", "portal"}  # fmt: skip

Leaf = Callable[[Any, str, str, Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]],
                argparse.ArgumentParser]  # fmt: skip


def add_fault_commands(group: Any, leaf: Leaf) -> None:
    """Register add / list / enable / disable / remove / stats under ``fault``."""
    p = leaf(group, "add", "add a rule from KEY=VALUE pairs (the [[faults]] keys)",
             lambda a: ("fault.add", parse_assignments(a.pairs)))
    p.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    leaf(group, "list", "every rule with its counters", lambda a: ("fault.list", {}))
    for verb in ("enable", "disable", "remove"):
        p = leaf(group, verb, f"{verb} a rule", _by_id(f"fault.{verb}"))
        p.add_argument("id")
    p = leaf(group, "stats", "counters and the latest injections (of one rule, or all)",
             lambda a: ("fault.stats", {"id": a.id} if a.id else {}))
    p.add_argument("id", nargs="?")


def _by_id(op: str) -> Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]:
    return lambda a: (op, {"id": a.id})


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            from pyscst.admin.client.cli import UsageError  # late: cli imports this module

            raise UsageError(f'expected KEY=VALUE, got "{pair}"')
        out[key] = parse_value(key, text)
    return out


def parse_value(key: str, text: str) -> Any:
    if key in STRING_KEYS:
        return text
    if key in LIST_KEYS:
        if text.startswith("["):
            return json.loads(text)
        sep = "-" if key in ("lba", "window") and "-" in text else ","
        return [_scalar(part.strip()) for part in text.split(sep) if part.strip()]
    return _scalar(text)


def _scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def render_faults(op: str, result: Any) -> str:
    """A table of rules (list, enable, disable, add, remove) or of recent injections."""
    rows = result if isinstance(result, list) else [result]
    if not rows:
        return "no fault rules"
    lines = []
    for r in rows:
        state = "on " if r.get("enabled") else "off"
        lines.append(
            f"{r['id']:<16} {state} {r['action']:<16} matches {r['matches']:<8} "
            f"injections {r['injections']:<8} seed {r['seed']}"
        )
        if "rule" in r:
            lines.append("    " + " ".join(
                f"{k}={_show(v)}" for k, v in r["rule"].items() if k not in ("id", "action")
            ))  # fmt: skip
        if r.get("bad_blocks"):
            lines.append(f"    bad blocks: {_show(r['bad_blocks'])}")
        for hit in r.get("recent", []):
            lines.append("    #" + " ".join(f"{k}={_show(v)}" for k, v in hit.items()))
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)
