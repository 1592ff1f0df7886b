"""Coloured output for the console: tables, attribute lists, trees, errors.

Everything the console prints is prompt_toolkit formatted text (a list of
``(style class, text)`` fragments), built by the pure functions here, so tests
read the exact plain text while a terminal shows colours from :data:`STYLE`.
Values from the daemon are shown the way a user would type them back
(``64MiB``, ``true``), so what ``ls`` prints is what ``set`` accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prompt_toolkit.formatted_text import StyleAndTextTuples, to_plain_text
from prompt_toolkit.styles import Style

from pyscst.admin.config.values import format_size

Fragments = StyleAndTextTuples
#: a table cell: plain text, or (style class, text)
Cell = str | tuple[str, str]

STYLE = Style.from_dict(
    {
        "error": "#ff5f5f bold",
        "error.where": "#ff8787",
        "warning": "ansiyellow",
        "ok": "ansigreen",
        "header": "bold underline",
        "dir": "ansiblue bold",
        "name": "ansicyan",
        "key": "ansimagenta",
        "true": "ansiyellow",
        "dim": "#8a8a8a",
        "prompt": "ansigreen bold",
        "prompt.path": "ansiblue bold",
        "usage": "bold",
    }
)

SIZE_KEYS = frozenset({"size"})


def plain(fragments: Fragments) -> str:
    return to_plain_text(fragments)


def line(text: str, style: str = "") -> Fragments:
    return [(style, text + "\n")]


def error(message: str, where: str | None = None) -> Fragments:
    """``error: message`` in red, with the object path it concerns when known."""
    out: Fragments = [("class:error", f"error: {message}")]
    if where and where not in message:
        out.append(("class:error.where", f" (at {where})"))
    out.append(("", "\n"))
    return out


def show(key: str, value: Any) -> str:
    """A value as the user would type it: sizes with units, booleans as true/false."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if key in SIZE_KEYS and isinstance(value, int) and value > 0:
        return str(format_size(value))
    if isinstance(value, list):
        return ", ".join(show(key, v) for v in value) or "-"
    if isinstance(value, Mapping):
        return " ".join(f"{k}={show(k, v)}" for k, v in value.items()) or "-"
    return str(value)


def value_cell(key: str, value: Any) -> Cell:
    text = show(key, value)
    if value is True:
        return ("class:true", text)
    return text


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], indent: str = "") -> Fragments:
    """Columns padded to their widest cell, a bold underlined header row."""
    body = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(_text(cell)))
    out: Fragments = []
    if indent:
        out.append(("", indent))
    for i, head in enumerate(headers):
        out.append(("class:header", head))
        out.append(("", _gap(head, widths[i], i == len(headers) - 1)))
    out.append(("", "\n"))
    for row in body:
        if indent:
            out.append(("", indent))
        for i, cell in enumerate(row):
            style, text = (cell if isinstance(cell, tuple) else ("", cell))
            out.append((style, text))
            out.append(("", _gap(text, widths[i], i == len(row) - 1)))
        out.append(("", "\n"))
    return out


def _text(cell: Cell) -> str:
    return cell[1] if isinstance(cell, tuple) else cell


def _gap(text: str, width: int, last: bool) -> str:
    return "" if last else " " * (width - len(text) + 2)


def key_values(items: Mapping[str, Any], indent: str = "") -> Fragments:
    """``key  value`` lines, keys in magenta."""
    if not items:
        return line(indent + "(no attributes)", "class:dim")
    width = max(len(k) for k in items)
    out: Fragments = []
    for key, value in items.items():
        cell = value_cell(key, value)
        style, text = cell if isinstance(cell, tuple) else ("", cell)
        out += [("", indent), ("class:key", key.ljust(width + 2)), (style, text), ("", "\n")]
    return out


def render_value(value: Any) -> Fragments:
    """Any op result: tables for records, attribute lists for flat objects."""
    if _is_records(value):
        return records(value)
    if isinstance(value, Mapping):
        nested = {k: v for k, v in value.items() if isinstance(v, Mapping) or _is_records(v)}
        flat = {k: v for k, v in value.items() if k not in nested}
        out: Fragments = key_values(flat) if flat or not nested else []
        tables = {k: v for k, v in nested.items() if isinstance(v, Mapping)}
        if (len(tables) > 1 and len(tables) == len(nested)
                and all(_is_flat(v) for v in tables.values())):
            return out + records([{"": k, **v} for k, v in tables.items()])
        for key, sub in nested.items():
            out += [("class:dir", f"{key}:\n")]
            out += _indent(render_value(sub))
        return out
    if isinstance(value, list):
        return line(show("", value) if value else "(none)")
    return line(show("", value))


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _is_flat(value: Mapping[str, Any]) -> bool:
    return not any(isinstance(v, Mapping) for v in value.values())


def records(items: Sequence[Mapping[str, Any]]) -> Fragments:
    """One row per record; nested record lists are left to ``info`` on the object."""
    columns: list[str] = []
    for item in items:
        for key, value in item.items():
            if key not in columns and not _is_records(value):
                columns.append(key)
    rows = [[value_cell(c, item.get(c)) for c in columns] for item in items]
    return table(columns, rows)


def _indent(fragments: Fragments, prefix: str = "  ") -> Fragments:
    out: Fragments = []
    at_start = True
    for fragment in fragments:
        style, text = fragment[0], fragment[1]
        pieces = text.split("\n")
        for i, piece in enumerate(pieces):
            if i:
                out.append(("", "\n"))
                at_start = True
            if piece:
                if at_start:
                    out.append(("", prefix))
                    at_start = False
                out.append((style, piece))
    return out
