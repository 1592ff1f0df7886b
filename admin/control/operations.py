"""The control plane's operations: each op validated, then applied live.

:class:`Controller` builds the op table the control endpoint serves (op name
-> async handler). Configuration edits change a copy of the running model's
document (``pyscst.admin.control.ops.edit``), which is validated exactly like a config file,
checked against live sessions (losing a LUN in use needs ``force``) and then
applied by :mod:`pyscst.admin.control.reconcile`. One lock serialises edits, so two operators
never interleave half-applied changes. Runtime ops (sessions, resets,
statistics) are in ``pyscst.admin.control.ops.runtime``; saving and reloading the file in
``pyscst.admin.control.ops.config``.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import tomli_w
import trio

from pyscst.admin.config.files import Config, ConfigError, dump_config, parse_config
from pyscst.admin.control import reconcile
from pyscst.admin.control.ops import alua as ops_alua
from pyscst.admin.control.ops import auth as ops_auth
from pyscst.admin.control.ops import config as ops_config
from pyscst.admin.control.ops import edit as ops_edit
from pyscst.admin.control.ops import runtime as ops_runtime
from pyscst.admin.control.ops.args import Args
from pyscst.admin.control.protocol import VERSION, ErrorCode, OpError
from pyscst.admin.control.server import OpHandler

if sys.version_info >= (3, 11):  # noqa: UP036 - matches admin.config.files
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from pyscst.admin.control.daemon_api import DaemonApi as Daemon

log = logging.getLogger(__name__)


def config_document(config: Config) -> dict[str, Any]:
    """The running model as the plain TOML document a file would hold."""
    return tomllib.loads(dump_config(config))


def validate_document(doc: Mapping[str, Any], config: Config) -> Config:
    """The model ``doc`` stands for, checked like a file; OpError ``invalid`` if not."""
    try:
        return parse_config(tomli_w.dumps(dict(doc)), config.state_dir)
    except ConfigError as exc:
        first = exc.problems[0]
        path = getattr(first, "path", None)
        where = ".".join(str(p) for p in path) if path else None
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise OpError(ErrorCode.INVALID, f"{first}{more}", where) from None
    except (TypeError, ValueError) as exc:  # e.g. a value TOML cannot hold
        raise OpError(ErrorCode.INVALID, f"not a valid configuration value: {exc}") from None


def _version() -> str:
    try:
        return metadata.version("pyscst")
    except metadata.PackageNotFoundError:
        return "unknown"


class Controller:
    """Applies admin operations to one running daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.lock = trio.Lock()

    def operations(self) -> dict[str, OpHandler]:
        ops: dict[str, OpHandler] = {"hello": self.hello}
        edits: dict[str, Callable[[ops_edit.Doc, Args], str]] = {
            "device.add": ops_edit.device_add,
            "device.remove": ops_edit.device_remove,
            "device.resize": ops_edit.device_resize,
            "device.set": ops_edit.device_set,
            "target.add": functools.partial(ops_edit.target_add, default_portals=[]),
            "target.remove": ops_edit.target_remove,
            "portal.add": ops_edit.portal_add,
            "portal.remove": ops_edit.portal_remove,
            "group.add": ops_edit.group_add,
            "group.remove": ops_edit.group_remove,
            "initiator.add": ops_edit.initiator_add,
            "initiator.remove": ops_edit.initiator_remove,
            "lun.add": ops_edit.lun_add,
            "lun.remove": ops_edit.lun_remove,
            "lun.set": ops_edit.lun_set,
            "auth.chap_add": ops_auth.chap_add,
            "auth.chap_remove": ops_auth.chap_remove,
            "auth.mutual_set": ops_auth.mutual_set,
            "auth.mutual_clear": ops_auth.mutual_clear,
            "auth.initiators_set": ops_auth.initiators_set,
        }
        for name, edit in edits.items():
            ops[name] = functools.partial(self.edit, name, edit)
        ops.update(ops_runtime.operations(self))
        ops.update(ops_alua.operations(self))
        ops.update(ops_config.operations(self))
        return ops

    async def hello(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"version": VERSION, "pyscst": _version(), "ops": sorted(self.daemon.control_ops)}

    async def edit(
        self, op: str, edit: Callable[[ops_edit.Doc, Args], str], args: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One configuration edit: change a copy, validate, check, apply."""
        a = Args(op, args)
        async with self.lock:
            old = self.daemon.config
            doc = config_document(old)
            if op == "target.add":
                edit = functools.partial(ops_edit.target_add, default_portals=self._listening())
            # any edit may take away a LUN a session sees (a group that now
            # matches it, a pattern added): each accepts force, checked in apply
            force = a.flag("force")
            # device.add: an existing backing file smaller than the size is
            # extended only when asked (--grow), never silently
            grow = a.flag("grow") if op == "device.add" else False
            message = edit(doc, a)
            new = validate_document(doc, old)
            summary = await self.apply(new, force, grow=grow)
        log.info("admin: %s", message)
        return {"message": message, "changes": summary}

    def _listening(self) -> list[str]:
        seen: list[str] = []
        for target in self.daemon.config.targets:
            for portal in target.portals:
                if str(portal) not in seen:
                    seen.append(str(portal))
        return seen

    async def apply(self, new: Config, force: bool, grow: bool = True) -> dict[str, Any]:
        """Make the running tree match ``new`` (call with the lock held)."""
        p = reconcile.plan(self.daemon, self.daemon.config, new)
        reconcile.check_in_use(p, force)
        await reconcile.apply(self.daemon, p, new, grow=grow)
        if p.restart_required:
            log.warning(
                "changed %s: takes effect when the daemon restarts", ", ".join(p.restart_required)
            )
        return p.summary()
