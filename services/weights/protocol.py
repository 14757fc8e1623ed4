"""Weight-sync protocol between the learner (WeightSender) and rollout replicas (WeightReceiver).

Control plane: Redis, already shared by both sides and surviving restarts. A replica registers and
heartbeats in the hash `keys.weight_replicas(job)` (its version, apply status and a registration nonce,
new at every start). A push is announced on the stream `keys.weight_stream(job)` with the manifest
(WeightVersion: names, shapes, dtypes, buckets), the backend, the transport's name and, per target
replica, what that transport needs to reach it (rendezvous port, group id) plus the nonce the sender saw.
The replica answers through its hash record (version and status after the apply).
Data plane: a transport from services/weights/transports moves the packed buckets and a checksum trailer
over a standalone two-member torch.distributed group per replica (gloo on CPU, NCCL on GPU).

Invariants:
  - a replica applies a version only after every bucket arrived and every checksum matched; until its
    next good sync a failed one leaves it unhealthy (its Serve health check then fails);
  - one group per replica isolates failures: a dead or slow replica times out alone, is reported in
    PushResult.failed, and is included again (full weights) in the next push;
  - every wait has a timeout (`timeout_s`: the rendezvous, each bucket, the apply ack), so the learner
    never blocks forever; a push takes at most about (buckets + 3) x timeout_s, whatever the replicas do;
  - pushes are sequential: an announcement supersedes every earlier one (whose push is over), so a
    replica that fell behind handles only the newest one addressed to it, and ignores one addressed to
    a previous registration of its id (another nonce).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services import keys
from services.codec import decode, encode
from services.schemas import TensorMeta, WeightVersion
from services.weights.packing import TRAILER, BufferPool, Named, digest, pack, plan_buckets, unpack
from services.weights.transports import ReceiverTransport, get_transport
from services.weights.transports.base import BucketFeed, Info, WeightSyncError, resolve_backend


class WeightSyncConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transport: str = Field(
        "persistent",
        description="Data plane: a name in services.weights.TRANSPORTS "
        "(persistent: one group per replica, reused; per_push: a new group per push).",
    )
    backend: str = Field("auto", pattern="^(auto|gloo|nccl)$")
    bucket_mb: float = Field(64.0, gt=0, description="Tensors are packed into buckets of about this size.")
    timeout_s: float = Field(60.0, gt=0, description="Rendezvous, each bucket, and the apply ack.")
    host: str = Field("127.0.0.1", description="Address replicas use to reach the sender.")
    heartbeat_s: float = Field(2.0, gt=0)
    live_after_s: float = Field(10.0, gt=0, description="A replica silent this long is not pushed to.")

    @field_validator("transport")
    @classmethod
    def _known_transport(cls, v: str) -> str:
        get_transport(v)  # ValueError naming the choices
        return v


@dataclass
class PushResult:
    version: int
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- sender (learner rank 0)
class WeightSender:
    def __init__(self, client: redis.Redis, job_id: str, config: WeightSyncConfig | None = None):
        self.r, self.job_id, self.cfg = client, job_id, config or WeightSyncConfig()
        self.replicas_key, self.stream = keys.weight_replicas(job_id), keys.weight_stream(job_id)
        self.transport = get_transport(self.cfg.transport).sender(self.cfg.host, self.cfg.timeout_s)
        self._buffers: list[torch.Tensor] = []  # packed buckets, reused push after push

    def live_replicas(self) -> dict[str, dict]:
        return self._live(self._records())

    def _records(self) -> dict[str, dict]:
        return {rid.decode(): json.loads(raw) for rid, raw in self.r.hgetall(self.replicas_key).items()}

    def _live(self, records: dict[str, dict]) -> dict[str, dict]:
        now = time.time()
        return {
            rid: info
            for rid, info in records.items()
            if now - info.get("heartbeat", 0) <= self.cfg.live_after_s
        }

    def close(self) -> None:
        """Release the transport's groups (persistent ones otherwise live as long as the process)."""
        self.transport.close()

    def push(
        self, named: Named, version: int, step: int = 0, replicas: list[str] | None = None
    ) -> PushResult:
        """Broadcast `named` to every live replica (or to `replicas`); returns who applied version
        `version` and who failed, and why."""
        t0 = time.perf_counter()
        records = self._records()
        live = self._live(records)
        targets = sorted(live) if replicas is None else list(replicas)
        self.transport.retain(set(live) | set(targets))
        result = PushResult(version)
        if not targets:
            return result
        device = named[0][1].device
        backend = resolve_backend(self.cfg.backend, device)
        metas = plan_buckets(named, int(self.cfg.bucket_mb * 2**20))
        n_buckets = metas[-1].bucket + 1
        # checksums travel in a trailer after the data, so packing + checksumming bucket b+1 overlaps
        # the transfer of bucket b
        manifest = WeightVersion(
            job_id=self.job_id,
            version=version,
            step=step,
            tensors=metas,
            num_buckets=n_buckets,
            checksum=TRAILER,
        )
        rendezvous = self._prepare(targets, records, backend, result)
        if rendezvous:
            self._announce(manifest, backend, rendezvous)
        buckets = BucketFeed(n_buckets + 1, self.cfg.timeout_s)  # the last "bucket" is the trailer
        errors = self._run(named, metas, device, buckets, list(rendezvous), version)
        for rid in targets:  # in target order; those that failed in prepare are already in `failed`
            if rid in errors and errors[rid]:
                result.failed[rid] = errors[rid]  # type: ignore[assignment]
            elif rid in errors:
                result.ok.append(rid)
        if rendezvous:
            self._buffers = [b for b in buckets.items[:n_buckets] if b is not None]
        result.bytes = sum(m.nbytes for m in metas) * len(targets)
        result.seconds = time.perf_counter() - t0
        return result

    def _prepare(
        self, targets: list[str], records: dict[str, dict], backend: str, result: PushResult
    ) -> dict[str, Info]:
        out: dict[str, Info] = {}
        for rid in targets:
            record = records.get(rid, {})
            try:
                out[rid] = {**self.transport.prepare(rid, record, backend), "nonce": record.get("nonce")}
            except Exception as e:  # e.g. no free port: this replica fails, the others go ahead
                result.failed[rid] = _error(e)
        return out

    def _announce(self, manifest: WeightVersion, backend: str, rendezvous: dict[str, Info]) -> None:
        self.r.xadd(
            self.stream,
            {
                "manifest": encode(manifest),
                "backend": backend,
                "host": self.cfg.host,
                "transport": self.transport.name,
                "rendezvous": json.dumps(rendezvous),
            },
            maxlen=100,
            approximate=True,
        )

    def _run(
        self,
        named: Named,
        metas: list[TensorMeta],
        device: torch.device,
        buckets: BucketFeed,
        rids: list[str],
        version: int,
    ) -> dict[str, str | None]:
        """Send to every replica on its own thread while this one packs; rid -> error (None: applied)."""
        if not rids:
            return {}
        n = len(buckets.items)
        with ThreadPoolExecutor(max_workers=min(16, len(rids))) as pool:
            futures = {rid: pool.submit(self._send_one, rid, buckets, n, version) for rid in rids}
            try:
                self._pack(named, metas, device, buckets)
            except BaseException:
                buckets.abort()  # the send threads fail at once instead of waiting for a bucket
                raise
            return {rid: fut.result() for rid, fut in futures.items()}

    def _pack(self, named: Named, metas: list[TensorMeta], device: torch.device, buckets: BucketFeed) -> None:
        n_buckets = len(buckets.items) - 1
        old = self._buffers + [None] * max(0, n_buckets - len(self._buffers))
        sums = torch.zeros((n_buckets, 2), dtype=torch.int64)
        for b in range(n_buckets):
            buf = pack([t for (_, t), m in zip(named, metas) if m.bucket == b], old[b])
            buckets.put(b, buf)
            sums[b] = torch.tensor(digest(buf))
        buckets.put(n_buckets, sums.to(device))

    def _send_one(self, rid: str, buckets: BucketFeed, n: int, version: int) -> str | None:
        ok = False
        try:
            self.transport.send(rid, buckets.get, n)
            err = self._await_ack(rid, version)
            ok = err is None
            return err
        except Exception as e:  # a dead replica must not stop the others
            return _error(e)
        finally:
            self.transport.finish(rid, ok)

    def _await_ack(self, rid: str, version: int) -> str | None:
        deadline, pause = time.monotonic() + self.cfg.timeout_s, 0.0005
        while time.monotonic() < deadline:
            raw = self.r.hget(self.replicas_key, rid)
            info = json.loads(raw) if raw else {}
            if info.get("version", -1) >= version and info.get("status") == "ok":
                return None
            if info.get("status", "").startswith("failed") and info.get("attempted") == version:
                return info["status"]
            time.sleep(pause)  # polls fast while an apply is typically landing, then every 20 ms
            pause = min(2 * pause, 0.02)
        return f"no apply acknowledgement for v{version} within {self.cfg.timeout_s}s"


