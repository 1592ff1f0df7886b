"""The ``key=value`` attributes console commands accept, by object kind.

One table says, for each kind of object, which attributes ``create`` takes
(and which are required), which ``set`` can change live, how each value is
parsed (sizes with units, booleans, numbers) and what the completer offers
for it (handlers, booleans, device names). Parsing here means a typo is
reported by the console with the attribute's name before any op is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from pyscst.actors.faults import FAULT_STATUSES, PDU_NAMES, ActionKind, Direction, OpClass, Phase
from pyscst.admin.client.console.model import Kind, Node
from pyscst.admin.client.faults import parse_value
from pyscst.admin.config.faults import RawFault
from pyscst.admin.config.values import parse_size
from pyscst.devices.registry import HANDLERS
from pyscst.scsi.alua import SETTABLE_LABELS

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
BOOLEAN_VALUES = ("true", "false")
BLOCK_SIZES = ("512", "4096")


class UsageError(ValueError):
    """A command line the console can reject without asking the daemon."""


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f'expected true or false, got "{text}"')


def parse_int(text: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise ValueError(f'expected a whole number, got "{text}"') from None


def parse_block_size(text: str) -> int:
    value = parse_int(text)
    if str(value) not in BLOCK_SIZES:
        raise ValueError(f"expected 512 or 4096, got {value}")
    return value


def parse_handler(text: str) -> str:
    names = list(HANDLERS)
    if text not in names:
        raise ValueError(f'unknown handler "{text}" (one of {", ".join(names)})')
    return text


def parse_text(text: str) -> str:
    if not text:
        raise ValueError("empty value")
    return text


def device_names(root: Node) -> list[str]:
    devices = root.child("devices")
    return [d.name for d in devices.children] if devices else []


def parse_patterns(text: str) -> list[str]:
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    if not patterns:
        raise ValueError("expected one or more initiator names or globs, comma-separated")
    return patterns


def parse_initiator_list(text: str) -> list[str] | None:
    """``any`` (None: anyone may log in) or comma-separated names/globs."""
    if text.strip().lower() == "any":
        return None
    return parse_patterns(text)


def session_initiators(root: Node) -> list[str]:
    """Initiator names of the live sessions: the likeliest members of a new group."""
    sessions = root.child("sessions")
    names = {
        str(s.attributes["initiator"])
        for t in (sessions.children if sessions else ())
        for s in t.children
        if "initiator" in s.attributes
    }
    return sorted(names)


@attrs.frozen
class Attr:
    """One attribute: how to parse it and what to complete for it."""

    name: str
    parse: Callable[[str], Any]
    help: str
    required: bool = False
    choices: Callable[[Node], list[str]] = attrs.field(default=lambda _root: [])


def _fixed(*values: str) -> Callable[[Node], list[str]]:
    return lambda _root: list(values)


READ_ONLY = Attr("read_only", parse_bool, "write-protect", choices=_fixed(*BOOLEAN_VALUES))
FORCE = Attr(
    "force", parse_bool, "even if it changes what a logged-in initiator sees",
    choices=_fixed(*BOOLEAN_VALUES),
)

#: what ``create`` accepts inside each container
CREATE_ATTRS: Mapping[Kind, tuple[Attr, ...]] = {
    Kind.DEVICES: (
        Attr(
            "handler", parse_handler, "device handler", required=True,
            choices=_fixed(*HANDLERS),
        ),
        Attr("size", parse_size, "bytes or 64M, 1G, 2GiB, 1GB (not for vcdrom)"),
        Attr("path", parse_text, "backing file (vdisk_fileio) or ISO image (vcdrom), "
             "relative to state_dir"),
        Attr("block_size", parse_block_size, "512 or 4096", choices=_fixed(*BLOCK_SIZES)),
        READ_ONLY,
        Attr(
            "write_cache", parse_bool, "report a volatile write cache",
            choices=_fixed(*BOOLEAN_VALUES),
        ),
        Attr(
            "removable", parse_bool, "removable medium: initiators and eject/load may remove it",
            choices=_fixed(*BOOLEAN_VALUES),
        ),
        Attr(
            "physical_block_size", parse_int, "bytes per physical block (e.g. 4096 over 512)",
            choices=_fixed("4096"),
        ),
        Attr(
            "grow", parse_bool, "extend an existing backing file smaller than size",
            choices=_fixed(*BOOLEAN_VALUES),
        ),
        Attr("backend", parse_text, "passthrough: iscsi://host:port/iqn/lun or a /dev path"),
    ),
    Kind.TARGETS: (Attr("alias", parse_text, "TargetAlias sent at login"),),
    Kind.PORTALS: (),
    Kind.GROUPS: (
        Attr(
            "initiators", parse_patterns,
            "initiator names or globs, comma-separated (a group needs at least one)",
            choices=session_initiators,
        ),
        FORCE,
    ),
    Kind.INITIATORS: (FORCE,),
    Kind.CHAP_USERS: (
        Attr("secret_file", parse_text, "file holding the secret (mode 0600), relative to "
             "state_dir"),
        Attr("secret", parse_text, "the secret itself (prefer secret_file)"),
    ),
    Kind.LUNS: (
        Attr("device", parse_text, "the device to map", required=True, choices=device_names),
        Attr("lun", parse_int, "LUN number (default: the lowest free one)"),
        READ_ONLY,
    ),
}

def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'expected seconds, got "{text}"') from None
    if not 0 <= value <= 3600:
        raise ValueError(f"expected 0..3600 seconds, got {text}")
    return value


def target_names(root: Node) -> list[str]:
    targets = root.child("targets")
    return [t.name for t in targets.children] if targets else []


def _fault_attr(name: str) -> Attr:
    """One ``[[faults]]`` key as a ``create`` attribute in /faults: typed like
    ``pyscst admin fault add`` (lists as a,b,c; lba and window as a-b); the
    daemon checks the rule with the config file's code."""
    fixed: dict[str, tuple[str, ...]] = {
        "action": tuple(k.value for k in ActionKind),
        "op_class": tuple(c.value for c in OpClass),
        "direction": tuple(d.value for d in Direction),
        "phase": tuple(p.value for p in Phase),
        "status": tuple(sorted(FAULT_STATUSES)),
        "sense_key": ("medium_error", "hardware_error", "not_ready", "illegal_request",
                      "aborted_command", "unit_attention", "data_protect"),
        "pdus": tuple(sorted(PDU_NAMES)),
        "enabled": BOOLEAN_VALUES, "information": BOOLEAN_VALUES, "grow": BOOLEAN_VALUES,
    }  # fmt: skip
    choices: Callable[[Node], list[str]] = _fixed(*fixed.get(name, ()))
    if name == "device":
        choices = device_names
    elif name == "target":
        choices = target_names
    parse: Callable[[str], Any] = lambda text: parse_value(name, parse_text(text))  # noqa: E731
    if fixed.get(name) == BOOLEAN_VALUES:
        parse = parse_bool
    what = "required: what goes wrong" if name == "action" else "a [[faults]] key"
    return Attr(name, parse, what, required=name == "action", choices=choices)


