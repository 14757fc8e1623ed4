"""`persistent`: one long-lived two-member group per replica, built on the first push to it and reused.

Group identity. The sender names every group it builds `<sender id>-<n>` (a random id per sender
instance and a counter), and the announcement carries, per replica, the group id and its TCPStore port.
The receiver keeps the group it joined; when the announced id differs from the one it holds it drops
its group and joins the new one through the announced port. Only the sender ever decides to rebuild, so
both sides always agree on which group instance a push uses; a restarted learner has a new sender id,
so a replica never mistakes an old group for a new one.

When the sender rebuilds (drops the group and announces a new id with a new TCPStore):
  - after any failed push to that replica: rendezvous or bucket timeout, a disconnect, a checksum
    failure or apply error on the replica (reported in its ack), or no ack in time. A gloo operation
    that timed out closes its pair, so the group is unusable anyway, on both sides;
  - when the replica registered again (the nonce in its heartbeat record changed: a restart under the
    same id, or stop/start), when its record does not report holding this group (it dropped it: its
    own failure, or a push from another sender or over another transport came in between), or when
    the backend changes;
  - a replica id that is new, or that dropped out of the live set, simply has no group yet.
The receiver drops its group after any failure on its side too and then refuses (fast) another push on
that same group id, which cannot happen with a correct sender: the failure was reported in its ack.

The TCPStore server stays alive on the sender as long as its group does. Every wait keeps its timeout:
the rendezvous (the first push and every rebuild), each bucket, the ack. Dropped groups are released on
a daemon timer (gloo's destructor waits for queued operations, which end at their own timeout).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from services.weights.transports.base import (
    Bucket,
    Info,
    ReceiverTransport,
    SenderTransport,
    WeightSyncError,
    broadcast_buckets,
    make_group,
    new_store,
    receive_buckets,
    release,
)


@dataclass
class _Link:
    group: str
    nonce: str | None
    backend: str
    store: Any  # dist.TCPStore server: must outlive the group
    pg: Any = None  # built by the first send


class PersistentSender(SenderTransport):
    name = "persistent"

    def __init__(self, host: str, timeout_s: float):
        super().__init__(host, timeout_s)
        self._id, self._n = uuid.uuid4().hex[:8], 0
        self._links: dict[str, _Link] = {}

    def prepare(self, rid: str, record: dict, backend: str) -> Info:
        nonce = record.get("nonce")
        with self._lock:
            link = self._links.get(rid)
            if link is not None and not self._reusable(link, record, backend):
                self._drop_locked(rid)
                link = None
            if link is None:
                self._n += 1
                link = _Link(
                    f"{self._id}-{self._n}", nonce, backend, new_store(self.host, 0, True, self.timeout_s)
                )
                self._links[rid] = link
            return {"port": link.store.port, "group": link.group}

    @staticmethod
    def _reusable(link: _Link, record: dict, backend: str) -> bool:
        """Same registration (nonce), same backend, and the replica reports holding this very group
        (it drops its group after a failure, a restart, or a switch to another sender or transport)."""
        return (
            link.pg is not None
            and link.nonce is not None
            and record.get("nonce") == link.nonce
            and record.get("group") == link.group
            and link.backend == backend
        )

    def send(self, rid: str, bucket: Bucket, n: int) -> None:
        with self._lock:
            link = self._links[rid]
        if link.pg is None:  # first push on this group: rendezvous (bounded by timeout_s)
            with self._lock:
                self.builds += 1
            link.pg = make_group(link.store, link.group, 0, link.backend, self.timeout_s)
        broadcast_buckets(link.pg, bucket, n, self.timeout_s)

    def finish(self, rid: str, ok: bool) -> None:
        if not ok:
            with self._lock:
                self._drop_locked(rid)

    def retain(self, rids: set[str]) -> None:
        with self._lock:
            for rid in [r for r in self._links if r not in rids]:
                self._drop_locked(rid)

    def close(self) -> None:
        self.retain(set())

    def group_of(self, rid: str) -> str | None:
        """The id of the group a push to `rid` would use now (None: the next push builds one)."""
        with self._lock:
            link = self._links.get(rid)
            return link.group if link else None

    def _drop_locked(self, rid: str) -> None:
        link = self._links.pop(rid, None)
        if link is not None:
            pg, store, link.pg, link.store = link.pg, link.store, None, None
            release(pg, store, failed=True, timeout_s=self.timeout_s)


class PersistentReceiver(ReceiverTransport):
    name = "persistent"

    def __init__(self, timeout_s: float):
        super().__init__(timeout_s)
        self.group: str | None = None  # the group id last joined (kept after a drop, see receive)
        self._pg: Any = None
        self._store: Any = None

    def receive(
        self, host: str, backend: str, info: Info, bufs: list[torch.Tensor], on_arrival: Callable[[int], None]
    ) -> None:
        group = str(info["group"])
        if group != self.group:
            self._drop()
            self.group = group
            self._store = new_store(host, int(info["port"]), False, self.timeout_s)
            self.builds += 1
            self._pg = make_group(self._store, group, 1, backend, self.timeout_s)
        elif self._pg is None:
            raise WeightSyncError(
                f"group {group} was dropped here after a failure; the sender builds a "
                "new one on its next push"
            )
        receive_buckets(self._pg, bufs, self.timeout_s, on_arrival)

    def finish(self, ok: bool) -> None:
        if not ok:
            self._drop()

    @property
    def held(self) -> str | None:
        return self.group if self._pg is not None else None

    def close(self) -> None:
        self._drop()
        self.group = None

    def _drop(self) -> None:
        pg, store, self._pg, self._store = self._pg, self._store, None, None
        release(pg, store, failed=True, timeout_s=self.timeout_s)
