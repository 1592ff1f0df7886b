"""Load, validate and write pyscst configuration files (TOML).

A config file is parsed with ``tomllib``, shaped by cattrs into the ``Raw*``
records of ``pyscst.admin.config.schema``, then checked and resolved here into the
frozen :class:`Config` the daemon runs from. Every problem found is collected
with its key path and raised as ONE :class:`ConfigError`, so a user fixes a
file in one round instead of one error per restart.
"""

from __future__ import annotations

import difflib
import grp
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import tomli_w

from pyscst.admin.config.auth import auth_to_dict, resolve_auth
from pyscst.admin.config.backend import backend_to_dict, resolve_backend
from pyscst.admin.config.faults import parse_faults, rule_to_dict
from pyscst.admin.config.model import (
    AuthConfig,
    ClusterSettings,
    Config,
    DeviceConfig,
    Digest,
    InitiatorGroup,
    IscsiSettings,
    LogLevel,
    LunMapping,
    MetricsSettings,
    PortGroupConfig,
    TargetConfig,
)
from pyscst.admin.config.schema import (
    KeyPath,
    Problem,
    RawCluster,
    RawConfig,
    RawDevice,
    RawGroup,
    RawIscsi,
    RawLibrary,
    RawLun,
    RawMetrics,
    RawPortGroup,
    RawTarget,
    describe_structure_error,
    describe_value,
    make_converter,
)
from pyscst.admin.config.values import (
    Portal,
    check_initiator_pattern,
    check_iscsi_name,
    format_size,
    is_glob,
    parse_portal,
    parse_size,
)
from pyscst.devices.confine import lexical, outside_roots
from pyscst.devices.library import LibraryLayout, check_barcode
from pyscst.devices.library_store import CartridgeSpec, LibrarySettings
from pyscst.devices.registry import HANDLERS, PathRule
from pyscst.devices.stores import IO_ENGINES
from pyscst.scsi.alua import AccessState
from pyscst.scsi.lun import MAX_LUN

#: the smallest cartridge a library may be configured with
MIN_CAPACITY = 1 << 20

if sys.version_info >= (3, 11):  # noqa: UP036 - pyproject still lists tomli for <3.11
    import tomllib
else:  # pragma: no cover - pyproject pins tomli for older interpreters
    import tomli as tomllib

_ETCD_URL_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}/?$")
_NODE_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._-]+)+$")

__all__ = [
    "BLOCK_SIZES",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "Digest",
    "InitiatorGroup",
    "IscsiSettings",
    "LogLevel",
    "LunMapping",
    "MetricsSettings",
    "Portal",
    "Problem",
    "TargetConfig",
    "default_serial",
    "dump_config",
    "load_config",
    "parse_config",
]

BLOCK_SIZES = (512, 4096)
MAX_DATA_SEGMENT = 2**24 - 1  # RFC 7143: 512..2^24-1 for the three length keys
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_T = TypeVar("_T")


class ConfigError(Exception):
    """A configuration file that cannot be used; ``problems`` lists each reason."""

    def __init__(self, problems: Iterable[Problem | str], source: str | None = None) -> None:
        self.problems: tuple[Problem | str, ...] = tuple(problems)
        self.source = source
        lines = [str(p) for p in self.problems]
        prefix = f"{source}: " if source else ""
        if len(lines) == 1:
            message = prefix + lines[0]
        else:
            message = f"{prefix}{len(lines)} problems:\n" + "\n".join(f"  {ln}" for ln in lines)
        super().__init__(message)


def default_serial(device_name: str) -> str:
    """A stable unit serial number (VPD page 0x80) derived from the device name."""
    return hashlib.blake2s(device_name.encode(), digest_size=8).hexdigest()


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; relative paths resolve against its directory."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror or exc}"], source=str(file)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text: {exc}"], source=str(file)) from None
    return parse_config(text, file.absolute().parent, source=str(file))


