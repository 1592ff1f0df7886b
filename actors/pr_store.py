"""APTPL: persistent reservations that survive a power loss (daemon restart).

While the last REGISTER said APTPL=1, every change of a logical unit's PR
state is written to ``<state_dir>/pr/<device>.json`` before the PERSISTENT
RESERVE OUT that made it completes: a temp file, fsync, rename, fsync of the
directory, so a crash leaves the old or the new state, never a torn one.
APTPL=0 removes the file. The LU loads it when it first starts. No symlink
below ``state_dir`` is followed (devices.confine): a link planted as
``pr/NAME.json``, its temp file or ``pr`` itself is refused or replaced,
never written through.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import trio

from pyscst.actors.pr_state import PrState, PrType, Registrant, Registration, Reservation
from pyscst.devices.confine import read_beneath, unlink_beneath, write_beneath

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def to_json(state: PrState) -> dict[str, Any]:
    regs = list(state.registrations)
    res = state.reservation
    reservation: dict[str, Any] | None = None
    if res is not None:
        holder = None
        if res.holder is not None:
            holder = next(i for i, r in enumerate(regs) if r.who == res.holder)
        reservation = {"type": int(res.type), "scope": res.scope, "holder": holder}
    return {
        "version": FORMAT_VERSION,
        "generation": state.generation,
        "aptpl": state.aptpl,
        "registrations": [
            {
                "key": r.key,
                "initiator": r.who.initiator_name,
                "isid": r.who.isid,
                "target_port": r.who.target_port,
                "relative_port": r.who.relative_port,
            }
            for r in regs
        ],
        "reservation": reservation,
    }


def from_json(doc: dict[str, Any]) -> PrState:
    """The state a file holds; ValueError/KeyError/TypeError if it is not one."""
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown format version {doc.get('version')!r}")
    regs = tuple(
        Registration(
            Registrant(
                str(r["initiator"]),
                None if r["isid"] is None else int(r["isid"]),
                None if r["target_port"] is None else str(r["target_port"]),
                int(r["relative_port"]),
            ),
            int(r["key"]) & 0xFFFFFFFFFFFFFFFF,
        )
        for r in doc["registrations"]
    )
    res = None
    raw = doc.get("reservation")
    if raw is not None:
        holder_index = raw["holder"]
        holder = None if holder_index is None else regs[int(holder_index)].who
        ptype = PrType(int(raw["type"]))
        if (holder is None) != ptype.all_registrants:
            raise ValueError("reservation holder does not match its type")
        res = Reservation(ptype, holder, int(raw["scope"]))
    return PrState(
        generation=int(doc["generation"]) & 0xFFFFFFFF,
        registrations=regs,
        reservation=res,
        aptpl=bool(doc["aptpl"]),
    )


def write_atomically(path: Path, data: bytes, root: Path | None = None) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the directory;
    nothing below ``root`` (default: the file's directory) may be a symlink."""
    write_beneath(path, (root or path.parent,), data)


class AptplStore:
    """The APTPL file of one logical unit."""

    def __init__(self, path: Path, root: Path | None = None) -> None:
        self.path = path
        #: no symlink below this is followed: state_dir for state_dir/pr/NAME.json
        self.root = root if root is not None else path.parent.parent
        #: :meth:`load` ran (the LU loads once: a supervisor restart keeps memory)
        self.loaded = False
        #: a file may exist: APTPL=0 must remove it
        self._present = True

    def load(self) -> PrState | None:
        """The saved state, or None (no file, or one that cannot be read: logged)."""
        self.loaded = True
        try:
            text = read_beneath(self.path, (self.root,)).decode()
        except FileNotFoundError:
            self._present = False
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.error("%s: cannot read persistent reservations: %s", self.path, exc)
            return None
        try:
            state = from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, IndexError, StopIteration) as exc:
            log.error("%s: ignoring unreadable persistent reservations: %s", self.path, exc)
            return None
        log.info(
            "%s: restored %d registrations%s",
            self.path,
            len(state.registrations),
            "" if state.reservation is None else " and a reservation",
        )
        return state

    async def save(self, state: PrState) -> None:
        """Write ``state`` if APTPL is on, else remove any saved state. Raises OSError."""
        if state.aptpl:
            data = json.dumps(to_json(state), indent=1).encode()
            await trio.to_thread.run_sync(write_atomically, self.path, data, self.root)
            self._present = True
        elif self._present:
            await trio.to_thread.run_sync(self._remove)
            self._present = False

    def _remove(self) -> None:
        unlink_beneath(self.path, (self.root,))
