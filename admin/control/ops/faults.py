"""Control-plane operations on fault rules: ``fault.add``, ``fault.list``,
``fault.enable``, ``fault.disable``, ``fault.remove`` and ``fault.stats``.

Rules change while initiators run (that is the point: a disk that starts
failing mid-test), so these ops edit the daemon's one fault engine directly
through its own atomic methods; no restart, no reload. Arguments are the same
flat tables as ``[[faults]]`` in the config file, checked by the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import trio

from pyscst.actors.faults import FaultEngine, UnknownRule
from pyscst.admin.config.faults import parse_rule, rule_to_dict
from pyscst.admin.config.schema import Problem, format_key_path
from pyscst.admin.control.protocol import ErrorCode, OpError

FaultOp = Callable[[Mapping[str, Any]], Awaitable[Any]]


class _Named(Protocol):
    name: str


class FaultHost(Protocol):
    """What the ops need of the daemon (``pyscst.supervision.daemon.Daemon``)."""

    faults: FaultEngine

    @property
    def devices(self) -> Mapping[str, Any]: ...

    @property
    def directory(self) -> Iterable[_Named]: ...


def fault_operations(daemon: FaultHost) -> dict[str, FaultOp]:
    """The op table entries for fault injection, bound to ``daemon``."""
    engine = daemon.faults

    def rule_id(args: Mapping[str, Any]) -> str:
        value = args.get("id")
        if not isinstance(value, str) or not value:
            raise OpError(ErrorCode.INVALID, "expected a rule id", "id")
        return value

    def describe(status: dict[str, Any]) -> dict[str, Any]:
        return {**status, "rule": rule_to_dict(engine.rule(status["id"]))}

    async def add(args: Mapping[str, Any]) -> Any:
        body = args.get("rule", args)
        problems: list[Problem] = []
        devices = set(daemon.devices)
        targets = {t.name for t in daemon.directory}
        rule = parse_rule(body, (), problems, devices, targets, default_id=engine.new_id())
        if rule is None:
            first = problems[0]
            message = "; ".join(str(p) for p in problems)
            raise OpError(ErrorCode.INVALID, message, format_key_path(first.path))
        try:
            engine.add(rule, trio.current_time())
        except ValueError as exc:
            raise OpError(ErrorCode.EXISTS, str(exc), "id") from None
        return describe(engine.status(rule.id)[0])

    async def list_rules(args: Mapping[str, Any]) -> Any:
        return [describe(s) for s in engine.status()]

    def toggle(enabled: bool) -> FaultOp:
        async def op(args: Mapping[str, Any]) -> Any:
            name = rule_id(args)
            try:
                return describe(engine.set_enabled(name, enabled, trio.current_time()))
            except UnknownRule:
                raise OpError(ErrorCode.NOT_FOUND, f'no fault rule "{name}"', "id") from None

        return op

    async def remove(args: Mapping[str, Any]) -> Any:
        name = rule_id(args)
        try:
            rule = rule_to_dict(engine.rule(name))
            return {**engine.remove(name), "rule": rule}
        except UnknownRule:
            raise OpError(ErrorCode.NOT_FOUND, f'no fault rule "{name}"', "id") from None

    async def stats(args: Mapping[str, Any]) -> Any:
        name = args.get("id")
        try:
            statuses = engine.status(name if isinstance(name, str) else None)
        except UnknownRule:
            raise OpError(ErrorCode.NOT_FOUND, f'no fault rule "{name}"', "id") from None
        return [{**s, "recent": engine.recent(s["id"])} for s in statuses]

    return {
        "fault.add": add,
        "fault.list": list_rules,
        "fault.enable": toggle(True),
        "fault.disable": toggle(False),
        "fault.remove": remove,
        "fault.stats": stats,
    }
