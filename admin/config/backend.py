"""``[devices.NAME] backend`` and its keys: where a pass-through device forwards.

Checked like the rest of a device, every problem with its key path:
``backend`` (required for ``passthrough``, refused elsewhere), ``backend_chap``
and ``backend_mutual`` (the CHAP the backend target asks of us, and the
target's own for mutual CHAP; iSCSI only; secrets as in ``auth``),
``backend_initiator`` (our initiator name toward it), ``backend_queue_depth``
and ``backend_timeout``. An SG_IO device path must lie below state_dir or
allowed_dirs, as a backing file must.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from pyscst.admin.config.auth import resolve_chap
from pyscst.admin.config.schema import KeyPath, RawDevice
from pyscst.devices.backend import BackendChap, BackendSpec, parse_backend
from pyscst.devices.confine import outside_roots
from pyscst.devices.handler_info import HandlerInfo

_LIMITS = {"backend_queue_depth": (1, 1024), "backend_timeout": (1, 3600)}
_IQN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-:")


def resolve_backend(
    path: KeyPath,
    raw: RawDevice,
    handler: HandlerInfo | None,
    secret_dir: Path,
    roots: tuple[Path, ...],
    fail: Callable[[KeyPath, str], None],
) -> BackendSpec | None:
    """The device's backend (None: it has none, or it is wrong and ``fail``
    was told why)."""
    wants = handler is not None and handler.backend
    given = {k for k in ("backend", "backend_chap", "backend_mutual", "backend_initiator")
             if getattr(raw, k) is not None}  # fmt: skip
    if not wants:
        for key in sorted(given):
            fail((*path, key), f"only passthrough devices take {key}")
        return None
    if raw.backend is None:
        fail((*path, "backend"), 'required: "iscsi://host:port/iqn/lun" or a /dev path')
        return None
    try:
        spec = parse_backend(raw.backend)
    except ValueError as exc:
        fail((*path, "backend"), str(exc))
        return None
    ok = True
    for key, (low, high) in _LIMITS.items():
        value = getattr(raw, key)
        if not low <= value <= high:
            fail((*path, key), f"expected {low}..{high}, got {value}")
            ok = False
    if spec.kind == "sg":
        assert spec.path is not None
        if outside_roots(spec.path, roots):
            fail((*path, "backend"), f"{spec.path} is outside state_dir and allowed_dirs")
            ok = False
        for key in sorted(given - {"backend"}):
            fail((*path, key), f"an SG_IO backend ({spec.path}) takes no {key}")
            ok = False
        return spec if ok else None
    initiator = raw.backend_initiator
    if initiator is not None and (
        not initiator.startswith(("iqn.", "eui.", "naa."))
        or not set(initiator.lower()) <= _IQN_CHARS | {"."}
        or len(initiator) > 223
    ):
        fail((*path, "backend_initiator"), f'expected an iqn./eui./naa. name, got "{initiator}"')
        ok = False
    chap = _chap(path, raw, secret_dir, fail)
    if chap is False or chap is True:
        return None
    if not ok:
        return None
    return attrs.evolve(
        spec, chap=chap, initiator_name=initiator or "",
        queue_depth=raw.backend_queue_depth, command_timeout=float(raw.backend_timeout),
    )  # fmt: skip


def _chap(
    path: KeyPath, raw: RawDevice, secret_dir: Path, fail: Callable[[KeyPath, str], None]
) -> BackendChap | bool | None:
    """The CHAP credentials (None: none; False: wrong, reported)."""
    if raw.backend_chap is None:
        if raw.backend_mutual is not None:
            fail((*path, "backend_mutual"), "needs backend_chap: we prove ourselves first")
            return False
        return None
    ours = resolve_chap((*path, "backend_chap"), raw.backend_chap, secret_dir, fail)
    theirs = None
    if raw.backend_mutual is not None:
        theirs = resolve_chap((*path, "backend_mutual"), raw.backend_mutual, secret_dir, fail)
        if theirs is None:
            return False
    if ours is None:
        return False
    return BackendChap(
        ours.user, ours.secret,
        theirs.user if theirs else None, theirs.secret if theirs else None,
        secret_file=ours.secret_file, target_secret_file=theirs.secret_file if theirs else None,
    )  # fmt: skip


def backend_to_dict(spec: BackendSpec) -> dict[str, Any]:
    """The keys ``save`` writes back (secret files as referenced, inline secrets inline)."""
    out: dict[str, Any] = {"backend": spec.url}
    chap = spec.chap
    if chap is not None:
        out["backend_chap"] = (
            {"user": chap.user, "secret_file": chap.secret_file} if chap.secret_file
            else {"user": chap.user, "secret": chap.secret.decode()}
        )  # fmt: skip
        if chap.target_user is not None and chap.target_secret is not None:
            out["backend_mutual"] = (
                {"user": chap.target_user, "secret_file": chap.target_secret_file}
                if chap.target_secret_file
                else {"user": chap.target_user, "secret": chap.target_secret.decode()}
            )
    if spec.kind == "iscsi":
        if spec.initiator_name:
            out["backend_initiator"] = spec.initiator_name
        out["backend_queue_depth"] = spec.queue_depth
        out["backend_timeout"] = spec.command_timeout
    return out
