"""One LU's reservations in etcd: the cluster's ReservationStore (actors/shared_state.py).

The key ``<prefix>/lu/<device>/resv`` holds the state and the change that made
its revision (``resv_codec``). A change is a compare-and-swap on the key's
mod_revision: a node that loses waits until its watch has delivered the
winner's revision (raising that change's UAs here) and plans again on it. A
change completes when every other live member has acknowledged its revision.
LU resets travel through ``<prefix>/lu/<device>/reset`` the same way.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import trio

from pyscst.actors.shared_state import (
    SHARED_RESETS,
    ChangeListener,
    Plan,
    ResetListener,
    ResvChange,
    ResvState,
)
from pyscst.scsi.sense import Asc, ScsiError, SenseKey, Status
from pyscst.supervision.cluster import resv_codec
from pyscst.supervision.cluster.etcd_proto import EtcdError, KeyValue, TxnResult

if TYPE_CHECKING:
    from pyscst.supervision.cluster.node import ClusterNode

log = logging.getLogger(__name__)

#: a PROUT that loses the compare-and-swap this many times in a row gets BUSY
MAX_CAS_ATTEMPTS = 8


def unavailable() -> ScsiError:
    """A fenced or cut-off node: retry through another path (04/0C)."""
    return ScsiError.check(SenseKey.NOT_READY, Asc.LUN_NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE)


class EtcdReservationStore:
    """One LU's reservations in etcd (implements actors.shared_state.ReservationStore)."""

    shared = True

    def __init__(self, node: ClusterNode, device: str) -> None:
        self._node = node
        self.device = device
        self.key = node.key(f"lu/{device}/resv")
        #: the last reset of the LU made through any node
        self.reset_key = node.key(f"lu/{device}/reset")
        self._on_reset: ResetListener | None = None
        self.state = ResvState()
        #: the key's mod_revision as last seen (0: no key), the CAS compares on it
        self.mod_revision = 0
        #: every change of the key up to this store revision has been applied
        self.seen_at = 0
        self._listener: ChangeListener | None = None
        #: a txn of ours is on its way: our own change seen by the watch is
        #: applied by the txn's answer, not by the watch
        self.in_flight = False
        self._bad_revision = -1
        #: set (and replaced) whenever ``seen_at`` moves
        self._progress = trio.Event()

    async def _caught_up(self, revision: int) -> None:
        while self.seen_at < revision:
            await self._progress.wait()

    def _moved(self, revision: int, mod_revision: int) -> None:
        self.seen_at, self.mod_revision = revision, mod_revision
        self._progress.set()
        self._progress = trio.Event()

    def initial(self) -> ResvState | None:
        return self.state

    def attach(self, listener: ChangeListener, on_reset: ResetListener) -> None:
        self._listener = listener
        self._on_reset = on_reset

    async def announce_reset(self, asc: Asc) -> None:
        node = self._node
        if node.fenced or asc not in SHARED_RESETS:
            return
        value = json.dumps({"node": node.settings.node, "asc": list(asc.value)}).encode()
        try:
            revision = await node.client.put(self.reset_key, value)
        except EtcdError as exc:
            log.error("cluster: %s: reset not shared: %s", self.device, exc)
            return
        await node.wait_acks(self.device, revision)

    def reset_seen(self, kv: KeyValue) -> None:
        """Another node reset the LU (a value of ``reset_key``)."""
        node = self._node
        asc: Asc | None = None
        origin = None
        try:
            if len(kv.value) < 4096:
                doc = json.loads(kv.value)
                origin, asc = doc["node"], Asc(tuple(doc["asc"]))
        except (ValueError, KeyError, TypeError, RecursionError, UnicodeDecodeError):
            asc = None
        if asc not in SHARED_RESETS:
            log.error("cluster: ignoring reset record %r of %s", kv.value[:80], self.device)
        elif origin != node.settings.node and self._on_reset is not None:
            self._on_reset(asc)
        node.ack(self.device, kv.mod_revision)

    def seen(self, kv: KeyValue | None, revision: int) -> None:
        """The key as the watch (or a read) shows it at store revision ``revision``
        (``kv`` None: it does not exist)."""
        if revision <= self.seen_at:
            return
        if kv is None:
            self._moved(revision, 0)
            if self.state != ResvState():
                self._apply(ResvChange(ResvState()))
            self._node.ack(self.device, revision)
            return
        try:
            change, origin = resv_codec.decode(kv.value)
        except ValueError as exc:
            # a CAS may overwrite it; the last good state stays
            self._moved(revision, kv.mod_revision)
            if self._bad_revision != revision:
                self._bad_revision = revision
                log.error("cluster: ignoring %s at revision %d: %s",
                          kv.key.decode(errors="replace")[:200], revision, exc)  # fmt: skip
            self._node.ack(self.device, revision)
            return
        if origin == self._node.settings.node and self.in_flight:
            return  # our txn's answer applies it
        self._moved(revision, kv.mod_revision)
        self._apply(change)
        self._node.ack(self.device, revision)

    def _apply(self, change: ResvChange) -> None:
        self.state = change.state
        if self._listener is not None:
            self._listener(change)

    async def _cas(self, value: bytes) -> TxnResult:
        """The txn; if its answer is lost, one read tells whether it was applied
        (the key holds our value: done) before the command is given up (04/0C)."""
        client = self._node.client
        try:
            return await client.cas(self.key, self.mod_revision, value)
        except EtcdError as exc:
            error = exc
        try:
            _revision, kvs = await client.range(self.key)
        except EtcdError:
            kvs = []
        if kvs and kvs[0].value == value and kvs[0].mod_revision > self.mod_revision:
            log.warning("cluster: %s: txn answer lost (%s); the change was made", self.device,
                        error)  # fmt: skip
            return TxnResult(True, kvs[0].mod_revision)
        log.error("cluster: %s: reservation change not made: %s", self.device, error)
        raise unavailable() from error

    async def update(self, current: ResvState, plan: Plan) -> ResvChange:
        node = self._node
        for _attempt in range(MAX_CAS_ATTEMPTS):
            if node.fenced:
                raise unavailable()
            change = plan(self.state)
            if not change.changed:
                return change
            value = resv_codec.encode(change, node.settings.node)
            self.in_flight = True
            try:
                result = await self._cas(value)
            finally:
                self.in_flight = False
            if result.succeeded:
                self._moved(result.revision, result.revision)
                self.state = change.state
                node.ack(self.device, result.revision)  # applied here too (cluster.show)
                # done when every other live node has applied it (its UAs
                # raised, its tasks aborted, its copy current for READ/WRITE)
                await node.wait_acks(self.device, result.revision)
                return change
            # another node changed it first: catch up through the watch (which
            # delivers that change's UAs here), then plan again
            current_kv = result.current
            if current_kv is None:
                self.seen(None, result.revision)
                continue
            with trio.move_on_after(node.settings.lease_ttl / 2):
                await self._caught_up(current_kv.mod_revision)
            self.seen(current_kv, current_kv.mod_revision)
        log.warning("cluster: %s: reservation change lost %d races; BUSY", self.device,
                    MAX_CAS_ATTEMPTS)  # fmt: skip
        raise ScsiError(Status.BUSY)
