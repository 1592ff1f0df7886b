"""APTPL files: what is written, that it round-trips, and what APTPL=0 does."""

from __future__ import annotations

import json
from pathlib import Path

from pyscst.actors.pr_state import PrState, PrType, Registrant, Registration, Reservation
from pyscst.actors.pr_store import AptplStore, from_json, to_json

A = Registrant("iqn.2026-11.org.example:a", 0x400001, "iqn.2026-11.org.pyscst:t,t,0x0001", 1)
B = Registrant("iqn.2026-11.org.example:b", None, None, 1)
STATE = PrState(
    generation=7,
    registrations=(Registration(A, 0xAAAA), Registration(B, 0xFFFFFFFFFFFFFFFF)),
    reservation=Reservation(PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, A),
    aptpl=True,
)


def test_json_round_trip() -> None:
    assert from_json(json.loads(json.dumps(to_json(STATE)))) == STATE
    ar = PrState(
        registrations=(Registration(A, 1),),
        reservation=Reservation(PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, None),
        aptpl=True,
    )
    assert from_json(to_json(ar)) == ar


async def test_save_load_and_aptpl_off_removes(tmp_path: Path) -> None:
    path = tmp_path / "pr" / "disk0.json"
    store = AptplStore(path)
    assert store.load() is None
    await store.save(STATE)
    assert [p.name for p in path.parent.iterdir()] == ["disk0.json"]  # no temp file left
    assert AptplStore(path).load() == STATE
    await store.save(PrState(generation=8))  # APTPL=0: nothing survives a power loss
    assert not path.exists()
    await store.save(PrState(generation=9))  # and nothing to remove is fine
    assert not path.exists()


async def test_unreadable_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "disk0.json"
    path.write_text("{not json")
    assert AptplStore(path).load() is None
    path.write_text(json.dumps({**to_json(STATE), "version": 99}))
    assert AptplStore(path).load() is None
