"""Tab completion for the console: commands, tree paths, attribute names and values.

The completer reads the same cached tree the commands use, so it offers what
exists right now: device names after ``device=``, the objects below a typed
directory, the attributes ``create`` takes in the directory the line points
at, handler names, booleans, the next free LUN number. It never raises and
never prints: a daemon that cannot be reached simply completes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from pyscst.admin.client.console.attrs import CREATE_ATTRS, FORCE, FORCEABLE, SET_ATTRS, Attr
from pyscst.admin.client.console.backend import BackendError
from pyscst.admin.client.console.commands import (
    ALIASES,
    COMMANDS,
    LIBRARY_ACTIONS,
    Command,
    next_free_lun,
)
from pyscst.admin.client.console.model import CHILD_KIND, Kind, Node, PathError, resolve, split_path
from pyscst.admin.client.console.shell import Shell


class ConsoleCompleter(Completer):
    """Completes one console line against the shell's live tree."""

    def __init__(self, shell: Shell) -> None:
        self._shell = shell
        self._files = PathCompleter(expanduser=True)
        self._ops: list[str] | None = None

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        try:
            yield from self._complete(document, complete_event)
        except (BackendError, PathError, ValueError):
            return

    def _complete(self, document: Document, event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        words = text.split()
        at_new_word = not words or text[-1].isspace()
        current = "" if at_new_word else words[-1]
        done = words if at_new_word else words[:-1]
        if not done:
            yield from _words(current, sorted([*COMMANDS, *ALIASES]), "command")
            return
        command = COMMANDS.get(done[0]) or ALIASES.get(done[0])
        if command is None:
            return
        positionals = [w for w in done[1:] if "=" not in w and not w.startswith("--")]
        given = {w.partition("=")[0] for w in done[1:] if "=" in w}
        if "=" in current and command.takes_options:
            key, _, prefix = current.partition("=")
            attr = self._attribute(command, positionals, key)
            if attr is not None:
                root = self._shell.cached_tree()
                choices = attr.choices(root) if root is not None else []
                yield from _words(prefix, choices, attr.name)
            return
        if command.name == "library":  # [PATH] ACTION BARCODE: the actions after the path
            if not positionals or (len(positionals) == 1 and positionals[0].startswith("/")):
                yield from _words(current, LIBRARY_ACTIONS, "action")
            if positionals:
                return
        if len(positionals) < command.max_positionals:
            yield from self._positional(command, current, document, event)
        if command.takes_options and not current.startswith(("/", ".")):
            for attr in self._attributes(command, positionals):
                if attr.name not in given and attr.name.startswith(current):
                    meta = ("required: " if attr.required else "") + attr.help
                    yield Completion(
                        attr.name + "=", -len(current), display=attr.name + "=", display_meta=meta
                    )

    # -- positional arguments --------------------------------------------------------

    def _positional(
        self, command: Command, current: str, document: Document, event: CompleteEvent
    ) -> Iterator[Completion]:
        kind = command.args
        if kind == "command":
            yield from _words(current, sorted(COMMANDS), "command")
        elif kind == "op":
            yield from _words(current, self._op_names(), "op")
        elif kind == "file":
            sub = Document(current, len(current))
            for c in self._files.get_completions(sub, event):
                yield Completion(c.text, c.start_position, display=c.display)
        elif kind in ("path", "container"):
            if kind == "container" and not current:
                yield from self._next_lun()
            yield from self._paths(current)

    def _paths(self, current: str) -> Iterator[Completion]:
        tree = self._shell.cached_tree()
        if tree is None:
            return
        head, slash, partial = current.rpartition("/")
        base = split_path(head or "/", self._shell.cwd) if slash else self._shell.cwd
        try:
            directory = resolve(tree, base)
        except PathError:
            return
        prefix = head + "/" if slash else ""
        if partial.startswith(".") and directory.path:
            yield Completion(prefix + "../", -len(current), display="../", display_meta="up")
        for child in directory.children:
            if child.name.startswith(partial):
                suffix = "/" if child.children or child.kind in CHILD_KIND else ""
                yield Completion(
                    prefix + child.name + suffix,
                    -len(current),
                    display=child.name + suffix,
                    display_meta=child.kind.value,
                )

    def _next_lun(self) -> Iterator[Completion]:
        tree = self._shell.cached_tree()
        if tree is None:
            return
        here = resolve(tree, self._shell.cwd)
        if here.kind is Kind.LUNS:
            yield Completion(str(next_free_lun(here)), 0, display_meta="next free LUN")

    def _op_names(self) -> list[str]:
        if self._ops is None:
            try:
                hello = self._shell.call("hello")
            except BackendError:
                return []
            ops = hello.get("ops", []) if isinstance(hello, dict) else []
            self._ops = sorted(str(op) for op in ops)
        return self._ops

    # -- key=value attributes --------------------------------------------------------

    def _attributes(self, command: Command, positionals: list[str]) -> tuple[Attr, ...]:
        tree = self._shell.cached_tree()
        if tree is None:
            return ()
        cwd = self._shell.cwd
        if command.name == "create":
            if positionals and "/" in positionals[0]:
                container = resolve(tree, split_path(positionals[0].rpartition("/")[0] or "/",
                                                     cwd))
            else:
                container = resolve(tree, cwd)
            return CREATE_ATTRS.get(container.kind, ())
        node = _target(tree, cwd, positionals)
        if command.name == "set":
            return SET_ATTRS.get(node.kind, ())
        if command.name == "delete" and node.kind in FORCEABLE:
            return (FORCE,)
        return ()

    def _attribute(self, command: Command, positionals: list[str], key: str) -> Attr | None:
        for attr in self._attributes(command, positionals):
            if attr.name == key:
                return attr
        return None


def _target(tree: Node, cwd: tuple[str, ...], positionals: list[str]) -> Node:
    return resolve(tree, split_path(positionals[0], cwd) if positionals else cwd)


def _words(prefix: str, words: Iterable[str], meta: str) -> Iterator[Completion]:
    for word in words:
        if word.startswith(prefix):
            yield Completion(word, -len(prefix), display_meta=meta)
