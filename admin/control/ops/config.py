"""``config.save`` and ``config.reload``: the TOML file as the saved truth.

Save writes the running model over the daemon's config file (or another
path below the config file's directory, ``state_dir`` or ``allowed_dirs``: the
daemon is usually root, so a control-socket user must not pick any file to
overwrite; no symlink below those is followed, see devices.confine), as an
edit of that file so comments and order survive (:mod:`pyscst.admin.config.edit`);
it writes a temporary file and renames it, so a crash never leaves half a
config. Reload reads the file, validates it like a start would, and applies
only the difference through :mod:`pyscst.admin.control.reconcile`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from pyscst.admin.config import edit as config_edit
from pyscst.admin.config.files import Config, ConfigError, load_config
from pyscst.admin.control.server import OpHandler
from pyscst.admin.control.ops.args import Args
from pyscst.admin.control.protocol import ErrorCode, OpError
from pyscst.devices.confine import lexical, outside_roots, write_beneath

if TYPE_CHECKING:
    from pyscst.admin.control.operations import Controller


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
        model = daemon.config
        roots = save_roots(model, source)
        if path_arg:  # relative to the config file's directory (else state_dir)
            target = lexical(source.parent if source is not None else model.state_dir, path_arg)
            if outside_roots(target, roots):
                raise OpError(ErrorCode.INVALID, save_refusal(path_arg, target, roots), "args.path")
        else:
            assert source is not None
            target = source
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
                await trio.to_thread.run_sync(_write_atomically, target, text, roots)
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


def save_roots(model: Config, source: Path | None) -> tuple[Path, ...]:
    """Where ``config.save`` may write: the config file's directory, state_dir, allowed_dirs."""
    return (*((source.parent,) if source is not None else ()), *model.confined_roots)


def save_refusal(written: str, target: Path, roots: tuple[Path, ...]) -> str:
    where = "" if written == str(target) else f" (= {target})"
    dirs = ", ".join(str(r) for r in roots)
    return (
        f'"{written}"{where} is outside the config file\'s directory, state_dir and '
        f"allowed_dirs ({dirs})"
    )


def _write_atomically(path: Path, text: str, roots: tuple[Path, ...]) -> None:
    write_beneath(path, roots, text.encode("utf-8"), keep_mode=True)
