"""One daemon as a member of a cluster coordinated through etcd.

Several daemons export the same devices (on storage all of them reach). What an
initiator relies on across them lives in etcd under ``[cluster] prefix``::

    <prefix>/members/<node>        this node is alive (the key lives on its lease)
    <prefix>/lu/<device>/resv      persistent + SPC-2 reservations, with the change
                                   that made each revision (resv_codec.py)
    <prefix>/lu/<device>/reset     the last LU reset made through any node
    <prefix>/acks/<device>/<node>  the revision of the device's state <node> applied
    <prefix>/beats/<node>          this node's heartbeat, which its own watch must return
    <prefix>/alua/<target>/<group> a port group's access state (alua_sync.py)

Each node keeps a local copy of every LU's reservations, current through one
watch on the prefix, so READ and WRITE check only memory. A change (PROUT,
RESERVE, RELEASE) is a compare-and-swap txn on the key's revision: of two nodes
changing it at once, one wins and the other replans on the winner's state.

Membership is a lease of ``lease_ttl`` seconds renewed every third of it. A node
that has not renewed it for half the TTL *fences itself*: every LU refuses every
medium-touching command with NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET
PORT IN UNAVAILABLE STATE (04/0C: a multipath initiator retries on another
path), and no write leaves it. etcd drops the lease only a full TTL after the
last renewal reached it, so the fence is up before any other node can see this
one gone. Once it renews again (or, its lease lost, registers anew), it reads
the shared state afresh and lifts the fence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import trio

from pyscst.actors.pr_state import PrState
from pyscst.actors.shared_state import ResvChange, ResvState
from pyscst.admin.config.model import ClusterSettings
from pyscst.supervision.cluster.alua_sync import AluaSync, member_groups
from pyscst.supervision.cluster.etcd_client import EtcdClient
from pyscst.supervision.cluster.etcd_proto import EtcdError, EventType, WatchEvent
from pyscst.supervision.cluster.resv_store import EtcdReservationStore

log = logging.getLogger(__name__)

#: fence when the lease has gone unrenewed this share of its TTL
FENCE_AFTER = 0.5
#: fence when the watch has not delivered this node's own heartbeat for this share
#: of the TTL: a watch that stalls silently would leave the node serving a stale copy
#: (the issuer of a change waits for this node's acknowledgement only one TTL)
WATCH_STALE_AFTER = 0.75


class ClusterNode:
    """Lease, membership, fence and the LUs' shared reservations of this node
    (implements actors.shared_state.FenceSwitch)."""

    def __init__(
        self, settings: ClusterSettings, clock: Callable[[], float] = trio.current_time
    ) -> None:
        self.settings = settings
        self.client = EtcdClient(settings.etcd, timeout=max(0.5, settings.lease_ttl / 3))
        self._clock = clock
        self._fenced = True
        self.stores: dict[str, EtcdReservationStore] = {}
        self.lease = 0
        self._last_renewal = 0.0
        #: when the watch last delivered our own heartbeat (``beats/<node>``)
        self._last_beat = 0.0
        #: the watch has delivered every change up to here
        self.watch_revision = 0
        #: nodes seen alive
        self.members: set[str] = set()
        self.fence_count = 0
        #: no other node was alive when this one joined
        self._first_up = False
        #: (device, node) -> the revision of the device's reservations that node applied
        self.acks: dict[tuple[str, str], int] = {}
        #: set (and replaced) when an ack arrives or a member leaves
        self._ack_progress = trio.Event()
        #: device -> revision to acknowledge (the acker task writes them)
        self._ack_pending: dict[str, int] = {}
        self._ack_wakeup = trio.Event()
        #: ALUA port group states shared and failed over (attach_alua)
        self.alua: AluaSync | None = None
        #: member -> its own port groups (target -> names), from its record
        self.member_groups: dict[str, dict[str, list[str]]] = {}

    # -- FenceSwitch ------------------------------------------------------------------
    @property
    def fenced(self) -> bool:
        return self._fenced

    def _fence(self, why: str, level: int = logging.ERROR) -> None:
        if not self._fenced:
            self._fenced = True
            self.fence_count += 1
            if self.alua is not None:
                self.alua.fence()
            log.log(level, "cluster: node %s FENCED: %s; every LU refuses commands "
                    "(NOT READY 04/0C)", self.settings.node, why)  # fmt: skip

    def _unfence(self) -> None:
        if self._fenced:
            self._fenced = False
            if self.alua is not None:
                self.alua.unfence()
            log.warning("cluster: node %s serving: lease %x held, state read",
                        self.settings.node, self.lease)  # fmt: skip

    def status(self) -> dict[str, object]:
        """What ``pyscst admin cluster`` shows (the control op ``cluster.show``)."""
        me = self.settings.node
        return {
            "node": me,
            "etcd": list(self.settings.etcd),
            "lease": f"{self.lease:x}",
            "lease_ttl": self.settings.lease_ttl,
            "fenced": self._fenced,
            "fences": self.fence_count,
            "members": sorted(self.members),
            "devices": {
                name: {
                    "revision": store.seen_at,
                    "registrations": len(store.state.pr.registrations),
                    "reserved": store.state.pr.reservation is not None
                    or store.state.spc2 is not None,
                    "acknowledged_by": sorted(
                        m
                        for m in self.members
                        if m != me and self.acks.get((name, m), 0) >= store.seen_at
                    ),
                }
                for name, store in sorted(self.stores.items())
            },
        }

    # -- keys ---------------------------------------------------------------------------
    def key(self, suffix: str) -> bytes:
        return f"{self.settings.prefix}/{suffix}".encode()

    @property
    def _beat_key(self) -> bytes:
        return self.key(f"beats/{self.settings.node}")

    async def open_store(self, device: str) -> EtcdReservationStore:
        """The store of ``device``'s reservations, read from etcd (EtcdError if it
        cannot be). The first node of a cluster powers it on (:meth:`_power_on`)."""
        store = self.stores.get(device)
        if store is None:
            store = self.stores[device] = EtcdReservationStore(self, device)
            revision, kvs = await self.client.range(store.key)
            store.seen(kvs[0] if kvs else None, kvs[0].mod_revision if kvs else revision)
            if self._first_up:
                await self._power_on(store)
            # everything before this read is applied (the state was read whole)
            self.ack(device, max(revision, store.seen_at))
        return store

    # -- running ------------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join (EtcdError if etcd cannot be reached), then keep the lease and watch."""
        try:
            self._first_up = await self._join()
            # the store's revision now (any one-key read says it): the watch starts there
            revision, _kvs = await self.client.range(self.key(f"members/{self.settings.node}"))
            self.watch_revision = revision
            self._unfence()
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, self._keepalive_loop)
                nursery.start_soon(self._guarded, self._fence_watchdog)
                nursery.start_soon(self._guarded, self._watch_loop)
                nursery.start_soon(self._guarded, self._ack_loop)
                nursery.start_soon(self._guarded, self._alua_loop)
        finally:
            self._fenced = True
            with trio.CancelScope(shield=True):
                await self.client.aclose()

    async def leave(self) -> None:
        """An orderly stop: fence, then give up the lease (others see us go at once)."""
        self._fence("stopping", logging.INFO)
        if self.lease:
            with trio.move_on_after(2), trio.CancelScope(shield=True):
                try:
                    await self.client.revoke(self.lease)
                except EtcdError as exc:
                    log.warning("cluster: cannot revoke lease: %s", exc)

    # -- acknowledgements ------------------------------------------------------------
    def ack(self, device: str, revision: int) -> None:
        """This node has applied ``device``'s reservations up to ``revision``."""
        self._ack_pending[device] = max(revision, self._ack_pending.get(device, 0))
        self._ack_wakeup.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup = trio.Event()
            pending, self._ack_pending = self._ack_pending, {}
            for device, revision in pending.items():
                key = self.key(f"acks/{device}/{self.settings.node}")
                try:
                    await self.client.put(key, str(revision).encode(), self.lease)
                except EtcdError as exc:
                    log.warning("cluster: cannot acknowledge %s: %s", device, exc)
                    self.ack(device, revision)
                    await trio.sleep(0.2)

    def _missing_acks(self, device: str, revision: int) -> list[str]:
        me = self.settings.node
        return sorted(
            m for m in self.members if m != me and self.acks.get((device, m), 0) < revision
        )

    async def wait_acks(self, device: str, revision: int) -> None:
        """Until every other member applied ``revision`` of ``device``'s reservations;
        at most a lease TTL: by then a member that could not has fenced itself."""
        with trio.move_on_after(self.settings.lease_ttl):
            while self._missing_acks(device, revision):
                await self._ack_progress.wait()
        missing = self._missing_acks(device, revision)
        if missing:
            log.warning("cluster: %s: revision %d not acknowledged by %s within the lease TTL",
                        device, revision, ", ".join(missing))  # fmt: skip

    def _ack_moved(self) -> None:
        self._ack_progress.set()
        self._ack_progress = trio.Event()

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop``; if it fails (a bug: etcd's errors are handled inside),
        fence, log, and start it again: nothing here may end the daemon."""
        while True:
            try:
                await loop()
            except Exception:
                log.exception("cluster: %s failed", getattr(loop, "__name__", loop))
                self._fence("cluster coordination failed")
            await trio.sleep(1.0)

    async def _join(self) -> bool:
        """Take a lease and the membership key; True if no other node is alive."""
        member = self.key(f"members/{self.settings.node}")
        _rev, existing = await self.client.range(member)
        if existing and existing[0].lease != self.lease:
            # our own previous run, killed a moment ago, holds it until its lease
            # expires; a live twin holds it for good
            log.warning("cluster: node name %s still held (lease %x); waiting up to %ds",
                        self.settings.node, existing[0].lease, self.settings.lease_ttl)  # fmt: skip
            with trio.move_on_after(self.settings.lease_ttl + 1):
                while existing and existing[0].lease != self.lease:
                    await trio.sleep(0.5)
                    _rev, existing = await self.client.range(member)
        if existing and existing[0].lease != self.lease:
            # a live node with our name: two would share one membership and one
            # set of acknowledgements
            raise EtcdError(
                f"node name {self.settings.node!r} is taken by a live member "
                f"(lease {existing[0].lease:x}); [cluster] node must be unique"
            )
        sent = self._clock()
        self.lease, ttl = await self.client.grant(self.settings.lease_ttl)
        self._last_renewal = self._last_beat = sent
        await self.client.put(member, self._member_record(), self.lease)
        _rev, kvs = await self.client.range(self.key("members/"), prefix=True)
        others = {self._member_name(kv.key) for kv in kvs} - {self.settings.node, ""}
        for kv in kvs:
            self.member_groups[self._member_name(kv.key)] = member_groups(kv.value)
        self.members = others | {self.settings.node}
        listed = ", ".join(sorted(others)) or "none"
        log.info("cluster: node %s joined (lease %x, TTL %ds); other members: %s",
                 self.settings.node, self.lease, ttl, listed)  # fmt: skip
        return not others

    def _member_record(self) -> bytes:
        groups = self.alua.own_groups() if self.alua is not None else {}
        return json.dumps({"node": self.settings.node, "groups": groups}).encode()

    async def attach_alua(self, alua: AluaSync) -> None:
        """Share the targets' port group states (once the targets exist): adopt the
        others' from etcd, publish ours, and list our groups in our member record."""
        self.alua = alua
        alua.subscribe()
        _rev, kvs = await self.client.range(self.key("alua/"), prefix=True)
        for kv in kvs:
            self._alua_event(kv.key, kv.value, joining=True)
        await self.client.put(self.key(f"members/{self.settings.node}"), self._member_record(),
                              self.lease)  # fmt: skip
        alua.publish_own()

    def _alua_event(self, key: bytes, value: bytes | None, joining: bool = False) -> None:
        alua = self.alua
        if alua is None:
            return
        rest = key[len(self.key("alua/")) :].decode(errors="replace")
        target, _, group = rest.rpartition("/")
        alua.applied(target, group, value, self.settings.node, joining)

    async def _alua_loop(self) -> None:
        while True:
            alua = self.alua
            if alua is None:
                await trio.sleep(0.5)
                continue
            await alua.wakeup.wait()
            alua.wakeup = trio.Event()
            pending, alua.pending = alua.pending, {}
            for (target, group), state in pending.items():
                try:
                    await self.client.put(
                        self.key(f"alua/{target}/{group}"), alua.encode(state, self.settings.node)
                    )
                except EtcdError as exc:
                    log.warning("cluster: cannot publish ALUA state of %s/%s: %s",
                                target, group, exc)  # fmt: skip
                    alua.pending.setdefault((target, group), state)
                    alua.wakeup.set()
                    await trio.sleep(0.2)

    def _member_name(self, key: bytes) -> str:
        name = key[len(self.key("members/")) :]
        return name.decode(errors="replace")[:64]

    async def _resync(self) -> None:
        """Read every LU's state (a compacted watch, after a fence): one key per
        LU, so keys others put under the prefix cannot make the answer huge."""
        for store in list(self.stores.values()):
            revision, kvs = await self.client.range(store.key)
            if kvs:
                store.seen(kvs[0], kvs[0].mod_revision)
            elif store.mod_revision:
                store.seen(None, revision)  # deleted meanwhile
            self.ack(store.device, max(revision, store.seen_at))
            self.watch_revision = max(self.watch_revision, revision)

    async def _power_on(self, store: EtcdReservationStore) -> None:
        """The first node up after the whole cluster was down: its LUs were powered
        off, so only APTPL registrations survive, and no SPC-2 reservation does."""
        state = store.state
        after = ResvState(state.pr if state.pr.aptpl else PrState(state.pr.generation))
        if after == state:
            return
        log.info("cluster: %s: whole-cluster power on: %s", store.device,
                 "SPC-2 reservation dropped" if state.pr.aptpl
                 else "registrations without APTPL dropped")  # fmt: skip

        def plan(_state: ResvState) -> ResvChange:
            return ResvChange(after)

        await store.update(state, plan)

    async def _keepalive_loop(self) -> None:
        interval = self.settings.lease_ttl / 3
        failing = False
        while True:
            sent = self._clock()
            try:
                left = await self.client.keepalive(self.lease, wait=interval)
            except EtcdError as exc:
                if not failing:
                    log.warning("cluster: lease renewal failed: %s", exc)
                failing = True
            else:
                failing = False
                if left > 0:
                    self._last_renewal = sent
                    await self._beat(sent)
                    if self._fenced and self._watch_fresh():
                        try:
                            await self._resync()
                        except EtcdError as exc:
                            log.warning("cluster: cannot re-read the shared state: %s", exc)
                        else:
                            self._unfence()
                else:
                    self._fence("lease expired")
                    await self._rejoin()
            await trio.sleep_until(sent + interval)

    async def _beat(self, sent: float) -> None:
        """Put our heartbeat; our own watch must bring it back (:meth:`_watch_fresh`)."""
        try:
            await self.client.put(self._beat_key, b"%.3f" % sent, self.lease)
        except EtcdError as exc:
            log.debug("cluster: heartbeat not written: %s", exc)

    def _watch_fresh(self) -> bool:
        limit = self.settings.lease_ttl * WATCH_STALE_AFTER
        return self._clock() - self._last_beat < limit

    async def _rejoin(self) -> None:
        try:
            await self._join()
            await self._resync()
        except EtcdError as exc:
            log.warning("cluster: cannot rejoin: %s", exc)
            return
        self._unfence()

    async def _fence_watchdog(self) -> None:
        """Fence when the last renewal is ``FENCE_AFTER`` of the TTL old, or the
        last heartbeat the watch brought back ``WATCH_STALE_AFTER`` of it. It sleeps
        until exactly then (a renewal or heartbeat meanwhile moves the deadline): no
        polling timer on the loop the datapath runs on."""
        ttl = self.settings.lease_ttl
        while True:
            now = self._clock()
            renewal_due = self._last_renewal + ttl * FENCE_AFTER
            beat_due = self._last_beat + ttl * WATCH_STALE_AFTER
            if now >= renewal_due and not self._fenced:
                late = now - self._last_renewal
                self._fence(f"lease not renewed for {late:.1f}s (TTL {ttl}s)")
            elif now >= beat_due and not self._fenced:
                late = now - self._last_beat
                self._fence(f"the watch delivered nothing for {late:.1f}s (TTL {ttl}s)")
            if now >= min(renewal_due, beat_due):
                await trio.sleep(0.05)  # fenced: until a renewal and a heartbeat lift it
            else:
                await trio.sleep_until(min(renewal_due, beat_due))

    async def _watch_loop(self) -> None:
        prefix = self.key("")
        backoff = 0.1
        while True:
            try:
                async for message in self.client.watch(prefix, self.watch_revision + 1):
                    backoff = 0.1
                    if message.compact_revision:
                        log.warning("cluster: watch fell behind compaction; re-reading")
                        self.watch_revision = message.compact_revision - 1
                        await self._resync()
                        break
                    for event in message.events:
                        self._on_event(event)
            except EtcdError as exc:
                log.warning("cluster: watch interrupted: %s", exc)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _on_event(self, event: WatchEvent) -> None:
        kv = event.kv
        self.watch_revision = max(self.watch_revision, kv.mod_revision)
        if kv.key == self._beat_key:
            if event.type is EventType.PUT:
                self._last_beat = self._clock()
            return
        text = kv.key.decode(errors="replace")
        members = self.key("members/").decode()
        acks = self.key("acks/").decode()
        if text.startswith(self.key("alua/").decode()):
            self._alua_event(kv.key, kv.value if event.type is EventType.PUT else None)
            return
        if text.startswith(acks):
            device, _, name = text[len(acks) :].rpartition("/")
            if event.type is EventType.DELETE:
                self.acks.pop((device, name), None)
            elif kv.value.isdigit() and len(kv.value) < 20:
                self.acks[(device, name)] = int(kv.value)
            self._ack_moved()
            return
        if text.startswith(members):
            name = self._member_name(kv.key)
            if event.type is EventType.DELETE:
                groups = self.member_groups.pop(name, {})
                if name in self.members:
                    self.members.discard(name)
                    self._ack_moved()
                    log.warning("cluster: node %s left the cluster (lease expired or revoked)",
                                name)  # fmt: skip
                if name != self.settings.node and self.alua is not None and not self._fenced:
                    self.alua.member_left(groups)
            else:
                self.member_groups[name] = member_groups(kv.value)
                if name in self.members:
                    return
                self.members.add(name)
                log.info("cluster: node %s joined the cluster", name)
            return
        for store in self.stores.values():
            if store.key == kv.key:
                store.seen(kv if event.type is EventType.PUT else None, kv.mod_revision)
                return
            if store.reset_key == kv.key and event.type is EventType.PUT:
                store.reset_seen(kv)
                return
