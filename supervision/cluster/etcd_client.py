"""A small etcd v3 client for Trio: the JSON gateway over HTTP/1.1 with httpx.

Only what a cluster node needs: range, put, a compare-and-swap txn, delete,
lease grant / keepalive / revoke and a prefix watch. Requests go to the first
endpoint that answers; a connection error or a garbage answer moves on to the
next one and, when none answers, raises :class:`EtcdError`. Every request has
a timeout (the caller's, so a keepalive never waits longer than its lease
allows). The protocol itself is in ``etcd_proto`` (sans-I/O).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from pyscst.supervision.cluster import etcd_proto as proto
from pyscst.supervision.cluster.etcd_proto import EtcdError, EtcdProtocolError

log = logging.getLogger(__name__)

#: an answer body larger than this is refused (etcd's own request limit is 1.5 MiB)
MAX_BODY = 16 << 20


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False)
        # httpx logs every request at INFO: several a second per node
        logging.getLogger("httpx").setLevel(logging.WARNING)
        #: the endpoint that answered last (tried first)
        self._current = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self, path: str, body: dict[str, Any], wait: float | None = None
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers."""
        errors = []
        count = len(self.endpoints)
        for i in range(count):
            index = (self._current + i) % count
            url = self.endpoints[index] + path
            try:
                answer = await self._client.post(
                    url, content=json.dumps(body), timeout=wait or self.timeout
                )
                data = answer.content
                if len(data) > MAX_BODY:
                    raise EtcdProtocolError(f"answer of {len(data)} bytes")
                doc = proto.decode(data)
            except (httpx.HTTPError, EtcdProtocolError) as exc:
                errors.append(f"{url}: {exc or type(exc).__name__}")
                continue
            self._current = index
            return doc
        raise EtcdError("etcd unreachable: " + "; ".join(errors))

    # -- kv ------------------------------------------------------------------------------
    async def range(self, key: bytes, *, prefix: bool = False) -> tuple[int, list[proto.KeyValue]]:
        doc = await self.call("/v3/kv/range", proto.range_request(key, prefix=prefix))
        return proto.parse_range(doc)

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        return proto.header_revision(
            await self.call("/v3/kv/put", proto.put_request(key, value, lease))
        )

    async def delete(self, key: bytes) -> None:
        await self.call("/v3/kv/deleterange", proto.range_request(key))

    async def cas(self, key: bytes, mod_revision: int, value: bytes) -> proto.TxnResult:
        doc = await self.call("/v3/kv/txn", proto.cas_request(key, mod_revision, value))
        return proto.parse_txn(doc)

    # -- leases ---------------------------------------------------------------------------
    async def grant(self, ttl: int) -> tuple[int, int]:
        return proto.parse_grant(await self.call("/v3/lease/grant", {"TTL": str(ttl)}))

    async def keepalive(self, lease: int, wait: float) -> int:
        """Renew ``lease``; the TTL left (0: it has expired)."""
        doc = await self.call("/v3/lease/keepalive", {"ID": str(lease)}, wait=wait)
        return proto.parse_keepalive(doc)

    async def revoke(self, lease: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # -- watch ----------------------------------------------------------------------------
    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[proto.WatchMessage]:
        """Messages for every change below ``prefix`` from ``start_revision`` on, until
        the stream breaks (EtcdError) or the caller stops."""
        url = self.endpoints[self._current] + "/v3/watch"
        body = json.dumps(proto.watch_request(prefix, start_revision))
        stream = proto.WatchStream()
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._client.stream("POST", url, content=body, timeout=timeout) as answer:
                if answer.status_code != 200:
                    raise EtcdError(f"{url}: HTTP {answer.status_code}")
                async for chunk in answer.aiter_raw():
                    for message in stream.feed(chunk):
                        if message.canceled:
                            raise EtcdError(f"{url}: watch canceled")
                        yield message
        except httpx.HTTPError as exc:
            # next time, the next endpoint
            self._current = (self._current + 1) % len(self.endpoints)
            raise EtcdError(f"{url}: {exc or type(exc).__name__}") from None
        raise EtcdError(f"{url}: watch stream ended")
