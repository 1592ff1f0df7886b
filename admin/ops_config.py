"""``config.save`` and ``config.reload``: the TOML file as the saved truth.

Save writes the running model over the daemon's config file (or another
path), as an edit of that file so comments and order survive
(:mod:`admin.config_edit`); it writes a temporary file and renames it, so a
crash never leaves half a config. Reload reads the file, validates it like a
start would, and applies only the difference through :mod:`admin.reconcile`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from admin import config_edit
from admin.config import ConfigError, load_config
from admin.control import OpHandler
from admin.ops_args import Args
from admin.protocol import ErrorCode, OpError

if TYPE_CHECKING:
    from admin.operations import Controller


def operations(controller: Controller) -> dict[str, OpHandler]:
    daemon = controller.daemon

    async def save(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("config.save", args)
        path_arg = a.opt_text("path")
        a.done()
        source = daemon.config_path
        if path_arg is None and source is None:
            raise OpError(
                ErrorCode.INVALID,
                "the daemon was not started from a file: give a path to save to",
                "args.path",
            )
        target = Path(path_arg).expanduser().absolute() if path_arg else source
        assert target is not None
        async with controller.lock:
            model = daemon.config
            original: str | None = None
            if source is not None:
                try:
                    original = await trio.Path(source).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    original = None
            try:
                text = config_edit.render(
                    model,
                    original,
                    source.parent if source is not None else None,
                    target.parent,
                )
            except ConfigError:  # the file on disk no longer parses: write it afresh
                text = config_edit.render(model)
            try:
                await trio.to_thread.run_sync(_write_atomically, target, text)
            except OSError as exc:
                raise OpError(
                    ErrorCode.INVALID, f"cannot write {target}: {exc.strerror or exc}", "args.path"
                ) from None
        return {"path": str(target)}

    async def reload(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("config.reload", args)
        force = a.flag("force")
        a.done()
        source = daemon.config_path
        if source is None:
            raise OpError(ErrorCode.UNSUPPORTED, "the daemon was not started from a file")
        try:
            new = await trio.to_thread.run_sync(load_config, source)
        except ConfigError as exc:
            raise OpError(ErrorCode.INVALID, str(exc), str(source)) from None
        async with controller.lock:
            summary = await controller.apply(new, force)
        return {"path": str(source), "changes": summary}

    return {"config.save": save, "config.reload": reload}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
