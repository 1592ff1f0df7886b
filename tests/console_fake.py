"""An in-memory stand-in for the daemon's control endpoint, for console tests.

:class:`FakeBackend` keeps a small model (devices, targets with portals,
groups, initiators and LUN maps, sessions), answers the control ops the
console sends with the same result and error shapes as the protocol, records
every call, and writes ``config.save`` as TOML, so console tests can run a
full edit-and-save session without starting a daemon.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from pyscst.admin.control.protocol import ErrorCode, OpError, Reply, decode_request, request_id_of

TARGET = "iqn.2026-11.org.pyscst:test"


@attrs.define
class FakeBackend:
    """Answers control ops from a model; ``calls`` lists (op, args) in order."""

    save_path: Path
    devices: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    targets: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    sessions: list[dict[str, Any]] = attrs.field(factory=list)
    calls: list[tuple[str, dict[str, Any]]] = attrs.field(factory=list)
    closed: bool = False
    #: what the next config.reload reports as changed (kind -> names), as the daemon does
    reload_changes: dict[str, Any] = attrs.field(factory=dict)
    #: target -> its ALUA view as ``alua.show`` gives it (absent: ALUA off)
    alua: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    @classmethod
    def with_defaults(cls, save_path: Path) -> FakeBackend:
        fake = cls(save_path)
        fake.call("device.add", name="disk0", handler="vdisk_fileio", size=64 << 20)
        fake.call("target.add", name=TARGET)
        fake.call("portal.add", target=TARGET, portal="127.0.0.1:3261")
        fake.call("lun.add", target=TARGET, lun=0, device="disk0")
        fake.sessions.append({
            "target": TARGET, "tsih": 1, "initiator": "iqn.1994-05.com.redhat:client",
            "isid": "0x23d000000001", "address": "127.0.0.1:40000",
            "luns": [{"lun": 0, "commands": 12, "bytes_read": 4096, "bytes_written": 0}],
        })
        fake.calls.clear()
        return fake

    def close(self) -> None:
        self.closed = True

    def call(self, op: str, **args: Any) -> Any:
        self.calls.append((op, dict(args)))
        handler = getattr(self, "op_" + op.replace(".", "_"), None)
        if handler is None:
            raise OpError(ErrorCode.UNSUPPORTED, f'unknown op "{op}"')
        return handler(**args)

    # -- lookups -----------------------------------------------------------------

    def _device(self, name: str) -> dict[str, Any]:
        if name not in self.devices:
            raise OpError(ErrorCode.NOT_FOUND, f'no device "{name}"', f"/devices/{name}")
        return self.devices[name]

    def _target(self, name: str) -> dict[str, Any]:
        if name not in self.targets:
            raise OpError(ErrorCode.NOT_FOUND, f'no target "{name}"', f"/targets/{name}")
        return self.targets[name]

    def _group(self, target: str, group: str) -> dict[str, Any]:
        groups = self._target(target)["groups"]
        if group not in groups:
            where = f"/targets/{target}/groups/{group}"
            raise OpError(ErrorCode.NOT_FOUND, f'no group "{group}" in target {target}', where)
        return groups[group]

    def _luns(self, target: str, group: str | None) -> dict[int, dict[str, Any]]:
        if group is None:
            return self._target(target)["luns"]
        return self._group(target, group)["luns"]

    # -- ops ---------------------------------------------------------------------

    def op_hello(self) -> Any:
        return {"version": 1, "pyscst": "fake", "ops": sorted(
            n[3:].replace("_", ".", 1) for n in dir(self) if n.startswith("op_")
        )}

    def op_tree(self) -> Any:
        def luns(table: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"lun": n, **m} for n, m in sorted(table.items())]

        return {
            "devices": [{"name": n, **d} for n, d in self.devices.items()],
            "targets": [
                {
                    "name": n,
                    "alias": t["alias"],
                    "portals": list(t["portals"]),
                    "luns": luns(t["luns"]),
                    "groups": [
                        {"name": g, "initiators": list(b["initiators"]), "luns": luns(b["luns"])}
                        for g, b in t["groups"].items()
                    ],
                }
                for n, t in self.targets.items()
            ],
            "sessions": [dict(s) for s in self.sessions],
            "alua": list(self.alua.values()),
        }

    def op_alua_set(self, target: str, group: str, state: str, transition: Any = None) -> Any:
        view = self.alua.get(target, {"port_groups": []})
        found = [g for g in view["port_groups"] if g["name"] == group]
        if not found:
            raise OpError(ErrorCode.NOT_FOUND, f"target {target} has no port group {group}")
        before, found[0]["state"] = found[0]["state"], state
        return {"message": f"port group {group} of {target}: {before} -> {state}", **view}

    def op_device_add(self, name: str, handler: str, size: int, **extra: Any) -> Any:
        if name in self.devices:
            raise OpError(ErrorCode.EXISTS, f'device "{name}" already exists', f"/devices/{name}")
        if handler not in ("vdisk_fileio", "vdisk_nullio"):
            raise OpError(ErrorCode.INVALID, f'unknown handler "{handler}"', "args.handler")
        self.devices[name] = {
            "handler": handler, "size": size, "block_size": extra.get("block_size", 512),
            "read_only": extra.get("read_only", False),
            "write_cache": extra.get("write_cache", True),
            "path": extra.get("path", f"{name}.img" if handler == "vdisk_fileio" else None),
        }
        return {"name": name}

    def op_device_remove(self, name: str, force: bool = False) -> Any:
        self._device(name)
        users = [
            t for t, body in self.targets.items()
            if any(m["device"] == name for m in body["luns"].values())
        ]
        if users and not force:
            raise OpError(
                ErrorCode.IN_USE, f"device {name} is mapped in {users[0]}; use force",
                f"/devices/{name}",
            )
        del self.devices[name]
        return None

    def op_device_resize(self, name: str, size: int) -> Any:
        self._device(name)["size"] = size

    def op_device_set(self, name: str, read_only: bool) -> Any:
        self._device(name)["read_only"] = read_only

    def op_device_restart(self, name: str) -> Any:
        device = self._device(name)
        device["state"] = "online"
        return {"message": f"device {name} restarted: online", "state": "online"}

    def op_device_eject(self, name: str) -> Any:
        self._device(name)["medium"] = "absent"
        return {"message": f"device {name}: medium ejected", "medium": "absent"}

    def op_device_load(self, name: str, path: str | None = None) -> Any:
        self._device(name)["medium"] = "present"
        return {"message": f"device {name}: medium loaded", "medium": "present"}

    def op_target_add(self, name: str, alias: str | None = None) -> Any:
        if not name.startswith(("iqn.", "eui.", "naa.")):
            raise OpError(ErrorCode.INVALID, f'"{name}" is not an iSCSI name', "args.name")
        if name in self.targets:
            raise OpError(ErrorCode.EXISTS, f"target {name} already exists", f"/targets/{name}")
        self.targets[name] = {"alias": alias, "portals": [], "luns": {}, "groups": {}}

    def op_target_remove(self, name: str, force: bool = False) -> Any:
        self._target(name)
        del self.targets[name]

    def op_portal_add(self, target: str, portal: str) -> Any:
        self._target(target)["portals"].append(portal)

    def op_portal_remove(self, target: str, portal: str) -> Any:
        self._target(target)["portals"].remove(portal)

    def op_group_add(self, target: str, group: str, initiators: list[str] | None = None) -> Any:
        if not initiators:
            raise OpError(ErrorCode.INVALID, "group.add: give initiators", "args.initiators")
        self._target(target)["groups"][group] = {"initiators": list(initiators), "luns": {}}

    def op_group_remove(self, target: str, group: str) -> Any:
        self._group(target, group)
        del self._target(target)["groups"][group]

    def op_initiator_add(self, target: str, group: str, pattern: str) -> Any:
        self._group(target, group)["initiators"].append(pattern)

    def op_initiator_remove(self, target: str, group: str, pattern: str) -> Any:
        self._group(target, group)["initiators"].remove(pattern)

    def op_lun_add(
        self, target: str, lun: int, device: str, group: str | None = None,
        read_only: bool = False,
    ) -> Any:
        table = self._luns(target, group)
        self._device(device)
        if lun in table:
            raise OpError(ErrorCode.EXISTS, f"LUN {lun} is already mapped in {target}")
        table[lun] = {"device": device, "read_only": read_only}

    def op_lun_remove(
        self, target: str, lun: int, group: str | None = None, force: bool = False
    ) -> Any:
        table = self._luns(target, group)
        if lun not in table:
            raise OpError(ErrorCode.NOT_FOUND, f"no LUN {lun} in {target}")
        del table[lun]

    def op_lun_set(self, target: str, lun: int, read_only: bool, group: str | None = None) -> Any:
        self._luns(target, group)[lun]["read_only"] = read_only

    def op_session_close(self, target: str, tsih: int) -> Any:
        before = len(self.sessions)
        self.sessions = [
            s for s in self.sessions if not (s["target"] == target and s["tsih"] == tsih)
        ]
        if len(self.sessions) == before:
            raise OpError(ErrorCode.NOT_FOUND, f"no session {tsih} on {target}")

    def op_reset_lun(self, device: str) -> Any:
        self._device(device)

    def op_reset_target(self, target: str) -> Any:
        self._target(target)

    def op_stats(self, **args: Any) -> Any:
        return {"commands": 12, "bytes_read": 4096, "bytes_written": 0, "errors": 0,
                "latency_us": {"p50": 80, "p90": 120, "p99": 300, "max": 900}}

    def op_config_save(self, path: str | None = None) -> Any:
        target = Path(path) if path else self.save_path
        doc = {
            "devices": {
                n: {k: v for k, v in d.items() if v is not None} for n, d in self.devices.items()
            },
            "targets": {
                n: {
                    "portals": t["portals"],
                    "luns": [{"lun": k, **m} for k, m in sorted(t["luns"].items())],
                    **({"alias": t["alias"]} if t["alias"] else {}),
                }
                for n, t in self.targets.items()
            },
        }
        target.write_text(tomli_w.dumps(doc))
        return {"path": str(target)}

    def op_config_reload(self) -> Any:
        kinds = ("devices_added", "devices_removed", "devices_replaced", "devices_resized",
                 "devices_read_only", "targets_added", "targets_removed", "targets_changed",
                 "portals_added", "portals_removed", "restart_required")
        changes: dict[str, Any] = {k: [] for k in kinds}
        changes["log_level"] = None
        changes.update(self.reload_changes)
        return {"path": str(self.save_path), "changes": changes}


@contextlib.contextmanager
def fake_control_socket(backend: FakeBackend, path: Path) -> Iterator[Path]:
    """Serve ``backend`` on a Unix socket with the real protocol codec (a thread).

    Lets tests run the real ``pyscst console`` process without a daemon.
    """
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()
    lock = threading.Lock()

    def answer(conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    conn.sendall(_reply(line).encode())

    def _reply(line: bytes) -> Reply:
        try:
            request = decode_request(line)
        except OpError as exc:
            return Reply.failure(request_id_of(line), exc)
        try:
            with lock:
                return Reply.success(request.id, backend.call(request.op, **request.args))
        except OpError as exc:
            return Reply.failure(request.id, exc)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.2)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
