"""The data-plane interface every weight-sync transport implements, and the torch.distributed helpers
they share.

A transport moves the packed buckets of one push from the learner to one replica; the protocol
(services/weights/protocol.py) does everything else. Per push, on the sender, for each target replica:

    info = sender.prepare(rid, record, backend)  # main thread, before the announcement: what the
                                                 # announcement carries for `rid` (JSON: port, group id)
    sender.send(rid, bucket, n)                  # one thread per replica: open or reuse the group, then
                                                 # broadcast bucket(0) .. bucket(n-1); raises on failure
    sender.finish(rid, ok)                       # after the apply ack (or the failure): keep or drop

and on the receiver, for an announcement addressed to it:

    receiver.receive(host, backend, info, bufs, on_arrival)  # join or reuse the group, fill bufs in
                                                             # order, on_arrival(b) as each one lands
    receiver.finish(ok)                                      # after apply (or the failure)

Every wait is bounded by `timeout_s`. A transport counts the rendezvous it started in `builds`.
"""

from __future__ import annotations

import datetime
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.distributed as dist

Bucket = Callable[[int], torch.Tensor]  # sender side: bucket b, waiting (bounded) until it is packed
Info = dict[str, Any]  # what the announcement carries for one replica (JSON-serialisable)


class WeightSyncError(RuntimeError):
    pass


class BucketFeed:
    """Packed buckets handed from the packing loop to the per-replica send threads: `get` is a Bucket."""

    def __init__(self, n: int, timeout_s: float):
        self.items: list[torch.Tensor | None] = [None] * n
        self._ready = [threading.Event() for _ in range(n)]
        self.timeout_s = timeout_s

    def put(self, b: int, t: torch.Tensor) -> None:
        self.items[b] = t
        self._ready[b].set()

    def abort(self) -> None:
        """Packing failed: every waiting send fails now instead of at its timeout."""
        for ev in self._ready:
            ev.set()

    def get(self, b: int) -> torch.Tensor:
        if not self._ready[b].wait(self.timeout_s) or self.items[b] is None:
            raise WeightSyncError(f"bucket {b} was not packed within {self.timeout_s}s")
        return self.items[b]  # type: ignore[return-value]


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return backend


