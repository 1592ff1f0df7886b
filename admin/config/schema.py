"""The TOML file's shape, structured by cattrs, and its errors made readable.

These ``Raw*`` records mirror the file key for key (so cattrs can reject
unknown keys, missing keys and wrong types in one pass); semantics (names,
sizes, cross references) are checked afterwards in ``pyscst.admin.config.files``. cattrs
reports problems as nested exception groups; :func:`describe_structure_error`
flattens them into ``(key path, message)`` pairs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import cattrs
from cattrs.cols import is_mapping, is_sequence, list_structure_factory, mapping_structure_factory
from cattrs.errors import (
    AttributeValidationNote,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from pyscst.admin.config.model import IscsiSettings

#: A key path inside the file: table keys (str) and array indexes (int).
KeyPath = tuple[str | int, ...]


@attrs.frozen
class Problem:
    """One thing wrong with a config file, at a key path."""

    path: KeyPath
    message: str
    unknown_key: bool = False  # rendered "unknown key PATH..." rather than "PATH: ..."

    def __str__(self) -> str:
        where = format_key_path(self.path)
        if self.unknown_key:
            return f"unknown key {where}{self.message}"
        return f"{where}: {self.message}"


#: The [iscsi] defaults live once, in the model; the raw record takes them from there.
_ISCSI = IscsiSettings()


@attrs.frozen
class RawIscsi:
    max_recv_data_segment_length: int = _ISCSI.max_recv_data_segment_length
    max_burst_length: int = _ISCSI.max_burst_length
    first_burst_length: int = _ISCSI.first_burst_length
    initial_r2t: bool = _ISCSI.initial_r2t
    immediate_data: bool = _ISCSI.immediate_data
    max_outstanding_r2t: int = _ISCSI.max_outstanding_r2t
    max_connections: int = _ISCSI.max_connections
    default_time2wait: int = _ISCSI.default_time2wait
    default_time2retain: int = _ISCSI.default_time2retain
    header_digest: list[str] = attrs.field(
        factory=lambda: [d.value for d in _ISCSI.header_digest]
    )
    data_digest: list[str] = attrs.field(factory=lambda: [d.value for d in _ISCSI.data_digest])
    queue_depth: int = _ISCSI.queue_depth
    nop_interval: float = _ISCSI.nop_interval
    nop_timeout: float = _ISCSI.nop_timeout
    poll_us: int = _ISCSI.poll_us
    login_timeout: float = _ISCSI.login_timeout
    pdu_timeout: float = _ISCSI.pdu_timeout
    max_prelogin_connections: int = _ISCSI.max_prelogin_connections
    max_prelogin_per_address: int = _ISCSI.max_prelogin_per_address


@attrs.frozen
class RawCartridge:
    barcode: str
    capacity: int | str = "1G"
    worm: bool = False
    slot: int | None = None


@attrs.frozen
class RawLibrary:
    drives: list[str] = attrs.field(factory=list)
    slots: int = 10
    mail_slots: int = 1
    cartridges: list[RawCartridge] = attrs.field(factory=list)


@attrs.frozen
class RawDevice:
    handler: str
    #: required for disks; a CD-ROM's size is its image's
    size: int | str | None = None
    path: str | None = None
    #: default: the handler's first block size (512 for disks, 2048 for vcdrom)
    block_size: int | None = None
    read_only: bool = False
    write_cache: bool = True
    serial: str | None = None
    rotational: bool = False
    removable: bool = False
    physical_block_size: int | None = None
    max_restarts: int = 5
    restart_period: float = 60.0
    io_engine: str = "auto"
    #: a vchanger's library: drives, slots, mail slots, cartridges
    library: RawLibrary | None = None
    #: passthrough: "iscsi://host:port/iqn/lun" or a /dev path (admin/config/backend.py)
    backend: str | None = None
    backend_chap: RawChap | None = None
    backend_mutual: RawChap | None = None
    backend_initiator: str | None = None
    backend_queue_depth: int = 32
    backend_timeout: float = 30.0


@attrs.frozen
class RawLun:
    lun: int
    device: str
    read_only: bool = False


@attrs.frozen
class RawGroup:
    initiators: list[str]
    luns: list[RawLun] = attrs.field(factory=list)


@attrs.frozen
class RawChap:
    user: str
    secret: str | None = None
    secret_file: str | None = None


@attrs.frozen
class RawDiscoveryAuth:
    chap: list[RawChap] = attrs.field(factory=list)
    mutual: RawChap | None = None


@attrs.frozen
class RawAuth:
    initiators: list[str] | None = None
    chap: list[RawChap] = attrs.field(factory=list)
    mutual: RawChap | None = None


@attrs.frozen
class RawPortGroup:
    id: int
    portals: list[str] = attrs.field(factory=list)
    state: str = "active/optimized"
    relative_port: int | None = None
    preferred: bool = False


@attrs.frozen
class RawTarget:
    portals: list[str]
    alias: str | None = None
    luns: list[RawLun] = attrs.field(factory=list)
    groups: dict[str, RawGroup] = attrs.field(factory=dict)
    auth: RawAuth | None = None
    port_groups: dict[str, RawPortGroup] = attrs.field(factory=dict)
    alua_explicit: bool = True
    alua_transition_time: int = 0


@attrs.frozen
class RawMetrics:
    listen: str | None = None


@attrs.frozen
class RawCluster:
    etcd: list[str]
    node: str
    lease_ttl: int = 10
    prefix: str = "/pyscst"


@attrs.frozen
class RawConfig:
    state_dir: str = "."
    control_socket: str = "pyscst.sock"
    log_level: str = "info"
    allowed_dirs: list[str] = attrs.field(factory=list)
    control_group: str | None = None
    iscsi: RawIscsi = attrs.field(factory=RawIscsi)
    metrics: RawMetrics = attrs.field(factory=RawMetrics)
    cluster: RawCluster | None = None
    devices: dict[str, RawDevice] = attrs.field(factory=dict)
    targets: dict[str, RawTarget] = attrs.field(factory=dict)
    discovery_auth: RawDiscoveryAuth | None = None


def describe_value(value: object) -> str:
    """A value as the user wrote it, with its TOML type."""
    kind = {
        bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, list | dict):
        return kind
    return f"{kind} {value!r}"


def _strict(expected: str, check: Callable[[object], bool]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _type: Any) -> Any:
        if not check(value):
            raise TypeError(f"expected {expected}, got {describe_value(value)}")
        return value

    return hook


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def make_converter() -> cattrs.Converter:
    """A converter that never coerces: TOML types must already be right."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(int, _strict("an integer", _is_int))
    conv.register_structure_hook(bool, _strict("true or false", lambda v: isinstance(v, bool)))
    conv.register_structure_hook(str, _strict("a string", lambda v: isinstance(v, str)))
    conv.register_structure_hook(
        float, lambda v, _t: float(_strict("a number", lambda x: _is_int(x) or
                                           isinstance(x, float))(v, _t))
    )
    conv.register_structure_hook(
        int | str,
        _strict("an integer or a string", lambda v: _is_int(v) or isinstance(v, str)),
    )
    conv.register_structure_hook(
        int | str | None,
        _strict("an integer or a string", lambda v: _is_int(v) or isinstance(v, str)),
    )

    def seq_factory(type_: Any, c: cattrs.Converter) -> Callable[[Any, Any], Any]:
        inner = list_structure_factory(type_, c)

        def hook(value: Any, t: Any) -> Any:
            if not isinstance(value, list):
                raise TypeError(f"expected an array, got {describe_value(value)}")
            return inner(value, t)

        return hook

    def map_factory(type_: Any, c: cattrs.Converter) -> Callable[[Any, Any], Any]:
        inner = mapping_structure_factory(type_, c)

        def hook(value: Any, t: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected a table, got {describe_value(value)}")
            return inner(value, t)

        return hook

    def class_factory(type_: Any, c: cattrs.Converter) -> Callable[[Any, Any], Any]:
        inner = make_dict_structure_fn(type_, c)

        def hook(value: Any, t: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected a table, got {describe_value(value)}")
            return inner(value, t)

        return hook

    conv.register_structure_hook_factory(is_sequence, seq_factory)
    conv.register_structure_hook_factory(is_mapping, map_factory)
    conv.register_structure_hook_factory(attrs.has, class_factory)
    return conv


def format_key_path(path: KeyPath) -> str:
    """``targets."iqn.x:y".luns[1].device`` style, quoting keys TOML would quote."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
            continue
        bare = part != "" and all((c.isalnum() and c.isascii()) or c in "-_" for c in part)
        text = part if bare else '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(("." if out else "") + text)
    return "".join(out) or "(top level)"


def _suggest(key: str, cls: type) -> str:
    names = [a.name for a in attrs.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def describe_structure_error(exc: BaseException, path: KeyPath = ()) -> Iterator[Problem]:
    """Flatten a cattrs error tree into problems, in file order."""
    here = path
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            here = (*path, note.name)
        elif isinstance(note, IterableValidationNote):
            index = note.index
            here = (*path, index if isinstance(index, int | str) else str(index))
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield Problem((*here, key), _suggest(key, exc.cl), unknown_key=True)
        return
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from describe_structure_error(sub, here)
        return
    if isinstance(exc, KeyError):
        yield Problem(here, "required key missing")
        return
    yield Problem(here, str(exc))
