"""The console's ``/targets/IQN/auth``: what it shows (never a secret) and what it sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from pyscst.admin.client.console.render import plain
from pyscst.admin.client.console.shell import Shell
from tests.console_fake import TARGET, FakeBackend

AUTH = f"/targets/{TARGET}/auth"


@attrs.define
class AuthFake(FakeBackend):
    """The in-memory backend with an auth table per target (names and files only)."""

    auth: dict[str, Any] = attrs.field(factory=lambda: {
        "initiators": None, "chap": [], "mutual": None})

    def op_tree(self) -> Any:
        tree = super().op_tree()
        for target in tree["targets"]:
            target["auth"] = self.auth
        return tree

    def op_auth_chap_add(self, target: str, user: str, **secret: str) -> Any:
        shown = {"secret_file": secret["secret_file"]} if "secret_file" in secret else {
            "secret": "(inline, hidden)"}
        self.auth["chap"].append({"user": user, **shown})
        return {"message": "ok"}

    def op_auth_chap_remove(self, target: str, user: str) -> Any:
        self.auth["chap"] = [u for u in self.auth["chap"] if u["user"] != user]

    def op_auth_mutual_set(self, target: str, user: str, **secret: str) -> Any:
        self.auth["mutual"] = {"user": user, "secret_file": secret.get("secret_file")}

    def op_auth_mutual_clear(self, target: str) -> Any:
        self.auth["mutual"] = None

    def op_auth_initiators_set(self, target: str, initiators: list[str] | None = None,
                               anyone: bool = False) -> Any:
        self.auth["initiators"] = None if anyone else initiators


def run(shell: Shell, line: str, ok: bool = True) -> str:
    outcome = shell.run_line(line)
    text = plain(outcome.output)
    assert outcome.ok is ok, text
    return text


def test_console_auth_paths(tmp_path: Path) -> None:
    fake = AuthFake(tmp_path / "saved.toml")
    seeded = FakeBackend.with_defaults(tmp_path / "x.toml")
    fake.devices, fake.targets, fake.sessions = seeded.devices, seeded.targets, seeded.sessions
    shell = Shell(fake)
    run(shell, f"cd {AUTH}/chap")
    run(shell, "create alice secret_file=alice.secret")
    run(shell, "create bob secret=bob-inline-secret")
    listing = run(shell, "ls")
    assert "alice" in listing and "alice.secret" in listing and "bob-inline" not in listing
    run(shell, f"set {AUTH} initiators=iqn.1994-05.com.redhat:*,iqn.2026-11.org.x:y")
    run(shell, f"set {AUTH} mutual=tgt secret_file=tgt.secret")
    assert "chap:2,list" in run(shell, "ls /targets")
    info = run(shell, f"info {AUTH}")
    assert "iqn.1994-05.com.redhat:*" in info and "tgt (tgt.secret)" in info
    run(shell, f"delete {AUTH}/chap/bob")
    run(shell, f"set {AUTH} initiators=any mutual=none")
    run(shell, f"set {AUTH} secret=x", ok=False)  # a secret goes with mutual=
    ops = [(op, args) for op, args in fake.calls if op != "tree"]
    assert ops == [
        ("auth.chap_add", {"target": TARGET, "user": "alice", "secret_file": "alice.secret"}),
        ("auth.chap_add", {"target": TARGET, "user": "bob", "secret": "bob-inline-secret"}),
        ("auth.initiators_set", {
            "target": TARGET, "initiators": ["iqn.1994-05.com.redhat:*", "iqn.2026-11.org.x:y"]}),
        ("auth.mutual_set", {"target": TARGET, "user": "tgt", "secret_file": "tgt.secret"}),
        ("auth.chap_remove", {"target": TARGET, "user": "bob"}),
        ("auth.initiators_set", {"target": TARGET, "anyone": True}),
        ("auth.mutual_clear", {"target": TARGET}),
    ]
    assert fake.auth == {"initiators": None, "mutual": None,
                         "chap": [{"user": "alice", "secret_file": "alice.secret"}]}
