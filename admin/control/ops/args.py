"""Typed access to an op's ``args`` object, with errors that name the argument.

Whatever a client sends is untrusted; every op reads its arguments through
:class:`Args`, so a wrong type or a missing key becomes an ``invalid`` reply
naming ``args.KEY`` instead of an exception deep inside the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyscst.admin.control.protocol import ErrorCode, OpError


class Args:
    """The arguments of one request; unknown keys are rejected by :meth:`done`."""

    def __init__(self, op: str, args: Mapping[str, Any]) -> None:
        self.op = op
        self._args = dict(args)
        self._used: set[str] = set()

    def _get(self, key: str, required: bool) -> Any:
        self._used.add(key)
        value = self._args.get(key)
        if value is None and required:
            raise OpError(ErrorCode.INVALID, f"{self.op} needs {key!r}", f"args.{key}")
        return value

    def _wrong(self, key: str, expected: str, value: Any) -> OpError:
        return OpError(
            ErrorCode.INVALID,
            f"{self.op}: {key!r} must be {expected}, got {json_type(value)} {value!r}",
            f"args.{key}",
        )

    def text(self, key: str) -> str:
        value = self._get(key, True)
        if not isinstance(value, str) or not value:
            raise self._wrong(key, "a non-empty string", value)
        return value

    def opt_text(self, key: str) -> str | None:
        value = self._get(key, False)
        if value is not None and (not isinstance(value, str) or not value):
            raise self._wrong(key, "a non-empty string", value)
        return value

    def integer(self, key: str) -> int:
        value = self._get(key, True)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(key, "an integer", value)
        return value

    def opt_integer(self, key: str) -> int | None:
        value = self._get(key, False)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise self._wrong(key, "an integer", value)
        return value

    def opt_number(self, key: str) -> float | None:
        """An integer or a float (seconds, ...), or None when absent."""
        value = self._get(key, False)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise self._wrong(key, "a number", value)
        return None if value is None else float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def opt_flag(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def opt_strings(self, key: str) -> list[str] | None:
        value = self._get(key, False)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise self._wrong(key, "a list of strings", value)
        return value

    def opt_size(self, key: str) -> int | str | None:
        """:meth:`size`, or None when absent."""
        if self._args.get(key) is None:
            self._used.add(key)
            return None
        return self.size(key)

    def size(self, key: str) -> int | str:
        """A size: bytes as an integer, or a string such as ``"1G"`` (checked later)."""
        value = self._get(key, True)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self._wrong(key, 'a size (bytes, or a string like "1G")', value)
        return value

    def done(self) -> None:
        """Reject keys the op does not know (a typo should not be ignored silently)."""
        unknown = sorted(set(self._args) - self._used)
        if unknown:
            known = ", ".join(sorted(self._used)) or "none"
            raise OpError(
                ErrorCode.INVALID,
                f"{self.op}: unknown argument {unknown[0]!r} (known: {known})",
                f"args.{unknown[0]}",
            )


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