def parse_config(text: str, base_dir: str | os.PathLike[str], source: str | None = None) -> Config:
    """Validate config text; ``base_dir`` stands for the file's directory."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax error: {exc}"], source=source) from None
    problems: list[Problem] = []
    raw, device_names = _structure({k: v for k, v in data.items() if k != "faults"}, problems)
    resolver = _Resolver(Path(base_dir).absolute(), device_names)
    config = resolver.config(raw) if raw is not None else None
    problems.extend(resolver.problems)
    targets = data.get("targets")
    target_names = set(targets) if isinstance(targets, dict) else set()
    faults = (
        parse_faults(data["faults"], problems, device_names, target_names)
        if "faults" in data
        else ()
    )
    if problems or config is None:
        raise ConfigError(problems, source=source)
    return attrs.evolve(config, faults=faults) if faults else config


def _structure(data: dict[str, Any], problems: list[Problem]) -> tuple[RawConfig | None, set[str]]:
    """Shape the TOML document piece by piece, so one bad device or target does
    not hide the problems of the others; returns every device name declared."""
    converter = make_converter()

    def part(value: object, cls: type[_T], path: KeyPath) -> _T | None:
        try:
            return converter.structure(value, cls)
        except Exception as exc:  # cattrs raises a group of every shape/type error
            problems.extend(describe_structure_error(exc, path))
            return None

    tables = {key: data.get(key) for key in ("devices", "targets")}
    top = part({k: v for k, v in data.items() if k not in tables}, RawConfig, ())
    pieces: dict[str, dict[str, Any]] = {}
    for key, cls in (("devices", RawDevice), ("targets", RawTarget)):
        value = tables[key]
        pieces[key] = {}
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(Problem((key,), f"expected a table, got {describe_value(value)}"))
            continue
        for name, body in value.items():
            item = part(body, cls, (key, name))
            if item is not None:
                pieces[key][name] = item
    declared = set(tables["devices"]) if isinstance(tables["devices"], dict) else set()
    if top is None:
        return None, declared
    return attrs.evolve(top, devices=pieces["devices"], targets=pieces["targets"]), declared


def dump_config(config: Config) -> str:
    """TOML text that :func:`parse_config` turns back into an equal ``Config``.

    Paths are written absolute, so the text means the same from any directory.
    """
    iscsi = config.iscsi
    doc: dict[str, Any] = {
        "state_dir": str(config.state_dir),
        "control_socket": str(config.control_socket),
        "log_level": config.log_level.value,
        **({"allowed_dirs": [str(p) for p in config.allowed_dirs]} if config.allowed_dirs else {}),
        **({"control_group": config.control_group} if config.control_group else {}),
        "iscsi": {
            "max_recv_data_segment_length": iscsi.max_recv_data_segment_length,
            "max_burst_length": iscsi.max_burst_length,
            "first_burst_length": iscsi.first_burst_length,
            "initial_r2t": iscsi.initial_r2t,
            "immediate_data": iscsi.immediate_data,
            "max_outstanding_r2t": iscsi.max_outstanding_r2t,
            "max_connections": iscsi.max_connections,
            "default_time2wait": iscsi.default_time2wait,
            "default_time2retain": iscsi.default_time2retain,
            "header_digest": [d.value for d in iscsi.header_digest],
            "data_digest": [d.value for d in iscsi.data_digest],
            "queue_depth": iscsi.queue_depth,
            "nop_interval": iscsi.nop_interval,
            "nop_timeout": iscsi.nop_timeout,
            "poll_us": iscsi.poll_us,
            "login_timeout": iscsi.login_timeout,
            "pdu_timeout": iscsi.pdu_timeout,
            "max_prelogin_connections": iscsi.max_prelogin_connections,
            "max_prelogin_per_address": iscsi.max_prelogin_per_address,
        },
        "devices": {d.name: _dump_device(d) for d in config.devices},
        "targets": {t.name: _dump_target(t) for t in config.targets},
    }
    if config.discovery_auth != AuthConfig():
        doc["discovery_auth"] = auth_to_dict(config.discovery_auth, discovery=True)
    if config.faults:
        doc["faults"] = [rule_to_dict(rule) for rule in config.faults]
    if config.metrics.listen is not None:
        doc["metrics"] = {"listen": str(config.metrics.listen)}
    if config.cluster is not None:
        c = config.cluster
        doc["cluster"] = {
            "etcd": list(c.etcd), "node": c.node, "lease_ttl": c.lease_ttl, "prefix": c.prefix,
        }  # fmt: skip
    return tomli_w.dumps(doc)


def _dump_device(device: DeviceConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"handler": device.handler}
    if device.path is not None:
        out["path"] = str(device.path)
    if HANDLERS[device.handler].path not in (PathRule.IMAGE, PathRule.DIRECTORY, PathRule.BACKEND):
        out["size"] = format_size(device.size)
    if device.backend is not None:
        out.update(backend_to_dict(device.backend))
    out.update(
        block_size=device.block_size,
        read_only=device.read_only,
        write_cache=device.write_cache,
        serial=device.serial,
        rotational=device.rotational,
        max_restarts=device.max_restarts,
        restart_period=device.restart_period,
    )
    if device.removable:
        out["removable"] = True
    if device.physical_block_size:
        out["physical_block_size"] = device.physical_block_size
    if device.io_engine != "auto":
        out["io_engine"] = device.io_engine
    if device.library is not None:
        out["library"] = library_to_dict(device.library)
    return out


def library_to_dict(library: LibrarySettings) -> dict[str, Any]:
    """A vchanger's ``library`` table as the file says it."""
    layout = library.layout
    return {
        "drives": list(layout.drives),
        "slots": layout.slots,
        "mail_slots": layout.mail_slots,
        "cartridges": [
            {"barcode": c.barcode, "capacity": format_size(c.capacity), "worm": c.worm,
             **({"slot": c.slot} if c.slot is not None else {})}
            for c in library.cartridges
        ],
    }


