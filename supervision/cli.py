"""The ``pyscst`` command: one entry point, one subcommand per job.

``serve`` runs the daemon in the foreground; ``check-config`` validates a file
without touching anything. Later jobs (console, admin, bench) add a
subcommand in :func:`build_parser`. Exit codes: 0 success or clean stop,
1 runtime failure (e.g. a busy port), 2 bad usage or bad configuration.
It lives with the daemon, above the admin plane, because ``serve`` runs the daemon.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from functools import partial
from importlib import metadata
from pathlib import Path

import trio

from pyscst.admin.client.cli import add_admin_parser
from pyscst.admin.config.files import Config, ConfigError, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # also: the configuration is invalid
EXIT_INTERRUPTED = 130

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

log = logging.getLogger("pyscst")

#: A subcommand implementation: parsed arguments in, exit code out.
Command = Callable[[argparse.Namespace], int]


def _version() -> str:
    try:
        return metadata.version("pyscst")
    except metadata.PackageNotFoundError:
        return "unknown"


def _fail(message: str, code: int) -> int:
    print(f"pyscst: {message}", file=sys.stderr)
    return code


def _load(path: str) -> Config | int:
    try:
        return load_config(path)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)


def setup_logging(level: int) -> None:
    """Log to stderr with timestamps; replaces any earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def cmd_serve(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if isinstance(loaded, int):
        return loaded
    config = loaded
    setup_logging(logging.DEBUG if args.verbose else config.log_level.as_logging_level)
    try:
        from pyscst.supervision.daemon import StartupError, serve
        from pyscst.supervision.malloc_tuning import tune_malloc
    except ImportError as exc:
        return _fail(f"the daemon is not available: {exc}", EXIT_FAILURE)
    tune_malloc()  # this process is the daemon: its allocator serves the datapath
    log.info(
        "starting pyscst %s: %d device(s), %d target(s), state in %s",
        _version(), len(config.devices), len(config.targets), config.state_dir,
    )
    from pyscst.devices.registry import PLUGIN_NOTES

    for level, note in PLUGIN_NOTES:  # handler plugins loaded or skipped
        log.log(level, "%s", note)
    try:
        trio.run(partial(serve, config, config_path=Path(args.config).absolute()))
    except BaseException as exc:  # sorted below; anything else is re-raised
        startup = _first(exc, StartupError)
        if startup is not None:
            return _fail(f"cannot start: {startup}", EXIT_FAILURE)
        if _first(exc, KeyboardInterrupt) is not None:
            return _fail("interrupted", EXIT_INTERRUPTED)
        raise
    log.info("stopped")
    return EXIT_OK


def _first(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` itself or the first ``kind`` inside (nurseries wrap errors in groups)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _first(sub, kind)
            if found is not None:
                return found
    return None


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = _load(args.path)
    if isinstance(loaded, int):
        return loaded
    print(f"ok: {len(loaded.devices)} devices, {len(loaded.targets)} targets")
    return EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    from pyscst.admin.client.console.app import (
        cmd_console as run,  # prompt_toolkit loads in ~0.5 s: only here
    )

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyscst", description="A SCSI target middle level exporting disks over iSCSI."
    )
    parser.add_argument("--version", action="version", version=f"pyscst {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the target daemon in the foreground")
    serve.add_argument("--config", "-c", required=True, metavar="PATH", help="TOML config file")
    serve.add_argument(
        "--verbose", "-v", action="store_true", help="log at debug level (overrides log_level)"
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path", metavar="PATH", help="TOML config file")
    check.set_defaults(func=cmd_check_config)

    shell = sub.add_parser("console", help="interactive shell on a running daemon")
    where = shell.add_mutually_exclusive_group()
    where.add_argument("--socket", "-s", metavar="PATH", help="the daemon's control socket")
    where.add_argument(
        "--config", "-c", metavar="PATH", help="config file: use its control_socket"
    )
    shell.set_defaults(func=cmd_console)

    add_admin_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
