"""The control protocol shared by the daemon's endpoint, ``pyscst admin`` and the console.

JSON lines over a Unix stream socket, one object per line, UTF-8, at most
:data:`MAX_LINE` bytes. A request ``{"v": 1, "id": N, "op": "...", "args": {}}``
gets exactly one reply with the same id: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code", "message", "path"?}}``. Keeping the records,
codes and codec here (no I/O) lets both ends and the tests agree by import.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

import attrs

VERSION = 1
MAX_LINE = 1 << 20  # bytes per line, newline included


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"  # not a valid request line
    NOT_FOUND = "not_found"  # no such device / target / group / LUN / session
    EXISTS = "exists"  # already there
    IN_USE = "in_use"  # refused without force: a session uses it
    INVALID = "invalid"  # arguments or the resulting configuration are invalid
    UNSUPPORTED = "unsupported"  # unknown op, or a change that cannot be applied live
    FORBIDDEN = "forbidden"  # the peer may not use the control socket (SO_PEERCRED)
    INTERNAL = "internal"  # a failure inside the daemon (logged there)


class OpError(Exception):
    """An operation failed; becomes an error reply (and is raised again by clients)."""

    def __init__(self, code: ErrorCode | str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.message = message
        self.path = path

    def __str__(self) -> str:
        where = f" (at {self.path})" if self.path else ""
        return f"{self.code}: {self.message}{where}"


@attrs.frozen
class Request:
    id: int
    op: str
    args: Mapping[str, Any] = attrs.field(factory=dict)

    def encode(self) -> bytes:
        doc = {"v": VERSION, "id": self.id, "op": self.op, "args": dict(self.args)}
        return _line(doc)


@attrs.frozen
class Reply:
    id: int | None
    ok: bool
    result: Any = None
    error: OpError | None = None

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"v": VERSION, "id": self.id, "ok": self.ok}
        if self.ok:
            doc["result"] = self.result
        else:
            assert self.error is not None
            err: dict[str, Any] = {"code": str(self.error.code), "message": self.error.message}
            if self.error.path is not None:
                err["path"] = self.error.path
            doc["error"] = err
        return _line(doc)

    @classmethod
    def success(cls, request_id: int | None, result: Any) -> Reply:
        return cls(request_id, True, result)

    @classmethod
    def failure(cls, request_id: int | None, error: OpError) -> Reply:
        return cls(request_id, False, error=error)

    def unwrap(self) -> Any:
        """The result, or raise the :class:`OpError` it carries."""
        if not self.ok:
            assert self.error is not None
            raise self.error
        return self.result


def _line(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode_request(line: bytes) -> Request:
    """Parse one request line; :class:`OpError` ``bad_request`` says what is wrong."""
    doc = _decode_object(line, "request")
    request_id = doc.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise OpError(ErrorCode.BAD_REQUEST, 'request needs an integer "id"', "id")
    if doc.get("v") != VERSION:
        raise OpError(
            ErrorCode.BAD_REQUEST,
            f"protocol version {doc.get('v')!r} not supported (this daemon speaks {VERSION})",
            "v",
        )
    op = doc.get("op")
    if not isinstance(op, str) or not op:
        raise OpError(ErrorCode.BAD_REQUEST, 'request needs a string "op"', "op")
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise OpError(ErrorCode.BAD_REQUEST, '"args" must be an object', "args")
    return Request(request_id, op, args)


def request_id_of(line: bytes) -> int | None:
    """Best effort: the id of a line that failed to decode, to echo it back."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def decode_reply(line: bytes) -> Reply:
    """Parse one reply line (client side); ValueError if it is not one."""
    try:
        doc = _decode_object(line, "reply")
    except OpError as exc:
        raise ValueError(exc.message) from None
    request_id = doc.get("id")
    if doc.get("ok") is True:
        return Reply.success(request_id, doc.get("result"))
    err = doc.get("error")
    if not isinstance(err, dict):
        raise ValueError("error reply without an error object")
    return Reply.failure(
        request_id,
        OpError(str(err.get("code", "internal")), str(err.get("message", "")), err.get("path")),
    )


def _decode_object(line: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise OpError(ErrorCode.BAD_REQUEST, f"{what} is not UTF-8 text") from None
    except ValueError as exc:
        raise OpError(ErrorCode.BAD_REQUEST, f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise OpError(ErrorCode.BAD_REQUEST, f"{what} must be a JSON object")
    return doc
