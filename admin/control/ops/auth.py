"""Admin edits of ``[targets."IQN".auth]`` and ``[discovery_auth]``.

Why its own module: these edits carry secrets. Like every edit they change the
TOML-shaped document and are validated as a file would be (secret files
checked for mode and owner, lengths, a mutual secret differing from the chap
ones), then reconciled; the messages they return never include a secret. The
target ``discovery`` (never an iSCSI name) stands for ``[discovery_auth]``.
Changes apply to logins from then on; sessions already logged in stay.
"""

from __future__ import annotations

from typing import Any

from pyscst.admin.control.ops.args import Args
from pyscst.admin.control.ops.edit import Doc, target_key, target_table
from pyscst.admin.control.protocol import ErrorCode, OpError

DISCOVERY = "discovery"


def _auth(doc: Doc, target: str) -> tuple[dict[str, Any], str]:
    """The auth table being edited (created empty) and its key path."""
    if target.lower() == DISCOVERY:
        return doc.setdefault("discovery_auth", {}), "discovery_auth"
    table = target_table(doc, target)
    return table.setdefault("auth", {}), f'targets."{target_key(doc, target)}".auth'


def _credential(a: Args) -> dict[str, str]:
    user = a.text("user")
    secret, secret_file = a.opt_text("secret"), a.opt_text("secret_file")
    if (secret is None) == (secret_file is None):
        raise OpError(ErrorCode.INVALID, "give exactly one of secret and secret_file", "args")
    entry = {"user": user}
    if secret_file is not None:
        entry["secret_file"] = secret_file
    else:
        assert secret is not None
        entry["secret"] = secret
    return entry


def _tidy(doc: Doc, target: str, table: dict[str, Any]) -> None:
    """An auth table left empty is removed, as if never written."""
    if table:
        return
    if target.lower() == DISCOVERY:
        doc.pop("discovery_auth", None)
    else:
        target_table(doc, target).pop("auth", None)


def chap_add(doc: Doc, a: Args) -> str:
    target = a.text("target")
    entry = _credential(a)
    a.done()
    table, path = _auth(doc, target)
    users = table.setdefault("chap", [])
    if any(u.get("user") == entry["user"] for u in users):
        raise OpError(ErrorCode.EXISTS, f'CHAP user "{entry["user"]}" already exists',
                      f"{path}.chap")
    users.append(entry)
    return f'{path}: added CHAP user "{entry["user"]}"'


def chap_remove(doc: Doc, a: Args) -> str:
    target, user = a.text("target"), a.text("user")
    a.done()
    table, path = _auth(doc, target)
    users = table.setdefault("chap", [])
    kept = [u for u in users if u.get("user") != user]
    if len(kept) == len(users):
        names = ", ".join(str(u.get("user")) for u in users) or "none"
        raise OpError(ErrorCode.NOT_FOUND, f'no CHAP user "{user}" (users: {names})',
                      f"{path}.chap")
    if not kept and "mutual" in table:
        raise OpError(ErrorCode.INVALID,
                      "the last CHAP user goes only after the mutual credential "
                      "(auth mutual-clear)", f"{path}.mutual")
    table["chap"] = kept
    if not kept:
        del table["chap"]
    _tidy(doc, target, table)
    return f'{path}: removed CHAP user "{user}"'


def mutual_set(doc: Doc, a: Args) -> str:
    target = a.text("target")
    entry = _credential(a)
    a.done()
    table, path = _auth(doc, target)
    table["mutual"] = entry
    return f'{path}: the target answers mutual CHAP as "{entry["user"]}"'


def mutual_clear(doc: Doc, a: Args) -> str:
    target = a.text("target")
    a.done()
    table, path = _auth(doc, target)
    if table.pop("mutual", None) is None:
        raise OpError(ErrorCode.NOT_FOUND, "no mutual credential set", f"{path}.mutual")
    _tidy(doc, target, table)
    return f"{path}: mutual CHAP credential removed"


def initiators_set(doc: Doc, a: Args) -> str:
    target = a.text("target")
    patterns = a.opt_strings("initiators")
    anyone = a.flag("anyone")
    a.done()
    if target.lower() == DISCOVERY:
        raise OpError(ErrorCode.INVALID,
                      "discovery has no access list: each target's decides what it shows",
                      "args.target")
    if anyone == (patterns is not None):
        raise OpError(ErrorCode.INVALID, "give initiators or anyone, not both", "args")
    table, path = _auth(doc, target)
    if anyone:
        table.pop("initiators", None)
        _tidy(doc, target, table)
        return f"{path}: any initiator may log in"
    assert patterns is not None
    table["initiators"] = list(patterns)
    return f"{path}: initiators = {', '.join(patterns) or '(none)'}"
