"""A node's shared reservation store against a scripted etcd: lost races, errors, fences."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from pyscst.actors.reservations import plan_prout
from pyscst.actors.shared_state import ResvChange, ResvState
from pyscst.admin.config.model import ClusterSettings
from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import ScsiError, Status
from pyscst.supervision.cluster import resv_codec
from pyscst.supervision.cluster.etcd_proto import EtcdError, KeyValue, TxnResult
from pyscst.supervision.cluster.resv_store import EtcdReservationStore

HERE = Nexus.iscsi("iqn.2026-11.org.example:here", 1, "iqn.t", 1)
THERE = Nexus.iscsi("iqn.2026-11.org.example:there", 2, "iqn.t", 2)


def register(nexus: Nexus, sark: int) -> Any:
    params = sark.to_bytes(16, "big") + bytes(8)  # key 0, SARK, no flags
    cdb = bytes((0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0))
    return plan_prout(nexus, cdb, params, lambda _rel: None)


class FakeEtcd:
    """One key: a CAS on a stale revision fails and reads the key back."""

    def __init__(self) -> None:
        self.revision = 0
        self.kv: KeyValue | None = None
        self.error: Exception | None = None
        #: the txn is applied, then its answer is lost
        self.lose_answer = False
        #: the txn fails without reaching etcd (reads still work)
        self.cas_error: Exception | None = None
        #: before answering a CAS, another node writes this first (a lost race)
        self.racer: list[bytes] = []

    def write(self, key: bytes, value: bytes) -> KeyValue:
        self.revision += 1
        self.kv = KeyValue(key, value, self.revision)
        return self.kv

    async def cas(self, key: bytes, mod_revision: int, value: bytes) -> TxnResult:
        await trio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        if self.cas_error is not None:
            raise self.cas_error
        if self.racer:
            self.write(key, self.racer.pop(0))
        current = self.kv.mod_revision if self.kv else 0
        if current != mod_revision:
            return TxnResult(False, self.revision, self.kv)
        self.write(key, value)
        if self.lose_answer:
            raise EtcdError("connection reset while reading the answer")
        return TxnResult(True, self.revision)

    async def range(self, key: bytes, *, prefix: bool = False) -> tuple[int, list[KeyValue]]:
        await trio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        return self.revision, [self.kv] if self.kv else []


@attrs.define
class FakeNode:
    client: FakeEtcd
    settings: ClusterSettings = attrs.Factory(lambda: ClusterSettings(("http://x:1",), "here", 4))
    fenced: bool = False
    acked: list[tuple[str, int]] = attrs.Factory(list)

    def key(self, suffix: str) -> bytes:
        return f"/pyscst/{suffix}".encode()

    def ack(self, device: str, revision: int) -> None:
        self.acked.append((device, revision))

    async def wait_acks(self, device: str, revision: int) -> None:
        pass


def store_with(etcd: FakeEtcd) -> tuple[EtcdReservationStore, FakeNode, list[ResvChange]]:
    node = FakeNode(etcd)
    store = EtcdReservationStore(node, "d0")  # type: ignore[arg-type]
    seen: list[ResvChange] = []
    store.attach(seen.append, lambda asc: None)
    return store, node, seen


async def test_a_lost_race_replans_on_the_winners_state() -> None:
    etcd = FakeEtcd()
    store, _node, seen = store_with(etcd)
    theirs = register(THERE, 0xB)(ResvState())
    etcd.racer.append(resv_codec.encode(theirs, "there"))

    async def watch() -> None:  # the watch delivers the winner's revision
        while etcd.kv is None:
            await trio.sleep(0.001)
        store.seen(etcd.kv, etcd.kv.mod_revision)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        change = await store.update(ResvState(), register(HERE, 0xA))
    keys = [r.key for r in change.state.pr.registrations]
    assert keys == [0xB, 0xA]  # ours on top of theirs, not instead of it
    assert change.state.pr.generation == 2
    assert seen and seen[0].state == theirs.state  # the LU was told of theirs first
    assert store.mod_revision == etcd.revision == 2
    decoded, origin = resv_codec.decode(etcd.kv.value if etcd.kv else b"")
    assert origin == "here" and decoded.state == change.state


async def test_a_race_lost_again_and_again_ends_in_busy() -> None:
    etcd = FakeEtcd()
    store, _node, _seen = store_with(etcd)
    other = resv_codec.encode(register(THERE, 0xB)(ResvState()), "there")
    etcd.racer.extend([other] * 20)

    async def watch() -> None:
        while True:
            if etcd.kv is not None:
                store.seen(etcd.kv, etcd.kv.mod_revision)
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        with trio.fail_after(5), pytest.raises(ScsiError) as err:
            await store.update(ResvState(), register(HERE, 0xA))
        nursery.cancel_scope.cancel()
    assert err.value.status == Status.BUSY
    assert etcd.revision == 8  # eight attempts, each beaten by the other node


async def test_etcd_errors_and_the_fence_answer_not_accessible() -> None:
    etcd = FakeEtcd()
    store, node, _seen = store_with(etcd)
    etcd.error = EtcdError("etcd unreachable: refused")
    with pytest.raises(ScsiError) as err:
        await store.update(ResvState(), register(HERE, 0xA))
    assert err.value.sense is not None and err.value.sense.asc == 0x04
    assert err.value.sense.ascq == 0x0C
    etcd.error = None
    node.fenced = True
    with pytest.raises(ScsiError) as err:
        await store.update(ResvState(), register(HERE, 0xA))
    assert err.value.sense is not None and err.value.sense.ascq == 0x0C
    assert etcd.kv is None  # nothing was written


def test_garbage_is_skipped_but_acknowledged_and_keeps_the_last_good_state() -> None:
    etcd = FakeEtcd()
    store, node, seen = store_with(etcd)
    good = register(THERE, 0xB)(ResvState())
    store.seen(etcd.write(b"/pyscst/lu/d0/resv", resv_codec.encode(good, "there")), 1)
    store.seen(etcd.write(b"/pyscst/lu/d0/resv", b"\x00garbage"), 2)
    assert store.state == good.state and len(seen) == 1
    assert store.mod_revision == 2  # the next CAS overwrites the garbage
    assert node.acked == [("d0", 1), ("d0", 2)]
    store.seen(None, 3)  # deleted: empty
    assert store.state == ResvState() and store.mod_revision == 0


async def test_a_lost_txn_answer_is_resolved_by_reading_the_key() -> None:
    etcd = FakeEtcd()
    store, _node, _seen = store_with(etcd)
    etcd.lose_answer = True
    change = await store.update(ResvState(), register(HERE, 0xA))
    assert [r.key for r in change.state.pr.registrations] == [0xA]
    assert store.mod_revision == etcd.revision == 1 and store.state == change.state
    # the txn never reached etcd (the key still holds the old value): given up, 04/0C
    etcd.lose_answer = False
    etcd.cas_error = EtcdError("connection refused")
    with pytest.raises(ScsiError) as err:
        await store.update(store.state, register(THERE, 0xB))
    assert err.value.sense is not None and err.value.sense.ascq == 0x0C
    assert etcd.revision == 1 and [r.key for r in store.state.pr.registrations] == [0xA]