#: ``create`` in /faults: every [[faults]] key but the id (the new entry's name)
FAULT_ATTRS: tuple[Attr, ...] = tuple(
    _fault_attr(f.name) for f in attrs.fields(RawFault) if f.name != "id"
)
CREATE_ATTRS = {**CREATE_ATTRS, Kind.FAULTS: FAULT_ATTRS}

#: what ``set`` can change live on each kind of object
SET_ATTRS: Mapping[Kind, tuple[Attr, ...]] = {
    Kind.DEVICE: (READ_ONLY, Attr("size", parse_size, "resize (e.g. 2G)")),
    Kind.LUN: (READ_ONLY,),
    Kind.AUTH: (
        Attr("initiators", parse_initiator_list,
             "who may log in: names or globs, comma-separated, or any",
             choices=session_initiators),
        Attr("mutual", parse_text, "CHAP name the target answers with (none: no mutual "
             "CHAP); give secret_file or secret with it"),
        Attr("secret_file", parse_text, "the mutual secret's file (mode 0600)"),
        Attr("secret", parse_text, "the mutual secret itself (prefer secret_file)"),
    ),
    Kind.FAULT: (
        Attr("enabled", parse_bool, "arm or disarm the rule", choices=_fixed(*BOOLEAN_VALUES)),
    ),
    Kind.PORT_GROUP: (
        Attr("state", parse_text, "ALUA access state (initiators get 2A/06)",
             choices=_fixed(*SETTABLE_LABELS)),
        Attr("transition", parse_seconds, "pass through transitioning for this many "
             "seconds first"),
    ),
}

#: kinds whose removal takes ``force=true`` when in use
FORCEABLE = frozenset({Kind.DEVICE, Kind.TARGET, Kind.GROUP, Kind.INITIATOR, Kind.LUN})


def parse_options(
    command: str, where: str, given: Mapping[str, str], allowed: tuple[Attr, ...]
) -> dict[str, Any]:
    """Parsed values; UsageError names the attribute, the command and the object."""
    by_name = {a.name: a for a in allowed}
    out: dict[str, Any] = {}
    for key, text in given.items():
        attr = by_name.get(key)
        if attr is None:
            known = ", ".join(by_name) or "none"
            raise UsageError(f'{command}: unknown attribute "{key}" for {where} (known: {known})')
        try:
            out[key] = attr.parse(text)
        except ValueError as exc:
            raise UsageError(f"{command}: {key}: {exc}") from None
    missing = [a.name for a in allowed if a.required and a.name not in out]
    if missing:
        raise UsageError(
            f"{command}: {where} needs " + ", ".join(f"{m}=..." for m in missing)
        )
    return out