# ---------------------------------------------------------------- receiver (inside a rollout replica)
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
        manifest = decode(fields[b"manifest"], WeightVersion)
        self.attempted = manifest.version
        transport = None
        try:
            transport = self._transport(fields.get(b"transport", b"per_push").decode())
            named = self._fetch(
                transport, manifest, fields[b"host"].decode(), fields[b"backend"].decode(), info
            )
            self.apply(named, manifest.version)
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
        self, transport: ReceiverTransport, manifest: WeightVersion, host: str, backend: str, info: Info
    ) -> Named:
        """Receive every bucket and the trailer, verify the checksums, return views of the buffers."""
        if manifest.checksum != TRAILER:
            raise WeightSyncError(f"unsupported checksum scheme {manifest.checksum!r} (sender too new?)")
        per_bucket = [[m for m in manifest.tensors if m.bucket == b] for b in range(manifest.num_buckets)]
        bufs = [self._pool.take(sum(m.nbytes for m in metas)) for metas in per_bucket]
        trailer = torch.empty((manifest.num_buckets, 2), dtype=torch.int64, device=self.device)
        sums: list[tuple[int, int]] = []

        def landed(b: int) -> None:
            if b < len(bufs):
                sums.append(digest(bufs[b]))

        transport.receive(host, backend, info, bufs + [trailer], landed)
        expected = [tuple(int(x) for x in row) for row in trailer.cpu().tolist()]
        bad = [b for b, (got, want) in enumerate(zip(sums, expected)) if got != want]
        if bad:
            raise WeightSyncError(f"buckets {bad} of v{manifest.version} failed their checksum")
        return [pair for buf, metas in zip(bufs, per_bucket) for pair in unpack(buf, metas)]
