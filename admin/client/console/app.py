"""``pyscst console``: an interactive shell over the daemon's control socket.

A prompt_toolkit prompt with history, tab completion and colours in front of
:class:`~admin.client.console.shell.Shell`, which does the actual work. When stdin is
not a terminal the same shell reads commands line by line (``pyscst console
< script``) and exits non-zero if any of them failed, so a console session can
be replayed. The socket comes from ``--socket`` or from a config file's
``control_socket``; history lives in ``<state_dir>/.console_history`` when a
config is given, else in ``~/.pyscst_history``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output

from pyscst.admin.client.console.backend import Backend, BackendError, ClientBackend
from pyscst.admin.client.console.complete import ConsoleCompleter
from pyscst.admin.client.console.render import STYLE, Fragments, error, plain
from pyscst.admin.client.console.shell import Shell

EXIT_OK = 0
EXIT_FAILED = 1  # script mode: at least one command failed
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
HISTORY_NAME = ".console_history"
DEFAULT_SOCKET = "pyscst.sock"  # the config defaults: state_dir ".", control_socket here


def greeting(backend: Backend, where: str) -> Fragments:
    """One line naming the daemon; BackendError if it does not answer."""
    hello = backend.call("hello")
    version = hello.get("pyscst", "?") if isinstance(hello, dict) else "?"
    return [
        ("class:ok", f"connected to pyscst {version}"),
        ("class:dim", f" at {where}. Tab completes, help lists the commands, Ctrl-D leaves.\n"),
    ]


def interactive(
    shell: Shell,
    history: History,
    *,
    input: Input | None = None,
    output: Output | None = None,
) -> int:
    """The read-eval-print loop; returns when the user leaves (exit, quit, Ctrl-D)."""
    session: PromptSession[str] = PromptSession(
        history=history,
        completer=ConsoleCompleter(shell),
        complete_while_typing=False,
        style=STYLE,
        input=input,
        output=output,
    )
    while True:
        try:
            text = session.prompt(shell.prompt)
        except KeyboardInterrupt:
            continue  # Ctrl-C drops the line, as in a shell
        except EOFError:
            break
        outcome = shell.run_line(text)
        if outcome.output:
            emit(outcome.output, output)
        if outcome.exit:
            break
    return EXIT_OK


def emit(fragments: Fragments, output: Output | None = None) -> None:
    print_formatted_text(FormattedText(fragments), style=STYLE, output=output, end="")


def script(shell: Shell, lines: TextIO, out: TextIO, err: TextIO) -> int:
    """Commands from a file or pipe, plain text out (errors to ``err``); 1 if any failed."""
    status = EXIT_OK
    for text in lines:
        outcome = shell.run_line(text.rstrip("\n"))
        if outcome.output:
            stream = out if outcome.ok else err
            stream.write(plain(outcome.output))
            stream.flush()
        if not outcome.ok:
            status = EXIT_FAILED
        if outcome.exit:
            break
    return status


def open_history(state_dir: Path | None) -> History:
    """File history in the state dir (or home); in memory if neither is writable."""
    candidates = [state_dir / HISTORY_NAME] if state_dir else []
    candidates.append(Path.home() / ".pyscst_history")
    for path in candidates:
        try:
            path.touch(mode=0o600, exist_ok=True)
        except OSError:
            continue
        return FileHistory(str(path))
    return InMemoryHistory()


def socket_and_state(args: argparse.Namespace) -> tuple[str, Path | None] | str:
    """The control socket to use and the state dir, or a message saying what is wrong."""
    if args.socket:
        return args.socket, None
    if args.config:
        from pyscst.admin.config.files import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            return str(exc)
        return str(config.control_socket), config.state_dir
    return DEFAULT_SOCKET, None


def cmd_console(args: argparse.Namespace) -> int:
    """The ``pyscst console`` subcommand."""
    found = socket_and_state(args)
    if isinstance(found, str):
        print(f"pyscst console: {found}", file=sys.stderr)
        return EXIT_USAGE
    socket_path, state_dir = found
    backend = ClientBackend(socket_path)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        hello = greeting(backend, socket_path)
    except BackendError as exc:
        if tty:
            emit(error(exc.message))
        else:
            print(f"pyscst console: {exc.message}", file=sys.stderr)
        # a daemon that refused us (SO_PEERCRED) answered: that is a refusal, not absence
        return EXIT_FAILED if str(exc.code) == "forbidden" else EXIT_UNREACHABLE
    shell = Shell(backend)
    try:
        if not tty:
            return script(shell, sys.stdin, sys.stdout, sys.stderr)
        emit(hello)
        return interactive(shell, open_history(state_dir))
    finally:
        backend.close()


__all__ = ["cmd_console", "interactive", "script"]
