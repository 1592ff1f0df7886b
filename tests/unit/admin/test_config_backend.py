"""``[devices.NAME] backend`` and its keys: checked with their key paths, and saved back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from pyscst.admin.config.files import dump_config, parse_config
from pyscst.devices.backend import parse_backend
from tests.unit.admin.test_config import TARGET, minimal, problems

URL = "iscsi://10.0.0.5:3261/iqn.2026-11.org.example:array/1"


def pt(**keys: Any) -> str:
    device = {"handler": "passthrough", "backend": URL, **keys}
    return tomli_w.dumps({
        "devices": {"d": device},
        "targets": {TARGET: {"portals": ["127.0.0.1"], "luns": [{"lun": 0, "device": "d"}]}},
    })


def test_an_iscsi_backend_with_mutual_chap_resolves_and_saves_back(tmp_path: Path) -> None:
    (tmp_path / "backend.secret").write_text("a-backend-secret-1\n")
    (tmp_path / "backend.secret").chmod(0o600)
    text = pt(backend_chap={"user": "pyscst", "secret": "pyscst-secret-12"},
              backend_mutual={"user": "array", "secret_file": "backend.secret"},
              backend_queue_depth=8, backend_timeout=5)
    text = text.replace("[devices.d]", f'state_dir = "{tmp_path}"\n\n[devices.d]', 1)
    config = parse_config(text, str(tmp_path))
    spec = config.devices[0].backend
    assert spec is not None and spec.kind == "iscsi"
    assert (spec.host, spec.port, spec.target, spec.lun) == (
        "10.0.0.5", 3261, "iqn.2026-11.org.example:array", 1)
    assert spec.chap is not None and spec.chap.secret == b"pyscst-secret-12"
    assert spec.chap.target_secret == b"a-backend-secret-1"
    assert (spec.queue_depth, spec.command_timeout) == (8, 5.0)
    assert "pyscst-secret-12" not in repr(spec)
    again = parse_config(dump_config(config), str(tmp_path))
    assert again.devices[0].backend == spec


@pytest.mark.parametrize(("keys", "message"), [
    ({"backend": "http://x/y/1"}, 'devices.d.backend: expected "iscsi://host:port/iqn/lun"'),
    ({"backend": "iscsi://h:99999/iqn.x:y/1"}, "devices.d.backend: bad port"),
    ({"backend": "iscsi://h/iqn.x:y"}, "devices.d.backend: expected"),
    ({"backend": "iscsi://h/iqn.x:y/70000"}, "devices.d.backend: LUN must be 0..16383"),
    ({"backend": "iscsi://u:p@h/iqn.x:y/1"}, "devices.d.backend: put backend CHAP"),
    ({"backend_queue_depth": 0}, "devices.d.backend_queue_depth: expected 1..1024, got 0"),
    ({"backend_timeout": 0}, "devices.d.backend_timeout: expected 1..3600"),
    ({"backend_chap": {"user": "u"}}, "devices.d.backend_chap: give exactly one of secret"),
    ({"backend_chap": {"user": "u", "secret": "short"}}, "devices.d.backend_chap.secret: secret"),
    ({"backend_mutual": {"user": "u", "secret": "0123456789abcdef"}},
     "devices.d.backend_mutual: needs backend_chap"),
    ({"backend_initiator": "bob"}, "devices.d.backend_initiator: expected an iqn."),
    ({"size": "1MiB"}, "devices.d.size: passthrough takes its size from its backend"),
    ({"path": "x.img"}, "devices.d.path: passthrough has no backing file"),
    ({"backend": "/dev/sg3"}, "devices.d.backend: /dev/sg3 is outside state_dir"),
])  # fmt: skip
def test_backend_errors_name_the_key(keys: dict[str, Any], message: str) -> None:
    text = pt(**{k: v for k, v in keys.items() if k != "backend"})
    if "backend" in keys:
        text = text.replace(URL, keys["backend"])
    found = problems(text)
    assert any(message in p for p in found), found


def test_backend_is_required_for_passthrough_and_refused_elsewhere() -> None:
    text = minimal(handler="passthrough").replace('size = "1MiB"\n', "")
    assert any("devices.d.backend: required" in p for p in problems(text))
    found = problems(minimal(backend=URL, backend_chap={"user": "u", "secret": "x" * 12}))
    assert any("devices.d.backend: only passthrough devices take backend" in p for p in found)
    assert any("devices.d.backend_chap: only passthrough" in p for p in found)


@given(st.text(max_size=80))
def test_parse_backend_never_raises_anything_but_value_error(text: str) -> None:
    try:
        spec = parse_backend(text)
    except ValueError:
        return
    assert spec.kind in ("iscsi", "sg")
