"""One-off: split admin/ into config/, control/ and client/ (git mv + import rewrite).

Run from the repository root on a clean tree. Rewrites dotted module names
(``pyscst.admin.config_model`` and the bare ``admin.config_model`` docs use),
file paths (``admin/config_model.py``) and ``from pyscst.admin import x`` lines
in every tracked text file. Kept in the tree so the rename can be replayed on a
branch that still has the old layout.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# old module (under admin/) -> new dotted path (under admin/)
MOVES = {
    "config": "config.files",
    "config_auth": "config.auth",
    "config_edit": "config.edit",
    "config_faults": "config.faults",
    "config_model": "config.model",
    "config_schema": "config.schema",
    "config_values": "config.values",
    "control": "control.server",
    "protocol": "control.protocol",
    "peercred": "control.peercred",
    "daemon_api": "control.daemon_api",
    "reconcile": "control.reconcile",
    "operations": "control.operations",
    "ops_args": "control.ops.args",
    "ops_auth": "control.ops.auth",
    "ops_config": "control.ops.config",
    "ops_edit": "control.ops.edit",
    "ops_faults": "control.ops.faults",
    "ops_runtime": "control.ops.runtime",
    "client": "client.connection",
    "admin_cli": "client.cli",
    "cli_faults": "client.faults",
    "console": "client.console.app",
    "console_attrs": "client.console.attrs",
    "console_backend": "client.console.backend",
    "console_commands": "client.console.commands",
    "console_complete": "client.console.complete",
    "console_model": "client.console.model",
    "console_render": "client.console.render",
    "console_shell": "client.console.shell",
}

PACKAGES = {
    "config": "The configuration model: TOML files parsed, checked and resolved into the frozen\n"
    "records the daemon runs from, and edited in place by the control plane.\n\n"
    "Below both the control server and the client: neither imports the other, both\n"
    "import this (import-linter contract in pyproject.toml).",
    "control": "The control server inside the daemon: the JSON-lines protocol, the socket\n"
    "endpoint and the operations it serves on the running daemon.\n\n"
    "Never imports :mod:`pyscst.admin.client`; the client imports only\n"
    ":mod:`pyscst.admin.control.protocol` from here.",
    "control.ops": "The control operations by subject (config edits, auth, faults, runtime,\n"
    "saving and reloading), gathered into one op table by\n"
    ":class:`pyscst.admin.control.operations.Controller`.",
    "client": "The operator's side of the control socket: the ``pyscst admin`` one-shot CLI and\n"
    "the ``pyscst console`` shell. Talks to the daemon only through\n"
    ":mod:`pyscst.admin.control.protocol`.",
    "client.console": "``pyscst console``: the interactive shell over the control socket (prompt,\n"
    "completion, the object tree as directories, rendering).",
}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def main() -> int:
    root = Path(".")
    if not (root / "admin" / "config_model.py").exists():
        print("admin/ already split", file=sys.stderr)
        return 1
    for pkg in PACKAGES:
        (root / "admin" / Path(*pkg.split("."))).mkdir(parents=True, exist_ok=True)
    for old, new in MOVES.items():
        dest = root / "admin" / (new.replace(".", "/") + ".py")
        git("mv", f"admin/{old}.py", str(dest))

    order = sorted(MOVES, key=len, reverse=True)
    alt = "|".join(order)
    dotted = re.compile(rf"\b((?:pyscst\.)?admin)\.({alt})\b(?!\.py|/)")
    pathlike = re.compile(rf"\badmin/({alt})\.py\b")
    from_import = re.compile(
        r"^([ \t]*)from pyscst\.admin import ([\w, ]+?)([ \t]*(?:#.*)?)$", re.M
    )

    def sub_from(m: re.Match[str]) -> str:
        indent, names, tail = m.group(1), m.group(2), m.group(3)
        lines = []
        for name in (n.strip() for n in names.split(",")):
            new = MOVES.get(name, name)
            parent, _, leaf = ("admin." + new).rpartition(".")
            alias = f" as {name}" if leaf != name else ""
            lines.append(f"{indent}from pyscst.{parent} import {leaf}{alias}{tail}")
        return "\n".join(lines)

    changed = 0
    for name in git("ls-files").splitlines():
        p = root / name
        text_suffixes = {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".sh", ""}
        if p.suffix not in text_suffixes and p.name != "Makefile":
            continue
        if not p.is_file() or p.name == "split_admin.py":
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        new = dotted.sub(lambda m: f"{m.group(1)}.{MOVES[m.group(2)]}", text)
        new = from_import.sub(sub_from, new)
        new = pathlike.sub(lambda m: "admin/" + MOVES[m.group(1)].replace(".", "/") + ".py", new)
        if new != text:
            p.write_text(new)
            changed += 1
    for pkg, doc in PACKAGES.items():  # after the rewrite: these already use the new names
        init = root / "admin" / Path(*pkg.split(".")) / "__init__.py"
        init.write_text(f'"""{doc}\n"""\n')
        git("add", str(init))
    print(f"moved {len(MOVES)} modules, rewrote {changed} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
