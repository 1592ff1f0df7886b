"""The console's state and its one entry point: a typed line in, formatted text out.

:class:`Shell` owns the current directory and a cached copy of the daemon's
tree (fetched again after every command that changed something, so ``ls``
and tab completion always show the live state). ``run_line`` is the only
place that catches errors: a bad command line, a path that names nothing and
a refusal from the daemon all come back as one red ``error:`` line naming
what was wrong and where, and even a bug in the console itself becomes a
message, never a traceback that ends the session.
"""

from __future__ import annotations

import logging
import shlex
from typing import Any

import attrs

from pyscst.admin.client.console.attrs import UsageError
from pyscst.admin.client.console.backend import Backend, BackendError
from pyscst.admin.client.console.commands import ExitRequest, Invocation, find_command
from pyscst.admin.client.console.model import (
    Node,
    Path,
    PathError,
    build_tree,
    format_path,
    resolve,
    split_path,
)
from pyscst.admin.client.console.render import Fragments, error

log = logging.getLogger(__name__)

#: ops that only read; anything else may change the tree
READ_ONLY_OPS = frozenset({"hello", "tree", "session.list", "stats", "fault.list", "fault.stats"})


@attrs.frozen
class Outcome:
    """What one line produced: text to print, success, and whether to stop."""

    output: Fragments
    ok: bool = True
    exit: bool = False


class Shell:
    """Current directory + tree cache + command dispatch over one backend."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._cwd: Path = ()
        self._raw: Any = None
        self._tree: Node | None = None

    # -- what commands and the completer use ---------------------------------------

    @property
    def cwd(self) -> Path:
        return self._cwd

    def call(self, op: str, **args: Any) -> Any:
        try:
            return self._backend.call(op, **args)
        finally:
            if op not in READ_ONLY_OPS:
                self.invalidate()

    def raw_tree(self) -> Any:
        if self._tree is None:
            self._raw = self._backend.call("tree")
            self._tree = build_tree(self._raw)
        return self._raw

    def tree(self) -> Node:
        self.raw_tree()
        assert self._tree is not None
        return self._tree

    def cached_tree(self) -> Node | None:
        """The tree if it can be had without an error (for the completer)."""
        try:
            return self.tree()
        except BackendError:
            return None

    def invalidate(self) -> None:
        self._tree = None
        self._raw = None

    def resolve(self, text: str | None) -> Node:
        path = self._cwd if text is None else split_path(text, self._cwd)
        return resolve(self.tree(), path)

    def change_dir(self, path: Path) -> None:
        self._cwd = path

    @property
    def prompt_text(self) -> str:
        return f"pyscst:{format_path(self._cwd)}> "

    def prompt(self) -> Fragments:
        return [("class:prompt", "pyscst:"), ("class:prompt.path", format_path(self._cwd)),
                ("class:prompt", "> ")]

    # -- one line ------------------------------------------------------------------

    def run_line(self, text: str) -> Outcome:
        """Run one command line; never raises (except KeyboardInterrupt)."""
        self.invalidate()  # show the daemon's state as it is now
        try:
            invocation = parse_line(text)
            if invocation is None:
                return Outcome([])
            command = find_command(invocation.name)
            if len(invocation.positionals) > command.max_positionals:
                raise UsageError(
                    f"{command.name}: too many arguments "
                    f"({' '.join(invocation.positionals)}); usage: {command.usage}"
                )
            output = command.run(self, invocation)
            self._keep_cwd_valid()
            return Outcome(output)
        except ExitRequest:
            return Outcome([], exit=True)
        except BackendError as exc:
            self._keep_cwd_valid()
            return Outcome(error(exc.message, exc.path), ok=False)
        except (UsageError, PathError) as exc:
            return Outcome(error(str(exc)), ok=False)
        except Exception as exc:  # a console bug must not end the session
            log.debug("console command failed", exc_info=True)
            return Outcome(
                error(f"internal console error in {text.split()[0]!r}: "
                      f"{type(exc).__name__}: {exc}"),
                ok=False,
            )

    def _keep_cwd_valid(self) -> None:
        """After a delete (here or elsewhere) move up to the nearest existing directory."""
        tree = self.cached_tree()
        if tree is None:
            return
        path = self._cwd
        while path:
            try:
                resolve(tree, path)
                break
            except PathError:
                path = path[:-1]
        self._cwd = path


def parse_line(text: str) -> Invocation | None:
    """Words, quotes and ``#`` comments as in a POSIX shell; ``--force`` = ``force=true``."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError as exc:
        raise UsageError(f"cannot read the line: {exc} (check the quotes)") from None
    if not words:
        return None
    positionals: list[str] = []
    options: dict[str, str] = {}
    for word in words[1:]:
        if word.startswith("--") and len(word) > 2:
            key, _, value = word[2:].partition("=")
            options[key.replace("-", "_")] = value or "true"
        elif "=" in word and not word.startswith(("/", ".")):
            key, _, value = word.partition("=")
            if not key:
                raise UsageError(f'"{word}": missing the attribute name before "="')
            options[key] = value
        else:
            positionals.append(word)
    return Invocation(words[0], tuple(positionals), options)
