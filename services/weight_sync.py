"""Weight-sync protocol between the learner (sender) and rollout replicas (receivers).

Control plane: Redis (already shared by both sides, survives restarts). Replicas register and heartbeat in
`payoff:{job}:replicas`; a push is announced on the stream `payoff:{job}:weights` with the manifest
(WeightVersion: names, shapes, dtypes, buckets, per-bucket digests) and one rendezvous port per replica.
Data plane: for every replica, a standalone two-member torch.distributed group (gloo on CPU, NCCL on GPU)
built from its own TCPStore — never `init_process_group`, so it cannot collide with Ray Train's default
group — over which the sender broadcasts the tensors bucket by bucket. One group per replica isolates
failures: a dead or slow replica times out alone, is reported, and is simply included again (full
weights) in the next push. Every wait has a timeout.
"""
from __future__ import annotations

import datetime
import json
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from services.codec import decode, encode
from services.schemas import TensorMeta, WeightVersion

Named = list[tuple[str, torch.Tensor]]
TRAILER = "trailer-v1"  # checksums follow the data as an int64 (buckets, 2) tensor


class WeightSyncConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str = Field("auto", pattern="^(auto|gloo|nccl)$")
    bucket_mb: float = Field(64.0, gt=0, description="Tensors are packed into buckets of about this size.")
    timeout_s: float = Field(60.0, gt=0, description="Rendezvous, each bucket, and the apply ack.")
    host: str = Field("127.0.0.1", description="Address replicas use to reach the sender.")
    heartbeat_s: float = Field(2.0, gt=0)
    live_after_s: float = Field(10.0, gt=0, description="A replica silent this long is not pushed to.")


class WeightSyncError(RuntimeError):
    pass


def keys(job_id: str) -> tuple[str, str]:
    return f"payoff:{{{job_id}}}:replicas", f"payoff:{{{job_id}}}:weights"


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return backend


# ---------------------------------------------------------------- packing
def plan_buckets(named: Named, bucket_bytes: int) -> list[TensorMeta]:
    metas, bucket, size = [], 0, 0
    for name, t in named:
        nbytes = t.numel() * t.element_size()
        if size and size + nbytes > bucket_bytes:
            bucket, size = bucket + 1, 0
        metas.append(TensorMeta(name=name, shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch."),
                                nbytes=nbytes, bucket=bucket))
        size += nbytes
    return metas


