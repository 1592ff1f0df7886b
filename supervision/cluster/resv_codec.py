"""One LU's reservation state as an etcd value, and back (sans-I/O).

The value is JSON: the persistent state in the APTPL file's format
(``actors/pr_store.py``), the SPC-2 holder, and the change that produced this
revision (issuing nexus, the UNIT ATTENTIONs it raised, the registrants whose
tasks PREEMPT AND ABORT aborts, the node that made it). A node that sees the
revision through its watch applies that change to its own nexuses, so a
preemption made through node B reaches its victim on node A.

Anything else found under the key (another program's value, a truncated or
huge one) is refused with ValueError and the node keeps its last good state.
"""

from __future__ import annotations

import json
from typing import Any

from pyscst.actors.persistent_reservations import Notice
from pyscst.actors.pr_state import Registrant
from pyscst.actors.pr_store import from_json, to_json
from pyscst.actors.shared_state import ResvChange, ResvState
from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import Asc

FORMAT = 1
#: a value larger than this is not read
MAX_VALUE = 1 << 20
#: the only conditions a change may raise on other nodes
_NOTICES = {a.value: a for a in (
    Asc.RESERVATIONS_PREEMPTED, Asc.RESERVATIONS_RELEASED, Asc.REGISTRATIONS_PREEMPTED
)}  # fmt: skip
_MALFORMED = (KeyError, TypeError, AttributeError, IndexError, StopIteration, UnicodeDecodeError)
_NEXUS_FIELDS = ("initiator_name", "initiator_port", "target_name", "target_port")


def _nexus_json(nexus: Nexus | None) -> dict[str, Any] | None:
    if nexus is None:
        return None
    return {
        **{f: getattr(nexus, f) for f in _NEXUS_FIELDS},
        "relative_port": nexus.relative_port,
        "isid": nexus.isid,
    }


def _nexus(raw: object) -> Nexus | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("nexus: expected an object")
    names = [raw[f] for f in _NEXUS_FIELDS]
    if not all(isinstance(n, str) and len(n) <= 1024 for n in names):
        raise ValueError("nexus: names must be short strings")
    numbers = raw["relative_port"], raw["isid"]
    if not all(type(n) is int and 0 <= n < 1 << 48 for n in numbers):
        raise ValueError("nexus: relative_port/isid must be small integers")
    return Nexus(names[0], names[1], names[2], names[3], numbers[0], numbers[1])


def _registrant_json(who: Registrant) -> dict[str, Any]:
    return {
        "initiator": who.initiator_name,
        "isid": who.isid,
        "target_port": who.target_port,
        "relative_port": who.relative_port,
    }


def _registrant(raw: object) -> Registrant:
    if not isinstance(raw, dict):
        raise ValueError("registrant: expected an object")
    name, isid, port, rel = raw["initiator"], raw["isid"], raw["target_port"], raw["relative_port"]
    if not isinstance(name, str) or not (port is None or isinstance(port, str)):
        raise ValueError("registrant: names must be strings")
    if not (isid is None or type(isid) is int) or type(rel) is not int:
        raise ValueError("registrant: isid/relative_port must be integers")
    return Registrant(name, isid, port, rel)


def encode(change: ResvChange, node: str) -> bytes:
    doc = {
        "format": FORMAT,
        "pr": to_json(change.state.pr),
        "spc2": _nexus_json(change.state.spc2),
        "change": {
            "node": node,
            "by": _nexus_json(change.by),
            "notices": [[_registrant_json(n.who), list(n.asc.value)] for n in change.notices],
            "abort": [_registrant_json(w) for w in change.abort],
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(value: bytes) -> tuple[ResvChange, str]:
    """(the change this value records, the node that made it); ValueError if it is
    not such a value."""
    if len(value) > MAX_VALUE:
        raise ValueError(f"value of {len(value)} bytes (at most {MAX_VALUE})")
    try:
        doc = json.loads(value)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a pyscst reservation record")
        pr = from_json(doc["pr"])
        spc2 = _nexus(doc["spc2"])
        change = doc["change"]
        node = change["node"]
        if not isinstance(node, str):
            raise ValueError("change.node: expected a string")
        notices = []
        for who, asc in change["notices"]:
            code = tuple(asc) if isinstance(asc, list) else None
            if code not in _NOTICES:
                raise ValueError(f"change.notices: {asc!r:.40} is not a reservation UA")
            notices.append(Notice(_registrant(who), _NOTICES[code]))
        abort = tuple(_registrant(w) for w in change["abort"])
        by = _nexus(change["by"])
    except _MALFORMED as exc:
        raise ValueError(f"malformed reservation record: {exc!r:.80}") from None
    except RecursionError:
        raise ValueError("malformed reservation record: nested too deep") from None
    return ResvChange(ResvState(pr, spc2), by=by, notices=tuple(notices), abort=abort), node