def _dump_luns(luns: Iterable[LunMapping]) -> list[dict[str, Any]]:
    return [{"lun": m.lun, "device": m.device, "read_only": m.read_only} for m in luns]


def _dump_target(target: TargetConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"portals": [str(p) for p in target.portals]}
    if target.alias is not None:
        out["alias"] = target.alias
    out["luns"] = _dump_luns(target.luns)
    if target.groups:
        out["groups"] = {
            g.name: {"initiators": list(g.initiators), "luns": _dump_luns(g.luns)}
            for g in target.groups
        }
    if target.auth != AuthConfig():
        out["auth"] = auth_to_dict(target.auth)
    out.update(alua_to_dict(target))
    return out


def alua_to_dict(target: TargetConfig) -> dict[str, Any]:
    """A target's ALUA keys as the file writes them (only those set, without
    port groups)."""
    out: dict[str, Any] = {}
    if target.port_groups or not target.alua_explicit:
        out["alua_explicit"] = target.alua_explicit
    if target.port_groups or target.alua_transition_time:
        out["alua_transition_time"] = target.alua_transition_time
    if not target.port_groups:
        return out
    return {
        **out,
        "port_groups": {
            g.name: {
                "id": g.group_id,
                "portals": [str(p) for p in g.portals],
                "state": g.state.label,
                "relative_port": g.relative_port,
                "preferred": g.preferred,
            }
            for g in target.port_groups
        },
    }


def _in_range(value: float, low: float, high: float) -> str | None:
    if low <= value <= high:
        return None
    return f"expected {low}..{high}, got {value}"


