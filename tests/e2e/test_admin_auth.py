"""Live auth edits (the ``auth.*`` ops behind ``pyscst admin auth`` and the console).

Each edit applies to logins from then on, through the reconcile machinery, and
no reply, tree or saved file carries a secret.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pyscst.admin.client.cli import render_tree
from pyscst.admin.control.protocol import OpError
from pyscst.transports.iscsi.chap import InitiatorChap
from pyscst.transports.iscsi.initiator import Initiator, LoginError
from tests.daemon import in_process_daemon

IQN = "iqn.2026-11.org.pyscst:auth"
HOST = "iqn.2026-11.org.example:host"
SECRET = "alice-secret-1234"
BODY = f'''
[devices.d]
handler = "vdisk_nullio"
size = "1M"

[targets."{IQN}"]
portals = ["127.0.0.1:@PORT@"]
luns = [{{ lun = 0, device = "d" }}]
'''


def write_secret(directory: Path, name: str, text: str) -> None:
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


async def login(port: int, chap: InitiatorChap | None, name: str = HOST,
                target: str | None = IQN) -> None:
    async with await Initiator.connect("127.0.0.1", port, initiator_name=name,
                                       target_name=target, chap=chap):
        pass


async def status_of(port: int, chap: InitiatorChap | None, name: str = HOST) -> tuple[int, int]:
    with pytest.raises(LoginError) as failed:
        await login(port, chap, name)
    return failed.value.status_class, failed.value.status_detail


async def test_auth_ops_change_new_logins(tmp_path: Path) -> None:
    write_secret(tmp_path, "alice.secret", SECRET)
    write_secret(tmp_path, "weak.secret", "short")
    async with in_process_daemon(tmp_path, BODY) as (daemon, port):
        ops = daemon.control_ops

        async def op(name: str, **args: Any) -> Any:
            return await ops[name](args)

        alice = InitiatorChap("alice", SECRET.encode())
        await login(port, None)  # open until told otherwise
        reply = await op("auth.chap_add", target=IQN, user="alice", secret_file="alice.secret")
        assert reply["changes"]["auth_changed"] is True
        assert await status_of(port, None) == (2, 1)
        await login(port, alice)

        await op("auth.initiators_set", target=IQN, initiators=["iqn.2026-11.org.example:*"])
        assert await status_of(port, alice, "iqn.1994-05.com.other:x") == (2, 2)
        await login(port, alice)

        await op("auth.mutual_set", target=IQN, user="tgt", secret="target-secret-99")
        await login(port, InitiatorChap("alice", SECRET.encode(), "tgt", b"target-secret-99"))

        # refusals name the key path and change nothing
        with pytest.raises(OpError, match="shorter than 12 bytes"):
            await op("auth.chap_add", target=IQN, user="bob", secret_file="weak.secret")
        with pytest.raises(OpError, match="must differ"):
            await op("auth.mutual_set", target=IQN, user="tgt", secret_file="alice.secret")
        with pytest.raises(OpError, match="mode 0644"):
            os.chmod(tmp_path / "weak.secret", 0o644)
            write_secret(tmp_path, "weak.secret", "long-enough-but-open")
            await op("auth.chap_add", target=IQN, user="bob", secret_file="weak.secret")
        with pytest.raises(OpError, match="exactly one"):
            await op("auth.chap_add", target=IQN, user="bob")
        with pytest.raises(OpError, match="mutual-clear"):
            await op("auth.chap_remove", target=IQN, user="alice")
        await login(port, alice)

        # the tree and its JSON show names and files, never a secret
        tree = json.dumps(await ops["tree"]({}))
        assert "alice.secret" in tree and SECRET not in tree and "target-secret" not in tree
        text = render_tree(await ops["tree"]({}))
        assert ("auth: initiators iqn.2026-11.org.example:*; chap alice (alice.secret); "
                "mutual tgt (inline secret)") in text
        assert "discovery auth" not in text and "target-secret" not in text

        # discovery CHAP: "discovery" stands for [discovery_auth]
        await op("auth.chap_add", target="discovery", user="alice", secret_file="alice.secret")
        with pytest.raises(LoginError):
            await login(port, None, target=None)
        async with await Initiator.connect("127.0.0.1", port, initiator_name=HOST,
                                           chap=alice) as disc:
            assert [n for n, _ in await disc.send_targets()] == [IQN]

        # save writes the file reference and the inline mutual secret as given
        saved = tmp_path / "saved.toml"
        await op("config.save", path=str(saved))
        text = saved.read_text()
        assert SECRET not in text and 'secret_file = "alice.secret"' in text
        assert "[discovery_auth]" in text

        await op("auth.mutual_clear", target=IQN)
        await op("auth.chap_remove", target=IQN, user="alice")
        await op("auth.initiators_set", target=IQN, anyone=True)
        await login(port, None)
        assert daemon.config.targets[0].auth.chap == ()
