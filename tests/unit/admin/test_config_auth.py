"""``[targets."IQN".auth]`` and ``[discovery_auth]`` in config files, and in ``save``.

Secret files are checked like ssh keys (ours, 0600, regular, no symlink);
every mistake is reported at its key path without quoting a secret; the
model, its repr, ``dump_config`` and ``save`` never carry a secret read from
a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from pyscst.admin.config.files import ConfigError, dump_config, parse_config
from pyscst.admin.config.edit import render
from pyscst.admin.config.model import AuthConfig, ChapUser

IQN = "iqn.2026-11.org.pyscst:a"
SECRET = "alice-secret-1234"


def secret_file(directory: Path, name: str, text: str = SECRET, mode: int = 0o600) -> Path:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode() + b"\n")
    finally:
        os.close(fd)
    os.chmod(path, mode)
    return path


def config_text(tmp_path: Path, auth: str, discovery: str = "") -> str:
    return f'''state_dir = "{tmp_path}"
[devices.d]
handler = "vdisk_nullio"
size = "1M"

# the target
[targets."{IQN}"]
portals = ["127.0.0.1:3260"]
luns = [{{ lun = 0, device = "d" }}]

[targets."{IQN}".auth]
{auth}
{discovery}'''


def problems(tmp_path: Path, auth: str, discovery: str = "") -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(config_text(tmp_path, auth, discovery), tmp_path)
    return [str(p) for p in exc.value.problems]


def test_full_auth_table(tmp_path: Path) -> None:
    secret_file(tmp_path, "alice.secret")
    secret_file(tmp_path, "tgt.secret", "target-secret-99")
    config = parse_config(config_text(tmp_path, '''
initiators = ["iqn.1994-05.com.redhat:*"]
chap = [{ user = "alice", secret_file = "alice.secret" },
        { user = "bob", secret = "bob-inline-secret" }]
mutual = { user = "iqn.2026-11.org.pyscst:default", secret_file = "tgt.secret" }''', '''
[discovery_auth]
chap = [{ user = "alice", secret_file = "alice.secret" }]'''), tmp_path)
    auth = config.targets[0].auth
    assert auth.initiators == ("iqn.1994-05.com.redhat:*",)
    assert auth.chap == (
        ChapUser("alice", SECRET.encode(), "alice.secret"),
        ChapUser("bob", b"bob-inline-secret", None),
    )
    assert auth.mutual == ChapUser("iqn.2026-11.org.pyscst:default", b"target-secret-99",
                                   "tgt.secret")
    assert auth.allows("IQN.1994-05.com.redhat:host") and not auth.allows("iqn.x:y")
    assert config.discovery_auth.chap[0].user == "alice"
    shown = repr(config) + str(auth.public()) + str(config.discovery_auth.public())
    assert SECRET not in shown and "target-secret" not in shown and "bob-inline" not in shown
    dumped = dump_config(config)
    assert SECRET not in dumped and "target-secret" not in dumped
    assert 'secret_file = "alice.secret"' in dumped
    assert parse_config(dumped, tmp_path) == config


def test_absent_auth_means_anyone(tmp_path: Path) -> None:
    assert AuthConfig().allows("iqn.anyone:at-all")
    assert not AuthConfig(initiators=()).allows("iqn.anyone:at-all")


@pytest.mark.parametrize(
    ("mode", "message"),
    [(0o644, "mode 0644"), (0o640, "mode 0640"), (0o604, "mode 0604")],
)
def test_secret_file_readable_by_others_refused(tmp_path: Path, mode: int, message: str) -> None:
    secret_file(tmp_path, "s", mode=mode)
    found = problems(tmp_path, 'chap = [{ user = "alice", secret_file = "s" }]')
    assert len(found) == 1 and message in found[0]
    assert found[0].startswith(f'targets."{IQN}".auth.chap[0].secret_file: ')
    assert SECRET not in found[0]


def test_secret_file_stricter_mode_accepted(tmp_path: Path) -> None:
    secret_file(tmp_path, "s", mode=0o400)
    parse_config(config_text(tmp_path, 'chap = [{ user = "alice", secret_file = "s" }]'),
                 tmp_path)


def test_secret_file_symlink_directory_missing_foreign(tmp_path: Path) -> None:
    real = secret_file(tmp_path, "real")
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "dir").mkdir(mode=0o700)
    auth = ('chap = [{ user = "a", secret_file = "link" }, { user = "b", secret_file = "dir" },'
            ' { user = "c", secret_file = "nope" }]')
    found = problems(tmp_path, auth)
    assert len(found) == 3
    assert "chap[0].secret_file" in found[0] and "link" in found[0]
    assert "chap[1].secret_file" in found[1] and "not a regular file" in found[1]
    assert "chap[2].secret_file" in found[2] and "No such file" in found[2]
    if os.geteuid() == 0:  # root can hand the file to someone else
        os.chown(real, 65534, 65534)
        found = problems(tmp_path, 'chap = [{ user = "a", secret_file = "real" }]')
        assert "owned by uid 65534" in found[0]


def test_secret_rules(tmp_path: Path) -> None:
    secret_file(tmp_path, "short", "eleven-byte")
    secret_file(tmp_path, "two-lines", "long-enough-secret\nsecond line")
    assert "more than one line" in problems(
        tmp_path, 'chap = [{ user = "a", secret_file = "two-lines" }]')[0]
    found = problems(tmp_path, '''
chap = [{ user = "a", secret = "short" }, { user = "b", secret_file = "short" },
        { user = "c" }, { user = "d", secret = "long-enough-secret", secret_file = "short" },
        { user = "a", secret = "another-secret-1" }, { user = "", secret = "another-secret-2" },
        { user = "e", secret = "%s" }]
mutual = { user = "t", secret = "another-secret-1" }''' % ("x" * 256))
    assert found == [
        f'targets."{IQN}".auth.chap[0].secret: secret shorter than 12 bytes (RFC 7143 12.1.3)',
        f'targets."{IQN}".auth.chap[1].secret_file: secret shorter than 12 bytes '
        "(RFC 7143 12.1.3)",
        f'targets."{IQN}".auth.chap[2]: give exactly one of secret and secret_file',
        f'targets."{IQN}".auth.chap[3]: give exactly one of secret and secret_file',
        f'targets."{IQN}".auth.chap[4].user: "a" already at index 0',
        f'targets."{IQN}".auth.chap[5].user: expected 1-255 bytes without NUL or newline',
        f'targets."{IQN}".auth.chap[6].secret: secret longer than 255 bytes',
    ]


def test_mutual_rules(tmp_path: Path) -> None:
    found = problems(tmp_path, '''
chap = [{ user = "a", secret = "same-secret-123" }]
mutual = { user = "t", secret = "same-secret-123" }''')
    assert found == [
        f'targets."{IQN}".auth.mutual.secret: the mutual secret must differ from every chap secret'
    ]
    found = problems(tmp_path, 'mutual = { user = "t", secret = "target-secret-99" }')
    assert found == [
        f'targets."{IQN}".auth.mutual: needs chap users: the initiator proves itself first'
    ]


def test_unknown_keys_and_bad_patterns(tmp_path: Path) -> None:
    found = problems(tmp_path, '''
initiators = ["iqn.ok:x", "has space", "NOT-AN-IQN"]
chap = [{ user = "a", secret = "long-enough-secret", pasword = "x" }]''', '''
[discovery_auth]
initiators = ["iqn.x:y"]''')
    assert 'unknown key discovery_auth.initiators' in found
    assert any("chap[0].pasword" in p and 'did you mean "password"' not in p for p in found)
    found = problems(tmp_path, 'initiators = ["iqn.2026-11.org.example:x", "has space", "X"]')
    assert len(found) == 2
    assert found[0].startswith(f'targets."{IQN}".auth.initiators[1]: ')
    assert found[1].startswith(f'targets."{IQN}".auth.initiators[2]: ')


def test_save_writes_references_never_secrets(tmp_path: Path) -> None:
    secret_file(tmp_path, "alice.secret")
    secret_file(tmp_path, "carol.secret", "carol-secret-5678")
    text = config_text(tmp_path, '''chap = [{ user = "alice", secret_file = "alice.secret" },
        { user = "bob", secret = "bob-inline-secret" }]  # bob stays inline''')
    before = parse_config(text, tmp_path)
    assert render(before, text, tmp_path, tmp_path) == text.rstrip() + "\n"  # untouched
    auth = before.targets[0].auth
    grown = attrs.evolve(auth, chap=(*auth.chap, ChapUser("carol", b"carol-secret-5678",
                                                          "carol.secret")),
                         initiators=("iqn.2026-11.org.example:*",))
    model = attrs.evolve(before, targets=(attrs.evolve(before.targets[0], auth=grown),))
    saved = render(model, text, tmp_path, tmp_path)
    assert SECRET not in saved and "carol-secret" not in saved
    assert 'secret_file = "carol.secret"' in saved and 'secret_file = "alice.secret"' in saved
    assert 'secret = "bob-inline-secret"' in saved  # as the user wrote it
    assert "# the target" in saved  # comments elsewhere survive
    assert parse_config(saved, tmp_path) == model
    cleared = attrs.evolve(before, targets=(attrs.evolve(before.targets[0], auth=AuthConfig()),),
                           discovery_auth=AuthConfig(chap=(auth.chap[0],)))
    saved = render(cleared, text, tmp_path, tmp_path)
    assert "[targets." in saved and ".auth]" not in saved
    assert "[discovery_auth]" in saved and SECRET not in saved
    assert parse_config(saved, tmp_path) == cleared
