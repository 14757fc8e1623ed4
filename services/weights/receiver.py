"""The replica side of the weight-sync protocol (services/weights/protocol.py states the invariants):
register and heartbeat in the job's replica hash, take the newest announcement addressed to this
registration, receive every bucket over the transport it names, verify the checksums, apply, ack.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import redis
import torch

from services import keys
from services.codec import decode
from services.schemas import WeightVersion
from services.weights.packing import TRAILER, BufferPool, Named, digest, expand, unpack
from services.weights.protocol import WeightSyncConfig, _error
from services.weights.transports import ReceiverTransport, get_transport
from services.weights.transports.base import Info, WeightSyncError


class WeightReceiver:
    """Background threads: heartbeat, and wait for pushes addressed to this replica, receive, verify, apply.

    `apply(named, version)` swaps the weights (e.g. Engine.load_weights); a failed sync marks the replica
    unhealthy (its Serve health check then fails, taking it out of rotation) until the next good sync.
    The transport is the one each announcement names (the sender's choice), whatever `config.transport`.
    """

    def __init__(
        self,
        client: redis.Redis,
        job_id: str,
        replica_id: str,
        apply,
        version: int = 0,
        device: torch.device | str = "cpu",
        config: WeightSyncConfig | None = None,
    ):
        self.r, self.job_id, self.rid, self.apply = client, job_id, replica_id, apply
        self.cfg = config or WeightSyncConfig()
        self.device = torch.device(device)
        self.replicas_key, self.stream = keys.weight_replicas(job_id), keys.weight_stream(job_id)
        self.version, self.status, self.attempted = version, "ok", -1
        self.last_error: str | None = None
        self.timing: dict[str, float] = {}  # the last push's account (its "version" and seconds by phase)
        self.nonce = uuid.uuid4().hex  # this registration; a new one at every start()
        self._stop = threading.Event()
        self._beat_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._transports: dict[str, ReceiverTransport] = {}
        self._pool = BufferPool(self.device)  # receive buffers, reused push after push

    @property
    def healthy(self) -> bool:
        return self.status == "ok"

    @property
    def transport(self) -> ReceiverTransport | None:
        """The transport the last announcement used (None before the first one)."""
        return next(iter(self._transports.values()), None)

    def start(self) -> WeightReceiver:
        self._stop.clear()
        self.nonce = uuid.uuid4().hex
        self._cursor = self._last_id()
        self._beat()
        for target in (self._heartbeat_loop, self._listen_loop):
            th = threading.Thread(target=target, name=f"weights-{target.__name__}", daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=5)
        self._threads = []
        self.r.hdel(self.replicas_key, self.rid)
        for t in self._transports.values():
            t.close()
        self._transports = {}

    def _last_id(self) -> str:
        last = self.r.xrevrange(self.stream, count=1)
        return last[0][0].decode() if last else "0-0"

    def _beat(self) -> None:
        with self._beat_lock:  # both threads beat: the last write must carry the latest state
            transport = self.transport
            self.r.hset(
                self.replicas_key,
                self.rid,
                json.dumps(
                    {
                        "version": self.version,
                        "status": self.status,
                        "attempted": self.attempted,
                        "heartbeat": time.time(),
                        "host": socket.gethostname(),
                        "nonce": self.nonce,
                        "group": transport.held if transport else None,
                        "timing": self.timing,
                    }
                ),
            )

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.cfg.heartbeat_s):
            try:
                self._beat()
            except redis.RedisError:
                pass  # Redis restarting: the next beat re-registers

    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.r.xread({self.stream: self._cursor}, count=100, block=500)
            except redis.RedisError:
                time.sleep(0.5)
                continue
            newest = None  # only the newest announcement addressed to us counts (pushes are sequential)
            for _, entries in resp or []:
                for eid, fields in entries:
                    self._cursor = eid.decode()
                    info = self._addressed(fields)
                    if info is not None:
                        newest = (fields, info)
            if newest is not None and not self._stop.is_set():
                self._receive(*newest)

    def _addressed(self, fields: dict) -> Info | None:
        try:
            info = json.loads(fields[b"rendezvous"]).get(self.rid)
        except (KeyError, ValueError):
            return None  # not an announcement this protocol version understands
        if info is None or info.get("nonce") not in (None, self.nonce):
            return None  # not for us, or for a previous registration of this replica id
        return info

    def _transport(self, name: str) -> ReceiverTransport:
        if name not in self._transports:
            spec = get_transport(name)
            for old in self._transports.values():  # the sender switched transports
                old.close()
            self._transports = {name: spec.receiver(self.cfg.timeout_s)}
        return self._transports[name]

    def _receive(self, fields: dict, info: Info) -> None:
        t0 = time.perf_counter()
        manifest = decode(fields[b"manifest"], WeightVersion)
        self.attempted = manifest.version
        timing = {"version": manifest.version}
        transport = None
        try:
            transport = self._transport(fields.get(b"transport", b"per_push").decode())
            timing["decode"] = time.perf_counter() - t0
            named = self._fetch(
                transport,
                manifest,
                fields[b"host"].decode(),
                fields[b"backend"].decode(),
                info,
                json.loads(fields.get(b"aliases", b"[]")),
                timing,
            )
            t1 = time.perf_counter()
            self.apply(named, manifest.version)
            timing["apply"] = time.perf_counter() - t1
            self.timing = timing
            transport.finish(True)
            self._pool.recycle()  # apply() copied the weights out: keep the buffers for the next push
            self.version, self.status, self.last_error = manifest.version, "ok", None
        except Exception as e:
            if transport is not None:
                transport.finish(False)
            self._pool.discard()  # a dropped group's late receive could still write into them
            self.status = f"failed v{manifest.version}: {_error(e)}"
            self.last_error = self.status
        self._beat()

    def _fetch(
        self,
        transport: ReceiverTransport,
        manifest: WeightVersion,
        host: str,
        backend: str,
        info: Info,
        aliases: list,
        timing: dict,
    ) -> Named:
        """Receive every bucket and the trailer, checksum and unpack (views) each bucket as it lands,
        while the next one is on the wire; verify the checksums; return the tensors in the sender's order."""
        if manifest.checksum != TRAILER:
            raise WeightSyncError(f"unsupported checksum scheme {manifest.checksum!r} (sender too new?)")
        per_bucket: list[list] = [[] for _ in range(manifest.num_buckets)]
        slots: list[list[int]] = [[] for _ in range(manifest.num_buckets)]  # positions in the manifest
        for i, m in enumerate(manifest.tensors):
            per_bucket[m.bucket].append(m)
            slots[m.bucket].append(i)
        bufs = [self._pool.take(sum(m.nbytes for m in metas)) for metas in per_bucket]
        trailer = torch.empty((manifest.num_buckets, 2), dtype=torch.int64, device=self.device)
        sums: list[tuple[int, int]] = []
        named: Named = [None] * len(manifest.tensors)  # type: ignore[list-item]
        t0 = time.perf_counter()
        timing.update(checksum=0.0, unpack=0.0)

        def landed(b: int) -> None:
            if b >= len(bufs):
                return  # the trailer
            t = time.perf_counter()
            timing.setdefault("first_bucket", t - t0)
            sums.append(digest(bufs[b]))
            t1 = time.perf_counter()
            for i, pair in zip(slots[b], unpack(bufs[b], per_bucket[b])):
                named[i] = pair
            timing["checksum"] += t1 - t
            timing["unpack"] += time.perf_counter() - t1

        transport.receive(host, backend, info, bufs + [trailer], landed)
        t1 = time.perf_counter()
        timing["receive"] = t1 - t0
        expected = [tuple(int(x) for x in row) for row in trailer.cpu().tolist()]
        bad = [b for b, (got, want) in enumerate(zip(sums, expected)) if got != want]
        if bad:
            raise WeightSyncError(f"buckets {bad} of v{manifest.version} failed their checksum")
        named = expand(named, aliases)
        timing["verify"] = time.perf_counter() - t1
        return named