def new_store(host: str, port: int, server: bool, timeout_s: float) -> dist.TCPStore:
    """The sender hosts the rendezvous (port 0: any free port); the replica connects to it."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if server:
        return dist.TCPStore(host, port, 2, True, timeout=timeout, wait_for_workers=False)
    return dist.TCPStore(host, port, 2, False, timeout=timeout)


def make_group(store: dist.Store, prefix: str, rank: int, backend: str, timeout_s: float):
    """A standalone two-member group (sender rank 0, replica rank 1), built from its own store and never
    through `init_process_group`, so it cannot collide with Ray Train's default group. Blocks until the
    peer joins, for at most `timeout_s`."""
    prefixed = dist.PrefixStore(f"weights/{prefix}", store)
    timeout = datetime.timedelta(seconds=timeout_s)
    _handshake(prefixed, rank, timeout)
    if backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(prefixed, rank, 2, opts)
    return dist.ProcessGroupGloo(prefixed, rank, 2, timeout)


def _handshake(store: dist.Store, rank: int, timeout: datetime.timedelta) -> None:
    """Meet on the store before gloo does. gloo's connect waits up to ~5x its timeout for a peer whose
    address is in the store but which has gone (a replica joining a rendezvous the sender already gave
    up on); here each side waits at most `timeout`, and a late replica fails alone."""
    if rank == 1:
        store.set("joined", "1")
        store.wait(["accepted"], timeout)
    else:
        store.wait(["joined"], timeout)
        store.set("accepted", "1")


def release(*objs: Any, failed: bool = False, timeout_s: float = 0.0) -> None:
    """Drop groups and stores on a daemon timer, never on the caller's thread.

    Destroying a gloo group joins its worker threads (~10-20 ms even when idle, on the push's critical
    path otherwise), and waits for the operations still queued on it; after a failure such an operation
    only ends at its own timeout (then gloo closes the pair and everything behind it fails at once). So
    the timer drops the objects after a short delay (the caller's own references are gone by then), or
    after `timeout_s` plus a margin when `failed`. NCCL groups are aborted first after a failure."""
    held = [o for o in objs if o is not None]
    if not held:
        return
    nccl = getattr(dist, "ProcessGroupNCCL", None)  # absent from CPU-only builds
    for o in held:
        if failed and nccl is not None and isinstance(o, nccl):
            try:
                o.abort()  # NCCL ops would otherwise hang: abort the communicator
            except Exception:  # noqa: BLE001 - best effort, the timer still drops it
                pass
    timer = threading.Timer(timeout_s + 1.0 if failed else 0.2, held.clear)
    timer.daemon = True
    timer.name = "weights-release"
    timer.start()


def _wait(work, timeout_s: float, what: str) -> None:
    try:
        done = work.wait(datetime.timedelta(seconds=timeout_s))
    except RuntimeError as e:  # gloo raises "Operation timed out!" or the peer's disconnect
        raise WeightSyncError(f"{what}: {e}") from e
    if done is False:
        raise WeightSyncError(f"{what}: not completed within {timeout_s}s")


def _post(pg, buf: torch.Tensor, b: int, rank: int):
    """Bucket b from rank 0 to rank 1. gloo: a point-to-point message tagged b, posted at once on this
    thread (a gloo broadcast goes through the group's worker threads, ~0.5 ms of CPU per bucket on a
    2-core box, which makes one message per large tensor dearer than packing it); NCCL: a broadcast."""
    if isinstance(pg, dist.ProcessGroupGloo):
        return pg.send([buf], 1, b) if rank == 0 else pg.recv([buf], 0, b)
    return pg.broadcast([buf])


def broadcast_buckets(pg, bucket: Bucket, n: int, timeout_s: float) -> None:
    """Post bucket 0..n-1 as soon as each is packed (so packing b+1 overlaps sending b), then wait for
    every one; the first failure raises (the group is then unusable: gloo closed the pair)."""
    works = [_post(pg, bucket(b), b, 0) for b in range(n)]
    for b, work in enumerate(works):
        _wait(work, timeout_s, f"bucket {b} was not delivered")


def receive_buckets(
    pg, bufs: list[torch.Tensor], timeout_s: float, on_arrival: Callable[[int], None]
) -> None:
    """Post every receive up front, and call on_arrival(b) as bucket b lands (they land in order),
    overlapping e.g. its checksum with the next transfer."""
    works = [_post(pg, buf, b, 1) for b, buf in enumerate(bufs)]
    for b, work in enumerate(works):
        _wait(work, timeout_s, f"bucket {b} did not arrive")
        on_arrival(b)


class SenderTransport(ABC):
    """Learner side. One instance per WeightSender; `prepare` runs on the pushing thread, `send` and
    `finish` on one thread per replica (a transport keeps per-replica state behind its own lock)."""

    name: ClassVar[str]

    def __init__(self, host: str, timeout_s: float):
        self.host, self.timeout_s = host, timeout_s
        self.builds = 0  # rendezvous started so far (one per group built or attempted)
        self._lock = threading.Lock()

    @abstractmethod
    def prepare(self, rid: str, record: dict, backend: str) -> Info:
        """Get a channel to `rid` ready; return what the announcement must carry for it. `record` is the
        replica's registration in Redis ({} if none): its `nonce` (new at every start) and the `group`
        it reports holding."""

    @abstractmethod
    def send(self, rid: str, bucket: Bucket, n: int) -> None:
        """Open (or reuse) the group to `rid` and broadcast bucket(0)..bucket(n-1); raise on failure."""

    @abstractmethod
    def finish(self, rid: str, ok: bool) -> None:
        """The push to `rid` is over (`ok`: it acknowledged the apply). Keep or drop what it used."""

    def retain(self, rids: set[str]) -> None:
        """Drop the state of replicas not in `rids` (deregistered or silent)."""

    def close(self) -> None:
        """Drop everything (the sender is going away)."""


class ReceiverTransport(ABC):
    """Replica side. One instance per WeightReceiver and transport name, used by its listen thread only."""

    name: ClassVar[str]

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.builds = 0

    @abstractmethod
    def receive(
        self, host: str, backend: str, info: Info, bufs: list[torch.Tensor], on_arrival: Callable[[int], None]
    ) -> None:
        """Join (or reuse) the group the announcement names and fill `bufs` in order; raise on failure."""

    @abstractmethod
    def finish(self, ok: bool) -> None:
        """The push is over on this side (`ok`: received, verified and applied). Keep or drop."""

    @property
    def held(self) -> str | None:
        """The id of the group this side holds between pushes (reported in the heartbeat record)."""
        return None

    def close(self) -> None:
        """Drop everything (the receiver stops, or the sender switched transports)."""
