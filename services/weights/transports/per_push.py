"""`per_push`: a brand-new two-member group for every push and every replica.

The sender starts one TCPStore server per replica before the announcement (its port goes into the
announcement), builds the group on it (the replica joins through that port), broadcasts, and drops both.
Nothing outlives a push, so there is no state to get wrong, at the price of one rendezvous (TCP
connections, gloo pair setup; NCCL communicator init on GPU) per push and replica.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from services.weights.transports.base import (
    Bucket,
    Info,
    ReceiverTransport,
    SenderTransport,
    broadcast_buckets,
    make_group,
    new_store,
    receive_buckets,
    release,
)

PREFIX = "push"  # every push has its own store, so one fixed prefix is unambiguous


class PerPushSender(SenderTransport):
    name = "per_push"

    def __init__(self, host: str, timeout_s: float):
        super().__init__(host, timeout_s)
        self._open: dict[str, list] = {}  # rid -> [store, backend, group]

    def prepare(self, rid: str, record: dict, backend: str) -> Info:
        store = new_store(self.host, 0, True, self.timeout_s)
        with self._lock:
            self._open[rid] = [store, backend, None]
        return {"port": store.port}

    def send(self, rid: str, bucket: Bucket, n: int) -> None:
        with self._lock:
            entry = self._open[rid]
            self.builds += 1
        store, backend, _ = entry
        entry[2] = pg = make_group(store, PREFIX, 0, backend, self.timeout_s)
        broadcast_buckets(pg, bucket, n, self.timeout_s)

    def finish(self, rid: str, ok: bool) -> None:
        with self._lock:
            entry = self._open.pop(rid, None)
        if entry:
            store, _, pg = entry
            entry.clear()
            release(pg, store, failed=not ok, timeout_s=self.timeout_s)

    def close(self) -> None:
        with self._lock:
            rids = list(self._open)
        for rid in rids:
            self.finish(rid, False)


class PerPushReceiver(ReceiverTransport):
    name = "per_push"

    def __init__(self, timeout_s: float):
        super().__init__(timeout_s)
        self._held: tuple = ()

    def receive(
        self, host: str, backend: str, info: Info, bufs: list[torch.Tensor], on_arrival: Callable[[int], None]
    ) -> None:
        store = new_store(host, int(info["port"]), False, self.timeout_s)
        self._held = (store,)
        self.builds += 1
        pg = make_group(store, PREFIX, 1, backend, self.timeout_s)
        self._held = (pg, store)
        receive_buckets(pg, bufs, self.timeout_s, on_arrival)

    def finish(self, ok: bool) -> None:
        held, self._held = self._held, ()
        release(*held, failed=not ok, timeout_s=self.timeout_s)

    def close(self) -> None:
        self.finish(False)
