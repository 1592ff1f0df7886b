"""CHAP and initiator access lists against a real daemon, with real initiators.

libiscsi's tools (``iscsi-inq``, ``iscsi-ls``) log in one-way and mutual and
fail cleanly with a wrong secret, no secret or a name not on the list; qemu-img
logs in with ``user`` and ``password-secret``; the project's own initiator
does CHAP too (MD5, SHA-256, SHA3-256). A live reload changes who gets in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from pyscst.transports.iscsi.chap import ChapAlgorithm, InitiatorChap
from pyscst.transports.iscsi.initiator import Initiator, InitiatorError, LoginError
from tests.daemon import RunningDaemon, running_daemon, running_daemon_async

ALICE_SECRET = "alice-secret-1234"
TARGET_USER = "iqn.2026-11.org.pyscst:default"
TARGET_SECRET = "target-secret-99"
ALLOWED = "iqn.2026-11.org.example:host1"
STRANGER = "iqn.1994-05.com.other:host9"
OTHER_TARGET = "iqn.2026-11.org.pyscst:open"

needs_libiscsi = pytest.mark.skipif(
    shutil.which("iscsi-inq") is None, reason="iscsi-inq (libiscsi-bin) not installed"
)


def write_secret(state: Path, name: str, secret: str, mode: int = 0o600) -> None:
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, secret.encode() + b"\n")
    finally:
        os.close(fd)


def chap_daemon_args(workdir: Path) -> dict[str, Any]:
    write_secret(workdir / "state", "alice.secret", ALICE_SECRET)
    write_secret(workdir / "state", "tgt.secret", TARGET_SECRET)
    return {
        "auth": {
            "initiators": ["iqn.2026-11.org.example:*"],
            "chap": [{"user": "alice", "secret_file": "alice.secret"}],
            "mutual": {"user": TARGET_USER, "secret_file": "tgt.secret"},
        },
        "discovery_auth": {"chap": [{"user": "alice", "secret_file": "alice.secret"}]},
        "extra_targets": {OTHER_TARGET: {"luns": [{"lun": 0, "device": "disk0"}]}},
    }


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def inq(d: RunningDaemon, creds: str, query: str = "", name: str = ALLOWED
        ) -> subprocess.CompletedProcess[str]:
    url = f"iscsi://{creds}{d.host}:{d.port}/{d.target}/0{query}"
    return run(["iscsi-inq", "--initiator-name", name, url])


@needs_libiscsi
def test_libiscsi_chap_logins(tmp_path: Path) -> None:
    with running_daemon(tmp_path, **chap_daemon_args(tmp_path)) as d:
        ok = inq(d, f"alice%{ALICE_SECRET}@")
        assert ok.returncode == 0 and "DIRECT_ACCESS" in ok.stdout, ok.stderr
        mutual = inq(d, f"alice%{ALICE_SECRET}@",
                     f"?target_user={TARGET_USER}&target_password={TARGET_SECRET}")
        assert mutual.returncode == 0, mutual.stderr
        wrong = inq(d, "alice%wrong-secret-999@")
        assert wrong.returncode != 0 and "Authentication failure" in wrong.stderr + wrong.stdout
        none = inq(d, "")
        assert none.returncode != 0 and "Authentication failure" in none.stderr + none.stdout
        stranger = inq(d, f"alice%{ALICE_SECRET}@", name=STRANGER)
        assert stranger.returncode != 0
        assert "Authorization failure" in stranger.stderr + stranger.stdout
        bad_target = inq(d, f"alice%{ALICE_SECRET}@",
                         f"?target_user={TARGET_USER}&target_password=not-the-target-pw")
        assert bad_target.returncode != 0
        # discovery needs CHAP too; a stranger does not see the protected target
        portal = f"{d.host}:{d.port}"
        listed = run(["iscsi-ls", "--initiator-name", ALLOWED,
                      f"iscsi://alice%{ALICE_SECRET}@{portal}"])
        assert listed.returncode == 0 and d.target in listed.stdout, listed.stderr
        assert OTHER_TARGET in listed.stdout
        refused = run(["iscsi-ls", "--initiator-name", ALLOWED, f"iscsi://{portal}"])
        assert refused.returncode != 0 and d.target not in refused.stdout
        hidden = run(["iscsi-ls", "--initiator-name", STRANGER,
                      f"iscsi://alice%{ALICE_SECRET}@{portal}"])
        assert hidden.returncode == 0, hidden.stderr
        assert d.target not in hidden.stdout and OTHER_TARGET in hidden.stdout
        # no secret in the daemon's log
        log = d.stderr_text()
        assert ALICE_SECRET not in log and TARGET_SECRET not in log


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_qemu_img_chap_login(tmp_path: Path) -> None:
    with running_daemon(tmp_path, **chap_daemon_args(tmp_path)) as d:
        def info(secret: str) -> subprocess.CompletedProcess[str]:
            opts = (
                f"driver=iscsi,transport=tcp,portal={d.host}:{d.port},target={d.target},"
                f"lun=0,user=alice,password-secret=sec0,initiator-name={ALLOWED}"
            )
            return run(["qemu-img", "info", "--object", f"secret,id=sec0,data={secret}",
                        "--image-opts", opts])

        ok = info(ALICE_SECRET)
        assert ok.returncode == 0 and "virtual size: 64 MiB" in ok.stdout, ok.stderr
        bad = info("wrong-secret-999")
        assert bad.returncode != 0
        spec = json.dumps({
            "driver": "iscsi", "transport": "tcp", "portal": f"{d.host}:{d.port}",
            "target": d.target, "lun": 0, "user": "alice", "password-secret": "sec1",
            "initiator-name": ALLOWED,
        })
        as_json = run(["qemu-img", "info", "--object", f"secret,id=sec1,data={ALICE_SECRET}",
                       f"json:{spec}"])
        assert as_json.returncode == 0 and "virtual size: 64 MiB" in as_json.stdout, (
            as_json.stderr)


async def test_own_initiator_chap(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path, **chap_daemon_args(tmp_path)) as d:
        for algorithm in ChapAlgorithm:
            creds = InitiatorChap("alice", ALICE_SECRET.encode(), TARGET_USER,
                                  TARGET_SECRET.encode(), (algorithm,))
            async with await Initiator.connect(
                d.host, d.port, initiator_name=ALLOWED, target_name=d.target, chap=creds
            ) as ini:
                assert ini.negotiated["CHAP_A"] == str(int(algorithm))
                await ini.execute(0, bytes(6))  # the power-on unit attention
                r = await ini.execute(0, bytes(6))
                assert r.status == 0
        wrong_target = InitiatorChap("alice", ALICE_SECRET.encode(), TARGET_USER,
                                     b"not-the-target-pw")
        with pytest.raises(InitiatorError, match="CHAP"):
            await Initiator.connect(d.host, d.port, initiator_name=ALLOWED,
                                    target_name=d.target, chap=wrong_target)
        with pytest.raises(LoginError) as failed:
            await Initiator.connect(d.host, d.port, initiator_name=ALLOWED,
                                    target_name=d.target)
        assert (failed.value.status_class, failed.value.status_detail) == (2, 1)
        with pytest.raises(LoginError) as failed:
            await Initiator.connect(d.host, d.port, initiator_name=STRANGER,
                                    target_name=d.target,
                                    chap=InitiatorChap("alice", ALICE_SECRET.encode()))
        assert (failed.value.status_class, failed.value.status_detail) == (2, 2)
        async with await Initiator.connect(
            d.host, d.port, initiator_name=STRANGER,
            chap=InitiatorChap("alice", ALICE_SECRET.encode()),
        ) as disc:
            names = [name for name, _ in await disc.send_targets()]
            assert names == [OTHER_TARGET]
            assert await disc.send_targets(d.target) == []


async def test_reload_changes_who_gets_in(tmp_path: Path) -> None:
    args = chap_daemon_args(tmp_path)
    async with running_daemon_async(tmp_path, **args) as d:
        creds = InitiatorChap("alice", ALICE_SECRET.encode())
        async with await Initiator.connect(
            d.host, d.port, initiator_name=ALLOWED, target_name=d.target, chap=creds
        ) as ini:
            # a new secret in the file, picked up by a reload: the session stays,
            # new logins need the new secret
            write_secret(d.state_dir, "alice.secret", "alice-new-secret-5678")
            reload = await trio.to_thread.run_sync(
                run, [*admin(d), "reload"]
            )
            assert reload.returncode == 0, reload.stderr + reload.stdout
            assert ALICE_SECRET not in reload.stdout + reload.stderr
            with pytest.raises(LoginError):
                await Initiator.connect(d.host, d.port, initiator_name=ALLOWED,
                                        target_name=d.target, chap=creds)
            fresh = InitiatorChap("alice", b"alice-new-secret-5678")
            async with await Initiator.connect(
                d.host, d.port, initiator_name=ALLOWED, target_name=d.target, chap=fresh
            ):
                pass
            await ini.execute(0, bytes(6))  # the power-on unit attention
            r = await ini.execute(0, bytes(6))
            assert r.status == 0  # the session logged in before the change keeps going

            # the same through `pyscst admin auth`
            only = await trio.to_thread.run_sync(
                run, [*admin(d), "auth", "initiators", d.target, "iqn.1994-05.com.other:*"])
            assert only.returncode == 0, only.stderr
            with pytest.raises(LoginError) as failed:
                await Initiator.connect(d.host, d.port, initiator_name=ALLOWED,
                                        target_name=d.target, chap=fresh)
            assert (failed.value.status_class, failed.value.status_detail) == (2, 2)
            anyone = await trio.to_thread.run_sync(
                run, [*admin(d), "auth", "initiators", d.target, "--anyone"])
            assert anyone.returncode == 0, anyone.stderr
            added = await trio.to_thread.run_sync(
                run, [*admin(d), "--json", "auth", "chap-add", d.target, "bob",
                      "--secret", "bob-secret-12345"])
            assert added.returncode == 0 and "bob-secret" not in added.stdout, added.stderr
            async with await Initiator.connect(
                d.host, d.port, initiator_name=STRANGER, target_name=d.target,
                chap=InitiatorChap("bob", b"bob-secret-12345"),
            ):
                pass
            tree = await trio.to_thread.run_sync(run, [*admin(d), "--json", "tree"])
            assert "bob" in tree.stdout and "bob-secret" not in tree.stdout


def admin(d: RunningDaemon) -> list[str]:
    import sys

    return [sys.executable, "-m", "pyscst", "admin", "--config", str(d.config_path)]