def pack(tensors: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """Concatenate tensors of any dtype into one flat byte buffer (one collective per bucket); `out`
    reuses a buffer from the previous push (fresh pages cost more than the copy itself)."""
    parts = [t.detach().contiguous().reshape(-1).view(torch.uint8) for t in tensors]
    n = sum(p.numel() for p in parts)
    if out is None or out.numel() != n or out.device != parts[0].device:
        return torch.cat(parts)
    return torch.cat(parts, out=out)


def unpack(buf: torch.Tensor, metas: list[TensorMeta]) -> Named:
    out, off = [], 0
    for m in metas:
        raw = buf[off:off + m.nbytes]
        out.append((m.name, raw.view(getattr(torch, m.dtype)).reshape(m.shape)))
        off += m.nbytes
    return out


def digest(buf: torch.Tensor) -> tuple[int, int]:
    """Checksum of one byte bucket, to catch corruption in transit (not tampering): CRC-32 on CPU
    (~4 GB/s here, no copy); on GPU a Fletcher-style pair of exact int64 sums computed on the device,
    so the weights are never copied to the host for it."""
    if buf.device.type == "cpu":
        return zlib.crc32(memoryview(buf.numpy())), 0
    b = buf.to(torch.int64)
    pos = torch.arange(1, b.numel() + 1, device=b.device, dtype=torch.int64) % 65521
    return int(b.sum()), int((b * pos).sum())


def _group(store: dist.Store, tag: str, rank: int, backend: str, timeout_s: float):
    prefixed = dist.PrefixStore(f"payoff-weights/{tag}", store)
    timeout = datetime.timedelta(seconds=timeout_s)
    if backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(prefixed, rank, 2, opts)
    return dist.ProcessGroupGloo(prefixed, rank, 2, timeout)


# ---------------------------------------------------------------- sender (learner rank 0)
@dataclass
class PushResult:
    version: int
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0


class WeightSender:
    def __init__(self, client: redis.Redis, job_id: str, config: WeightSyncConfig | None = None):
        self.r, self.job_id, self.cfg = client, job_id, config or WeightSyncConfig()
        self.replicas_key, self.stream = keys(job_id)
        self._buffers: list[torch.Tensor] = []  # packed buckets, reused push after push

    def live_replicas(self) -> dict[str, dict]:
        now, out = time.time(), {}
        for rid, raw in self.r.hgetall(self.replicas_key).items():
            info = json.loads(raw)
            if now - info.get("heartbeat", 0) <= self.cfg.live_after_s:
                out[rid.decode()] = info
        return out

    def push(self, named: Named, version: int, step: int = 0, replicas: list[str] | None = None) -> PushResult:
        """Broadcast `named` to every live replica; returns who applied version `version` and who failed."""
        t0 = time.perf_counter()
        targets = sorted(self.live_replicas()) if replicas is None else replicas
        result = PushResult(version)
        if not targets:
            return result
        device = named[0][1].device
        backend = resolve_backend(self.cfg.backend, device)
        metas = plan_buckets(named, int(self.cfg.bucket_mb * 2**20))
        n_buckets = metas[-1].bucket + 1
        # checksums travel in a trailer after the data, so packing + checksumming bucket b+1 overlaps
        # the transfer of bucket b
        manifest = WeightVersion(job_id=self.job_id, version=version, step=step, tensors=metas,
                                 num_buckets=n_buckets, checksum=TRAILER)
        timeout = datetime.timedelta(seconds=self.cfg.timeout_s)
        stores = {rid: dist.TCPStore(self.cfg.host, 0, 2, True, timeout=timeout, wait_for_workers=False)
                  for rid in targets}
        self.r.xadd(self.stream, {"manifest": encode(manifest), "backend": backend, "host": self.cfg.host,
                                  "ports": json.dumps({rid: s.port for rid, s in stores.items()})},
                    maxlen=100, approximate=True)
        old = self._buffers + [None] * max(0, n_buckets + 1 - len(self._buffers))
        buckets: list[torch.Tensor | None] = [None] * (n_buckets + 1)
        ready = [threading.Event() for _ in range(n_buckets + 1)]

        def send(rid: str) -> str | None:
            try:
                pg = _group(stores[rid], f"v{version}", 0, backend, self.cfg.timeout_s)
                works = []
                for b in range(n_buckets + 1):  # the last "bucket" is the checksum trailer
                    if not ready[b].wait(self.cfg.timeout_s):
                        raise WeightSyncError(f"bucket {b} was not packed in time")
                    works.append(pg.broadcast([buckets[b]]))
                for b, work in enumerate(works):
                    if not work.wait(timeout):
                        raise WeightSyncError(f"bucket {b} was not delivered in {self.cfg.timeout_s}s")
                return self._await_ack(rid, version)
            except Exception as e:  # a dead replica must not stop the others
                return f"{type(e).__name__}: {e}"

        with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
            futures = [pool.submit(send, rid) for rid in targets]
            sums = torch.zeros((n_buckets, 2), dtype=torch.int64)
            for b in range(n_buckets):
                buckets[b] = pack([t for (_, t), m in zip(named, metas) if m.bucket == b], old[b])
                ready[b].set()
                sums[b] = torch.tensor(digest(buckets[b]))
            buckets[n_buckets] = sums.to(device)
            ready[n_buckets].set()
            for rid, fut in zip(targets, futures):
                err = fut.result()
                (result.failed.__setitem__(rid, err) if err else result.ok.append(rid))
        self._buffers = buckets[:n_buckets]
        result.bytes = sum(b.numel() for b in buckets[:n_buckets]) * len(targets)
        result.seconds = time.perf_counter() - t0
        return result

    def _await_ack(self, rid: str, version: int) -> str | None:
        deadline = time.monotonic() + self.cfg.timeout_s
        while time.monotonic() < deadline:
            raw = self.r.hget(self.replicas_key, rid)
            info = json.loads(raw) if raw else {}
            if info.get("version", -1) >= version and info.get("status") == "ok":
                return None
            if info.get("status", "").startswith("failed") and info.get("attempted") == version:
                return info["status"]
            time.sleep(0.01)
        return f"no apply acknowledgement for v{version} within {self.cfg.timeout_s}s"


# ---------------------------------------------------------------- receiver (inside a rollout replica)
class WeightReceiver:
    """Background thread: heartbeat, wait for pushes addressed to this replica, receive, verify, apply.

    `apply(named, version)` swaps the weights (e.g. Engine.load_weights); a failed sync marks the replica
    unhealthy (its Serve health check then fails, taking it out of rotation) until the next good sync.
    """

    def __init__(self, client: redis.Redis, job_id: str, replica_id: str, apply, version: int = 0,
                 device: torch.device | str = "cpu", config: WeightSyncConfig | None = None):
        self.r, self.job_id, self.rid, self.apply = client, job_id, replica_id, apply
        self.cfg = config or WeightSyncConfig()
        self.device = torch.device(device)
        self.replicas_key, self.stream = keys(job_id)
        self.version, self.status, self.attempted = version, "ok", -1
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._buffers: dict[int, torch.Tensor] = {}  # receive buffers by bucket size, reused

    @property
    def healthy(self) -> bool:
        return self.status == "ok"

    def start(self) -> WeightReceiver:
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
        self.r.hdel(self.replicas_key, self.rid)

    def _last_id(self) -> str:
        last = self.r.xrevrange(self.stream, count=1)
        return last[0][0].decode() if last else "0-0"

    def _beat(self) -> None:
        self.r.hset(self.replicas_key, self.rid, json.dumps(
            {"version": self.version, "status": self.status, "attempted": self.attempted,
             "heartbeat": time.time(), "host": socket.gethostname()}))

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.cfg.heartbeat_s):
            try:
                self._beat()
            except redis.RedisError:
                pass  # Redis restarting: the next beat re-registers

    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.r.xread({self.stream: self._cursor}, count=1, block=500)
            except redis.RedisError:
                time.sleep(0.5)
                continue
            for _, entries in resp or []:
                for eid, fields in entries:
                    self._cursor = eid.decode()
                    ports = json.loads(fields[b"ports"])
                    if self.rid in ports:
                        self._receive(fields, ports[self.rid])

    def _receive(self, fields: dict, port: int) -> None:
        manifest = decode(fields[b"manifest"], WeightVersion)
        self.attempted = manifest.version
        try:
            named = self.receive(manifest, fields[b"host"].decode(), port, fields[b"backend"].decode())
            self.apply(named, manifest.version)
            self._recycle()
            self.version, self.status, self.last_error = manifest.version, "ok", None
        except Exception as e:
            self.status = f"failed v{manifest.version}: {type(e).__name__}: {e}"
            self.last_error = self.status
        self._beat()

    def receive(self, manifest: WeightVersion, host: str, port: int, backend: str) -> Named:
        timeout = datetime.timedelta(seconds=self.cfg.timeout_s)
        store = dist.TCPStore(host, port, 2, False, timeout=timeout)
        pg = _group(store, f"v{manifest.version}", 1, backend, self.cfg.timeout_s)
        if manifest.checksum != TRAILER:
            raise WeightSyncError(f"unsupported checksum scheme {manifest.checksum!r} (sender too new?)")
        self._keep: list[torch.Tensor] = []
        per_bucket = [[m for m in manifest.tensors if m.bucket == b] for b in range(manifest.num_buckets)]
        bufs = [self._buffer(sum(m.nbytes for m in metas)) for metas in per_bucket]
        trailer = torch.empty((manifest.num_buckets, 2), dtype=torch.int64, device=self.device)
        # post every receive up front (gloo runs them in order on its own thread), then checksum each
        # bucket as it lands, overlapping with the next transfer
        works = [pg.broadcast([buf]) for buf in bufs + [trailer]]
        sums = []
        for b, (work, buf) in enumerate(zip(works, bufs)):
            if not work.wait(timeout):
                raise WeightSyncError(f"bucket {b} of v{manifest.version} did not arrive in {timeout}")
            sums.append(digest(buf))
        if not works[-1].wait(timeout):
            raise WeightSyncError(f"checksums of v{manifest.version} did not arrive in {timeout}")
        expected = [tuple(int(x) for x in row) for row in trailer.cpu().tolist()]
        bad = [b for b, (got, want) in enumerate(zip(sums, expected)) if got != want]
        if bad:
            raise WeightSyncError(f"buckets {bad} of v{manifest.version} failed their checksum")
        return [pair for buf, metas in zip(bufs, per_bucket) for pair in unpack(buf, metas)]

    def _buffer(self, size: int) -> torch.Tensor:
        buf = self._buffers.pop(size, None)
        if buf is None:
            buf = torch.empty(size, dtype=torch.uint8, device=self.device)
        self._keep.append(buf)
        return buf

    def _recycle(self) -> None:
        """After apply() copied the weights out, keep the receive buffers for the next push."""
        self._buffers = {b.numel(): b for b in getattr(self, "_keep", [])}
        self._keep = []