class _Resolver:
    """Checks raw records and builds the model, collecting every problem."""

    def __init__(self, base_dir: Path, device_names: set[str]) -> None:
        self.base_dir = base_dir
        self.device_names = device_names  # declared, even if malformed
        self.roots: tuple[Path, ...] = ()  # state_dir and allowed_dirs, once known
        self.problems: list[Problem] = []
        self.state_dir = base_dir  # secret files resolve here (set in config())

    def fail(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(path, message))

    def check(self, path: KeyPath, parse: Callable[[], _T]) -> _T | None:
        """Run a parser, recording its ValueError at ``path``."""
        try:
            return parse()
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def config(self, raw: RawConfig) -> Config:
        state_dir = _absolute(self.base_dir, raw.state_dir)
        self.state_dir = state_dir
        level_name = raw.log_level.lower()
        if level_name in LogLevel._value2member_map_:
            log_level = LogLevel(level_name)
        else:
            choices = ", ".join(level.value for level in LogLevel)
            self.fail(("log_level",), f'expected one of {choices}, got "{raw.log_level}"')
            log_level = LogLevel.INFO
        iscsi = self.iscsi(("iscsi",), raw.iscsi)
        allowed = self.allowed_dirs(("allowed_dirs",), raw.allowed_dirs)
        self.roots = (state_dir, *allowed)
        if raw.control_group is not None:
            self.check(("control_group",), partial(check_group, raw.control_group))
        devices = tuple(
            d
            for name, raw_dev in raw.devices.items()
            if (d := self.device(("devices", name), name, raw_dev, state_dir)) is not None
        )
        self.library_drives(devices, raw)
        known = self.device_names | set(raw.devices)
        targets = tuple(
            t
            for name, raw_t in raw.targets.items()
            if (t := self.target(("targets", name), name, raw_t, known)) is not None
        )
        discovery_auth = AuthConfig()
        if raw.discovery_auth is not None:
            discovery_auth = resolve_auth(
                ("discovery_auth",), raw.discovery_auth, state_dir, self.problems
            )
        return Config(
            state_dir=state_dir,
            control_socket=_absolute(state_dir, raw.control_socket),
            log_level=log_level,
            iscsi=iscsi,
            devices=devices,
            targets=targets,
            discovery_auth=discovery_auth,
            allowed_dirs=allowed,
            control_group=raw.control_group,
            metrics=self.metrics(("metrics",), raw.metrics),
            cluster=self.cluster(("cluster",), raw.cluster),
        )

    def cluster(self, path: KeyPath, raw: RawCluster | None) -> ClusterSettings | None:
        if raw is None:
            return None
        if not raw.etcd:
            self.fail((*path, "etcd"), 'give at least one endpoint, e.g. ["http://127.0.0.1:2379"]')
        for i, url in enumerate(raw.etcd):
            if not _ETCD_URL_RE.match(url):
                self.fail((*path, "etcd", i), f'"{url}": expected http://HOST:PORT')
        if not _NODE_RE.match(raw.node):
            self.fail((*path, "node"), f'"{raw.node}": 1 to 64 letters, digits, ".", "_" or "-"')
        if not 2 <= raw.lease_ttl <= 300:
            self.fail((*path, "lease_ttl"), f"{raw.lease_ttl}: expected 2 to 300 (seconds)")
        if not _PREFIX_RE.match(raw.prefix):
            self.fail((*path, "prefix"), f'"{raw.prefix}": expected "/" and a path, e.g. "/pyscst"')
        return ClusterSettings(tuple(raw.etcd), raw.node, raw.lease_ttl, raw.prefix)

    def allowed_dirs(self, path: KeyPath, values: list[str]) -> tuple[Path, ...]:
        out: list[Path] = []
        for i, value in enumerate(values):
            if not value.strip():
                self.fail((*path, i), "empty path")
                continue
            resolved = _absolute(self.base_dir, value)
            if resolved not in out:
                out.append(resolved)
        return tuple(out)

    def metrics(self, path: KeyPath, raw: RawMetrics) -> MetricsSettings:
        if raw.listen is None:
            return MetricsSettings()
        listen = self.check((*path, "listen"), partial(parse_portal, raw.listen))
        if listen is not None and not re.search(r":[0-9]+$", raw.listen.strip()):
            self.fail((*path, "listen"), f'"{raw.listen}": give the port, e.g. "127.0.0.1:9119"')
            listen = None
        return MetricsSettings(listen=listen)

    def iscsi(self, path: KeyPath, raw: RawIscsi) -> IscsiSettings:
        ranges: dict[str, tuple[float, float]] = {
            "max_recv_data_segment_length": (512, MAX_DATA_SEGMENT),
            "max_burst_length": (512, MAX_DATA_SEGMENT),
            "first_burst_length": (512, MAX_DATA_SEGMENT),
            "max_outstanding_r2t": (1, 65535),
            "max_connections": (1, 65535),
            "default_time2wait": (0, 3600),
            "default_time2retain": (0, 3600),
            "queue_depth": (1, 65536),
            "nop_interval": (0, 3600),
            "nop_timeout": (1, 3600),
            "poll_us": (0, 1000),
            "login_timeout": (1, 3600),
            "pdu_timeout": (1, 3600),
            "max_prelogin_connections": (1, 65535),
            "max_prelogin_per_address": (1, 65535),
        }
        for key, (low, high) in ranges.items():
            error = _in_range(getattr(raw, key), low, high)
            if error:
                self.fail((*path, key), error)
        if raw.first_burst_length > raw.max_burst_length:
            self.fail(
                (*path, "first_burst_length"),
                f"{raw.first_burst_length} exceeds max_burst_length {raw.max_burst_length}",
            )
        return IscsiSettings(
            max_recv_data_segment_length=raw.max_recv_data_segment_length,
            max_burst_length=raw.max_burst_length,
            first_burst_length=raw.first_burst_length,
            initial_r2t=raw.initial_r2t,
            immediate_data=raw.immediate_data,
            max_outstanding_r2t=raw.max_outstanding_r2t,
            max_connections=raw.max_connections,
            default_time2wait=raw.default_time2wait,
            default_time2retain=raw.default_time2retain,
            header_digest=self.digests((*path, "header_digest"), raw.header_digest),
            data_digest=self.digests((*path, "data_digest"), raw.data_digest),
            queue_depth=raw.queue_depth,
            nop_interval=float(raw.nop_interval),
            nop_timeout=float(raw.nop_timeout),
            poll_us=raw.poll_us,
            login_timeout=float(raw.login_timeout),
            pdu_timeout=float(raw.pdu_timeout),
            max_prelogin_connections=raw.max_prelogin_connections,
            max_prelogin_per_address=raw.max_prelogin_per_address,
        )

    def digests(self, path: KeyPath, values: list[str]) -> tuple[Digest, ...]:
        if not values:
            self.fail(path, 'empty list (use ["None"] to refuse digests)')
        out: list[Digest] = []
        by_name = {d.value.lower(): d for d in Digest}
        for i, value in enumerate(values):
            digest = by_name.get(value.lower())
            if digest is None:
                self.fail((*path, i), f'expected "None" or "CRC32C", got "{value}"')
            elif digest in out:
                self.fail((*path, i), f'"{value}" listed twice')
            else:
                out.append(digest)
        return tuple(out)

    def device(
        self, path: KeyPath, name: str, raw: RawDevice, state_dir: Path
    ) -> DeviceConfig | None:
        before = len(self.problems)
        if _NAME_RE.match(name) is None:
            self.fail(path, "device names are 1-64 of A-Z a-z 0-9 _ . - (not starting with . _ -)")
        handler = HANDLERS.get(raw.handler)
        if handler is None:
            names = list(HANDLERS)
            close = difflib.get_close_matches(raw.handler, names, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else f" (one of {', '.join(names)})"
            self.fail((*path, "handler"), f'unknown handler "{raw.handler}"{hint}')
        sizes = handler.block_sizes if handler is not None else BLOCK_SIZES
        block_size = raw.block_size if raw.block_size is not None else sizes[0]
        if block_size not in sizes:
            self.fail(
                (*path, "block_size"),
                f"expected {' or '.join(map(str, sizes))}, got {block_size}",
            )
        physical = raw.physical_block_size or 0
        if raw.physical_block_size is not None and block_size in sizes:
            ratio = physical // block_size
            if physical % block_size or ratio & (ratio - 1) or not 1 <= ratio <= 2**15:
                self.fail(
                    (*path, "physical_block_size"),
                    f"expected block_size ({block_size}) times a power of two, "
                    f"got {raw.physical_block_size}",
                )
        size: int | None = 0
        if handler is not None and handler.path is PathRule.BACKEND:
            if raw.size is not None:
                self.fail((*path, "size"), f"{handler.name} takes its size from its backend; "
                          "remove size")
            if raw.path is not None:
                self.fail((*path, "path"), f"{handler.name} has no backing file; "
                          "name the device in backend")
        elif handler is not None and handler.path in (PathRule.IMAGE, PathRule.DIRECTORY):
            if raw.size is not None:
                self.fail((*path, "size"), f"{handler.name} takes its size from the image; "
                          "remove size")
        elif raw.size is None:
            self.fail((*path, "size"), "required key missing")
        else:
            written_size = raw.size
            size = self.check((*path, "size"), lambda: parse_size(written_size))
            if size is not None and block_size in sizes and size % block_size:
                self.fail(
                    (*path, "size"),
                    f"{size} bytes is not a multiple of block_size {block_size}",
                )
        file: Path | None = None
        if handler is not None and handler.path is PathRule.NONE and raw.path is not None:
            self.fail((*path, "path"), f"{handler.name} has no backing file; remove path")
        elif handler is not None and handler.path is PathRule.IMAGE:
            if raw.path is not None and raw.path.strip():  # empty: an empty drive
                file = _absolute(state_dir, raw.path)
                if outside_roots(file, self.roots):
                    self.fail((*path, "path"), outside_message(raw.path, file, self.roots))
        elif handler is not None and handler.path is PathRule.DIRECTORY:
            written = raw.path if raw.path is not None and raw.path.strip() else name
            file = _absolute(state_dir, written)
            if outside_roots(file, self.roots):
                self.fail((*path, "path"), outside_message(written, file, self.roots))
        elif handler is not None and handler.path is PathRule.FILE:
            if raw.path is not None and not raw.path.strip():
                self.fail((*path, "path"), "empty path")
            written = raw.path if raw.path is not None else f"{name}.img"
            file = _absolute(state_dir, written)
            if outside_roots(file, self.roots):
                self.fail((*path, "path"), outside_message(written, file, self.roots))
        serial = raw.serial if raw.serial is not None else default_serial(name)
        if not 1 <= len(serial) <= 32 or not all(0x21 <= ord(c) <= 0x7E for c in serial):
            self.fail((*path, "serial"), "expected 1-32 printable ASCII characters, no spaces")
        for key, (low, high) in {"max_restarts": (0, 1000), "restart_period": (1, 86400)}.items():
            error = _in_range(getattr(raw, key), low, high)
            if error:
                self.fail((*path, key), error)
        if raw.io_engine not in IO_ENGINES:
            self.fail(
                (*path, "io_engine"),
                f'expected one of {", ".join(IO_ENGINES)}, got "{raw.io_engine}"',
            )
        library = None
        if handler is not None and handler.path is PathRule.DIRECTORY:
            if raw.library is None:
                self.fail((*path, "library"), f"required for {handler.name}: drives, slots, "
                          "mail_slots, cartridges")  # fmt: skip
            else:
                library = self.library((*path, "library"), name, raw.library, state_dir)
        elif raw.library is not None:
            self.fail((*path, "library"), "only vchanger devices have a library")
        backend = resolve_backend(path, raw, handler, self.state_dir, self.roots, self.fail)
        if len(self.problems) > before or handler is None or size is None:
            return None
        return DeviceConfig(
            name=name,
            handler=handler.name,
            size=size,
            block_size=block_size,
            path=file,
            read_only=raw.read_only or not handler.writable,
            write_cache=raw.write_cache,
            serial=serial,
            rotational=raw.rotational,
            removable=raw.removable,
            physical_block_size=physical,
            max_restarts=raw.max_restarts,
            restart_period=float(raw.restart_period),
            io_engine=raw.io_engine,
            library=library,
            backend=backend,
        )

    def library(
        self, path: KeyPath, name: str, raw: RawLibrary, state_dir: Path
    ) -> LibrarySettings | None:
        """A vchanger's ``library`` table (its drives are checked against the
        other devices in :meth:`library_drives`, once all are known)."""
        before = len(self.problems)
        cartridges = []
        seen: dict[str, int] = {}
        slots_taken: dict[int, int] = {}
        for i, rc in enumerate(raw.cartridges):
            where = (*path, "cartridges", i)
            self.check((*where, "barcode"), partial(check_barcode, rc.barcode))
            if rc.barcode in seen:
                first = seen[rc.barcode]
                self.fail((*where, "barcode"), f'"{rc.barcode}" is also cartridges[{first}]')
            seen.setdefault(rc.barcode, i)
            capacity = self.check((*where, "capacity"), partial(parse_size, rc.capacity))
            if capacity is not None and capacity < MIN_CAPACITY:
                self.fail((*where, "capacity"), f"at least 1MiB, got {capacity}")
            if rc.slot is not None:
                if not 1 <= rc.slot <= raw.slots:
                    self.fail((*where, "slot"), f"expected 1..{raw.slots} (slots), got {rc.slot}")
                elif rc.slot in slots_taken:
                    self.fail((*where, "slot"), f"slot {rc.slot} is also cartridges"
                              f"[{slots_taken[rc.slot]}]'s")  # fmt: skip
                slots_taken.setdefault(rc.slot, i)
            if capacity is not None:
                cartridges.append(CartridgeSpec(rc.barcode, capacity, rc.worm, rc.slot))
        if len(raw.cartridges) > raw.slots:
            self.fail((*path, "cartridges"), f"{len(raw.cartridges)} cartridges, "
                      f"{raw.slots} slots")  # fmt: skip
        for i, drive in enumerate(raw.drives):
            if drive in raw.drives[:i]:
                self.fail((*path, "drives", i), f'"{drive}" listed twice')
        layout = None
        try:
            layout = LibraryLayout(tuple(dict.fromkeys(raw.drives)), raw.slots, raw.mail_slots)
        except ValueError as exc:
            key = str(exc).split(":", 1)[0]
            self.fail((*path, key if key in ("slots", "mail_slots", "drives") else "drives"),
                      str(exc).split(": ", 1)[-1])  # fmt: skip
        if len(self.problems) > before or layout is None:
            return None
        return LibrarySettings(layout, state_dir / "library" / f"{name}.json", tuple(cartridges))

    def library_drives(self, devices: Iterable[DeviceConfig], raw: RawConfig) -> None:
        """Every library drive is a vtape device of this file, in one library only."""
        handlers = {name: d.handler for name, d in raw.devices.items()}
        owner: dict[str, str] = {}
        for d in devices:
            if d.library is None:
                continue
            for i, drive in enumerate(d.library.layout.drives):
                where = ("devices", d.name, "library", "drives", i)
                if drive not in handlers:
                    self.fail(where, f'no device named "{drive}"')
                elif handlers[drive] != "vtape":
                    self.fail(where, f'"{drive}" is a {handlers[drive]} device, not vtape')
                elif drive in owner:
                    self.fail(where, f'"{drive}" is also a drive of library "{owner[drive]}"')
                elif raw.devices[drive].path:
                    self.fail(("devices", drive, "path"), f'"{drive}" is a drive of library '
                              f'"{d.name}", whose changer loads it; remove path')  # fmt: skip
                owner.setdefault(drive, d.name)

    def lun_map(
        self, path: KeyPath, raw: list[RawLun], devices: set[str]
    ) -> tuple[LunMapping, ...]:
        seen: dict[int, int] = {}
        out: list[LunMapping] = []
        for i, entry in enumerate(raw):
            where = (*path, i)
            if not 0 <= entry.lun <= MAX_LUN:
                self.fail((*where, "lun"), f"expected 0..{MAX_LUN}, got {entry.lun}")
            elif entry.lun in seen:
                self.fail(
                    (*where, "lun"), f"LUN {entry.lun} already mapped at index {seen[entry.lun]}"
                )
            else:
                seen[entry.lun] = i
            if entry.device not in devices:
                self.fail((*where, "device"), f'no device named "{entry.device}"')
            out.append(LunMapping(lun=entry.lun, device=entry.device, read_only=entry.read_only))
        return tuple(out)

    def group(
        self, path: KeyPath, name: str, raw: RawGroup, devices: set[str]
    ) -> InitiatorGroup:
        if _NAME_RE.match(name) is None:
            self.fail(path, "group names are 1-64 of A-Z a-z 0-9 _ . - (not starting with . _ -)")
        if not raw.initiators:
            self.fail((*path, "initiators"), "empty list: the group would match no initiator")
        for i, pattern in enumerate(raw.initiators):
            self.check((*path, "initiators", i), partial(check_initiator_pattern, pattern))
        return InitiatorGroup(
            name=name,
            initiators=tuple(raw.initiators),
            luns=self.lun_map((*path, "luns"), raw.luns, devices),
        )

    def target(
        self, path: KeyPath, name: str, raw: RawTarget, devices: set[str]
    ) -> TargetConfig | None:
        before = len(self.problems)
        self.check(path, lambda: check_iscsi_name(name))
        if not raw.portals:
            self.fail((*path, "portals"), "empty list: the target would be unreachable")
        portals: list[Portal] = []
        for i, text in enumerate(raw.portals):
            portal = self.check((*path, "portals", i), partial(parse_portal, text))
            if portal is not None:
                if portal in portals:
                    self.fail((*path, "portals", i), f"{portal} listed twice")
                else:
                    portals.append(portal)
        if raw.alias is not None and not 1 <= len(raw.alias.encode()) <= 255:
            self.fail((*path, "alias"), "expected 1-255 bytes")
        luns = self.lun_map((*path, "luns"), raw.luns, devices)
        groups = tuple(
            self.group((*path, "groups", g), g, raw_g, devices) for g, raw_g in raw.groups.items()
        )
        owner: dict[str, str] = {}
        for group in groups:
            for i, pattern in enumerate(group.initiators):
                key = pattern.lower()
                if is_glob(pattern):
                    continue
                if key in owner and owner[key] != group.name:
                    self.fail(
                        (*path, "groups", group.name, "initiators", i),
                        f'"{pattern}" is already in group "{owner[key]}"',
                    )
                owner.setdefault(key, group.name)
        auth = AuthConfig()
        if raw.auth is not None:
            auth = resolve_auth((*path, "auth"), raw.auth, self.state_dir, self.problems)
        port_groups = self.port_groups(path, raw, portals)
        if len(self.problems) > before:
            return None
        return TargetConfig(
            name=name, portals=tuple(portals), luns=luns, groups=groups, alias=raw.alias,
            auth=auth, port_groups=port_groups, alua_explicit=raw.alua_explicit,
            alua_transition_time=raw.alua_transition_time,
        )  # fmt: skip

    def port_groups(
        self, path: KeyPath, raw: RawTarget, portals: list[Portal]
    ) -> tuple[PortGroupConfig, ...]:
        """ALUA target port groups: unique ids and ports, each of the target's
        portals in exactly one group (a group may have none: its ports are on
        another node)."""
        error = _in_range(raw.alua_transition_time, 0, 255)
        if error:
            self.fail((*path, "alua_transition_time"), error)
        out: list[PortGroupConfig] = []
        owner: dict[Portal, str] = {}
        ids: dict[int, str] = {}
        ports: dict[int, str] = {}
        for name, rg in raw.port_groups.items():
            group = self.port_group((*path, "port_groups", name), name, rg, portals, owner)
            if group is None:
                continue
            where = (*path, "port_groups", name)
            if group.group_id in ids:
                self.fail((*where, "id"), f'id {group.group_id} is already port group '
                                          f'"{ids[group.group_id]}"')  # fmt: skip
            ids.setdefault(group.group_id, name)
            if group.relative_port in ports:
                key = "relative_port" if rg.relative_port is not None else "id"
                self.fail((*where, key), f"relative port {group.relative_port} is already "
                                         f'port group "{ports[group.relative_port]}"\'s')
            ports.setdefault(group.relative_port, name)
            out.append(group)
        if raw.port_groups:
            for i, portal in enumerate(portals):
                if portal not in owner:
                    self.fail((*path, "portals", i), f"{portal} is in no port group (with "
                                                     "port_groups, every portal is in one)")
        return tuple(out)

    def port_group(
        self, path: KeyPath, name: str, raw: RawPortGroup, portals: list[Portal],
        owner: dict[Portal, str],
    ) -> PortGroupConfig | None:  # fmt: skip
        before = len(self.problems)
        if _NAME_RE.match(name) is None:
            self.fail(path, "port group names are 1-64 of A-Z a-z 0-9 _ . - "
                            "(not starting with . _ -)")  # fmt: skip
        error = _in_range(raw.id, 1, 65535)
        if error:
            self.fail((*path, "id"), error)
        relative = raw.relative_port if raw.relative_port is not None else raw.id
        if raw.relative_port is not None:
            error = _in_range(raw.relative_port, 1, 65535)
            if error:
                self.fail((*path, "relative_port"), error)
        state = self.check((*path, "state"), partial(AccessState.parse, raw.state))
        if state is AccessState.TRANSITIONING:
            self.fail((*path, "state"), "a group passes through transitioning, it does "
                                        "not start there")  # fmt: skip
        members: list[Portal] = []
        for i, text in enumerate(raw.portals):
            portal = self.check((*path, "portals", i), partial(parse_portal, text))
            if portal is None:
                continue
            if portal not in portals:
                self.fail((*path, "portals", i), f"{portal} is not one of the target's portals")
            elif portal in owner:
                self.fail((*path, "portals", i), f'{portal} is already in port group '
                                                 f'"{owner[portal]}"')  # fmt: skip
            else:
                owner[portal] = name
                members.append(portal)
        if len(self.problems) > before or state is None:
            return None
        return PortGroupConfig(
            name=name, group_id=raw.id, portals=tuple(members), state=state,
            relative_port=relative, preferred=raw.preferred,
        )  # fmt: skip


def _absolute(base: Path, path: str) -> Path:
    """``path`` made absolute against ``base`` (``~`` expanded), normalised lexically."""
    return lexical(base, path)


def outside_message(written: str, resolved: Path, roots: Iterable[Path]) -> str:
    """Why a path is refused: what was written, where it leads, where it may be."""
    where = "" if written == str(resolved) else f" (= {resolved})"
    dirs = ", ".join(str(r) for r in roots)
    return f'"{written}"{where} is outside state_dir and allowed_dirs ({dirs})'


def check_group(name: str) -> None:
    """``control_group`` must name a group of this system (ValueError if not)."""
    if not name:
        raise ValueError("empty group name")
    try:
        grp.getgrnam(name)
    except KeyError:
        raise ValueError(f'no group named "{name}" on this system') from None
